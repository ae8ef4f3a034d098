"""The starter corpus: jokes that ship with jokebot, so a fresh install tells jokes at once.

They come from `pyjokes` (BSD-3-Clause, a PyPI dependency): its 283 English one-liners. On the
first start with an empty corpus they are imported through the same validation and
deduplication as `/addjoke`, as source `starter` (`STARTER_CORPUS=false` turns this off). They
are in-context examples for the untrained base model and training data for the first retrain,
but never "new jokes" for the scheduler.
"""

from __future__ import annotations

import logging

from bot.community.importer import ImportSummary, import_jokes
from bot.settings import Settings
from bot.store.database import Database

log = logging.getLogger(__name__)
SOURCE = "starter"
ORIGIN = "pyjokes (BSD-3-Clause), English, all categories"


def starter_jokes() -> list[str]:
    """The jokes of the starter corpus, in the package's order."""
    import pyjokes

    return list(pyjokes.get_jokes(language="en", category="all"))


async def seed_starter_corpus(db: Database, settings: Settings) -> ImportSummary | None:
    """Import the starter corpus if the corpus is empty and STARTER_CORPUS allows it."""
    if not settings.starter_corpus or await db.has_jokes():
        return None
    summary = await import_jokes(db, starter_jokes(), source=SOURCE)
    log.info("starter corpus from %s: %s", ORIGIN, summary.lines()[0])
    return summary
