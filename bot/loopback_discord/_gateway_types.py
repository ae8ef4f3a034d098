"""A gateway session (resumable) and one websocket connection of it."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

EVENT_BUFFER = 1000


class Session:
    """A gateway session: survives its websocket, so a client can RESUME it."""

    def __init__(self, session_id: str, intents: int, shard: list[int] | None) -> None:
        self.id = session_id
        self.intents = intents
        self.shard = shard
        self.seq = 0
        self.sent: list[tuple[int, str]] = []


class Connection:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session: Session | None = None
        self.ready = False
        self.connected_at = time.monotonic()

    async def send(self, payload: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self.session is not None
        self.session.seq += 1
        text = json.dumps({"op": 0, "t": event, "s": self.session.seq, "d": data})
        self.session.sent.append((self.session.seq, text))
        del self.session.sent[:-EVENT_BUFFER]
        await self.ws.send_str(text)
