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
from bot.store.keeper import ConnectionKeeper, close_connection

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


class AdvisoryLeadership(ConnectionKeeper, Leadership):
    """Leader while this process holds the `leader` advisory lock on its own connection: tries
    for the lock every `retry_seconds`; once held, checks the connection as often."""

    task_name = "leadership"
    failed = "leadership check failed"
    unreachable = "leadership"

    def __init__(self, backend: PostgresBackend, *, retry_seconds: float = 5.0) -> None:
        super().__init__(backend, retry_seconds=retry_seconds)
        self._leader = False
        self.changed = asyncio.Event()  # set on every change of leadership (tests, logs)

    @property
    def is_leader(self) -> bool:
        return self._leader and self._connection is not None and not self._connection.is_closed()

    def _set(self, leader: bool) -> None:
        if leader != self._leader:
            self._leader = leader
            log.info("%s the retrain schedule", "leading" if leader else "no longer leading")
            self.changed.set()

    def _lost(self) -> None:
        self._set(False)  # the server released the lock with the connection

    async def _use(self, connection: Any) -> None:
        if self._leader:
            await connection.fetchval("SELECT 1", timeout=self.retry_seconds)
        elif await connection.fetchval(
            "SELECT pg_try_advisory_lock($1)", advisory_key(LEADER_LOCK), timeout=self.retry_seconds
        ):
            self._set(True)


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
        await close_connection(connection)  # the lock goes with it
