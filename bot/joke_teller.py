"""Turn a runner completion into one joke fit for a Discord message. No discord, no torch."""

from __future__ import annotations

from bot.jokes import fold_whitespace
from bot.runner_pool import RunnerPool
from bot.settings import Settings

DISCORD_LIMIT = 2000
MAX_PROMPT_CHARS = 200
ATTEMPTS = 3


class EmptyJoke(Exception):
    """The model produced nothing usable after a few tries."""


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


async def tell_joke(runner: RunnerPool, settings: Settings, prompt: str = "") -> str:
    """One complete joke; prefers completions that ended at the model's end-of-joke token."""
    prompt = fold_whitespace(prompt or "")
    fallback = ""
    for _ in range(ATTEMPTS):
        completion = await runner.complete(
            prompt,
            max_tokens=settings.joke_max_tokens,
            temperature=settings.joke_temperature,
            top_p=settings.joke_top_p,
        )
        text = compose(prompt, completion.text)
        if completion.text.strip() and completion.finish_reason == "stop":
            return clip(text)
        fallback = fallback or (text if completion.text.strip() else "")
    if fallback:
        return clip(fallback)
    raise EmptyJoke("the model came up empty")
