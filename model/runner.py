"""The model runner: an aiohttp server speaking the OpenAI completions API over the engine.

Endpoints: `POST /v1/completions` (also streamed), `GET /v1/models`, `GET /health` (ready),
`GET /health/live` (alive), `GET /metrics` (Prometheus), and with the admin bearer token
`POST /admin/load` (hot swap of a new version), vLLM's adapter calls
`POST /v1/load_lora_adapter` / `POST /v1/unload_lora_adapter`, and SGLang's
`POST /update_weights_from_disk` with `GET /get_model_info` (so that the bot's `vllm` and
`sglang` paths run against a real process in the tests). Request shapes live in
`model.openai_api`, swapping in `model.hot_swap`, generation in the engine's worker thread
(`model.engine`), so the event loop always answers.

Started by `jokebot runner` (`bot/cli.py`), the one entry point.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass

from aiohttp import web

from model.devices import configure_cpu_threads
from model.engine import (
    CompletionResult,
    Engine,
    EngineRequest,
    EngineStopped,
    NotReady,
    QueueFull,
    RequestError,
    UnknownModel,
)
from model.hot_swap import CandidateError, HotSwap, LoadInProgress
from model.metrics import RunnerMetrics
from model.openai_api import (
    STREAM_DONE,
    ApiError,
    CompletionRequest,
    InvalidRequest,
    ModelNotFound,
    choice,
    completion_body,
    completion_id,
    error_body,
    model_entry,
    parse_completion_request,
    stream_chunk,
    usage,
)
from model.precision import ServingPrecision

log = logging.getLogger("model.runner")


@dataclass
class RunnerConfig:
    model_ref: str
    version: str = "v0"
    host: str = "127.0.0.1"
    port: int = 8765
    device: str = "auto"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (model.precision)
    admin_token: str | None = None
    max_queue: int = 64
    max_batch: int = 16
    compile: bool = False
    default_max_tokens: int = 64
    listen_fd: int | None = None  # serve on this listening socket (from `jokebot run`)


class RunnerState:
    """Everything one runner app owns: engine, metrics and the hot swap."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.metrics = RunnerMetrics()
        self.engine = Engine(
            max_batch=config.max_batch, max_queue=config.max_queue, metrics=self.metrics
        )
        self.metrics.bind_engine(self.engine)
        precision = ServingPrecision(config.dtype, on_choice=self.metrics.set_precision)
        self.swap = HotSwap(self.engine, self.metrics, config.device, config.compile, precision)
        self.initial_load: asyncio.Task | None = None
        self.stopping = False
        self.started = time.time()

    @property
    def load_error(self) -> str | None:
        return self.swap.error

    async def load_initial(self) -> None:
        with contextlib.suppress(CandidateError):
            await self.swap.start_load(self.config.model_ref, self.config.version, initial=True)


STATE = web.AppKey("runner_state", RunnerState)


# ----------------------------------------------------------------------------- helpers
def _error(
    status: int, message: str, kind: str, headers: dict | None = None, **fields
) -> web.Response:
    return web.json_response(error_body(message, kind, **fields), status=status, headers=headers)


def _api_error(exc: ApiError) -> web.Response:
    return web.json_response(exc.body(), status=exc.status)


def _not_ready(state: RunnerState) -> web.Response:
    if state.stopping:
        why = "the runner is shutting down"
    elif state.load_error:
        why = f"no model is serving: {state.load_error}"
    else:
        why = "the model is still loading"
    return _error(503, why, "service_unavailable", headers={"Retry-After": "5"})


def _busy(state: RunnerState, exc: QueueFull) -> web.Response:
    return _error(
        429, f"the runner is busy ({state.config.max_queue} requests waiting); retry later",
        "rate_limit_error", headers={"Retry-After": str(exc.retry_after)},
    )  # fmt: skip


async def _json_body(request: web.Request) -> object:
    raw = await request.read()
    if not raw.strip():
        raise InvalidRequest("the body must be a JSON object")
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"the body is not valid JSON: {exc}") from None


class ClientGone(Exception):
    pass


async def _wait_results(request: web.Request, reqs: list[EngineRequest]) -> list[CompletionResult]:
    """Wait for the engine; notice a client that disconnects even without handler cancellation."""
    futures = [asyncio.wrap_future(r.future) for r in reqs]
    while True:
        _, pending = await asyncio.wait(futures, timeout=0.5)
        if not pending:
            return [f.result() for f in futures]
        if any(f.done() and f.exception() for f in futures):
            next(f for f in futures if f.done() and f.exception()).result()
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ClientGone()


