"""Helpers the tests share (not fixtures: those are in conftest.py): paths, settings for the
tiny models, the environment of a `jokebot` process, jokebot wired to the loopback Discord,
`jokebot run` and runner processes started and stopped, members' /addjoke and votes, a
database file read directly or made at an old schema, the trainer's command line, a small
plain bot for the stand-in's own tests, free ports, and waiting for what happens after an
answer (`wait_until`, never a bare sleep).

A test module imports what it shares from here, never from another test module.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import discord
import pytest
from discord.ext import commands
from pydantic import SecretStr

from bot.app import backend
from bot.community.near_duplicates import NearDuplicateIndex
from bot.discord_app.client import JokeBot
from bot.runners.process import RunnerProcess, listening_socket
from bot.services import Services
from bot.settings import Settings
from bot.store.backends import migrations
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


@contextlib.contextmanager
def runner_process(model: Path, token: str) -> Iterator[str]:
    """A real runner process (`jokebot runner`) serving `model` as v0, admin token `token`;
    yields its URL once /health answers, and stops it afterwards."""
    port = free_port()
    env = {**os.environ, "RUNNER_TOKEN": token, "MODEL_BASE": str(model)}
    process = subprocess.Popen(
        [sys.executable, "-m", "bot.cli", "runner", "--port", str(port),
         "--model", str(model), "--version", "v0"],
        env=env,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


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


def host_env(standin: LoopbackDiscord, data_dir: Path, model: Path, **extra: str) -> dict[str, str]:
    """The environment of a host's `jokebot run` against the stand-in (`extra` on top)."""
    return process_env(
        data_dir,
        model,
        DISCORD_TOKEN=TOKEN,
        DISCORD_API_BASE=standin.api_base,
        DISCORD_GATEWAY_URL=standin.gateway_url,
        **extra,
    )


def shared_runner_env(
    standin: LoopbackDiscord, data_dir: Path, model: Path, runner: str, **extra: str
) -> dict[str, str]:
    """`host_env` for a `jokebot run` that uses the session's shared runner (conftest's
    `shared_runner`) instead of starting its own."""
    return host_env(
        standin, data_dir, model, RUNNER_URL=runner, RUNNER_TOKEN="shared-secret", **extra
    )


async def start_jokebot(
    standin: LoopbackDiscord,
    env: dict[str, str],
    *,
    shard_count: int | None = None,
    log: Path | None = None,
) -> asyncio.subprocess.Process:
    """`jokebot run` (its standard error appended to `log`, when given), returned once the
    stand-in sees it serving (all `shard_count` shards)."""
    with log.open("ab") if log is not None else contextlib.nullcontext() as stderr:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "run", env=env, cwd=ROOT, stderr=stderr
        )
    await wait_until_serving(standin, [process], shard_count)
    return process


async def wait_until_serving(
    standin: LoopbackDiscord, processes: list, shard_count: int | None = None
) -> None:
    """Until the stand-in sees the bot (all `shard_count` shards); fail if a process exits."""
    if shard_count is None:
        ready = asyncio.create_task(standin.wait_until_ready(timeout=180))
    else:
        ready = asyncio.create_task(standin.wait_for_shards(shard_count, timeout=180))
    exits = [asyncio.create_task(p.wait()) for p in processes]
    await asyncio.wait({ready, *exits}, return_when=asyncio.FIRST_COMPLETED)
    for process, exited in zip(processes, exits, strict=True):
        if exited.done():
            ready.cancel()
            pytest.fail(f"jokebot run exited early with code {process.returncode}")
        exited.cancel()
    await ready


async def stop_jokebot(process: asyncio.subprocess.Process) -> float:
    """SIGTERM to a `jokebot run`; asserts a clean exit and returns the seconds it took."""
    started = time.monotonic()
    if process.returncode is None:  # one that already exited has nothing to stop
        process.send_signal(signal.SIGTERM)
    code = await asyncio.wait_for(process.wait(), timeout=15)
    assert code == 0, f"jokebot run exited with code {code}"
    return time.monotonic() - started


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


def distinct_jokes(n: int | None = None) -> list[str]:
    """Jokes of the tutorial's data set (its first 400) that one-by-one /addjoke would all
    store: valid, and no near-copies of each other. The first `n` of them, when given."""
    index, chosen = NearDuplicateIndex(), []
    for number, text in enumerate(corpus_lines(400)):
        check = check_joke(text)
        if check.ok and index.find(check.key) is None:
            index.add(number + 1, check.key)
            chosen.append(text)
    if n is None:
        return chosen
    assert len(chosen) >= n
    return chosen[:n]


async def add_jokes(standin: LoopbackDiscord, texts: list[str], first_member: int) -> list[int]:
    """/addjoke from one member per joke, all at once; the ids the bot acknowledged."""

    async def add(n: int, text: str) -> int:
        interaction = await standin.invoke("addjoke", {"text": text}, user_id=first_member + n)
        reply = await interaction.wait_for_reply(timeout=60)
        assert reply.ephemeral and reply.content.startswith("Stored as #"), reply.content
        return int(reply.content.removeprefix("Stored as #").split(".")[0].split(",")[0])

    ids = list(await asyncio.gather(*(add(n, text) for n, text in enumerate(texts))))
    # discord.py dispatches `app_command_completion` just after a reply went out: let that run
    # before a caller closes the bot, or the loop closes on it ("never awaited")
    await asyncio.sleep(0.2)
    return ids


