"""How one completion request wants its tokens chosen (torch-free: the HTTP schema builds it)."""

from __future__ import annotations

from dataclasses import dataclass

from model.contracts.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P


@dataclass(frozen=True)
class SamplingParams:
    """`seed` is best effort, as OpenAI's: the same request, seed and batch composition on the
    same runner give the same text (`model.sampler` explains why a different batch may not)."""

    max_tokens: int = 64
    temperature: float = DEFAULT_TEMPERATURE  # 0: greedy
    top_p: float = DEFAULT_TOP_P
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    examples: tuple[str, ...] = ()  # in-context jokes, used when the model is `few-shot`
