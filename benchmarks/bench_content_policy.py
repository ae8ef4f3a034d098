"""How often the content policy fires on a model's jokes (bot/community/content_policy.py).

    # a promoted version, sampled as /joke samples it (a runner is started for the folder)
    .venv/bin/python benchmarks/bench_content_policy.py --model data/models/v3 -n 200
    # a runner that is already up (jokebot run's, or a GPU host's)
    .venv/bin/python benchmarks/bench_content_policy.py --runner-url http://127.0.0.1:8765
    # proxy without a model: jokes of the corpus promoted models learn from
    .venv/bin/python benchmarks/bench_content_policy.py --csv ../shared/data/onelinefun.csv

Prints, per policy (off, blocklist with --blocklist, strict), the share of the N jokes it flags
(= a /joke regenerates; a submission waits for review), the words that fired most, and the time
of one check. Sampling uses the JOKE_* settings (temperature, top-p, max tokens).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bot.community.content_policy import ContentPolicy
from bot.community.importer import parse_jokes
from bot.runners.client import RunnerClient
from bot.runners.joke_teller import tell_joke
from bot.runners.process import RunnerProcess
from bot.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"


async def sample_runner(url: str, n: int, concurrency: int) -> list[str]:
    settings = load_settings()
    runner = RunnerClient(url)
    gate = asyncio.Semaphore(concurrency)

    async def one() -> str:
        async with gate:
            return await tell_joke(runner, settings)

    try:
        await runner.wait_until_ready(600)
        return await asyncio.gather(*(one() for _ in range(n)))
    finally:
        await runner.close()


async def sample_model(folder: str, n: int, concurrency: int) -> list[str]:
    process = RunnerProcess(model_ref=folder, version="bench", host="127.0.0.1", port=0)
    await process.start()
    try:
        return await sample_runner(process.url, n, concurrency)
    finally:
        await process.stop(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--runner-url")
    source.add_argument("--model", help="a model folder (a promoted version, data/models/vN)")
    source.add_argument("--csv", type=Path, help=f"jokes of a file instead (default {CSV})")
    parser.add_argument("-n", type=int, default=200, help="jokes to sample")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--blocklist", default="", help="comma-separated, for 'blocklist'")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--show", type=int, default=10, help="flagged jokes to print")
    args = parser.parse_args()

    if args.runner_url:
        origin, jokes = (
            args.runner_url,
            asyncio.run(sample_runner(args.runner_url, args.n, args.concurrency)),
        )
    elif args.model:
        origin, jokes = args.model, asyncio.run(sample_model(args.model, args.n, args.concurrency))
    else:
        path = args.csv or CSV
        every = parse_jokes(path.read_text(encoding="utf-8"), path.name)
        origin, jokes = path.name, random.Random(args.seed).sample(every, min(args.n, len(every)))

    console = Console()
    words = [w for w in args.blocklist.split(",") if w.strip()]
    table = Table(title=f"content policy on {len(jokes)} jokes from {origin}")
    for column in ("policy", "flagged", "rate", "top reasons", "ms per check"):
        table.add_column(column, justify="left" if column in ("policy", "top reasons") else "right")
    flagged_by_strict: list[tuple[str, str]] = []
    for mode in ("off", "blocklist", "strict"):
        policy = ContentPolicy(mode, words)
        started = time.perf_counter()
        reasons = [policy.flags(joke) for joke in jokes]
        per_check = (time.perf_counter() - started) * 1000 / max(1, len(jokes))
        fired = [r for r in reasons if r]
        if mode == "strict":
            flagged_by_strict = [(r, j) for r, j in zip(reasons, jokes, strict=True) if r]
        top = ", ".join(f"{r.split(': ', 1)[1]} {c}" for r, c in Counter(fired).most_common(6))
        label = f"{mode} ({len(words)} words)" if mode == "blocklist" else mode
        table.add_row(
            label,
            str(len(fired)),
            f"{len(fired) / max(1, len(jokes)):.1%}",
            top,
            f"{per_check:.2f}",
        )
    console.print(table)
    for reason, joke in flagged_by_strict[: args.show]:
        console.print(f"  strict, {reason}: {joke}", markup=False)


if __name__ == "__main__":
    main()
