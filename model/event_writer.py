"""The trainer's events on stdout, one JSON object a line: the writer and the Trainer callback.

The records are `model.contracts.training_events`. The bot reads the trainer's stdout line by
line, so stdout carries events and nothing else: `claim_stdout` keeps the real stdout for
events and points file descriptor 1 (print, C libraries, progress bars) at stderr.
`TrainingEvents` emits `start` and `progress` from inside the Trainer (its ETA never exceeds
what is left of the `model.time_budget`).
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from typing import IO, TYPE_CHECKING, Any

from transformers import TrainerCallback

from model.contracts.training_events import (
    FINAL_EVENTS,
    ProgressEvent,
    StartEvent,
    TrainerEvent,
)

if TYPE_CHECKING:
    from model.time_budget import TimeBudget


def _clean(value: Any) -> Any:
    """JSON-safe values: NaN and infinities become null, numpy / torch scalars plain numbers."""
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class EventWriter:
    """Writes one event per line and flushes it at once (thread-safe).

    Final events (done, error) close the writer: nothing is written after them, so the last
    line the bot reads is the outcome even if the training thread is still winding down.
    A writer without a stream (the other ranks of a multi-process run, in-process callers)
    only keeps its records in `events`.
    """

    def __init__(self, stream: IO[str] | None = None):
        self.stream = stream
        self.events: list[dict] = []  # kept for in-process callers and tests
        self.closed = False
        self._lock = threading.Lock()

    def emit(self, event: TrainerEvent) -> dict:
        record = _clean(event.model_dump())
        with self._lock:
            if self.closed:
                return record
            self.closed = event.event in FINAL_EVENTS
            self.events.append(record)
            if self.stream is not None:
                self.stream.write(json.dumps(record, ensure_ascii=False) + "\n")
                self.stream.flush()
        return record


def claim_stdout() -> IO[str]:
    """Return a stream on the real stdout for events; send everything else on fd 1 to stderr."""
    sys.stdout.flush()
    events_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return os.fdopen(events_fd, "w", encoding="utf-8", buffering=1)


class TrainingEvents(TrainerCallback):
    """Emits `start` when training begins and `progress` at every log and evaluation."""

    def __init__(
        self,
        writer: EventWriter,
        *,
        train_jokes: int,
        validation_jokes: int,
        device,
        world_size: int = 1,
    ):
        self.writer = writer
        self.train_jokes = train_jokes
        self.validation_jokes = validation_jokes
        self.device = str(device)
        self.world_size = world_size
        self.budget: TimeBudget | None = None
        self.started = time.monotonic()

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()
        self.writer.emit(
            StartEvent(
                train_jokes=self.train_jokes,
                validation_jokes=self.validation_jokes,
                total_steps=state.max_steps,
                device=self.device,
                world_size=self.world_size,
            )
        )

    def eta_seconds(self, state) -> float | None:
        if state.global_step <= 0:
            return None
        elapsed = time.monotonic() - self.started
        eta = elapsed / state.global_step * max(0, state.max_steps - state.global_step)
        if self.budget is not None:
            eta = min(eta, self.budget.remaining())
        return round(eta, 1)

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs or {}
        if "loss" not in logs and "eval_loss" not in logs:
            return
        self.writer.emit(
            ProgressEvent(
                step=state.global_step,
                total_steps=state.max_steps,
                epoch=round(state.epoch or 0.0, 3),
                loss=_clean(logs.get("loss")),
                eval_loss=_clean(logs.get("eval_loss")),
                eta_seconds=self.eta_seconds(state),
            )
        )
