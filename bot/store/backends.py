"""The two databases jokebot runs on, behind one small interface: the embedded SQLite file
(aiosqlite, one connection) and PostgreSQL (asyncpg, a pool of connections).

The stores write their SQL once, in the dialect both understand: `?` placeholders (turned
into `$1, $2, …` for PostgreSQL), `RETURNING id` rather than a last-row id, `TRUE`/`FALSE`,
`ON CONFLICT … DO UPDATE/NOTHING`, `CASE WHEN` inside aggregates, `lower()` for
case-insensitive matching. Timestamps read as the same text on both
(`2025-01-31T12:00:00.123Z`); PostgreSQL stores them as `timestamptz`.

`transaction()` is all or nothing, and a statement run while the calling task has a
transaction open belongs to it (a context variable remembers which connection is the task's);
a nested `transaction()` is a savepoint. On SQLite the one connection is shared by every task,
so one task at a time talks to it (an asyncio lock held for a whole transaction): nobody's
statement slips into another's transaction. On PostgreSQL each transaction has its own pooled
connection; `serialize(name)` makes transactions that must not interleave (check, then insert)
wait for each other across every process.

Losing the PostgreSQL server (a restart, a network cut) raises `StoreUnavailable` at once;
the pool reconnects by itself when the server is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import fcntl
import hashlib
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import aiosqlite

log = logging.getLogger(__name__)

Kind = Literal["sqlite", "postgresql"]
Params = Sequence[Any]
_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")
_SAVEPOINT = "jokebot_sp"


class StoreUnavailable(Exception):
    """The database cannot be reached right now (restarting, network cut): try again soon."""


class DatabaseUrlError(Exception):
    """DATABASE_URL names a database jokebot cannot use; the message says why, in one line."""


def advisory_key(name: str) -> int:
    """A stable 64-bit key for a PostgreSQL advisory lock named `name`."""
    return int.from_bytes(
        hashlib.sha256(f"jokebot:{name}".encode()).digest()[:8], "big", signed=True
    )


def migrations(kind: Kind) -> list[tuple[int, str]]:
    """(number, script) of the numbered migrations for one kind of database, in order.

    SQLite's are `migrations/NNNN_*.sql`; PostgreSQL's are `migrations/postgresql/NNNN_*.sql`
    with the same numbers, so a schema version means the same tables on both."""
    folder = resources.files("bot.store") / "migrations"
    if kind == "postgresql":
        folder = folder / "postgresql"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


@lru_cache(maxsize=1024)
def numbered_placeholders(query: str) -> str:
    """`?` → `$1, $2, …` (PostgreSQL's placeholders), leaving quoted text alone."""
    out, number, quote = [], 0, ""
    for char in query:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return "".join(out)


def sql_timestamp(moment: datetime | None = None) -> str:
    """The text a timestamp reads as on both databases: UTC, milliseconds, a `Z`."""
    moment = (moment or datetime.now(UTC)).astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class _Transaction:
    """An open transaction: on which backend and connection, how deep, and whose (a task it
    starts inherits the context variable, but not the transaction)."""

    backend: SQLBackend
    connection: Any
    depth: int
    task: asyncio.Task | None


# the calling task's open transactions, one per backend (a copy reads one while writing another)
_current: contextvars.ContextVar[tuple[_Transaction, ...]] = contextvars.ContextVar(
    "jokebot_transactions", default=()
)


def _enter(transaction: _Transaction) -> contextvars.Token:
    others = tuple(t for t in _current.get() if t.backend is not transaction.backend)
    return _current.set((*others, transaction))


class SQLBackend(ABC):
    """What the stores need from a database; `open_backend(url)` gives the right one."""

    kind: Kind

    @abstractmethod
    async def execute(self, query: str, params: Params = ()) -> int:
        """Run a statement; the number of rows it changed."""

    @abstractmethod
    async def fetch(self, query: str, params: Params = ()) -> list[Any]:
        """All rows (each readable by position and by column name)."""

    async def fetchrow(self, query: str, params: Params = ()) -> Any | None:
        rows = await self.fetch(query, params)
        return rows[0] if rows else None

    async def fetchval(self, query: str, params: Params = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = await self.fetchrow(query, params)
        return None if row is None else row[0]

    @abstractmethod
    async def executemany(self, query: str, rows: Iterable[Params]) -> None:
        """One statement for many parameter rows (bulk copies)."""

    @abstractmethod
    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """All or nothing; nested, a savepoint."""

    async def serialize(self, name: str) -> None:
        """Inside a transaction: wait until no other transaction holds `name`, then hold it to
        the end of this one (across processes). SQLite's writers are serialized already."""
        return None

    @abstractmethod
    async def schema_version(self) -> int:
        """The number of the last migration applied."""

    @abstractmethod
    async def migrate(self) -> None:
        """Apply the migrations this database has not seen (one process at a time)."""

    @abstractmethod
    async def close(self) -> None: ...

    @property
    @abstractmethod
    def description(self) -> str:
        """Where the data lives, without a password (logs, `jokebot db status`)."""

    def _own_transaction(self) -> _Transaction | None:
        task = asyncio.current_task()
        return next((t for t in _current.get() if t.backend is self and t.task is task), None)


# ---- SQLite ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def exclusive_file_lock(lock_path: Path) -> AsyncIterator[None]:
    """Hold an exclusive lock on `lock_path` across processes; wait for it in a thread."""
    with lock_path.open("w") as handle:
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class SQLiteBackend(SQLBackend):
    """The embedded SQLite file: one aiosqlite connection in WAL mode, shared by every task."""

    kind: Kind = "sqlite"

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, path: Path) -> SQLiteBackend:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path, isolation_level=None)
        connection.row_factory = aiosqlite.Row
        await connection.execute("PRAGMA busy_timeout=5000")
        await connection.execute("PRAGMA foreign_keys=ON")
        await connection.execute("PRAGMA synchronous=FULL")
        return cls(connection, path)

    @property
    def description(self) -> str:
        return f"SQLite file {self.path}"

    @property
    def connection(self) -> aiosqlite.Connection:
        """The raw connection, for SQLite-only work (the backup API, `db copy`)."""
        return self._db

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """The connection for one statement: the task's own transaction, or a turn alone."""
        if self._own_transaction() is not None:
            yield
            return
        async with self._lock:
            yield

    async def execute(self, query: str, params: Params = ()) -> int:
        async with self._turn():
            cursor = await self._db.execute(query, tuple(params))
            count = cursor.rowcount
            await cursor.close()
            return count

    async def fetch(self, query: str, params: Params = ()) -> list[Any]:
        async with self._turn(), self._db.execute(query, tuple(params)) as cursor:
            return list(await cursor.fetchall())

    async def executemany(self, query: str, rows: Iterable[Params]) -> None:
        async with self._turn():
            await self._db.executemany(query, [tuple(row) for row in rows])

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._transaction()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        outer = self._own_transaction()
        if outer is not None:  # nested: a savepoint of the task's transaction
            name = f"{_SAVEPOINT}{outer.depth + 1}"
            await self._db.execute(f"SAVEPOINT {name}")
            token = _enter(_Transaction(self, self._db, outer.depth + 1, outer.task))
            try:
                yield
            except BaseException:
                await self._db.execute(f"ROLLBACK TO {name}")
                await self._db.execute(f"RELEASE {name}")
                raise
            finally:
                _current.reset(token)
            await self._db.execute(f"RELEASE {name}")
            return
        async with self._lock:
            await self._db.execute("BEGIN IMMEDIATE")
            token = _enter(_Transaction(self, self._db, 0, asyncio.current_task()))
            try:
                yield
            except BaseException:
                await asyncio.shield(self._db.execute("ROLLBACK"))
                raise
            finally:
                _current.reset(token)
            await self._db.execute("COMMIT")

    async def schema_version(self) -> int:
        return await self.fetchval("PRAGMA user_version")

    async def migrate(self) -> None:
        # processes that share one database (split gateway shards) may start together: one
        # switches it to WAL and migrates, the others then find both done (switching the
        # journal mode does not wait for a busy database, so it happens under the lock too)
        lock = self.path.with_name(self.path.name + ".migrate.lock")
        async with exclusive_file_lock(lock), self._lock:
            await self._db.execute("PRAGMA journal_mode=WAL")
            async with self._db.execute("PRAGMA user_version") as cursor:
                (current,) = await cursor.fetchone()
            for number, script in migrations("sqlite"):
                if number <= current:
                    continue
                log.info("applying database migration %04d", number)
                await self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                )

    async def close(self) -> None:
        await self._db.close()


