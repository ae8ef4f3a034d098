"""The model runner: an aiohttp server speaking a subset of the OpenAI completions API.

Endpoints: `POST /v1/completions`, `GET /v1/models`, `GET /health` (ready), `GET /health/live`
(alive), `GET /metrics` (Prometheus) and `POST /admin/load` (bearer token; hot swap of a new
checkpoint). Generation runs in the engine's worker thread (`model.engine`), loading in a
loader thread, so the event loop always answers.

Run it with `python -m model.server --model REF --port 8765` (admin token from `RUNNER_TOKEN`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import logging
import os
import signal
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

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
    SamplingParams,
)
from model.metrics import RunnerMetrics
from model.swap import CandidateError, default_version, load_candidate

log = logging.getLogger("model.server")

MAX_TOKENS_LIMIT = 512
MAX_N = 8
MAX_STOP = 4
MAX_EXAMPLES = 8  # in-context jokes per request (an extension: OpenAI has no such field)
MAX_EXAMPLE_CHARS = 1000
MAX_PROMPT_CHARS = 20_000


@dataclass
class RunnerConfig:
    model_ref: str
    version: str = "v0"
    host: str = "127.0.0.1"
    port: int = 8765
    device: str = "auto"
    admin_token: str | None = None
    max_queue: int = 64
    max_batch: int = 16
    compile: bool = False
    default_max_tokens: int = 64


class InvalidRequest(ValueError):
    """A request body the API rejects with 400; the message says what to fix."""


class LoadInProgress(Exception):
    pass


# ----------------------------------------------------------------------------- validation
def _int_field(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(f"{name} must be an integer from {low} to {high}, not {value!r}")
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be from {low} to {high}, not {value}")
    return value


def _number_field(
    body: dict, name: str, default: float, low: float, high: float, *, low_open: bool = False
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} must be a number, not {value!r}")
    value = float(value)
    too_low = value <= low if low_open else value < low
    if too_low or value > high or value != value:
        bound = f"greater than {low}" if low_open else f"from {low}"
        raise InvalidRequest(f"{name} must be {bound} up to {high}, not {value}")
    return value


def parse_completion_request(
    body: object, default_max_tokens: int = 64
) -> tuple[str, SamplingParams]:
    """Validate a `/v1/completions` body; raise InvalidRequest with a clear reason."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    prompt = body.get("prompt", "")
    if prompt is None:
        prompt = ""
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]  # OpenAI clients sometimes send a one-element list
    if not isinstance(prompt, str):
        raise InvalidRequest("prompt must be a string (one prompt per request)")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InvalidRequest(f"prompt must be at most {MAX_PROMPT_CHARS} characters")
    default_max = min(max(1, default_max_tokens), MAX_TOKENS_LIMIT)
    max_tokens = _int_field(body, "max_tokens", default_max, 1, MAX_TOKENS_LIMIT)
    temperature = _number_field(body, "temperature", 0.9, 0.0, 2.0)
    top_p = _number_field(body, "top_p", 0.95, 0.0, 1.0, low_open=True)
    n = _int_field(body, "n", 1, 1, MAX_N)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest(f"seed must be an integer, not {seed!r}")
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise InvalidRequest("seed must fit in 64 bits")
    stop = body.get("stop")
    if stop is None:
        stops: tuple[str, ...] = ()
    elif isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > MAX_STOP:
            raise InvalidRequest(f"stop may hold at most {MAX_STOP} strings, not {len(stop)}")
        stops = tuple(stop)
    else:
        raise InvalidRequest("stop must be a string or a list of strings")
    if any(not s for s in stops):
        raise InvalidRequest("stop strings must not be empty")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise InvalidRequest("ignore_eos must be true or false")
    examples = body.get("examples") or []
    if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
        raise InvalidRequest("examples must be a list of strings (jokes shown to a base model)")
    if len(examples) > MAX_EXAMPLES or any(len(e) > MAX_EXAMPLE_CHARS for e in examples):
        raise InvalidRequest(
            f"examples may hold at most {MAX_EXAMPLES} jokes of {MAX_EXAMPLE_CHARS} characters"
        )
    if body.get("stream"):
        raise InvalidRequest("stream is not supported by this runner; send stream: false")
    if body.get("echo"):
        raise InvalidRequest("echo is not supported by this runner")
    if body.get("logprobs") not in (None, 0, False):
        raise InvalidRequest("logprobs is not supported by this runner")
    if body.get("suffix"):
        raise InvalidRequest("suffix is not supported by this runner")
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise InvalidRequest("best_of is not supported by this runner (use n)")
    params = SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n, seed=seed,
        stop=stops, ignore_eos=ignore_eos, examples=tuple(examples),
    )  # fmt: skip
    return prompt, params


