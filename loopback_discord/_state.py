"""State of the loopback Discord (ids, members, commands, messages) and its JSON payloads."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from loopback_discord._gateway_types import Connection, GatewayEvent, Session
from loopback_discord._models import (
    ACK_TIMEOUT,
    ADMINISTRATOR,
    ALL_PERMISSIONS,
    BOT_PERMISSIONS,
    DEFAULT_MEMBER_PERMISSIONS,
    MANAGE_GUILD,
    Interaction,
    Message,
    Notifier,
    Snowflakes,
)

log = logging.getLogger("loopback_discord")

JSON_HEADERS = {"Content-Type": "application/json"}  # exactly; discord.py compares the header
Listener = Callable[[str, "Message | None", "Interaction | None"], Any]


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat()


def json_response(data: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=json.dumps(data).encode(), headers=JSON_HEADERS)


class StandinState:
    """Everything the stand-in knows, and the Discord-shaped payloads built from it."""

    def __init__(
        self,
        *,
        token: str = "loopback-token",
        host: str = "127.0.0.1",
        port: int = 0,
        recommended_shards: int = 1,
        max_concurrency: int = 16,
        enforce_identify_limit: bool = False,
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
        # Gateway shards: what GET /gateway/bot recommends, and how many IDENTIFYs may start
        # within 5 s (one per bucket shard_id % max_concurrency; 16 as for a large bot).
        self.recommended_shards = recommended_shards
        self.max_concurrency = max_concurrency
        self.enforce_identify_limit = enforce_identify_limit  # op 9 to an IDENTIFY too soon
        self.extra_guilds: dict[int, str] = {}  # guild id -> name, besides guild_id
        # the url GET /gateway/bot advertises (None: this stand-in's); real Discord names its own
        # host even when the bot goes through a gateway proxy
        self.advertised_gateway_url: str | None = None

        self.global_commands: dict[str, dict[str, Any]] = {}
        self.guild_commands: dict[str, dict[str, Any]] = {}
        self.interactions: dict[int, Interaction] = {}
        self.channel_messages: list[Message] = []
        self.unhandled_routes: list[str] = []
        self.auth_failures: list[str] = []
        self.rest_errors: list[str] = []  # every 4xx answered (besides unhandled routes)
        self.server_errors: list[str] = []  # exceptions inside the stand-in itself
        self.requests: deque[str] = deque(maxlen=2000)  # the latest REST requests
        self.identify_count = 0
        self.resume_count = 0
        self.sync_count = 0
        self.gateway_events: list[GatewayEvent] = []  # every dispatch, with its shard
        self.shard_errors: list[str] = []  # bad IDENTIFY shards, guilds no shard connection owns

        self._ids = Snowflakes()
        self._notifier = Notifier()
        self._users: dict[int, dict[str, Any]] = {}
        self._joined_at = time.time() - 86_400
        self._sessions: dict[str, Session] = {}
        self._connections: set[Connection] = set()
        self._identified_at: dict[int, float] = {}  # rate-limit bucket -> last IDENTIFY
        self._listeners: list[Listener] = []
        self._runner: web.AppRunner | None = None
        self._remember_user(self.bot_user_id, self.bot_username, bot=True)
        self._remember_user(self.owner_id, "owner")

    @property
    def registered_commands(self) -> dict[str, dict[str, Any]]:
        """Commands by name, global and guild merged (a guild command wins a name clash)."""
        return {**self.global_commands, **self.guild_commands}

    @property
    def connected_sessions(self) -> int:
        """Live gateway connections that IDENTIFYed or RESUMEd."""
        return sum(1 for c in self._connections if c.ready and not c.ws.closed)

    @property
    def guild_ids(self) -> list[int]:
        """Every guild the bot is in: ``guild_id`` first, then those added by ``add_guild``."""
        return [self.guild_id, *self.extra_guilds]

    def name_of_guild(self, guild_id: int) -> str:
        if guild_id == self.guild_id:
            return self.guild_name
        return self.extra_guilds.get(guild_id, f"guild {guild_id}")

    @property
    def connected_shards(self) -> list[tuple[int, int]]:
        """``(shard_id, shard_count)`` of each live identified connection, sorted."""
        return sorted(
            c.session.shard
            for c in self._connections
            if c.ready and not c.ws.closed and c.session is not None
        )

    def describe(self) -> str:
        """A summary of the stand-in's state, for failure messages."""
        parts = [
            f"gateway connections={self.connected_sessions}",
            f"commands={sorted(self.registered_commands)}",
        ]
        if self.extra_guilds or self.connected_shards not in ([], [(0, 1)]):
            parts.append(f"shards={self.connected_shards}")
        for name in (
            "unhandled_routes",
            "auth_failures",
            "rest_errors",
            "server_errors",
            "shard_errors",
        ):
            value = getattr(self, name)
            if value:
                parts.append(f"{name}={value}")
        return "stand-in: " + ", ".join(parts)

    def _notify(self, event: str, msg: Message | None, interaction: Interaction | None) -> None:
        self._notifier.notify()
        for listener in list(self._listeners):
            try:
                listener(event, msg, interaction)
            except Exception:
                log.exception("loopback Discord listener failed")

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
            "joined_at": iso(self._joined_at),
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

    def _roles(self, guild_id: int | None = None) -> list[dict[str, Any]]:
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
            role(guild_id or self.guild_id, "@everyone", DEFAULT_MEMBER_PERMISSIONS, 0),
            role(self.member_role_id, "Member", 0, 1),
            role(self.bot_role_id, self.bot_username, BOT_PERMISSIONS, 2, managed=True,
                 tags={"bot_id": str(self.bot_user_id)}),
            role(self.admin_role_id, "Admin", ADMINISTRATOR | MANAGE_GUILD, 3),
        ]  # fmt: skip

    def _channel(self, guild_id: int | None = None) -> dict[str, Any]:
        return {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(guild_id or self.guild_id),
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

    def _guild(self, *, full: bool = True, guild_id: int | None = None) -> dict[str, Any]:
        """A guild payload; an added guild is a copy of the main one (same channel and role
        ids, its own id, name and ``@everyone`` role): enough to route it to its shard."""
        guild_id = guild_id or self.guild_id
        guild: dict[str, Any] = {
            "id": str(guild_id),
            "name": self.name_of_guild(guild_id),
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
            "roles": self._roles(guild_id),
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
                    "joined_at": iso(self._joined_at),
                    "large": False,
                    "unavailable": False,
                    "member_count": len(self._users),
                    "voice_states": [],
                    "members": [self._member(self.bot_user_id), self._member(self.owner_id)],
                    "channels": [self._channel(guild_id)],
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
            "timestamp": iso(msg.created_at),
            "edited_timestamp": None if msg.edited_at is None else iso(msg.edited_at),
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
