"""Turning ``invoke(name, {option: value})`` into the ``data.options`` Discord would send."""

from __future__ import annotations

import re
from typing import Any, Protocol

from loopback_discord._models import InvalidOptions, UnknownCommand

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = range(3, 12)
_MAX_SAFE_INT = 2**53
_TRUE = {"true", "yes", "y", "1", "on"}
_FALSE = {"false", "no", "n", "0", "off"}
_MENTION = re.compile(r"^<(?:@!?|@&|#)?(\d+)>$|^(\d+)$")


class Resolver(Protocol):
    """Looks up users/channels/roles by id and records them in ``data.resolved``."""

    def resolve_user(self, user_id: int) -> None: ...
    def resolve_channel(self, channel_id: int) -> dict[str, Any] | None: ...
    def resolve_role(self, role_id: int) -> dict[str, Any] | None: ...


def infer_type(value: Any) -> int:
    """Option type from a Python value: str→3, int→4, bool→5, float→10."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, int):
        return INTEGER
    if isinstance(value, float):
        return NUMBER
    if isinstance(value, str):
        return STRING
    raise InvalidOptions(f"cannot tell the option type of {value!r}; pass str, int, bool or float")


def build_options(
    command: dict[str, Any],
    path: list[str],
    values: dict[str, Any],
    resolver: Resolver,
    *,
    validate: bool = True,
) -> list[dict[str, Any]]:
    """The ``options`` list for the (sub)command at ``path`` below ``command``."""
    schema: list[dict[str, Any]] = command.get("options") or []
    wrappers: list[dict[str, Any]] = []
    for part in path:
        found = next((o for o in schema if o.get("name") == part and o.get("type") in (1, 2)), None)
        if found is None:
            subs = [o["name"] for o in schema if o.get("type") in (1, 2)]
            raise UnknownCommand(f"/{command['name']} has no subcommand {part!r}; it has {subs}")
        wrappers.append(found)
        schema = found.get("options") or []
    if any(o.get("type") in (1, 2) for o in schema):
        subs = [o["name"] for o in schema if o.get("type") in (1, 2)]
        raise UnknownCommand(
            f"/{' '.join([command['name'], *path])} is a group; name a subcommand: {subs}"
        )
    options = _leaf_options(schema, values, resolver, validate)
    for wrapper in reversed(wrappers):
        options = [{"type": wrapper["type"], "name": wrapper["name"], "options": options}]
    return options


def _leaf_options(
    schema: list[dict[str, Any]], values: dict[str, Any], resolver: Resolver, validate: bool
) -> list[dict[str, Any]]:
    by_name = {o["name"]: o for o in schema}
    out: list[dict[str, Any]] = []
    for name, value in values.items():
        if value is None:
            continue
        opt = by_name.get(name)
        if opt is None:
            if validate:
                raise InvalidOptions(f"no option {name!r}; the command has {list(by_name)}")
            opt = {"name": name, "type": infer_type(value)}
        out.append(
            {"name": name, "type": opt["type"], "value": _coerce(opt, value, resolver, validate)}
        )
    if validate:
        given = {o["name"] for o in out}
        missing = [o["name"] for o in schema if o.get("required") and o["name"] not in given]
        if missing:
            raise InvalidOptions(f"missing required option(s) {missing}")
    return out


def _snowflake(name: str, value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if hasattr(value, "id"):
        return int(value.id)
    if isinstance(value, str):
        m = _MENTION.match(value.strip())
        if m:
            return int(m.group(1) or m.group(2))
    raise InvalidOptions(f"option {name!r}: {value!r} is not an id or a mention")


def _coerce(opt: dict[str, Any], value: Any, resolver: Resolver, validate: bool) -> Any:
    name, kind = opt["name"], opt["type"]
    if kind == STRING:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str):
            raise InvalidOptions(f"option {name!r} wants text, got {value!r}")
        if validate:
            lo, hi = opt.get("min_length"), opt.get("max_length")
            if (lo is not None and len(value) < lo) or len(value) > (hi or 6000):
                raise InvalidOptions(
                    f"option {name!r}: length {len(value)} outside [{lo or 0}, {hi or 6000}]"
                )
    elif kind in (INTEGER, NUMBER):
        value = _number(name, kind, value)
        if validate:
            lo, hi = opt.get("min_value"), opt.get("max_value")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise InvalidOptions(f"option {name!r}: {value} outside [{lo}, {hi}]")
    elif kind == BOOLEAN:
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            value = value.strip().lower() in _TRUE
        if not isinstance(value, bool):
            raise InvalidOptions(f"option {name!r} wants true/false, got {value!r}")
    elif kind == USER:
        uid = _snowflake(name, value)
        resolver.resolve_user(uid)
        value = str(uid)
    elif kind == CHANNEL:
        cid = _snowflake(name, value)
        channel = resolver.resolve_channel(cid)
        if channel is None:
            raise InvalidOptions(f"option {name!r}: no channel {cid} in the guild")
        types = opt.get("channel_types")
        if validate and types and channel["type"] not in types:
            raise InvalidOptions(f"option {name!r}: channel type {channel['type']} not in {types}")
        value = str(cid)
    elif kind == ROLE:
        rid = _snowflake(name, value)
        if resolver.resolve_role(rid) is None:
            raise InvalidOptions(f"option {name!r}: no role {rid} in the guild")
        value = str(rid)
    elif kind == MENTIONABLE:
        mid = _snowflake(name, value)
        if resolver.resolve_role(mid) is None:
            resolver.resolve_user(mid)
        value = str(mid)
    else:
        raise InvalidOptions(f"option {name!r}: type {kind} is not supported by the stand-in")
    if validate and opt.get("choices"):
        allowed = [c["value"] for c in opt["choices"]]
        if value not in allowed:
            raise InvalidOptions(f"option {name!r}: {value!r} is not one of the choices {allowed}")
    return value


def _number(name: str, kind: int, value: Any) -> int | float:
    if isinstance(value, bool):
        raise InvalidOptions(f"option {name!r} wants a number, got {value!r}")
    if isinstance(value, str):
        try:
            value = int(value) if kind == INTEGER else float(value)
        except ValueError:
            raise InvalidOptions(f"option {name!r} wants a number, got {value!r}") from None
    if kind == INTEGER:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise InvalidOptions(f"option {name!r} wants a whole number, got {value!r}")
        if abs(value) > _MAX_SAFE_INT:
            raise InvalidOptions(f"option {name!r}: {value} is out of Discord's integer range")
        return value
    if not isinstance(value, (int, float)):
        raise InvalidOptions(f"option {name!r} wants a number, got {value!r}")
    return value
