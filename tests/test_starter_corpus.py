"""The starter corpus: a fresh install has jokes from the start, imported once, never "new"."""

from __future__ import annotations

from bot.community.importer import import_jokes
from bot.community.starter import seed_starter_corpus, starter_jokes
from bot.store.database import Database
from model.contracts.jokes import check_joke
from tests.helpers import ADMIN, SHORT_JOKES, jokebot_app, make_settings


def distinct_starter_count() -> int:
    return len({check.key for check in map(check_joke, starter_jokes()) if check.ok})


async def test_first_start_imports_the_starter_corpus_once(standin, tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model, starter_corpus=True)
    expected = distinct_starter_count()
    assert expected > 250  # pyjokes ships 283 English one-liners
    async with jokebot_app(standin, settings) as app:
        assert await app.db.corpus_by_source() == {"starter": expected}
        assert await app.services.training.new_jokes_since_last_training() == 0
        status = await (await standin.invoke("status")).wait_for_reply(timeout=20)
        assert f"Corpus: {expected} jokes ({expected} starter), 0 new" in status.content
        models = await (await standin.invoke("models", permissions=ADMIN)).wait_for_reply()
        assert f"{expected} starter" in models.content
        await (await standin.invoke("addjoke", {"text": SHORT_JOKES[1]})).wait_for_reply()
        assert await app.services.training.new_jokes_since_last_training() == 1
    async with jokebot_app(standin, settings) as app:  # a restart imports nothing again
        assert await app.db.corpus_by_source() == {"starter": expected, "user": 1}


async def test_starter_corpus_setting_off(standin, tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model, starter_corpus=False)
    async with jokebot_app(standin, settings) as app:
        assert await app.db.joke_count() == 0


async def test_starter_corpus_waits_for_an_empty_corpus(tmp_path, tiny_model):
    """A host who imported their own jokes before the first start gets no starter jokes."""
    settings = make_settings(tmp_path / "data", tiny_model, starter_corpus=True)
    db = await Database.open(settings.database_path)
    await import_jokes(db, SHORT_JOKES)
    assert await seed_starter_corpus(db, settings) is None
    assert await db.corpus_by_source() == {"import": 2}
    await db.close()
