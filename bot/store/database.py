"""The bot's database: jokes, model versions and training runs, on the embedded SQLite file
(aiosqlite, WAL) or, with DATABASE_URL, on PostgreSQL (asyncpg, pooled).

Only the bot side writes it. Every write is committed when its coroutine returns, so a joke
acknowledged to its author is already on disk. The SQL is written once for both databases and
runs through `bot.store.backends`, which also keeps concurrent coroutines apart: on SQLite they
take turns on the one connection (a transaction holds it for its whole block, so nobody's
statement slips into another's transaction); on PostgreSQL each transaction has a pooled
connection of its own, and `serialize()` makes check-then-write transactions wait for each
other across every process. Schema changes are numbered SQL files in `bot/store/migrations/`
(SQLite, tracked with `PRAGMA user_version`) and `migrations/postgresql/` (tracked in
`schema_migrations`), applied at start by one process while the others wait.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.store.backends import (
    SQLBackend,
    SQLiteBackend,
    migrations,
    open_backend,
    sql_timestamp,
)
from bot.store.notify import announce_version_change
from model.contracts.corpus import CorpusJoke
from model.contracts.jokes import JokeStatus
from model.contracts.manifest import version_name

log = logging.getLogger(__name__)
_VERSIONS = "model-versions"  # what changes of the serving version serialize on


@dataclass(frozen=True)
class AddResult:
    """Outcome of storing one joke: its id, or the id of the joke it duplicates."""

    id: int
    created: bool


@dataclass(frozen=True)
class Written:
    """What a write statement did: the rows it changed."""

    rowcount: int


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


def _migrations() -> list[tuple[int, str]]:
    """The SQLite migrations (number, script): what a backup's schema version is measured by."""
    return migrations("sqlite")


def _version_from_row(row: Any) -> ModelVersion:
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


def _run_from_row(row: Any) -> TrainingRun:
    values = dict(row)
    values["metrics"] = json.loads(values["metrics"] or "{}")
    return TrainingRun(**values)


class Database:
    """The jokebot database, shared by every coroutine of the process: `await Database.open(path)`
    for an SQLite file, `await Database.connect(url)` for DATABASE_URL (either kind).

    `transaction()` is all or nothing; a method that opens one may be called inside another's
    block (it becomes a savepoint). Every other statement runs on its own and commits at once.
    A task must not wait, inside a transaction, for another task that uses the database.
    """

    def __init__(self, backend: SQLBackend) -> None:
        self.backend = backend
        self.path = backend.path if isinstance(backend, SQLiteBackend) else None

    @classmethod
    async def open(cls, path: Path) -> Database:
        """The SQLite file at `path` (created, switched to WAL and migrated)."""
        return cls(await open_backend(f"sqlite://{Path(path).absolute()}"))

    @classmethod
    async def connect(cls, url: str, *, pool_size: int = 10, timeout: float = 2.0) -> Database:
        """The database DATABASE_URL names (`sqlite://…` or `postgresql://…`), migrated.
        Raises `backends.DatabaseUrlError` (one line) when PostgreSQL refuses or is not there."""
        return cls(await open_backend(url, pool_size=pool_size, timeout=timeout))

    @property
    def kind(self) -> str:
        return self.backend.kind

    async def close(self) -> None:
        await self.backend.close()

    def transaction(self) -> contextlib.AbstractAsyncContextManager[None]:
        """All or nothing; inside another transaction of the same task, a savepoint."""
        return self.backend.transaction()

    async def serialize(self, name: str) -> None:
        """Inside a transaction: no other transaction that serializes on `name`, in any
        process, runs until this one ends (PostgreSQL; SQLite has one writer at a time)."""
        await self.backend.serialize(name)

    async def execute(self, query: str, params: Sequence[Any] = ()) -> Written:
        """One statement; outside a transaction it commits on its own."""
        return Written(rowcount=await self.backend.execute(query, params))

    async def insert(self, query: str, params: Sequence[Any] = ()) -> int:
        """An INSERT of one row; the id it was given (`RETURNING id`, on both databases)."""
        return await self.backend.fetchval(f"{query} RETURNING id", params)

    async def fetchone(self, query: str, params: Sequence[Any] = ()) -> Any | None:
        """The first row of a query meant to return at most one (it is run to its end)."""
        return await self.backend.fetchrow(query, params)

    async def fetchall(self, query: str, params: Sequence[Any] = ()) -> list[Any]:
        return await self.backend.fetch(query, params)

    async def schema_version(self) -> int:
        return await self.backend.schema_version()

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
        while True:
            new_id = await self.backend.fetchval(
                "INSERT INTO jokes (text, norm_key, author_id, guild_id, source, status)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (norm_key) DO NOTHING RETURNING id",
                (text, key, author_id, guild_id, source, status),
            )
            if new_id is not None:
                return AddResult(id=new_id, created=True)
            found = await self.fetchone("SELECT id FROM jokes WHERE norm_key = ?", (key,))
            if found is not None:
                return AddResult(id=found[0], created=False)
            # the copy was deleted in between (by another task or process): try again

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
            await self.serialize(_VERSIONS)
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
            (active,) = await self.fetchone(
                "SELECT count(*) FROM model_versions WHERE active = TRUE"
            )
            if not active:
                await self.execute("UPDATE model_versions SET active = TRUE WHERE version = 0")

    async def versions(self) -> list[ModelVersion]:
        rows = await self.fetchall("SELECT * FROM model_versions ORDER BY version")
        return [_version_from_row(row) for row in rows]

    async def version(self, number: int) -> ModelVersion | None:
        row = await self.fetchone("SELECT * FROM model_versions WHERE version = ?", (number,))
        return _version_from_row(row) if row else None

    async def active_version(self) -> ModelVersion:
        row = await self.fetchone("SELECT * FROM model_versions WHERE active = TRUE")
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
            await self.serialize(_VERSIONS)
            await self.execute("UPDATE model_versions SET active = FALSE WHERE active = TRUE")
            written = await self.execute(
                "UPDATE model_versions SET active = TRUE WHERE version = ?", (version,)
            )
            if written.rowcount != 1:
                raise LookupError(f"there is no model version v{version}")
            # every process sharing the database serves it too (PostgreSQL; sent on commit)
            await announce_version_change(self.backend, version)

    # ---- training runs -----------------------------------------------------------------

    async def start_run(self, trigger: str, requested_by: int | None = None) -> int:
        return await self.insert(
            "INSERT INTO training_runs (trigger, requested_by) VALUES (?, ?)",
            (trigger, requested_by),
        )

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
    return sql_timestamp()
