"""Helpers the tests share (not fixtures: those are in conftest.py): paths, settings for the
tiny models, the environment of a `jokebot` process, and jokebot wired to the loopback Discord.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from pydantic import SecretStr

from bot.app import backend
from bot.discord_app.client import JokeBot
from bot.runners.process import RunnerProcess
from bot.services import Services
from bot.settings import Settings
from loopback_discord import LoopbackDiscord, running_bot
from model.contracts.jokes import normalise_key

ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"
DISCORD_OPENAPI = ROOT.parent / "shared" / "discord-openapi.json"
TOKEN = "loopback-token"


def heavy_modules_after_import(*modules: str) -> list[str]:
    """Which of torch and transformers a fresh interpreter has loaded after importing
    `modules` (for the modules that promise to be torch-free)."""
    code = (
        f"import sys, {', '.join(modules)}\n"
        "print(','.join(sorted(m for m in ('torch', 'transformers') if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    return [m for m in result.stdout.strip().split(",") if m]


def wait_healthy(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"runner exited with code {process.returncode}")
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as response,
        ):
            if response.status == 200:
                return
        time.sleep(0.2)
    raise TimeoutError(f"runner at {url} not healthy after {timeout}s")


# Small, fast values for the tiny GPT-2 (the names are the settings' environment variables).
TEST_SETTINGS = {
    "RUNNER_PORT": "0",
    "RETRAIN_SCHEDULE": "off",
    "DEVICE": "cpu",
    "JOKE_MAX_TOKENS": "24",
    "TRAIN_EPOCHS": "4",
    "TRAIN_LEARNING_RATE": "2e-3",
    "TRAIN_BATCH_SIZE": "8",
    "TRAIN_EVAL_SAMPLES": "8",
    "RETRAIN_MAX_MINUTES": "5",
    "STARTER_CORPUS": "false",  # tests choose their corpus; test_first_minute covers the starter
    "TRAIN_MIN_JOKES": "2",
    "MODERATION": "off",  # members' jokes train at once; moderation tests set it themselves
}


def make_settings(data_dir: Path, model: Path, **overrides) -> Settings:
    """In-process settings: TEST_SETTINGS for a fresh data directory and the given model."""
    values = {name.lower(): value for name, value in TEST_SETTINGS.items()}
    values.update(data_dir=data_dir, model_base=str(model), discord_token=SecretStr(TOKEN))
    values.update(overrides)
    return Settings(_env_file=None, **values)


def process_env(data_dir: Path, model: Path, **extra: str) -> dict[str, str]:
    """The environment of a `jokebot` process a host would start, with TEST_SETTINGS."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNNER_"))}
    env.update(TEST_SETTINGS, JOKEBOT_DATA_DIR=str(data_dir), MODEL_BASE=str(model), **extra)
    return env


@dataclass
class App:
    standin: LoopbackDiscord
    services: Services
    run: object
    runner_process: RunnerProcess | None = None

    @property
    def db(self):
        return self.services.db


@contextlib.asynccontextmanager
async def jokebot_app(
    standin: LoopbackDiscord, settings: Settings, *, allow_errors: bool = False
) -> AsyncIterator[App]:
    """The real jokebot (backend + Discord client) against the stand-in."""
    async with backend(settings) as started:
        bot = JokeBot(started.services, guild_ready_timeout=0.05)
        async with running_bot(
            bot, standin, TOKEN, allow_errors=allow_errors, loggers=("discord", "bot")
        ) as run:
            yield App(standin, started.services, run, started.runner_process)


def corpus_lines(n: int) -> list[str]:
    """The first `n` jokes of the tutorial's data set, as /addjoke would receive them."""
    from bot.community.importer import parse_jokes

    return parse_jokes(SHARED_CSV.read_text(encoding="utf-8"), "onelinefun.csv")[:n]


# A tiny training job for model.train (the trainer tests, on the tiny GPT-2).
ANIMALS = ["chicken", "duck", "cow", "horse", "goat", "sheep", "pig", "dog"]
PLACES = ["road", "river", "street", "field", "bridge"]
VERSION_FILES = {"config.json", "model.safetensors", "generation_config.json", "manifest.json"}


def write_training_snapshot(folder: Path) -> Path:
    texts = [
        f"Why did the {a} cross the {p}? To get to the other side." for a in ANIMALS for p in PLACES
    ]
    path = folder / "snapshot.jsonl"
    with path.open("w", encoding="utf-8") as out:
        for number, text in enumerate(texts, 1):
            out.write(json.dumps({"id": number, "text": text, "key": normalise_key(text)}) + "\n")
    return path


def job_dict(tmp_path: Path, model: Path, **overrides) -> dict:
    job = {
        "snapshot": str(write_training_snapshot(tmp_path)),
        "base": str(model),
        "serving": str(model),
        "output": str(tmp_path / "models" / "v1"),
        "device": "cpu",
        "seed": 1,
        "max_minutes": 5,
        "epochs": 4,
        "learning_rate": 1e-2,
        "batch_size": 8,
        "eval_steps": 5,
        "early_stopping_patience": 50,
        "eval_samples": 4,
        "sample_max_tokens": 16,
        "manifest": {"version": 1, "parent_version": 0, "corpus_hash": "abc"},
    }
    job.update(overrides)
    return job
