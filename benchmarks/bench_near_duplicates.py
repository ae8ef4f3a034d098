"""Near-duplicate detection (bot/community/near_duplicates.py): false refusals, detection
rate, lookup time.

    .venv/bin/python benchmarks/bench_near_duplicates.py [--csv ../shared/data/onelinefun.csv]
        [--thresholds 85,88,90,92,95] [--stored 100000]

1. False refusals: the distinct jokes of the CSV are inserted one by one; every refusal is
   printed with the stored joke it was taken for, so a person can judge whether it is a real
   near-copy (the CSV has a few) or a false refusal.
2. Detection: synthetic near-copies of CSV jokes (a word changed, punctuation, a plural, a
   typo) against the index of all CSV jokes.
3. Time of one check with `--stored` jokes indexed (synthesised by recombining CSV words to
   the CSV's length distribution), median and 95th percentile over 200 lookups.
"""

from __future__ import annotations

import argparse
import random
import statistics
import string
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bot.community.importer import parse_jokes
from bot.community.near_duplicates import DEFAULT_THRESHOLD, NearDuplicateIndex
from model.contracts.jokes import check_joke

ROOT = Path(__file__).resolve().parents[1]
CSV = ROOT.parent / "shared" / "data" / "onelinefun.csv"


def distinct_jokes(path: Path) -> list[tuple[str, str]]:
    """(text, key) of the valid jokes with distinct keys, in file order."""
    seen: set[str] = set()
    out = []
    for raw in parse_jokes(path.read_text(encoding="utf-8"), path.name):
        check = check_joke(raw)
        if check.ok and check.key not in seen:
            seen.add(check.key)
            out.append((check.text, check.key))
    return out


def refusals(jokes: list[tuple[str, str]], threshold: float) -> list[tuple[float, str, str]]:
    index = NearDuplicateIndex(threshold)
    refused = []
    for joke_id, (text, key) in enumerate(jokes):
        found = index.find(key)
        if found is None:
            index.add(joke_id, key)
        else:
            refused.append((found[1], text, jokes[found[0]][0]))
    return refused


def word_changed(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split()
    spots = [i for i, w in enumerate(words) if len(w.strip(string.punctuation)) >= 3]
    i = rng.choice(spots or range(len(words)))
    words[i] = rng.choice(vocabulary)
    return " ".join(words)


def punctuation(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    text = text.replace(",", "").replace("'", "") if rng.random() < 0.5 else text
    return text.rstrip(".!?") + rng.choice(["!!", "...", "?!", " :)"])


def plural(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    words = text.split()
    spots = [i for i, w in enumerate(words) if len(w) >= 4 and w.isalpha()]
    i = rng.choice(spots or range(len(words)))
    w = words[i]
    words[i] = w[:-1] if w.endswith("s") else w + "s"
    return " ".join(words)


def typo(text: str, rng: random.Random, vocabulary: list[str]) -> str:
    letters = [i for i, c in enumerate(text) if c.isalpha()]
    i = rng.choice(letters[:-1])
    kind = rng.choice(["swap", "drop", "double", "replace"])
    if kind == "swap":
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    if kind == "drop":
        return text[:i] + text[i + 1 :]
    if kind == "double":
        return text[:i] + text[i] + text[i:]
    return text[:i] + rng.choice(string.ascii_lowercase) + text[i + 1 :]


MUTATIONS = {"word changed": word_changed, "punctuation": punctuation, "plural": plural}
MUTATIONS["typo"] = typo


def detection(
    jokes: list[tuple[str, str]], threshold: float, samples: int, seed: int
) -> dict[str, float]:
    index = NearDuplicateIndex.from_keys(((i, key) for i, (_, key) in enumerate(jokes)), threshold)
    vocabulary = sorted({w for _, key in jokes for w in key.split() if len(w) >= 3})
    rates = {}
    for name, mutate in MUTATIONS.items():
        rng = random.Random(seed)
        hits = 0
        for _ in range(samples):
            original = rng.randrange(len(jokes))
            check = check_joke(mutate(jokes[original][0], rng, vocabulary))
            found = index.find(check.key) if check.ok else None
            hits += found is not None and found[0] == original
        rates[name] = hits / samples
    return rates


def lookup_times(
    jokes: list[tuple[str, str]], stored: int, threshold: float, seed: int
) -> list[float]:
    rng = random.Random(seed)
    words = [w for _, key in jokes for w in key.split()]
    lengths = [len(key.split()) for _, key in jokes]
    index = NearDuplicateIndex(threshold)
    for joke_id in range(stored):
        index.add(joke_id, " ".join(rng.choice(words) for _ in range(rng.choice(lengths))))
    times = []
    for _text, key in rng.sample(jokes, 200):
        started = time.perf_counter()
        index.find(key)
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--csv", type=Path, default=CSV)
    parser.add_argument("--thresholds", default="85,88,90,92,95")
    parser.add_argument("--samples", type=int, default=500, help="near-copies per mutation")
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    console = Console()
    jokes = distinct_jokes(args.csv)
    thresholds = [float(t) for t in args.thresholds.split(",")]
    console.print(f"{len(jokes)} distinct jokes in {args.csv.name}")

    table = Table(title="near-duplicates by threshold (fuzz.ratio on normalise_key)")
    table.add_column("threshold", justify="right")
    table.add_column("refused of the CSV", justify="right")
    for name in MUTATIONS:
        table.add_column(f"detects: {name}", justify="right")
    refused_at = {}
    for threshold in thresholds:
        refused_at[threshold] = refusals(jokes, threshold)
        rates = detection(jokes, threshold, args.samples, args.seed)
        marker = " (default)" if threshold == DEFAULT_THRESHOLD else ""
        table.add_row(
            f"{threshold:g}{marker}",
            str(len(refused_at[threshold])),
            *(f"{rate:.1%}" for rate in rates.values()),
        )
    console.print(table)

    shown = DEFAULT_THRESHOLD if DEFAULT_THRESHOLD in refused_at else thresholds[0]
    console.print(f"\nrefused pairs at threshold {shown:g} (judge: real near-copy or not?)")
    for score, text, stored in sorted(refused_at[shown], reverse=True):
        console.print(f"  {score:5.1f}  new:    {text}\n         stored: {stored}", markup=False)

    times = lookup_times(jokes, args.stored, DEFAULT_THRESHOLD, args.seed)
    timing = Table(title=f"one check with {args.stored:,} stored jokes")
    for column in ("median ms", "p95 ms", "max ms", "target"):
        timing.add_column(column, justify="right")
    p95 = statistics.quantiles(times, n=20)[-1]
    timing.add_row(f"{statistics.median(times):.2f}", f"{p95:.2f}", f"{max(times):.2f}", "< 20")
    console.print(timing)


if __name__ == "__main__":
    main()
