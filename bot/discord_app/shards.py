"""Gateway shards: Discord's IDENTIFY pacing and the shard lines of an admin's `/status`.

Pure Python (no discord import): the sharded client in `client` uses the limiter, and
`shard_status` reads a connected client by duck typing, so both are testable on their own.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

#: Discord lets a bot start one session per rate-limit bucket every 5 seconds.
IDENTIFY_INTERVAL = 5.0


class IdentifyLimiter:
    """Paces IDENTIFYs as Discord asks: shard ``i`` is in bucket ``i % max_concurrency`` and each
    bucket starts one session per 5 s (discord.py's default hook waits 5 s before every shard).
    """

    def __init__(
        self, max_concurrency: int = 1, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_concurrency = max(1, int(max_concurrency))
        self._clock = clock
        self._next_free: dict[int, float] = {}

    def reserve(self, shard_id: int) -> float:
        """Book the next IDENTIFY slot of the shard's bucket; return how long to wait for it."""
        bucket = shard_id % self.max_concurrency
        now = self._clock()
        start = max(now, self._next_free.get(bucket, now))
        self._next_free[bucket] = start + IDENTIFY_INTERVAL
        return start - now

    async def wait(self, shard_id: int) -> None:
        delay = self.reserve(shard_id)
        if delay > 0:
            await asyncio.sleep(delay)


def _latency(seconds: float) -> str:
    if math.isinf(seconds) or math.isnan(seconds):
        return "no heartbeat answered yet"
    return f"{seconds * 1000:.0f} ms"


def format_shards(
    shard_count: int,
    latencies: list[tuple[int, float]],
    guilds_per_shard: dict[int, int],
) -> list[str]:
    """`Gateway: 2 shards, this process runs 0, 1` then one line per shard of this process."""
    running = sorted(latencies)
    ids = ", ".join(str(shard_id) for shard_id, _ in running) or "none"
    plural = "shard" if shard_count == 1 else "shards"
    lines = [f"Gateway: {shard_count} {plural}, this process runs {ids}"]
    for shard_id, latency in running:
        guilds = guilds_per_shard.get(shard_id, 0)
        lines.append(
            f"Shard {shard_id}: {_latency(latency)}, {guilds} server{'' if guilds == 1 else 's'}"
        )
    return lines


def shard_status(client: Any) -> str:
    """The gateway part of an admin's `/status`: shard count and each shard's latency.

    An unsharded client (one plain connection) gets one line with its latency.
    """
    latencies = getattr(client, "latencies", None)  # only discord.AutoShardedClient has it
    if latencies is None:
        return f"Gateway: one connection (no shards), {_latency(client.latency)}"
    guilds_per_shard: dict[int, int] = {}
    for guild in client.guilds:
        guilds_per_shard[guild.shard_id] = guilds_per_shard.get(guild.shard_id, 0) + 1
    return "\n".join(format_shards(client.shard_count or 0, latencies, guilds_per_shard))