def _submit_all(state: RunnerState, parsed: CompletionRequest, listeners=None):
    """One engine request per prompt; on a failure, the ones already queued are cancelled."""
    reqs: list[EngineRequest] = []
    try:
        for i, prompt in enumerate(parsed.prompts):
            listener = listeners(i) if listeners else None
            reqs.append(state.engine.submit(prompt, parsed.params, parsed.model, listener))
    except BaseException:
        for req in reqs:
            state.engine.cancel(req)
        raise
    return reqs


# ----------------------------------------------------------------------------- handlers
async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        parsed = parse_completion_request(
            await _json_body(request), state.config.default_max_tokens
        )
    except ApiError as exc:
        return _api_error(exc)
    if not state.engine.ready or state.stopping:
        return _not_ready(state)
    if parsed.stream:
        return await _stream_completion(request, state, parsed)
    try:
        reqs = _submit_all(state, parsed)
    except UnknownModel as exc:
        return _api_error(ModelNotFound(exc.name, exc.available))
    except QueueFull as exc:
        return _busy(state, exc)
    except NotReady:
        return _not_ready(state)
    try:
        results = await _wait_results(request, reqs)
    except asyncio.CancelledError:
        for req in reqs:
            state.engine.cancel(req)
        raise
    except ClientGone:
        for req in reqs:
            state.engine.cancel(req)
        return web.Response(status=499, text="client closed the connection")
    except RequestError as exc:
        for req in reqs:
            state.engine.cancel(req)
        return _error(400, str(exc), "invalid_request_error", param="prompt")
    except EngineStopped:
        return _not_ready(state)
    except Exception as exc:
        log.exception("completion failed")
        return _error(500, f"generation failed: {exc}", "server_error")
    for req in reqs:
        state.metrics.latency.observe(time.monotonic() - req.submitted_at)
    n = parsed.params.n
    choices = [
        choice(p * n + c.index, c.text, c.finish_reason)
        for p, result in enumerate(results)
        for c in result.choices
    ]
    return web.json_response(
        completion_body(
            completion_id(),
            results[0].version,
            choices,
            sum(r.prompt_tokens for r in results),
            sum(r.completion_tokens for r in results),
        )
    )


