"""The REST routes of the loopback Discord, with Discord's checks and error bodies."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from loopback_discord._models import (
    EPHEMERAL,
    IS_COMPONENTS_V2,
    LOADING,
    SUPPRESS_EMBEDS,
    SUPPRESS_NOTIFICATIONS,
    Attachment,
    Interaction,
    Message,
)
from loopback_discord._openapi import OpenAPISpec
from loopback_discord._state import StandinState, json_response, log
from loopback_discord._validation import (
    DiscordHTTPError,
    empty_message,
    invalid_form,
    unknown,
    validate_command,
    validate_message,
)

_MESSAGE_FLAGS = SUPPRESS_EMBEDS | SUPPRESS_NOTIFICATIONS | IS_COMPONENTS_V2
Handler = Callable[..., Awaitable[web.StreamResponse]]
SPEC_PROBLEMS = web.RequestKey("spec_problems", list[str])


class RestMixin(StandinState):
    """REST routes under ``/api/v{n}``; anything else is recorded in ``unhandled_routes``."""

    openapi: OpenAPISpec | None = None  # set by LoopbackDiscord when given a spec
    spec_mismatches: list[str]

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
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    async def _attachment(self, request: web.Request) -> web.StreamResponse:
        """The file behind an attachment's ``url`` (``discord.Attachment.read()``)."""
        aid = int(request.match_info["aid"])
        everything = [*self.channel_messages]
        for interaction in self.interactions.values():
            everything += interaction.messages
        for msg in everything:
            for att in msg.attachments:
                if att.id == aid:
                    ctype = att.content_type or "application/octet-stream"
                    return web.Response(body=att.data, headers={"Content-Type": ctype})
        return await self._root(request)

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
                return json_response({"message": "401: Unauthorized", "code": 0}, 401)
            try:
                self._check_against_spec(request, None)
                response = await handler(request, **match.groupdict())
                self._record_spec_mismatches(request)
                return response
            except DiscordHTTPError as err:
                self.rest_errors.append(f"{route} -> {err.status} {err.body}")
                self._notifier.notify()
                return json_response(err.body, err.status)
            except Exception as exc:
                # 400, not 500: discord.py retries 5xx with sleeps, which would look like a hang
                self.server_errors.append(f"{route}: {exc!r}")
                log.exception("loopback Discord failed on %s", route)
                self._notifier.notify()
                body = {"message": f"loopback Discord error: {exc!r}", "code": 0}
                return json_response(body, 400)
        self.unhandled_routes.append(route)
        self._notifier.notify()
        return json_response({"message": "404: Not Found", "code": 0}, 404)

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
            self._check_against_spec(request, payload)
            return payload, files
        raw = await request.read()
        if not raw:
            return {}, []
        try:
            body = json.loads(raw)
        except ValueError:
            raise DiscordHTTPError(400, 50109, "The request body contains invalid JSON.") from None
        self._check_against_spec(request, body)
        return body, []

    def _check_against_spec(self, request: web.Request, body: Any | None) -> None:
        """Check the query (body None, before the handler) or the body (once read) against
        Discord's OpenAPI spec, when the stand-in has one; see `_record_spec_mismatches`."""
        if self.openapi is None:
            return
        path = "/" + request.match_info["tail"]
        query = dict(request.query) if body is None else {}
        problems = self.openapi.problems(request.method, path, query, body)
        request.setdefault(SPEC_PROBLEMS, []).extend(problems)

    def _record_spec_mismatches(self, request: web.Request) -> None:
        """A request the stand-in accepted but the spec rejects is a stand-in error, so the
        harness fails the run. A request the stand-in itself refused already got Discord's
        precise error (tests of those errors send such bodies on purpose)."""
        problems = request.get(SPEC_PROBLEMS) or []
        if not problems:
            return
        self.spec_mismatches.extend(problems)
        self.server_errors.extend(f"OpenAPI mismatch: {problem}" for problem in problems)
        log.error("request does not match Discord's OpenAPI spec: %s", "; ".join(problems))
        self._notifier.notify()

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

    def _check_app(self, app: str) -> None:
        if int(app) != self.application_id:
            raise DiscordHTTPError(403, 50001, "Missing Access")

    def _check_guild(self, guild: str | None) -> None:
        if guild is not None and int(guild) not in self.guild_ids:
            raise DiscordHTTPError(403, 50001, "Missing Access")

    async def _get_me(self, request: web.Request) -> web.Response:
        me = self._users[self.bot_user_id]
        return json_response(
            {**self._user(self.bot_user_id), "username": me["username"], "verified": True,
             "mfa_enabled": False, "locale": "en-US", "email": None}
        )  # fmt: skip

    async def _get_application(self, request: web.Request) -> web.Response:
        return json_response(self._application())

    async def _get_gateway(self, request: web.Request) -> web.Response:
        limit = {
            "total": 1000,
            "remaining": 1000 - self.identify_count,
            "reset_after": 86_400_000,
            "max_concurrency": self.max_concurrency,
        }
        url = self.advertised_gateway_url or self.gateway_url
        body = {"url": url, "shards": self.recommended_shards}
        return json_response({**body, "session_start_limit": limit})

    async def _get_guild(self, request: web.Request, guild: str) -> web.Response:
        self._check_guild(guild)
        return json_response(self._guild(full=False, guild_id=int(guild)))

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
        return json_response(list(self._scope(app, guild).values()))

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
        return json_response(new)

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
        return json_response(cmd, 200 if existing else 201)

    def _find_command(self, app: str, guild: str | None, cmd: str) -> dict[str, Any]:
        scope = self._scope(app, guild)
        found = next((c for c in scope.values() if c["id"] == cmd), None)
        if found is None:
            raise unknown("application command", 10063)
        return found

    async def _get_command(
        self, request: web.Request, app: str, cmd: str, guild: str | None = None
    ) -> web.Response:
        return json_response(self._find_command(app, guild, cmd))

    async def _delete_command(
        self, request: web.Request, app: str, cmd: str, guild: str | None = None
    ) -> web.Response:
        found = self._find_command(app, guild, cmd)
        del self._scope(app, guild)[found["name"]]
        return web.Response(status=204)

    async def _callback(self, request: web.Request, iid: str, token: str) -> web.Response:
        interaction = self.interactions.get(int(iid))
        if interaction is None or interaction.token != token:
            raise unknown("interaction", 10062)
        return await _recording_errors(
            interaction, "callback", self._callback_for(request, interaction)
        )

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
        elif kind in (6, 7) and interaction.is_component and interaction.message is not None:
            # 6: deferred update, 7: edit the pressed message now; it becomes @original
            pressed = interaction.message
            if pressed.deleted:
                raise unknown("Message", 10008)
            if kind == 7:
                self._edit_message(pressed, data, files, ("data",))
                message = pressed
            interaction.original = pressed
            interaction.original_id = pressed.id
        elif kind == 9:
            for key in ("custom_id", "title", "components"):
                if not data.get(key):
                    raise invalid_form(
                        ("data", key), "BASE_TYPE_REQUIRED", "This field is required"
                    )
            interaction.modal = data
        else:  # 1 PONG, 6/7 only for component interactions, 8 for autocomplete
            raise invalid_form(
                ("type",),
                "INTERACTION_RESPONSE_TYPE_INVALID",
                f"Interaction response type {kind} is not valid for an application command",
            )
        interaction.ack_type = kind
        interaction.ack_latency = latency
        if kind == 7:
            self._notify("edit", message, self._owner(message))
        elif message is not None:
            self._notify("message", message, interaction)
        else:
            event = {5: "defer", 6: "defer_update"}.get(kind, "modal")
            self._notify(event, None, interaction)
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
                "response_message_ephemeral": (
                    ephemeral if kind in (4, 5) else bool(message and message.ephemeral)
                ),
            },
            "resource": resource,
        }
        return json_response(answer)

    def _webhook_interaction(self, app: str, token: str) -> Interaction:
        if int(app) != self.application_id:
            raise unknown("Webhook", 10015)
        found = next((i for i in self.interactions.values() if i.token == token), None)
        if found is None:
            raise DiscordHTTPError(401, 50027, "Invalid Webhook Token")
        return found

    async def _execute_webhook(self, request: web.Request, app: str, token: str) -> web.Response:
        interaction = self._webhook_interaction(app, token)
        return await _recording_errors(
            interaction, "followup", self._followup(request, interaction)
        )

    async def _followup(self, request: web.Request, interaction: Interaction) -> web.Response:
        body, files = await self._body(request)
        if interaction.ack_type not in (4, 5, 6, 7):
            raise unknown("Webhook", 10015)  # no followups before the interaction is answered
        replaces_thinking = interaction.ack_type == 5 and interaction.original is None
        if replaces_thinking:
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
            message_id=interaction.original_id if replaces_thinking else None,
        )
        if replaces_thinking:
            interaction.original = msg
        interaction.messages.append(msg)
        self._notify("message", msg, interaction)
        if request.query.get("wait", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        return json_response(self._message_payload(msg))

    async def _webhook_message(
        self, request: web.Request, app: str, token: str, mid: str
    ) -> web.Response:
        interaction = self._webhook_interaction(app, token)
        route = f"{request.method} messages/{mid}"
        answer = self._interaction_message(request, interaction, mid)
        return await _recording_errors(interaction, route, answer)

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
                return json_response(self._message_payload(placeholder))
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
            return json_response(self._message_payload(msg))
        if mid == "@original":
            found = interaction.original
        else:
            found = next((m for m in interaction.messages if m.id == int(mid)), None)
        if found is None or found.deleted:
            raise unknown("Message", 10008)
        if request.method == "GET":
            return json_response(self._message_payload(found))
        if request.method == "DELETE":
            found.deleted = True
            self._notify("delete", found, interaction)
            return web.Response(status=204)
        self._edit_message(found, body, files, ())
        self._notify("edit", found, self._owner(found) or interaction)
        return json_response(self._message_payload(found))

    def _owner(self, msg: Message | None) -> Interaction | None:
        """The interaction that created ``msg`` (a pressed message belongs to an earlier one)."""
        if msg is None or msg.interaction_id is None:
            return None
        return self.interactions.get(msg.interaction_id)

    def _check_channel(self, channel: str) -> None:
        if int(channel) != self.channel_id:
            raise unknown("Channel", 10003)

    async def _get_channel(self, request: web.Request, channel: str) -> web.Response:
        self._check_channel(channel)
        return json_response(self._channel())

    async def _typing(self, request: web.Request, channel: str) -> web.Response:
        self._check_channel(channel)
        return web.Response(status=204)

    async def _list_channel_messages(self, request: web.Request, channel: str) -> web.Response:
        self._check_channel(channel)
        limit = max(1, min(100, int(request.query.get("limit", "50"))))
        live = [m for m in reversed(self.channel_messages) if not m.deleted][:limit]
        return json_response([self._message_payload(m) for m in live])

    async def _post_channel_message(self, request: web.Request, channel: str) -> web.Response:
        self._check_channel(channel)
        body, files = await self._body(request)
        msg = self._new_message(body, files, (), kind="channel", flag_mask=_MESSAGE_FLAGS)
        self.channel_messages.append(msg)
        self._notify("message", msg, None)
        return json_response(self._message_payload(msg))

    async def _channel_message(self, request: web.Request, channel: str, mid: str) -> web.Response:
        """A channel post, or a public interaction message (those live in the channel too)."""
        self._check_channel(channel)
        msg = next((m for m in self.channel_messages if m.id == int(mid)), None)
        interaction = None
        if msg is None:
            for interaction in self.interactions.values():
                msg = next((m for m in interaction.messages if m.id == int(mid)), None)
                if msg is not None:
                    break
        if msg is None or msg.deleted or msg.ephemeral:
            raise unknown("Message", 10008)
        if request.method == "GET":
            return json_response(self._message_payload(msg))
        if request.method == "DELETE":
            msg.deleted = True
            self._notify("delete", msg, interaction)
            return web.Response(status=204)
        body, files = await self._body(request)
        self._edit_message(msg, body, files, ())
        self._notify("edit", msg, interaction)
        return json_response(self._message_payload(msg))


async def _recording_errors(
    interaction: Interaction, route: str, answer: Awaitable[web.Response]
) -> web.Response:
    """Await the answer; an error Discord would send back is also kept on the interaction
    (`Interaction.errors`), so a test can see what the bot was refused."""
    try:
        return await answer
    except DiscordHTTPError as err:
        interaction.errors.append({"route": route, "status": err.status, **err.body})
        raise
