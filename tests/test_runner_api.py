"""The runner's HTTP API, in-process on a loopback port, with the tiny GPT-2."""

from __future__ import annotations

import asyncio
import re

import pytest
import pytest_asyncio

from model.runner import STATE
from model.textformat import prompt_ids
from tests.greedy_reference import agrees_in_text, decided_greedy
from tests.helpers import heavy_modules_after_import
from tests.runner_helpers import runner_client

pytestmark = pytest.mark.asyncio(loop_scope="module")
TOKEN = "s3cret-token"


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def client(tiny_a):
    async with runner_client(tiny_a, admin_token=TOKEN, version="v7") as c:
        yield c


async def complete(client, **body):
    resp = await client.post("/v1/completions", json=body)
    return resp.status, await resp.json()


async def test_completion_shape_and_usage(client, tiny_a):
    status, body = await complete(client, prompt="Why did the chicken", max_tokens=5)
    assert status == 200, body
    assert body["object"] == "text_completion" and body["model"] == "v7"
    assert body["id"].startswith("cmpl-") and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and isinstance(choice["text"], str)
    assert choice["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["prompt_tokens"] == 5  # start token + 4 prompt tokens
    assert 0 < usage["completion_tokens"] <= 5
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


async def test_empty_prompt_and_default_body(client):
    status, body = await complete(client, max_tokens=3)
    assert status == 200 and body["usage"]["prompt_tokens"] == 1


async def test_text_is_the_continuation_only(client):
    prompt = "Knock knock, who is"
    status, body = await complete(client, prompt=prompt, max_tokens=6, temperature=0)
    assert status == 200
    assert not body["choices"][0]["text"].startswith(prompt)


async def test_finish_reason_length_vs_stop(client):
    greedy = {"prompt": "A man walks into a bar", "temperature": 0, "ignore_eos": True}
    status, body = await complete(client, max_tokens=12, **greedy)
    assert status == 200
    full = body["choices"][0]["text"]
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 12
    stop = full.split()[len(full.split()) // 2]
    status, body = await complete(client, max_tokens=12, stop=[stop, "qqzz"], **greedy)
    assert status == 200
    assert body["choices"][0] == {
        "index": 0,
        "text": full[: full.find(stop)],
        "finish_reason": "stop",
        "logprobs": None,
    }
    status, body = await complete(client, max_tokens=12, stop=stop, **greedy)
    assert body["choices"][0]["text"] == full[: full.find(stop)]


async def test_n_choices(client):
    status, body = await complete(client, prompt="Q:", n=3, max_tokens=6, temperature=1.0, seed=5)
    assert status == 200
    assert [c["index"] for c in body["choices"]] == [0, 1, 2]
    assert len({c["text"] for c in body["choices"]}) > 1


async def test_seed_reproducible_and_varies(client):
    body = {"prompt": "Why", "max_tokens": 10, "temperature": 1.2, "top_p": 0.9}
    runs = [await complete(client, seed=42, **body) for _ in range(2)]
    assert runs[0][0] == runs[1][0] == 200
    assert runs[0][1]["choices"] == runs[1][1]["choices"]
    _, other = await complete(client, seed=43, **body)
    assert other["choices"] != runs[0][1]["choices"]
    unseeded = {str((await complete(client, **body))[1]["choices"]) for _ in range(3)}
    assert len(unseeded) > 1


async def test_concurrent_requests_share_batches(client):
    """Concurrent requests run in one batch, each gets its own answer, greedy text agrees with
    each prompt's run alone wherever the model is decided, and the same batch gives the same."""
    engine = client.server.app[STATE].engine
    model, tok = engine.current.loaded.model, engine.current.tokenizer
    jobs = [
        {"prompt": p, "max_tokens": m, "temperature": 0, "ignore_eos": True}
        for p, m in [("Why", 4), ("", 9), ("A long prompt about a man and a bar", 6), ("Q:", 12)]
    ]

    async def together() -> list[dict]:
        with engine._cv:  # the worker waits until all four are queued: they share one batch
            tasks = [asyncio.create_task(complete(client, **j)) for j in jobs]
            while engine.queue_depth < len(jobs):
                await asyncio.sleep(0.005)
            prefills, steps = engine.prefills, engine.steps
        answers = [body for _, body in await asyncio.gather(*tasks)]
        assert (engine.prefills - prefills, engine.steps - steps) == (1, 11)  # 12 tokens at most
        return answers

    first = await together()
    for job, answer in zip(jobs, first, strict=True):
        assert answer["usage"]["prompt_tokens"] == len(prompt_ids(tok, job["prompt"]))
        assert answer["usage"]["completion_tokens"] == job["max_tokens"]
        alone = decided_greedy(model, tok, job["prompt"], job["max_tokens"], ignore_eos=True)
        assert agrees_in_text(answer["choices"][0]["text"], alone, tok), job
    assert [a["choices"] for a in await together()] == [a["choices"] for a in first]


async def test_the_openai_schema_loads_without_torch():
    """`model.openai_api` and the request types it builds are torch-free, as they claim."""
    loaded = heavy_modules_after_import(
        "model.openai_api", "model.sampling_params", "model.request"
    )
    assert loaded == []


BAD_BODIES = [
    ("[1, 2]", "JSON object"),
    ("{not json", "not valid JSON"),
    ("", "JSON object"),
    ({"prompt": 5}, "prompt"),
    ({"prompt": []}, "prompt"),
    ({"prompt": ["a", 2]}, "prompt"),
    ({"prompt": [1, 2]}, "token-id"),
    ({"max_tokens": 0}, "max_tokens"),
    ({"max_tokens": 513}, "max_tokens"),
    ({"max_tokens": "5"}, "max_tokens"),
    ({"max_tokens": 2.5}, "max_tokens"),
    ({"max_tokens": True}, "max_tokens"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": 2.5}, "temperature"),
    ({"temperature": "hot"}, "temperature"),
    ({"top_p": 0}, "top_p"),
    ({"top_p": 1.01}, "top_p"),
    ({"n": 0}, "n must"),
    ({"n": 9}, "n must"),
    ({"seed": "x"}, "seed"),
    ({"seed": 1.5}, "seed"),
    ({"stop": 3}, "stop"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ({"stop": ["a", 1]}, "stop"),
    ({"stop": ""}, "stop"),
    ({"stream": "yes"}, "stream"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"model": 3}, "model"),
    ({"ignore_eos": "yes"}, "ignore_eos"),
    ({"prompt": "x" * 20_001}, "prompt"),
    ({"prompt": "joke " * 400}, "context"),  # tokens beyond the tiny model's 256 positions
]


@pytest.mark.parametrize(("body", "mentions"), BAD_BODIES)
async def test_bad_bodies_are_400(client, body, mentions):
    if isinstance(body, str):
        resp = await client.post(
            "/v1/completions", data=body, headers={"Content-Type": "application/json"}
        )
    else:
        resp = await client.post("/v1/completions", json=body)
    assert resp.status == 400
    err = (await resp.json())["error"]
    assert err["type"] == "invalid_request_error"
    assert mentions in err["message"]


async def test_model_field_selects_a_resident_version(client, tiny_a):
    for name in ("v7", str(tiny_a), tiny_a.name):  # the version, or its aliases
        status, body = await complete(client, model=name, max_tokens=2)
        assert status == 200 and body["model"] == "v7"
    status, body = await complete(client, model="gpt-4", max_tokens=2)
    assert status == 404
    assert body["error"]["code"] == "model_not_found" and body["error"]["param"] == "model"
    assert "v7" in body["error"]["message"]


async def test_models_endpoint(client, tiny_a):
    resp = await client.get("/v1/models")
    assert resp.status == 200
    assert await resp.json() == {
        "object": "list",
        "data": [
            {
                "id": "v7",
                "object": "model",
                "created": (await resp.json())["data"][0]["created"],
                "owned_by": "jokebot",
                "root": str(tiny_a),
                "parent": None,
            }
        ],
    }


async def test_health_ready_and_live(client, tiny_a):
    resp = await client.get("/health")
    body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ok" and body["ready"] is True
    assert body["version"] == "v7" and body["model_ref"] == str(tiny_a)
    assert body["queue_depth"] == 0 and body["max_queue"] == 64 and body["device"] == "cpu"
    assert (await client.get("/health/live")).status == 200


@pytest.mark.parametrize(
    ("headers", "why"),
    [({}, "bearer"), ({"Authorization": "Bearer wrong"}, "bearer"), ({"Authorization": TOKEN}, "")],
)
async def test_admin_needs_the_token(client, tiny_a, headers, why):
    resp = await client.post("/admin/load", json={"path": str(tiny_a)}, headers=headers)
    assert resp.status == 401
    assert why in (await resp.json())["error"]["message"]
    assert (await (await client.get("/health")).json())["version"] == "v7"


async def test_metrics_names_and_request_counts(client):
    def count(text: str, endpoint: str, code: str) -> float:
        pat = rf'jokebot_runner_requests_total\{{code="{code}",endpoint="{endpoint}"\}} (\S+)'
        m = re.search(pat, text)
        return float(m.group(1)) if m else 0.0

    before = await (await client.get("/metrics")).text()
    for _ in range(3):
        await complete(client, max_tokens=2)
    await complete(client, max_tokens=0)
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    text = await resp.text()
    assert count(text, "/v1/completions", "200") == count(before, "/v1/completions", "200") + 3
    assert count(text, "/v1/completions", "400") == count(before, "/v1/completions", "400") + 1
    assert 'jokebot_runner_errors_total{code="400",endpoint="/v1/completions"}' in text
    for name in (
        "jokebot_runner_queue_depth",
        "jokebot_runner_running_sequences",
        "jokebot_runner_batch_size_bucket",
        "jokebot_runner_generated_tokens_total",
        "jokebot_runner_time_to_first_token_seconds_bucket",
        "jokebot_runner_request_latency_seconds_bucket",
        'jokebot_runner_serving_version{model_ref="',
        "jokebot_runner_swaps_total",
        "jokebot_runner_swap_duration_seconds_bucket",
    ):
        assert name in text, name
    tokens = float(re.search(r"^jokebot_runner_generated_tokens_total (\S+)", text, re.M).group(1))
    assert tokens > 0


async def test_unknown_route_is_json_404(client):
    resp = await client.get("/v2/nothing")
    assert resp.status == 404 and "error" in await resp.json()


async def test_client_disconnect_cancels_its_work(client):
    engine = client.server.app[STATE].engine
    body = {"prompt": "x", "max_tokens": 500, "temperature": 0, "ignore_eos": True}
    task = asyncio.create_task(client.post("/v1/completions", json=body))
    for _ in range(200):
        await asyncio.sleep(0.01)
        if engine.running_rows:
            break
    assert engine.running_rows == 1
    steps = engine.steps
    task.cancel()  # the client goes away mid-generation
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(300):
        await asyncio.sleep(0.01)
        if not engine.running_rows:
            break
    assert engine.running_rows == 0
    assert engine.current.batch.rows == []
    assert engine.steps - steps < 100  # it stopped long before its 255 tokens


# ---------------------------------------------------------------- other configurations
async def test_not_ready_is_503(tmp_path):
    async with runner_client(tmp_path / "no-model-here", ready=False) as c:
        for _ in range(100):
            body = await (await c.get("/health")).json()
            if body["status"] == "failed":
                break
            await asyncio.sleep(0.02)
        resp = await c.get("/health")
        body = await resp.json()
        assert resp.status == 503 and body["ready"] is False and body["version"] is None
        assert "no such model folder" in body["error"]
        assert (await c.get("/health/live")).status == 200
        resp = await c.post("/v1/completions", json={"prompt": "hi"})
        assert resp.status == 503 and "error" in await resp.json()
        assert (await (await c.get("/v1/models")).json())["data"] == []


async def test_admin_disabled_without_token(tiny_a):
    async with runner_client(tiny_a) as c:
        resp = await c.post(
            "/admin/load", json={"path": str(tiny_a)}, headers={"Authorization": "Bearer x"}
        )
        assert resp.status == 401
        assert "disabled" in (await resp.json())["error"]["message"]


async def test_back_pressure_429_with_retry_after(tiny_a):
    async with runner_client(tiny_a, max_queue=2, max_batch=2) as c:
        body = {"prompt": "x", "max_tokens": 200, "temperature": 0, "ignore_eos": True}
        results = await asyncio.gather(*(c.post("/v1/completions", json=body) for _ in range(10)))
        codes = sorted(r.status for r in results)
        assert codes.count(200) >= 2 and codes.count(429) >= 1, codes
        assert set(codes) == {200, 429}
        for r in results:
            if r.status == 429:
                assert int(r.headers["Retry-After"]) >= 1
                assert "busy" in (await r.json())["error"]["message"]
            else:
                assert (await r.json())["usage"]["completion_tokens"] == 200
