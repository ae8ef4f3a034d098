"""Turn runner completions into one joke to show: retries, the few-shot examples, the policy.

No discord, no torch: the Discord face fits the text into a message.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from bot.runners.pool import RunnerPool
from bot.settings import Settings
from bot.store.database import Database
from model.contracts.jokes import fold_whitespace, is_one_joke, reads_as_joke

MAX_PROMPT_CHARS = 200
ATTEMPTS = 3


POOL_SIZE = 200  # random short corpus jokes kept in memory to draw examples from
POOL_SECONDS = 600  # how long a pool is used before it is drawn again
EXAMPLE_MAX_CHARS = 140  # short examples keep the prompt short (batching stays fast)


class EmptyJoke(Exception):
    """The model produced nothing usable after a few tries."""


class ExamplePool:
    """In-context examples for a model that was never fine-tuned on jokes.

    Each request gets `k` jokes drawn at random from a pool of short corpus jokes (refreshed
    every few minutes, so new jokes show up without a query per /joke). The runner uses them
    only when the serving version's manifest asks for the `few-shot` layout.
    """

    def __init__(self, db: Database, k: int) -> None:
        self.db = db
        self.k = k
        self._pool: list[str] = []
        self._drawn_at = -POOL_SECONDS

    async def pick(self) -> list[str]:
        if self.k <= 0:
            return []
        if time.monotonic() - self._drawn_at > POOL_SECONDS or len(self._pool) < self.k:
            self._pool = await self.db.random_jokes(POOL_SIZE, EXAMPLE_MAX_CHARS)
            self._drawn_at = time.monotonic()
        return random.sample(self._pool, min(self.k, len(self._pool)))


@dataclass(frozen=True)
class ToldJoke:
    """A joke ready to show, and the number of the model version that wrote it (None: the
    runner pool could not tell)."""

    text: str
    version: int | None = None
    completion: str = ""  # what the model wrote after the prompt (votes train on it)


class NoCleanJoke(EmptyJoke):
    """Every joke the model wrote was refused by `accept` (the content policy)."""


def compose(prompt: str, completion: str) -> str:
    """The joke as read: the prompt is its opening, the completion continues it."""
    completion = completion.strip()
    if not prompt:
        return completion
    joiner = "" if completion[:1] in {",", ".", "!", "?", ";", ":", "'"} else " "
    return f"{prompt.rstrip()}{joiner}{completion}".strip()


async def tell_joke(
    runner: RunnerPool,
    settings: Settings,
    prompt: str = "",
    examples: ExamplePool | None = None,
    accept: Callable[[str], bool] | None = None,
) -> ToldJoke:
    """One complete joke: the first completion that ended by itself and reads as a joke, else
    the first that ended by itself as one joke (`is_one_joke`, the gate's rule), else the first
    that ended by itself, else the first non-empty one (up to ATTEMPTS tries).

    `examples` draws the in-context jokes for a `few-shot` serving model, once per joke. A
    joke that `accept` refuses (the content policy) is never shown: the model writes another;
    when none of the ATTEMPTS jokes passes, NoCleanJoke says so."""
    prompt = fold_whitespace(prompt or "")
    shots = await examples.pick() if examples is not None else []
    fallback: ToldJoke | None = None
    finished: ToldJoke | None = None
    one_joke: ToldJoke | None = None
    refused = 0
    for _ in range(ATTEMPTS):
        completion = await runner.complete(
            prompt,
            max_tokens=settings.joke_max_tokens,
            temperature=settings.joke_temperature,
            top_p=settings.joke_top_p,
            examples=shots,
        )
        text = compose(prompt, completion.text)
        if not completion.text.strip():
            continue
        told = ToldJoke(text, completion.version, completion.text)
        if accept is not None and not accept(told.text):
            refused += 1
            continue
        if completion.finish_reason == "stop":
            if reads_as_joke(text):
                return told
            if is_one_joke(text):
                one_joke = one_joke or told
            finished = finished or told
        fallback = fallback or told
    if one_joke or finished or fallback:
        return one_joke or finished or fallback
    if refused:
        raise NoCleanJoke(f"the content policy refused all {refused} jokes")
    raise EmptyJoke("the model came up empty")
