"""Backups of the SQLite database (bot/store/backup.py): online copies taken while members add
jokes and vote through the real bot, the schedule and its pruning, restore's checks, the run
lock, and `jokebot db status`."""

from __future__ import annotations

import asyncio
import errno
import os
import sqlite3
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest

from bot.app import BACKUP_JOB_ID, StartupError, backend, run_scheduled_backup, schedule_backups
from bot.cli import main
from bot.settings import SettingsError, load_settings
from bot.store import backup as backups
from bot.store.database import Database
from loopback_discord import LoopbackDiscord
from tests.helpers import (
    PROMOTE_AT,
    TOKEN,
    add_jokes,
    assert_consistent,
    corpus_lines,
    jokebot_app,
    sqlite_rows,
    upvote,
)


@pytest.fixture
def busy_settings(shared_settings):
    """Many members at once: no rate limits, votes promote at PROMOTE_AT."""
    return shared_settings.model_copy(
        update={
            "rate_addjoke_member": "off",
            "rate_addjoke_server": "off",
            "community_min_score": PROMOTE_AT,
        }
    )


async def test_backup_while_members_add_jokes_and_vote(standin, busy_settings, tmp_path):
    """The copy is of the moment it began: dozens of /addjoke and votes acknowledged while it
    runs are all in the live database and none in the copy, which passes integrity_check."""
    texts = corpus_lines(110)
    async with jokebot_app(standin, busy_settings) as app:
        database = busy_settings.database_path
        before = await add_jokes(standin, texts[:10], first_member=100)
        joke = await (await standin.invoke("joke", {})).wait_for_reply(timeout=60)
        await upvote(standin, joke, [900, 901])

        snapshot_taken, writes_done = threading.Event(), threading.Event()

        def hold_the_copy_open(status: int, remaining: int, total: int) -> None:
            if not snapshot_taken.is_set():
                snapshot_taken.set()
                assert writes_done.wait(timeout=120)

        target = tmp_path / "during.sqlite3"
        copying = asyncio.create_task(
            asyncio.to_thread(
                backups.backup_database, database, target, progress=hold_the_copy_open
            )
        )
        assert await asyncio.to_thread(snapshot_taken.wait, 30)
        during = await add_jokes(standin, texts[10:50], first_member=200)
        await upvote(standin, joke, [902, 903, 904])  # net 5: joins the corpus
        writes_done.set()
        made = await copying

        assert made.path == target and made.row_counts["jokes"] == 10
        assert sorted(before) == list(range(1, 11)) and sorted(during) == list(range(11, 51))
        first_ten = "SELECT id, text FROM jokes WHERE id <= 10 ORDER BY id"
        assert sqlite_rows(target, "SELECT id, text FROM jokes ORDER BY id") == sqlite_rows(
            database, first_ten
        )
        assert sqlite_rows(target, "SELECT user_id FROM votes ORDER BY user_id") == [(900,), (901,)]
        assert sqlite_rows(target, "PRAGMA integrity_check") == [("ok",)]
        assert sqlite_rows(target, "PRAGMA journal_mode") == [("delete",)]  # one file, no -wal
        assert_consistent(target)
        assert await app.db.joke_count() == 51  # 50 members' jokes and the voted-up one
        assert_consistent(database)

        # no pause this time: the copy races the writes, and is still one committed moment
        racing = asyncio.create_task(
            asyncio.to_thread(backups.backup_database, database, tmp_path / "racing.sqlite3")
        )
        await asyncio.gather(
            add_jokes(standin, texts[50:110], first_member=300),
            upvote(standin, joke, [905, 906, 907]),
        )
        raced = await racing
        assert 51 <= raced.row_counts["jokes"] <= 111
        assert_consistent(raced.path)
        assert await app.db.joke_count() == 111


