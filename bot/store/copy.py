"""`jokebot db copy`: move an SQLite database into an empty PostgreSQL one, every row of every
table with its id, then prove it (rows and a checksum per table, read back from both).

Everything happens in one PostgreSQL transaction: a copy that fails, or that does not verify,
leaves the target as empty as it found it, so it can simply be run again. Identity sequences
are moved past the highest copied id, so new rows get new ids. A target with rows in any table
is refused (nothing is ever merged or overwritten).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from bot.store.backends import PostgresBackend, SQLiteBackend, sql_timestamp

BATCH = 5000


class CopyRefused(Exception):
    """The copy cannot start, or did not verify; the message says why."""


@dataclass(frozen=True)
class TableCopy:
    table: str
    rows: int
    checksum: str


def _normalise(value: Any) -> str:
    if value is None:
        return "\\N"
    if isinstance(value, bool):
        return str(int(value))
    return str(value)


def table_checksum(rows: Iterable[Iterable[Any]]) -> tuple[int, str]:
    """(rows, sha256) over rows in key order, each value as text; the same on both databases."""
    digest, count = hashlib.sha256(), 0
    for row in rows:
        digest.update("\x1f".join(_normalise(v) for v in row).encode("utf-8") + b"\x1e")
        count += 1
    return count, digest.hexdigest()


async def _sqlite_tables(source: SQLiteBackend) -> list[str]:
    """The data tables, parents before children (foreign keys), in a stable order."""
    names = [
        row[0]
        for row in await source.fetch(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " ORDER BY name"
        )
    ]
    parents = {
        name: {
            row["table"]
            for row in await source.fetch(f"PRAGMA foreign_key_list({name})")
            if row["table"] != name
        }
        for name in names
    }
    ordered: list[str] = []
    while len(ordered) < len(names):
        ready = [n for n in names if n not in ordered and parents[n] <= set(ordered)]
        if not ready:
            raise CopyRefused("the tables' foreign keys form a cycle")
        ordered.extend(ready)
    return ordered


async def _columns(source: SQLiteBackend, table: str) -> tuple[list[str], list[str]]:
    """(every column, the primary-key columns) of an SQLite table, in declared order."""
    info = await source.fetch(f"PRAGMA table_info({table})")
    columns = [row["name"] for row in info]
    keys = [row["name"] for row in sorted(info, key=lambda r: r["pk"]) if row["pk"]]
    return columns, keys or columns


async def _target_types(target_conn: Any, table: str) -> dict[str, str]:
    rows = await target_conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = $1",
        table,
    )
    return {row[0]: row[1] for row in rows}


def _for_target(value: Any, data_type: str) -> Any:
    """An SQLite value as PostgreSQL's column takes it (0/1 flags become booleans)."""
    if value is None:
        return None
    if data_type == "boolean":
        return bool(value)
    if data_type.startswith("timestamp") and not isinstance(value, str):
        return sql_timestamp(value)
    return value


async def copy_database(source: SQLiteBackend, target: PostgresBackend) -> list[TableCopy]:
    """Copy every table of `source` into the empty `target` (both migrated), verified."""
    source_version, target_version = await source.schema_version(), await target.schema_version()
    if source_version != target_version:
        raise CopyRefused(
            f"schema versions differ (SQLite {source_version}, PostgreSQL {target_version})"
        )
    tables = await _sqlite_tables(source)
    copied: list[TableCopy] = []
    async with source.transaction(), target.transaction(), target.connection() as conn:
        # the source is read in one transaction: one consistent picture, even if a bot runs
        await target.serialize("db-copy")
        for table in tables:
            if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})"):
                raise CopyRefused(
                    f"the target already has rows in {table}: copy only into an empty database"
                )
        for table in tables:
            columns, keys = await _columns(source, table)
            types = await _target_types(conn, table)
            missing = [c for c in columns if c not in types]
            if missing:
                raise CopyRefused(f"the target's {table} has no column {', '.join(missing)}")
            column_list = ", ".join(columns)
            order = ", ".join(keys)
            select = f"SELECT {column_list} FROM {table} ORDER BY {order}"
            placeholders = ", ".join(f"${i}" for i in range(1, len(columns) + 1))
            insert = (
                f"INSERT INTO {table} ({column_list}) OVERRIDING SYSTEM VALUE"
                f" VALUES ({placeholders})"
            )
            source_rows = await source.fetch(select)
            converted = [
                tuple(_for_target(v, types[c]) for v, c in zip(row, columns, strict=True))
                for row in source_rows
            ]
            for start in range(0, len(converted), BATCH):
                await conn.executemany(insert, converted[start : start + BATCH])
            for column, data_type in types.items():
                if data_type == "bigint" and await conn.fetchval(
                    "SELECT pg_get_serial_sequence($1, $2)", table, column
                ):
                    await conn.execute(
                        f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'),"
                        f" coalesce(max({column}), 0) + 1, false) FROM {table}"
                    )
            expected = table_checksum(source_rows)
            found = table_checksum(await conn.fetch(select))
            if found != expected:
                raise CopyRefused(
                    f"{table} did not verify: {found[0]} rows read back for {expected[0]}"
                    " copied, or their contents differ; nothing was kept"
                )
            copied.append(TableCopy(table, *expected))
    return copied