# ----------------------------------------------------------------------------- state
class RunnerState:
    """Everything one runner app owns: engine, metrics, the loader thread and load status."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.metrics = RunnerMetrics()
        self.engine = Engine(
            max_batch=config.max_batch, max_queue=config.max_queue, metrics=self.metrics
        )
        self.metrics.bind_engine(self.engine)
        self.loader = ThreadPoolExecutor(1, thread_name_prefix="jokebot-loader")
        self.load_task: asyncio.Task | None = None
        self.initial_load: asyncio.Task | None = None
        self.load_error: str | None = None
        self.stopping = False
        self.started = time.time()

    @property
    def loading(self) -> bool:
        return self.load_task is not None and not self.load_task.done()

    def start_load(self, ref: str, version: str | None, *, initial: bool = False) -> asyncio.Task:
        """Start loading `ref` beside the serving model; LoadInProgress if one is under way."""
        if self.loading:
            raise LoadInProgress()
        task = asyncio.create_task(self._load(ref, version, initial))
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, no warning
        self.load_task = task
        return task

    async def _load(self, ref: str, version: str | None, initial: bool) -> dict:
        start = time.monotonic()
        version = version or default_version(ref)
        loop = asyncio.get_running_loop()
        log.info("loading %s as %s", ref, version)
        try:
            served = await loop.run_in_executor(
                self.loader, load_candidate, ref, version, self.config.device, self.config.compile
            )
        except CandidateError as exc:
            if not initial:
                self.metrics.swaps.labels("failed").inc()
            log.error("could not load %s: %s (the serving model is unchanged)", ref, exc)
            raise
        if self.stopping:
            raise CandidateError("the runner is shutting down")
        previous = self.engine.install(served)
        seconds = time.monotonic() - start
        self.load_error = None
        self.metrics.set_serving(served.version, served.ref)
        if not initial:
            self.metrics.swaps.labels("ok").inc()
            self.metrics.swap_duration.observe(seconds)
        if previous is not None:
            log.info(
                "swapped %s -> %s in %.2f s; %s drains its in-flight requests, then is released",
                previous.version, served.version, seconds, previous.version,
            )  # fmt: skip
        info = {"version": served.version, "model_ref": served.ref, "swap_seconds": seconds}
        if previous is not None:
            info["previous_version"] = previous.version
        return info

    async def load_initial(self) -> None:
        try:
            await self.start_load(self.config.model_ref, self.config.version, initial=True)
        except CandidateError as exc:
            self.load_error = str(exc)


STATE = web.AppKey("runner_state", RunnerState)


# ----------------------------------------------------------------------------- helpers
def _error(status: int, message: str, kind: str, headers: dict | None = None) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": kind, "code": status}},
        status=status, headers=headers,
    )  # fmt: skip


def _not_ready(state: RunnerState) -> web.Response:
    if state.stopping:
        why = "the runner is shutting down"
    elif state.load_error:
        why = f"no model is serving: {state.load_error}"
    else:
        why = "the model is still loading"
    return _error(503, why, "service_unavailable", headers={"Retry-After": "5"})


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


async def _wait_result(request: web.Request, req: EngineRequest) -> CompletionResult:
    """Wait for the engine; notice a client that disconnects even without handler cancellation."""
    fut = asyncio.wrap_future(req.future)
    while True:
        done, _ = await asyncio.wait({fut}, timeout=0.5)
        if done:
            return fut.result()
        transport = request.transport
        if transport is None or transport.is_closing():
            raise ClientGone()


# ----------------------------------------------------------------------------- handlers
async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        prompt, params = parse_completion_request(
            await _json_body(request), state.config.default_max_tokens
        )
    except InvalidRequest as exc:
        return _error(400, str(exc), "invalid_request_error")
    if not state.engine.ready or state.stopping:
        return _not_ready(state)
    try:
        req = state.engine.submit(prompt, params)
    except QueueFull as exc:
        return _error(
            429, f"the runner is busy ({state.config.max_queue} requests waiting); retry later",
            "rate_limit_error", headers={"Retry-After": str(exc.retry_after)},
        )  # fmt: skip
    except NotReady:
        return _not_ready(state)
    try:
        result = await _wait_result(request, req)
    except asyncio.CancelledError:
        state.engine.cancel(req)
        raise
    except ClientGone:
        state.engine.cancel(req)
        return web.Response(status=499, text="client closed the connection")
    except RequestError as exc:
        return _error(400, str(exc), "invalid_request_error")
    except EngineStopped:
        return _not_ready(state)
    except Exception as exc:
        log.exception("completion failed")
        return _error(500, f"generation failed: {exc}", "server_error")
    state.metrics.latency.observe(time.monotonic() - req.submitted_at)
    return web.json_response(
        {
            "id": f"cmpl-{uuid.uuid4().hex}",
            "object": "text_completion",
            "created": int(time.time()),
            "model": result.version,
            "choices": [
                {
                    "index": c.index,
                    "text": c.text,
                    "finish_reason": c.finish_reason,
                    "logprobs": None,
                }
                for c in result.choices
            ],
            "usage": {
                "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens,
                "total_tokens": result.prompt_tokens + result.completion_tokens,
            },
        }
    )


async def list_models(request: web.Request) -> web.Response:
    state = request.app[STATE]
    served = state.engine.current
    data = []
    if served is not None:
        data.append(
            {
                "id": served.version,
                "object": "model",
                "created": int(state.started),
                "owned_by": "jokebot",
                "root": served.ref,
            }
        )
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
        "loading": state.loading,
        "resident_versions": engine.resident_versions,
        "uptime_seconds": round(time.time() - state.started, 1),
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


async def admin_load(request: web.Request) -> web.Response:
    state = request.app[STATE]
    denied = _check_admin(request)
    if denied is not None:
        return denied
    try:
        body = await _json_body(request)
    except InvalidRequest as exc:
        return _error(400, str(exc), "invalid_request_error")
    if not isinstance(body, dict) or not isinstance(body.get("path"), str) or not body["path"]:
        return _error(400, "the body must be {\"path\": \"<model folder or hub id>\"}",
                      "invalid_request_error")  # fmt: skip
    version = body.get("version")
    if version is not None and (not isinstance(version, str) or not version.strip()):
        return _error(400, "version must be a non-empty string", "invalid_request_error")
    if state.stopping:
        return _not_ready(state)
    try:
        task = state.start_load(body["path"], version)
    except LoadInProgress:
        return _error(409, "a model load is already under way; try again when it is done",
                      "conflict")  # fmt: skip
    try:
        info = await asyncio.shield(task)
    except CandidateError as exc:
        return _error(422, str(exc), "load_error")
    return web.json_response(info)


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
    except asyncio.CancelledError:
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
    for task in (state.initial_load, state.load_task):
        if task is not None and not task.done():
            task.cancel()
    await asyncio.get_running_loop().run_in_executor(None, state.engine.stop, 5.0)
    state.loader.shutdown(wait=False, cancel_futures=True)


def build_app(config: RunnerConfig) -> web.Application:
    """The runner as an aiohttp app; the model loads in the background once the app starts."""
    app = web.Application(middlewares=[_observe], client_max_size=1 << 20)
    app[STATE] = RunnerState(config)
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/admin/load", admin_load)
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
    site = web.TCPSite(runner, config.host, config.port)
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


def _default_model_ref() -> str:
    base = os.environ.get("MODEL_BASE")
    if base:
        return base
    from model.embedded import ensure_embedded_model

    return str(ensure_embedded_model(Path(os.environ.get("JOKEBOT_DATA_DIR", "./data"))))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m model.server",
        description="jokebot model runner (OpenAI completions subset); admin token: RUNNER_TOKEN",
    )
    parser.add_argument("--model", help="hub id or folder (default: MODEL_BASE or embedded)")
    parser.add_argument("--version", default="v0", help="serving name of the model")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    parser.add_argument("--device", default=os.environ.get("DEVICE", "auto"))
    parser.add_argument("--max-queue", type=int, default=64)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--default-max-tokens", type=int, default=64)
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--log-level", default=os.environ.get("LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    config = RunnerConfig(
        model_ref=args.model or _default_model_ref(),
        version=args.version,
        host=args.host,
        port=args.port,
        device=args.device,
        admin_token=os.environ.get("RUNNER_TOKEN") or None,
        max_queue=args.max_queue,
        max_batch=args.max_batch,
        compile=args.compile,
        default_max_tokens=args.default_max_tokens,
    )
    run_runner(config)


if __name__ == "__main__":
    main()