async def test_the_scheduled_job_backs_up_and_keeps_the_newest(standin, shared_settings):
    """The job `jokebot run` schedules, triggered directly: a checked backup named after its
    minute, one per minute however many processes fire, the oldest beyond BACKUP_KEEP gone."""
    settings = shared_settings.model_copy(
        update={"backup_schedule": "15 4 * * *", "backup_keep": 3}
    )
    folder = settings.backup_folder
    assert folder == settings.data_dir / "backups"
    async with jokebot_app(standin, settings):
        await add_jokes(standin, corpus_lines(3), first_member=100)
        scheduler = schedule_backups(settings)
        try:
            job = scheduler.get_job(BACKUP_JOB_ID)
            assert job.next_run_time.astimezone(UTC).strftime("%H:%M") == "04:15"
            made = await job.func(*job.args)
            assert made is not None and made.row_counts["jokes"] == 3
            this_minute = datetime.now(UTC).replace(second=0, microsecond=0)
            assert made.path.name == backups.backup_name(this_minute)
            # a second process sharing the data directory fires in the same minute
            assert await job.func(*job.args) is None
        finally:
            scheduler.shutdown(wait=False)

        crashed = folder / ".jokebot-20200101T000000Z.sqlite3.1.2.partial"
        crashed.write_bytes(b"half a copy")
        os.utime(crashed, (time.time() - 2 * 86400,) * 2)
        in_progress = folder / ".jokebot-20200101T000100Z.sqlite3.3.4.partial"
        in_progress.write_bytes(b"being written")
        earlier = [this_minute - timedelta(days=d) for d in (4, 3, 2, 1)]
        for slot in earlier:
            assert await run_scheduled_backup(settings, slot) is not None

    kept = backups.backups_in(folder)
    assert [p.name for p in kept] == [backups.backup_name(s) for s in (*earlier[2:], this_minute)]
    for path in kept:
        assert backups.inspect_database(path).row_counts["jokes"] == 3
    assert not crashed.exists() and in_progress.exists()


async def test_a_failed_scheduled_backup_is_logged_and_the_bot_goes_on(
    shared_settings, tmp_path, caplog
):
    settings = shared_settings
    settings.data_dir.mkdir(parents=True)
    sqlite3.connect(settings.database_path).close()  # an empty file: not a jokebot database
    assert await run_scheduled_backup(settings) is None
    assert "scheduled backup failed" in caplog.text and "not a jokebot one" in caplog.text
    assert backups.backups_in(settings.backup_folder) == []

    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, settings):
        await add_jokes(standin, corpus_lines(1), first_member=100)  # now a jokebot database
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("a file where the backup folder should be")
    caplog.clear()
    unwritable = settings.model_copy(update={"backup_dir": blocked})
    assert await run_scheduled_backup(unwritable) is None
    assert f"cannot write {blocked}: File exists" in caplog.text
    assert await run_scheduled_backup(settings) is not None


def test_backup_settings(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)  # no stray .env
    monkeypatch.setenv("JOKEBOT_DATA_DIR", str(tmp_path / "d"))
    settings = load_settings()
    assert settings.backup_schedule == "30 3 * * *" and settings.backup_keep == 7
    assert settings.backup_folder == tmp_path / "d" / "backups"
    assert load_settings(backup_schedule="off", backup_dir=tmp_path / "b").backup_folder == (
        tmp_path / "b"
    )
    assert schedule_backups(load_settings(backup_schedule="never")) is None
    with pytest.raises(SettingsError, match="BACKUP_SCHEDULE"):
        load_settings(backup_schedule="every day")
    with pytest.raises(SettingsError, match="BACKUP_KEEP"):
        load_settings(backup_keep=0)


async def test_restore_refuses_bad_files_in_one_line_and_changes_nothing(
    shared_settings, tmp_path, monkeypatch, capsys
):
    """A damaged file, a foreign SQLite file, a newer jokebot's database: refused, and the
    current database is left exactly as it was."""
    data_dir = shared_settings.data_dir
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOKEBOT_DATA_DIR", str(data_dir))
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, shared_settings):
        await add_jokes(standin, corpus_lines(2), first_member=100)
    database = shared_settings.database_path
    assert main(["backup", "--to", str(tmp_path / "good.sqlite3")]) == 0
    before = database.read_bytes()

    damaged = bytearray((tmp_path / "good.sqlite3").read_bytes())
    damaged[4096:8192] = b"\x55" * 4096  # the second page: a table's b-tree
    (tmp_path / "damaged.sqlite3").write_bytes(damaged)
    foreign = sqlite3.connect(tmp_path / "foreign.sqlite3")
    foreign.execute("CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT)")
    foreign.commit()
    foreign.close()
    newer = tmp_path / "newer.sqlite3"
    newer.write_bytes((tmp_path / "good.sqlite3").read_bytes())
    latest = backups.latest_schema_version()
    sqlite3.connect(newer).execute(f"PRAGMA user_version = {latest + 1}").connection.close()
    (tmp_path / "text.sqlite3").write_text("jokes, one per line\n" * 300)

    expected = {
        "damaged.sqlite3": "malformed",
        "foreign.sqlite3": "is an SQLite database, but not a jokebot one",
        "newer.sqlite3": f"has schema version {latest + 1}, newer than this jokebot knows",
        "text.sqlite3": "is not a usable SQLite database (file is not a database)",
        "missing.sqlite3": "does not exist",
    }
    capsys.readouterr()
    for name, reason in expected.items():
        assert main(["restore", str(tmp_path / name)]) == 1
        out, err = capsys.readouterr()
        assert out == "" and err.count("\n") == 1, err
        assert err.startswith("jokebot: restore refused: ") and reason in err, err
    assert database.read_bytes() == before
    assert sorted(p.name for p in data_dir.glob("*before-restore*")) == []


