"""Backups of the SQLite database: online copies, checked, pruned, and restored.

A backup uses SQLite's online backup API from a read transaction held open for the whole copy,
so it is one consistent moment of the database while the bot goes on writing (WAL readers do
not block writers). The copy is written under a hidden temporary name, checked with
`PRAGMA integrity_check` and for being a jokebot database, then published under its final
name: a backup file that exists is complete.

Restore needs the database to itself. Every `jokebot run` holds a shared lock on `run.lock` in
the data directory for its whole life (see `data_dir_in_use`); restore takes it exclusively,
so it refuses while any bot runs there. A killed process's lock goes with it.

Synchronous on purpose (plain `sqlite3`): callers in the bot run it in a thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from bot.store.database import _migrations

RUN_LOCK_NAME = "run.lock"
BACKUP_PREFIX = "jokebot-"
BACKUP_SUFFIX = ".sqlite3"
PAGES_PER_STEP = 4096  # 16 MiB of 4 KiB pages between progress reports
BUSY_TIMEOUT_SECONDS = 5.0
STALE_PARTIAL_SECONDS = 24 * 3600  # a temporary copy this old was left by a crash
JOKEBOT_TABLES = frozenset({"jokes", "model_versions", "training_runs"})

Progress = Callable[[int, int, int], object]  # sqlite3's (status, remaining, total) pages


class BackupError(Exception):
    """A backup or restore could not be done; the message says why in one line."""


class DataDirInUse(BackupError):
    """A `jokebot run` (or a restore) holds the data directory."""


@dataclass(frozen=True)
class DatabaseFacts:
    """What a checked database holds: its schema version and rows per table."""

    path: Path
    schema_version: int
    row_counts: dict[str, int]


def latest_schema_version() -> int:
    """The highest migration this jokebot knows: a database newer than this is refused."""
    return max(number for number, _ in _migrations())


# ---- the run lock --------------------------------------------------------------------------


def run_lock_path(data_dir: Path) -> Path:
    return Path(data_dir) / RUN_LOCK_NAME


@contextlib.contextmanager
def data_dir_in_use(data_dir: Path) -> Iterator[None]:
    """Held by a serving process for its whole life: shared, so several processes (split
    gateway shards) may hold it together; a restore cannot start while any of them does."""
    with _flock(run_lock_path(data_dir), fcntl.LOCK_SH) as taken:
        if not taken:
            raise DataDirInUse(f"a restore is under way on {data_dir}; start again when it is done")
        yield


@contextlib.contextmanager
def data_dir_exclusive(data_dir: Path) -> Iterator[None]:
    """The data directory to this process alone (restore), or DataDirInUse at once."""
    with _flock(run_lock_path(data_dir), fcntl.LOCK_EX) as taken:
        if not taken:
            raise DataDirInUse(
                f"a jokebot process is running on {data_dir}: stop it first (restore replaces"
                " the database under it)"
            )
        yield


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[bool]:
    """Try `mode` (LOCK_SH or LOCK_EX) without waiting; yield whether it was taken."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, mode | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ---- checking ------------------------------------------------------------------------------


def _read_only(path: Path) -> sqlite3.Connection:
    """A read-only connection: it never checkpoints or changes the file it reads."""
    uri = f"{Path(path).resolve().as_uri()}?mode=ro"
    connection = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_SECONDS)
    connection.isolation_level = None  # transactions only where this module says BEGIN
    return connection


def inspect_database(
    path: Path, *, check_integrity: bool = True, shown_as: str | None = None
) -> DatabaseFacts:
    """Schema version and row counts of a jokebot database, after `PRAGMA integrity_check`.

    Raises BackupError (one line, naming the file `shown_as` or its path) for a missing,
    damaged or foreign file, or one written by a newer jokebot. An older schema is fine: the
    next start migrates it."""
    path = Path(path)
    name = shown_as or str(path)
    if not path.is_file():
        raise BackupError(f"{name} does not exist")
    try:
        connection = _read_only(path)
        try:
            if check_integrity:
                problems = [row[0] for row in connection.execute("PRAGMA integrity_check")]
                if problems != ["ok"]:
                    raise BackupError(f"{name} is damaged: integrity_check says {problems[0]}")
            (version,) = connection.execute("PRAGMA user_version").fetchone()
            tables = [
                row[0]
                for row in connection.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                    " AND name NOT LIKE 'sqlite_%' ORDER BY name"
                )
            ]
            if version < 1 or not JOKEBOT_TABLES.issubset(tables):
                raise BackupError(f"{name} is an SQLite database, but not a jokebot one")
            latest = latest_schema_version()
            if version > latest:
                raise BackupError(
                    f"{name} has schema version {version}, newer than this jokebot knows"
                    f" ({latest}): upgrade jokebot first"
                )
            counts = {
                table: connection.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]
                for table in tables
            }
        finally:
            connection.close()
    except sqlite3.DatabaseError as error:  # "file is not a database", "malformed", ...
        raise BackupError(f"{name} is not a usable SQLite database ({error})") from None
    return DatabaseFacts(path=path, schema_version=version, row_counts=counts)


# ---- backing up ----------------------------------------------------------------------------


