"""`jokebot import`: jokes from a CSV with a `Joke` column (the tutorial's format) or a text file
with one joke per line, through the same validation and deduplication as `/addjoke`."""

from __future__ import annotations

import csv
import io
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.database import Database
from bot.jokes import MAX_JOKE_CHARS, check_joke

BATCH = 500
REFUSALS = {
    "empty": "empty",
    "control": "control characters",
    "too_long": f"longer than {MAX_JOKE_CHARS} characters",
    "no_words": "only mentions, links or symbols",
    "too_short": "too short",
}


@dataclass
class ImportSummary:
    read: int = 0
    added: int = 0
    duplicates: int = 0
    rejected: Counter = field(default_factory=Counter)  # refusal kind -> count

    def lines(self) -> list[str]:
        out = [
            f"read {self.read}, added {self.added}, duplicates {self.duplicates}, "
            f"rejected {sum(self.rejected.values())}"
        ]
        out += [
            f"  rejected {count}: {REFUSALS.get(kind, kind)}"
            for kind, count in self.rejected.most_common()
        ]
        return out


def read_source(source: str) -> str:
    """The text of a local file, or of an http(s) URL for hosts with internet access."""
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=60) as response:
            return response.read().decode("utf-8-sig")
    return Path(source).read_text(encoding="utf-8-sig")


def parse_jokes(text: str, name: str) -> list[str]:
    """CSV with a `Joke` column (any case) when the file looks like one, else one joke a line."""
    first_line = text.split("\n", 1)[0]
    if name.lower().endswith(".csv") or "joke" in first_line.lower().split(","):
        reader = csv.DictReader(io.StringIO(text))
        column = next((c for c in reader.fieldnames or [] if c.strip().lower() == "joke"), None)
        if column is None:
            raise ValueError(f"{name}: a CSV needs a 'Joke' column (found {reader.fieldnames})")
        return [row[column] or "" for row in reader]
    return [line for line in text.splitlines() if line.strip()]


async def import_jokes(
    db: Database,
    jokes: list[str],
    on_progress: Callable[[int], None] | None = None,
    *,
    source: str = "import",
) -> ImportSummary:
    """Validate and store; each batch is one transaction, so an interruption loses no batch."""
    summary = ImportSummary(read=len(jokes))
    valid: list[tuple[str, str]] = []
    for raw in jokes:
        check = check_joke(raw)
        if check.ok:
            valid.append((check.text, check.key))
        else:
            summary.rejected[check.kind] += 1
    if on_progress and summary.rejected:
        on_progress(sum(summary.rejected.values()))
    for start in range(0, len(valid), BATCH):
        batch = valid[start : start + BATCH]
        for result in await db.add_jokes(batch, source=source):
            if result.created:
                summary.added += 1
            else:
                summary.duplicates += 1
        if on_progress:
            on_progress(len(batch))
    return summary
