"""The gateway websocket: HELLO, heartbeats, IDENTIFY → READY + GUILD_CREATE, RESUME.

Each connection is one shard (``shard: [id, count]`` in IDENTIFY, ``[0, 1]`` without it); a
guild's GUILD_CREATE and INTERACTION_CREATE go on the connection of its shard,
``(guild_id >> 22) % count``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from aiohttp import WSMsgType, web

from loopback_discord._gateway_types import Connection, Session
from loopback_discord._models import NotConnected
from loopback_discord._shards import guild_id_on_shard, parse_shard, shard_for_guild
from loopback_discord._state import StandinState, log

IDENTIFY_INTERVAL = 5.0  # seconds between two IDENTIFYs of one rate-limit bucket
HEARTBEAT_ACK_DELAY = 0.05  # seconds before a heartbeat is acknowledged


class GatewayMixin(StandinState):
    """Gateway websocket handling; sessions survive their socket so clients can RESUME."""

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and RESUMEs on ``resume_gateway_url``."""
        for conn in list(self._connections):
            if not conn.ws.closed:
                await conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def disconnect_gateway(self, code: int = 4000) -> None:
        """Close every gateway socket with ``code`` (4000 lets the client resume)."""
        for conn in list(self._connections):
            await conn.ws.close(code=code, message=b"loopback disconnect")

    def _latest_connection(self, guild_id: int | None = None) -> Connection:
        """The newest live connection of the shard that owns ``guild_id`` (default: the main
        guild). No such shard connected: recorded in ``shard_errors``, raises NotConnected."""
        live = [c for c in self._connections if c.ready and not c.ws.closed]
        if not live:
            raise NotConnected("no bot is connected to the loopback gateway; " + self.describe())
        guild_id = guild_id or self.guild_id
        owners = [c for c in live if c.owns(guild_id)]
        if not owners:
            counts = sorted({c.session.shard[1] for c in live if c.session is not None})
            wanted = ", ".join(f"{shard_for_guild(guild_id, n)} of {n}" for n in counts)
            error = f"no connected shard owns guild {guild_id} (its shard: {wanted})"
            self.shard_errors.append(error)
            self._notifier.notify()
            raise NotConnected(f"{error}; {self.describe()}")
        return max(owners, key=lambda c: c.connected_at)

    async def wait_for_shards(self, shard_count: int, timeout: float = 15) -> None:
        """Every shard ``0..shard_count-1`` of that count is connected (READY sent) and a
        command set was synced: what a sharded bot, or processes splitting it, look like."""
        wanted = [(i, shard_count) for i in range(shard_count)]

        def check() -> bool | None:
            connected = set(self.connected_shards)
            return True if self.sync_count and all(s in connected for s in wanted) else None

        await self._notifier.wait_for(
            check, timeout, lambda: f"shards {wanted} to connect; {self.describe()}"
        )

    def shard_of(self, guild_id: int) -> int | None:
        """The shard id that owns ``guild_id`` for the connected bot's shard count."""
        counts = {shard[1] for shard in self.connected_shards}
        return shard_for_guild(guild_id, counts.pop()) if len(counts) == 1 else None

    async def add_guild(
        self,
        guild_id: int | None = None,
        *,
        name: str | None = None,
        shard: tuple[int, int] | None = None,
    ) -> int:
        """Put the bot in one more guild (a copy of the main one); return its id.

        ``shard=(shard_id, shard_count)`` picks an id that lands on that shard. A connected
        shard that owns the guild gets its GUILD_CREATE at once, as when a server adds the bot.
        """
        if guild_id is None:
            after = max(self.guild_ids)
            guild_id = guild_id_on_shard(*(shard or (0, 1)), after=after)
        elif shard is not None and shard_for_guild(guild_id, shard[1]) != shard[0]:
            raise ValueError(f"guild {guild_id} is not on shard {shard[0]} of {shard[1]}")
        if guild_id in self.guild_ids:
            raise ValueError(f"guild {guild_id} exists already")
        self.extra_guilds[guild_id] = name or f"Loopback Guild {len(self.extra_guilds) + 2}"
        for conn in list(self._connections):
            if conn.owns(guild_id):
                await conn.dispatch("GUILD_CREATE", self._guild(guild_id=guild_id))
        return guild_id

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=16 * 1024 * 1024)
        if not ws.can_prepare(request).ok:
            return await self._root(request)
        await ws.prepare(request)
        conn = Connection(ws, record=self.gateway_events.append)
        self._connections.add(conn)
        try:
            hello = {"heartbeat_interval": self.heartbeat_interval_ms, "_trace": ["loopback"]}
            await conn.send({"op": 10, "d": hello, "s": None, "t": None})
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await self._gateway_message(conn, json.loads(msg.data))
                elif msg.type == WSMsgType.BINARY:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
        except Exception as exc:  # a bug here must show up, not hang the client
            self.server_errors.append(f"gateway: {exc!r}")
            log.exception("loopback gateway failed")
            await ws.close(code=4000, message=b"loopback error")
        finally:
            self._connections.discard(conn)
            self._notifier.notify()
        return ws

    async def _gateway_message(self, conn: Connection, payload: dict[str, Any]) -> None:
        op, d = payload.get("op"), payload.get("d")
        if op == 1:
            # a network's worth of delay: discord.py notes the send time only after the send
            # returns, so an instant ACK would read as a heartbeat the age of the connection
            await asyncio.sleep(HEARTBEAT_ACK_DELAY)
            await conn.send({"op": 11, "d": None, "s": None, "t": None})
        elif op == 2:
            await self._identify(conn, d or {})
        elif op == 6:
            await self._resume(conn, d or {})
        elif op == 8:
            await self._request_members(conn, d or {})
        elif op in (3, 4):
            pass  # presence / voice state updates: nothing to do
        else:
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    def _token_ok(self, token: Any) -> bool:
        if isinstance(token, str) and token.startswith("Bot "):
            token = token[4:]
        return token == self.token

    async def _identify(self, conn: Connection, d: dict[str, Any]) -> None:
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if not self._token_ok(d.get("token")):
            self.auth_failures.append("gateway IDENTIFY")
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = parse_shard(d.get("shard"))
        if shard is None:
            self.shard_errors.append(f"IDENTIFY with an invalid shard {d.get('shard')!r}")
            self._notifier.notify()
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        if self.enforce_identify_limit and self._identified_too_soon(shard[0]):
            self.shard_errors.append(f"IDENTIFY of shard {list(shard)} too soon (max_concurrency)")
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        session = Session(uuid.uuid4().hex, int(d.get("intents") or 0), shard)
        self._sessions[session.id] = session
        conn.session = session
        ready = {
            "v": 10,
            "user": {
                **self._user(self.bot_user_id),
                "verified": True,
                "mfa_enabled": False,
                "email": None,
                "locale": "en-US",
            },
            "guilds": [{"id": str(g), "unavailable": True} for g in self._guilds_of(shard)],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "shard": list(shard),
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": [],
            "user_settings": {},
            "auth": {},
            "_trace": ["loopback"],
        }
        await conn.dispatch("READY", ready)
        for guild_id in self._guilds_of(shard):
            await conn.dispatch("GUILD_CREATE", self._guild(guild_id=guild_id))
        conn.ready = True
        self.identify_count += 1
        self._notifier.notify()

    def _guilds_of(self, shard: tuple[int, int]) -> list[int]:
        return [g for g in self.guild_ids if shard_for_guild(g, shard[1]) == shard[0]]

    def _identified_too_soon(self, shard_id: int) -> bool:
        """Discord's session start rule: one IDENTIFY per bucket (id % max_concurrency) per 5 s."""
        bucket = shard_id % max(1, self.max_concurrency)
        now = time.monotonic()
        last = self._identified_at.get(bucket)
        if last is not None and now - last < IDENTIFY_INTERVAL:
            return True
        self._identified_at[bucket] = now
        return False

    async def _resume(self, conn: Connection, d: dict[str, Any]) -> None:
        if not self._token_ok(d.get("token")):
            self.auth_failures.append("gateway RESUME")
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        session = self._sessions.get(str(d.get("session_id")))
        if session is None:
            await conn.send({"op": 9, "d": False, "s": None, "t": None})
            return
        conn.session = session
        seq = int(d.get("seq") or 0)
        for s, text in session.sent:
            if s > seq:
                await conn.ws.send_str(text)
        await conn.dispatch("RESUMED", {"_trace": ["loopback"]})
        conn.ready = True
        self.resume_count += 1
        self._notifier.notify()

    async def _request_members(self, conn: Connection, d: dict[str, Any]) -> None:
        ids = d.get("user_ids")
        wanted = [int(i) for i in ids] if ids else list(self._users)
        members = [self._member(uid) for uid in wanted if uid in self._users]
        chunk = {
            "guild_id": str(self.guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [str(i) for i in wanted if i not in self._users],
            "nonce": d.get("nonce"),
        }
        if conn.session is not None:
            await conn.dispatch("GUILD_MEMBERS_CHUNK", chunk)
