"""The generation engine: a bounded queue and one worker thread doing continuous batching.

Requests are queued on the event loop and picked up by a single worker thread, which owns every
model forward. Each loop iteration admits waiting requests (one row per choice, up to
`max_batch` rows), prefills the new rows, then runs one decode step for all rows of a model at
once; a row leaves the batch as soon as it hits eos, a stop string or its token budget, and a
waiting request takes its place at the next step. That is continuous batching at token
granularity over the model's own forward and KV cache (see `model.batch`).

The pieces, as in nano-vllm: requests and their rows in `model.request`, sampling parameters in
`model.sampling_params`, the batch and its cache in `model.batch`, the sampler in
`model.sampler`, and the resident models in `model.registry` (the engine is a registry with a
queue and a worker). The runner serves it over HTTP; the trainer's gate samples through it.
"""

from __future__ import annotations

import gc
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Sequence

import torch

from model.registry import ModelRegistry, ServedModel
from model.request import (
    EngineRequest,
    EngineStopped,
    NotReady,
    QueueFull,
    RequestError,
    Row,
    StreamListener,
    resolve,
)
from model.sampler import choose_tokens, row_sampling
from model.sampling_params import SamplingParams
from model.textformat import generation_prompt_ids, layout_stops

log = logging.getLogger(__name__)


class EngineMetrics:
    """Hooks the engine reports to (no-ops here; the server plugs in Prometheus)."""

    def batch_step(self, rows: int) -> None: ...
    def tokens_generated(self, count: int) -> None: ...
    def first_token(self, seconds: float) -> None: ...
    def model_released(self, served: ServedModel) -> None: ...


class Engine(ModelRegistry):
    """Owns the resident models and the worker thread that runs all their forwards."""

    def __init__(
        self,
        *,
        max_batch: int = 16,
        max_queue: int = 64,
        metrics: EngineMetrics | None = None,
        admit_window: float = 0.02,
    ) -> None:
        super().__init__()
        self.max_batch = max(1, max_batch)
        self.max_queue = max(1, max_queue)
        self.metrics = metrics or EngineMetrics()
        self._waiting: deque[EngineRequest] = deque()
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
        models = self._take_all()
        err = EngineStopped("the runner is shutting down")
        for req in waiting:
            resolve(req.future, error=err)
        for served in models:
            if served.batch is not None:
                for row in [*served.batch.rows, *served.pending]:
                    resolve(row.request.future, error=err)
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

    def submit(
        self,
        prompt: str,
        params: SamplingParams,
        model: str | None = None,
        listener: StreamListener | None = None,
    ) -> EngineRequest:
        """Queue a request for the model named `model` (None: the current one)."""
        return self.submit_all([(prompt, params)], model, [listener])[0]

    def submit_all(
        self,
        jobs: Sequence[tuple[str, SamplingParams]],
        model: str | None = None,
        listeners: Sequence[StreamListener | None] = (),
    ) -> list[EngineRequest]:
        """Queue one request per (prompt, params) for the model named `model`, all or none.

        Queued together, they enter an idle engine's batch together (up to `max_batch` rows).
        NotReady, UnknownModel or QueueFull (they do not all fit) leave the queue as it was.
        """
        listeners = list(listeners) or [None] * len(jobs)
        with self._cv:
            if self.current is None or self._stopping:
                raise NotReady("no model is serving")
            served = self.find(model)
            if len(self._waiting) + len(jobs) > self.max_queue:
                raise QueueFull(self.retry_after())
            reqs = [
                EngineRequest(prompt=prompt, params=params, served=served, listener=listener)
                for (prompt, params), listener in zip(jobs, listeners, strict=True)
            ]
            self._waiting.extend(reqs)
            self._cv.notify_all()
        return reqs

    def cancel(self, *reqs: EngineRequest) -> None:
        """Their clients went away: the unfinished ones leave the queue or the batch at the
        next step (finished ones are left as they are)."""
        unfinished = [r for r in reqs if not r.future.done()]
        if not unfinished:
            return
        for req in unfinished:
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
            bool(self._waiting) or any(m.rows_in_use for m in self._models) or bool(self._retired())
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
        """Lay out the prompt as its model wants it and give the request its rows."""
        served, p = req.served, req.params
        try:
            ids = generation_prompt_ids(
                served.tokenizer, req.prompt, p.examples, served.prompt_layout
            )
        except Exception as exc:  # a broken prompt fails only this request
            resolve(req.future, error=RequestError(f"the prompt could not be tokenized: {exc}"))
            return
        if len(ids) >= served.max_positions:
            resolve(
                req.future,
                error=RequestError(
                    f"the prompt is {len(ids)} tokens; this model's context is "
                    f"{served.max_positions} tokens"
                ),
            )
            return
        req.prompt_tokens = len(ids)
        stop = p.stop + layout_stops(served.prompt_layout) if p.examples else p.stop
        req.rows = [
            Row(req, i, ids, stop, row_sampling(p.temperature, p.top_p, p.seed, i))
            for i in range(p.n)
        ]
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
                resolve(row.request.future, error=err)
            batch.reset()

    def _accept(self, served: ServedModel, rows: list[Row], tokens: list[int]) -> None:
        now = time.monotonic()
        for row, token in zip(rows, tokens, strict=True):
            req = row.request
            if req.first_token_at is None:
                req.first_token_at = now
                self.metrics.first_token(now - req.submitted_at)
            row.accept(token, served)
            if req.listener is not None:
                delta = row.stream_delta(served)
                if delta or row.finished:
                    req.listener(row.index, delta, row.finish_reason)
        self.metrics.tokens_generated(len(rows))
        finished = [r for r in rows if r.finished]
        if not finished:
            return
        served.batch.keep([r for r in served.batch.rows if not r.finished])
        for req in {id(r.request): r.request for r in finished}.values():
            if all(r.finished for r in req.rows):
                req.complete(served)
                elapsed = time.monotonic() - req.submitted_at
                self._latency_ewma = 0.8 * self._latency_ewma + 0.2 * elapsed

    def _release_drained(self) -> None:
        with self._cv:  # one lock: no request may bind to a model between the check and removal
            drained = self._take_drained({id(r.served) for r in self._waiting})
        for m in drained:
            log.info("model %s (%s) drained; releasing it", m.version, m.ref)
            device = m.device
            m.release()
            self.metrics.model_released(m)
            del m
            gc.collect()
            if device.type == "cuda":
                torch.cuda.empty_cache()
