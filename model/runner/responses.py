"""The answers every route shares: errors in OpenAI's shape, 503 and 429, the JSON body, and
noticing a client that went away."""

from __future__ import annotations

import json

from aiohttp import web

from model.openai_api import ApiError, InvalidRequest, error_body
from model.request import QueueFull
from model.runner.state import RunnerState


class ClientGone(Exception):
    """The client closed its connection before the answer was complete."""


def error(
    status: int, message: str, kind: str, headers: dict | None = None, **fields
) -> web.Response:
    return web.json_response(error_body(message, kind, **fields), status=status, headers=headers)


def api_error(exc: ApiError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status)


def not_ready(state: RunnerState) -> web.Response:
    if state.stopping:
        why = "the runner is shutting down"
    elif state.load_error:
        why = f"no model is serving: {state.load_error}"
    else:
        why = "the model is still loading"
    return error(503, why, "service_unavailable", headers={"Retry-After": "5"})


def busy(state: RunnerState, exc: QueueFull) -> web.Response:
    return error(
        429, f"the runner is busy ({state.config.max_queue} requests waiting); retry later",
        "rate_limit_error", headers={"Retry-After": str(exc.retry_after)},
    )  # fmt: skip


async def json_body(request: web.Request) -> object:
    raw = await request.read()
    if not raw.strip():
        raise InvalidRequest("the body must be a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None


def check_client(request: web.Request) -> None:
    """Raise ClientGone once the client has closed its connection (aiohttp does not always
    cancel the handler)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        raise ClientGone()
