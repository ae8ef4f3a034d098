"""The generation engine: a bounded queue and one worker thread doing continuous batching.

Requests are queued on the event loop and picked up by a single worker thread, which owns every
model forward. Each loop iteration admits waiting requests (one row per choice, up to
`max_batch` rows), prefills the new rows, then runs one decode step for all rows of a model at
once; a row leaves the batch as soon as it hits eos, a stop string or its token budget, and a
waiting request takes its place at the next step. That is continuous batching at token
granularity over the model's own forward and KV cache (see `model.batch`).

Several models can be resident at once during a hot swap: the current one takes new requests,
while a replaced one finishes the requests it had already accepted and is then released.
"""

from __future__ import annotations

import gc
import logging
import math
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from model.batch import RunningBatch
from model.contracts.sampling import DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from model.loading import LoadedModel
from model.sampling import RowSampling, choose_tokens, make_generator
from model.textformat import generation_prompt_ids, layout_stops, start_token_id

log = logging.getLogger(__name__)


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


@dataclass(frozen=True)
class SamplingParams:
    max_tokens: int = 64
    temperature: float = DEFAULT_TEMPERATURE
    top_p: float = DEFAULT_TOP_P
    n: int = 1
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False
    examples: tuple[str, ...] = ()  # in-context jokes, used when the model is `few-shot`


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
    model_ref: str
    time_to_first_token: float


class ServedModel:
    """A loaded model with its serving name, and the batch of rows generating on it.

    `pinned` models (adapters loaded through the vLLM-style endpoints) stay resident beside
    the current one until unloaded; `parent` names the model they were derived from.
    """

    def __init__(
        self,
        loaded: LoadedModel,
        version: str,
        compile: bool = False,
        *,
        pinned: bool = False,
        parent: str | None = None,
    ) -> None:
        self.loaded = loaded
        self.version = version
        self.ref = loaded.ref
        self.pinned = pinned
        self.parent = parent
        self.tokenizer = loaded.tokenizer
        self.eos_token_id = loaded.tokenizer.eos_token_id
        self.start_token_id = start_token_id(loaded.tokenizer)  # a second start: a second joke
        self.prompt_layout = loaded.prompt_layout
        self.device = loaded.device
        config = loaded.model.config
        self.max_positions = (
            int(
                getattr(config, "max_position_embeddings", None)
                or getattr(config, "n_positions", 0)
            )
            or 2048
        )
        forward = loaded.model
        if compile:
            forward = torch.compile(loaded.model, dynamic=True)
        self.batch = RunningBatch(loaded.model, loaded.tokenizer.pad_token_id, forward=forward)
        self.pending: list[Row] = []  # admitted rows waiting for their prefill

    def answers_to(self, name: str) -> bool:
        """Its version name, or an alias: the model reference as loaded, or its folder name."""
        ref = str(self.ref).rstrip("/")
        return name in (self.version, ref, ref.rsplit("/", 1)[-1])

    @property
    def rows_in_use(self) -> int:
        batch = self.batch  # read once: the worker may release this model meanwhile
        return (len(batch) if batch is not None else 0) + len(self.pending)

    def release(self) -> None:
        """Drop every reference to the weights so that their memory can be reclaimed."""
        self.batch.reset()
        self.batch = None
        self.pending = []
        self.loaded = None
        self.tokenizer = None


