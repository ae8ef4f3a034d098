"""The preference phase on a tiny GPT-2: it learns a rule from votes, the gate sees it, and it
keeps the trainer's guarantees (LoRA, time budget, cancellation leaves no version)."""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from model.contracts.jokes import normalise_key
from model.contracts.preferences import VotedJoke, is_held_out, write_preferences
from model.progress import EventWriter
from model.train import TrainJob, run_job
from tests.helpers import job_dict

LIKED = ["duck", "goat", "pig", "dog"]  # the community's rule: jokes about these animals
DISLIKED = ["cow", "horse", "sheep", "chicken"]
THINGS = ["hat", "boat", "cake", "song", "lamp", "book", "coat", "drum", "kite", "cup"]


def write_votes(folder: Path, *, prompts: bool = False) -> Path:
    """80 voted jokes: 👍 on the liked animals, 👎 (or 🚩) on the others."""
    jokes = []
    for number, (animal, thing) in enumerate(
        ((a, t) for a in LIKED + DISLIKED for t in THINGS), 1
    ):
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


def preference_job(tmp_path: Path, model: Path, **overrides) -> TrainJob:
    tmp_path.mkdir(parents=True, exist_ok=True)
    values = {
        "preferences": str(write_votes(tmp_path)),
        "preference_phase": True,
        "preference_learning_rate": 5e-3,
        "preference_epochs": 3,
        "preference_beta": 0.5,
        "epochs": 2,
        "min_steps": 0,
    }
    values.update(overrides)
    return TrainJob.from_dict(job_dict(tmp_path, model, **values))


def test_the_phase_learns_the_rule_and_the_gate_measures_it(tmp_path, tiny_model):
    without = run_job(preference_job(tmp_path / "a", tiny_model, preference_phase=False), EventWriter())
    events = EventWriter()
    began = time.monotonic()
    done = run_job(preference_job(tmp_path / "b", tiny_model), events)
    print("with the phase", time.monotonic() - began)
    kinds = [e["event"] for e in events.events]
    assert kinds.count("votes") == 1
    votes_at = kinds.index("votes")
    assert "start" in kinds[:votes_at]
    after = [e for e in events.events[votes_at:] if e["event"] == "progress"]
    assert after and all(e["phase"] == "votes" for e in after)
    candidate, serving = done["metrics"]["candidate"], done["metrics"]["serving"]
    print(json.dumps({"without": without["metrics"]["candidate"], "with": candidate}, indent=1))
    assert serving["vote_separation"] == 0.5  # the serving model is the reference here
    assert candidate["preference"]["ran"] and candidate["votes_up"] > candidate["votes_down"]
    assert candidate["vote_separation"] > 0.8
    assert candidate["vote_separation"] > without["metrics"]["candidate"]["vote_separation"] + 0.2
