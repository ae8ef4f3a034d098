"""`jokebot import`: jokes from a CSV with a `Joke` column (the tutorial's format) or a text file
with one joke per line, through the same validation, deduplication (near-copies included) and
content policy as `/addjoke`."""

from __future__ import annotations

import csv
import io
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bot.community.content_policy import ContentPolicy
from bot.community.moderation import initial_status
from bot.community.near_duplicates import NearDuplicateIndex
from bot.community.submissions import catch_up, indexed, near_copy
from bot.store.database import Database
from model.contracts.jokes import MAX_JOKE_CHARS, JokeStatus, check_joke

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
    near_copies: int = 0  # of the duplicates, those that were not exact copies
    held: int = 0  # of the added, those the content policy holds for review

    def lines(self) -> list[str]:
        out = [
            f"read {self.read}, added {self.added}, duplicates {self.duplicates}, "
            f"rejected {sum(self.rejected.values())}"
        ]
        if self.near_copies:
            out.append(f"  duplicates {self.near_copies}: near-copies of a stored joke")
        if self.held:
            out.append(f"  added {self.held}: held for review by the content policy")
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
    near_duplicates: NearDuplicateIndex | None = None,
    policy: ContentPolicy | None = None,
) -> ImportSummary:
    """Validate and store; each batch is one transaction, so an interruption loses no batch.

    With `near_duplicates` (the index of the stored jokes, updated here), a near-copy of a
    stored joke or of an earlier line is a duplicate, checked inside the batch's transaction
    (so a joke stored meanwhile by the bot or another process counts); a joke that `policy`
    flags is stored pending review."""
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
        batch = ImportSummary()  # counted into the summary once committed
        with indexed(near_duplicates) as add_to_index:
            async with db.transaction():  # checks and inserts of the batch are one step
                if near_duplicates is not None:
                    await catch_up(db, near_duplicates)
                for text, key in valid[start : start + BATCH]:
                    if near_duplicates is not None and (
                        copy := await near_copy(db, near_duplicates, key)
                    ):  # a stored joke, or an earlier line
                        batch.duplicates += 1
                        batch.near_copies += copy.score < 100
                        continue
                    status = initial_status(  # a host's import waits only when flagged
                        mode="off", source=source, flagged=bool(policy and policy.flags(text))
                    )
                    result = await db.add_joke(text, key, source=source, status=status)
                    if result.created:
                        add_to_index(result.id, key)
                        batch.added += 1
                        batch.held += status == JokeStatus.PENDING
                    else:
                        batch.duplicates += 1
        summary.added += batch.added
        summary.held += batch.held
        summary.duplicates += batch.duplicates
        summary.near_copies += batch.near_copies
        if on_progress:
            on_progress(min(BATCH, len(valid) - start))
    return summary
