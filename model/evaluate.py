"""The evaluation gate's measurements: validation NLL, one-joke rate and copy rate of a model.

- `nll`: mean negative log-likelihood per token of held-out jokes, over each joke's tokens plus
  its eos, in the token layout of `model.textformat` (the start token is given, not scored).
  Token-weighted: total NLL of all validation tokens divided by their number. Always measured in
  the plain layout, so it compares what the weights know; the gate uses it.
- `nll_served`: for a model served `few-shot`, the same NLL with in-context examples before each
  joke (ending at the separator, as that layout does); what the model achieves as served.
- `one_joke_rate`: share of N unprompted samples (the prompt as served: the start token, after
  in-context examples for a `few-shot` model) that end with a stop token (eos, or the separator)
  within the token limit, are 10 to 280 characters long, fit on one line and contain no other
  special token.
- `copy_rate`: share of the samples whose duplicate key (`model.contracts.jokes.normalise_key`)
  is the key of a training joke, i.e. verbatim copies after normalisation.

Sampling uses the serving defaults (temperature 0.9, top-p 0.95, no top-k) and a fixed seed,
so candidate and serving model are measured the same way. Both NLL and sampling are batched.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from model.contracts.jokes import MAX_JOKE_CHARS, normalise_key
from model.contracts.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P

log = logging.getLogger(__name__)

MIN_SAMPLE_CHARS = 10
MAX_SAMPLE_CHARS = MAX_JOKE_CHARS  # 280
SAMPLE_TEMPERATURE = DEFAULT_TEMPERATURE
SAMPLE_TOP_P = DEFAULT_TOP_P
SAMPLE_BATCH = 64  # sequences generated together (sampling is far cheaper per token in batches)
NLL_TOKENS = 2048  # padded tokens per NLL batch (bounds the logits' memory)
FEW_SHOT_EXAMPLES = 4  # in-context jokes per few-shot prompt (benchmarks/bench_quality.py)


def pick_examples(pool: Sequence[str], k: int, rng: random.Random) -> list[str]:
    """`k` distinct jokes of `pool` at random (all of them when the pool is smaller)."""
    return rng.sample(list(pool), min(k, len(pool))) if k > 0 else []


@dataclass(frozen=True)
class Sample:
    """One unprompted generation."""

    text: str  # decoded tokens before the eos (or all of them when no eos came)
    finished: bool  # an eos ended it within the token limit
    clean: bool = True  # no special token other than the final eos


def is_one_joke(sample: Sample) -> bool:
    """Finished by eos, 10 to 280 characters, one line, no stray special token."""
    text = sample.text.strip()
    return (
        sample.finished
        and sample.clean
        and MIN_SAMPLE_CHARS <= len(text) <= MAX_SAMPLE_CHARS
        and "\n" not in text
        and "\r" not in text
    )


def one_joke_rate(samples: Sequence[Sample]) -> float:
    return sum(is_one_joke(s) for s in samples) / len(samples) if samples else 0.0


def is_copy(sample: Sample, train_keys: Collection[str]) -> bool:
    key = normalise_key(sample.text)
    return bool(key) and key in train_keys


def copy_rate(samples: Sequence[Sample], train_keys: Collection[str]) -> float:
    return sum(is_copy(s, train_keys) for s in samples) / len(samples) if samples else 0.0


def show_sample(samples: Sequence[Sample]) -> str:
    """A sample to show people: the first complete joke, else the first sample."""
    for sample in samples:
        if is_one_joke(sample):
            return sample.text.strip()
    return samples[0].text.strip() if samples else ""


def validation_nll(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    examples_pool: Sequence[str] = (),
    shots: int = 0,
    seed: int = 0,
) -> tuple[float, int]:
    """(mean NLL per token, number of scored tokens) of `texts` laid out as training examples.

    With `shots` > 0, each joke follows that many in-context examples from `examples_pool` (not
    scored) and ends at the end of its line instead of eos: the `few-shot` layout.
    """
    import torch
    import torch.nn.functional as F

    from model.data import JokeCollator, encode_jokes
    from model.textformat import FEW_SHOT_SEPARATOR, few_shot_text, prompt_ids

    rng = random.Random(seed)
    end_of_line = tokenizer(FEW_SHOT_SEPARATOR, add_special_tokens=False).input_ids
    examples: list[tuple[int, list[int]]] = []  # (unscored prefix length, ids)
    for ids in encode_jokes(tokenizer, texts):
        if shots > 0 and examples_pool:
            context = prompt_ids(tokenizer, few_shot_text(pick_examples(examples_pool, shots, rng)))
            examples.append((len(context), [*context, *ids[1:-1], *end_of_line]))
        else:
            examples.append((0, ids))
    examples.sort(key=lambda e: len(e[1]))
    collate = JokeCollator(pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)
    device = next(model.parameters()).device
    total, count = 0.0, 0
    start = 0
    model.eval()
    with torch.inference_mode():
        while start < len(examples):
            end = start + 1
            # sorted by length: a batch's width is its last example's length
            while end < len(examples) and (end + 1 - start) * len(examples[end][1]) <= NLL_TOKENS:
                end += 1
            chunk = examples[start:end]
            batch = collate([{"input_ids": ids} for _, ids in chunk])
            for row, (prefix, _) in enumerate(chunk):
                batch["labels"][row, :prefix] = -100  # in-context examples are given
            start = end
            logits = model(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
            ).logits
            labels = batch["labels"][:, 1:].to(device)
            logits = logits[:, :-1].float()
            total += float(
                F.cross_entropy(
                    logits.reshape(-1, logits.shape[-1]),
                    labels.reshape(-1),
                    ignore_index=-100,
                    reduction="sum",
                )
            )
            count += int((labels != -100).sum())
    return (total / count if count else float("nan")), count


def sample_jokes(
    model,
    tokenizer,
    n: int,
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
    temperature: float = SAMPLE_TEMPERATURE,
    top_p: float = SAMPLE_TOP_P,
    batch_size: int = SAMPLE_BATCH,
    examples_pool: Sequence[str] = (),
    shots: int = 0,
) -> list[Sample]:
    """`n` unprompted samples: each starts from the start token (after `shots` in-context
    examples of `examples_pool` when given: the `few-shot` layout, which also stops at the end
    of the line) and stops at eos or at a second start token."""
    import torch
    from transformers import GenerationConfig

    from model.textformat import (
        FEW_SHOT,
        FEW_SHOT_SEPARATOR,
        PLAIN,
        generation_prompt_ids,
        stop_token_ids,
    )

    eos = tokenizer.eos_token_id
    few_shot = shots > 0 and bool(examples_pool)
    stops = set(stop_token_ids(tokenizer))
    if few_shot:
        stops |= newline_token_ids(tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    special = set(tokenizer.all_special_ids)
    rng = random.Random(seed)
    few_shot = shots > 0 and bool(examples_pool)
    device = next(model.parameters()).device
    config = GenerationConfig(
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=top_p if temperature > 0 else None,
        top_k=0,
        max_new_tokens=max_new_tokens,
        eos_token_id=sorted(stops),
        pad_token_id=pad,
    )
    torch.manual_seed(seed)
    samples: list[Sample] = []
    model.eval()
    with torch.inference_mode():
        for begin in range(0, n, batch_size):
            rows = min(batch_size, n - begin)
            prompts = [
                generation_prompt_ids(
                    tokenizer,
                    examples=pick_examples(examples_pool, shots, rng) if few_shot else (),
                    layout=FEW_SHOT if few_shot else PLAIN,
                )
                for _ in range(rows)
            ]
            width = max(len(p) for p in prompts)  # left padding: every row ends at its prompt
            input_ids = torch.full((rows, width), pad, dtype=torch.long)
            attention_mask = torch.zeros((rows, width), dtype=torch.long)
            for i, ids in enumerate(prompts):
                input_ids[i, width - len(ids) :] = torch.tensor(ids)
                attention_mask[i, width - len(ids) :] = 1
            output = model.generate(
                input_ids=input_ids.to(device),
                attention_mask=attention_mask.to(device),
                generation_config=config,
            )
            for row in output[:, width:].tolist():
                end = next((i for i, token in enumerate(row) if token in stops), None)
                finished = end is not None
                body = row[: end + 1] if finished else row  # a newline token may carry text
                text = tokenizer.decode(body, skip_special_tokens=True)
                if few_shot:
                    text = text.split(FEW_SHOT_SEPARATOR, 1)[0]
                samples.append(
                    Sample(
                        text=text,
                        finished=finished,
                        clean=not any(t in special for t in (body[:-1] if finished else body)),
                    )
                )
    return samples


def newline_token_ids(tokenizer) -> set[int]:
    """Tokens whose text holds a newline: where a `few-shot` sample's line ends."""
    from model.textformat import FEW_SHOT_SEPARATOR

    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return {i for i, text in enumerate(texts) if FEW_SHOT_SEPARATOR in text}


