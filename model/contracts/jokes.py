"""What counts as a valid joke, when two jokes are the same joke, and a stored joke's status.

Pure standard library: the bot uses it for `/addjoke` and `jokebot import`, and the trainer
uses `normalise_key` to recognise a generated joke that copies a training joke verbatim.
`reads_as_joke` is the one rule for generated text: /joke picks by it, the gate counts by it.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass
from enum import StrEnum

MAX_JOKE_CHARS = 280
MIN_JOKE_CHARS = 3
MIN_GENERATED_CHARS = 10


class JokeStatus(StrEnum):
    """A stored joke's review status (the `jokes.status` column): only approved jokes are the
    corpus; `bot.community.moderation` decides which new jokes wait for /review."""

    APPROVED = "approved"
    PENDING = "pending"  # waits for a moderator's /review
    REJECTED = "rejected"  # a moderator refused it


_WHITESPACE = re.compile(r"\s+")
_MENTION_OR_LINK = re.compile(
    r"<@!?\d+>|<@&\d+>|<#\d+>|@everyone|@here|https?://\S+|www\.\S+", re.IGNORECASE
)


def fold_whitespace(text: str) -> str:
    """Collapse every run of whitespace (newlines included) to one space and trim the ends."""
    return _WHITESPACE.sub(" ", text).strip()


def normalise_key(text: str) -> str:
    """Duplicate-detection key: NFKC, case-folded, punctuation and symbols dropped, spaces folded.

    "Why did the chicken…?" and "why did the CHICKEN ..." share a key.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category[0] in "PSZ" or char.isspace():  # punctuation, symbols, emoji, spaces
            kept.append(" ")
        elif category[0] == "C":  # control, format (zero-width) characters
            continue
        else:
            kept.append(char)
    return fold_whitespace("".join(kept))


def key_fraction(key: str) -> float:
    """sha256 of a duplicate key as a number in [0, 1): the joke's fixed place in every split
    (held-out corpus jokes, held-out votes), the same in every run."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


_CODE_OR_MARKUP = re.compile(r"```|[{}\\<>|$^~`]|==|=>|->|\w\(|\bdef |#include|\w_\w")
_SENTENCE_END = ".!?…\"'”’)*😀😂🤣"


def is_one_joke(text: str) -> bool:
    """Whether generated text has the shape of one joke: 10 to 280 characters on one line.

    The one rule for "one joke": the gate's one-joke rate (`model.evaluate`) is the share of
    samples that ended by themselves and have this shape, and /joke picks the first completion
    that did (preferring one that also `reads_as_joke`). A second line is a second joke."""
    text = text.strip()
    return MIN_GENERATED_CHARS <= len(text) <= MAX_JOKE_CHARS and not ("\n" in text or "\r" in text)


def reads_as_joke(text: str) -> bool:
    """One joke (`is_one_joke`) that also reads like a sentence: words rather than code or
    markup, starting and ending like a sentence. What /joke prefers among the completions it
    got; not a gate check (a fresh fine-tune often opens mid-sentence yet tells one joke)."""
    text = text.strip()
    words = text.split()
    return (
        is_one_joke(text)
        and len(words) >= 3
        and (text[0].isupper() or text[0].isdigit() or text[0] in "\"'“‘(")
        and text[-1] in _SENTENCE_END
        and not _CODE_OR_MARKUP.search(text)
        and sum(ch.isalpha() for ch in text) >= 0.6 * sum(not ch.isspace() for ch in text)
    )


@dataclass(frozen=True)
class JokeCheck:
    """The outcome of validating one submitted joke."""

    text: str | None  # the cleaned text to store, when valid
    key: str | None
    reason: str | None  # why it was refused, phrased for the author
    kind: str | None = None  # a short code for the refusal: empty, control, too_long, ...

    @property
    def ok(self) -> bool:
        return self.reason is None


def _refuse(kind: str, reason: str) -> JokeCheck:
    return JokeCheck(text=None, key=None, reason=reason, kind=kind)


def check_joke(raw: str | None) -> JokeCheck:
    """Validate and clean a submitted joke; the reason is written for the person who sent it."""
    if raw is None or not raw.strip():
        return _refuse("empty", "The joke is empty. Please send the text of a joke.")
    if any(unicodedata.category(ch) == "Cc" and ch not in "\n\r\t" for ch in raw):
        return _refuse("control", "The joke contains control characters. Please send plain text.")
    text = fold_whitespace(unicodedata.normalize("NFC", raw))
    if len(text) > MAX_JOKE_CHARS:
        return _refuse(
            "too_long",
            f"The joke is {len(text)} characters long; the limit is {MAX_JOKE_CHARS}. "
            "Please shorten it.",
        )
    if not normalise_key(_MENTION_OR_LINK.sub(" ", text)):
        return _refuse(
            "no_words", "The joke has no words of its own, only mentions, links or symbols."
        )
    if len(text) < MIN_JOKE_CHARS:
        return _refuse("too_short", "The joke is too short to be a joke.")
    return JokeCheck(text=text, key=normalise_key(text), reason=None)
