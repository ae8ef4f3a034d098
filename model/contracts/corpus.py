"""The corpus record, and the snapshot file through which the bot hands a corpus to a trainer.

The bot reads approved jokes from SQLite as `CorpusJoke`s and writes them with
`write_snapshot`; the trainer reads the same file back with `read_snapshot`. JSONL, one
`{"id", "text", "key"}` object a line, so a host can read (and hand-edit) a run's snapshot.
`corpus_hash` is the corpus's fingerprint: the bot records it with the run, the trainer in the
version's manifest, computed the same way from the same jokes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from model.contracts.jokes import normalise_key


@dataclass(frozen=True)
class CorpusJoke:
    """One joke of the training corpus: its database id, its text and its duplicate key."""

    id: int
    text: str
    key: str


def corpus_hash(jokes: Iterable[CorpusJoke]) -> str:
    """A fingerprint of the corpus's content: the sha256 of its duplicate keys, in any order."""
    digest = hashlib.sha256()
    for key in sorted(joke.key for joke in jokes):
        digest.update(key.encode("utf-8") + b"\n")
    return digest.hexdigest()


def write_snapshot(path: str | Path, jokes: Iterable[CorpusJoke]) -> None:
    """Write the snapshot a training run learns from (one JSON object a line)."""
    with Path(path).open("w", encoding="utf-8") as out:
        for joke in jokes:
            out.write(json.dumps({"id": joke.id, "text": joke.text, "key": joke.key}) + "\n")


def read_snapshot(path: str | Path) -> list[CorpusJoke]:
    """Read a snapshot; blank lines and repeated keys are dropped, a key is recomputed if absent."""
    jokes: list[CorpusJoke] = []
    seen: set[str] = set()
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                text = str(row["text"])
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"{path}:{number}: not a snapshot line ({error})") from error
            key = str(row.get("key") or normalise_key(text))
            if not key or key in seen:
                continue
            seen.add(key)
            jokes.append(CorpusJoke(id=int(row.get("id", number)), text=text, key=key))
    return jokes
