"""`jokebot backup` and `jokebot restore` against a real `jokebot run` process: a backup while
it serves, restore refused while it runs, then allowed once it stopped, and once it was killed
with SIGKILL (its lock died with it)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from bot.store.backup import latest_schema_version
from loopback_discord import LoopbackDiscord
from tests.helpers import (
    ROOT,
    TOKEN,
    add_jokes,
    corpus_lines,
    shared_runner_env,
    sqlite_rows,
    start_jokebot,
    stop_jokebot,
)


async def jokebot(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """A `jokebot` CLI command: exit code, standard output, standard error."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bot.cli", *args, env=env, cwd=ROOT,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), timeout=120)
    return process.returncode, out.decode(), err.decode()


def joke_rows(database: Path) -> list[tuple]:
    return sqlite_rows(database, "SELECT id, text FROM jokes ORDER BY id")


async def test_restore_refused_while_jokebot_runs_allowed_after_stop_and_kill(
    tmp_path, tiny_model, shared_runner
):
    data_dir = tmp_path / "data"
    database = data_dir / "jokebot.sqlite3"
    three = tmp_path / "three.sqlite3"
    log = tmp_path / "run.log"
    async with LoopbackDiscord(token=TOKEN) as standin:
        env = shared_runner_env(
            standin, data_dir, tiny_model, shared_runner, BACKUP_SCHEDULE="0 0 1 1 *"
        )
        process = await start_jokebot(standin, env, log=log)
        try:
            await add_jokes(standin, corpus_lines(3), first_member=100)
            code, out, err = await jokebot(env, "backup", "--to", str(three))  # online
            assert code == 0, err
            schema = latest_schema_version()
            assert out == f"backup written: {three} (schema {schema}, 3 jokes, 0 votes)\n"
            await add_jokes(standin, corpus_lines(5)[3:], first_member=200)

            code, out, err = await jokebot(env, "restore", str(three))
            assert code == 1 and out == ""
            assert err == (
                f"jokebot: restore refused: a jokebot process is running on {data_dir}: stop it"
                " first (restore replaces the database under it)\n"
            )
            five = joke_rows(database)
            assert len(five) == 5
        finally:
            await stop_jokebot(process)
    assert "scheduled backups: 0 0 1 1 * (UTC) into" in log.read_text()

    code, out, err = await jokebot(env, "restore", str(three))
    assert code == 0, err
    assert joke_rows(database) == five[:3]
    aside = Path(out.splitlines()[-1].removeprefix("the database before the restore is kept as "))
    assert aside.parent == data_dir and joke_rows(aside) == five

    async with LoopbackDiscord(token=TOKEN) as standin:
        env = shared_runner_env(standin, data_dir, tiny_model, shared_runner)
        process = await start_jokebot(standin, env, log=log)
        try:
            status = await (await standin.invoke("status")).wait_for_reply()
            assert "Corpus: 3 jokes" in status.content
            assert await add_jokes(standin, corpus_lines(6)[5:], first_member=300) == [4]
            code, _, err = await jokebot(env, "restore", str(aside))
            assert code == 1 and "a jokebot process is running" in err
        finally:
            process.kill()  # SIGKILL: no clean-up runs, the lock goes with the process
            assert await process.wait() == -9

    code, out, err = await jokebot(env, "restore", str(aside))
    assert code == 0, err
    assert joke_rows(database) == five
    code, out, _ = await jokebot(env, "db", "status")
    assert code == 0 and ["jokes", "5"] in [line.split() for line in out.splitlines()]
