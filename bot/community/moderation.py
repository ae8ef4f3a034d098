"""Whether a new joke goes straight into the corpus or waits for a moderator. Pure functions.

`MODERATION=off|new|all` is the host's setting; `flagged` is the content check's verdict on the
text (a blocklist or content policy match): a flagged joke always waits for review.
"""

from __future__ import annotations

from typing import Literal

from model.contracts.jokes import JokeStatus

ModerationMode = Literal["off", "new", "all"]
HOST_SOURCES = ("import", "starter")  # what the host adds: never held unless flagged


def initial_status(
    *,
    mode: ModerationMode,
    source: str,
    author_is_admin: bool = False,
    approved_by_author: int = 0,
    new_member_jokes: int = 3,
    flagged: bool = False,
) -> JokeStatus:
    """`approved` (joins the corpus now) or `pending` (waits for /review).

    - `flagged` text always waits, whatever the mode.
    - `off`: nothing else waits. `all`: every joke waits (community ones too).
    - `new`: a member's jokes wait until `new_member_jokes` of theirs were approved; admins'
      jokes and jokes the community voted up do not wait.
    Host imports (`source` in HOST_SOURCES) are never held unless flagged, whatever the mode.
    """
    if flagged:
        return JokeStatus.PENDING
    if mode == "off" or source in HOST_SOURCES:
        return JokeStatus.APPROVED
    if mode == "all":
        return JokeStatus.PENDING
    if source != "user" or author_is_admin:
        return JokeStatus.APPROVED
    if approved_by_author < new_member_jokes:
        return JokeStatus.PENDING
    return JokeStatus.APPROVED