@dataclass
class Evaluation:
    metrics: dict
    samples: list[Sample]


def measure(
    loaded,
    validation_texts: Sequence[str],
    train_keys: Collection[str],
    *,
    samples: int,
    max_new_tokens: int,
    seed: int,
    temperature: float = SAMPLE_TEMPERATURE,
    top_p: float = SAMPLE_TOP_P,
    layout: str = "plain",
    examples_pool: Sequence[str] = (),
    shots: int = FEW_SHOT_EXAMPLES,
    precision=None,
) -> Evaluation:
    """Metrics and samples of a `model.loading.LoadedModel`, sampled in `layout` (a `few-shot`
    model gets `shots` in-context examples drawn from `examples_pool`, the training jokes).

    The NLL is measured in the dtype the model was loaded in; with `precision` (a
    `model.precision.ServingPrecision`, one for both models of a comparison) the model is then
    cast to the serving dtype for sampling. The gate loads float32 on a CPU: bf16 moves the
    NLL of a model in a layout it was not trained for by ~1.4% (SmolLM2 base, plain), enough
    to tip a 1% margin, while what is served (few-shot v0, fine-tuned versions) moves <0.1%."""
    began = time.monotonic()
    nll, tokens = validation_nll(loaded.model, loaded.tokenizer, validation_texts)
    shots = shots if layout == "few-shot" and examples_pool else 0
    served_nll = {}
    if shots:
        served_nll["nll_served"], _ = validation_nll(
            loaded.model,
            loaded.tokenizer,
            validation_texts,
            examples_pool=examples_pool,
            shots=shots,
            seed=seed,
        )
    nll_seconds = time.monotonic() - began
    nll_dtype = str(loaded.model.dtype).removeprefix("torch.")
    if precision is not None:  # sample as served: in the runner's dtype
        loaded.model = precision.settle(loaded.model, loaded.device, loaded.tokenizer.pad_token_id)
    drawn = sample_jokes(
        loaded.model,
        loaded.tokenizer,
        samples,
        max_new_tokens=max_new_tokens,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        examples_pool=examples_pool,
        shots=shots,
    )
    metrics = {
        "nll": nll,
        **served_nll,
        "nll_dtype": nll_dtype,
        "dtype": str(loaded.model.dtype).removeprefix("torch."),  # what the samples came from
        "layout": layout,
        "shots": shots,
        "one_joke_rate": one_joke_rate(drawn),
        "copy_rate": copy_rate(drawn, train_keys),
        "n_validation": len(validation_texts),
        "n_samples": len(drawn),
        "nll_tokens": tokens,
        "nll_seconds": round(nll_seconds, 2),
        "sample_seconds": round(time.monotonic() - began - nll_seconds, 2),
    }
    return Evaluation(metrics=metrics, samples=drawn)