class Row:
    """One choice of a request: a sequence in the running batch."""

    def __init__(self, request: EngineRequest, index: int, ids: list[int]) -> None:
        p = request.params
        self.request = request
        self.index = index
        self.prompt_ids = ids
        self.length = len(ids)
        self.last_token = ids[-1]
        self.tokens: list[int] = []
        self.text: str | None = None
        self.finish_reason: str | None = None
        self.stop = p.stop + layout_stops(request.served.prompt_layout) if p.examples else p.stop
        self.streamed = 0  # characters already sent to a streaming client
        generator = None
        if p.temperature > 0:
            seed = p.seed + index if p.seed is not None else secrets.randbits(63)
            generator = make_generator(seed)
        self.sampling = RowSampling(p.temperature, p.top_p, generator)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def accept(self, token: int, served: ServedModel) -> None:
        """Take the next chosen token and decide whether this row is done."""
        p = self.request.params
        if token in (served.eos_token_id, served.start_token_id) and not p.ignore_eos:
            self.finish_reason = "stop"
            return
        self.tokens.append(token)
        self.last_token = token
        self.length += 1
        if self.stop:
            text = served.tokenizer.decode(self.tokens, skip_special_tokens=True)
            cut = min((i for i in (text.find(s) for s in self.stop) if i >= 0), default=-1)
            if cut >= 0:
                self.text = text[:cut]
                self.finish_reason = "stop"
                return
        if len(self.tokens) >= p.max_tokens or self.length >= served.max_positions:
            self.finish_reason = "length"

    def stream_delta(self, served: ServedModel) -> str:
        """The text a streaming client may see now and has not seen yet.

        Holds back an incomplete UTF-8 character and, while running, the last characters
        that could still begin a stop string (they must never reach the client).
        """
        text = self.text
        if text is None:
            text = served.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not self.finished:
            text = text.rstrip("\ufffd")
            hold = max((len(s) - 1 for s in self.stop), default=0)
            if hold:
                text = text[: max(0, len(text) - hold)]
        if len(text) <= self.streamed:
            return ""
        delta, self.streamed = text[self.streamed :], len(text)
        return delta

    def result(self, served: ServedModel) -> ChoiceResult:
        text = self.text
        if text is None:
            text = served.tokenizer.decode(self.tokens, skip_special_tokens=True)
        return ChoiceResult(self.index, text, self.finish_reason or "length", list(self.tokens))


@dataclass(eq=False)
class EngineRequest:
    """A submitted completion; `future` resolves to a CompletionResult (or an exception)."""

    prompt: str
    params: SamplingParams
    served: ServedModel
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


class EngineMetrics:
    """Hooks the engine reports to (no-ops here; the server plugs in Prometheus)."""

    def batch_step(self, rows: int) -> None: ...
    def tokens_generated(self, count: int) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def model_released(self, served: ServedModel) -> None: ...


def _resolve(future: Future, result=None, error: BaseException | None = None) -> None:
    if future.done():
        return
    try:
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    except Exception:  # cancelled concurrently by the waiter: nobody wants the answer
        pass


