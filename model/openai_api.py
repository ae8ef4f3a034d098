"""The OpenAI completions API as the runner speaks it: request validation and response shapes.

Torch-free and HTTP-free (a test checks it): `model.runner.openai_routes` turns requests into
engine calls with it. The shapes follow OpenAI's legacy completions API (what the official
`openai` SDK sends and parses): a prompt or a list of prompts, `n` choices per prompt indexed
`prompt * n + j`, `stream` as server-sent events of `text_completion` chunks ending in
`data: [DONE]`, optional `stream_options.include_usage`, and errors as
`{"error": {message, type, param, code}}`.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from typing import Any

from model.sampling_params import SamplingParams

MAX_TOKENS_LIMIT = 512
MAX_N = 8
MAX_STOP = 4
MAX_PROMPTS = 16
MAX_PROMPT_CHARS = 20_000
MAX_EXAMPLES = 8  # in-context jokes per request (an extension: OpenAI has no such field)
MAX_EXAMPLE_CHARS = 1000
DEFAULT_TEMPERATURE = SamplingParams.temperature
DEFAULT_TOP_P = SamplingParams.top_p


class ApiError(Exception):
    """An error answered in OpenAI's shape; `status` is the HTTP status."""

    status = 400
    kind = "invalid_request_error"

    def __init__(self, message: str, param: str | None = None, *, code: str | None = None):
        super().__init__(message)
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return error_body(str(self), self.kind, param=self.param, code=self.code)


class InvalidRequest(ApiError):
    """A request body the API rejects with 400; the message says what to fix."""


class ModelNotFound(ApiError):
    """`model` names no resident version (404 `model_not_found`, as OpenAI answers)."""

    status = 404

    def __init__(self, name: str, available: list[str]) -> None:
        listed = ", ".join(available) or "none"
        super().__init__(
            f"The model `{name}` does not exist on this runner (it serves: {listed})",
            param="model",
            code="model_not_found",
        )


def error_body(
    message: str, kind: str, *, param: str | None = None, code: str | int | None = None
) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


@dataclass(frozen=True)
class CompletionRequest:
    """A validated `/v1/completions` body."""

    prompts: tuple[str, ...]
    params: SamplingParams
    model: str | None = None
    stream: bool = False
    include_usage: bool = False


# ----------------------------------------------------------------------------- validation
def _int_field(body: dict, name: str, default: int, low: int, high: int) -> int:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidRequest(
            f"{name} must be an integer from {low} to {high}, not {value!r}", param=name
        )
    if not low <= value <= high:
        raise InvalidRequest(f"{name} must be from {low} to {high}, not {value}", param=name)
    return value


def _number_field(
    body: dict, name: str, default: float, low: float, high: float, *, low_open: bool = False
) -> float:
    value = body.get(name)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidRequest(f"{name} must be a number, not {value!r}", param=name)
    value = float(value)
    too_low = value <= low if low_open else value < low
    if too_low or value > high or value != value:
        bound = f"greater than {low}" if low_open else f"from {low}"
        raise InvalidRequest(f"{name} must be {bound} up to {high}, not {value}", param=name)
    return value


def _prompts(body: dict) -> tuple[str, ...]:
    prompt = body.get("prompt", "")
    if prompt is None:
        prompt = ""
    if isinstance(prompt, str):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        prompts = prompt
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        raise InvalidRequest("prompt must be text; token-id prompts are not supported", "prompt")
    else:
        raise InvalidRequest("prompt must be a string or a non-empty list of strings", "prompt")
    if len(prompts) > MAX_PROMPTS:
        raise InvalidRequest(f"at most {MAX_PROMPTS} prompts per request", param="prompt")
    if any(len(p) > MAX_PROMPT_CHARS for p in prompts):
        raise InvalidRequest(f"prompt must be at most {MAX_PROMPT_CHARS} characters", "prompt")
    return tuple(prompts)


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    if isinstance(stop, str):
        stops = (stop,)
    elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
        if len(stop) > MAX_STOP:
            raise InvalidRequest(
                f"stop may hold at most {MAX_STOP} strings, not {len(stop)}", param="stop"
            )
        stops = tuple(stop)
    else:
        raise InvalidRequest("stop must be a string or a list of strings", param="stop")
    if any(not s for s in stops):
        raise InvalidRequest("stop strings must not be empty", param="stop")
    return stops


