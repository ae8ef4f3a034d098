"""A PostgreSQL connection of its own, kept by a background task until it is stopped.

Leadership (`bot.store.leader`) and version notifications (`bot.store.notify`) each hold a
connection outside the pool: the advisory lock and the LISTEN live and die with it. The task
that keeps it is the same for both: connect, use it, and when the database goes away (or the
connection ends) close what is left and connect again every `retry_seconds`. Subclasses say
what to do with a fresh connection and how to use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from bot.store.backends import PostgresBackend, is_connection_lost

CLOSE_WITHIN = 2.0  # seconds a polite close may take before the connection is cut


async def close_connection(connection: Any) -> None:
    """Close a connection of its own (from `PostgresBackend.connect`); cut it if that hangs
    (a server already gone does not answer)."""
    if connection is None or connection.is_closed():
        return
    with contextlib.suppress(Exception):
        await asyncio.wait_for(connection.close(), timeout=CLOSE_WITHIN)
    if not connection.is_closed():
        connection.terminate()


class ConnectionKeeper:
    """Keeps `_connection` open in a background task named `task_name` and calls `_use` on it
    in turn, pausing `retry_seconds` between turns; `_use` returning with the connection closed,
    or raising, ends that connection (`_lost`) and the next turn makes a new one."""

    task_name = "connection-keeper"
    failed = "the kept connection failed"  # logged with the traceback of an unexpected error
    unreachable = "kept connection"  # "<unreachable>: the database is not reachable (...)"

    def __init__(self, backend: PostgresBackend, *, retry_seconds: float) -> None:
        self.backend = backend
        self.retry_seconds = retry_seconds
        self._connection: Any = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._keep(), name=self.task_name)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._drop_connection()

    async def _connected(self, connection: Any) -> None:
        """A fresh connection, before its first `_use`."""

    async def _use(self, connection: Any) -> None:
        """One turn of work on the connection (it may run as long as the connection lives)."""

    def _lost(self) -> None:
        """The connection is gone (or going): forget what came with it."""

    async def _drop_connection(self) -> None:
        connection, self._connection = self._connection, None
        self._lost()
        await close_connection(connection)

    async def _drop_if_closed(self) -> None:
        if self._connection is not None and self._connection.is_closed():
            await self._drop_connection()

    async def _keep(self) -> None:
        log = logging.getLogger(type(self).__module__)  # the subclass's module speaks
        while True:
            try:
                await self._drop_if_closed()  # it may have ended during the pause
                if self._connection is None:
                    self._connection = await self.backend.connect()
                    await self._connected(self._connection)
                await self._use(self._connection)
                await self._drop_if_closed()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if not is_connection_lost(error):
                    log.exception(self.failed)
                else:
                    log.warning("%s: the database is not reachable (%s)", self.unreachable, error)
                await self._drop_connection()
            await asyncio.sleep(self.retry_seconds)
