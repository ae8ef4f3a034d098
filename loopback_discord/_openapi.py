"""Discord's published OpenAPI spec as a referee: every request the bot sends is checked.

`../shared/discord-openapi.json` (github.com/discord/discord-api-spec, MIT) is OpenAPI 3.1 with
JSON Schema 2020-12 inside. For a request, `OpenAPISpec.problems(method, path, query, body)`
finds the operation (a literal segment such as `@original` wins over a `{message_id}`
template), validates the JSON body (or a multipart request's `payload_json`) against its
requestBody schema, and checks the query parameters' names and simple types. The product
never needs the file: tests and the sandbox pass its path when it exists. `jsonschema` (a test
dependency) is imported only here, when a spec is loaded; one spec is built once per process.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

log = logging.getLogger("loopback_discord")
SPEC_URI = "urn:discord-openapi"
ENV_VAR = "LOOPBACK_DISCORD_OPENAPI"


@dataclass(frozen=True)
class AllowedMismatch:
    """A place where the spec is stricter than Discord for what discord.py sends."""

    pointer: re.Pattern[str]  # where in the body (JSON pointer, fullmatch)
    keyword: str  # the failing JSON Schema keyword
    value_type: type  # the type of the value the spec refuses there
    why: str


ALLOWED_MISMATCHES = [
    AllowedMismatch(
        re.compile(r"(/data)?/attachments/\d+/id"),
        "type",
        int,
        "a new upload's attachment id is its index in files[n] (an integer, as in Discord's "
        "own docs and what discord.py sends); the spec only allows a snowflake string",
    ),
]


@dataclass(frozen=True)
class _Operation:
    method: str
    template: str
    pattern: re.Pattern[str]
    literal_chars: int  # more literal text = more specific template
    operation: dict[str, Any]
    parameters: dict[str, dict[str, Any]]  # query parameters by name


class OpenAPISpec:
    """The operations of one spec file, with their request validators built on first use."""

    def __init__(self, document: dict[str, Any]) -> None:
        from jsonschema import Draft202012Validator
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT202012

        self._validator_class = Draft202012Validator
        resource = Resource.from_contents(document, default_specification=DRAFT202012)
        self._registry = Registry().with_resource(SPEC_URI, resource)
        self._operations: list[_Operation] = []
        for template, item in document.get("paths", {}).items():
            shared = item.get("parameters", [])
            regex = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
            literal = len(re.sub(r"\{[^}]+\}", "", template))
            for method, operation in item.items():
                if method == "parameters" or not isinstance(operation, dict):
                    continue
                params = {
                    p["name"]: p
                    for p in [*shared, *operation.get("parameters", [])]
                    if p.get("in") == "query"
                }
                self._operations.append(
                    _Operation(
                        method.upper(),
                        template,
                        re.compile(regex),
                        literal,
                        operation,
                        params,
                    )
                )
        self._validators: dict[tuple[str, str], Any] = {}

    @classmethod
    def load(cls, path: str | Path) -> OpenAPISpec:
        """The spec at `path`, parsed and indexed once per process."""
        return _load(str(Path(path).resolve()))

    def operation(self, method: str, path: str) -> _Operation | None:
        """The most specific operation whose template matches `path` (`/webhooks/...`)."""
        matches = [
            op for op in self._operations if op.method == method and op.pattern.fullmatch(path)
        ]
        return max(matches, key=lambda op: op.literal_chars, default=None)

    def problems(
        self, method: str, path: str, query: dict[str, str], body: Any | None
    ) -> list[str]:
        """What in this request the spec rejects (empty when it matches)."""
        op = self.operation(method, path)
        if op is None:
            return [f"{method} {path}: no such operation in Discord's OpenAPI spec"]
        found = [
            f"query {name}={value!r}: {why}"
            for name, value in query.items()
            if (why := self._query_problem(op, name, value))
        ]
        if body is not None:
            found += self._body_problems(op, body)
        return [f"{method} {op.template}: {problem}" for problem in found]

    def _query_problem(self, op: _Operation, name: str, value: str) -> str | None:
        param = op.parameters.get(name)
        if param is None:
            return "not a query parameter of this operation"
        schema = param.get("schema", {})
        kind = schema.get("type")
        if kind == "boolean" and value.lower() not in {"true", "false", "1", "0"}:
            return "must be a boolean"
        if kind == "integer":
            try:
                number = int(value)
            except ValueError:
                return "must be an integer"
            if "minimum" in schema and number < schema["minimum"]:
                return f"must be at least {schema['minimum']}"
            if "maximum" in schema and number > schema["maximum"]:
                return f"must be at most {schema['maximum']}"
        return None

    def _body_problems(self, op: _Operation, body: Any) -> list[str]:
        content = (op.operation.get("requestBody") or {}).get("content", {})
        if "application/json" not in content:
            return ["the spec takes no JSON body here"]
        validator = self._validator(op)
        problems = []
        for error in validator.iter_errors(body):
            leaf = _deepest(error)
            pointer = "/" + "/".join(str(part) for part in leaf.absolute_path)
            if _allowed(pointer, leaf):
                continue
            message = leaf.message if len(leaf.message) <= 200 else leaf.message[:197] + "..."
            problems.append(f"body at {pointer}: {message}")
        return problems

    def _validator(self, op: _Operation) -> Any:
        key = (op.method, op.template)
        if key not in self._validators:
            escaped = op.template.replace("~", "~0").replace("/", "~1")
            pointer = (
                f"#/paths/{escaped}/{op.method.lower()}"
                "/requestBody/content/application~1json/schema"
            )
            self._validators[key] = self._validator_class(
                {"$ref": SPEC_URI + pointer}, registry=self._registry
            )
        return self._validators[key]


def _allowed(pointer: str, error: Any) -> bool:
    return any(
        allowed.pointer.fullmatch(pointer)
        and error.validator == allowed.keyword
        and type(error.instance) is allowed.value_type
        for allowed in ALLOWED_MISMATCHES
    )


def _leaves(error: Any) -> list[Any]:
    if not error.context:
        return [error]
    return [leaf for sub in error.context for leaf in _leaves(sub)]


def _deepest(error: Any) -> Any:
    """The most telling part of a (possibly anyOf-nested) error: its deepest leaf."""
    return max(_leaves(error), key=lambda e: len(e.absolute_path))


@cache
def _load(path: str) -> OpenAPISpec:
    log.info("loading Discord's OpenAPI spec from %s", path)
    return OpenAPISpec(json.loads(Path(path).read_text(encoding="utf-8")))


def find_spec(near: Path | None = None) -> Path | None:
    """The spec for a sandbox: $LOOPBACK_DISCORD_OPENAPI, else `../shared/discord-openapi.json`
    beside the project; None when neither exists (validation is then skipped)."""
    import os

    named = os.environ.get(ENV_VAR)
    if named:
        return Path(named) if Path(named).is_file() else None
    root = near or Path(__file__).resolve().parents[1]
    candidate = root.parent / "shared" / "discord-openapi.json"
    return candidate if candidate.is_file() else None