# ---- PostgreSQL ------------------------------------------------------------------------------


def is_connection_lost(error: BaseException) -> bool:
    """Whether `error` means the PostgreSQL server is out of reach (not a bad statement)."""
    import asyncpg

    lost = (
        OSError,
        TimeoutError,
        asyncpg.PostgresConnectionError,  # class 08: connection exceptions
        asyncpg.CannotConnectNowError,  # starting up, shutting down
        asyncpg.AdminShutdownError,
        asyncpg.CrashShutdownError,
        asyncpg.TooManyConnectionsError,
    )
    if isinstance(error, lost):
        return True
    if isinstance(error, asyncpg.InternalClientError):
        # a connection the server dropped mid-operation, reused: "cannot switch to state 12;
        # another operation is in progress" (seen while PostgreSQL restarts under load)
        return True
    return isinstance(error, asyncpg.InterfaceError) and "closed" in str(error)


@contextlib.asynccontextmanager
async def unavailable_as_store_error() -> AsyncIterator[None]:
    """Turn a lost PostgreSQL connection into StoreUnavailable; other errors pass as they are."""
    try:
        yield
    except Exception as error:
        if is_connection_lost(error):
            reason = str(error).strip() or type(error).__name__
            raise StoreUnavailable(f"the database is not reachable ({reason})") from error
        raise


