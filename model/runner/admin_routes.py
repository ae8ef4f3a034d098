"""The routes that change what a runner serves, behind the admin bearer token.

Three dialects over one hot swap (`model.hot_swap`): ours, `POST /admin/load`; vLLM's runtime
adapters, `POST /v1/load_lora_adapter` and `POST /v1/unload_lora_adapter`; SGLang's
`POST /update_weights_from_disk`, with `GET /get_model_info` (open, like SGLang's). Answering
the other engines' calls lets the bot's `vllm` and `sglang` paths run against a real process in
the tests.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
from collections.abc import Awaitable, Callable

from aiohttp import web

from model.hot_swap import CandidateError, LoadInProgress
from model.openai_api import InvalidRequest
from model.runner.responses import api_error, error, json_body, not_ready
from model.runner.state import STATE


def check_admin(request: web.Request) -> web.Response | None:
    """None for a request with the admin token; else the 401 to answer."""
    token = request.app[STATE].config.admin_token
    if not token:
        return error(
            401, "admin endpoints are disabled: the runner has no admin token (set RUNNER_TOKEN)",
            "authentication_error",
        )  # fmt: skip
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return error(
            401, "missing or wrong bearer token", "authentication_error",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return None


Handler = Callable[[web.Request, dict], Awaitable[web.Response]]


def admin_route(*fields: str) -> Callable[[Handler], Callable]:
    """A handler behind the admin token, called with a JSON body whose `fields` are non-empty
    strings (a 401, 400 or 503 answers the request otherwise)."""

    def wrap(handler: Handler):
        @functools.wraps(handler)
        async def route(request: web.Request) -> web.Response:
            denied = check_admin(request)
            if denied is not None:
                return denied
            try:
                body = await json_body(request)
            except InvalidRequest as exc:
                return api_error(exc)
            wanted = ", ".join(f'"{f}": "..."' for f in fields)
            if not isinstance(body, dict) or any(
                not isinstance(body.get(f), str) or not body[f].strip() for f in fields
            ):
                return error(400, f"the body must be {{{wanted}}}", "invalid_request_error")
            if request.app[STATE].stopping:
                return not_ready(request.app[STATE])
            return await handler(request, body)

        return route

    return wrap


async def run_load(start) -> web.Response:
    """Start a load with `start()` and answer its outcome (409 while another load runs)."""
    try:
        task = start()
    except LoadInProgress:
        return error(409, "a model load is already under way; try again when it is done",
                     "conflict")  # fmt: skip
    try:
        info = await asyncio.shield(task)
    except CandidateError as exc:
        return error(422, str(exc), "load_error")
    return web.json_response(info)


@admin_route("path")
async def admin_load(request: web.Request, body: dict) -> web.Response:
    state = request.app[STATE]
    version = body.get("version")
    if version is not None and (not isinstance(version, str) or not version.strip()):
        return error(400, "version must be a non-empty string", "invalid_request_error")
    return await run_load(lambda: state.swap.start_load(body["path"], version))


@admin_route("lora_name", "lora_path")
async def load_lora_adapter(request: web.Request, body: dict) -> web.Response:
    """vLLM's runtime adapter loading: the merged adapter then serves as `model: lora_name`."""
    state = request.app[STATE]
    name = body["lora_name"]
    if any(m.pinned and m.version == name for m in state.engine.resident()):
        return error(400, f"The lora adapter '{name}' has already been loaded.",
                     "invalid_request_error", param="lora_name")  # fmt: skip
    answer = await run_load(lambda: state.swap.start_adapter_load(name, body["lora_path"]))
    if answer.status != 200:
        return answer
    return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")


@admin_route("lora_name")
async def unload_lora_adapter(request: web.Request, body: dict) -> web.Response:
    state = request.app[STATE]
    name = body["lora_name"]
    if not state.swap.unload_adapter(name):
        return error(404, f"The lora adapter '{name}' cannot be found.", "not_found_error",
                     param="lora_name")  # fmt: skip
    return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


@admin_route("model_path")
async def update_weights_from_disk(request: web.Request, body: dict) -> web.Response:
    """SGLang's weight update: a full swap to `model_path`, answered in SGLang's shape."""
    state = request.app[STATE]
    answer = await run_load(lambda: state.swap.start_load(body["model_path"], None))
    if answer.status != 200:
        reason = json.loads(answer.body)["error"]["message"]
        return web.json_response({"success": False, "message": reason}, status=400)
    return web.json_response({"success": True, "message": "Succeeded to update model weights."})


async def model_info(request: web.Request) -> web.Response:
    """SGLang's `GET /get_model_info`: which weights serve."""
    served = request.app[STATE].engine.current
    return web.json_response({"model_path": served.ref if served else None, "is_generation": True})


def add_admin_routes(app: web.Application) -> None:
    app.router.add_post("/admin/load", admin_load)
    app.router.add_post("/v1/load_lora_adapter", load_lora_adapter)
    app.router.add_post("/v1/unload_lora_adapter", unload_lora_adapter)
    app.router.add_post("/update_weights_from_disk", update_weights_from_disk)
    app.router.add_get("/get_model_info", model_info)
