"""Near-duplicates: the index, `/addjoke`'s refusal with the stored joke quoted, imports."""

from __future__ import annotations

import pytest

from bot.community.importer import import_jokes
from bot.community.near_duplicates import NearDuplicateIndex
from model.contracts.jokes import normalise_key
from tests.helpers import SHORT_JOKES, say_addjoke

STORED = SHORT_JOKES[0]


def test_index_finds_near_copies_and_forgets_removed_jokes():
    index = NearDuplicateIndex.from_keys([(1, normalise_key(STORED))], threshold=88)
    assert index.find(normalise_key("I used to hate facial hairs but then it grew on me")) == (
        1,
        pytest.approx(99, abs=1),
    )
    assert index.find(normalise_key("I used to hate facial hair, but then it grow on me."))
    assert index.find(normalise_key("I used to love my job, but then it grew on me.")) is None
    index.remove(1)
    assert index.find(normalise_key(STORED)) is None and len(index) == 0


async def test_near_duplicate_is_refused_with_the_stored_joke_quoted(app):
    assert (await say_addjoke(app, STORED)).content.startswith("Stored as #1")
    reply = await say_addjoke(app, "I used to hate my facial hair but then it grew on me!!")
    assert reply.ephemeral and reply.mentions_disabled
    assert reply.content == f"Not stored: that joke is a duplicate of #1:\n> {STORED}"
    assert await app.db.joke_count() == 1
    # a different joke on the same theme is stored
    assert (
        await say_addjoke(app, "I shaved my beard and now nobody recognises me.")
    ).content.startswith("Stored as #2")


async def test_import_counts_near_copies_as_duplicates(app):
    lines = [STORED, "I used to hate facial hairs but then it grew on me", "A different joke here"]
    summary = await import_jokes(app.db, lines, near_duplicates=app.services.near_duplicates)
    assert (summary.added, summary.duplicates, summary.near_copies) == (2, 1, 1)
    # the running bot's index knows the imported jokes, under their stored ids
    reply = await say_addjoke(app, "a different joke here!")
    assert "duplicate of #2" in reply.content


async def test_jokes_imported_by_another_process_are_caught_up(app):
    from bot.store.database import Database

    other = await Database.open(app.db.path)  # as `jokebot import` would, beside the bot
    try:
        await import_jokes(other, [STORED])
    finally:
        await other.close()
    reply = await say_addjoke(app, "I used to hate facial hairs but then it grew on me")
    assert reply.content.startswith("Not stored: that joke is a duplicate of #1:")
