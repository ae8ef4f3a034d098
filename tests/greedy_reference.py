"""What greedy decoding must give whatever batch a request shares: its run alone, as far as the
model is decided (no tests here).

A model's forward pass is not batch-invariant on every CPU kernel: between batch shapes its
logits may differ in their last bits (~1e-5 for these fp32 models). Argmax can flip on that
only where the two best logits are that close. So a batched greedy run is compared with a plain
forward pass alone up to the first step whose top two logits are within NOISE: never an exact
floating-point agreement across shapes, and still every token where the model made a choice.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.textformat import prompt_ids, stop_token_ids

NOISE = 1e-3  # far above the logit differences between batch shapes or CPU kernels


@dataclass(frozen=True)
class Decided:
    ids: list[int]  # the greedy tokens alone, up to the first undecided step (stop excluded)
    complete: bool  # every step was decided: the whole run must match

    def text(self, tokenizer) -> str:
        """The text of `ids` (an incomplete last character dropped: more may follow)."""
        text = tokenizer.decode(self.ids, skip_special_tokens=True)
        return text if self.complete else text.rstrip("\ufffd")


def decided_greedy(
    model, tokenizer, prompt: str, max_tokens: int, *, ignore_eos: bool = False
) -> Decided:
    """The greedy continuation of `prompt` (plain layout) by plain forward passes, alone."""
    ids = prompt_ids(tokenizer, prompt)
    stops = set() if ignore_eos else stop_token_ids(tokenizer)
    out: list[int] = []
    with torch.inference_mode():
        for _ in range(max_tokens):
            logits = model(input_ids=torch.tensor([ids], device=model.device)).logits[0, -1]
            top = logits.float().topk(2)
            if float(top.values[0] - top.values[1]) <= NOISE:
                return Decided(out, complete=False)
            token = int(top.indices[0])
            if token in stops:
                break
            out.append(token)
            ids.append(token)
    return Decided(out, complete=True)


def agrees(token_ids: list[int], reference: Decided) -> bool:
    """A batched run's tokens match its run alone wherever the model was decided."""
    if reference.complete:
        return token_ids == reference.ids
    return token_ids[: len(reference.ids)] == reference.ids


def agrees_in_text(text: str, reference: Decided, tokenizer) -> bool:
    """The same for a run known only by its text (an HTTP answer)."""
    expected = reference.text(tokenizer)
    return text == expected if reference.complete else text.startswith(expected)
