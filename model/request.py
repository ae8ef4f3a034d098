"""A completion request inside the engine: its rows (one sequence per choice), what it returns,
and the errors it can end in.

Torch-free (as nano-vllm's `Sequence`): a row holds token ids and text, and asks the model it
runs on (a `ServingModel`: `model.registry.ServedModel`) only for its tokenizer, stop tokens
and context length. The engine (`model.engine`) creates the rows and feeds them the tokens the
sampler chose.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

from model.sampling_params import SamplingParams


class QueueFull(Exception):
    """The waiting queue is at max_queue; the caller should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; retry in {retry_after} s")
        self.retry_after = retry_after


class NotReady(Exception):
    """No model is serving (still loading, failed to load, or shutting down)."""


class RequestError(ValueError):
    """The request cannot be served by this model (e.g. the prompt is longer than its context)."""


class EngineStopped(Exception):
    """The engine shut down before the request finished."""


class UnknownModel(LookupError):
    """No resident model answers to the requested name."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(f"no resident model is called {name!r}")
        self.name = name
        self.available = available


# Called from the worker thread with (choice index, new text, finish_reason or None).
StreamListener = Callable[[int, str, str | None], None]


class ServingModel(Protocol):
    """What a request and its rows ask of the model they run on (`model.registry.ServedModel`)."""

    version: str
    tokenizer: Any
    stop_token_ids: frozenset[int]  # where a joke ends (`model.textformat.stop_token_ids`)
    max_positions: int


@dataclass
class ChoiceResult:
    index: int
    text: str
    finish_reason: str  # "stop" | "length"
    token_ids: list[int]  # generated tokens (eos excluded)

    @property
    def tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class CompletionResult:
    choices: list[ChoiceResult]
    prompt_tokens: int
    completion_tokens: int
    version: str


def resolve(future: Future, result: Any = None, error: BaseException | None = None) -> None:
    """Answer `future` once; a future its waiter already cancelled is left alone."""
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except Exception:  # cancelled concurrently by the waiter: nobody wants the answer
        pass


@dataclass(eq=False)
class EngineRequest:
    """A submitted completion; `future` resolves to a CompletionResult (or an exception)."""

    prompt: str
    params: SamplingParams
    served: ServingModel
    future: Future = field(default_factory=Future)
    submitted_at: float = field(default_factory=time.monotonic)
    first_token_at: float | None = None
    prompt_tokens: int = 0
    rows: list[Row] = field(default_factory=list)
    cancelled: bool = False
    listener: StreamListener | None = None  # set for streaming requests

    @property
    def active(self) -> bool:
        return not self.cancelled and not self.future.done()

    def complete(self, served: ServingModel) -> CompletionResult:
        """Resolve the future with every row's result (all rows are finished)."""
        choices = [r.result(served) for r in self.rows]
        result = CompletionResult(
            choices=choices,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=sum(c.tokens for c in choices),
            version=served.version,
        )
        resolve(self.future, result)
        self.rows = []  # break row <-> request cycles early
        return result


class Row:
    """One choice of a request: a sequence in the running batch (`model.batch.BatchRow`).

    `sampling` is what the sampler needs to choose this row's tokens (`model.sampler`).
    """

    def __init__(
        self, request: EngineRequest, index: int, ids: list[int], stop: tuple[str, ...], sampling
    ) -> None:
        self.request = request
        self.index = index
        self.prompt_ids = ids
        self.length = len(ids)
        self.last_token = ids[-1]
        self.tokens: list[int] = []
        self.text: str | None = None
        self.finish_reason: str | None = None
        self.stop = stop
        self.streamed = 0  # characters already sent to a streaming client
        self.sampling = sampling

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def accept(self, token: int, served: ServingModel) -> None:
        """Take the next chosen token and decide whether this row is done."""
        p = self.request.params
        if token in served.stop_token_ids and not p.ignore_eos:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        self.last_token = token
        self.length += 1
        if self.stop:
            text = self._decode(served)
            cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.text = text[:cut]
                self.finish_reason = "stop"
                return
        if len(self.tokens) >= p.max_tokens or self.length >= served.max_positions:
            self.finish_reason = "length"

    def stream_delta(self, served: ServingModel) -> str:
        """The text a streaming client may see now and has not seen yet.

        Holds back an incomplete UTF-8 character and, while running, the last characters
        that could still begin a stop string (they must never reach the client).
        """
        text = self._text(served)
        if not self.finished:
            text = text.rstrip("\ufffd")
            hold = max((len(s) - 1 for s in self.stop), default=0)
            if hold:
                text = text[: max(0, len(text) - hold)]
        if len(text) <= self.streamed:
            return ""
        delta, self.streamed = text[self.streamed :], len(text)
        return delta

    def result(self, served: ServingModel) -> ChoiceResult:
        return ChoiceResult(
            self.index, self._text(served), self.finish_reason or "length", list(self.tokens)
        )

    def _text(self, served: ServingModel) -> str:
        """The text so far: cut at a stop string once one was found."""
        return self.text if self.text is not None else self._decode(served)

    def _decode(self, served: ServingModel) -> str:
        return served.tokenizer.decode(self.tokens, skip_special_tokens=True)
