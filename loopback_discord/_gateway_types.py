"""A gateway session (resumable), one websocket connection of it, and what it carried."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from loopback_discord._shards import shard_for_guild

EVENT_BUFFER = 1000


@dataclass(frozen=True)
class GatewayEvent:
    """One dispatch the stand-in sent: on which shard and session, and for which guild."""

    shard: tuple[int, int]
    session_id: str
    event: str
    guild_id: int | None


class Session:
    """A gateway session: survives its websocket, so a client can RESUME it."""

    def __init__(self, session_id: str, intents: int, shard: tuple[int, int]) -> None:
        self.id = session_id
        self.intents = intents
        self.shard = shard  # (shard_id, shard_count); (0, 1) when IDENTIFY named none
        self.seq = 0
        self.sent: list[tuple[int, str]] = []


class Connection:
    def __init__(
        self, ws: web.WebSocketResponse, record: Callable[[GatewayEvent], None] | None = None
    ) -> None:
        self.ws = ws
        self._record = record
        self.session: Session | None = None
        self.ready = False
        self.connected_at = time.monotonic()

    async def send(self, payload: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(payload))

    def owns(self, guild_id: int) -> bool:
        """Whether this live, identified connection is the shard of ``guild_id``."""
        if not self.ready or self.ws.closed or self.session is None:
            return False
        shard_id, count = self.session.shard
        return shard_for_guild(guild_id, count) == shard_id

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self.session is not None
        if self._record is not None:
            guild = data.get("id") if event == "GUILD_CREATE" else data.get("guild_id")
            guild_id = None if guild is None else int(guild)
            self._record(GatewayEvent(self.session.shard, self.session.id, event, guild_id))
        self.session.seq += 1
        text = json.dumps({"op": 0, "t": event, "s": self.session.seq, "d": data})
        self.session.sent.append((self.session.seq, text))
        del self.session.sent[:-EVENT_BUFFER]
        await self.ws.send_str(text)
