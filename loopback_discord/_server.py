"""The loopback Discord: REST routes and a gateway websocket on 127.0.0.1 for a real client."""

from __future__ import annotations

import asyncio
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

from loopback_discord._gateway import GatewayMixin
from loopback_discord._models import (
    ADMINISTRATOR,
    BOT_PERMISSIONS,
    DEFAULT_MEMBER_PERMISSIONS,
    USE_APPLICATION_COMMANDS,
    CommandHidden,
    Interaction,
    Message,
    UnknownCommand,
    UnknownComponent,
)
from loopback_discord._openapi import ENV_VAR as OPENAPI_ENV_VAR
from loopback_discord._openapi import OpenAPISpec
from loopback_discord._options import build_options
from loopback_discord._rest import RestMixin
from loopback_discord._state import Listener


class _Resolver:
    """Fills ``data.resolved`` for user/channel/role options of one invocation."""

    def __init__(self, standin: LoopbackDiscord, permissions: int, guild_id: int) -> None:
        self._standin = standin
        self._permissions = permissions  # the invoker's, as Discord reports for channels
        self._guild_id = guild_id
        self.resolved: dict[str, dict[str, Any]] = {}

    def _put(self, kind: str, key: int, value: dict[str, Any]) -> None:
        self.resolved.setdefault(kind, {})[str(key)] = value

    def resolve_user(self, user_id: int) -> None:
        s = self._standin
        self._put("users", user_id, s._user(user_id))
        self._put("members", user_id, s._member(user_id, user=False))

    def resolve_channel(self, channel_id: int) -> dict[str, Any] | None:
        s = self._standin
        if channel_id != s.channel_id:
            return None
        channel = {
            "id": str(channel_id),
            "name": s.channel_name,
            "type": 0,
            "permissions": str(self._permissions),
            "guild_id": str(self._guild_id),
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


class LoopbackDiscord(RestMixin, GatewayMixin):
    """A small Discord (REST + gateway) on loopback that the real discord.py client talks to.

    Point the client at :attr:`api_base` (``discord.http.Route.BASE``) and :attr:`gateway_url`
    (``DiscordWebSocket.DEFAULT_GATEWAY``); then :meth:`invoke` delivers slash commands as a
    member would, and :class:`Interaction`/:attr:`channel_messages` record what the bot sent.
    """

    def __init__(
        self,
        *,
        token: str = "loopback-token",
        host: str = "127.0.0.1",
        port: int = 0,
        recommended_shards: int = 1,
        max_concurrency: int = 16,
        enforce_identify_limit: bool = False,
        openapi_spec: str | Path | Literal[False] | None = None,
    ) -> None:
        """``recommended_shards`` and ``max_concurrency`` are what ``GET /gateway/bot`` answers;
        ``enforce_identify_limit`` answers op 9 to an IDENTIFY within 5 s of the last one of its
        bucket (``shard_id % max_concurrency``), as Discord does."""
        super().__init__(
            token=token,
            host=host,
            port=port,
            recommended_shards=recommended_shards,
            max_concurrency=max_concurrency,
            enforce_identify_limit=enforce_identify_limit,
        )
        self._routes = self._route_table()
        # Discord's OpenAPI spec checks every request (see _openapi.py). None: the file named
        # by $LOOPBACK_DISCORD_OPENAPI (the test suite sets it) if any; False: no checks.
        spec = os.environ.get(OPENAPI_ENV_VAR) if openapi_spec is None else openapi_spec
        self.openapi: OpenAPISpec | None = OpenAPISpec.load(spec) if spec else None
        self.spec_mismatches: list[str] = []

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", r"/api/v{version:\d+}/{tail:.*}", self._rest)
        app.router.add_get(r"/attachments/{aid:\d+}/{filename}", self._attachment)
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
        guild_id: int | None = None,
    ) -> Interaction:
        """Deliver ``/name`` (``"group sub"`` for subcommands) as a guild member would.

        ``permissions`` are the member's base permission bits; the permissions of ``roles``
        (default: the plain member role) are added, and an administrator gets every bit.
        Raises :class:`CommandHidden` if Discord would not deliver the command to that member
        (``default_member_permissions``), :class:`UnknownCommand`, :class:`InvalidOptions`,
        :class:`NotConnected`. ``guild_id`` (default: the main guild; see ``add_guild``) says
        where the member types: the interaction goes on that guild's shard connection, and
        ``Interaction.shard`` tells which.
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
        if respect_default_permissions and not effective & USE_APPLICATION_COMMANDS:
            raise CommandHidden(f"member {user_id} lacks Use Application Commands")
        if respect_default_permissions and required is not None:
            need = int(required)
            if not (effective & ADMINISTRATOR) and (need == 0 or effective & need != need):
                raise CommandHidden(
                    f"/{root} needs permissions {need:#x} (default_member_permissions); "
                    f"member {user_id} has {effective:#x}"
                )
        guild_id = guild_id or self.guild_id
        if guild_id not in self.guild_ids:
            raise UnknownCommand(f"the bot is not in guild {guild_id}; guilds: {self.guild_ids}")
        resolver = _Resolver(self, effective, guild_id)
        opts = build_options(
            command, path, dict(options or {}), resolver, validate=validate_options
        )
        conn = self._latest_connection(guild_id)
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
        channel = {**self._channel(guild_id), "permissions": str(effective)}
        payload = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": 2,
            "token": token,
            "version": 1,
            "guild_id": str(guild_id),
            "guild": {"id": str(guild_id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "channel_id": str(self.channel_id),
            "channel": channel,
            "member": self._member(user_id),
            "data": data,
            "app_permissions": str(BOT_PERMISSIONS),
            "locale": locale,
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(guild_id)},
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
        interaction.shard = conn.session.shard if conn.session else None
        self.interactions[iid] = interaction
        interaction.created_at = asyncio.get_running_loop().time()
        await conn.dispatch("INTERACTION_CREATE", payload)
        return interaction

    async def press(
        self,
        message: Message,
        button: str,
        *,
        user_id: int = 1001,
        username: str = "alice",
        permissions: int = DEFAULT_MEMBER_PERMISSIONS,
        roles: list[int] | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Press ``button`` (custom id, emoji or label, see :meth:`Message.find_button`) on
        ``message`` as a guild member would: a MESSAGE_COMPONENT interaction (type 3) whose
        payload carries the whole message. Raises :class:`UnknownComponent`,
        :class:`NotConnected`."""
        if message.deleted:
            raise UnknownComponent(f"message {message.id} was deleted")
        found = message.find_button(button)
        role_ids = [self.member_role_id] if roles is None else list(roles)
        self._remember_user(user_id, username, role_ids=role_ids, base=permissions)
        effective = self._member_permissions(user_id)
        conn = self._latest_connection()
        iid = self._ids.next()
        token = "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96)
        payload = {
            "id": str(iid),
            "application_id": str(self.application_id),
            "type": 3,
            "token": token,
            "version": 1,
            "guild_id": str(self.guild_id),
            "guild": {"id": str(self.guild_id), "locale": "en-US", "features": []},
            "guild_locale": "en-US",
            "channel_id": str(message.channel_id or self.channel_id),
            "channel": {**self._channel(), "permissions": str(effective)},
            "member": self._member(user_id),
            "message": self._message_payload(message),
            "data": {"custom_id": found["custom_id"], "component_type": 2},
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
            name=f"press {found.get('label') or found['custom_id']}",
            payload=payload,
            notifier=self._notifier,
            describe_standin=self.describe,
            message=message,
        )
        self.interactions[iid] = interaction
        interaction.created_at = asyncio.get_running_loop().time()
        await conn.dispatch("INTERACTION_CREATE", payload)
        return interaction
