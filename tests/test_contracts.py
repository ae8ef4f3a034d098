"""The contracts between the bot and the trainer: torch-free, and the same on both sides."""

from __future__ import annotations

import json

import pytest

from bot.training.progress import TrainingProgress
from model.contracts.manifest import VersionOrigin
from model.contracts.training_events import (
    DoneEvent,
    ErrorEvent,
    EvaluatingEvent,
    ProgressEvent,
    StartEvent,
    parse_event,
)
from model.contracts.training_job import JobError, TrainJob
from model.event_writer import EventWriter
from tests.helpers import heavy_modules_after_import


def test_the_bot_loads_the_contracts_without_torch():
    loaded = heavy_modules_after_import(
        "model.contracts.training_job", "model.contracts.training_events",
        "model.contracts.jokes", "model.contracts.corpus", "bot.training.coordinator",
        "bot.training.progress", "bot.app",
    )  # fmt: skip
    assert loaded == []


def test_job_file_holds_what_the_bot_set_and_reads_back_the_same():
    origin = VersionOrigin(version=3, parent_version=2, base_model="m")
    job = TrainJob(snapshot="s.jsonl", base="b", output="o", epochs=2, lora=True, origin=origin)
    written = json.loads(job.file_text())
    assert written == {
        "snapshot": "s.jsonl",
        "base": "b",
        "output": "o",
        "epochs": 2.0,
        "lora": True,
        "origin": {"version": 3, "parent_version": 2, "base_model": "m"},
    }
    assert TrainJob.from_dict(written) == job
    assert "snapshot" not in job.hyperparameters() and job.hyperparameters()["epochs"] == 2.0
    with pytest.raises(JobError, match="'epochs'"):
        TrainJob.from_dict({**written, "epochs": "many"})
    with pytest.raises(JobError, match="warmup_ratio"):
        TrainJob.from_dict({**written, "warmup_ratio": 1.5})


def test_events_written_by_the_trainer_are_read_by_the_bot():
    writer = EventWriter()
    sent = [
        StartEvent(train_jokes=9, validation_jokes=1, total_steps=4, device="cpu", world_size=2),
        ProgressEvent(step=2, total_steps=4, loss=float("nan"), eval_loss=1.5, eta_seconds=3.0),
        EvaluatingEvent(model="serving"),
        DoneEvent(output="/m/v1", metrics={"candidate": {"nll": 1.0}, "serving": {"nll": 2.0}}),
        ErrorEvent(message="too late"),  # after `done`: never written
    ]
    for event in sent:
        writer.emit(event)
    lines = [json.dumps(record) for record in writer.events]
    received = [parse_event(line) for line in lines]
    assert [type(e) for e in received] == [StartEvent, ProgressEvent, EvaluatingEvent, DoneEvent]
    assert received[1].loss is None  # NaN travels as null
    progress = TrainingProgress()
    progress.apply(received[0])
    assert progress.phase == "training" and "2 × cpu" in progress.detail
    progress.apply(received[1])
    assert (progress.step, progress.eval_loss, progress.loss) == (2, 1.5, None)
    progress.apply(received[2])
    assert progress.phase == "evaluating" and "serving" in progress.detail
    assert parse_event("Setting OMP_NUM_THREADS ...") is None
    assert parse_event('{"event": "progress"}') is None  # a record without its fields
    assert parse_event('{"event": "error", "message": "x", "new_field": 1}') == ErrorEvent(
        message="x"
    )
