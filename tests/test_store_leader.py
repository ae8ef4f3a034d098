"""Several processes, one PostgreSQL database: one leader at a time (and another takes over
when it dies), one holder of a cluster lock, and version changes that reach every listener
(also after its connection was cut)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from bot.store.backends import open_backend
from bot.store.leader import AdvisoryLeadership, LockHeld, cluster_lock, leadership_for
from bot.store.notify import VersionListener, announce_version_change

RETRY = 0.2


async def wait_for(condition, timeout: float = 10.0) -> float:
    """Seconds until `condition()` held; fails after `timeout`."""
    began = time.monotonic()
    while not condition():
        assert time.monotonic() - began < timeout, "condition not met in time"
        await asyncio.sleep(0.02)
    return time.monotonic() - began


@pytest.fixture
async def backends(postgres_url):
    opened = [await open_backend(postgres_url) for _ in range(3)]
    yield opened
    for backend in opened:
        await backend.close()


async def test_exactly_one_leads_and_another_takes_over_when_it_stops(backends):
    leaders = [AdvisoryLeadership(b, retry_seconds=RETRY) for b in backends]
    for leadership in leaders:
        leadership.start()
    try:
        await wait_for(lambda: any(x.is_leader for x in leaders))
        await asyncio.sleep(RETRY * 3)  # the others kept trying all this time
        assert sum(x.is_leader for x in leaders) == 1
        first = next(x for x in leaders if x.is_leader)
        await first.stop()
        others = [x for x in leaders if x is not first]
        await wait_for(lambda: any(x.is_leader for x in others), timeout=RETRY * 5)
        assert sum(x.is_leader for x in others) == 1
    finally:
        for leadership in leaders:
            await leadership.stop()


LEADER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from bot.store.backends import open_backend
    from bot.store.leader import AdvisoryLeadership

    async def main():
        backend = await open_backend(sys.argv[1])
        leadership = AdvisoryLeadership(backend, retry_seconds=0.2)
        leadership.start()
        while not leadership.is_leader:
            await asyncio.sleep(0.02)
        print("leading", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
    """
)


async def test_a_killed_leader_is_replaced_within_the_retry_interval(postgres_url, backends):
    process = subprocess.Popen(
        [sys.executable, "-c", LEADER_SCRIPT, postgres_url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=os.getcwd(),
    )
    follower = AdvisoryLeadership(backends[0], retry_seconds=RETRY)
    try:
        assert process.stdout.readline().strip() == "leading"
        follower.start()
        await asyncio.sleep(RETRY * 3)
        assert not follower.is_leader
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=10)
        took = await wait_for(lambda: follower.is_leader, timeout=5)
        assert took < RETRY * 3 + 1.0, f"took over after {took:.2f} s"
    finally:
        process.kill()
        await follower.stop()


async def test_sqlite_has_one_process_that_always_leads(tmp_path):
    backend = await open_backend(f"sqlite://{tmp_path / 'j.sqlite3'}")
    try:
        assert leadership_for(backend).is_leader
        async with cluster_lock(backend, "training"):  # SQLite's callers use file locks
            pass
    finally:
        await backend.close()


async def test_a_cluster_lock_has_one_holder_at_a_time(backends):
    a, b, _ = backends
    async with cluster_lock(a, "training"):
        with pytest.raises(LockHeld):
            async with cluster_lock(b, "training"):
                pass
        async with cluster_lock(b, "another"):
            pass
    async with cluster_lock(b, "training"):  # released with the block
        pass


async def test_a_version_change_reaches_every_listener_and_a_rollback_does_not(backends):
    writer, *readers = backends
    calls = [0 for _ in readers]
    listeners = []
    for i, reader in enumerate(readers):

        async def count(i=i) -> None:
            calls[i] += 1

        listener = VersionListener(reader, count, retry_seconds=RETRY)
        listener.start()
        listeners.append(listener)
    try:
        for listener in listeners:
            await asyncio.wait_for(listener.listening.wait(), 10)
        await wait_for(lambda: calls == [1, 1])  # each re-read once on connecting
        with pytest.raises(RuntimeError):
            async with writer.transaction():
                await announce_version_change(writer, 3)
                raise RuntimeError("rolled back: nobody hears of it")
        await asyncio.sleep(RETRY * 2)
        assert calls == [1, 1]
        async with writer.transaction():
            await announce_version_change(writer, 4)
        await wait_for(lambda: calls == [2, 2], timeout=2)
        # a listener whose connection is cut re-reads once it is back
        listeners[0]._connection.terminate()
        await wait_for(lambda: calls[0] == 3, timeout=5)
        async with writer.transaction():
            await announce_version_change(writer, 5)
        await wait_for(lambda: calls == [4, 3], timeout=2)
    finally:
        for listener in listeners:
            await listener.stop()
