"""The evaluation gate's measurements: validation NLL, one-joke rate and copy rate of a model.

- `nll`: mean negative log-likelihood per token of held-out jokes, over each joke's tokens plus
  its eos, in the token layout of `model.textformat` (the start token is given, not scored).
  Token-weighted: total NLL of all validation tokens divided by their number. Always measured in
  the plain layout, so it compares what the weights know; the gate uses it.
- `nll_served`: for a model served `few-shot`, the same NLL with in-context examples before each
  joke (ending at the separator, as that layout does); what the model achieves as served.
- `one_joke_rate`: share of N unprompted samples that ended by themselves (eos, a second start
  token, or the end of the line for a `few-shot` model) within the token limit and have the
  shape of one joke (`model.contracts.jokes.is_one_joke`, the rule /joke picks its jokes by).
- `copy_rate`: share of the samples whose duplicate key (`model.contracts.jokes.normalise_key`)
  is the key of a training joke, i.e. verbatim copies after normalisation.

Samples are measured as the runner serves: they are drawn through the runner's own engine
(`model.engine`: its prompt layout, stops, sampler and continuous batching), with the serving
defaults (temperature 0.9, top-p 0.95, no top-k) and a fixed seed, so candidate and serving
model are measured the same way. Both NLL and sampling are batched.
"""

from __future__ import annotations

import gc
import logging
import random
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

from model.contracts.jokes import is_one_joke as one_joke_shape
from model.contracts.jokes import normalise_key
from model.contracts.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from model.textformat import FEW_SHOT, PLAIN

log = logging.getLogger(__name__)

SAMPLE_BATCH = 64  # sequences generated together (sampling is far cheaper per token in batches)
NLL_TOKENS = 2048  # padded tokens per NLL batch (bounds the logits' memory)
FEW_SHOT_EXAMPLES = 4  # in-context jokes per few-shot prompt (benchmarks/bench_quality.py)


def pick_examples(pool: Sequence[str], k: int, rng: random.Random) -> list[str]:
    """`k` distinct jokes of `pool` at random (all of them when the pool is smaller)."""
    return rng.sample(list(pool), min(k, len(pool))) if k > 0 else []


@dataclass(frozen=True)
class Sample:
    """One unprompted generation, as the runner would have answered it."""

    text: str  # the completion's text (cut at its stop)
    finished: bool  # it ended by itself (finish_reason "stop"), not at the token limit


def is_one_joke(sample: Sample) -> bool:
    """Ended by itself and has the shape of one joke (`model.contracts.jokes.is_one_joke`, the
    rule /joke picks by)."""
    return sample.finished and one_joke_shape(sample.text)


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
    collate = JokeCollator(pad_token_id=tokenizer.pad_token_id)  # `load_tokenizer` set one
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
    loaded,
    n: int,
    *,
    max_new_tokens: int = 64,
    seed: int = 0,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    batch_size: int = SAMPLE_BATCH,
    layout: str = PLAIN,
    examples_pool: Sequence[str] = (),
    shots: int = 0,
) -> list[Sample]:
    """`n` unprompted samples of a `model.loading.LoadedModel`, drawn through the runner's engine.

    Served in `layout`: from the start token, after `shots` in-context examples of
    `examples_pool` for a `few-shot` model (which then also stops at the end of the line).
    `batch_size` rows generate together. The same arguments give the same samples (each
    sample has its own seed drawn from `seed`, and the batch composition is the same).
    """
    from model.engine import Engine
    from model.registry import ServedModel
    from model.sampling_params import SamplingParams

    rng = random.Random(seed)
    few_shot = layout == FEW_SHOT and shots > 0 and bool(examples_pool)
    jobs = [
        (
            "",
            SamplingParams(
                max_tokens=max_new_tokens,
                temperature=temperature,
                top_p=top_p,
                seed=rng.getrandbits(63),
                examples=tuple(pick_examples(examples_pool, shots, rng)) if few_shot else (),
            ),
        )
        for _ in range(n)
    ]
    engine = Engine(max_batch=batch_size, max_queue=max(1, n), admit_window=0)
    engine.install(ServedModel(replace(loaded, prompt_layout=layout), "evaluated"))
    engine.start()
    try:
        results = [req.future.result() for req in engine.submit_all(jobs)]
    finally:
        engine.stop()
    return [
        Sample(choice.text, finished=choice.finish_reason == "stop")
        for result in results
        for choice in result.choices
    ]


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
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float = DEFAULT_TOP_P,
    layout: str = PLAIN,
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
    shots = shots if layout == FEW_SHOT and examples_pool else 0
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
        loaded,
        samples,
        max_new_tokens=max_new_tokens,
        seed=seed,
        temperature=temperature,
        top_p=top_p,
        layout=layout,
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


def release(loaded) -> None:
    """Free a loaded model's memory now (before the next model is loaded)."""
    import torch

    loaded.model.to("cpu")
    del loaded.model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
