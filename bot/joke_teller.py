"""Turn a runner completion into one joke fit for a Discord message. No discord, no torch."""

from __future__ import annotations

from collections.abc import Callable

from bot.jokes import fold_whitespace
from bot.runner_client import RunnerClient
from bot.settings import Settings

DISCORD_LIMIT = 2000
MAX_PROMPT_CHARS = 200
ATTEMPTS = 3


class EmptyJoke(Exception):
    """The model produced nothing usable after a few tries."""


class NoCleanJoke(EmptyJoke):
    """Every joke the model wrote was refused by `accept` (the content policy)."""


def clip(text: str, limit: int = DISCORD_LIMIT) -> str:
    """Cut at a word boundary so the message fits Discord's limit."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"


def compose(prompt: str, completion: str) -> str:
    """The joke as read: the prompt is its opening, the completion continues it."""
    completion = completion.strip()
    if not prompt:
        return completion
    joiner = "" if completion[:1] in {",", ".", "!", "?", ";", ":", "'"} else " "
    return f"{prompt.rstrip()}{joiner}{completion}".strip()


async def tell_joke(
    runner: RunnerClient,
    settings: Settings,
    prompt: str = "",
    accept: Callable[[str], bool] | None = None,
) -> str:
    """One complete joke; prefers completions that ended at the model's end-of-joke token.

    A joke that `accept` refuses (the content policy) is never shown: the model writes
    another; when none of the ATTEMPTS jokes passes, NoCleanJoke says so."""
    prompt = fold_whitespace(prompt or "")
    fallback = ""
    refused = 0
    for _ in range(ATTEMPTS):
        completion = await runner.complete(
            prompt,
            max_tokens=settings.joke_max_tokens,
            temperature=settings.joke_temperature,
            top_p=settings.joke_top_p,
        )
        text = compose(prompt, completion.text)
        if accept is not None and completion.text.strip() and not accept(clip(text)):
            refused += 1
            continue
        if completion.text.strip() and completion.finish_reason == "stop":
            return clip(text)
        fallback = fallback or (text if completion.text.strip() else "")
    if fallback:
        return clip(fallback)
    if refused:
        raise NoCleanJoke(f"the content policy refused all {refused} jokes")
    raise EmptyJoke("the model came up empty")