def _rowcount(status: str) -> int:
    """asyncpg's command tag (`UPDATE 3`, `INSERT 0 1`) → the number of rows."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


def _decode_timestamp(text: str) -> str:
    return sql_timestamp(datetime.fromisoformat(text))


def _encode_timestamp(value: str | datetime) -> str:
    return value.isoformat() if isinstance(value, datetime) else value


def redact_url(url: str) -> str:
    """The URL with its password replaced by `***`, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()


class PostgresBackend(SQLBackend):
    """PostgreSQL through an asyncpg pool; a transaction holds one pooled connection."""

    kind: Kind = "postgresql"

    def __init__(self, pool: Any, url: str, *, timeout: float) -> None:
        self._pool = pool
        self.url = url
        self.timeout = timeout

    @classmethod
    async def open(
        cls, url: str, *, pool_size: int = 10, timeout: float = 2.0, command_timeout: float = 30.0
    ) -> PostgresBackend:
        """A pool on `url`; raises DatabaseUrlError when the server refuses or is not there."""
        import asyncpg

        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=1,
                max_size=pool_size,
                timeout=timeout,
                command_timeout=command_timeout,
                init=setup_connection,
                server_settings=server_settings(),
            )
        except (asyncpg.PostgresError, OSError, TimeoutError, ValueError) as error:
            reason = (
                str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            )
            raise DatabaseUrlError(
                f"cannot use the PostgreSQL database at {redact_url(url)}: {reason}"
            ) from None
        return cls(pool, url, timeout=timeout)

    @property
    def description(self) -> str:
        return f"PostgreSQL {redact_url(self.url)}"

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Any]:
        """The task's transaction connection, or one from the pool for the time of the block."""
        own = self._own_transaction()
        if own is not None:
            yield own.connection
            return
        async with unavailable_as_store_error():
            conn = await self._pool.acquire(timeout=self.timeout)
        try:
            yield conn
        finally:  # a broken connection fails its reset here and the pool closes it
            with contextlib.suppress(Exception):
                await self._pool.release(conn)

    async def execute(self, query: str, params: Params = ()) -> int:
        async with self.connection() as conn, unavailable_as_store_error():
            return _rowcount(await conn.execute(numbered_placeholders(query), *params))

    async def fetch(self, query: str, params: Params = ()) -> list[Any]:
        async with self.connection() as conn, unavailable_as_store_error():
            return await conn.fetch(numbered_placeholders(query), *params)

    async def executemany(self, query: str, rows: Iterable[Params]) -> None:
        async with self.connection() as conn, unavailable_as_store_error():
            await conn.executemany(numbered_placeholders(query), [tuple(row) for row in rows])

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        return self._transaction()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        outer = self._own_transaction()
        async with self.connection() as conn:
            transaction = conn.transaction()  # nested: asyncpg makes it a savepoint
            async with unavailable_as_store_error():
                await transaction.start()
            depth = 0 if outer is None else outer.depth + 1
            token = _enter(_Transaction(self, conn, depth, asyncio.current_task()))
            try:
                yield
            except BaseException:
                _current.reset(token)
                with contextlib.suppress(Exception):
                    await asyncio.shield(transaction.rollback())
                raise
            _current.reset(token)
            async with unavailable_as_store_error():
                await transaction.commit()

    async def serialize(self, name: str) -> None:
        if self._own_transaction() is None:
            raise RuntimeError("serialize() belongs inside a transaction")
        await self.execute("SELECT pg_advisory_xact_lock(?)", (advisory_key(name),))

    async def schema_version(self) -> int:
        exists = await self.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
        if not exists:
            return 0
        return await self.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")

    async def migrate(self) -> None:
        """Under an advisory lock: the first process migrates, the others wait and find it done."""
        async with self.connection() as conn, unavailable_as_store_error():
            await conn.execute("SELECT pg_advisory_lock($1)", advisory_key("migrate"))
            try:
                await conn.execute(
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version integer PRIMARY KEY,"
                    " applied_at timestamptz NOT NULL DEFAULT now())"
                )
                applied = {r[0] for r in await conn.fetch("SELECT version FROM schema_migrations")}
                for number, script in migrations("postgresql"):
                    if number in applied:
                        continue
                    log.info("applying database migration %04d (PostgreSQL)", number)
                    async with conn.transaction():
                        await conn.execute(script)
                        await conn.execute(
                            "INSERT INTO schema_migrations (version) VALUES ($1)", number
                        )
            finally:
                await conn.execute("SELECT pg_advisory_unlock($1)", advisory_key("migrate"))

    async def row_counts(self) -> dict[str, int]:
        """Rows of every jokebot table (`jokebot db status`)."""
        tables = await self.fetch(
            "SELECT table_name FROM information_schema.tables WHERE table_schema ="
            " current_schema() AND table_type = 'BASE TABLE' AND table_name <> 'schema_migrations'"
            " ORDER BY table_name"
        )
        return {row[0]: await self.fetchval(f'SELECT count(*) FROM "{row[0]}"') for row in tables}

    async def connect(self) -> Any:
        """A connection of its own, outside the pool (leadership, notifications)."""
        import asyncpg

        return await asyncpg.connect(
            self.url, timeout=self.timeout, server_settings=server_settings()
        )

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self._pool.close(), timeout=5)
        except Exception:  # a server already gone: nothing to close politely
            self._pool.terminate()


