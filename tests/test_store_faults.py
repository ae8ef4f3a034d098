"""PostgreSQL restarted under load: /addjoke keeps coming (the real bot, the loopback Discord);
during the outage each command gets a clear "try again" within 3 s, every joke that was
acknowledged is in the database afterwards, and the bot recovers without a restart."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.discord_app.replies import STORE_UNAVAILABLE
from model.contracts.jokes import check_joke
from tests.helpers import distinct_jokes, jokebot_app, make_settings
from tests.postgres_server import running_server

ANSWER_WITHIN = 3.0


@pytest.fixture
def restartable_server():
    """A PostgreSQL server of this test's own (the session's one is shared)."""
    with (
        tempfile.TemporaryDirectory(prefix="jokebot-pg-faults-") as root,
        running_server(Path(root)) as server,
    ):
        yield server


async def test_a_postgresql_restart_under_load(standin, tmp_path, tiny_model, shared_runner,
                                               restartable_server):  # fmt: skip
    url = await asyncio.to_thread(restartable_server.create_database)
    settings = make_settings(
        tmp_path / "data", tiny_model, runner_url=shared_runner,
        runner_token=SecretStr("shared-secret"), database_url=SecretStr(url),
        rate_addjoke_member="off", rate_addjoke_server="off", starter_corpus=False,
    )  # fmt: skip
    jokes = iter(distinct_jokes())
    answers: list[tuple[str, str, float]] = []  # (joke, reply, seconds)

    async def addjoke(member: int) -> None:
        text = next(jokes)
        began = time.monotonic()
        sent = await standin.invoke("addjoke", {"text": text}, user_id=member)
        reply = await sent.wait_for_reply(timeout=10)
        answers.append((text, reply.content, time.monotonic() - began))

    async def load(until: asyncio.Event) -> None:
        member = 5000
        with contextlib.suppress(StopIteration, RuntimeError):  # out of jokes: the load ends
            while not until.is_set():
                member += 1
                await asyncio.gather(*(addjoke(member * 10 + n) for n in range(4)))
                await asyncio.sleep(0.2)

    async with jokebot_app(standin, settings, allow_errors=True) as app:
        done = asyncio.Event()
        writers = asyncio.create_task(load(done))
        await asyncio.sleep(1.5)
        before_outage = len(answers)
        await asyncio.to_thread(restartable_server.stop)
        await asyncio.sleep(2.0)  # down for a while, commands still coming
        await asyncio.to_thread(restartable_server.start)
        await asyncio.sleep(3.0)  # back: the bot must serve again without a restart
        done.set()
        await writers
        stored_ids = {row[0]: row[1] for row in await app.db.fetchall("SELECT id, text FROM jokes")}

    assert before_outage > 0
    slow = [(reply, round(s, 2)) for _, reply, s in answers if s > ANSWER_WITHIN]
    assert not slow, f"answered later than {ANSWER_WITHIN} s: {slow[:3]}"
    acknowledged = [(text, reply) for text, reply, _ in answers if reply.startswith("Stored as #")]
    refused = [text for text, reply, _ in answers if reply == STORE_UNAVAILABLE]
    other = [reply for _, reply, _ in answers if not reply.startswith("Stored as #")]
    assert refused, "no command met the outage"
    assert set(other) == {STORE_UNAVAILABLE}, set(other)
    for text, reply in acknowledged:  # nothing acknowledged is lost
        joke_id = int(reply.removeprefix("Stored as #").split()[0].rstrip(".:,"))
        assert stored_ids.get(joke_id) == check_joke(text).text
    after = [reply for _, reply, _ in answers[-8:]]
    assert all(reply.startswith("Stored as #") for reply in after), after  # recovered


async def test_a_connection_left_mid_operation_is_a_try_again(
    restartable_server,
):
    """asyncpg's "another operation is in progress" (a connection the restart left half-way)
    is a "try again", not a crash, and the store goes on answering."""
    import asyncpg

    from bot.store.backends import PostgresBackend, StoreUnavailable, unavailable_as_store_error

    broken = asyncpg.InternalClientError(
        "cannot switch to state 12; another operation (2) is in progress"
    )
    backend = await PostgresBackend.open(restartable_server.url(), pool_size=1)
    try:
        with pytest.raises(StoreUnavailable):
            async with backend.connection(), unavailable_as_store_error():
                raise broken  # what conn.fetch raised in the failing run
        assert [tuple(row) for row in await backend.fetch("SELECT 1")] == [(1,)]
    finally:
        await backend.close()