def evaluate_model(
    model_ref_or_loaded,
    validation_texts: Sequence[str],
    train_keys: Collection[str],
    *,
    samples: int = 48,
    max_new_tokens: int = 64,
    seed: int = 0,
    device: str = "auto",
    temperature: float = SAMPLE_TEMPERATURE,
    top_p: float = SAMPLE_TOP_P,
    precision=None,
) -> dict:
    """The gate's metrics dict for a model folder / hub id, or an already loaded model
    (sampled in `precision`'s dtype when given, see `measure`).

    A model given by reference is loaded here and freed before returning.
    """
    from model.loading import LoadedModel, load_model_and_tokenizer

    owned = not isinstance(model_ref_or_loaded, LoadedModel)
    loaded = (
        load_model_and_tokenizer(str(model_ref_or_loaded), device=device)
        if owned
        else model_ref_or_loaded
    )
    try:
        return measure(
            loaded,
            validation_texts,
            train_keys,
            samples=samples,
            max_new_tokens=max_new_tokens,
            seed=seed,
            temperature=temperature,
            top_p=top_p,
            precision=precision,
        ).metrics
    finally:
        if owned:
            release(loaded)


def release(loaded) -> None:
    """Free a loaded model's memory now (before the next model is loaded)."""
    import torch

    loaded.model.to("cpu")
    del loaded.model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
