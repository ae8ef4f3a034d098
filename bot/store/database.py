"""The bot's SQLite database: jokes, model versions and training runs (aiosqlite, WAL).

Only the bot side writes it. Every write is committed when its coroutine returns, so a joke
acknowledged to its author is already on disk. Schema changes are numbered SQL files in
`bot/store/migrations/`, applied at start and tracked with `PRAGMA user_version`.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import re
from collections.abc import AsyncIterator, Iterable
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
    """One connection to the jokebot database; use `await Database.open(path)`."""

    def __init__(self, connection: aiosqlite.Connection, path: Path) -> None:
        self._db = connection
        self.path = path

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
        await self._db.close()

    @property
    def connection(self) -> aiosqlite.Connection:
        """The connection, for stores of other concerns (e.g. `bot.store.community`)."""
        return self._db

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: all or nothing."""
        return self._transaction()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[None]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: all or nothing."""
        await self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            await self._db.execute("ROLLBACK")
            raise
        await self._db.execute("COMMIT")

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cursor:
            (current,) = await cursor.fetchone()
        for number, script in _migrations():
            if number <= current:
                continue
            log.info("applying database migration %04d", number)
            await self._db.executescript(
                f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;"
            )

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cursor:
            (version,) = await cursor.fetchone()
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
        cursor = await self._db.execute(
            "INSERT INTO jokes (text, norm_key, author_id, guild_id, source, status)"
            " VALUES (?,?,?,?,?,?) ON CONFLICT (norm_key) DO NOTHING",
            (text, key, author_id, guild_id, source, status),
        )
        if cursor.rowcount == 1:
            return AddResult(id=cursor.lastrowid, created=True)
        async with self._db.execute("SELECT id FROM jokes WHERE norm_key = ?", (key,)) as found:
            (existing,) = await found.fetchone()
        return AddResult(id=existing, created=False)

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
        async with self._transaction():
            for (text, key), status in zip(jokes, statuses, strict=True):
                results.append(await self.add_joke(text, key, source=source, status=status))
        return results

    async def joke_keys(self, after_id: int = 0) -> list[tuple[int, str]]:
        """(id, norm_key) of the stored jokes with a higher id: what the near-duplicate index is
        built from, and caught up with (jokes imported by another process)."""
        async with self._db.execute(
            "SELECT id, norm_key FROM jokes WHERE id > ? ORDER BY id", (after_id,)
        ) as cursor:
            return [(row[0], row[1]) async for row in cursor]

    async def joke_text(self, joke_id: int) -> str | None:
        """The text of a stored joke, or None when there is no such joke (any more)."""
        async with self._db.execute("SELECT text FROM jokes WHERE id = ?", (joke_id,)) as c:
            row = await c.fetchone()
        return row[0] if row else None

    async def joke_count(self) -> int:
        async with self._db.execute(
            "SELECT count(*) FROM jokes WHERE status = ?", (JokeStatus.APPROVED,)
        ) as c:
            (count,) = await c.fetchone()
        return count

    async def corpus_by_source(self) -> dict[str, int]:
        """Approved jokes per source (`user`, `import`, `starter`, `community`)."""
        async with self._db.execute(
            "SELECT source, count(*) FROM jokes WHERE status = ? GROUP BY source",
            (JokeStatus.APPROVED,),
        ) as cursor:
            return {row[0]: row[1] async for row in cursor}

    async def has_jokes(self) -> bool:
        """Whether any joke was ever stored and kept (any status)."""
        async with self._db.execute("SELECT 1 FROM jokes LIMIT 1") as cursor:
            return await cursor.fetchone() is not None

    async def random_jokes(self, limit: int, max_chars: int = 140) -> list[str]:
        """Up to `limit` approved jokes of at most `max_chars`, at random (in-context examples)."""
        async with self._db.execute(
            "SELECT text FROM jokes WHERE status = ? AND length(text) <= ?"
            " ORDER BY random() LIMIT ?",
            (JokeStatus.APPROVED, max_chars, limit),
        ) as cursor:
            return [row[0] async for row in cursor]

    async def corpus(self) -> list[CorpusJoke]:
        """Approved jokes in id order: what a training run learns from."""
        async with self._db.execute(
            "SELECT id, text, norm_key FROM jokes WHERE status = ? ORDER BY id",
            (JokeStatus.APPROVED,),
        ) as cursor:
            return [CorpusJoke(row[0], row[1], row[2]) async for row in cursor]

    async def jokes_added_since(self, last_joke_id: int) -> int:
        """New approved jokes after `last_joke_id`; starter jokes are not news to the scheduler."""
        async with self._db.execute(
            "SELECT count(*) FROM jokes WHERE status = ? AND source != 'starter' AND id > ?",
            (JokeStatus.APPROVED, last_joke_id),
        ) as cursor:
            (count,) = await cursor.fetchone()
        return count

    # ---- model versions ----------------------------------------------------------------

    async def ensure_base_version(self, path: str) -> None:
        """Record version 0 (the base model) and make it serve if nothing else does."""
        async with self._transaction():
            async with self._db.execute(
                "SELECT path FROM model_versions WHERE version = 0"
            ) as cursor:
                row = await cursor.fetchone()
            if row is None:
                await self._db.execute(
                    "INSERT INTO model_versions (version, path, status) VALUES (0, ?, 'base')",
                    (path,),
                )
            elif row[0] != path:
                log.warning(
                    "MODEL_BASE changed from %s to %s; v0 now means the new base", row[0], path
                )
                await self._db.execute(
                    "UPDATE model_versions SET path = ? WHERE version = 0", (path,)
                )
            async with self._db.execute(
                "SELECT count(*) FROM model_versions WHERE active = 1"
            ) as cursor:
                (active,) = await cursor.fetchone()
            if not active:
                await self._db.execute("UPDATE model_versions SET active = 1 WHERE version = 0")

    async def versions(self) -> list[ModelVersion]:
        async with self._db.execute("SELECT * FROM model_versions ORDER BY version") as cursor:
            return [_version_from_row(row) async for row in cursor]

    async def version(self, number: int) -> ModelVersion | None:
        async with self._db.execute(
            "SELECT * FROM model_versions WHERE version = ?", (number,)
        ) as cursor:
            row = await cursor.fetchone()
        return _version_from_row(row) if row else None

    async def active_version(self) -> ModelVersion:
        async with self._db.execute("SELECT * FROM model_versions WHERE active = 1") as cursor:
            row = await cursor.fetchone()
        if row is None:
            raise LookupError("no active model version; call ensure_base_version first")
        return _version_from_row(row)

    async def next_version_number(self) -> int:
        async with self._db.execute("SELECT coalesce(max(version), 0) FROM model_versions") as c:
            (highest,) = await c.fetchone()
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
        await self._db.execute(
            "INSERT INTO model_versions (version, path, parent_version, status, metrics, manifest)"
            " VALUES (?,?,?,?,?,?)",
            (version, path, parent_version, status, json.dumps(metrics), json.dumps(manifest)),
        )

    async def set_version_status(self, version: int, status: str) -> None:
        await self._db.execute(
            "UPDATE model_versions SET status = ? WHERE version = ?", (status, version)
        )

    async def set_active(self, version: int) -> None:
        """Make `version` the serving one, in one transaction (exactly one row is active)."""
        async with self._transaction():
            await self._db.execute("UPDATE model_versions SET active = 0 WHERE active = 1")
            cursor = await self._db.execute(
                "UPDATE model_versions SET active = 1 WHERE version = ?", (version,)
            )
            if cursor.rowcount != 1:
                raise LookupError(f"there is no model version v{version}")

    # ---- training runs -----------------------------------------------------------------

    async def start_run(self, trigger: str, requested_by: int | None = None) -> int:
        cursor = await self._db.execute(
            "INSERT INTO training_runs (trigger, requested_by) VALUES (?, ?)",
            (trigger, requested_by),
        )
        return cursor.lastrowid

    async def update_run(self, run_id: int, **values: Any) -> None:
        """Set columns of a run; `metrics` is stored as JSON."""
        if "metrics" in values:
            values["metrics"] = json.dumps(values["metrics"])
        if values.pop("finished", False):
            values["finished_at"] = _now_sql()
        assignments = ", ".join(f"{column} = ?" for column in values)
        await self._db.execute(
            f"UPDATE training_runs SET {assignments} WHERE id = ?", (*values.values(), run_id)
        )

    async def run(self, run_id: int) -> TrainingRun | None:
        async with self._db.execute("SELECT * FROM training_runs WHERE id = ?", (run_id,)) as c:
            row = await c.fetchone()
        return _run_from_row(row) if row else None

    async def last_finished_run(self) -> TrainingRun | None:
        async with self._db.execute(
            "SELECT * FROM training_runs WHERE status != 'running' ORDER BY id DESC LIMIT 1"
        ) as cursor:
            row = await cursor.fetchone()
        return _run_from_row(row) if row else None

    async def last_trained_joke_id(self) -> int:
        """Highest joke id that a completed (promoted or rejected) training run has seen."""
        async with self._db.execute(
            "SELECT coalesce(max(last_joke_id), 0) FROM training_runs"
            " WHERE status IN ('promoted', 'rejected')"
        ) as cursor:
            (last,) = await cursor.fetchone()
        return last

    async def fail_interrupted_runs(self) -> int:
        """Runs still 'running' at start-up were interrupted by a stop: record them as failed."""
        cursor = await self._db.execute(
            "UPDATE training_runs SET status = 'failed', finished_at = ?,"
            " message = 'interrupted: jokebot stopped during the run' WHERE status = 'running'",
            (_now_sql(),),
        )
        return cursor.rowcount


def _now_sql() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"