async def _stream_completion(
    request: web.Request, state: RunnerState, parsed: CompletionRequest
) -> web.StreamResponse:
    """Server-sent events: a chunk per step with new text, `finish_reason` on each choice's last."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, str, str | None]] = asyncio.Queue()
    n = parsed.params.n

    def listener_for(prompt: int):
        def listen(index: int, text: str, finish: str | None) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (prompt * n + index, text, finish))

        return listen

    try:
        reqs = _submit_all(state, parsed, listener_for)
    except UnknownModel as exc:
        return _api_error(ModelNotFound(exc.name, exc.available))
    except QueueFull as exc:
        return _busy(state, exc)
    except NotReady:
        return _not_ready(state)
    ident, created, model = completion_id(), int(time.time()), reqs[0].served.version
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    futures = [asyncio.wrap_future(r.future) for r in reqs]
    remaining = len(parsed.prompts) * n
    try:
        await response.prepare(request)
        while remaining:
            getter = asyncio.ensure_future(events.get())
            failed = [f for f in futures if f.done() and f.exception() is not None]
            if failed and events.empty():
                getter.cancel()
                failed[0].result()
            done, _ = await asyncio.wait(
                {getter, *[f for f in futures if not f.done()]},
                timeout=0.5,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if getter not in done:
                getter.cancel()
                transport = request.transport
                if transport is None or transport.is_closing():
                    raise ClientGone()
                continue
            index, text, finish = getter.result()
            if finish is not None:
                remaining -= 1
            piece = [choice(index, text, finish)]
            await response.write(
                stream_chunk(ident, created, model, piece, with_usage=parsed.include_usage)
            )
        results = await asyncio.gather(*futures)
        for req in reqs:
            state.metrics.latency.observe(time.monotonic() - req.submitted_at)
        if parsed.include_usage:
            totals = usage(
                sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)
            )
            await response.write(
                stream_chunk(ident, created, model, [], with_usage=True, usage_body=totals)
            )
        await response.write(STREAM_DONE)
        await response.write_eof()
    except asyncio.CancelledError:
        for req in reqs:
            state.engine.cancel(req)  # the client went away: its rows leave at the next step
        raise
    except (ClientGone, ConnectionError):
        for req in reqs:
            state.engine.cancel(req)
    except (RequestError, EngineStopped, RuntimeError) as exc:
        for req in reqs:
            state.engine.cancel(req)
        kind = "invalid_request_error" if isinstance(exc, RequestError) else "server_error"
        with contextlib.suppress(ConnectionError):
            await response.write(f"data: {json.dumps(error_body(str(exc), kind))}\n\n".encode())
            await response.write_eof()
    return response


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    created = int(state.started)
    data = [
        model_entry(served.version, created, served.ref, served.parent)
        for served in state.engine.resident()
        if served.pinned or served is state.engine.current
    ]
    return web.json_response({"object": "list", "data": data})


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    engine = state.engine
    served = engine.current
    ready = engine.ready and not state.stopping
    if ready:
        status = "ok"
    elif state.stopping:
        status = "stopping"
    elif state.load_error:
        status = "failed"
    else:
        status = "loading"
    body = {
        "status": status,
        "ready": ready,
        "version": served.version if served else None,
        "model_ref": served.ref if served else state.config.model_ref,
        "queue_depth": engine.queue_depth,
        "max_queue": engine.max_queue,
        "running": engine.running_rows,
        "max_batch": engine.max_batch,
        "device": served.device.type if served else None,
        "loading": state.swap.loading,
        "resident_versions": engine.resident_versions,
        "uptime_seconds": round(time.time() - state.started, 1),
        **state.swap.precision.health_fields(),  # dtype, and how `DTYPE` chose it
    }
    if state.load_error and not ready:
        body["error"] = state.load_error
    return web.json_response(body, status=200 if ready else 503)


async def live(request: web.Request) -> web.Response:
    return web.json_response({"status": "alive"})


async def metrics(request: web.Request) -> web.Response:
    state = request.app[STATE]
    return web.Response(
        body=state.metrics.render(), headers={"Content-Type": state.metrics.content_type}
    )


def _check_admin(request: web.Request) -> web.Response | None:
    token = request.app[STATE].config.admin_token
    if not token:
        return _error(
            401, "admin endpoints are disabled: the runner has no admin token (set RUNNER_TOKEN)",
            "authentication_error",
        )  # fmt: skip
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.encode()
    ):
        return _error(
            401, "missing or wrong bearer token", "authentication_error",
            headers={"WWW-Authenticate": "Bearer"},
        )  # fmt: skip
    return None


async def _admin_body(request: web.Request, fields: tuple[str, ...]) -> dict | web.Response:
    """The admin check, then a JSON object whose `fields` are non-empty strings."""
    denied = _check_admin(request)
    if denied is not None:
        return denied
    try:
        body = await _json_body(request)
    except InvalidRequest as exc:
        return _api_error(exc)
    wanted = ", ".join(f'"{f}": "..."' for f in fields)
    if not isinstance(body, dict) or any(
        not isinstance(body.get(f), str) or not body[f].strip() for f in fields
    ):
        return _error(400, f"the body must be {{{wanted}}}", "invalid_request_error")
    if request.app[STATE].stopping:
        return _not_ready(request.app[STATE])
    return body


async def _run_load(start) -> web.Response:
    try:
        task = start()
    except LoadInProgress:
        return _error(409, "a model load is already under way; try again when it is done",
                      "conflict")  # fmt: skip
    try:
        info = await asyncio.shield(task)
    except CandidateError as exc:
        return _error(422, str(exc), "load_error")
    return web.json_response(info)


async def admin_load(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _admin_body(request, ("path",))
    if isinstance(body, web.Response):
        return body
    version = body.get("version")
    if version is not None and (not isinstance(version, str) or not version.strip()):
        return _error(400, "version must be a non-empty string", "invalid_request_error")
    return await _run_load(lambda: state.swap.start_load(body["path"], version))


async def load_lora_adapter(request: web.Request) -> web.Response:
    """vLLM's runtime adapter loading: the merged adapter then serves as `model: lora_name`."""
    state = request.app[STATE]
    body = await _admin_body(request, ("lora_name", "lora_path"))
    if isinstance(body, web.Response):
        return body
    name = body["lora_name"]
    if any(m.pinned and m.version == name for m in state.engine.resident()):
        return _error(400, f"The lora adapter '{name}' has already been loaded.",
                      "invalid_request_error", param="lora_name")  # fmt: skip
    answer = await _run_load(lambda: state.swap.start_adapter_load(name, body["lora_path"]))
    if answer.status != 200:
        return answer
    return web.Response(text=f"Success: LoRA adapter '{name}' added successfully.")


async def unload_lora_adapter(request: web.Request) -> web.Response:
    state = request.app[STATE]
    body = await _admin_body(request, ("lora_name",))
    if isinstance(body, web.Response):
        return body
    name = body["lora_name"]
    if not state.swap.unload_adapter(name):
        return _error(404, f"The lora adapter '{name}' cannot be found.", "not_found_error",
                      param="lora_name")  # fmt: skip
    return web.Response(text=f"Success: LoRA adapter '{name}' removed successfully.")


