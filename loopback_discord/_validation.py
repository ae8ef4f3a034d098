"""Discord's request checks and its error bodies: message limits, command schemas."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from loopback_discord._models import MAX_CONTENT_LENGTH


class DiscordHTTPError(Exception):
    """Answer the request with this status and Discord-style JSON error body."""

    def __init__(
        self, status: int, code: int, message: str, errors: dict[str, Any] | None = None
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.body: dict[str, Any] = {"message": message, "code": code}
        if errors is not None:
            self.body["errors"] = errors


def unknown(what: str, code: int) -> DiscordHTTPError:
    return DiscordHTTPError(404, code, f"Unknown {what}")


def invalid_form(path: Sequence[str | int], code: str, message: str) -> DiscordHTTPError:
    """Discord's 50035 "Invalid Form Body" with the error nested under ``path``."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path):
        errors = {str(key): errors}
    return DiscordHTTPError(400, 50035, "Invalid Form Body", errors)


def _max_len(path: Sequence[str | int], value: Any, limit: int) -> None:
    if isinstance(value, str) and len(value) > limit:
        raise invalid_form(path, "BASE_TYPE_MAX_LENGTH", f"Must be {limit} or fewer in length.")


EMBED_TOTAL_LIMIT = 6000


def validate_message(data: dict[str, Any], prefix: Sequence[str | int] = ()) -> None:
    """The checks Discord makes on a message create/edit body (content, embeds, mentions)."""
    p = tuple(prefix)
    content = data.get("content")
    if content is not None and not isinstance(content, str):
        raise invalid_form((*p, "content"), "BASE_TYPE_STRING", "Must be a string.")
    _max_len((*p, "content"), content, MAX_CONTENT_LENGTH)

    embeds = data.get("embeds") or []
    if len(embeds) > 10:
        raise invalid_form((*p, "embeds"), "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    total = 0
    for i, embed in enumerate(embeds):
        ep = (*p, "embeds", i)
        _max_len((*ep, "title"), embed.get("title"), 256)
        _max_len((*ep, "description"), embed.get("description"), 4096)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise invalid_form(
                (*ep, "fields"), "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length."
            )
        for j, fld in enumerate(fields):
            _max_len((*ep, "fields", j, "name"), fld.get("name"), 256)
            _max_len((*ep, "fields", j, "value"), fld.get("value"), 1024)
            total += len(fld.get("name") or "") + len(fld.get("value") or "")
        footer = (embed.get("footer") or {}).get("text")
        author = (embed.get("author") or {}).get("name")
        _max_len((*ep, "footer", "text"), footer, 2048)
        _max_len((*ep, "author", "name"), author, 256)
        total += sum(len(x or "") for x in (embed.get("title"), embed.get("description")))
        total += len(footer or "") + len(author or "")
    if total > EMBED_TOTAL_LIMIT:
        raise invalid_form(
            (*p, "embeds"),
            "MAX_EMBED_SIZE_EXCEEDED",
            f"Embed size exceeds maximum size of {EMBED_TOTAL_LIMIT}",
        )

    am = data.get("allowed_mentions")
    if am is not None:
        parse = am.get("parse") or []
        for i, kind in enumerate(parse):
            if kind not in ("roles", "users", "everyone"):
                raise invalid_form(
                    (*p, "allowed_mentions", "parse", i),
                    "BASE_TYPE_CHOICES",
                    "Value must be one of ('roles', 'users', 'everyone').",
                )
        for kind in ("users", "roles"):
            ids = am.get(kind) or []
            if kind in parse and ids:
                raise invalid_form(
                    (*p, "allowed_mentions"),
                    "ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                    f'parse:["{kind}"] and {kind}: [ids...] are mutually exclusive.',
                )
            if len(ids) > 100:
                raise invalid_form(
                    (*p, "allowed_mentions", kind),
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 100 or fewer in length.",
                )


def empty_message() -> DiscordHTTPError:
    return DiscordHTTPError(400, 50006, "Cannot send an empty message")


_COMMAND_NAME = re.compile(r"^[-_'\w]{1,32}$")


def validate_command(cmd: dict[str, Any], index: int | None) -> None:
    """Name/description/option rules Discord enforces when commands are registered."""
    base: tuple[str | int, ...] = () if index is None else (index,)
    kind = cmd.get("type", 1)
    name = cmd.get("name")
    if not isinstance(name, str) or not _COMMAND_NAME.match(name):
        raise invalid_form((*base, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Invalid name")
    if kind == 1:
        if name != name.lower():
            raise invalid_form(
                (*base, "name"), "APPLICATION_COMMAND_INVALID_NAME", "Name must be lowercase"
            )
        desc = cmd.get("description") or ""
        if not 1 <= len(desc) <= 100:
            raise invalid_form(
                (*base, "description"),
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            )
        _validate_options(cmd.get("options") or [], (*base, "options"))


def _validate_options(options: list[dict[str, Any]], path: tuple[str | int, ...]) -> None:
    if len(options) > 25:
        raise invalid_form(path, "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    seen_optional = False
    names: set[str] = set()
    for i, opt in enumerate(options):
        name = opt.get("name")
        if name in names:
            raise invalid_form(
                (*path, i, "name"),
                "APPLICATION_COMMAND_OPTION_NAME_ALREADY_EXISTS",
                "Option name already exists",
            )
        names.add(name)
        if opt.get("type") in (1, 2):
            _validate_options(opt.get("options") or [], (*path, i, "options"))
            continue
        if opt.get("required"):
            if seen_optional:
                raise invalid_form(
                    (*path, i, "required"),
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
