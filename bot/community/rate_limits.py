"""Per-member and per-server rate limits on commands: sliding windows kept in memory.

Uses the `limits` library (its asyncio moving-window limiter over in-process memory storage),
so no server is needed; counts start afresh when the bot restarts, which is fine for a flood
guard. A member's window is keyed by member id, so one member's limit never touches another's;
the server window only counts requests that its members' own limits let through, so a member
who is refused does not use up the server's allowance. No discord here: the command layer
checks for admins (who are exempt) and words the answer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse_many
from limits.aio.storage import MemoryStorage
from limits.aio.strategies import MovingWindowRateLimiter

from bot.settings import Settings


def parse_rates(text: str) -> list[RateLimitItem]:
    """`5/minute;50/day` -> the limits; `off` -> none."""
    if text.strip().lower() in {"", "off", "none"}:
        return []
    return list(parse_many(text))


@dataclass(frozen=True)
class CommandLimits:
    per_member: list[RateLimitItem]
    per_server: list[RateLimitItem]


class RateLimiter:
    """`await limiter.retry_after("addjoke", member_id, guild_id)`: None (allowed, counted) or
    the seconds until the member may try again."""

    def __init__(self, commands: dict[str, CommandLimits]) -> None:
        self.commands = commands
        self._limiter = MovingWindowRateLimiter(MemoryStorage())

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        return cls(
            {
                "joke": CommandLimits(
                    parse_rates(settings.rate_joke_member), parse_rates(settings.rate_joke_server)
                ),
                "addjoke": CommandLimits(
                    parse_rates(settings.rate_addjoke_member),
                    parse_rates(settings.rate_addjoke_server),
                ),
            }
        )

    async def retry_after(self, command: str, member_id: int, guild_id: int | None) -> int | None:
        """Count one use of `command` if every window allows it; else how long to wait (s)."""
        rules = self.commands.get(command)
        if rules is None:
            return None
        member = (command, "member", str(member_id))
        server = (command, "server", str(guild_id or "dm"))
        # Test the server first (without counting), then count the member, then the server:
        # a refused member never uses up the server's allowance.
        for item in rules.per_server:
            if not await self._limiter.test(item, *server):
                return await self._wait(item, server)
        for item in rules.per_member:
            if not await self._limiter.hit(item, *member):
                return await self._wait(item, member)
        for item in rules.per_server:
            if not await self._limiter.hit(item, *server):
                return await self._wait(item, server)
        return None

    async def _wait(self, item: RateLimitItem, keys: tuple[str, ...]) -> int:
        stats = await self._limiter.get_window_stats(item, *keys)
        return max(1, math.ceil(stats.reset_time - time.time()))
