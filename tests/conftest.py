"""Shared fixtures: a tiny real GPT-2, the loopback Discord, and jokebot wired to both
(the helpers they use, and tests may import, are in tests/helpers.py).

`jokebot_app` runs the real bot code (`bot.app.backend` + `JokeBot`) against the loopback
Discord stand-in, with a real SQLite file and a real runner process over HTTP.
"""

from __future__ import annotations

import os

# Idle OpenMP threads must not spin: tests, runner and trainer share 2 cores (measured 2x faster).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.settings import Settings
from loopback_discord import LoopbackDiscord
from tests.helpers import (
    DISCORD_OPENAPI,
    TOKEN,
    App,
    jokebot_app,
    make_settings,
    runner_process,
)
from tests.postgres_server import database_url, postgres_server, postgres_url  # noqa: F401
from tests.tiny_model import make_tiny_gpt2

if DISCORD_OPENAPI.is_file():  # every loopback Discord (sandbox processes too) checks requests
    os.environ.setdefault("LOOPBACK_DISCORD_OPENAPI", str(DISCORD_OPENAPI))


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


@pytest.fixture(scope="session")
def shared_runner(tiny_model) -> Iterator[str]:
    """One real runner process (tiny GPT-2 as v0) for tests that do not swap models."""
    with runner_process(tiny_model, token="shared-secret") as url:
        yield url


@pytest.fixture
async def standin() -> AsyncIterator[LoopbackDiscord]:
    async with LoopbackDiscord(token=TOKEN) as server:
        yield server


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
