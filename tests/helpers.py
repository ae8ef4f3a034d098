"""Helpers the tests share (not fixtures: those are in conftest.py): paths, settings for the
tiny models, the environment of a `jokebot` process, jokebot wired to the loopback Discord, a
small plain bot for the stand-in's own tests, free ports, and waiting for what happens after
an answer (`wait_until`, never a bare sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import discord
from discord.ext import commands
from pydantic import SecretStr

from bot.app import backend
from bot.discord_app.client import JokeBot
from bot.runners.process import RunnerProcess, listening_socket
from bot.services import Services
from bot.settings import Settings
from bot.store.database import AddResult, Database
from loopback_discord import ADMINISTRATOR, DEFAULT_MEMBER_PERMISSIONS, LoopbackDiscord, running_bot
from model.contracts.jokes import check_joke, normalise_key

ROOT = Path(__file__).resolve().parents[1]
SHARED_CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"
DISCORD_OPENAPI = ROOT.parent / "shared" / "discord-openapi.json"
TOKEN = "loopback-token"
ADMIN = DEFAULT_MEMBER_PERMISSIONS | ADMINISTRATOR  # a member who may use the admin commands
SHORT_JOKES = ["I used to hate facial hair, but then it grew on me.", "I'm on a seafood diet."]


# ---- waiting --------------------------------------------------------------------------------


def _not_yet(what: str, timeout: float) -> AssertionError:
    return AssertionError(f"still not {what} after {timeout:g} s")


async def wait_until(
    condition: Callable[[], object | Awaitable[object]],
    timeout: float = 10,
    *,
    what: str = "true",
    every: float = 0.02,
) -> None:
    """Poll `condition` (a function, plain or async) until it is true; fail after `timeout`
    seconds saying `what` was awaited. For what follows an answer: a write after the reply, a
    reconnect, a process going away."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        outcome = condition()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if loop.time() > deadline:
            raise _not_yet(what, timeout)
        await asyncio.sleep(every)


def wait_until_blocking(
    condition: Callable[[], object], timeout: float = 10, *, what: str = "true", every: float = 0.2
) -> None:
    """`wait_until` for code with no event loop to yield to (a sync fixture, a context manager
    entered inside a test): the same polling, with `time.sleep`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise _not_yet(what, timeout)
        time.sleep(every)


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
    """Until the runner process at `url` answers /health (RuntimeError if it exits first)."""

    def healthy() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"runner exited with code {process.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/health", timeout=2) as r:
            return r.status == 200
        return False

    wait_until_blocking(healthy, timeout, what=f"healthy: the runner at {url}")


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago, for a server a test starts."""
    with listening_socket(host, 0) as probe:
        return probe.getsockname()[1]


# ---- jokebot --------------------------------------------------------------------------------


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
    "STARTER_CORPUS": "false",  # tests choose their corpus; test_starter_corpus covers it
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


def jokebot_cli(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    """Run `jokebot ARGS` as a host would (no Discord or runner settings inherited)."""
    merged = {k: v for k, v in os.environ.items() if not k.startswith(("DISCORD_", "RUNNER_"))}
    merged.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        capture_output=True,
        text=True,
        env=merged,
        cwd=cwd,
        timeout=timeout,
    )


async def add_joke(db: Database, text: str, **fields) -> AddResult:
    """Store `text` as a member's /addjoke would: validated, with its duplicate key."""
    check = check_joke(text)
    return await db.add_joke(check.text, check.key, source="user", **fields)


async def say_addjoke(app: App, text: str, **member):
    """/addjoke `text` (as `member`: user_id, permissions...) and return the bot's reply."""
    return await (await app.standin.invoke("addjoke", {"text": text}, **member)).wait_for_reply()


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
        "origin": {"version": 1, "parent_version": 0, "base_model": "the-base"},
    }
    job.update(overrides)
    return job


# ---- the loopback Discord's own tests ----------------------------------------------------


def plain_bot(*, dynamic_items: tuple[type, ...] = (), guild_id: int | None = None) -> commands.Bot:
    """A small discord.py bot (no jokebot) for testing the stand-in: the test adds its app
    commands; at login it registers `dynamic_items` and syncs the commands (globally, and to
    `guild_id`'s server when given)."""
    bot = commands.Bot(
        command_prefix="!", intents=discord.Intents.default(), guild_ready_timeout=0.1
    )

    async def setup_hook() -> None:
        bot.add_dynamic_items(*dynamic_items)
        await bot.tree.sync()
        if guild_id is not None:
            await bot.tree.sync(guild=discord.Object(id=guild_id))

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot
