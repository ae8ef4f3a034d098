"""The backend layer under the stores: the same SQL on SQLite and on a real PostgreSQL server
(placeholders, RETURNING, upserts, booleans, timestamps, case-insensitive matching, rowcounts),
transactions that are all or nothing, and migrations that one process applies while others
wait."""

from __future__ import annotations

import asyncio
import re

import pytest

from bot.store.backends import (
    DatabaseUrlError,
    SQLBackend,
    migrations,
    numbered_placeholders,
    open_backend,
)

TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def test_placeholders_are_numbered_outside_quoted_text():
    query = "SELECT '?' , \"a?\" FROM t WHERE a = ? AND b IN (?, ?)"
    assert numbered_placeholders(query) == (
        "SELECT '?' , \"a?\" FROM t WHERE a = $1 AND b IN ($2, $3)"
    )


def test_both_databases_have_the_same_migration_numbers():
    sqlite = [number for number, _ in migrations("sqlite")]
    postgresql = [number for number, _ in migrations("postgresql")]
    assert sqlite == postgresql == list(range(1, len(sqlite) + 1))


@pytest.fixture
async def backend(database_url) -> SQLBackend:
    opened = await open_backend(database_url)
    yield opened
    await opened.close()


async def test_migrated_to_the_newest_schema(backend):
    assert await backend.schema_version() == len(migrations(backend.kind))
    await backend.migrate()  # again: nothing to do
    assert await backend.schema_version() == len(migrations(backend.kind))


async def test_the_queries_the_stores_use_mean_the_same_on_both(backend):
    insert = (
        "INSERT INTO jokes (text, norm_key, author_id, source) VALUES (?,?,?,?)"
        " ON CONFLICT (norm_key) DO NOTHING RETURNING id"
    )
    first = await backend.fetchval(insert, ("A Joke", "a joke", 2**62, "user"))
    assert isinstance(first, int)
    assert await backend.fetchval(insert, ("A joke!", "a joke", 7, "user")) is None  # duplicate
    row = await backend.fetchrow(
        "SELECT id, author_id, created_at FROM jokes WHERE id = ?", (first,)
    )
    assert row["id"] == row[0] == first and row["author_id"] == 2**62  # Discord ids are 64-bit
    assert TIMESTAMP.match(row["created_at"]), row["created_at"]
    # case-insensitive matching through lower()
    assert await backend.fetchval("SELECT id FROM jokes WHERE lower(text) = lower(?)", ("a JOKE",))
    # booleans: TRUE/FALSE literals, read back as something truthy/falsy
    await backend.execute(
        "INSERT INTO model_versions (version, path, status, active)"
        " VALUES (0, 'base', 'base', TRUE)"
    )
    assert await backend.fetchval("SELECT active FROM model_versions WHERE version = 0")
    changed = await backend.execute("UPDATE model_versions SET active = FALSE WHERE active = TRUE")
    assert changed == 1
    assert not await backend.fetchval("SELECT active FROM model_versions WHERE version = 0")
    # upsert with excluded, and aggregates over conditions
    generated = await backend.fetchval(
        "INSERT INTO generated_jokes (text, norm_key) VALUES (?, ?) RETURNING id", ("g", "g")
    )
    upsert = (
        "INSERT INTO votes (generated_id, user_id, value) VALUES (?,?,?)"
        " ON CONFLICT (generated_id, user_id) DO UPDATE SET value = excluded.value"
    )
    for user, value in [(1, 1), (2, 1), (2, -1), (3, 1)]:
        await backend.execute(upsert, (generated, user, value))
    up, down = await backend.fetchrow(
        "SELECT coalesce(sum(CASE WHEN value = 1 THEN 1 ELSE 0 END), 0),"
        " coalesce(sum(CASE WHEN value = -1 THEN 1 ELSE 0 END), 0) FROM votes"
    )
    assert (up, down) == (2, 1)
    # a timestamp written as text reads back the same
    run = await backend.fetchval(
        "INSERT INTO training_runs (trigger, finished_at) VALUES ('cli', ?) RETURNING id",
        ("2025-01-31T12:00:00.123Z",),
    )
    finished = await backend.fetchval("SELECT finished_at FROM training_runs WHERE id = ?", (run,))
    assert finished == "2025-01-31T12:00:00.123Z"


