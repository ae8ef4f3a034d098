"""Discord's shard routing: which gateway shard carries a guild's events."""

from __future__ import annotations

from typing import Any

#: The loopback guild ids start here (a snowflake from late 2024).
GUILD_ID_BASE = 1_300_000_000_000_000_100


def shard_for_guild(guild_id: int, shard_count: int) -> int:
    """Discord's rule: a guild's events go to shard ``(guild_id >> 22) % shard_count``."""
    if shard_count < 1:
        raise ValueError(f"shard_count must be at least 1, got {shard_count}")
    return (guild_id >> 22) % shard_count


def guild_id_on_shard(shard_id: int, shard_count: int, *, after: int = GUILD_ID_BASE) -> int:
    """The first snowflake above ``after`` whose guild lands on ``shard_id`` of ``shard_count``."""
    if not 0 <= shard_id < shard_count:
        raise ValueError(f"shard {shard_id} is not in 0..{shard_count - 1}")
    candidate = ((after >> 22) + 1) << 22 | (after & ((1 << 22) - 1))
    while shard_for_guild(candidate, shard_count) != shard_id:
        candidate += 1 << 22
    return candidate


def parse_shard(value: Any) -> tuple[int, int] | None:
    """IDENTIFY's ``shard: [shard_id, shard_count]`` as a tuple; None when it is malformed."""
    if value is None:
        return (0, 1)
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return None
    shard_id, count = value
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (shard_id, count)):
        return None
    if count < 1 or not 0 <= shard_id < count:
        return None
    return (shard_id, count)
