"""What a submitted joke meets before it is stored, for `/addjoke` and `jokebot import`:
refusal as a near-copy of a stored joke (quoted back), and the content policy's hold.

No discord: the command layer words the answers with the helpers here.
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.community.near_duplicates import NearDuplicateIndex
from bot.settings import Settings
from bot.store.database import Database

QUOTE_CHARS = 300


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


async def find_near_copy(db: Database, index: NearDuplicateIndex, key: str) -> NearCopy | None:
    """The stored joke that `key` nearly copies, read back from the database for the quote.

    Jokes stored by another process since (`jokebot import` while the bot runs) are indexed
    first; a joke deleted behind the index's back is dropped from it and the search goes on."""
    for joke_id, stored_key in await db.joke_keys(after_id=index.highest_id):
        index.add(joke_id, stored_key)
    while (found := index.find(key)) is not None:
        joke_id, score = found
        text = await db.joke_text(joke_id)
        if text is not None:
            return NearCopy(joke_id, text, score)
        index.remove(joke_id)
    return None


def duplicate_message(joke_id: int, text: str | None) -> str:
    """The refusal as its author reads it, with the stored joke quoted."""
    message = f"Not stored: that joke is a duplicate of #{joke_id}"
    if not text:
        return message + "."
    if len(text) > QUOTE_CHARS:
        text = text[: QUOTE_CHARS - 1] + "…"
    return f"{message}:\n> {text}"
