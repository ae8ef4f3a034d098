"""The host's content policy: which jokes are not fit to show or to approve unseen.

`CONTENT_POLICY=off|blocklist|strict`. `blocklist` matches the host's own words and phrases
(`CONTENT_BLOCKLIST`, and `CONTENT_BLOCKLIST_FILE`, re-read when the file changes); `strict`
adds better-profanity's English word list (MIT), minus a few words that are not crude on their
own and that would otherwise hold one joke in seven of the tutorial's corpus (measured by
`benchmarks/bench_content_policy.py`). `flags(text)` says why a text is caught, or None.
No discord, no torch.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from bot.settings import Settings
from model.contracts.jokes import normalise_key

log = logging.getLogger(__name__)
_WORD = re.compile(r"[^\s,.;:!?\"()]+")

# In better-profanity's list but not crude by themselves (each fired on the tutorial's
# one-liners: "God", "fat", "ugly", "stupid", "drunk", ...). Flagging "gay" would also hold
# harmless jokes about people, which a family-friendly filter should not do.
NOT_CRUDE = frozenset(
    {"god", "fat", "ugly", "stupid", "kill", "drunk", "gay", "gays", "hell", "vodka", "pee"}
    | {"fart", "screw", "suck", "sucking", "leper", "facial", "oral", "virgin"}
)


@cache
def _strict_filter() -> Any:
    """better-profanity's word list without NOT_CRUDE (built once: it expands leetspeak)."""
    from better_profanity import Profanity
    from better_profanity.utils import get_complete_path_of_file, read_wordlist

    words = read_wordlist(get_complete_path_of_file("profanity_wordlist.txt"))
    return Profanity([w for w in words if w not in NOT_CRUDE])


def _phrase_keys(lines: list[str]) -> list[str]:
    keys = []
    for line in lines:
        line = line.split("#", 1)[0]
        key = normalise_key(line)
        if key:
            keys.append(key)
    return keys


@dataclass
class ContentPolicy:
    """`mode` is off, blocklist or strict; `blocklist` holds words/phrases (any case)."""

    mode: str = "blocklist"
    blocklist: list[str] = field(default_factory=list)
    blocklist_file: Path | None = None
    _file_keys: list[str] = field(default_factory=list, init=False, repr=False)
    _file_stamp: tuple[float, int] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in {"off", "blocklist", "strict"}:
            raise ValueError(f"content policy must be off, blocklist or strict, not {self.mode}")
        self._keys = _phrase_keys(self.blocklist)
        if self.mode == "strict":
            _strict_filter()  # load at start, not on the first joke

    @classmethod
    def from_settings(cls, settings: Settings) -> ContentPolicy:
        words = [part for part in settings.content_blocklist.split(",") if part.strip()]
        return cls(settings.content_policy, words, settings.content_blocklist_file)

    @property
    def active(self) -> bool:
        return self.mode != "off"

    def flags(self, text: str) -> str | None:
        """Why `text` breaks the policy ("blocklist: 'word'"), or None when it is clean."""
        if self.mode == "off":
            return None
        padded = f" {normalise_key(text)} "
        for key in self._keys + self._blocklist_file_keys():
            if f" {key} " in padded:
                return f"blocklist: {key!r}"
        if self.mode == "strict":
            censored = _strict_filter().censor(text, "\x00")
            if censored != text:
                start = censored.index("\x00")
                word = _WORD.match(text, start)
                return f"word list: {word.group(0) if word else text[start : start + 4]!r}"
        return None

    def _blocklist_file_keys(self) -> list[str]:
        """The file's phrases, re-read when its modification time or size changes."""
        path = self.blocklist_file
        if path is None:
            return []
        try:
            info = path.stat()
            stamp = (info.st_mtime, info.st_size)
            if stamp != self._file_stamp:
                lines = path.read_text(encoding="utf-8").splitlines()
                self._file_keys, self._file_stamp = _phrase_keys(lines), stamp
                log.info("content blocklist %s: %d entries", path, len(self._file_keys))
        except OSError as error:
            if self._file_stamp is not None or not self._file_keys:
                log.warning("cannot read CONTENT_BLOCKLIST_FILE %s: %s", path, error)
            self._file_stamp = None
        return self._file_keys
