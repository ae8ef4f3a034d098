"""A promotion or rollback reaches every jokebot process that shares the PostgreSQL database.

The process that changes the serving version sends `NOTIFY jokebot_versions` in the same
transaction (delivered on commit, never for a change that was rolled back). Every process
listens on a connection of its own; on each notification, and every time that connection is
(re)made (it may have missed notifications while it was down), it calls `on_change`, which
re-reads the active version from the database: notifications only say "look again", so a lost
or doubled one does no harm.

On SQLite there is nothing to listen to: every process reads the one file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from bot.store.backends import (
    PostgresBackend,
    SQLBackend,
    StoreUnavailable,
)
from bot.store.keeper import ConnectionKeeper

log = logging.getLogger(__name__)
VERSIONS_CHANNEL = "jokebot_versions"

OnChange = Callable[[], Awaitable[None]]


async def announce_version_change(backend: SQLBackend, version: int) -> None:
    """Inside the transaction that changes the active version: tell the other processes."""
    if isinstance(backend, PostgresBackend):
        await backend.execute("SELECT pg_notify(?, ?)", (VERSIONS_CHANNEL, str(version)))


class VersionListener(ConnectionKeeper):
    """Calls `on_change` when another process changed the serving version (PostgreSQL)."""

    task_name = "version-listener"
    failed = "listening for version changes failed"
    unreachable = "version changes"

    def __init__(
        self, backend: PostgresBackend, on_change: OnChange, *, retry_seconds: float = 2.0
    ) -> None:
        super().__init__(backend, retry_seconds=retry_seconds)
        self.on_change = on_change
        self._wake = asyncio.Event()
        self.listening = asyncio.Event()  # set while the listening connection is up

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    def _lost(self) -> None:
        self.listening.clear()

    async def _connected(self, connection: Any) -> None:
        connection.add_termination_listener(self._notified)
        await connection.add_listener(VERSIONS_CHANNEL, self._notified)
        self.listening.set()
        self._wake.set()  # (re)connected: notifications may have been missed

    async def _use(self, connection: Any) -> None:
        """Follow each notification until the connection ends."""
        while not connection.is_closed():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.retry_seconds)
            if self._wake.is_set():
                self._wake.clear()
                if not await self._changed():
                    self._wake.set()  # not followed yet: again after a pause
                    await asyncio.sleep(self.retry_seconds)
            else:  # quiet: make sure the connection still works
                await connection.fetchval("SELECT 1", timeout=self.retry_seconds)

    async def _changed(self) -> bool:
        """Run `on_change`; False when it failed (it is tried again)."""
        try:
            await self.on_change()
            return True
        except asyncio.CancelledError:
            raise
        except StoreUnavailable as error:
            log.warning("following a version change: %s", error)
        except Exception:
            log.exception("following a version change failed")
        return False


def listener_for(backend: SQLBackend, on_change: OnChange) -> VersionListener | None:
    if isinstance(backend, PostgresBackend):
        return VersionListener(backend, on_change)
    return None
