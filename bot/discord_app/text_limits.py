"""Discord's message size, in one place: what the bot sends must fit in it."""

from __future__ import annotations

MESSAGE_LIMIT = 2000  # characters in one Discord message


def fit_message(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """Cut at a word boundary (with an ellipsis) so the message fits Discord's limit."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1].rsplit(" ", 1)[0]
    return cut + "…"
