"""`jokebot db copy --to postgresql://…`: a populated SQLite database moves into a real
PostgreSQL server with every row and id, verified; a non-empty target is refused; a copy that
failed leaves nothing behind and runs again."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from bot.store.backends import migrations, open_backend
from bot.store.community import CommunityStore
from bot.store.copy import table_checksum
from bot.store.database import Database
from model.contracts.jokes import check_joke

TABLES = [
    "jokes", "model_versions", "training_runs", "generated_jokes", "votes", "reports", "reviews",
]  # fmt: skip


async def populate(path: Path) -> None:
    """Every table, with gaps in the ids (deleted rows) and 64-bit Discord ids."""
    db = await Database.open(path)
    try:
        store = CommunityStore(db, promote_at=2)
        member = 2**60 + 7
        for n in range(30):
            check = check_joke(f"Joke number {n}: why did the chicken cross road {n}? Reasons.")
            await db.add_joke(check.text, check.key, source="user", author_id=member + n % 3)
        await store.delete_joke(5)
        await store.delete_joke(6)
        await db.ensure_base_version("/models/base")
        await db.add_version(1, "/models/v1", parent_version=0, status="promoted",
                             metrics={"nll": 1.5}, manifest={"version": 1})  # fmt: skip
        await db.set_active(1)
        run = await db.start_run("cli")
        await db.update_run(run, status="promoted", finished=True, last_joke_id=30,
                            candidate_version=1, metrics={"nll": 1.5})  # fmt: skip
        for n in range(5):
            check = check_joke(f"A generated joke about the number {n}, which is odd or even.")
            shown = await store.record_shown(
                check.text, check.key, prompt="", model_version=1, guild_id=member, channel_id=3
            )
            for user in range(4):
                await store.vote(shown, member + user, 1 if (user + n) % 3 else -1)
            await store.report_generated(shown, member + 9) if n == 4 else None
        await store.report_joke(7, member)
        pending = await db.add_joke("A pending one, for review.", "a pending one for review",
                                    source="user", status="pending")  # fmt: skip
        await store.review(pending.id, member, "approved")
    finally:
        await db.close()


def sqlite_counts(path: Path) -> dict[str, int]:
    raw = sqlite3.connect(path)
    try:
        return {t: raw.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
    finally:
        raw.close()


def jokebot(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["JOKEBOT_DATA_DIR"] = str(cwd / "data")
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args], capture_output=True, text=True, env=env,
        cwd=os.getcwd(), timeout=120,
    )  # fmt: skip


async def pg_tables(url: str) -> dict[str, tuple[int, str]]:
    """Rows and checksum of every table as PostgreSQL holds it."""
    backend = await open_backend(url)
    try:
        found = {}
        for table in TABLES:
            keys = "generated_id, user_id" if table == "votes" else "1"
            key = "version" if table == "model_versions" else keys if keys != "1" else "id"
            found[table] = table_checksum(
                await backend.fetch(f"SELECT * FROM {table} ORDER BY {key}")
            )
        return found
    finally:
        await backend.close()


def test_copy_moves_every_row_and_id_verified(tmp_path, postgres_url):
    source = tmp_path / "data" / "jokebot.sqlite3"
    asyncio.run(populate(source))
    counts = sqlite_counts(source)
    assert all(counts.values()), counts  # every table has rows to move

    done = jokebot("db", "copy", "--to", postgres_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "every table verified" in done.stdout
    assert "jokebot-test" not in done.stdout + done.stderr  # the password is never printed

    copied = asyncio.run(pg_tables(postgres_url))
    assert {t: rows for t, (rows, _) in copied.items()} == counts

    async def same_rows_and_new_ids() -> None:
        target = await open_backend(postgres_url)
        try:
            ids = [r[0] for r in await target.fetch("SELECT id FROM jokes ORDER BY id")]
            raw = sqlite3.connect(source)
            assert ids == [r[0] for r in raw.execute("SELECT id FROM jokes ORDER BY id")]
            assert 5 not in ids and 6 not in ids  # the gaps stay gaps
            raw.close()
            new = await target.fetchval(
                "INSERT INTO jokes (text, norm_key, source) VALUES ('n', 'n', 'user') RETURNING id"
            )
            assert new == max(ids) + 1  # the sequence moved past the copied ids
            active = await target.fetchrow(
                "SELECT version, active FROM model_versions WHERE active"
            )
            assert tuple(active) == (1, True)
        finally:
            await target.close()

    asyncio.run(same_rows_and_new_ids())

    again = jokebot("db", "copy", "--to", postgres_url, cwd=tmp_path)
    assert again.returncode == 1
    assert "already has rows" in again.stderr and len(again.stderr.strip().splitlines()) == 1


def test_a_copy_that_fails_leaves_nothing_and_runs_again(tmp_path, postgres_url):
    source = tmp_path / "data" / "jokebot.sqlite3"
    asyncio.run(populate(source))
    raw = sqlite3.connect(source)
    raw.execute("UPDATE votes SET voted_at = 'yesterday-ish' WHERE rowid = 3")  # not a time
    raw.commit()

    failed = jokebot("db", "copy", "--to", postgres_url, cwd=tmp_path)
    assert failed.returncode != 0
    assert all(rows == 0 for rows, _ in asyncio.run(pg_tables(postgres_url)).values())

    raw.execute("UPDATE votes SET voted_at = '2025-01-31T12:00:00.000Z' WHERE rowid = 3")
    raw.commit()
    raw.close()
    done = jokebot("db", "copy", "--to", postgres_url, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    copied = asyncio.run(pg_tables(postgres_url))
    assert {t: rows for t, (rows, _) in copied.items()} == sqlite_counts(source)


def test_copy_refuses_what_is_not_postgresql(tmp_path):
    (tmp_path / "data").mkdir()
    missing = jokebot("db", "copy", "--to", "postgresql://u:p@127.0.0.1:1/x", cwd=tmp_path)
    assert missing.returncode == 2 and "no SQLite database" in missing.stderr
    asyncio.run(populate(tmp_path / "data" / "jokebot.sqlite3"))
    wrong = jokebot("db", "copy", "--to", "mysql://u:p@h/x", cwd=tmp_path)
    assert wrong.returncode == 2 and "postgresql://" in wrong.stderr


def test_db_status_shows_postgresql_its_schema_and_rows(tmp_path, postgres_url):
    source = tmp_path / "data" / "jokebot.sqlite3"
    asyncio.run(populate(source))
    assert jokebot("db", "copy", "--to", postgres_url, cwd=tmp_path).returncode == 0
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update(JOKEBOT_DATA_DIR=str(tmp_path / "data"), DATABASE_URL=postgres_url)
    status = subprocess.run(
        [sys.executable, "-m", "bot.cli", "db", "status"], capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip
    assert status.returncode == 0, status.stderr
    lines = status.stdout.splitlines()
    assert lines[0].startswith("backend: PostgreSQL postgresql://jokebot:***@127.0.0.1:")
    newest = len(migrations("postgresql"))
    assert lines[1] == f"schema version: {newest} of {newest}"
    counts = sqlite_counts(source)
    for table in TABLES:
        assert any(line.split() == [table, f"{counts[table]:,}"] for line in lines), table
