"""Data-parallel training (TRAIN_PROCESSES): the launcher, rank 0 as the only writer, faults.

Real `torchrun` processes with the gloo backend on this CPU; the CUDA/nccl choices are checked
as logic (no GPU here).
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import torch

from bot.app import open_database
from bot.community.importer import import_jokes
from bot.training.coordinator import TrainingCoordinator
from bot.training.trainer import (
    launcher_failure,
    resolve_train_processes,
    trainer_command,
    visible_gpu_count,
)
from model import devices
from model.distributed import World, backend_for, per_process_batch, rank_device
from tests.helpers import ROOT, corpus_lines, job_dict, make_settings, wait_until

ROOT_CAUSE = """model.train FAILED
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : 1 (pid: 15233)
  traceback : To enable traceback see: https://pytorch.org/docs/stable/elastic/errors.html
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  time      : 2026-12-04_13:23:28
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 15234)  (SIGKILL)
  error_file: <N/A>
  traceback : Signal 9 (SIGKILL) received by PID 15234
"""


def test_launcher_command_for_one_and_several_processes():
    job = Path("/runs/job.json")
    assert trainer_command(job, 1, python="py") == ["py", "-m", "model.train", "--job", str(job)]
    many = trainer_command(job, 3, python="py")
    assert many[:3] == ["py", "-m", "torch.distributed.run"]
    assert "--standalone" in many and many[many.index("--nproc-per-node") + 1] == "3"
    assert many[many.index("--max-restarts") + 1] == "0"  # a failed rank fails the run
    assert many[-4:] == ["-m", "model.train", "--job", str(job)]  # the same job file


def test_auto_is_one_process_per_visible_gpu_and_one_on_a_cpu(monkeypatch):
    assert resolve_train_processes(2, "cpu") == 2
    assert resolve_train_processes("auto", "cpu", gpus=4) == 1
    assert resolve_train_processes("auto", "mps", gpus=4) == 1
    assert resolve_train_processes("auto", "auto", gpus=0) == 1
    assert resolve_train_processes("auto", "cuda", gpus=3) == 3
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "0,1"}) == 2
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": ""}) == 0
    assert visible_gpu_count({"CUDA_VISIBLE_DEVICES": "2,-1,3"}) == 1  # CUDA stops at -1
    monkeypatch.setattr("shutil.which", lambda name: None)  # no nvidia-smi: no GPU
    assert visible_gpu_count({}) == 0
    monkeypatch.setenv("TRAIN_PROCESSES", "auto")
    monkeypatch.setenv("DEVICE", "cpu")
    settings = make_settings(Path("data"), Path("m"), train_processes="auto")
    assert resolve_train_processes(settings.train_processes, settings.device) == 1


def test_backend_device_precision_and_batch_split(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert backend_for(cpu) == "gloo" and backend_for(cuda) == "nccl"
    two = World.from_env(
        {"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4", "LOCAL_WORLD_SIZE": "2"}
    )
    assert (two.rank, two.local_rank, two.world_size, two.local_world_size) == (3, 1, 4, 2)
    assert not two.is_main and two.distributed and World.from_env({}).is_main
    assert rank_device(cuda, two) == torch.device("cuda", 1)  # each rank its own GPU
    assert rank_device(cpu, two) == cpu and rank_device(cuda, World()) == cuda
    assert devices.training_precision(cpu) == "fp32"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert devices.training_precision(cuda) == "bf16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert devices.training_precision(cuda) == "fp16"  # pre-Ampere GPUs
    assert per_process_batch(16, 2) == 8 and per_process_batch(5, 2) == 2
    assert per_process_batch(1, 4) == 1
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert devices.configure_cpu_threads(2) == 4 and devices.configure_cpu_threads(16) == 1


def test_launcher_failure_names_the_rank_that_died_first():
    failure = launcher_failure(ROOT_CAUSE)
    assert (failure.rank, failure.exit_code) == (1, -9)
    assert failure.describe() == "training process rank 1 was killed by SIGKILL"
    assert launcher_failure("Traceback (most recent call last):\n ValueError") is None


def test_two_processes_write_one_event_stream_and_one_version(tmp_path, tiny_model):
    job = job_dict(tmp_path, tiny_model, epochs=2, min_steps=0, eval_samples=2)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    result = subprocess.run(
        trainer_command(job_file, 2),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]  # only events on stdout
    kinds = [e["event"] for e in events]
    assert kinds.count("start") == 1 and kinds[-1] == "done" and kinds.count("done") == 1
    assert kinds[-3:-1] == ["evaluating", "evaluating"]  # the final evaluation ran once
    assert events[0]["world_size"] == 2
    steps = [e["step"] for e in events if e["event"] == "progress"]
    assert steps == sorted(steps)  # one writer: no interleaved second stream
    models = tmp_path / "models"
    assert [p.name for p in models.iterdir()] == ["v1"]  # one folder, no .tmp-* left
    manifest = json.loads((models / "v1" / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["world_size"] == 2 and manifest["training"]["world_size"] == 2
    hyper = manifest["hyperparameters"]
    assert hyper["batch_size"] == hyper["effective_batch_size"] == 8
    assert hyper["per_process_batch_size"] == 4
    assert "[rank 1]" in result.stderr  # rank 1 trained too, and logged to stderr only


def _ranks(launcher_pid: int) -> dict[int, psutil.Process]:
    children = psutil.Process(launcher_pid).children()
    return {int(child.environ()["RANK"]): child for child in children}


def _gone(processes) -> bool:
    return all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in processes)


@pytest.mark.parametrize("fault", ["kill rank 1", "kill the launcher", "cancel"])
async def test_a_fault_in_any_process_fails_the_run_without_version_or_orphans(
    tmp_path, tiny_model, fault
):
    settings = make_settings(tmp_path / "data", tiny_model, train_epochs=200, train_processes=2)
    db = await open_database(settings)
    try:
        await import_jokes(db, corpus_lines(60))
        coordinator = TrainingCoordinator(settings, db, runner=None)
        task = asyncio.create_task(coordinator.train("cli"))
        await wait_until(
            lambda: coordinator.progress and coordinator.progress.step > 0,
            120,
            what="a training step",
        )
        launcher = psutil.Process(coordinator._process.pid)
        ranks = _ranks(launcher.pid)
        assert sorted(ranks) == [0, 1]
        if fault == "kill rank 1":
            ranks[1].send_signal(signal.SIGKILL)
        elif fault == "kill the launcher":
            launcher.send_signal(signal.SIGKILL)
        else:
            assert await coordinator.cancel()
        outcome = await asyncio.wait_for(task, 90)
        expected = {
            "kill rank 1": ("failed", "training process rank 1 was killed by SIGKILL"),
            "kill the launcher": ("failed", "code -9"),
            "cancel": ("cancelled", "cancelled by an admin"),
        }[fault]
        assert (outcome.status, expected[1] in outcome.message) == (expected[0], True), outcome
        run = await db.run(outcome.run_id)
        assert run.status == expected[0] and run.finished_at and expected[1] in run.message
        models_dir = settings.models_dir
        assert not any(models_dir.glob("v*")) and not any(models_dir.glob(".tmp-*"))
        processes = [launcher, *ranks.values()]
        await wait_until(lambda: _gone(processes), what="gone: every rank (no orphan)")
        assert (await db.active_version()).version == 0
    finally:
        await db.close()


def test_cli_trains_with_two_processes_and_records_world_size(tmp_path, tiny_model):
    """`TRAIN_PROCESSES=2 jokebot train` on a tiny GPT-2 and 120 imported jokes promotes a
    version whose manifest records world_size 2."""
    from tests.helpers import process_env

    data = tmp_path / "data"
    jokes = tmp_path / "jokes.txt"
    jokes.write_text("\n".join(corpus_lines(120)) + "\n", encoding="utf-8")
    env = process_env(data, tiny_model, TRAIN_PROCESSES="2", TRAIN_EPOCHS="1", TRAIN_MIN_STEPS="10")
    imported = subprocess.run(
        [sys.executable, "-m", "bot.cli", "import", str(jokes)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert imported.returncode == 0 and "added 120" in imported.stdout, imported
    trained = subprocess.run(
        [sys.executable, "-m", "bot.cli", "train"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert trained.returncode == 0, trained.stdout[-1500:] + trained.stderr[-1500:]
    assert "promoted" in trained.stdout, trained.stdout[-1500:]
    manifest = json.loads((data / "models" / "v1" / "manifest.json").read_text("utf-8"))
    assert manifest["world_size"] == 2
