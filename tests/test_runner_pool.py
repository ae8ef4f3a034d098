"""Several runner replicas behind one bot (`bot.runners.pool`), against real runner processes.

Routing by requests in flight, failover when a replica is SIGKILLed under load, the
all-or-nothing swap, the reconciler that brings a returning replica to the serving version,
and the `vllm` swap path (runtime LoRA adapters) against our runner's adapter endpoints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import urllib.request
from pathlib import Path

import pytest
from pydantic import SecretStr

from bot.app import StartupError, backend
from bot.runners.client import RunnerError
from bot.runners.kinds import settings_problem
from bot.runners.pool import RunnerPool
from tests.helpers import free_port, jokebot_app
from tests.runner_helpers import runner_client, runner_process

TOKEN = "pool-secret"
SAMPLING = {"max_tokens": 24, "temperature": 0.9, "top_p": 0.95}


def version_of(url: str) -> str | None:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return json.loads(response.read())["version"]
    except OSError:
        return None


@pytest.fixture(scope="module")
def replicas(tiny_model):
    """Two `jokebot runner` processes serving the tiny GPT-2 as v0: {url: (port, process)}."""
    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        found = {}
        for port in ports:
            process = stack.enter_context(runner_process(tiny_model, port=port, token=TOKEN))
            found[f"http://127.0.0.1:{port}"] = (port, process)
        yield found


@contextlib.asynccontextmanager
async def pool_of(urls, tiny_model, **options):
    pool = RunnerPool(list(urls), admin_token=TOKEN, **options)
    try:
        await pool.wait_until_ready(30)
        pool.serve(str(tiny_model), 0)
        yield pool
    finally:
        await pool.close()


async def test_requests_go_to_the_replica_with_fewest_in_flight(replicas, tiny_model):
    async with pool_of(replicas, tiny_model) as pool:
        health = await pool.health()
        assert [r["healthy"] for r in health["replicas"]] == [True, True]
        assert {r["version"] for r in health["replicas"]} == {"v0"}
        served: dict[str, int] = {}
        for replica in pool.replicas:
            real = replica.client.complete

            async def counted(*args, _real=real, _url=replica.url, **kwargs):
                served[_url] = served.get(_url, 0) + 1
                return await _real(*args, **kwargs)

            replica.client.complete = counted
        answers = await asyncio.gather(*(pool.complete(f"joke {i}", **SAMPLING) for i in range(8)))
        assert all(a.model == "v0" for a in answers)
        assert sorted(served.values()) == [4, 4], served  # simultaneous: spread evenly
        # one slow request in flight on a replica: the next ones go to the other
        first = pool.replicas[0]
        first.in_flight += 5
        try:
            served.clear()
            for i in range(3):
                await pool.complete(f"more {i}", **SAMPLING)
            assert served == {pool.replicas[1].url: 3}
        finally:
            first.in_flight -= 5


async def test_the_bot_tells_16_simultaneous_jokes_over_two_replicas(
    replicas, standin, shared_settings
):
    settings = shared_settings.model_copy(
        update={"runner_url": ",".join(replicas), "runner_token": SecretStr(TOKEN)}
    )
    async with jokebot_app(standin, settings) as app:
        assert [r.url for r in app.services.runner.replicas] == list(replicas)
        asked = await asyncio.gather(*(standin.invoke("joke") for _ in range(16)))
        replies = await asyncio.gather(*(i.wait_for_reply(timeout=90) for i in asked))
        assert all(r.content and "unavailable" not in r.content for r in replies)
        status = await (await standin.invoke("status")).wait_for_reply()
        for url in replicas:
            assert f"Replica {url}: up, serving v0" in status.content


async def test_a_refused_swap_leaves_every_replica_on_the_old_version(
    replicas, tiny_model, tiny_model_b
):
    async with pool_of(replicas, tiny_model) as pool:
        pool.replicas[1].client._admin_token = "wrong"  # the second replica refuses (401)
        with pytest.raises(RunnerError) as refused:
            await pool.load(str(tiny_model_b), 1)
        assert pool.replicas[1].url in str(refused.value)
        assert "went back" in str(refused.value)
        assert [version_of(url) for url in replicas] == ["v0", "v0"]
        assert pool.target.name == "v0"
        await pool.complete("still serving", **SAMPLING)


async def test_sigkill_under_load_fails_nothing_and_the_returning_replica_catches_up(
    replicas, tiny_model, tiny_model_b
):
    (killed_url, (port, process)), (live_url, _) = list(replicas.items())
    async with pool_of(replicas, tiny_model, reconcile_every=1.0, health_every=0.2) as pool:
        pool.start()
        results: list = []

        async def client(i: int) -> None:
            for j in range(4):
                results.append(await pool.complete(f"joke {i}.{j}", **SAMPLING))

        load = [asyncio.create_task(client(i)) for i in range(12)]
        await asyncio.sleep(0.5)
        process.send_signal(signal.SIGKILL)
        await asyncio.gather(*load)  # raises if any request failed
        assert len(results) == 48
        killed = next(r for r in pool.replicas if r.url == killed_url)
        assert not killed.healthy

        # a new version while it is down goes to the live replica only
        info = await pool.load(str(tiny_model_b), 1)
        assert info["version"] == "v1" and version_of(live_url) == "v1"
        assert (await pool.complete("after", **SAMPLING)).model == "v1"
        lines = "\n".join(f"{r['url']} {r['healthy']} {r['version']}" for r in pool.describe())
        assert f"{killed_url} False" in lines and f"{live_url} True v1" in lines

        # it comes back on its old version; the reconciler swaps the serving one in
        with runner_process(tiny_model, port=port, token=TOKEN) as restarted:
            replicas[killed_url] = (port, restarted)
            for _ in range(300):
                if version_of(killed_url) == "v1" and killed.healthy:
                    break
                await asyncio.sleep(0.1)
            assert version_of(killed_url) == "v1"
            answers = await asyncio.gather(*(pool.complete(f"x{i}", **SAMPLING) for i in range(4)))
            assert {a.model for a in answers} == {"v1"}


# ------------------------------------------------------------------------ vllm path
def make_adapter(base: Path, folder: Path, seed: int) -> Path:
    """A trained-looking LoRA adapter for the tiny GPT-2 (random, non-zero B matrices)."""
    import torch
    from transformers import AutoModelForCausalLM

    from model.lora import add_lora, save_adapter

    torch.manual_seed(seed)
    model = add_lora(AutoModelForCausalLM.from_pretrained(str(base)), r=4, alpha=8)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    save_adapter(model, folder)
    return folder


async def test_vllm_kind_swaps_runtime_adapters(tiny_model, tiny_model_b, tmp_path):
    v1 = make_adapter(tiny_model, tmp_path / "v1", seed=1)
    v2 = make_adapter(tiny_model, tmp_path / "v2", seed=2)
    async with runner_client(tiny_model, admin_token=TOKEN, version="v0") as c:
        url = str(c.server.make_url("")).rstrip("/")
        pool = RunnerPool(url, admin_token=TOKEN, kind="vllm")
        try:
            await pool.wait_until_ready(10)
            pool.serve(str(tiny_model), 0)
            greedy = {"max_tokens": 8, "temperature": 0.0, "top_p": 1.0}
            base = await pool.complete("Why", **greedy)
            assert base.model == "v0"

            await pool.load(str(v1), 1)
            models = await pool.replicas[0].client.models()
            assert [(m["id"], m["parent"]) for m in models] == [("v0", None), ("v1", "v0")]
            first = await pool.complete("Why", **greedy)
            assert first.model == "v1" and first.text != base.text

            await pool.load(str(v2), 2)  # v1 is unloaded once v2 serves
            models = await pool.replicas[0].client.models()
            assert [m["id"] for m in models] == ["v0", "v2"]
            assert (await pool.complete("Why", **greedy)).model == "v2"
            assert (await pool.health())["replicas"][0]["version"] == "v2"

            with pytest.raises(RunnerError, match="TRAIN_LORA"):  # a full fine-tune
                await pool.load(str(tiny_model_b), 3)

            await pool.load(str(tiny_model), 0)  # rollback to the base: adapters go
            assert [m["id"] for m in await pool.replicas[0].client.models()] == ["v0"]
            again = await pool.complete("Why", **greedy)
            assert again.model == "v0" and again.text == base.text
        finally:
            await pool.close()


def test_vllm_needs_lora_versions_trained_from_the_base():
    assert "TRAIN_LORA=true" in settings_problem("vllm", train_lora=False, retrain_from="base")
    assert "RETRAIN_FROM=base" in settings_problem("vllm", train_lora=True, retrain_from="serving")
    assert settings_problem("vllm", train_lora=True, retrain_from="base") is None
    assert settings_problem("sglang", train_lora=False, retrain_from="serving") is None


async def test_full_fine_tunes_on_vllm_are_refused_at_start_up(shared_settings):
    settings = shared_settings.model_copy(update={"runner_kind": "vllm", "train_lora": False})
    with pytest.raises(StartupError, match="TRAIN_LORA=true"):
        async with backend(settings):
            pass


async def test_sglang_kind_updates_weights_from_disk(tiny_model, tiny_model_b, tmp_path):
    async with runner_client(tiny_model, admin_token=TOKEN, version="v0") as c:
        url = str(c.server.make_url("")).rstrip("/")
        pool = RunnerPool(url, admin_token=TOKEN, kind="sglang")
        try:
            pool.serve(str(tiny_model), 0)
            health = await pool.wait_until_ready(10)
            assert health["replicas"][0]["version"] == "v0"  # known by its weights' path
            await pool.load(str(tiny_model_b), 1)
            info = await pool.replicas[0].client.model_info()
            assert info["model_path"] == str(tiny_model_b)
            assert (await pool.health())["replicas"][0]["version"] == "v1"
            await pool.complete("Why", **SAMPLING)
            with pytest.raises(RunnerError, match="no such model folder"):
                await pool.load(str(tmp_path / "missing"), 2)
            assert (await pool.replicas[0].client.model_info())["model_path"] == str(tiny_model_b)
        finally:
            await pool.close()
