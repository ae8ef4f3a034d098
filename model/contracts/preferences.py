"""Voted jokes, and the preference snapshot through which the bot hands them to a trainer.

Every generated joke a member voted on or reported becomes one `VotedJoke`: the prompt the
runner got (whitespace folded, as `/joke` sends it), the model's completion, and the votes.
The bot writes them with `write_preferences` (only jokes and votes that may train: no blocked
or deleted joke, no vote of a member who used /forgetme); the trainer reads them back with
`read_preferences`. JSONL, one object a line, like the corpus snapshot.

Which joke is held out for the gate is decided here, by a hash of its duplicate key (the same
rule as the corpus split), so the same joke is held out in every run and a held-out joke that
also sits in the corpus is kept out of the corpus's training side too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from model.contracts.jokes import key_fraction

DEFAULT_HOLDOUT = 0.2  # share of voted jokes kept out of training, for the gate


class VotedJoke(BaseModel):
    """One shown joke with its votes: one unpaired preference example."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: int  # generated_jokes.id
    prompt: str = ""  # what the member typed, as the runner got it ('' = no prompt)
    completion: str  # what the model wrote after the prompt
    key: str  # duplicate key of the joke as shown (model.contracts.jokes.normalise_key)
    up: int = 0
    down: int = 0
    reported: bool = False  # 🚩: undesirable whatever the votes say

    @property
    def net(self) -> int:
        return self.up - self.down

    @property
    def label(self) -> bool | None:
        """True = liked (desirable), False = disliked or reported, None = a tie (not used)."""
        if self.reported:
            return False
        if self.net == 0:
            return None
        return self.net > 0


def is_held_out(joke: VotedJoke, fraction: float) -> bool:
    """Whether the gate keeps this joke for measuring (stable across runs)."""
    return key_fraction(joke.key) < fraction


def write_preferences(path: str | Path, jokes: Iterable[VotedJoke]) -> int:
    """Write the preference snapshot (one JSON object a line); returns how many were written."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for joke in jokes:
            out.write(joke.model_dump_json() + "\n")
            count += 1
    return count


def read_preferences(path: str | Path) -> list[VotedJoke]:
    """Read a preference snapshot; a line that is not a voted joke is an error naming it."""
    jokes: list[VotedJoke] = []
    with Path(path).open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                jokes.append(VotedJoke.model_validate(json.loads(line)))
            except ValueError as error:
                raise ValueError(f"{path}:{number}: not a voted joke ({error})") from error
    return jokes
