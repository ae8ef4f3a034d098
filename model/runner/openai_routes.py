"""The OpenAI routes: `POST /v1/completions` (whole or streamed) and `GET /v1/models`.

Request shapes come from `model.openai_api`; generation runs in the engine's worker thread, so
the event loop always answers. A request's prompts are queued together (`submit`), and whatever
is unfinished when a handler leaves (the client went away, a sibling prompt failed) is
cancelled in one place, so its rows leave the batch at the next step.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiohttp import web

from model.openai_api import (
    STREAM_DONE,
    ApiError,
    CompletionRequest,
    ModelNotFound,
    choice,
    completion_body,
    completion_id,
    error_body,
    model_entry,
    parse_completion_request,
    sse,
    stream_chunk,
    usage,
)
from model.request import (
    CompletionResult,
    EngineRequest,
    EngineStopped,
    NotReady,
    QueueFull,
    RequestError,
    StreamListener,
    UnknownModel,
)
from model.runner.responses import (
    ClientGone,
    api_error,
    busy,
    check_client,
    error,
    json_body,
    not_ready,
)
from model.runner.state import STATE, RunnerState

log = logging.getLogger(__name__)


def submit(
    state: RunnerState, parsed: CompletionRequest, listeners: Sequence[StreamListener] = ()
) -> list[EngineRequest] | web.Response:
    """Queue one engine request per prompt, all or none; or the answer that says why not."""
    jobs = [(prompt, parsed.params) for prompt in parsed.prompts]
    try:
        return state.engine.submit_all(jobs, parsed.model, listeners)
    except UnknownModel as exc:
        return api_error(ModelNotFound(exc.name, exc.available))
    except QueueFull as exc:
        return busy(state, exc)
    except NotReady:
        return not_ready(state)


def observe_latency(state: RunnerState, reqs: list[EngineRequest]) -> None:
    for req in reqs:
        state.metrics.latency.observe(time.monotonic() - req.submitted_at)


async def wait_results(request: web.Request, reqs: list[EngineRequest]) -> list[CompletionResult]:
    """Wait for the engine; notice a client that disconnects even without handler cancellation."""
    futures = [asyncio.wrap_future(r.future) for r in reqs]
    while True:
        _, pending = await asyncio.wait(futures, timeout=0.5)
        if not pending:
            return [f.result() for f in futures]
        failed = next((f for f in futures if f.done() and f.exception()), None)
        if failed is not None:
            failed.result()
        check_client(request)


async def completions(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE]
    try:
        parsed = parse_completion_request(await json_body(request), state.config.default_max_tokens)
    except ApiError as exc:
        return api_error(exc)
    if not state.serving:
        return not_ready(state)
    if parsed.stream:
        return await stream_completion(request, state, parsed)
    reqs = submit(state, parsed)
    if isinstance(reqs, web.Response):
        return reqs
    try:
        results = await wait_results(request, reqs)
    except ClientGone:
        return web.Response(status=499, text="client closed the connection")
    except RequestError as exc:
        return error(400, str(exc), "invalid_request_error", param="prompt")
    except EngineStopped:
        return not_ready(state)
    except Exception as exc:
        log.exception("completion failed")
        return error(500, f"generation failed: {exc}", "server_error")
    finally:
        state.engine.cancel(*reqs)  # the unfinished ones, when the handler leaves early
    observe_latency(state, reqs)
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


async def stream_completion(
    request: web.Request, state: RunnerState, parsed: CompletionRequest
) -> web.StreamResponse:
    """Server-sent events: a chunk per step with new text, `finish_reason` on each choice's last."""
    loop = asyncio.get_running_loop()
    events: asyncio.Queue[tuple[int, str, str | None]] = asyncio.Queue()
    n = parsed.params.n

    def listener_for(prompt: int) -> StreamListener:
        def listen(index: int, text: str, finish: str | None) -> None:
            loop.call_soon_threadsafe(events.put_nowait, (prompt * n + index, text, finish))

        return listen

    reqs = submit(state, parsed, [listener_for(i) for i in range(len(parsed.prompts))])
    if isinstance(reqs, web.Response):
        return reqs
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
                check_client(request)
                continue
            index, text, finish = getter.result()
            if finish is not None:
                remaining -= 1
            piece = [choice(index, text, finish)]
            await response.write(
                stream_chunk(ident, created, model, piece, with_usage=parsed.include_usage)
            )
        results = await asyncio.gather(*futures)
        observe_latency(state, reqs)
        if parsed.include_usage:
            totals = usage(
                sum(r.prompt_tokens for r in results), sum(r.completion_tokens for r in results)
            )
            await response.write(
                stream_chunk(ident, created, model, [], with_usage=True, usage_body=totals)
            )
        await response.write(STREAM_DONE)
        await response.write_eof()
    except (ClientGone, ConnectionError):
        pass
    except (RequestError, EngineStopped, RuntimeError) as exc:
        kind = "invalid_request_error" if isinstance(exc, RequestError) else "server_error"
        with contextlib.suppress(ConnectionError):
            await response.write(sse(error_body(str(exc), kind)))
            await response.write_eof()
    finally:
        state.engine.cancel(*reqs)  # the unfinished ones, when the handler leaves early
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


def add_openai_routes(app: web.Application) -> None:
    app.router.add_post("/v1/completions", completions)
    app.router.add_get("/v1/models", list_models)
