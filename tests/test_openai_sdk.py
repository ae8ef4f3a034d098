"""The official `openai` SDK against a real `jokebot runner` process, as a host's client uses it.

Also the wire format of streaming (server-sent events) read byte by byte, and a stream whose
client goes away.
"""

from __future__ import annotations

import asyncio
import json

import aiohttp
import openai
import pytest

from model.loading import load_model_and_tokenizer
from model.runner import STATE
from tests.greedy_reference import agrees_in_text, decided_greedy
from tests.runner_helpers import runner_client


@pytest.fixture(scope="module")
def sdk(shared_runner) -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{shared_runner}/v1", api_key="unused", max_retries=0)
    yield client
    client.close()


def test_models_list_names_the_serving_version(sdk):
    models = sdk.models.list().data
    assert [m.id for m in models] == ["v0"]


def test_text_completion(sdk):
    answer = sdk.completions.create(model="v0", prompt="Why did the", max_tokens=5, seed=1)
    assert answer.object == "text_completion" and answer.model == "v0"
    assert len(answer.choices) == 1 and isinstance(answer.choices[0].text, str)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert answer.usage.prompt_tokens == 4 and answer.usage.completion_tokens <= 5


def test_n_choices(sdk):
    answer = sdk.completions.create(model="v0", prompt="Knock", n=3, max_tokens=4, seed=5)
    assert [c.index for c in answer.choices] == [0, 1, 2]


def test_seed_is_deterministic(sdk):
    def ask(seed: int) -> list[str]:
        answer = sdk.completions.create(
            model="v0", prompt="A", n=2, max_tokens=8, seed=seed, extra_body={"ignore_eos": True}
        )
        return [c.text for c in answer.choices]

    assert ask(11) == ask(11)
    assert ask(11) != ask(12)


def test_greedy_is_repeatable(sdk):
    texts = {
        sdk.completions.create(model="v0", prompt="Why", max_tokens=6, temperature=0)
        .choices[0]
        .text
        for _ in range(2)
    }
    assert len(texts) == 1


def test_stop_strings(sdk):
    full = sdk.completions.create(
        model="v0", prompt="Why", max_tokens=12, temperature=0, extra_body={"ignore_eos": True}
    ).choices[0]
    assert len(full.text) > 4
    stop = full.text[2:4]
    cut = sdk.completions.create(
        model="v0", prompt="Why", max_tokens=12, temperature=0, stop=[stop],
        extra_body={"ignore_eos": True},
    ).choices[0]  # fmt: skip
    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(stop)]


def test_list_of_prompts_is_indexed_prompt_times_n(sdk, tiny_model):
    prompts = ["Why", "What do you call", "Knock knock"]
    answer = sdk.completions.create(model="v0", prompt=prompts, n=2, max_tokens=4, temperature=0)
    assert [c.index for c in answer.choices] == [0, 1, 2, 3, 4, 5]
    loaded = load_model_and_tokenizer(tiny_model, device="cpu")  # the runner's model, here
    refs = [decided_greedy(loaded.model, loaded.tokenizer, p, 4) for p in prompts]
    assert len({ref.ids[0] for ref in refs if ref.ids}) == 3  # a mix-up could not go unseen
    for i, alone in enumerate(refs):
        assert agrees_in_text(answer.choices[2 * i].text, alone, loaded.tokenizer)
        assert agrees_in_text(answer.choices[2 * i + 1].text, alone, loaded.tokenizer)
    assert answer.usage.prompt_tokens == sum(
        sdk.completions.create(model="v0", prompt=p, max_tokens=1).usage.prompt_tokens
        for p in prompts
    )


def test_streaming_matches_the_whole_answer(sdk):
    body = {"model": "v0", "prompt": "Why", "max_tokens": 10, "temperature": 0}
    whole = sdk.completions.create(**body).choices[0]
    usage = {"include_usage": True}
    chunks = list(sdk.completions.create(**body, stream=True, stream_options=usage))
    texts = [c.choices[0].text for c in chunks if c.choices]
    assert len(texts) >= 2
    assert "".join(texts) == whole.text
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == whole.finish_reason and set(finishes[:-1]) <= {None}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_bad_body_is_400(sdk):
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.completions.create(model="v0", prompt="x", max_tokens=0)
    assert "max_tokens" in caught.value.message
    assert caught.value.body["type"] == "invalid_request_error"


def test_unknown_model_is_404(sdk):
    with pytest.raises(openai.NotFoundError) as caught:
        sdk.completions.create(model="no-such-model", prompt="x", max_tokens=2)
    assert caught.value.code == "model_not_found"


# ------------------------------------------------------------------- the wire format
async def _events(response: aiohttp.ClientResponse) -> list[str]:
    raw = (await response.read()).decode()
    assert raw.endswith("\n\n")
    events = [block for block in raw.split("\n\n") if block]
    assert all(e.startswith("data: ") for e in events)
    return [e.removeprefix("data: ") for e in events]


async def test_stream_wire_format(shared_runner):
    body = {"prompt": ["Why", "Knock"], "n": 2, "max_tokens": 6, "seed": 3, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{shared_runner}/v1/completions", json=body) as response,
    ):
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/event-stream")
        events = await _events(response)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and next(iter(ids)).startswith("cmpl-")
    assert all(c["object"] == "text_completion" and c["model"] == "v0" for c in chunks)
    *text_chunks, last = chunks
    assert last["choices"] == [] and last["usage"]["total_tokens"] > 0
    assert all(c["usage"] is None and len(c["choices"]) == 1 for c in text_chunks)
    by_index: dict[int, list[dict]] = {}
    for c in text_chunks:
        by_index.setdefault(c["choices"][0]["index"], []).append(c["choices"][0])
    assert sorted(by_index) == [0, 1, 2, 3]
    for parts in by_index.values():
        assert parts[-1]["finish_reason"] in ("stop", "length")
        assert all(p["finish_reason"] is None for p in parts[:-1])
    # no include_usage: no usage field at all, as OpenAI streams it
    body = {"prompt": "Why", "max_tokens": 3, "stream": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{shared_runner}/v1/completions", json=body) as response,
    ):
        events = await _events(response)
    assert events[-1] == "[DONE]" and all("usage" not in json.loads(e) for e in events[:-1])


async def test_stream_errors_before_the_first_byte_are_plain_json(shared_runner):
    body = {"model": "nope", "prompt": "x", "stream": True}
    async with (
        aiohttp.ClientSession() as http,
        http.post(f"{shared_runner}/v1/completions", json=body) as response,
    ):
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "model_not_found"


async def test_stream_cancelled_by_the_client_frees_its_row(tiny_a):
    async with runner_client(tiny_a) as c:
        engine = c.server.app[STATE].engine
        body = {"prompt": "x", "max_tokens": 250, "temperature": 0, "ignore_eos": True,
                "stream": True}  # fmt: skip
        response = await c.post("/v1/completions", json=body)
        assert response.status == 200
        first = await response.content.readline()
        assert first.startswith(b"data: ")
        assert engine.running_rows == 1
        steps = engine.steps
        response.close()  # the client goes away mid-stream
        for _ in range(300):
            await asyncio.sleep(0.01)
            if not engine.running_rows:
                break
        assert engine.running_rows == 0 and engine.current.batch.rows == []
        assert engine.steps - steps < 100  # long before its 250 tokens
