"""The bot's side of one runner replica's HTTP API: OpenAI completions plus the swap calls.

One aiohttp session for the bot's lifetime, timeouts on every call, and retries with backoff
when the connection fails (a local runner that is restarting), never when the runner answered.
The swap calls are those of each engine: `/admin/load` (jokebot), `/v1/load_lora_adapter`
(vLLM, and jokebot too) and `/update_weights_from_disk` (SGLang). Several replicas, routing
and fan-out live in `bot.runners.pool`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp

log = logging.getLogger(__name__)


class RunnerError(Exception):
    """The runner answered with an error; the message is its reason."""


class RunnerUnavailable(RunnerError):
    """The runner could not be reached (or is not ready) after the retries."""


class RunnerUnreachable(RunnerUnavailable):
    """The connection failed (refused, reset, dropped): the request may go to another replica."""


class RunnerTimeout(RunnerUnavailable):
    """The runner did not answer in time."""


class RunnerBusy(RunnerError):
    """The runner's queue is full; try again after `retry_after` seconds."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass(frozen=True)
class Completion:
    text: str
    finish_reason: str
    model: str  # as the engine names what answered
    completion_tokens: int
    version: int | None = None  # the version that wrote it, when the pool knows (RunnerPool)


def _error_message(body: Any, status: int) -> str:
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        return str(body["error"].get("message") or f"HTTP {status}")
    if isinstance(body, dict) and body.get("message"):  # SGLang's {"success", "message"}
        return str(body["message"])
    return f"HTTP {status}"