async def update_weights_from_disk(request: web.Request) -> web.Response:
    """SGLang's weight update: a full swap to `model_path`, answered in SGLang's shape."""
    state = request.app[STATE]
    body = await _admin_body(request, ("model_path",))
    if isinstance(body, web.Response):
        return body
    answer = await _run_load(lambda: state.swap.start_load(body["model_path"], None))
    if answer.status != 200:
        reason = json.loads(answer.body)["error"]["message"]
        return web.json_response({"success": False, "message": reason}, status=400)
    return web.json_response({"success": True, "message": "Succeeded to update model weights."})


async def model_info(request: web.Request) -> web.Response:
    """SGLang's `GET /get_model_info`: which weights serve."""
    served = request.app[STATE].engine.current
    return web.json_response({"model_path": served.ref if served else None, "is_generation": True})


@web.middleware
async def _observe(request: web.Request, handler) -> web.StreamResponse:
    """Count every response by endpoint and status; give unknown routes JSON errors."""
    resource = request.match_info.route.resource
    endpoint = resource.canonical if resource is not None else "other"
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        if exc.status < 400:
            raise
        keep = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return _error(exc.status, exc.reason, "invalid_request_error", headers=keep)
    except (asyncio.CancelledError, ClientGone, ConnectionError):
        code = 499
        raise
    finally:
        request.app[STATE].metrics.observe_response(endpoint, code)


# ----------------------------------------------------------------------------- app
async def _on_startup(app: web.Application) -> None:
    state = app[STATE]
    configure_cpu_threads()
    state.engine.start()
    state.initial_load = asyncio.create_task(state.load_initial())


async def _on_shutdown(app: web.Application) -> None:
    app[STATE].stopping = True


async def _on_cleanup(app: web.Application) -> None:
    state = app[STATE]
    state.stopping = True
    if state.initial_load is not None and not state.initial_load.done():
        state.initial_load.cancel()
    state.swap.shutdown()
    await asyncio.get_running_loop().run_in_executor(None, state.engine.stop, 5.0)


def build_app(config: RunnerConfig) -> web.Application:
    """The runner as an aiohttp app; the model loads in the background once the app starts."""
    app = web.Application(middlewares=[_observe], client_max_size=1 << 20)
    app[STATE] = RunnerState(config)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_post("/v1/load_lora_adapter", load_lora_adapter)
    app.router.add_post("/v1/unload_lora_adapter", unload_lora_adapter)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/admin/load", admin_load)
    app.router.add_post("/update_weights_from_disk", update_weights_from_disk)
    app.router.add_get("/get_model_info", model_info)
    app.on_startup.append(_on_startup)
    app.on_shutdown.append(_on_shutdown)
    app.on_cleanup.append(_on_cleanup)
    return app


async def serve(config: RunnerConfig, stop: asyncio.Event | None = None) -> int:
    """Serve until `stop` is set (or SIGTERM/SIGINT); return 0, or 1 if no model could load."""
    app = build_app(config)
    state = app[STATE]
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=3.0, access_log=None)
    await runner.setup()
    if config.listen_fd is None:
        site: web.BaseSite = web.TCPSite(runner, config.host, config.port)
    else:
        site = web.SockSite(runner, socket.socket(fileno=config.listen_fd))
    await site.start()
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    port = runner.addresses[0][1] if runner.addresses else config.port
    host = f"[{config.host}]" if ":" in config.host else config.host
    url = f"http://{host}:{port}"
    log.info("listening on %s; loading %s", url, config.model_ref)
    code = 0
    stopper = asyncio.create_task(stop.wait())
    await asyncio.wait({stopper, state.initial_load}, return_when=asyncio.FIRST_COMPLETED)
    if state.initial_load.done() and state.engine.ready:
        served = state.engine.current
        log.info(
            "runner ready at %s (model %s as %s on %s)",
            url, served.ref, served.version, served.device.type,
        )  # fmt: skip
        await stopper
    elif state.initial_load.done():
        log.error("runner could not load %s: %s", config.model_ref, state.load_error)
        code = 1
    log.info("shutting down")
    stopper.cancel()
    await runner.cleanup()
    log.info("stopped")
    return code


def setup_logging(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=level.upper(), stream=sys.stderr,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        )  # fmt: skip
    else:
        root.setLevel(level.upper())


def run_runner(config: RunnerConfig) -> None:
    """Serve until SIGTERM/SIGINT (blocking); SystemExit(1) if the model cannot be loaded."""
    setup_logging(os.environ.get("LOG_LEVEL", "INFO"))
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # no tqdm bars in a host's log
    code = asyncio.run(serve(config))
    if code:
        raise SystemExit(code)
