"""The store on a real SQLite file and on a real PostgreSQL database (every test that is not
about SQLite itself runs on both): migrations, durability, duplicates, versions, runs."""

import asyncio
import sqlite3

import asyncpg
import pytest

from bot.store.database import Database
from tests.helpers import add_joke


async def test_migrations_wal_and_foreign_keys(tmp_path):
    db = await Database.open(tmp_path / "j.sqlite3")
    assert await db.schema_version() >= 1
    await db.close()
    raw = sqlite3.connect(tmp_path / "j.sqlite3")
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {row[0] for row in raw.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jokes", "model_versions", "training_runs"} <= tables
    # re-opening does not re-apply migrations
    db = await Database.open(tmp_path / "j.sqlite3")
    assert await db.schema_version() >= 1
    await db.close()


async def test_an_acknowledged_joke_is_on_disk(tmp_path, database_url):
    db = await Database.connect(database_url)
    result = await add_joke(db, "I used to hate facial hair, but then it grew on me.", author_id=7)
    # another connection (another process) sees it at once: it was committed
    other = await Database.connect(database_url)
    row = await other.fetchone("SELECT text, author_id, source FROM jokes WHERE id=?", (result.id,))
    assert tuple(row) == ("I used to hate facial hair, but then it grew on me.", 7, "user")
    await other.close()
    await db.close()


async def test_duplicates_point_at_the_original(tmp_path, database_url):
    db = await Database.connect(database_url)
    first = await add_joke(db, "Why did the chicken cross the road?")
    again = await add_joke(db, "why did the CHICKEN cross the road!!")
    assert first.created and not again.created
    assert again.id == first.id
    assert await db.joke_count() == 1
    await db.close()


async def test_bulk_add_is_all_or_nothing(tmp_path, database_url):
    db = await Database.connect(database_url)
    with pytest.raises((sqlite3.IntegrityError, asyncpg.NotNullViolationError)):
        await db.add_jokes([("a joke here", "a joke here"), ("bad", None)])  # NOT NULL key
    assert await db.joke_count() == 0
    await db.close()


async def test_versions_have_exactly_one_active(tmp_path, database_url):
    db = await Database.connect(database_url)
    await db.ensure_base_version("/models/base")
    assert (await db.active_version()).version == 0
    await db.add_version(
        1, "/models/v1", parent_version=0, status="promoted", metrics={"a": 1}, manifest={}
    )
    await db.set_active(1)
    assert (await db.active_version()).name == "v1"
    with pytest.raises(LookupError):
        await db.set_active(9)
    assert (await db.active_version()).name == "v1"  # the failed switch changed nothing
    await db.ensure_base_version("/models/base")  # a restart keeps the promoted version
    assert (await db.active_version()).name == "v1"
    assert [v.as_json()["active"] for v in await db.versions()] == [False, True]
    await db.close()


async def test_runs_and_new_joke_counting(tmp_path, database_url):
    db = await Database.connect(database_url)
    for n in range(3):
        await add_joke(db, f"joke number {n} is funny")
    run = await db.start_run("cli")
    assert await db.jokes_added_since(await db.last_trained_joke_id()) == 3
    await db.update_run(run, status="promoted", finished=True, last_joke_id=2)
    assert await db.jokes_added_since(await db.last_trained_joke_id()) == 1
    stale = await db.start_run("admin")
    assert await db.fail_interrupted_runs() == 1
    assert (await db.run(stale)).status == "failed"
    assert (await db.last_finished_run()).id == stale
    await db.close()


async def test_databases_opened_together_migrate_once(tmp_path):
    """Processes splitting the gateway shards share one database and may start together."""
    for attempt in range(5):  # without the lock most attempts fail ("table already exists")
        path = tmp_path / f"shared-{attempt}.sqlite3"
        opened = await asyncio.gather(*(Database.open(path) for _ in range(3)))
        try:
            versions = {await db.schema_version() for db in opened}
            assert len(versions) == 1 and versions.pop() >= 1
        finally:
            for db in opened:
                await db.close()


# ---- one connection, many coroutines ------------------------------------------------------


async def test_concurrent_transactions_and_writes_do_not_collide(tmp_path, database_url):
    """Bulk adds, version switches and single writes at once on the one shared connection."""
    db = await Database.connect(database_url)
    try:
        await db.ensure_base_version("/models/base")
        await db.add_version(1, "/v1", parent_version=0, status="promoted", metrics={}, manifest={})
        batches = [
            [(f"batch {b} joke {n} is funny", f"batch {b} joke {n} is funny") for n in range(5)]
            for b in range(20)
        ]
        results = await asyncio.gather(
            *(db.add_jokes(batch) for batch in batches),
            *(db.set_active(n % 2) for n in range(20)),
            *(db.ensure_base_version("/models/base") for _ in range(5)),
            *(db.start_run("cli") for _ in range(20)),
            return_exceptions=True,
        )
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert await db.joke_count() == 100
        assert len({r for r in results[-20:]}) == 20  # twenty distinct runs
        assert sum(v.active for v in await db.versions()) == 1
    finally:
        await db.close()


async def test_a_write_beside_a_transaction_never_joins_it(tmp_path, database_url):
    """A write of one coroutine never lands inside another's open transaction (to be rolled
    back with it), and a read never sees another's uncommitted rows."""
    db = await Database.connect(database_url)
    opened = asyncio.Event()

    async def abandoned() -> None:
        async with db.transaction():
            await add_joke(db, "A joke that is never committed.")
            opened.set()
            await asyncio.sleep(0.05)
            raise RuntimeError("changed my mind")

    async def beside() -> tuple[int, int]:
        await opened.wait()
        return await db.start_run("cli"), await db.joke_count()

    try:
        first, second = await asyncio.gather(abandoned(), beside(), return_exceptions=True)
        assert isinstance(first, RuntimeError)
        run_id, seen = second
        assert seen == 0  # the uncommitted joke was not visible
        assert (await db.run(run_id)).status == "running"  # kept: not rolled back with it
        assert await db.joke_count() == 0
    finally:
        await db.close()


async def test_nested_transactions_roll_back_only_the_inner_part(tmp_path, database_url):
    db = await Database.connect(database_url)
    try:
        async with db.transaction():
            await add_joke(db, "The outer joke is kept.")
            with pytest.raises(RuntimeError):
                async with db.transaction():
                    await add_joke(db, "The inner joke is rolled back.")
                    raise RuntimeError("inner")
            await db.add_jokes([("a bulk joke inside", "a bulk joke inside")])  # joins it
        texts = [j.text for j in await db.corpus()]
        assert texts == ["The outer joke is kept.", "a bulk joke inside"]
    finally:
        await db.close()
