"""The loopback Discord: REST routes and a gateway websocket on 127.0.0.1 for a real client."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import WSMsgType, web

from bot.loopback_discord._models import (
    ACK_TIMEOUT,
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    BOT_PERMISSIONS,
    DEFAULT_MEMBER_PERMISSIONS,
    EPHEMERAL,
    IS_COMPONENTS_V2,
    LOADING,
    MANAGE_GUILD,
    SUPPRESS_EMBEDS,
    SUPPRESS_NOTIFICATIONS,
    Attachment,
    CommandHidden,
    Interaction,
    Message,
    NotConnected,
    Notifier,
    Snowflakes,
    UnknownCommand,
)
from bot.loopback_discord._options import build_options
from bot.loopback_discord._validation import (
    DiscordHTTPError,
    empty_message,
    invalid_form,
    unknown,
    validate_command,
    validate_message,
)

log = logging.getLogger(__name__)

_JSON = {"Content-Type": "application/json"}  # exactly; discord.py compares the header
_MESSAGE_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
_EVENT_BUFFER = 1000
Listener = Callable[[str, "Message | None", "Interaction | None"], Any]
Handler = Callable[..., Awaitable[web.StreamResponse]]


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), headers=_JSON)


class _Session:
    """A gateway session: survives its websocket, so a client can RESUME it."""

    def __init__(self, session_id: str, intents: int, shard: list[int] | None) -> None:
        self.id = session_id
        self.intents = intents
        self.shard = shard
        self.seq = 0
        self.sent: list[tuple[int, str]] = []


class _Connection:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.session: _Session | None = None
        self.ready = False
        self.connected_at = time.monotonic()

    async def send(self, payload: dict[str, Any]) -> None:
        await self.ws.send_str(json.dumps(payload))

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        assert self.session is not None
        self.session.seq += 1
        text = json.dumps({"op": 0, "t": event, "s": self.session.seq, "d": data})
        self.session.sent.append((self.session.seq, text))
        del self.session.sent[:-_EVENT_BUFFER]
        await self.ws.send_str(text)


class _Resolver:
    """Fills ``data.resolved`` for user/channel/role options of one invocation."""

    def __init__(self, standin: LoopbackDiscord) -> None:
        self._standin = standin
        self.resolved: dict[str, dict[str, Any]] = {}

    def _put(self, kind: str, key: int, value: dict[str, Any]) -> None:
        self.resolved.setdefault(kind, {})[str(key)] = value

    def resolve_user(self, user_id: int) -> None:
        s = self._standin
        self._put("users", user_id, s._user(user_id))
        member = s._member(user_id, user=False)
        member["permissions"] = str(s._member_permissions(user_id))
        self._put("members", user_id, member)

    def resolve_channel(self, channel_id: int) -> dict[str, Any] | None:
        s = self._standin
        if channel_id != s.channel_id:
            return None
        channel = {
            "id": str(channel_id),
            "name": s.channel_name,
            "type": 0,
            "permissions": str(BOT_PERMISSIONS),
            "guild_id": str(s.guild_id),
            "parent_id": None,
            "topic": None,
            "nsfw": False,
            "position": 0,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        self._put("channels", channel_id, channel)
        return channel

    def resolve_role(self, role_id: int) -> dict[str, Any] | None:
        role = next((r for r in self._standin._roles() if int(r["id"]) == role_id), None)
        if role is not None:
            self._put("roles", role_id, role)
        return role


class LoopbackDiscord:
    """A small Discord (REST + gateway) on loopback that the real discord.py client talks to.

    Point the client at :attr:`api_base` (``discord.http.Route.BASE``) and :attr:`gateway_url`
    (``DiscordWebSocket.DEFAULT_GATEWAY``); then :meth:`invoke` delivers slash commands as a
    member would, and :class:`Interaction`/:attr:`channel_messages` record what the bot sent.
    """

    def __init__(
        self, *, token: str = "loopback-token", host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.token = token
        self.host = host
        self.port = port
        self.application_id = 1_300_000_000_000_000_001
        self.bot_user_id = self.application_id  # as on Discord: the bot user shares the app id
        self.bot_username = "jokebot"
        self.owner_id = 1_300_000_000_000_000_010
        self.guild_id = 1_300_000_000_000_000_100
        self.channel_id = 1_300_000_000_000_000_101
        self.admin_role_id = 1_300_000_000_000_000_102
        self.member_role_id = 1_300_000_000_000_000_103
        self.bot_role_id = 1_300_000_000_000_000_104
        self.guild_name = "Loopback Guild"
        self.channel_name = "jokes"
        self.ack_timeout = ACK_TIMEOUT
        self.heartbeat_interval_ms = 41_250

        self.global_commands: dict[str, dict[str, Any]] = {}
        self.guild_commands: dict[str, dict[str, Any]] = {}
        self.interactions: dict[int, Interaction] = {}
        self.channel_messages: list[Message] = []
        self.unhandled_routes: list[str] = []
        self.auth_failures: list[str] = []
        self.rest_errors: list[str] = []  # every 4xx answered (besides unhandled routes)
        self.server_errors: list[str] = []  # exceptions inside the stand-in itself
        self.requests: list[str] = []
        self.identify_count = 0
        self.resume_count = 0
        self.sync_count = 0

        self._ids = Snowflakes()
        self._notifier = Notifier()
        self._users: dict[int, dict[str, Any]] = {}
        self._joined_at = time.time() - 86_400
        self._sessions: dict[str, _Session] = {}
        self._connections: set[_Connection] = set()
        self._listeners: list[Listener] = []
        self._runner: web.AppRunner | None = None
        self._routes = self._route_table()
        self._remember_user(self.bot_user_id, self.bot_username, bot=True)
        self._remember_user(self.owner_id, "owner")

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", r"/api/v{version:\d+}/{tail:.*}", self._rest)
        app.router.add_route("*", "/{tail:.*}", self._root)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Close gateway sockets (code 1001) and the server."""
        for conn in list(self._connections):
            await conn.ws.close(code=1001, message=b"loopback Discord stopping")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._notifier.notify()

    async def __aenter__(self) -> LoopbackDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def api_base(self) -> str:
        return f"http://{self.host}:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://{self.host}:{self.port}/gateway"

    @property
    def connected_sessions(self) -> int:
        """Live gateway connections that IDENTIFYed or RESUMEd."""
        return sum(1 for c in self._connections if c.ready and not c.ws.closed)

    @property
    def registered_commands(self) -> dict[str, dict[str, Any]]:
        """Commands by name, global and guild merged (a guild command wins a name clash)."""
        return {**self.global_commands, **self.guild_commands}

    @property
    def failures(self) -> list[str]:
        """Failures reported by the harness (bot crashed, error logged)."""
        return self._notifier.failures

    def report_failure(self, text: str) -> None:
        """Make every current and later ``wait_*`` raise :class:`BotFailure` with this text."""
        self._notifier.fail(text)

    def add_listener(self, listener: Listener) -> None:
        """``listener(event, message, interaction)`` on "defer", "message", "edit", "delete",
        "modal" (for a live view such as the sandbox); exceptions are logged and ignored."""
        self._listeners.append(listener)

    def describe(self) -> str:
        """A summary of the stand-in's state, for failure messages."""
        parts = [
            f"gateway connections={self.connected_sessions}",
            f"commands={sorted(self.registered_commands)}",
        ]
        for name in ("unhandled_routes", "auth_failures", "rest_errors", "server_errors"):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value}")
        return "stand-in: " + ", ".join(parts)

    async def wait_until_ready(self, timeout: float = 15) -> None:
        """A client IDENTIFYed (READY and GUILD_CREATE sent) and at least one command set was
        synced (global or guild)."""

        def check() -> bool | None:
            return True if self.connected_sessions and self.sync_count else None

        await self._notifier.wait_for(
            check,
            timeout,
            lambda: (
                f"a bot to log in and sync its commands (syncs={self.sync_count}); "
                + self.describe()
            ),
        )

    async def wait_for_channel_message(
        self, predicate: Callable[[Message], bool] | None = None, timeout: float = 10
    ) -> Message:
        """The first channel message with something to show that matches ``predicate``."""

        def check() -> Message | None:
            for msg in self.channel_messages:
                if msg.visible and (predicate is None or predicate(msg)):
                    return msg
            return None

        def describe() -> str:
            sent = ", ".join(m.summary() for m in self.channel_messages) or "none"
            return f"a channel message; channel messages: {sent}; {self.describe()}"

        return await self._notifier.wait_for(check, timeout, describe)

    # ------------------------------------------------------------------ test actions

    async def invoke(
        self,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        user_id: int = 1001,
        username: str = "alice",
        permissions: int = DEFAULT_MEMBER_PERMISSIONS,
        roles: list[int] | None = None,
        respect_default_permissions: bool = True,
        validate_options: bool = True,
        locale: str = "en-US",
    ) -> Interaction:
        """Deliver ``/name`` (``"group sub"`` for subcommands) as a guild member would.

        ``permissions`` are the member's base permission bits; the permissions of ``roles``
        (default: the plain member role) are added, and an administrator gets every bit.
        Raises :class:`CommandHidden` if Discord would not deliver the command to that member
        (``default_member_permissions``), :class:`UnknownCommand`, :class:`InvalidOptions`,
        :class:`NotConnected`.
        """
        root, *path = name.split()
        command = self.registered_commands.get(root)
        if command is None:
            raise UnknownCommand(
                f"/{root} is not registered; registered: {sorted(self.registered_commands)}"
            )
        role_ids = [self.member_role_id] if roles is None else list(roles)
        self._remember_user(user_id, username, role_ids=role_ids, base=permissions)
        effective = self._member_permissions(user_id)
        required = command.get("default_member_permissions")
        if respect_default_permissions and required is not None:
            need = int(required)
            if not (effective & ADMINISTRATOR) and (need == 0 or effective & need != need):
                raise CommandHidden(
                    f"/{root} needs permissions {need:#x} (default_member_permissions); "
                    f"member {user_id} has {effective:#x}"
                )
        resolver = _Resolver(self)
        opts = build_options(
            command, path, dict(options or {}), resolver, validate=validate_options
        )
        conn = self._latest_connection()
        iid = self._ids.next()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        data: dict[str, Any] = {
            "id": command["id"],
            "name": root,
            "type": command.get("type", 1),
            "options": opts,
        }
        if resolver.resolved:
            data["resolved"] = resolver.resolved
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        channel = resolver.resolve_channel(self.channel_id) or {}
        channel = {**channel, "permissions": str(effective), "last_message_id": None}
        payload = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": 2,
            "token": token,
            "version": 1,
            "guild_id": str(self.guild_id),
            "guild": {"id": str(self.guild_id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "channel_id": str(self.channel_id),
            "channel": channel,
            "member": self._member(user_id),
            "data": data,
            "app_permissions": str(BOT_PERMISSIONS),
            "locale": locale,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": 10 * 1024 * 1024,
        }
        interaction = Interaction(
            id=iid,
            token=token,
            name=" ".join([root, *path]),
            payload=payload,
            notifier=self._notifier,
            describe_standin=self.describe,
        )
        self.interactions[iid] = interaction
        interaction.created_at = asyncio.get_running_loop().time()
        await conn.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT: the client closes and RESUMEs on ``resume_gateway_url``."""
        for conn in list(self._connections):
            if not conn.ws.closed:
                await conn.send({"op": 7, "d": None, "s": None, "t": None})

    async def disconnect_gateway(self, code: int = 4000) -> None:
        """Close every gateway socket with ``code`` (4000 lets the client resume)."""
        for conn in list(self._connections):
            await conn.ws.close(code=code, message=b"loopback disconnect")

    # ------------------------------------------------------------------ payloads

    def _remember_user(
        self,
        user_id: int,
        username: str,
        *,
        bot: bool = False,
        role_ids: list[int] | None = None,
        base: int = DEFAULT_MEMBER_PERMISSIONS,
    ) -> None:
        self._users[user_id] = {
            "username": username,
            "bot": bot,
            "roles": [self.bot_role_id] if bot else (role_ids or []),
            "base": BOT_PERMISSIONS if bot else base,
        }

    def _user(self, user_id: int) -> dict[str, Any]:
        info = self._users.get(user_id) or {"username": f"user{user_id}", "bot": False}
        return {
            "id": str(user_id),
            "username": info["username"],
            "discriminator": "0",
            "global_name": None if info["bot"] else info["username"],
            "avatar": None,
            "bot": info["bot"],
            "system": False,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "primary_guild": None,
        }

    def _member(self, user_id: int, *, user: bool = True) -> dict[str, Any]:
        info = self._users.get(user_id) or {"roles": [self.member_role_id]}
        member: dict[str, Any] = {
            "roles": [str(r) for r in info["roles"]],
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": _iso(self._joined_at),
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
            "permissions": str(self._member_permissions(user_id)),
        }
        if user:
            member["user"] = self._user(user_id)
        return member

    def _member_permissions(self, user_id: int) -> int:
        if user_id == self.owner_id:
            return ALL_PERMISSIONS
        info = self._users.get(user_id) or {"roles": [], "base": DEFAULT_MEMBER_PERMISSIONS}
        perms = info["base"]
        role_perms = {int(r["id"]): int(r["permissions"]) for r in self._roles()}
        for rid in info["roles"]:
            perms |= role_perms.get(int(rid), 0)
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms

    def _roles(self) -> list[dict[str, Any]]:
        def role(rid: int, name: str, perms: int, position: int, **extra: Any) -> dict[str, Any]:
            return {
                "id": str(rid),
                "name": name,
                "description": None,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "icon": None,
                "unicode_emoji": None,
                "position": position,
                "permissions": str(perms),
                "managed": False,
                "mentionable": False,
                "flags": 0,
                **extra,
            }

        return [
            role(self.guild_id, "@everyone", DEFAULT_MEMBER_PERMISSIONS, 0),
            role(self.member_role_id, "Member", 0, 1),
            role(self.bot_role_id, self.bot_username, BOT_PERMISSIONS, 2, managed=True,
                 tags={"bot_id": str(self.bot_user_id)}),
            role(self.admin_role_id, "Admin", ADMINISTRATOR | MANAGE_GUILD, 3),
        ]  # fmt: skip

    def _channel(self) -> dict[str, Any]:
        return {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": self.channel_name,
            "position": 0,
            "permission_overwrites": [],
            "topic": None,
            "nsfw": False,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "parent_id": None,
            "flags": 0,
        }

    def _guild(self, *, full: bool = True) -> dict[str, Any]:
        guild: dict[str, Any] = {
            "id": str(self.guild_id),
            "name": self.guild_name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": self._roles(),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(self.channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "premium_progress_bar_enabled": False,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "max_members": 500_000,
            "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50,
        }
        if full:
            guild.update(
                {
                    "joined_at": _iso(self._joined_at),
                    "large": False,
                    "unavailable": False,
                    "member_count": len(self._users),
                    "voice_states": [],
                    "members": [self._member(self.bot_user_id), self._member(self.owner_id)],
                    "channels": [self._channel()],
                    "threads": [],
                    "presences": [],
                    "stage_instances": [],
                    "guild_scheduled_events": [],
                    "soundboard_sounds": [],
                    "embedded_activities": [],
                    "lazy": True,
                }
            )
        return guild

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": self.bot_username,
            "description": "jokebot on the loopback Discord",
            "icon": None,
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self._user(self.owner_id),
            "verify_key": "0" * 64,
            "team": None,
            "flags": 0,
            "summary": "",
            "tags": [],
            "redirect_uris": [],
            "interactions_endpoint_url": None,
            "approximate_guild_count": 1,
            "bot": self._user(self.bot_user_id),
        }

    def _message_payload(self, msg: Message) -> dict[str, Any]:
        pings = msg.pings
        payload: dict[str, Any] = {
            "id": str(msg.id),
            "type": 0 if msg.kind == "channel" else 20,
            "channel_id": str(msg.channel_id),
            "author": self._user(self.bot_user_id),
            "content": msg.content,
            "timestamp": _iso(msg.created_at),
            "edited_timestamp": None if msg.edited_at is None else _iso(msg.edited_at),
            "tts": msg.tts,
            "mention_everyone": "everyone" in pings,
            "mentions": [self._user(int(p[5:])) for p in pings if p.startswith("user:")],
            "mention_roles": [p[5:] for p in pings if p.startswith("role:")],
            "attachments": [
                {
                    "id": str(a.id),
                    "filename": a.filename,
                    "size": a.size,
                    "url": f"http://{self.host}:{self.port}/attachments/{a.id}/{a.filename}",
                    "proxy_url": f"http://{self.host}:{self.port}/attachments/{a.id}/{a.filename}",
                    "content_type": a.content_type,
                    "description": a.description,
                }
                for a in msg.attachments
            ],
            "embeds": msg.embeds,
            "components": msg.components,
            "pinned": False,
            "flags": msg.flags,
        }
        if msg.kind != "channel":
            payload["webhook_id"] = str(self.application_id)
            payload["application_id"] = str(self.application_id)
        return payload

    # ------------------------------------------------------------------ gateway

    def _latest_connection(self) -> _Connection:
        live = [c for c in self._connections if c.ready and not c.ws.closed]
        if not live:
            raise NotConnected("no bot is connected to the loopback gateway; " + self.describe())
        return max(live, key=lambda c: c.connected_at)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(compress=False, max_msg_size=16 * 1024 * 1024)
        if not ws.can_prepare(request).ok:
            return await self._root(request)
        await ws.prepare(request)
        conn = _Connection(ws)
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

    async def _gateway_message(self, conn: _Connection, payload: dict[str, Any]) -> None:
        op, d = payload.get("op"), payload.get("d")
        if op == 1:
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

    async def _identify(self, conn: _Connection, d: dict[str, Any]) -> None:
        if conn.session is not None:
            await conn.ws.close(code=4005, message=b"Already authenticated.")
            return
        if not self._token_ok(d.get("token")):
            self.auth_failures.append("gateway IDENTIFY")
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        shard = d.get("shard")
        session = _Session(uuid.uuid4().hex, int(d.get("intents") or 0), shard)
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
            "guilds": [{"id": str(self.guild_id), "unavailable": True}],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "shard": shard or [0, 1],
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
        await conn.dispatch("GUILD_CREATE", self._guild())
        conn.ready = True
        self.identify_count += 1
        self._notifier.notify()

    async def _resume(self, conn: _Connection, d: dict[str, Any]) -> None:
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

    async def _request_members(self, conn: _Connection, d: dict[str, Any]) -> None:
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

    # ------------------------------------------------------------------ REST plumbing

    def _route_table(self) -> list[tuple[str, re.Pattern[str], Handler, bool]]:
        app, guild, cmd = r"(?P<app>\d+)", r"(?P<guild>\d+)", r"(?P<cmd>\d+)"
        hook = r"/webhooks/(?P<app>\d+)/(?P<token>[^/]+)"
        chan = r"/channels/(?P<channel>\d+)"
        table: list[tuple[str, str, Handler, bool]] = [
            ("GET", r"/users/@me", self._get_me, True),
            ("GET", r"/oauth2/applications/@me", self._get_application, True),
            ("GET", r"/applications/@me", self._get_application, True),
            ("GET", r"/gateway", self._get_gateway, False),
            ("GET", r"/gateway/bot", self._get_gateway, True),
            ("GET", rf"/applications/{app}/commands", self._list_commands, True),
            ("PUT", rf"/applications/{app}/commands", self._put_commands, True),
            ("POST", rf"/applications/{app}/commands", self._post_command, True),
            ("GET", rf"/applications/{app}/commands/{cmd}", self._get_command, True),
            ("DELETE", rf"/applications/{app}/commands/{cmd}", self._delete_command, True),
            ("GET", rf"/applications/{app}/guilds/{guild}/commands", self._list_commands, True),
            ("PUT", rf"/applications/{app}/guilds/{guild}/commands", self._put_commands, True),
            ("POST", rf"/applications/{app}/guilds/{guild}/commands", self._post_command, True),
            ("GET", rf"/applications/{app}/guilds/{guild}/commands/{cmd}", self._get_command, True),
            ("DELETE", rf"/applications/{app}/guilds/{guild}/commands/{cmd}",
             self._delete_command, True),
            ("POST", r"/interactions/(?P<iid>\d+)/(?P<token>[^/]+)/callback",
             self._callback, False),
            ("POST", hook, self._execute_webhook, False),
            ("GET", hook + r"/messages/(?P<mid>@original|\d+)", self._webhook_message, False),
            ("PATCH", hook + r"/messages/(?P<mid>@original|\d+)", self._webhook_message, False),
            ("DELETE", hook + r"/messages/(?P<mid>@original|\d+)", self._webhook_message, False),
            ("GET", chan, self._get_channel, True),
            ("GET", chan + r"/messages", self._list_channel_messages, True),
            ("POST", chan + r"/messages", self._post_channel_message, True),
            ("GET", chan + r"/messages/(?P<mid>\d+)", self._channel_message, True),
            ("PATCH", chan + r"/messages/(?P<mid>\d+)", self._channel_message, True),
            ("DELETE", chan + r"/messages/(?P<mid>\d+)", self._channel_message, True),
            ("POST", chan + r"/typing", self._typing, True),
            ("GET", rf"/guilds/{guild}", self._get_guild, True),
        ]  # fmt: skip
        return [(m, re.compile(p), h, auth) for m, p, h, auth in table]

    async def _root(self, request: web.Request) -> web.StreamResponse:
        self.unhandled_routes.append(f"{request.method} {request.path}")
        self._notifier.notify()
        return _json({"message": "404: Not Found", "code": 0}, 404)

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        route = f"{request.method} {path}"
        self.requests.append(route)
        for method, pattern, handler, auth in self._routes:
            match = pattern.fullmatch(path)
            if match is None or method != request.method:
                continue
            if auth and request.headers.get("Authorization") != f"Bot {self.token}":
                self.auth_failures.append(route)
                self._notifier.notify()
                return _json({"message": "401: Unauthorized", "code": 0}, 401)
            try:
                return await handler(request, **match.groupdict())
            except DiscordHTTPError as err:
                self.rest_errors.append(f"{route} -> {err.status} {err.body}")
                self._notifier.notify()
                return _json(err.body, err.status)
            except Exception as exc:
                # 400, not 500: discord.py retries 5xx with sleeps, which would look like a hang
                self.server_errors.append(f"{route}: {exc!r}")
                log.exception("loopback Discord failed on %s", route)
                self._notifier.notify()
                return _json({"message": f"loopback Discord error: {exc!r}", "code": 0}, 400)
        self.unhandled_routes.append(route)
        self._notifier.notify()
        return _json({"message": "404: Not Found", "code": 0}, 404)

    async def _body(self, request: web.Request) -> tuple[Any, list[Attachment]]:
        """JSON body, or multipart ``payload_json`` plus ``files[n]`` parts."""
        if request.content_type.startswith("multipart/"):
            payload: Any = {}
            files: list[Attachment] = []
            reader = await request.multipart()
            while (part := await reader.next()) is not None:
                if part.name == "payload_json":
                    payload = json.loads(await part.text())
                elif getattr(part, "filename", None):
                    data = await part.read()
                    files.append(
                        Attachment(
                            id=self._ids.next(),
                            filename=part.filename,
                            data=bytes(data),
                            content_type=part.headers.get("Content-Type"),
                        )
                    )
            return payload, files
        raw = await request.read()
        if not raw:
            return {}, []
        try:
            return json.loads(raw), []
        except ValueError:
            raise DiscordHTTPError(400, 50109, "The request body contains invalid JSON.") from None

    def _notify(self, event: str, msg: Message | None, interaction: Interaction | None) -> None:
        self._notifier.notify()
        for listener in list(self._listeners):
            try:
                listener(event, msg, interaction)
            except Exception:
                log.exception("loopback Discord listener failed")

    # ------------------------------------------------------------------ messages

    def _new_message(
        self,
        data: dict[str, Any],
        files: list[Attachment],
        prefix: tuple[str, ...],
        *,
        kind: str,
        flag_mask: int,
        interaction: Interaction | None = None,
        message_id: int | None = None,
    ) -> Message:
        validate_message(data, prefix)
        for i, desc in enumerate(data.get("attachments") or []):
            if i < len(files) and desc.get("description"):
                files[i].description = desc["description"]
        msg = Message(
            id=message_id or self._ids.next(),
            content=data.get("content") or "",
            flags=int(data.get("flags") or 0) & flag_mask,
            allowed_mentions=data.get("allowed_mentions"),
            embeds=list(data.get("embeds") or []),
            components=list(data.get("components") or []),
            attachments=files,
            kind=kind,
            channel_id=self.channel_id,
            interaction_id=None if interaction is None else interaction.id,
            tts=bool(data.get("tts")),
        )
        if not (msg.visible or msg.components or data.get("sticker_ids") or data.get("poll")):
            raise empty_message()
        return msg

    def _edit_message(
        self, msg: Message, data: dict[str, Any], files: list[Attachment], prefix: tuple[str, ...]
    ) -> None:
        validate_message(data, prefix)
        content = (data.get("content") or "") if "content" in data else msg.content
        embeds = list(data.get("embeds") or []) if "embeds" in data else msg.embeds
        attachments = msg.attachments
        if "attachments" in data:
            keep = {str(a.get("id")) for a in data.get("attachments") or []}
            attachments = [a for a in msg.attachments if str(a.id) in keep]
        attachments = attachments + files
        if not (content or embeds or attachments or msg.components or data.get("components")):
            raise empty_message()
        msg.history.append(msg.content)
        msg.content, msg.embeds, msg.attachments = content, embeds, attachments
        if "components" in data:
            msg.components = list(data.get("components") or [])
        if "content" in data or "allowed_mentions" in data:
            msg.allowed_mentions = data.get("allowed_mentions")
        if "flags" in data and data["flags"] is not None:
            msg.flags = (msg.flags & ~SUPPRESS_EMBEDS) | (int(data["flags"]) & SUPPRESS_EMBEDS)
        msg.edited_at = time.time()

    # ------------------------------------------------------------------ REST handlers

    def _check_app(self, app: str) -> None:
        if int(app) != self.application_id:
            raise DiscordHTTPError(403, 50001, "Missing Access")

    def _check_guild(self, guild: str | None) -> None:
        if guild is not None and int(guild) != self.guild_id:
            raise DiscordHTTPError(403, 50001, "Missing Access")

    async def _get_me(self, request: web.Request) -> web.Response:
        me = self._users[self.bot_user_id]
        return _json(
            {**self._user(self.bot_user_id), "username": me["username"], "verified": True,
             "mfa_enabled": False, "locale": "en-US", "email": None}
        )  # fmt: skip

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json(self._application())

    async def _get_gateway(self, request: web.Request) -> web.Response:
        limit = {"total": 1000, "remaining": 999, "reset_after": 86_400_000, "max_concurrency": 1}
        return _json({"url": self.gateway_url, "shards": 1, "session_start_limit": limit})

    async def _get_guild(self, request: web.Request, guild: str) -> web.Response:
        self._check_guild(guild)
        return _json(self._guild(full=False))

    def _scope(self, app: str, guild: str | None) -> dict[str, dict[str, Any]]:
        self._check_app(app)
        self._check_guild(guild)
        return self.global_commands if guild is None else self.guild_commands

    def _normalize_command(
        self, raw: dict[str, Any], guild: str | None, existing: dict[str, Any] | None
    ) -> dict[str, Any]:
        cmd = {k: v for k, v in raw.items() if k not in ("id", "application_id", "version")}
        cmd.setdefault("type", 1)
        cmd.setdefault("options", [])
        dmp = cmd.get("default_member_permissions")
        cmd["default_member_permissions"] = None if dmp is None else str(int(dmp))
        cmd.setdefault("dm_permission", True)
        cmd.setdefault("nsfw", False)
        if guild is not None:
            cmd["guild_id"] = guild
        same = (
            existing is not None
            and all(existing.get(k) == v for k, v in cmd.items())
            and set(existing) - {"id", "application_id", "version"} == set(cmd)
        )
        cmd["id"] = existing["id"] if existing else str(self._ids.next())
        cmd["application_id"] = str(self.application_id)
        cmd["version"] = existing["version"] if same and existing else str(self._ids.next())
        return cmd

    async def _list_commands(
        self, request: web.Request, app: str, guild: str | None = None
    ) -> web.Response:
        return _json(list(self._scope(app, guild).values()))

    async def _put_commands(
        self, request: web.Request, app: str, guild: str | None = None
    ) -> web.Response:
        scope = self._scope(app, guild)
        body, _ = await self._body(request)
        if not isinstance(body, list):
            raise invalid_form((), "BASE_TYPE_ARRAY", "Must be an array.")
        if len(body) > 100:
            raise invalid_form((), "BASE_TYPE_MAX_LENGTH", "Must be 100 or fewer in length.")
        seen: set[tuple[int, str]] = set()
        for i, raw in enumerate(body):
            validate_command(raw, i)
            key = (raw.get("type", 1), raw["name"])
            if key in seen:
                raise invalid_form(
                    (i, "name"), "APPLICATION_COMMANDS_DUPLICATE_NAME", "Duplicate name"
                )
            seen.add(key)
        new = [self._normalize_command(raw, guild, scope.get(raw["name"])) for raw in body]
        scope.clear()
        scope.update({c["name"]: c for c in new})
        self.sync_count += 1
        self._notifier.notify()
        return _json(new)

    async def _post_command(
        self, request: web.Request, app: str, guild: str | None = None
    ) -> web.Response:
        scope = self._scope(app, guild)
        raw, _ = await self._body(request)
        validate_command(raw, None)
        existing = scope.get(raw["name"])
        cmd = self._normalize_command(raw, guild, existing)
        scope[cmd["name"]] = cmd
        self.sync_count += 1
        self._notifier.notify()
        return _json(cmd, 200 if existing else 201)

    def _find_command(self, app: str, guild: str | None, cmd: str) -> dict[str, Any]:
        scope = self._scope(app, guild)
        found = next((c for c in scope.values() if c["id"] == cmd), None)
        if found is None:
            raise unknown("application command", 10063)
        return found

    async def _get_command(
        self, request: web.Request, app: str, cmd: str, guild: str | None = None
    ) -> web.Response:
        return _json(self._find_command(app, guild, cmd))

    async def _delete_command(
        self, request: web.Request, app: str, cmd: str, guild: str | None = None
    ) -> web.Response:
        found = self._find_command(app, guild, cmd)
        del self._scope(app, guild)[found["name"]]
        return web.Response(status=204)

    # --- interactions

    async def _callback(self, request: web.Request, iid: str, token: str) -> web.Response:
        interaction = self.interactions.get(int(iid))
        if interaction is None or interaction.token != token:
            raise unknown("interaction", 10062)
        try:
            return await self._callback_for(request, interaction)
        except DiscordHTTPError as err:
            interaction.errors.append({"route": "callback", "status": err.status, **err.body})
            raise

    async def _callback_for(self, request: web.Request, interaction: Interaction) -> web.Response:
        latency = asyncio.get_running_loop().time() - interaction.created_at
        body, files = await self._body(request)
        if interaction.ack_type is not None:
            raise DiscordHTTPError(400, 40060, "Interaction has already been acknowledged.")
        if latency > self.ack_timeout:
            interaction.late_ack_latency = latency
            self._notifier.notify()
            raise unknown("interaction", 10062)
        kind = body.get("type")
        data = body.get("data") or {}
        message: Message | None = None
        if kind == 4:
            message = self._new_message(
                data,
                files,
                ("data",),
                kind="response",
                flag_mask=_MESSAGE_FLAGS | EPHEMERAL,
                interaction=interaction,
            )
            interaction.original = message
            interaction.original_id = message.id
            interaction.messages.append(message)
        elif kind == 5:
            interaction.deferred_ephemeral = bool(int(data.get("flags") or 0) & EPHEMERAL)
            interaction.original_id = self._ids.next()
        elif kind == 9:
            for key in ("custom_id", "title", "components"):
                if not data.get(key):
                    raise invalid_form(
                        ("data", key), "BASE_TYPE_REQUIRED", "This field is required"
                    )
            interaction.modal = data
        else:  # 1 PONG, 6/7 are for component interactions, 8 for autocomplete
            raise invalid_form(
                ("type",),
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Interaction response type {kind} is not valid for an application command",
            )
        interaction.ack_type = kind
        interaction.ack_latency = latency
        if message is not None:
            self._notify("message", message, interaction)
        else:
            self._notify("defer" if kind == 5 else "modal", None, interaction)
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        ephemeral = message.ephemeral if message else interaction.deferred_ephemeral
        resource: dict[str, Any] = {"type": kind}
        if message is not None:
            resource["message"] = self._message_payload(message)
        answer = {
            "interaction": {
                "id": str(interaction.id),
                "type": 2,
                "activity_instance_id": None,
                "response_message_id": None
                if interaction.original_id is None
                else str(interaction.original_id),
                "response_message_loading": kind == 5,
                "response_message_ephemeral": ephemeral if kind in (4, 5) else False,
            },
            "resource": resource,
        }
        return _json(answer)

    def _webhook_interaction(self, app: str, token: str) -> Interaction:
        if int(app) != self.application_id:
            raise unknown("Webhook", 10015)
        found = next((i for i in self.interactions.values() if i.token == token), None)
        if found is None:
            raise DiscordHTTPError(401, 50027, "Invalid Webhook Token")
        return found

    async def _execute_webhook(self, request: web.Request, app: str, token: str) -> web.Response:
        interaction = self._webhook_interaction(app, token)
        try:
            return await self._followup(request, interaction)
        except DiscordHTTPError as err:
            interaction.errors.append({"route": "followup", "status": err.status, **err.body})
            raise

    async def _followup(self, request: web.Request, interaction: Interaction) -> web.Response:
        body, files = await self._body(request)
        if interaction.ack_type not in (4, 5):
            raise unknown("Webhook", 10015)  # no followups before the interaction is answered
        if interaction.ack_type == 5 and interaction.original is None:
            # Discord: the first followup after a defer replaces the "thinking…" message and
            # takes the defer's ephemerality, whatever flags it asks for.
            eph = EPHEMERAL if interaction.deferred_ephemeral else 0
            body = {**body, "flags": (int(body.get("flags") or 0) & ~EPHEMERAL) | eph}
            msg = self._new_message(
                body,
                files,
                (),
                kind="followup",
                flag_mask=_MESSAGE_FLAGS | EPHEMERAL,
                interaction=interaction,
                message_id=interaction.original_id,
            )
            interaction.original = msg
        else:
            msg = self._new_message(
                body,
                files,
                (),
                kind="followup",
                flag_mask=_MESSAGE_FLAGS | EPHEMERAL,
                interaction=interaction,
            )
        interaction.messages.append(msg)
        self._notify("message", msg, interaction)
        if request.query.get("wait", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        return _json(self._message_payload(msg))

    async def _webhook_message(
        self, request: web.Request, app: str, token: str, mid: str
    ) -> web.Response:
        interaction = self._webhook_interaction(app, token)
        try:
            return await self._interaction_message(request, interaction, mid)
        except DiscordHTTPError as err:
            route = f"{request.method} messages/{mid}"
            interaction.errors.append({"route": route, "status": err.status, **err.body})
            raise

    async def _interaction_message(
        self, request: web.Request, interaction: Interaction, mid: str
    ) -> web.Response:
        body, files = await self._body(request) if request.method == "PATCH" else ({}, [])
        deferred_placeholder = (
            mid == "@original" and interaction.ack_type == 5 and interaction.original is None
        )
        if deferred_placeholder:
            assert interaction.original_id is not None
            eph = EPHEMERAL if interaction.deferred_ephemeral else 0
            if request.method == "GET":
                placeholder = Message(
                    id=interaction.original_id, flags=LOADING | eph, kind="original"
                )
                return _json(self._message_payload(placeholder))
            if request.method == "DELETE":
                interaction.original = Message(
                    id=interaction.original_id, flags=eph, kind="original", deleted=True
                )
                self._notify("delete", interaction.original, interaction)
                return web.Response(status=204)
            # the first edit turns the "thinking…" placeholder ("") into the message
            msg = self._new_message(
                {**body, "flags": eph},
                files,
                (),
                kind="original",
                flag_mask=EPHEMERAL,
                interaction=interaction,
                message_id=interaction.original_id,
            )
            msg.history.append("")
            msg.edited_at = time.time()
            interaction.original = msg
            interaction.messages.append(msg)
            self._notify("edit", msg, interaction)
            return _json(self._message_payload(msg))
        if mid == "@original":
            found = interaction.original
        else:
            found = next((m for m in interaction.messages if m.id == int(mid)), None)
        if found is None or found.deleted:
            raise unknown("Message", 10008)
        if request.method == "GET":
            return _json(self._message_payload(found))
        if request.method == "DELETE":
            found.deleted = True
            self._notify("delete", found, interaction)
            return web.Response(status=204)
        self._edit_message(found, body, files, ())
        self._notify("edit", found, interaction)
        return _json(self._message_payload(found))

    # --- channels

    def _check_channel(self, channel: str) -> None:
        if int(channel) != self.channel_id:
            raise unknown("Channel", 10003)

    async def _get_channel(self, request: web.Request, channel: str) -> web.Response:
        self._check_channel(channel)
        return _json(self._channel())

    async def _typing(self, request: web.Request, channel: str) -> web.Response:
        self._check_channel(channel)
        return web.Response(status=204)

    async def _list_channel_messages(self, request: web.Request, channel: str) -> web.Response:
        self._check_channel(channel)
        limit = max(1, min(100, int(request.query.get("limit", "50"))))
        live = [m for m in reversed(self.channel_messages) if not m.deleted][:limit]
        return _json([self._message_payload(m) for m in live])

    async def _post_channel_message(self, request: web.Request, channel: str) -> web.Response:
        self._check_channel(channel)
        body, files = await self._body(request)
        msg = self._new_message(body, files, (), kind="channel", flag_mask=_MESSAGE_FLAGS)
        self.channel_messages.append(msg)
        self._notify("message", msg, None)
        return _json(self._message_payload(msg))

    async def _channel_message(self, request: web.Request, channel: str, mid: str) -> web.Response:
        self._check_channel(channel)
        msg = next((m for m in self.channel_messages if m.id == int(mid)), None)
        if msg is None or msg.deleted:
            raise unknown("Message", 10008)
        if request.method == "GET":
            return _json(self._message_payload(msg))
        if request.method == "DELETE":
            msg.deleted = True
            self._notify("delete", msg, None)
            return web.Response(status=204)
        body, files = await self._body(request)
        self._edit_message(msg, body, files, ())
        self._notify("edit", msg, None)
        return _json(self._message_payload(msg))
