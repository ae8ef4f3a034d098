"""The trainer's progress protocol: one JSON object a line on its stdout, nothing else there.

`model/event_writer.py` writes these records, `bot/training/trainer.py` reads them with
`parse_event` and `bot/training/progress.py` folds them into what people see. In order:

    start       once, when the first optimizer step is about to run
    progress    at every log and evaluation during training
    evaluating  before each model of the final comparison (candidate, then serving)
    done        the version is published; then exit code 0
    error       nothing was published; then exit code 1 (143 after SIGTERM)

`done` and `error` are final: nothing follows them. With N training processes only rank 0
writes, so the bot reads one stream whatever N is.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


class _Event(BaseModel):
    # a newer trainer may add fields; an older bot reads what it knows
    model_config = ConfigDict(extra="ignore")


class StartEvent(_Event):
    event: Literal["start"] = "start"
    train_jokes: int
    validation_jokes: int
    total_steps: int
    device: str
    world_size: int = 1  # training processes (torch.distributed world size)


class ProgressEvent(_Event):
    event: Literal["progress"] = "progress"
    step: int
    total_steps: int
    epoch: float = 0.0
    loss: float | None = None
    eval_loss: float | None = None
    eta_seconds: float | None = None


class EvaluatingEvent(_Event):
    event: Literal["evaluating"] = "evaluating"
    model: Literal["candidate", "serving"]


class DoneEvent(_Event):
    event: Literal["done"] = "done"
    output: str  # the published version folder
    metrics: dict[str, dict[str, Any]]  # {"candidate": {...}, "serving": {...}}, for the gate
    samples: dict[str, str] = Field(default_factory=dict)  # one sample per model, for people
    train_seconds: float = 0.0
    steps: int = 0
    stopped_early: bool = False
    budget_hit: bool = False
    duration_seconds: float = 0.0


class ErrorEvent(_Event):
    event: Literal["error"] = "error"
    message: str


TrainerEvent = Annotated[
    StartEvent | ProgressEvent | EvaluatingEvent | DoneEvent | ErrorEvent,
    Field(discriminator="event"),
]
FINAL_EVENTS = ("done", "error")
_ADAPTER: TypeAdapter[TrainerEvent] = TypeAdapter(TrainerEvent)


def parse_event(line: str | bytes) -> TrainerEvent | None:
    """One stdout line as a typed event; None for anything else (a stray line, a bad record)."""
    try:
        data = json.loads(line)
    except ValueError:
        return None
    try:
        return _ADAPTER.validate_python(data)
    except ValidationError:
        return None