async def test_a_transaction_is_all_or_nothing_and_nests_as_savepoints(backend):
    insert = "INSERT INTO jokes (text, norm_key, source) VALUES (?, ?, 'user')"
    with pytest.raises(RuntimeError):
        async with backend.transaction():
            await backend.execute(insert, ("one", "one"))
            raise RuntimeError("changed my mind")
    assert await backend.fetchval("SELECT count(*) FROM jokes") == 0
    async with backend.transaction():
        await backend.execute(insert, ("two", "two"))
        with pytest.raises(RuntimeError):
            async with backend.transaction():
                await backend.execute(insert, ("three", "three"))
                raise RuntimeError("only the inner part")
        await backend.execute(insert, ("four", "four"))
    texts = [row[0] for row in await backend.fetch("SELECT text FROM jokes ORDER BY id")]
    assert texts == ["two", "four"]


async def test_concurrent_transactions_that_serialize_lose_no_update(backend):
    """Read, then write what was read plus one, in 40 tasks at once: every increment counts."""
    await backend.execute(
        "INSERT INTO model_versions (version, path, status) VALUES (0, '0', 'base')"
    )

    async def increment() -> None:
        async with backend.transaction():
            await backend.serialize("counter")
            (path,) = await backend.fetchrow("SELECT path FROM model_versions WHERE version = 0")
            await asyncio.sleep(0)  # give the others every chance to interleave
            await backend.execute(
                "UPDATE model_versions SET path = ? WHERE version = 0", (str(int(path) + 1),)
            )

    await asyncio.gather(*(increment() for _ in range(40)))
    assert await backend.fetchval("SELECT path FROM model_versions WHERE version = 0") == "40"


async def test_processes_starting_together_migrate_once(postgres_url):
    opened = await asyncio.gather(*(open_backend(postgres_url) for _ in range(4)))
    try:
        versions = await opened[0].fetch("SELECT version FROM schema_migrations ORDER BY version")
        assert [row[0] for row in versions] == [n for n, _ in migrations("postgresql")]
    finally:
        for backend in opened:
            await backend.close()


async def test_a_wrong_password_or_a_closed_port_is_one_line_naming_the_database(postgres_url):
    wrong = postgres_url.replace(":jokebot-test@", ":wrong-password@")
    with pytest.raises(DatabaseUrlError) as refused:
        await open_backend(wrong)
    message = str(refused.value)
    assert "password" in message and "wrong-password" not in message and "\n" not in message
    from tests.helpers import free_port

    closed = re.sub(r":\d+/", f":{free_port()}/", postgres_url)
    with pytest.raises(DatabaseUrlError, match="cannot use the PostgreSQL database"):
        await open_backend(closed)


async def test_a_task_started_inside_a_transaction_is_not_part_of_it(backend):
    """It waits its turn (SQLite) or takes its own connection (PostgreSQL), and sees only what
    was committed."""
    insert = "INSERT INTO jokes (text, norm_key, source) VALUES (?, ?, 'user')"
    seen: list[int] = []

    async def outsider() -> None:
        seen.append(await backend.fetchval("SELECT count(*) FROM jokes"))

    async with backend.transaction():
        await backend.execute(insert, ("one", "one"))
        task = asyncio.create_task(outsider())
        await asyncio.sleep(0.05)
        if backend.kind == "postgresql":
            await task  # its own connection: the uncommitted row is not visible
    await task
    assert seen == [0] if backend.kind == "postgresql" else seen == [1]
