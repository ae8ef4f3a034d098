"""The training process end to end on a tiny GPT-2: version folder and manifest, events, budget,
faults, LoRA, enough steps for a small corpus."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model.contracts.corpus import corpus_hash, read_snapshot
from model.contracts.jokes import check_joke
from model.contracts.manifest import VersionManifest
from model.event_writer import EventWriter
from model.loading import load_model_and_tokenizer
from model.textformat import FEW_SHOT, PLAIN
from model.train import JobError, TrainJob, run_job
from tests.helpers import (
    ROOT,
    SHORT_JOKES,
    VERSION_FILES,
    job_dict,
    read_events_until,
    start_train_cli,
)


def test_cli_trains_a_loadable_version_and_reports_in_order(tmp_path, tiny_model):
    job = job_dict(tmp_path, tiny_model)
    process = start_train_cli(job, tmp_path)
    stdout, _ = process.communicate(timeout=240)
    assert process.returncode == 0
    events = [json.loads(line) for line in stdout.splitlines()]  # every stdout line is JSON
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-1] == "done"
    assert kinds[-3:-1] == ["evaluating", "evaluating"]
    assert [e["model"] for e in events[-3:-1]] == ["candidate", "serving"]
    progress = [e for e in events if e["event"] == "progress"]
    assert progress and set(kinds[1:-3]) == {"progress"}
    assert [e["step"] for e in progress] == sorted(e["step"] for e in progress)
    assert any(e["eval_loss"] is not None for e in progress)
    assert all(e["total_steps"] == events[0]["total_steps"] for e in progress)
    assert events[0]["train_jokes"] + events[0]["validation_jokes"] == 40

    done = events[-1]
    output = Path(job["output"])
    assert done["output"] == str(output)
    assert {p.name for p in output.iterdir()} >= VERSION_FILES
    assert not (output / "checkpoints").exists()
    assert [p.name for p in output.parent.iterdir()] == ["v1"]  # no .tmp-* left
    candidate, serving = done["metrics"]["candidate"], done["metrics"]["serving"]
    assert candidate["nll"] < 0.5 * serving["nll"]  # learnt the corpus, measured on held-out jokes
    assert candidate["n_validation"] == serving["n_validation"] == events[0]["validation_jokes"]
    assert candidate["n_samples"] == 4

    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert VersionManifest.read(output).model_dump(mode="json") == manifest  # what the bot reads
    assert (manifest["version"], manifest["parent_version"]) == (1, 0)  # the bot's origin
    assert manifest["base_model"] == "the-base" and manifest["trained_from"] == str(tiny_model)
    assert manifest["corpus_hash"] == corpus_hash(read_snapshot(job["snapshot"]))
    assert manifest["corpus_size"] == 40
    assert manifest["metrics"] == done["metrics"]
    assert manifest["token_layout"] == "start+joke+eos"
    assert manifest["start_token"] == manifest["eos_token"] == "<|endoftext|>"  # GPT-2
    assert manifest["hyperparameters"]["learning_rate"] == 1e-2
    assert len(manifest["snapshot_sha256"]) == 64
    loaded = load_model_and_tokenizer(output, device="cpu")
    assert loaded.tokenizer.eos_token_id == loaded.model.generation_config.eos_token_id


def test_time_budget_stops_training_and_keeps_the_best(tmp_path, tiny_model):
    job = TrainJob.from_dict(job_dict(tmp_path, tiny_model, epochs=50, max_minutes=0.02))
    events = EventWriter()
    done = run_job(job, events)
    assert done["budget_hit"] and not done["stopped_early"]
    start = events.events[0]
    assert start["event"] == "start" and 0 < done["steps"] < start["total_steps"]
    assert any(e.get("eval_loss") is not None for e in events.events)  # the last step was measured
    assert Path(done["output"], "model.safetensors").is_file()


def test_lora_is_merged_into_a_plain_model(tmp_path, tiny_model):
    job = TrainJob.from_dict(
        job_dict(tmp_path, tiny_model, epochs=2, lora=True, lora_r=4, lora_alpha=8)
    )
    done = run_job(job, EventWriter())
    output = Path(done["output"])
    assert not (output / "adapter_config.json").exists()
    loaded = load_model_and_tokenizer(output, device="cpu")
    assert type(loaded.model).__name__ == "GPT2LMHeadModel"
    assert not any("lora" in name for name in loaded.model.state_dict())
    assert done["metrics"]["candidate"]["nll"] < done["metrics"]["serving"]["nll"]
    manifest = json.loads((output / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["hyperparameters"]["lora"] is True


def test_sigterm_leaves_neither_a_version_nor_a_temporary_folder(tmp_path, tiny_model):
    job = job_dict(tmp_path, tiny_model, epochs=500, max_minutes=10)
    process = start_train_cli(job, tmp_path)
    try:
        read_events_until(process, "progress")
        process.send_signal(signal.SIGTERM)
        began = time.monotonic()
        rest, _ = process.communicate(timeout=30)
        assert time.monotonic() - began < 10
    finally:
        process.kill()
    assert process.returncode not in (0, None)
    last = json.loads(rest.splitlines()[-1])
    assert last["event"] == "error" and "cancelled" in last["message"]
    assert not (tmp_path / "models").exists() or not list((tmp_path / "models").iterdir())


def test_sigkill_leaves_no_version_folder(tmp_path, tiny_model):
    job = job_dict(tmp_path, tiny_model, epochs=500, max_minutes=10)
    process = start_train_cli(job, tmp_path)
    try:
        read_events_until(process, "progress")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    left = [p.name for p in (tmp_path / "models").iterdir()]
    assert "v1" not in left
    assert all(name.startswith(".tmp-v1-") for name in left)


def test_out_of_memory_is_reported_and_leaves_nothing(tmp_path, tiny_model):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job_dict(tmp_path, tiny_model)), encoding="utf-8")
    code = (
        "import sys, torch, transformers\n"
        "def oom(*a, **k): raise torch.OutOfMemoryError('CUDA out of memory. Tried 2 GiB')\n"
        "transformers.Trainer.train = oom\n"
        "from model.train import main\n"
        f"sys.exit(main(['--job', {str(job_file)!r}]))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 1
    last = json.loads(result.stdout.splitlines()[-1])
    assert last["event"] == "error" and "out of memory" in last["message"]
    assert not list((tmp_path / "models").iterdir())


def test_job_defaults_and_refusals(tmp_path, tiny_model):
    job = TrainJob.from_dict(
        {"snapshot": "s.jsonl", "base": "b", "output": "o", "epochs": "2", "lora": "false", "x": 1}
    )
    assert job.epochs == 2.0 and job.lora is False and job.serving_ref == "b"
    assert job.max_minutes > 0 and job.validation_fraction == 0.1
    with pytest.raises(JobError, match="lacks"):
        TrainJob.from_dict({"snapshot": "s.jsonl", "base": "b"})
    with pytest.raises(JobError, match="validation_fraction"):
        TrainJob.from_dict({"snapshot": "s", "base": "b", "output": "o", "validation_fraction": 1})
    existing = tmp_path / "models" / "v1"
    existing.mkdir(parents=True)
    with pytest.raises(JobError, match="already exists"):
        run_job(TrainJob.from_dict(job_dict(tmp_path, tiny_model)), EventWriter())
    assert [p.name for p in existing.parent.iterdir()] == ["v1"]


@pytest.mark.parametrize("min_steps", [12])
def test_a_small_corpus_gets_enough_steps_to_change_the_weights(tmp_path, tiny_model, min_steps):
    from safetensors.torch import load_file

    snapshot = tmp_path / "snapshot.jsonl"
    with snapshot.open("w", encoding="utf-8") as out:
        for number, text in enumerate([*SHORT_JOKES, "Why did the chicken cross the road?"], 1):
            check = check_joke(text)
            out.write(json.dumps({"id": number, "text": check.text, "key": check.key}) + "\n")
    job = TrainJob.from_dict(
        {
            "snapshot": str(snapshot), "base": str(tiny_model), "output": str(tmp_path / "v1"),
            "device": "cpu", "epochs": 1, "batch_size": 16, "min_steps": min_steps,
            "eval_samples": 2, "sample_max_tokens": 8, "max_minutes": 5,
            "early_stopping_patience": 100,
        }
    )  # fmt: skip

    class Events:
        def emit(self, event, **fields):
            pass

    done = run_job(job, Events())
    manifest = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    assert manifest["training"]["steps"] == min_steps  # one epoch would have been one step
    assert manifest["prompt_layout"] == PLAIN
    before = load_file(tiny_model / "model.safetensors")
    after = load_file(tmp_path / "v1" / "model.safetensors")
    changed = [name for name in before if name in after and not before[name].equal(after[name])]
    assert len(changed) > len(before) // 2, changed
    assert done["metrics"]["serving"]["layout"] == FEW_SHOT  # the base was measured as served
    assert done["metrics"]["candidate"]["layout"] == PLAIN
