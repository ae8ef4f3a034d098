"""Who leads, when several jokebot processes share one PostgreSQL database.

`Leadership` answers "am I the one that runs the retrain schedule?". On PostgreSQL it is the
process holding a session advisory lock (`pg_try_advisory_lock`) on a connection of its own:
the server releases that lock the moment the connection ends, so when the leader dies (kill -9,
a crash) another process takes over at its next try, within LEADER_RETRY_SECONDS; when a
leader's machine vanishes without closing its connection, the server notices through TCP
keepalives (about 25 s, see `backends.server_settings`) and the lock goes then.

`cluster_lock(backend, name)` is the same mechanism for one task at a time across every
process (one training run at a time): taken or refused at once, held until the block ends.

On SQLite everything is on one machine: every process leads (the existing per-data-directory
file locks keep it to one training at a time).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from bot.store.backends import (
    PostgresBackend,
    SQLBackend,
    StoreUnavailable,
    advisory_key,
    is_connection_lost,
)

log = logging.getLogger(__name__)
LEADER_LOCK = "leader"


class LockHeld(Exception):
    """Another process holds the lock."""


class Leadership:
    """Always the leader: one machine, one database file."""

    @property
    def is_leader(self) -> bool:
        return True

    def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None


class AdvisoryLeadership(Leadership):
    """Leader while this process holds the `leader` advisory lock on its own connection."""

    def __init__(self, backend: PostgresBackend, *, retry_seconds: float = 5.0) -> None:
        self.backend = backend
        self.retry_seconds = retry_seconds
        self._leader = False
        self._connection: Any = None
        self._task: asyncio.Task | None = None
        self.changed = asyncio.Event()  # set on every change of leadership (tests, logs)

    @property
    def is_leader(self) -> bool:
        return self._leader and self._connection is not None and not self._connection.is_closed()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._hold(), name="leadership")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            log.info("%s the retrain schedule", "leading" if leader else "no longer leading")
            self.changed.set()

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._set(False)
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=2)
            if not connection.is_closed():
                connection.terminate()

    async def _hold(self) -> None:
        """Try for the lock every `retry_seconds`; once held, check the connection as often."""
        key = advisory_key(LEADER_LOCK)
        while True:
            try:
                if self._connection is None or self._connection.is_closed():
                    self._set(False)
                    self._connection = await self.backend.connect()
                if self._leader:
                    await self._connection.fetchval("SELECT 1", timeout=self.retry_seconds)
                elif await self._connection.fetchval(
                    "SELECT pg_try_advisory_lock($1)", key, timeout=self.retry_seconds
                ):
                    self._set(True)
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not is_connection_lost(error):
                    log.exception("leadership check failed")
                else:
                    log.warning("leadership: the database is not reachable (%s)", error)
                await self._drop_connection()
            await asyncio.sleep(self.retry_seconds)


def leadership_for(backend: SQLBackend, *, retry_seconds: float = 5.0) -> Leadership:
    if isinstance(backend, PostgresBackend):
        return AdvisoryLeadership(backend, retry_seconds=retry_seconds)
    return Leadership()


@contextlib.asynccontextmanager
async def cluster_lock(backend: SQLBackend, name: str) -> AsyncIterator[None]:
    """Hold `name` across every process sharing the database, or raise LockHeld at once.

    On PostgreSQL: a session advisory lock on a connection opened for it (ended with the block,
    or with the process). On SQLite: nothing to do here (the callers' file locks do it)."""
    if not isinstance(backend, PostgresBackend):
        yield
        return
    key = advisory_key(name)
    try:
        connection = await backend.connect()
    except Exception as error:
        if is_connection_lost(error):
            raise StoreUnavailable(f"the database is not reachable ({error})") from error
        raise
    try:
        if not await connection.fetchval("SELECT pg_try_advisory_lock($1)", key):
            raise LockHeld(name)
        yield
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(connection.close(), timeout=2)  # the lock goes with it
        if not connection.is_closed():
            connection.terminate()
