"""Several jokebot processes on one host: the runner file (`<data>/runner.json`), ports, and
the first conversion of the embedded model.

One process per gateway shard may start at the same moment; each writes the file, and each
removes it on the way out. Neither may fail on the other's temporary file, and a process must
not remove a record another one wrote."""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import time
from pathlib import Path

import pytest

from bot.app import (
    StartupError,
    own_runner,
    remove_runner_file,
    runner_file_path,
    write_runner_file,
)
from bot.runners.process import listening_socket
from bot.settings import Settings
from model import embedded
from tests.helpers import free_port


def run_together(target, *args, processes: int = 3) -> list[multiprocessing.Process]:
    """`target(*args, start)` in `processes` fresh interpreters that wait at `start` to begin
    at the same moment; returned once all have exited, each having exited 0."""
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(processes)
    started = [ctx.Process(target=target, args=(*args, start)) for _ in range(processes)]
    for process in started:
        process.start()
    for process in started:
        process.join(timeout=60)
    assert [process.exitcode for process in started] == [0] * processes
    return started


def _write_many(data_dir: str, times: int, start) -> None:
    settings = Settings(_env_file=None, data_dir=Path(data_dir))
    start.wait(timeout=60)  # all writers begin together
    for n in range(times):
        write_runner_file(settings, f"http://127.0.0.1:{n}", None)


def test_processes_writing_at_once_each_leave_a_whole_record(tmp_path):
    writers = run_together(_write_many, str(tmp_path), 500)
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


@pytest.fixture
def taken_port():
    """A port something already listens on, as the first `jokebot run`'s runner would."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield listener.getsockname()[1]


async def test_a_second_process_takes_a_free_port_when_the_default_one_is_taken(
    tmp_path, taken_port, caplog
):
    settings = Settings(_env_file=None, data_dir=tmp_path, runner_port=taken_port)
    settings.model_fields_set.discard("runner_port")  # as if it were the default, 8765
    runner = own_runner(settings, "model", "v0")
    try:
        assert runner.port not in (0, taken_port)
        assert f"port {taken_port} is in use" in caplog.text
        with pytest.raises(OSError):  # the port is this process's from now on
            listening_socket("127.0.0.1", runner.port)
    finally:
        await runner.stop()
    listening_socket("127.0.0.1", runner.port).close()  # and free again once it stops


async def test_a_port_the_host_chose_is_kept_or_startup_says_why(tmp_path, taken_port):
    chosen = Settings(_env_file=None, data_dir=tmp_path, runner_port=taken_port)
    with pytest.raises(StartupError, match=f"cannot listen on 127.0.0.1:{taken_port}"):
        own_runner(chosen, "model", "v0")
    free = free_port()
    runner = own_runner(Settings(_env_file=None, data_dir=tmp_path, runner_port=free), "m", "v0")
    assert runner.url == f"http://127.0.0.1:{free}"
    await runner.stop()


def _convert_in_turn(data_dir: str, start) -> None:
    """`ensure_embedded_model` with a slow stand-in for the conversion that counts its runs."""

    def convert(target: Path) -> None:
        with open(Path(data_dir) / "conversions", "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(0.5)
        tmp = target.parent / f".tmp-{os.getpid()}"
        tmp.mkdir()
        (tmp / "config.json").write_text("{}", encoding="utf-8")
        os.replace(tmp, target)

    embedded._convert_embedded_model = convert
    start.wait(timeout=60)
    assert embedded.ensure_embedded_model(Path(data_dir)) == embedded.embedded_model_dir(data_dir)


def test_processes_starting_together_convert_the_embedded_model_once(tmp_path):
    """Replicas or shard processes started at once on a fresh data dir: one converts."""
    run_together(_convert_in_turn, str(tmp_path))
    assert len((tmp_path / "conversions").read_text(encoding="utf-8").split()) == 1
    assert (embedded.embedded_model_dir(tmp_path) / "config.json").is_file()