class Engine:
    """Owns the resident models and the worker thread that runs all their forwards."""

    def __init__(
        self,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        metrics: EngineMetrics | None = None,
        admit_window: float = 0.02,
    ) -> None:
        self.max_batch = max(1, max_batch)
        self.max_queue = max(1, max_queue)
        self.metrics = metrics or EngineMetrics()
        self._cv = threading.Condition()
        self._waiting: deque[EngineRequest] = deque()
        self._models: list[ServedModel] = []  # resident: the current one plus any draining
        self.current: ServedModel | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._latency_ewma = 2.0  # seconds per request, for Retry-After estimates
        self.admit_window = admit_window
        self.steps = 0  # decode passes
        self.prefills = 0  # prefill passes

    # ----- called from the event loop -----
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="jokebot-engine", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker; requests not finished fail with EngineStopped."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cv:
            waiting, self._waiting = list(self._waiting), deque()
            models, self._models = self._models, []
            self.current = None
        err = EngineStopped("the runner is shutting down")
        for req in waiting:
            _resolve(req.future, error=err)
        for served in models:
            if served.batch is not None:
                for row in [*served.batch.rows, *served.pending]:
                    _resolve(row.request.future, error=err)
                served.release()

    @property
    def ready(self) -> bool:
        return self.current is not None and not self._stopping

    @property
    def queue_depth(self) -> int:
        return len(self._waiting)

    @property
    def running_rows(self) -> int:
        return sum(m.rows_in_use for m in list(self._models))

    @property
    def resident_versions(self) -> list[str]:
        return [m.version for m in self._models]

    def resident(self) -> list[ServedModel]:
        """The models requests may name: the current one first, then adapters, then draining."""
        models = list(self._models)
        current = self.current
        rank = {id(m): (m is not current, not m.pinned) for m in models}
        return sorted(models, key=lambda m: rank[id(m)])

    def find(self, name: str | None) -> ServedModel:
        """The model for a request's `model` field (None: the current one); UnknownModel if none.

        Exact version names win over aliases, and the current model over the others.
        """
        models = self.resident()
        if name is None:
            if self.current is None:
                raise NotReady("no model is serving")
            return self.current
        for served in models:
            if served.version == name:
                return served
        for served in models:
            if served.answers_to(name):
                return served
        raise UnknownModel(name, [m.version for m in models])

    # The registry primitives of a hot swap; `model.hot_swap` decides when to call them.
    def install(self, served: ServedModel) -> ServedModel | None:
        """Make `served` take all new requests; the previous model drains, then is released."""
        with self._cv:
            previous = self.current
            self.current = served
            if served not in self._models:
                self._models.append(served)
            self._cv.notify_all()
        return previous

    def add_pinned(self, served: ServedModel) -> ServedModel | None:
        """Keep `served` resident beside the current model; one of the same name is unpinned."""
        with self._cv:
            same = [m for m in self._models if m.pinned and m.version == served.version]
            replaced = same[0] if same else None
            if replaced is not None:
                replaced.pinned = False  # drains, then is released
                replaced.version = f"{replaced.version} (replaced)"
            served.pinned = True
            self._models.append(served)
            self._cv.notify_all()
        return replaced

    def unpin(self, name: str) -> ServedModel | None:
        """Let the pinned model `name` drain and be released; None if there is none."""
        with self._cv:
            served = next((m for m in self._models if m.pinned and m.version == name), None)
            if served is not None:
                served.pinned = False
                self._cv.notify_all()
        return served

    def submit(
        self,
        prompt: str,
        params: SamplingParams,
        model: str | None = None,
        listener: StreamListener | None = None,
    ) -> EngineRequest:
        """Queue a request for the model named `model` (None: the current one)."""
        with self._cv:
            if self.current is None or self._stopping:
                raise NotReady("no model is serving")
            served = self.find(model)
            if len(self._waiting) >= self.max_queue:
                raise QueueFull(self.retry_after())
            req = EngineRequest(prompt=prompt, params=params, served=served, listener=listener)
            self._waiting.append(req)
            self._cv.notify_all()
        return req

    def cancel(self, req: EngineRequest) -> None:
        """The client went away: drop the request from the queue or the batch at the next step."""
        req.cancelled = True
        req.future.cancel()
        with self._cv:
            self._cv.notify_all()

    def retry_after(self) -> int:
        waves = (len(self._waiting) + self.running_rows) / self.max_batch
        return max(1, math.ceil(self._latency_ewma * max(1.0, waves)))

    # ----- the worker thread -----
    def _run(self) -> None:
        with torch.inference_mode():
            while True:
                with self._cv:
                    while not self._stopping and not self._has_work():
                        self._cv.wait(timeout=1.0)
                    if self._stopping:
                        return
                    self._gather_arrivals()
                    admitted = self._admit()
                for req in admitted:
                    self._start(req)
                for served in list(self._models):
                    if served.batch is not None:
                        self._step_model(served)
                self._release_drained()

    def _gather_arrivals(self) -> None:
        """Starting from idle, wait a moment for requests arriving together (under the lock).

        Clients that were answered together come back together, a few ms apart; admitting the
        first one alone would cost an extra prefill pass and put it out of step with the rest.
        """
        if self.admit_window <= 0 or not self._waiting or self.running_rows:
            return
        deadline = time.monotonic() + self.admit_window
        while not self._stopping and len(self._waiting) < self.max_batch:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cv.wait(remaining)

    def _has_work(self) -> bool:
        """Requests to run, or a replaced model to release."""
        return (
            bool(self._waiting)
            or any(m.rows_in_use for m in self._models)
            or any(m is not self.current and not m.pinned for m in self._models)
        )

    def _admit(self) -> list[EngineRequest]:
        """Move waiting requests into the batch while rows are free (under the lock)."""
        admitted = []
        in_use = self.running_rows
        while self._waiting:
            req = self._waiting[0]
            if not req.active:
                self._waiting.popleft()
                continue
            if in_use and in_use + req.params.n > self.max_batch:
                break
            self._waiting.popleft()
            in_use += req.params.n
            admitted.append(req)
        return admitted

    def _start(self, req: EngineRequest) -> None:
        served = req.served
        try:
            ids = generation_prompt_ids(
                served.tokenizer, req.prompt, req.params.examples, served.prompt_layout
            )
        except Exception as exc:  # a broken prompt fails only this request
            _resolve(req.future, error=RequestError(f"the prompt could not be tokenized: {exc}"))
            return
        if len(ids) >= served.max_positions:
            _resolve(
                req.future,
                error=RequestError(
                    f"the prompt is {len(ids)} tokens; this model's context is "
                    f"{served.max_positions} tokens"
                ),
            )
            return
        req.prompt_tokens = len(ids)
        req.rows = [Row(req, i, ids) for i in range(req.params.n)]
        served.pending.extend(req.rows)

    def _step_model(self, served: ServedModel) -> None:
        batch = served.batch
        new = [r for r in served.pending if r.request.active]
        served.pending = []
        try:
            if any(not r.request.active for r in batch.rows):
                batch.keep([r for r in batch.rows if r.request.active])
            if new:
                logits = batch.prefill(new)
                self.prefills += 1
                self._accept(served, new, choose_tokens(logits, [r.sampling for r in new]))
            if batch.rows:
                rows = list(batch.rows)
                logits = batch.decode()
                self.steps += 1
                self.metrics.batch_step(len(rows))
                self._accept(served, rows, choose_tokens(logits, [r.sampling for r in rows]))
        except Exception as exc:
            log.exception("generation failed on model %s", served.version)
            err = RuntimeError(f"generation failed: {exc}")
            for row in [*batch.rows, *new]:
                _resolve(row.request.future, error=err)
            batch.reset()

    def _accept(self, served: ServedModel, rows: list[Row], tokens: list[int]) -> None:
        now = time.monotonic()
        produced = 0
        for row, token in zip(rows, tokens, strict=True):
            req = row.request
            if req.first_token_at is None:
                req.first_token_at = now
                self.metrics.first_token(now - req.submitted_at)
            row.accept(token, served)
            produced += 1
            if req.listener is not None:
                delta = row.stream_delta(served)
                if delta or row.finished:
                    req.listener(row.index, delta, row.finish_reason)
        self.metrics.tokens_generated(produced)
        finished = [r for r in rows if r.finished]
        if not finished:
            return
        served.batch.keep([r for r in served.batch.rows if not r.finished])
        for req in {id(r.request): r.request for r in finished}.values():
            if all(r.finished for r in req.rows):
                self._complete(req, served)

    def _complete(self, req: EngineRequest, served: ServedModel) -> None:
        choices = [r.result(served) for r in req.rows]
        completion_tokens = sum(c.tokens for c in choices)
        elapsed = time.monotonic() - req.submitted_at
        self._latency_ewma = 0.8 * self._latency_ewma + 0.2 * elapsed
        _resolve(
            req.future,
            CompletionResult(
                choices=choices,
                prompt_tokens=req.prompt_tokens,
                completion_tokens=completion_tokens,
                version=served.version,
                model_ref=served.ref,
                time_to_first_token=(req.first_token_at or time.monotonic()) - req.submitted_at,
            ),
        )
        req.rows = []  # break row <-> request cycles early

    def _release_drained(self) -> None:
        with self._cv:
            bound = {id(r.served) for r in self._waiting}
            drained = [
                m
                for m in self._models
                if m is not self.current
                and not m.pinned
                and not m.rows_in_use
                and id(m) not in bound
            ]
            for m in drained:
                self._models.remove(m)
        for m in drained:
            log.info("model %s (%s) drained; releasing it", m.version, m.ref)
            device = m.device
            m.release()
            self.metrics.model_released(m)
            del m
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
