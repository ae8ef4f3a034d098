"""The bot's SQLite database: jokes, model versions and training runs (aiosqlite, WAL).

Only the bot side writes it. Every write is committed when its coroutine returns, so a joke
acknowledged to its author is already on disk. The process's coroutines take turns on its one
connection (see `Database`), so concurrent transactions neither collide nor mix. Schema changes
are numbered SQL files in `bot/store/migrations/`, applied at start and tracked with
`PRAGMA user_version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import aiosqlite

from model.contracts.corpus import CorpusJoke
from model.contracts.jokes import JokeStatus
from model.contracts.manifest import version_name

log = logging.getLogger(__name__)
_MIGRATION_NAME = re.compile(r"^(\d{4})_[\w-]+\.sql$")


@dataclass(frozen=True)
class AddResult:
    """Outcome of storing one joke: its id, or the id of the joke it duplicates."""

    id: int
    created: bool


@dataclass(frozen=True)
class Written:
    """What a write statement did: rows changed, and the id of the row it inserted."""

    rowcount: int
    lastrowid: int | None


@dataclass(frozen=True)
class ModelVersion:
    version: int
    path: str
    parent_version: int | None
    created_at: str
    status: str
    active: bool
    metrics: dict[str, Any] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return version_name(self.version)

    def as_json(self) -> dict[str, Any]:
        """The `jokebot models --json` shape."""
        return {
            "version": self.version,
            "path": self.path,
            "created_at": self.created_at,
            "active": self.active,
            "status": self.status,
            "parent_version": self.parent_version,
            "metrics": self.metrics,
        }


@dataclass(frozen=True)
class TrainingRun:
    id: int
    started_at: str
    finished_at: str | None
    trigger: str
    requested_by: int | None
    status: str
    corpus_size: int | None
    corpus_hash: str | None
    last_joke_id: int | None
    candidate_version: int | None
    metrics: dict[str, Any]
    message: str | None


@contextlib.asynccontextmanager
async def _exclusive_file_lock(lock_path: Path) -> AsyncIterator[None]:
    """Hold an exclusive lock on ``lock_path`` across processes; wait for it in a thread."""
    with lock_path.open("w") as handle:
        await asyncio.to_thread(fcntl.flock, handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _migrations() -> list[tuple[int, str]]:
    folder = resources.files("bot.store") / "migrations"
    found = []
    for entry in folder.iterdir():
        match = _MIGRATION_NAME.match(entry.name)
        if match:
            found.append((int(match.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(found)


def _version_from_row(row: aiosqlite.Row) -> ModelVersion:
    return ModelVersion(
        version=row["version"],
        path=row["path"],
        parent_version=row["parent_version"],
        created_at=row["created_at"],
        status=row["status"],
        active=bool(row["active"]),
        metrics=json.loads(row["metrics"] or "{}"),
        manifest=json.loads(row["manifest"] or "{}"),
    )


def _run_from_row(row: aiosqlite.Row) -> TrainingRun:
    values = dict(row)
    values["metrics"] = json.loads(values["metrics"] or "{}")
    return TrainingRun(**values)


class Database:
    """One connection to the jokebot database, shared by every coroutine of the process; use
    `await Database.open(path)`.

    All work on the connection takes turns: `transaction()` holds the connection for its whole
    block, and every other statement (`execute`, `fetchone`, `fetchall`, and the methods built
    on them) waits for the turn too. So a write outside a transaction never lands inside
    another coroutine's open transaction (to be rolled back with it), and a read never sees
    another's uncommitted rows. The turn is re-entrant within one task: a method that opens a
    transaction may be called inside another's block (it becomes a savepoint).

    Why one lock rather than a connection per transaction: aiosqlite runs a connection's
    statements one after another on its one thread anyway, and SQLite lets one writer in at a
    time, so transactions would queue either way; dozens of connections of one process would
    instead make SQLite's file lock arbitrate between them (busy_timeout polling, "database is
    locked" under a burst) and open a connection and a thread per press. The price: the
    statements of a transaction no longer overlap with other coroutines' statements, each
    waiting a turn of the event loop, so keep transactions to few statements. Other processes
    on the same file (gateway shards, `jokebot import`) are kept apart by SQLite itself: BEGIN
    IMMEDIATE takes the write lock, busy_timeout waits for it.
    A task must not wait, inside a transaction, for another task that uses the database.
    """

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._db = connection
        self.path = path
        self._turns = asyncio.Lock()
        self._holder: asyncio.Task | None = None  # the task whose turn it is
        self._savepoints = 0

    @classmethod
    async def open(cls, path: Path) -> Database:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        connection = await aiosqlite.connect(path, isolation_level=None)
        connection.row_factory = aiosqlite.Row
        await connection.execute("PRAGMA busy_timeout=5000")
        await connection.execute("PRAGMA foreign_keys=ON")
        await connection.execute("PRAGMA synchronous=FULL")
        database = cls(connection, path)
        # processes that share one database (split gateway shards) may start together: one
        # switches it to WAL and migrates, the others then find both done (switching the
        # journal mode does not wait for a busy database, so it happens under the lock too)
        async with _exclusive_file_lock(path.with_name(path.name + ".migrate.lock")):
            await connection.execute("PRAGMA journal_mode=WAL")
            await database._migrate()
        return database

    async def close(self) -> None:
        async with self._turn():  # after the transaction in progress, if any
            await self._db.close()

    @contextlib.asynccontextmanager
    async def _turn(self) -> AsyncIterator[None]:
        """The connection to the current task alone until the block ends (re-entrant)."""
        task = asyncio.current_task()
        if task is not None and self._holder is task:
            yield
            return
        async with self._turns:
            self._holder = task
            try:
                yield
            finally:
                self._holder = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: all or nothing. Inside another
        transaction of the same task it is a savepoint: an error rolls back only this block."""
        async with self._turn():
            if self._db.in_transaction:
                async with self._savepoint():
                    yield
                return
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
                await self._db.execute("COMMIT")
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT leaves it open too
                    await self._db.execute("ROLLBACK")
                raise

    @contextlib.asynccontextmanager
    async def _savepoint(self) -> AsyncIterator[None]:
        self._savepoints += 1
        name = f"nested_{self._savepoints}"
        await self._db.execute(f"SAVEPOINT {name}")
        try:
            yield
        except BaseException:
            await self._db.execute(f"ROLLBACK TO {name}")
            raise
        finally:
            await self._db.execute(f"RELEASE {name}")
            self._savepoints -= 1

    async def execute(self, query: str, params: Sequence[Any] = ()) -> Written:
        """One statement in the caller's turn; outside a transaction it commits on its own."""
        async with self._turn():
            cursor = await self._db.execute(query, params)  # a write has run to its end here
            return Written(rowcount=cursor.rowcount, lastrowid=cursor.lastrowid)

    async def fetchone(self, query: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        """The first row of a query meant to return at most one (it is run to its end)."""
        rows = await self.fetchall(query, params)
        return rows[0] if rows else None

    async def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self._turn():
            return list(await self._db.execute_fetchall(query, params))

    async def _migrate(self) -> None:
        current = await self.schema_version()
        for number, script in _migrations():
            if number <= current:
                continue
            log.info("applying database migration %04d", number)
            async with self._turn():
                await self._db.executescript(
                    f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
                )

    async def schema_version(self) -> int:
        (version,) = await self.fetchone("PRAGMA user_version")
        return version

    # ---- jokes -------------------------------------------------------------------------

    async def add_joke(
        self,
        text: str,
        key: str,
        *,
        source: str,
        author_id: int | None = None,
        guild_id: int | None = None,
        status: JokeStatus = JokeStatus.APPROVED,
    ) -> AddResult:
        """Store a validated joke (committed on return), or report the joke it duplicates.

        `JokeStatus.PENDING` keeps it out of the corpus until a moderator approves it (a member's
        first jokes under MODERATION=new, or a joke the content policy flagged).
        """
        async with self._turn():
            while True:
                written = await self.execute(
                    "INSERT INTO jokes (text, norm_key, author_id, guild_id, source, status)"
                    " VALUES (?,?,?,?,?,?) ON CONFLICT (norm_key) DO NOTHING",
                    (text, key, author_id, guild_id, source, status),
                )
                if written.rowcount == 1:
                    return AddResult(id=written.lastrowid, created=True)
                found = await self.fetchone("SELECT id FROM jokes WHERE norm_key = ?", (key,))
                if found is not None:
                    return AddResult(id=found[0], created=False)
                # the copy was deleted in between (by another process): try again

    async def add_jokes(
        self,
        jokes: Iterable[tuple[str, str]],
        *,
        source: str = "import",
        statuses: Iterable[JokeStatus] | None = None,
    ) -> list[AddResult]:
        """Store many (text, key) pairs in one transaction; all or nothing. `statuses`, when
        given, has one status per joke (default: all approved)."""
        jokes = list(jokes)
        statuses = list(statuses) if statuses is not None else [JokeStatus.APPROVED] * len(jokes)
        results = []
        async with self.transaction():
            for (text, key), status in zip(jokes, statuses, strict=True):
                results.append(await self.add_joke(text, key, source=source, status=status))
        return results

    async def joke_keys(self, after_id: int = 0) -> list[tuple[int, str]]:
        """(id, norm_key) of the stored jokes with a higher id: what the near-duplicate index is
        built from, and caught up with (jokes stored by another process or another path)."""
        rows = await self.fetchall(
            "SELECT id, norm_key FROM jokes WHERE id > ? ORDER BY id", (after_id,)
        )
        return [(row[0], row[1]) for row in rows]

    async def joke_text(self, joke_id: int) -> str | None:
        """The text of a stored joke, or None when there is no such joke (any more)."""
        row = await self.fetchone("SELECT text FROM jokes WHERE id = ?", (joke_id,))
        return row[0] if row else None

    async def joke_text_and_key(self, joke_id: int) -> tuple[str, str] | None:
        """The text and key of a stored joke, or None when there is no such joke (any more)."""
        row = await self.fetchone("SELECT text, norm_key FROM jokes WHERE id = ?", (joke_id,))
        return (row[0], row[1]) if row else None

    async def joke_count(self) -> int:
        (count,) = await self.fetchone(
            "SELECT count(*) FROM jokes WHERE status = ?", (JokeStatus.APPROVED,)
        )
        return count

    async def corpus_by_source(self) -> dict[str, int]:
        """Approved jokes per source (`user`, `import`, `starter`, `community`)."""
        rows = await self.fetchall(
            "SELECT source, count(*) FROM jokes WHERE status = ? GROUP BY source",
            (JokeStatus.APPROVED,),
        )
        return {row[0]: row[1] for row in rows}

    async def has_jokes(self) -> bool:
        """Whether any joke was ever stored and kept (any status)."""
        return await self.fetchone("SELECT 1 FROM jokes LIMIT 1") is not None

    async def random_jokes(self, limit: int, max_chars: int = 140) -> list[str]:
        """Up to `limit` approved jokes of at most `max_chars`, at random (in-context examples)."""
        rows = await self.fetchall(
            "SELECT text FROM jokes WHERE status = ? AND length(text) <= ?"
            " ORDER BY random() LIMIT ?",
            (JokeStatus.APPROVED, max_chars, limit),
        )
        return [row[0] for row in rows]

    async def corpus(self) -> list[CorpusJoke]:
        """Approved jokes in id order: what a training run learns from."""
        rows = await self.fetchall(
            "SELECT id, text, norm_key FROM jokes WHERE status = ? ORDER BY id",
            (JokeStatus.APPROVED,),
        )
        return [CorpusJoke(row[0], row[1], row[2]) for row in rows]

    async def jokes_added_since(self, last_joke_id: int) -> int:
        """New approved jokes after `last_joke_id`; starter jokes are not news to the scheduler."""
        (count,) = await self.fetchone(
            "SELECT count(*) FROM jokes WHERE status = ? AND source != 'starter' AND id > ?",
            (JokeStatus.APPROVED, last_joke_id),
        )
        return count

    # ---- model versions ----------------------------------------------------------------

    async def ensure_base_version(self, path: str) -> None:
        """Record version 0 (the base model) and make it serve if nothing else does."""
        async with self.transaction():
            row = await self.fetchone("SELECT path FROM model_versions WHERE version = 0")
            if row is None:
                await self.execute(
                    "INSERT INTO model_versions (version, path, status) VALUES (0, ?, 'base')",
                    (path,),
                )
            elif row[0] != path:
                log.warning(
                    "MODEL_BASE changed from %s to %s; v0 now means the new base", row[0], path
                )
                await self.execute("UPDATE model_versions SET path = ? WHERE version = 0", (path,))
            (active,) = await self.fetchone("SELECT count(*) FROM model_versions WHERE active = 1")
            if not active:
                await self.execute("UPDATE model_versions SET active = 1 WHERE version = 0")

    async def versions(self) -> list[ModelVersion]:
        rows = await self.fetchall("SELECT * FROM model_versions ORDER BY version")
        return [_version_from_row(row) for row in rows]

    async def version(self, number: int) -> ModelVersion | None:
        row = await self.fetchone("SELECT * FROM model_versions WHERE version = ?", (number,))
        return _version_from_row(row) if row else None

    async def active_version(self) -> ModelVersion:
        row = await self.fetchone("SELECT * FROM model_versions WHERE active = 1")
        if row is None:
            raise LookupError("no active model version; call ensure_base_version first")
        return _version_from_row(row)

    async def next_version_number(self) -> int:
        (highest,) = await self.fetchone("SELECT coalesce(max(version), 0) FROM model_versions")
        return highest + 1

    async def add_version(
        self,
        version: int,
        path: str,
        *,
        parent_version: int | None,
        status: str,
        metrics: dict[str, Any],
        manifest: dict[str, Any],
    ) -> None:
        await self.execute(
            "INSERT INTO model_versions (version, path, parent_version, status, metrics, manifest)"
            " VALUES (?,?,?,?,?,?)",
            (version, path, parent_version, status, json.dumps(metrics), json.dumps(manifest)),
        )

    async def set_version_status(self, version: int, status: str) -> None:
        await self.execute(
            "UPDATE model_versions SET status = ? WHERE version = ?", (status, version)
        )

    async def set_active(self, version: int) -> None:
        """Make `version` the serving one, in one transaction (exactly one row is active)."""
        async with self.transaction():
            await self.execute("UPDATE model_versions SET active = 0 WHERE active = 1")
            written = await self.execute(
                "UPDATE model_versions SET active = 1 WHERE version = ?", (version,)
            )
            if written.rowcount != 1:
                raise LookupError(f"there is no model version v{version}")

    # ---- training runs -----------------------------------------------------------------

    async def start_run(self, trigger: str, requested_by: int | None = None) -> int:
        written = await self.execute(
            "INSERT INTO training_runs (trigger, requested_by) VALUES (?, ?)",
            (trigger, requested_by),
        )
        return written.lastrowid

    async def update_run(self, run_id: int, **values: Any) -> None:
        """Set columns of a run; `metrics` is stored as JSON."""
        if "metrics" in values:
            values["metrics"] = json.dumps(values["metrics"])
        if values.pop("finished", False):
            values["finished_at"] = _now_sql()
        assignments = ", ".join(f"{column} = ?" for column in values)
        await self.execute(
            f"UPDATE training_runs SET {assignments} WHERE id = ?", (*values.values(), run_id)
        )

    async def run(self, run_id: int) -> TrainingRun | None:
        row = await self.fetchone("SELECT * FROM training_runs WHERE id = ?", (run_id,))
        return _run_from_row(row) if row else None

    async def last_finished_run(self) -> TrainingRun | None:
        row = await self.fetchone(
            "SELECT * FROM training_runs WHERE status != 'running' ORDER BY id DESC LIMIT 1"
        )
        return _run_from_row(row) if row else None

    async def last_trained_joke_id(self) -> int:
        """Highest joke id that a completed (promoted or rejected) training run has seen."""
        (last,) = await self.fetchone(
            "SELECT coalesce(max(last_joke_id), 0) FROM training_runs"
            " WHERE status IN ('promoted', 'rejected')"
        )
        return last

    async def fail_interrupted_runs(self) -> int:
        """Runs still 'running' at start-up were interrupted by a stop: record them as failed."""
        written = await self.execute(
            "UPDATE training_runs SET status = 'failed', finished_at = ?,"
            " message = 'interrupted: jokebot stopped during the run' WHERE status = 'running'",
            (_now_sql(),),
        )
        return written.rowcount


def _now_sql() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