async def upvote(standin: LoopbackDiscord, message, members: list[int]) -> None:
    """One member after another: the store's transactions share one connection, and two
    votes at the same instant collide there (BEGIN within BEGIN; reported, not this file's)."""
    for member in members:
        interaction = await standin.press(message, "👍", user_id=member, username=f"u{member}")
        await interaction.wait_for_reply(timeout=60)  # the note follows the committed vote
        assert interaction.ack_type in (6, 7)  # 6: deferred while the store was busy


# ---- a database file, read or made directly ------------------------------------------------

PROMOTE_AT = 3  # net upvotes that put a generated joke into the corpus (tests that set it)


def sqlite_rows(path: Path, query: str, params=()) -> list[tuple]:
    """`query` on the SQLite file at `path`, read-only, through a connection of its own."""
    connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return connection.execute(query, params).fetchall()
    finally:
        connection.close()


def assert_consistent(path: Path) -> None:
    """What every committed state of a jokebot database satisfies: foreign keys hold, joke ids
    have no gaps (jokes are only added here), and a generated joke is in the corpus exactly
    when its net score reached PROMOTE_AT (the vote and the promotion are one transaction)."""
    assert sqlite_rows(path, "PRAGMA foreign_key_check") == []
    ids = [row[0] for row in sqlite_rows(path, "SELECT id FROM jokes ORDER BY id")]
    assert ids == list(range(1, len(ids) + 1))
    for generated, net, corpus_id in sqlite_rows(
        path,
        "SELECT g.id, coalesce(sum(v.value), 0), g.corpus_joke_id FROM generated_jokes g"
        " LEFT JOIN votes v ON v.generated_id = g.id GROUP BY g.id",
    ):
        assert (net >= PROMOTE_AT) == (corpus_id is not None), generated
        if corpus_id is not None:
            assert sqlite_rows(path, "SELECT source FROM jokes WHERE id = ?", (corpus_id,)) == [
                ("community",)
            ]


def database_at_schema(path: Path, schema: int) -> sqlite3.Connection:
    """A new SQLite file at `path` as a jokebot of schema `schema` left it: its migrations up
    to that number applied, `user_version` set. Returned open, for the rows an old release
    would have written (the caller commits and closes)."""
    raw = sqlite3.connect(path)
    for number, script in migrations("sqlite"):
        if number <= schema:
            raw.executescript(script)
    raw.execute(f"PRAGMA user_version = {schema}")
    return raw


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


def start_train_cli(job: dict, folder: Path) -> subprocess.Popen:
    """`python -m model.train --job` on `job` (written to `folder`), its events on stdout."""
    job_file = folder / "job.json"
    job_file.write_text(json.dumps(job), encoding="utf-8")
    return subprocess.Popen(
        [sys.executable, "-m", "model.train", "--job", str(job_file)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def read_events_until(process: subprocess.Popen, kind: str) -> list[dict]:
    """The trainer's events up to and including the first of `kind`."""
    events = []
    for line in process.stdout:
        events.append(json.loads(line))
        if events[-1]["event"] == kind:
            return events
    raise AssertionError(f"the trainer ended before a {kind!r} event: {events}")


# Votes with a rule a tiny model can learn (the preference tests): jokes about these animals
# are liked, about those disliked, each animal with every one of the things.
LIKED = ["duck", "goat", "pig", "dog"]
DISLIKED = ["cow", "horse", "sheep", "chicken"]
THINGS = ["hat", "boat", "cake", "song", "lamp", "book", "coat", "drum", "kite", "cup"]


# ---- the loopback Discord's own tests ----------------------------------------------------


def plain_bot(
    *,
    dynamic_items: tuple[type, ...] = (),
    guild_id: int | None = None,
    guild_ready_timeout: float = 0.1,
) -> commands.Bot:
    """A small discord.py bot (no jokebot) for testing the stand-in: the test adds its app
    commands; at login it registers `dynamic_items` and syncs the commands (globally, and to
    `guild_id`'s server when given)."""
    bot = commands.Bot(
        command_prefix="!",
        intents=discord.Intents.default(),
        guild_ready_timeout=guild_ready_timeout,
    )

    async def setup_hook() -> None:
        bot.add_dynamic_items(*dynamic_items)
        await bot.tree.sync()
        if guild_id is not None:
            await bot.tree.sync(guild=discord.Object(id=guild_id))

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


TRAINING_RESULT = "Training run #"  # how the final message of a /retrain begins


async def retrain(standin, timeout: float = 240):
    """An admin's /retrain through Discord: its first (public) answer and its final result."""
    interaction = await standin.invoke("retrain", permissions=ADMIN)
    first = await interaction.wait_for_reply(timeout=10)
    assert not first.ephemeral
    final = await interaction.wait_for_reply(
        lambda m: TRAINING_RESULT in m.content, timeout=timeout
    )
    return first, final
