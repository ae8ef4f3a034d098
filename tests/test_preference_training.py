"""The preference phase on a tiny GPT-2: it learns a rule from votes, the gate sees it, and it
keeps the trainer's guarantees (LoRA, time budget, cancellation leaves no version)."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from bot.training.trainer import trainer_command
from model.contracts.jokes import normalise_key
from model.contracts.preferences import VotedJoke, write_preferences
from model.event_writer import EventWriter
from model.loading import load_model_and_tokenizer
from model.train import TrainJob, run_job
from tests.helpers import (
    DISLIKED,
    LIKED,
    ROOT,
    THINGS,
    job_dict,
    read_events_until,
    start_train_cli,
)


def write_votes(folder: Path, *, prompts: bool = False) -> Path:
    """80 voted jokes: 👍 on the liked animals, 👎 (or 🚩) on the others."""
    jokes = []
    for number, (animal, thing) in enumerate(((a, t) for a in LIKED + DISLIKED for t in THINGS), 1):
        completion = f"My {animal} likes the {thing}."
        prompt = ""
        if prompts:
            prompt, completion = "My", f" {animal} likes the {thing}."
        liked = animal in LIKED
        jokes.append(
            VotedJoke(
                id=number,
                prompt=prompt,
                completion=completion,
                key=normalise_key(prompt + completion),
                up=3 if liked else 1,
                down=0 if liked else 2,
                reported=not liked and number % 7 == 0,
            )
        )
    path = folder / "preferences.jsonl"
    write_preferences(path, jokes)
    return path


def preference_values(tmp_path: Path, model: Path, prompts: bool = False, **overrides) -> dict:
    tmp_path.mkdir(parents=True, exist_ok=True)
    values = {
        "preferences": str(write_votes(tmp_path, prompts=prompts)),
        "preference_phase": True,
        "preference_learning_rate": 5e-3,
        "preference_epochs": 3,
        "preference_beta": 0.5,
        "epochs": 2,
        "min_steps": 0,
    }
    values.update(overrides)
    return job_dict(tmp_path, model, **values)


def preference_job(tmp_path: Path, model: Path, **overrides) -> TrainJob:
    return TrainJob.from_dict(preference_values(tmp_path, model, **overrides))


def test_the_phase_learns_the_rule_and_the_gate_measures_it(tmp_path, tiny_model):
    skipped = preference_job(tmp_path / "a", tiny_model, preference_phase=False)
    without = run_job(skipped, EventWriter())
    events = EventWriter()
    done = run_job(preference_job(tmp_path / "b", tiny_model), events)
    kinds = [e["event"] for e in events.events]
    assert kinds.count("votes") == 1
    checks = done["metrics"]["candidate"]["preference"]["sample_checks"]
    assert len(checks) >= 4 and all(c["samples"] == 4 for c in checks)  # the gate's eval_samples
    votes_at = kinds.index("votes")
    assert "start" in kinds[:votes_at]
    after = [e for e in events.events[votes_at:] if e["event"] == "progress"]
    assert after and all(e["phase"] == "votes" for e in after)
    candidate, serving = done["metrics"]["candidate"], done["metrics"]["serving"]
    assert serving["vote_separation"] == 0.5  # the serving model is the reference here
    assert candidate["preference"]["ran"] and candidate["votes_up"] > candidate["votes_down"]
    assert candidate["vote_separation"] > 0.8
    assert candidate["vote_separation"] > without["metrics"]["candidate"]["vote_separation"] + 0.2

    before = without["metrics"]["candidate"]
    assert not before["preference"]["ran"] and before["votes_up"] == 0  # below the minimum
    assert before["vote_pairs"] == candidate["vote_pairs"] > 0  # the gate measured both
    assert candidate["distinct_2"] > 0


def test_the_base_separates_nothing_whatever_dtype_the_gate_samples_in(tmp_path, tiny_model):
    """The serving model here is the vote reference itself: 0.5 exactly, also when the gate
    samples in bfloat16 (the votes are scored before, in the dtype the reference was)."""
    job = preference_job(tmp_path, tiny_model, preference_phase=False, eval_dtype="bfloat16")
    serving = run_job(job, EventWriter())["metrics"]["serving"]
    assert serving["vote_separation"] == 0.5


def test_lora_with_prompts_uses_kto_and_keeps_one_adapter(tmp_path, tiny_model):
    job = preference_job(
        tmp_path,
        tiny_model,
        prompts=True,
        lora=True,
        lora_r=8,
        lora_alpha=16,
        preference_learning_rate=1e-2,  # x10 for LoRA: a tiny random model needs a big step
        preference_beta=0.1,
        # at this step the SFT term makes the tiny model learn its 64 liked jokes by heart, and
        # held-out jokes separate no better than chance (0.4-0.5); KTO's part is what this
        # measures (the term itself, through LoRA too: tests/test_votes_trainer.py)
        preference_sft_weight=0.0,
    )
    done = run_job(job, EventWriter())
    candidate = done["metrics"]["candidate"]
    assert candidate["preference"]["ran"] and candidate["preference"]["loss"] == "kto"
    # clearly above chance (0.5); the exact figure moves with the CPU's kernels and the
    # optimiser's implementation (rank 4 gave 0.63 with ATEN_CPU_CAPABILITY=avx2 and 0.76 with
    # avx512 under fused AdamW; rank 8 gives 0.84 and 0.91), so the bound leaves room for both
    assert candidate["vote_separation"] > 0.7
    output = Path(done["output"])
    adapter = json.loads((output / "adapter" / "adapter_config.json").read_text("utf-8"))
    assert adapter["r"] == 8
    assert not (output / "adapter" / "ref").exists()  # TRL's frozen reference copy is gone
    loaded = load_model_and_tokenizer(output, device="cpu")
    assert not any("lora" in name for name in loaded.model.state_dict())


def test_out_of_time_the_phase_stops_and_the_version_is_still_complete(tmp_path, tiny_model):
    job = preference_job(
        tmp_path, tiny_model, max_minutes=0.1, preference_time_share=0.5, preference_epochs=500
    )
    events = EventWriter()
    done = run_job(job, events)
    phase = done["metrics"]["candidate"]["preference"]
    assert phase["ran"] and phase["budget_hit"] and 0 < phase["steps"] < phase["total_steps"]
    (announced,) = [e for e in events.events if e["event"] == "votes"]
    assert announced["total_steps"] == phase["total_steps"]
    assert [p.name for p in Path(done["output"]).parent.iterdir()] == ["v1"]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL])
def test_a_signal_during_the_phase_leaves_no_version(tmp_path, tiny_model, signum):
    job = preference_values(tmp_path, tiny_model, epochs=1, preference_epochs=500)
    process = start_train_cli(job, tmp_path)
    try:
        read_events_until(process, "votes")
        process.send_signal(signum)
        rest, _ = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode not in (0, None)
    left = [p.name for p in (tmp_path / "models").iterdir()]
    if signum == signal.SIGTERM:
        assert "cancelled" in json.loads(rest.splitlines()[-1])["message"]
        assert left == []
    else:  # only the temporary folder, which the bot removes
        assert all(name.startswith(".tmp-v1-") for name in left)


def test_two_processes_learn_from_votes_and_write_one_version(tmp_path, tiny_model):
    job = preference_values(tmp_path, tiny_model, epochs=1, eval_samples=2)
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    result = subprocess.run(
        trainer_command(job_file, 2), cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-2000:]
    events = [json.loads(line) for line in result.stdout.splitlines()]
    kinds = [e["event"] for e in events]
    assert kinds.count("votes") == 1 and kinds[-1] == "done"
    phase = events[-1]["metrics"]["candidate"]["preference"]
    assert phase["ran"] and phase["steps"] > 0
    checks = phase["sample_checks"]  # rank 0 samples and decides for both ranks
    assert checks[0]["step"] == 0 and checks[-1]["step"] == phase["steps"]
    assert all(check["samples"] == 2 for check in checks)
    assert events[-1]["metrics"]["candidate"]["vote_separation"] > 0.7
    assert [p.name for p in (tmp_path / "models").iterdir()] == ["v1"]