async def test_restore_keeps_the_current_database_aside(shared_settings, tmp_path):
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, shared_settings):
        await add_jokes(standin, corpus_lines(2), first_member=100)
        backups.backup_database(shared_settings.database_path, tmp_path / "two.sqlite3")
        await add_jokes(standin, corpus_lines(5)[2:], first_member=200)
    database = shared_settings.database_path
    five = sqlite_rows(database, "SELECT id, text FROM jokes ORDER BY id")
    assert len(five) == 5
    restored = backups.restore_database(
        tmp_path / "two.sqlite3", database, shared_settings.data_dir
    )
    assert restored.facts.row_counts["jokes"] == 2
    assert not database.with_name(database.name + "-wal").exists()
    aside = restored.kept_aside
    assert aside.name.startswith("jokebot.sqlite3.before-restore-")
    assert backups.inspect_database(aside).row_counts["jokes"] == 5
    undone = backups.restore_database(aside, database, shared_settings.data_dir)
    assert undone.facts.row_counts["jokes"] == 5 and undone.kept_aside != aside
    assert sqlite_rows(database, "SELECT id, text FROM jokes ORDER BY id") == five


async def test_restore_and_a_bot_exclude_each_other(shared_settings, tmp_path):
    """In-process too: while the backend holds the data directory restore is refused, and
    while a restore holds it the backend does not start."""
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, shared_settings):
        backups.backup_database(shared_settings.database_path, tmp_path / "b.sqlite3")
        with pytest.raises(backups.DataDirInUse, match="a jokebot process is running"):
            backups.restore_database(
                tmp_path / "b.sqlite3", shared_settings.database_path, shared_settings.data_dir
            )
        with backups.data_dir_in_use(shared_settings.data_dir):  # shared: split shards
            pass
    with (
        backups.data_dir_exclusive(shared_settings.data_dir),
        pytest.raises(StartupError, match="a restore is under way"),
    ):
        async with backend(shared_settings):
            pass


async def test_db_status(shared_settings, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JOKEBOT_DATA_DIR", str(shared_settings.data_dir))
    database = shared_settings.database_path.resolve()
    assert main(["db", "status"]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"backend: sqlite {database}",
        "no database yet: `jokebot run` (or any command that opens it) creates it",
    ]
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, shared_settings):
        await add_jokes(standin, corpus_lines(4), first_member=100)
        assert main(["db", "status", "--check"]) == 0  # while the bot runs
    latest = backups.latest_schema_version()
    lines = capsys.readouterr().out.splitlines()
    assert lines[:4] == [
        f"backend: sqlite {database}",
        f"schema version: {latest} of {latest}",
        "integrity_check: ok",
        "rows:",
    ]
    counts = {line.split()[0]: line.split()[1] for line in lines[4:]}
    assert counts == {
        "generated_jokes": "0",
        "jokes": "4",
        "model_versions": "1",
        "reports": "0",
        "reviews": "0",
        "training_runs": "0",
        "vote_exports": "0",
        "votes": "0",
    }


async def test_a_backup_onto_a_file_system_without_hard_links(tmp_path, monkeypatch):
    database = tmp_path / "data" / "jokebot.sqlite3"
    db = await Database.open(database)
    await db.add_joke("A joke to keep.", "a joke to keep", source="user")
    await db.close()

    def no_links(source, target):
        raise PermissionError(errno.EPERM, "Operation not permitted", str(target))

    monkeypatch.setattr(backups.os, "link", no_links)
    stick = tmp_path / "usb"
    made = backups.backup_database(database, stick / "jokebot.sqlite3")
    assert made.row_counts["jokes"] == 1
    assert [p.name for p in stick.iterdir()] == ["jokebot.sqlite3"]  # no temporary copy left
    with pytest.raises(backups.BackupError, match="already exists; choose another name"):
        backups.backup_database(database, stick / "jokebot.sqlite3")