async def poll_until_ready(
    health: Callable[[], Awaitable[dict[str, Any]]], timeout: float, is_alive: Any = None
) -> dict[str, Any]:
    """Call `health` until it answers (a runner that is starting is RunnerUnavailable); stop
    early when `is_alive()` says the process we wait for died, or after `timeout` seconds."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        try:
            return await health()
        except RunnerUnavailable:
            if is_alive is not None and not is_alive():
                raise
            if asyncio.get_running_loop().time() > deadline:
                raise
        await asyncio.sleep(0.25)


class RunnerClient:
    """Talks to one runner at `base_url`; create it inside a running event loop."""

    def __init__(
        self,
        base_url: str,
        *,
        admin_token: str | None = None,
        timeout: float = 60.0,
        retries: int = 3,
        backoff: float = 0.5,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._admin_token = admin_token
        self._timeout = aiohttp.ClientTimeout(total=timeout, connect=5)
        self._retries = retries
        self._backoff = backoff
        self._session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> RunnerClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def _request(
        self,
        method: str,
        path: str,
        *,
        json_body: dict[str, Any] | None = None,
        admin: bool = False,
        timeout: float | None = None,
        retries: int | None = None,
    ) -> tuple[int, Any, aiohttp.typedefs.LooseHeaders]:
        # The token goes on every call: vLLM and SGLang started with --api-key want it on all.
        token = self._admin_token
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        attempts = (self._retries if retries is None else retries) + 1
        request_timeout = aiohttp.ClientTimeout(total=timeout) if timeout else None
        for attempt in range(attempts):
            try:
                async with self._http().request(
                    method,
                    f"{self.base_url}{path}",
                    json=json_body,
                    headers=headers,
                    timeout=request_timeout,
                ) as response:
                    try:
                        body = await response.json(content_type=None)
                    except (aiohttp.ContentTypeError, ValueError):
                        body = await response.text()
                    return response.status, body, response.headers
            except (aiohttp.ClientConnectionError, ConnectionError) as error:
                if attempt + 1 >= attempts:
                    raise RunnerUnreachable(f"cannot reach the model runner: {error}") from error
                delay = self._backoff * 2**attempt
                log.info("runner unreachable (%s); retrying in %.1fs", error, delay)
                await asyncio.sleep(delay)
            except TimeoutError as error:
                raise RunnerTimeout("the model runner did not answer in time") from error
        raise AssertionError("unreachable")

    async def complete(
        self,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int | None = None,
        examples: Sequence[str] = (),
        model: str | None = None,
    ) -> Completion:
        """One completion; the runner stops it at the model's end-of-joke token. `examples` are
        in-context jokes, used by the runner only for a model in the `few-shot` layout.
        `model` names the version to use (vLLM: the adapter); None = what the runner serves."""
        body: dict[str, Any] = {
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
        }
        if seed is not None:
            body["seed"] = seed
        if examples:
            body["examples"] = list(examples)
        if model is not None:
            body["model"] = model
        status, answer, headers = await self._request("POST", "/v1/completions", json_body=body)
        if status == 429:
            retry_after = int(headers.get("Retry-After", "5") or 5)
            raise RunnerBusy(_error_message(answer, status), retry_after)
        if status == 503:
            raise RunnerUnavailable(_error_message(answer, status))
        if status != 200:
            raise RunnerError(_error_message(answer, status))
        choice = answer["choices"][0]
        return Completion(
            text=choice["text"],
            finish_reason=choice.get("finish_reason", "stop"),
            model=answer.get("model", "?"),
            completion_tokens=answer.get("usage", {}).get("completion_tokens", 0),
        )

    async def health(self) -> dict[str, Any]:
        """The runner's /health body; raises RunnerUnavailable when it is not ready."""
        status, body, _ = await self._request("GET", "/health", retries=0, timeout=5)
        if status != 200:
            raise RunnerUnavailable(_error_message(body, status))
        return body if isinstance(body, dict) else {}

    async def wait_until_ready(self, timeout: float, is_alive: Any = None) -> dict[str, Any]:
        """Poll /health until ready; `is_alive()` returning False (a dead child) stops early."""
        return await poll_until_ready(self.health, timeout, is_alive)

    async def load(self, path: str, version: str, *, timeout: float = 600) -> dict[str, Any]:
        """Ask the runner to load, smoke-test and swap in a model; the old one serves meanwhile."""
        status, body, _ = await self._request(
            "POST",
            "/admin/load",
            json_body={"path": path, "version": version},
            admin=True,
            timeout=timeout,
            retries=1,
        )
        if status != 200:
            raise RunnerError(_error_message(body, status))
        return body

    async def _admin_call(
        self, path: str, body: dict[str, Any], timeout: float, method: str = "POST"
    ) -> Any:
        status, answer, _ = await self._request(
            method, path, json_body=body, admin=True, timeout=timeout, retries=1
        )
        if status != 200:
            raise RunnerError(_error_message(answer, status))
        if isinstance(answer, dict) and answer.get("success") is False:  # SGLang's refusal shape
            raise RunnerError(str(answer.get("message") or "refused"))
        return answer

    async def models(self) -> list[dict[str, Any]]:
        """`GET /v1/models`: the entries (`id`, and vLLM's `parent` for adapters)."""
        status, body, _ = await self._request("GET", "/v1/models", retries=0, timeout=5)
        if status != 200:
            raise RunnerUnavailable(_error_message(body, status))
        return list(body.get("data") or []) if isinstance(body, dict) else []

    async def load_lora_adapter(self, name: str, path: str, *, timeout: float = 600) -> None:
        """vLLM's `POST /v1/load_lora_adapter`: serve the adapter at `path` as model `name`."""
        await self._admin_call(
            "/v1/load_lora_adapter", {"lora_name": name, "lora_path": path}, timeout
        )

    async def unload_lora_adapter(self, name: str, *, timeout: float = 60) -> None:
        """vLLM's `POST /v1/unload_lora_adapter`."""
        await self._admin_call("/v1/unload_lora_adapter", {"lora_name": name}, timeout)

    async def update_weights_from_disk(self, path: str, *, timeout: float = 600) -> None:
        """SGLang's `POST /update_weights_from_disk`: replace the weights in place."""
        await self._admin_call("/update_weights_from_disk", {"model_path": path}, timeout)

    async def model_info(self) -> dict[str, Any]:
        """SGLang's `GET /get_model_info` (`model_path` says which weights it serves)."""
        status, body, _ = await self._request("GET", "/get_model_info", retries=0, timeout=5)
        if status != 200:
            raise RunnerUnavailable(_error_message(body, status))
        return body if isinstance(body, dict) else {}
