"""Two `jokebot run` processes as on two machines: each its own data directory, one PostgreSQL
database, one model runner, a shared MODELS_DIR, each owning half the gateway shards.

/addjoke dedupes across both, a vote in one is seen by the other, one scheduled retrain runs
(not two), the promotion shows in /status of both; kill -9 the leader and the other runs the
next scheduled retrain."""

from __future__ import annotations

import asyncio
import signal
import sys

import pytest

from bot.store.backends import advisory_key, open_backend
from bot.store.leader import LEADER_LOCK
from loopback_discord import LoopbackDiscord
from tests.helpers import (
    ROOT,
    TOKEN,
    corpus_lines,
    host_env,
    runner_process,
    stop_jokebot,
    wait_until,
    wait_until_serving,
)


@pytest.fixture
def own_runner(tiny_model):
    """A runner of this test's own: a promotion here must not change the session's runner."""
    with runner_process(tiny_model, token="machines-secret") as url:
        yield url


async def leader_pid(db) -> int | None:
    """The process holding the leader lock, from its connection's application_name."""
    key = advisory_key(LEADER_LOCK)
    name = await db.fetchval(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted"
        " AND l.classid = ((?::bigint >> 32) & 4294967295)::oid"
        " AND l.objid = (?::bigint & 4294967295)::oid",
        (key, key),
    )
    return int(name.split("/")[1]) if name else None


@pytest.mark.timeout(600)
async def test_two_machines_one_database(tmp_path, tiny_model, own_runner, postgres_url):
    async with LoopbackDiscord(token=TOKEN) as standin:
        on_1 = await standin.add_guild(shard=(1, 2))
        guilds = {0: standin.guild_id, 1: on_1}
        processes = {}
        for shard in (0, 1):
            env = host_env(standin, tmp_path / f"data-{shard}", tiny_model)
            env.update(
                DATABASE_URL=postgres_url, MODELS_DIR=str(tmp_path / "models"),
                RUNNER_URL=own_runner, RUNNER_TOKEN="machines-secret",
                DISCORD_SHARD_COUNT="2", DISCORD_SHARD_IDS=str(shard),
                RETRAIN_SCHEDULE="* * * * *", RETRAIN_MIN_NEW_JOKES="10",
                LEADER_RETRY_SECONDS="1", STARTER_CORPUS="false",
            )  # fmt: skip
            processes[shard] = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "run", env=env, cwd=ROOT
            )
        db = await open_backend(postgres_url)
        try:
            await wait_until_serving(standin, list(processes.values()), shard_count=2)
            jokes = iter(corpus_lines(40))

            # /addjoke dedupes across both
            first = next(jokes)
            added = await standin.invoke("addjoke", {"text": first}, guild_id=guilds[0])
            assert (await added.wait_for_reply()).content.startswith("Stored as #")
            again = await standin.invoke("addjoke", {"text": first}, guild_id=guilds[1])
            assert "duplicate" in (await again.wait_for_reply()).content
            assert (added.shard, again.shard) == ((0, 2), (1, 2))

            # a vote in one is seen by the other
            told = await (
                await standin.invoke("joke", {"prompt": "My dog"}, guild_id=guilds[0])
            ).wait_for_reply(timeout=60)
            pressed = await standin.press(told, "👍", user_id=4242)
            await pressed.wait_for_reply()
            for guild in guilds.values():  # whichever process recorded it, both count it
                status = await (await standin.invoke("status", guild_id=guild)).wait_for_reply(
                    timeout=20
                )
                assert "1 vote" in status.content, status.content

            # one scheduled retrain runs (not two); its promotion shows in /status of both
            for n in range(12):
                member = {"user_id": 8000 + n, "guild_id": guilds[n % 2]}
                sent = await standin.invoke("addjoke", {"text": next(jokes)}, **member)
                assert (await sent.wait_for_reply()).content.startswith("Stored as #")
            leader = await leader_pid(db)
            assert leader in {p.pid for p in processes.values()}

            async def promoted() -> bool:
                rows = await db.fetch("SELECT status FROM training_runs WHERE trigger='schedule'")
                return bool(rows) and all(r[0] != "running" for r in rows)

            await wait_until(promoted, 300, what="the first scheduled retrain done", every=0.5)
            runs = await db.fetch("SELECT status FROM training_runs WHERE trigger = 'schedule'")
            assert [r[0] for r in runs] == ["promoted"], runs
            for guild in guilds.values():
                status = await (await standin.invoke("status", guild_id=guild)).wait_for_reply(
                    timeout=20
                )
                assert "v1" in status.content, status.content

            # kill -9 the leader: the other takes over and runs the next scheduled retrain
            (leading,) = [s for s, p in processes.items() if p.pid == leader]
            killed_at = await db.fetchval("SELECT now()")
            processes[leading].send_signal(signal.SIGKILL)
            await processes[leading].wait()
            other = 1 - leading
            await wait_until(
                lambda: _is(leader_pid(db), processes[other].pid), 10, what="taken over", every=0.5
            )
            for n in range(12):
                member = {"user_id": 9000 + n, "guild_id": guilds[other]}
                sent = await standin.invoke("addjoke", {"text": next(jokes)}, **member)
                assert (await sent.wait_for_reply()).content.startswith("Stored as #")

            async def second_done() -> bool:
                rows = await db.fetch(
                    "SELECT status FROM training_runs WHERE trigger = 'schedule' ORDER BY id"
                )
                return len(rows) == 2 and rows[1][0] != "running"

            await wait_until(second_done, 300, what="the next scheduled retrain done", every=0.5)
            rows = await db.fetch(
                "SELECT started_at FROM training_runs WHERE trigger = 'schedule' ORDER BY id"
            )
            assert len(rows) == 2 and rows[1][0] > killed_at  # run by the new leader
            status = await (await standin.invoke("status", guild_id=guilds[other])).wait_for_reply(
                timeout=20
            )
            assert "Last training" in status.content or "training" in status.content.lower()
        finally:
            await db.close()
            for process in processes.values():
                if process.returncode is None:
                    await stop_jokebot(process)


async def _is(pid_coroutine, expected: int) -> bool:
    return await pid_coroutine == expected
