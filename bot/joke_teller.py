"""Turn a runner completion into one joke fit for a Discord message. No discord, no torch."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.jokes import fold_whitespace
from bot.runner_client import RunnerClient
from bot.settings import Settings

DISCORD_LIMIT = 2000
MAX_PROMPT_CHARS = 200
ATTEMPTS = 3


class EmptyJoke(Exception):
    """The model produced nothing usable after a few tries."""


@dataclass(frozen=True)
class ToldJoke:
    """A joke ready to show, and the model version that wrote it (as the runner names it)."""

    text: str
    model: str = ""

    @property
    def version_number(self) -> int | None:
        """3 for "v3"; None when the runner's name is not a jokebot version."""
        match = re.fullmatch(r"v(\d+)", self.model.strip())
        return int(match.group(1)) if match else None


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


async def tell_joke(runner: RunnerClient, settings: Settings, prompt: str = "") -> ToldJoke:
    """One complete joke; prefers completions that ended at the model's end-of-joke token."""
    prompt = fold_whitespace(prompt or "")
    fallback: ToldJoke | None = None
    for _ in range(ATTEMPTS):
        completion = await runner.complete(
            prompt,
            max_tokens=settings.joke_max_tokens,
            temperature=settings.joke_temperature,
            top_p=settings.joke_top_p,
        )
        text = compose(prompt, completion.text)
        if completion.text.strip() and completion.finish_reason == "stop":
            return ToldJoke(clip(text), completion.model)
        if fallback is None and completion.text.strip():
            fallback = ToldJoke(clip(text), completion.model)
    if fallback is not None:
        return fallback
    raise EmptyJoke("the model came up empty")
