"""The runner process: its aiohttp app, health and metrics, and its life from start to stop.

Endpoints: `POST /v1/completions` (also streamed) and `GET /v1/models` (`openai_routes`),
`GET /health` (ready), `GET /health/live` (alive), `GET /metrics` (Prometheus) here, and with
the admin bearer token the swaps of `admin_routes`. The model loads in the background once the
app starts; `serve` runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
import time

from aiohttp import web

from model.devices import configure_cpu_threads
from model.runner.admin_routes import add_admin_routes
from model.runner.openai_routes import add_openai_routes
from model.runner.responses import ClientGone, error
from model.runner.state import STATE, RunnerConfig, RunnerState

log = logging.getLogger("model.runner")


async def health(request: web.Request) -> web.Response:
    state = request.app[STATE]
    engine = state.engine
    served = engine.current
    ready = state.serving
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
        return error(exc.status, exc.reason, "invalid_request_error", headers=keep)
    except (asyncio.CancelledError, ClientGone, ConnectionError):
        code = 499
        raise
    finally:
        request.app[STATE].metrics.observe_response(endpoint, code)


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
    add_openai_routes(app)
    app.router.add_get("/health", health)
    app.router.add_get("/health/live", live)
    app.router.add_get("/metrics", metrics)
    add_admin_routes(app)
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