def backup_database(
    database: Path, target: Path, *, progress: Progress | None = None
) -> DatabaseFacts:
    """Copy `database` to `target` online, check the copy, then publish it; never overwrite.

    `progress` is called after each step of the copy with (status, remaining, total) pages;
    the copy is of the moment it started, whatever is written meanwhile."""
    database, target = Path(database), Path(target)
    if not database.is_file():
        raise BackupError(f"there is no database at {database}")
    if target.exists():
        raise BackupError(f"{target} already exists; choose another name")
    partial = _partial_name(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        _copy_consistently(database, partial, progress)
        facts = inspect_database(partial, shown_as=f"the copy of {database}")
        _publish(partial, target)
    except sqlite3.Error as error:
        raise BackupError(f"the backup of {database} failed: {error}") from None
    except OSError as error:
        where = error.filename or target
        raise BackupError(f"cannot write {where}: {error.strerror or error}") from None
    finally:
        with contextlib.suppress(OSError):
            partial.unlink(missing_ok=True)
    return replace(facts, path=target)


def _copy_consistently(source_path: Path, target: Path, progress: Progress | None) -> None:
    """SQLite's backup API from one read transaction: every page from the same snapshot
    (without it, a write by another process between steps restarts the copy)."""
    source = _read_only(source_path)
    try:
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts
        copy = sqlite3.connect(target)
        try:
            source.backup(copy, pages=PAGES_PER_STEP, progress=progress)
            copy.execute("PRAGMA journal_mode=DELETE")  # one self-contained file, no -wal
        finally:
            copy.close()
        source.execute("COMMIT")
    finally:
        source.close()


def _partial_name(target: Path) -> Path:
    """Hidden and unique to this thread: never mistaken for a backup, never shared."""
    return target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")


def _publish(partial: Path, target: Path) -> None:
    """Make the checked copy durable, then give it its name without replacing a file there
    (a hard link fails on an existing name, unlike a rename)."""
    with partial.open("rb") as handle:
        os.fsync(handle.fileno())
    try:
        os.link(partial, target)
    except FileExistsError:
        raise BackupError(f"{target} already exists; choose another name") from None
    except OSError:  # a file system without hard links (a FAT-formatted USB stick)
        if target.exists():
            raise BackupError(f"{target} already exists; choose another name") from None
        os.rename(partial, target)
    _fsync_folder(target.parent)


def _fsync_folder(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def backup_name(moment: datetime) -> str:
    """`jokebot-20250131T033000Z.sqlite3`: names sort in time order."""
    return f"{BACKUP_PREFIX}{moment.astimezone(UTC):%Y%m%dT%H%M%SZ}{BACKUP_SUFFIX}"


def backups_in(folder: Path) -> list[Path]:
    """The backups in `folder`, oldest first (temporary copies are hidden and not listed)."""
    if not folder.is_dir():
        return []
    return sorted(folder.glob(f"{BACKUP_PREFIX}*{BACKUP_SUFFIX}"))


def scheduled_backup(
    database: Path, folder: Path, keep: int, *, slot: datetime | None = None
) -> DatabaseFacts | None:
    """The backup of one scheduled time (`slot`, this minute by default), then only the
    newest `keep` backups stay. Named after the slot, so processes sharing a data directory
    (split gateway shards) that all fire publish one backup: the others return None."""
    slot = (slot or datetime.now(UTC)).replace(second=0, microsecond=0)
    try:
        made = backup_database(database, Path(folder) / backup_name(slot))
    except BackupError:
        if (Path(folder) / backup_name(slot)).exists():
            return None  # another process made this slot's backup
        raise
    prune_backups(folder, keep)
    return made


def prune_backups(folder: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` backups, and temporary copies a crash left behind."""
    folder = Path(folder)
    backups = backups_in(folder)
    removed = backups[: max(len(backups) - keep, 0)]
    now = time.time()
    for leftover in folder.glob(f".{BACKUP_PREFIX}*.partial"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > STALE_PARTIAL_SECONDS:
                removed.append(leftover)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


# ---- restoring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Restored:
    facts: DatabaseFacts  # what the database now holds
    kept_aside: Path | None  # the database before the restore (None: there was none)


def restore_database(source: Path, database: Path, data_dir: Path) -> Restored:
    """Replace `database` with a checked copy of `source`; the current one is kept aside.

    Refuses a damaged or foreign file, or one from a newer jokebot, before touching anything,
    and refuses while a jokebot process runs on `data_dir`."""
    source, database = Path(source), Path(database)
    inspect_database(source)
    with data_dir_exclusive(data_dir):
        staged = database.with_name(f".{database.name}.restore.partial")
        staged.unlink(missing_ok=True)
        try:
            _copy_consistently(source, staged, None)
            facts = inspect_database(staged, shown_as=f"the copy of {source}")
            kept = _keep_aside(database)
            for sidecar in _sidecars(database):  # a stale -wal would replay onto the new file
                sidecar.unlink(missing_ok=True)
            with staged.open("rb") as handle:
                os.fsync(handle.fileno())
            os.replace(staged, database)
            _fsync_folder(database.parent)
        except sqlite3.Error as error:
            raise BackupError(f"the restore from {source} failed: {error}") from None
        except OSError as error:
            raise BackupError(f"the restore failed: {error}") from None
        finally:
            staged.unlink(missing_ok=True)
    return Restored(replace(facts, path=database), kept)


def _sidecars(database: Path) -> list[Path]:
    return [database.with_name(database.name + suffix) for suffix in ("-wal", "-shm")]


def _keep_aside(database: Path) -> Path | None:
    """Copy the current database exactly as it is on disk (its -wal too, even if damaged) to
    `<name>.before-restore-<time>`; `jokebot restore` of that file undoes the restore."""
    if not database.exists():
        return None
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    aside = database.with_name(f"{database.name}.before-restore-{stamp}")
    for n in range(2, 1000):  # a second restore within the same second keeps both
        if not aside.exists():
            break
        aside = database.with_name(f"{database.name}.before-restore-{stamp}-{n}")
    shutil.copy2(database, aside)
    wal = database.with_name(database.name + "-wal")
    if wal.exists() and wal.stat().st_size:
        shutil.copy2(wal, aside.with_name(aside.name + "-wal"))
    return aside
