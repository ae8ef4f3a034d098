"""The runner file (`<data>/runner.json`) when several `jokebot run` processes share a data dir.

One process per gateway shard may start at the same moment; each writes the file, and each
removes it on the way out. Neither may fail on the other's temporary file, and a process must
not remove a record another one wrote."""

from __future__ import annotations

import json
import multiprocessing
import os
from pathlib import Path

from bot.app import remove_runner_file, runner_file_path, write_runner_file
from bot.settings import Settings


def _write_many(data_dir: str, times: int, start) -> None:
    settings = Settings(_env_file=None, data_dir=Path(data_dir))
    start.wait(timeout=60)  # all writers begin together
    for n in range(times):
        write_runner_file(settings, f"http://127.0.0.1:{n}", None)


def test_processes_writing_at_once_each_leave_a_whole_record(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(3)
    writers = [ctx.Process(target=_write_many, args=(str(tmp_path), 500, start)) for _ in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(timeout=60)
    assert [writer.exitcode for writer in writers] == [0, 0, 0]
    settings = Settings(_env_file=None, data_dir=tmp_path)
    record = json.loads(runner_file_path(settings).read_text(encoding="utf-8"))
    assert record["pid"] in {writer.pid for writer in writers}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runner.json"]  # no temporary left


def test_a_process_removes_only_its_own_record(tmp_path):
    settings = Settings(_env_file=None, data_dir=tmp_path)
    path = write_runner_file(settings, "http://127.0.0.1:1", "secret")
    assert (path.stat().st_mode & 0o777) == 0o600  # it holds the admin token
    theirs = {"url": "http://127.0.0.1:2", "token": None, "pid": os.getpid() + 1}
    path.write_text(json.dumps(theirs), encoding="utf-8")
    remove_runner_file(path)
    assert json.loads(path.read_text(encoding="utf-8")) == theirs
    write_runner_file(settings, "http://127.0.0.1:1", None)
    remove_runner_file(path)
    assert not path.exists()
    remove_runner_file(path)  # nothing there: nothing to do
