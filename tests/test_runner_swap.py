"""Hot swap through POST /admin/load: no failed request under load, refusals keep the old model."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import shutil
import time
import weakref
from pathlib import Path

import model.hot_swap as hot_swap_module
from model.runner import STATE
from tests.runner_helpers import broken_copies, runner_client

TOKEN = "swap-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def test_swap_under_load_drops_nothing(tiny_a, tiny_b):
    async with runner_client(tiny_a, admin_token=TOKEN, version="v1", max_batch=8) as c:
        state = c.server.app[STATE]
        old_weights = weakref.ref(state.engine.current.loaded.model)
        probe = {"prompt": "Why", "max_tokens": 6, "temperature": 0, "ignore_eos": True}
        before = (await (await c.post("/v1/completions", json=probe)).json())["choices"]
        swapped = asyncio.Event()
        outcomes: list[tuple[int, str | None]] = []

        async def client_loop(i: int) -> None:
            body = {"prompt": f"joke {i}", "max_tokens": 8 + 4 * (i % 4), "seed": i}
            extra = 0
            for _ in range(200):  # bounded: until a few requests after the swap
                resp = await c.post("/v1/completions", json=body)
                data = await resp.json()
                outcomes.append((resp.status, data.get("model")))
                if swapped.is_set():
                    extra += 1
                    if extra >= 3:
                        return

        clients = [asyncio.create_task(client_loop(i)) for i in range(12)]
        await asyncio.sleep(0.3)  # load is flowing
        resp = await c.post(
            "/admin/load", json={"path": str(tiny_b), "version": "v2"}, headers=AUTH
        )
        info = await resp.json()
        swapped.set()
        assert resp.status == 200, info
        assert info["version"] == "v2" and info["model_ref"] == str(tiny_b)
        assert info["previous_version"] == "v1" and info["swap_seconds"] > 0
        await asyncio.gather(*clients)

        assert outcomes and all(status == 200 for status, _ in outcomes), outcomes
        versions = [v for _, v in outcomes]
        assert "v1" in versions and "v2" in versions
        assert versions[-1] == "v2"
        after = (await (await c.post("/v1/completions", json=probe)).json())["choices"]
        assert after != before  # a different model answers now
        health = await (await c.get("/health")).json()
        assert health["version"] == "v2" and health["model_ref"] == str(tiny_b)

        deadline = time.monotonic() + 10
        while old_weights() is not None:  # drained, then released
            assert time.monotonic() < deadline, "the old model was never released"
            await asyncio.sleep(0.05)
            gc.collect()
        assert state.engine.resident_versions == ["v2"]
        text = await (await c.get("/metrics")).text()
        assert re.search(r'jokebot_runner_swaps_total\{result="ok"\} 1\.0', text)
        serving = f'jokebot_runner_serving_version{{model_ref="{tiny_b}",version="v2"}} 1.0'
        assert serving in text
        assert 'version="v1"' not in text
        assert "jokebot_runner_models_released_total 1.0" in text

        # rollback: loading the previous version's folder again
        resp = await c.post("/admin/load", json={"path": str(tiny_a)}, headers=AUTH)
        assert resp.status == 200
        assert (await resp.json())["version"] == tiny_a.name
        again = (await (await c.post("/v1/completions", json=probe)).json())["choices"]
        assert again == before


def without_eos(good: Path, folder: Path) -> Path:
    """A copy whose tokenizer has no eos token: its jokes could never end."""
    shutil.copytree(good, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config.update(eos_token=None, bos_token=None, unk_token=None)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder


async def test_refused_candidates_keep_the_old_model(tiny_a, tmp_path):
    bad = {**broken_copies(tiny_a, tmp_path), "no-eos": without_eos(tiny_a, tmp_path / "no-eos")}
    async with runner_client(tiny_a, admin_token=TOKEN, version="v1") as c:
        probe = {"prompt": "Why", "max_tokens": 4, "temperature": 0}
        expected = (await (await c.post("/v1/completions", json=probe)).json())["choices"]
        reasons = {}
        for kind, path in bad.items():
            resp = await c.post("/admin/load", json={"path": str(path)}, headers=AUTH)
            body = await resp.json()
            assert resp.status == 422, (kind, body)
            reasons[kind] = body["error"]["message"]
            health = await (await c.get("/health")).json()
            assert health["ready"] and health["version"] == "v1"
            resp = await c.post("/v1/completions", json=probe)
            assert resp.status == 200 and (await resp.json())["choices"] == expected
        assert "no such model folder" in reasons["missing"]
        assert "could not load" in reasons["corrupt"]
        assert "tokenizer" in reasons["no-tokenizer"]
        assert "has no eos token" in reasons["no-eos"]
        resp = await c.post("/admin/load", json={"nope": 1}, headers=AUTH)
        assert resp.status == 400
        text = await (await c.get("/metrics")).text()
        assert 'jokebot_runner_swaps_total{result="failed"} 4.0' in text
        assert c.server.app[STATE].engine.resident_versions == ["v1"]


async def test_one_load_at_a_time(tiny_a, tiny_b, monkeypatch):
    real = hot_swap_module.load_candidate

    def slow_load(*args, **kwargs):
        time.sleep(0.5)
        return real(*args, **kwargs)

    async with runner_client(tiny_a, admin_token=TOKEN) as c:
        monkeypatch.setattr(hot_swap_module, "load_candidate", slow_load)
        first = asyncio.create_task(
            c.post("/admin/load", json={"path": str(tiny_b), "version": "b"}, headers=AUTH)
        )
        await asyncio.sleep(0.1)
        second = await c.post("/admin/load", json={"path": str(tiny_a)}, headers=AUTH)
        assert second.status == 409
        health = await (await c.get("/health")).json()
        assert health["ready"] and health["loading"] is True
        resp = await first
        assert resp.status == 200 and (await resp.json())["version"] == "b"