def server_settings() -> dict[str, str]:
    """What every jokebot connection to PostgreSQL sets: UTC timestamps, a name in
    pg_stat_activity that says which process it is (`jokebot/<pid>`), and TCP keepalives so
    that the server notices a vanished process within about 25 s (its advisory locks go)."""
    return {
        "TimeZone": "UTC",
        "DateStyle": "ISO",
        "application_name": f"jokebot/{os.getpid()}",
        "tcp_keepalives_idle": "10",
        "tcp_keepalives_interval": "5",
        "tcp_keepalives_count": "3",
    }


async def setup_connection(connection: Any) -> None:
    """Timestamps travel as text in SQLite's form, so both databases read the same."""
    await connection.set_type_codec(
        "timestamptz",
        schema="pg_catalog",
        encoder=_encode_timestamp,
        decoder=_decode_timestamp,
        format="text",
    )


# ---- choosing --------------------------------------------------------------------------------


def url_kind(url: str) -> Kind:
    scheme = urlsplit(url).scheme.lower()
    if scheme in ("postgresql", "postgres"):
        return "postgresql"
    if scheme == "sqlite":
        return "sqlite"
    raise DatabaseUrlError(f"unknown kind of database {scheme!r}")


def sqlite_path(url: str) -> Path:
    """`sqlite:///abs/path` or `sqlite:relative/path` → the file."""
    rest = url.split(":", 1)[1]
    if rest.startswith("//"):
        rest = rest[2:]
    return Path(rest)


async def open_backend(
    url: str, *, pool_size: int = 10, timeout: float = 2.0, command_timeout: float = 30.0
) -> SQLBackend:
    """The backend for `url` (`sqlite:///path` or `postgresql://…`), migrated to the newest
    schema."""
    if url_kind(url) == "postgresql":
        backend: SQLBackend = await PostgresBackend.open(
            url, pool_size=pool_size, timeout=timeout, command_timeout=command_timeout
        )
    else:
        backend = await SQLiteBackend.open(sqlite_path(url))
    try:
        await backend.migrate()
    except BaseException:
        await backend.close()
        raise
    return backend
