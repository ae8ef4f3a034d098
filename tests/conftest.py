"""Shared fixtures: a tiny real GPT-2, the loopback Discord, and jokebot wired to both.

`jokebot_app` runs the real bot code (`bot.app.backend` + `JokeBot`) against the loopback
Discord stand-in, with a real SQLite file and a real runner process over HTTP.
"""

from __future__ import annotations

import os

# Idle OpenMP threads must not spin: tests, runner and trainer share 2 cores (measured 2x faster).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import contextlib
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.app import backend
from bot.discord_bot import JokeBot
from bot.runner_process import RunnerProcess, free_port
from bot.services import Services
from bot.settings import Settings
from loopback_discord import LoopbackDiscord, running_bot
from tests.tiny_model import make_tiny_gpt2

ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"
DISCORD_OPENAPI = ROOT.parent / "shared" / "discord-openapi.json"
if DISCORD_OPENAPI.is_file():  # every loopback Discord (sandbox processes too) checks requests
    os.environ.setdefault("LOOPBACK_DISCORD_OPENAPI", str(DISCORD_OPENAPI))
TOKEN = "loopback-token"


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer GPT-2 (random weights) with the real GPT-2 tokenizer."""
    return make_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2", seed=0)


@pytest.fixture(scope="session")
def tiny_model_b(tmp_path_factory) -> Path:
    """Another tiny GPT-2 (different weights), for swaps."""
    return make_tiny_gpt2(tmp_path_factory.mktemp("models") / "tiny-gpt2-b", seed=1)


@pytest.fixture(scope="session")
def tiny_a(tiny_model) -> Path:
    """The runner tests' name for `tiny_model`."""
    return tiny_model


@pytest.fixture(scope="session")
def tiny_b(tiny_model_b) -> Path:
    """The runner tests' name for `tiny_model_b`."""
    return tiny_model_b


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


@pytest.fixture(scope="session")
def shared_runner(tiny_model) -> str:
    """One real runner process (tiny GPT-2 as v0) for tests that do not swap models."""
    port = free_port()
    env = {**os.environ, "RUNNER_TOKEN": "shared-secret", "MODEL_BASE": str(tiny_model)}
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "bot.cli",
            "runner",
            "--port",
            str(port),
            "--model",
            str(tiny_model),
            "--version",
            "v0",
        ],
        env=env,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


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


@pytest.fixture
async def standin() -> AsyncIterator[LoopbackDiscord]:
    async with LoopbackDiscord(token=TOKEN) as server:
        yield server


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


@pytest.fixture
def shared_settings(tmp_path, tiny_model, shared_runner) -> Settings:
    """Settings for a fresh data directory, using the session's shared runner."""
    return make_settings(
        tmp_path / "data",
        tiny_model,
        runner_url=shared_runner,
        runner_token=SecretStr("shared-secret"),
    )


@pytest.fixture
async def app(standin, shared_settings) -> AsyncIterator[App]:
    async with jokebot_app(standin, shared_settings) as running:
        yield running


def corpus_lines(n: int) -> list[str]:
    """The first `n` jokes of the tutorial's data set, as /addjoke would receive them."""
    from bot.importer import parse_jokes

    return parse_jokes(SHARED_CSV.read_text(encoding="utf-8"), "onelinefun.csv")[:n]
