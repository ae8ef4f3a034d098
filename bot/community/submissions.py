"""What a submitted joke meets before it is stored, for `/addjoke` and `jokebot import`:
refusal as a near-copy of a stored joke (quoted back), and the content policy's hold. The
near-copy check and the insert are one step (one transaction), however many arrive at once.

No discord: the command layer words the answers with the helpers here.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from bot.community.near_duplicates import NearDuplicateIndex
from bot.settings import Settings
from bot.store.database import AddResult, Database

QUOTE_CHARS = 300
NEAR_COPY_CHECK = "near-copy-check"  # what check-then-store transactions serialize on


@dataclass(frozen=True)
class NearCopy:
    """The stored joke a submission copies, and how similar they are (0-100)."""

    id: int
    text: str
    score: float


async def load_near_duplicates(settings: Settings, db: Database) -> NearDuplicateIndex:
    """The near-duplicate index of every stored joke, built once at start."""
    rows = await db.joke_keys()
    return NearDuplicateIndex.from_keys(rows, settings.near_duplicate_threshold)


async def catch_up(db: Database, index: NearDuplicateIndex) -> None:
    """Index the jokes stored since the index's newest one, by this process or another (gateway
    shards, `jokebot import`). If that one was deleted, SQLite may have given its id to a later
    joke: step back to an indexed joke that still stands.

    Call it inside the write transaction that stores on the index's verdict: then no other
    joke can be committed until that transaction ends, so the verdict stays true (SQLite has
    one writer at a time; on PostgreSQL such transactions wait for each other here, in every
    process)."""
    await db.serialize(NEAR_COPY_CHECK)
    while True:  # one query, unless the newest indexed joke is gone
        newest = index.highest_id
        rows = await db.joke_keys(after_id=newest - 1) if newest else await db.joke_keys()
        if not newest or (rows and rows[0] == (newest, index.key_of(newest))):
            break
        index.remove(newest)  # lowers highest_id to the next indexed joke
    for joke_id, stored_key in rows:
        index.add(joke_id, stored_key)


async def near_copy(db: Database, index: NearDuplicateIndex, key: str) -> NearCopy | None:
    """The stored joke that `key` nearly copies, read back from the database for the quote
    (after `catch_up`, in the same transaction). An index entry that no longer matches its row
    (deleted, or its id given to another joke since) is corrected and the search goes on."""
    while (found := index.find(key)) is not None:
        joke_id, score = found
        stored = await db.joke_text_and_key(joke_id)
        if stored is not None and index.key_of(joke_id) == stored[1]:
            return NearCopy(joke_id, stored[0], score)
        index.remove(joke_id)
        if stored is not None:
            index.add(joke_id, stored[1])
    return None


async def store_unless_near_copy(
    db: Database,
    index: NearDuplicateIndex,
    text: str,
    key: str,
    *,
    source: str,
    status: str,
    author_id: int | None = None,
    guild_id: int | None = None,
) -> AddResult | NearCopy:
    """Store a checked joke unless it nearly copies a stored one, as one step: the check, the
    insert and the index update share one write transaction, so of near-copies sent at once
    exactly one is stored. Committed on return. An exact copy the index missed comes back as
    an `AddResult` with `created=False`."""
    with indexed(index) as add_to_index:
        async with db.transaction():
            await catch_up(db, index)
            if copy := await near_copy(db, index, key):
                return copy
            result = await db.add_joke(
                text, key, source=source, author_id=author_id, guild_id=guild_id, status=status
            )
            if result.created:
                add_to_index(result.id, key)
    return result


@contextlib.contextmanager
def indexed(index: NearDuplicateIndex | None) -> Iterator[Callable[[int, str], None]]:
    """`add` to the index (if any) for jokes stored in a transaction: if the block fails (rolled
    back), they are taken out again, so the index never holds a joke that was not committed."""
    added: list[int] = []

    def add(joke_id: int, key: str) -> None:
        if index is not None:
            index.add(joke_id, key)
            added.append(joke_id)

    try:
        yield add
    except BaseException:
        for joke_id in reversed(added):
            index.remove(joke_id)
        raise


def duplicate_message(joke_id: int, text: str | None) -> str:
    """The refusal as its author reads it, with the stored joke quoted."""
    message = f"Not stored: that joke is a duplicate of #{joke_id}"
    if not text:
        return message + "."
    if len(text) > QUOTE_CHARS:
        text = text[: QUOTE_CHARS - 1] + "…"
    return f"{message}:\n> {text}"