def _stream_fields(body: dict) -> tuple[bool, bool]:
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("stream must be true or false", param="stream")
    options = body.get("stream_options")
    if options is None:
        return stream, False
    if not stream:
        raise InvalidRequest("stream_options is only allowed when stream is true", "stream_options")
    if not isinstance(options, dict):
        raise InvalidRequest("stream_options must be an object", param="stream_options")
    include_usage = options.get("include_usage", False)
    if not isinstance(include_usage, bool):
        raise InvalidRequest("stream_options.include_usage must be true or false", "stream_options")
    return stream, include_usage


def parse_completion_request(body: object, default_max_tokens: int = 64) -> CompletionRequest:
    """Validate a `/v1/completions` body; raise InvalidRequest with a clear reason."""
    if not isinstance(body, dict):
        raise InvalidRequest("the body must be a JSON object")
    prompts = _prompts(body)
    default_max = min(max(1, default_max_tokens), MAX_TOKENS_LIMIT)
    max_tokens = _int_field(body, "max_tokens", default_max, 1, MAX_TOKENS_LIMIT)
    temperature = _number_field(body, "temperature", DEFAULT_TEMPERATURE, 0.0, 2.0)
    top_p = _number_field(body, "top_p", DEFAULT_TOP_P, 0.0, 1.0, low_open=True)
    n = _int_field(body, "n", 1, 1, MAX_N)
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest(f"seed must be an integer, not {seed!r}", param="seed")
    if seed is not None and not -(2**63) <= seed < 2**63:
        raise InvalidRequest("seed must fit in 64 bits", param="seed")
    ignore_eos = body.get("ignore_eos", False)
    if not isinstance(ignore_eos, bool):
        raise InvalidRequest("ignore_eos must be true or false", param="ignore_eos")
    examples = body.get("examples") or []
    if not isinstance(examples, list) or not all(isinstance(e, str) for e in examples):
        raise InvalidRequest(
            "examples must be a list of strings (jokes shown to a base model)", "examples"
        )
    if len(examples) > MAX_EXAMPLES or any(len(e) > MAX_EXAMPLE_CHARS for e in examples):
        raise InvalidRequest(
            f"examples may hold at most {MAX_EXAMPLES} jokes of {MAX_EXAMPLE_CHARS} characters",
            "examples",
        )
    stream, include_usage = _stream_fields(body)
    model = body.get("model")
    if model is not None and (not isinstance(model, str) or not model.strip()):
        raise InvalidRequest("model must be a non-empty string", param="model")
    if body.get("echo"):
        raise InvalidRequest("echo is not supported by this runner", param="echo")
    if body.get("logprobs") not in (None, 0, False):
        raise InvalidRequest("logprobs is not supported by this runner", param="logprobs")
    if body.get("suffix"):
        raise InvalidRequest("suffix is not supported by this runner", param="suffix")
    best_of = body.get("best_of")
    if best_of is not None and best_of != n:
        raise InvalidRequest("best_of is not supported by this runner (use n)", param="best_of")
    params = SamplingParams(
        max_tokens=max_tokens, temperature=temperature, top_p=top_p, n=n, seed=seed,
        stop=_stops(body), ignore_eos=ignore_eos, examples=tuple(examples),
    )  # fmt: skip
    return CompletionRequest(prompts, params, model, stream, include_usage)


# ----------------------------------------------------------------------------- responses
def completion_id() -> str:
    return f"cmpl-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def choice(index: int, text: str, finish_reason: str | None) -> dict[str, Any]:
    return {"index": index, "text": text, "finish_reason": finish_reason, "logprobs": None}


def completion_body(
    ident: str, model: str, choices: list[dict[str, Any]], prompt_tokens: int, tokens: int
) -> dict[str, Any]:
    return {
        "id": ident,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "choices": sorted(choices, key=lambda c: c["index"]),
        "usage": usage(prompt_tokens, tokens),
    }


def stream_chunk(
    ident: str,
    created: int,
    model: str,
    choices: list[dict[str, Any]],
    *,
    with_usage: bool = False,
    usage_body: dict[str, int] | None = None,
) -> bytes:
    """One server-sent event: a `text_completion` chunk (usage null unless this is the last)."""
    chunk: dict[str, Any] = {
        "id": ident,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
    }
    if with_usage:
        chunk["usage"] = usage_body
    return sse(chunk)


def sse(data: dict[str, Any] | str) -> bytes:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n".encode()


STREAM_DONE = b"data: [DONE]\n\n"


def model_entry(name: str, created: int, root: str, parent: str | None) -> dict[str, Any]:
    """An entry of `/v1/models` (OpenAI's fields, plus vLLM's `root` and `parent`)."""
    return {
        "id": name,
        "object": "model",
        "created": created,
        "owned_by": "jokebot",
        "root": root,
        "parent": parent,
    }
