"""Whether a new joke goes straight into the corpus or waits for a moderator. Pure functions.

`MODERATION=off|new|all` is the host's setting; `flagged` is the content check's verdict on the
text (a blocklist or content policy match): a flagged joke always waits for review.
"""

from __future__ import annotations

from typing import Literal

ModerationMode = Literal["off", "new", "all"]
JokeStatus = Literal["approved", "pending"]


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
    Host imports (`source='import'`) are never held unless flagged.
    """
    if flagged:
        return "pending"
    if mode == "off" or source in ("import", "starter"):
        return "approved"
    if mode == "all":
        return "pending"
    if source != "user" or author_is_admin:
        return "approved"
    return "pending" if approved_by_author < new_member_jokes else "approved"
