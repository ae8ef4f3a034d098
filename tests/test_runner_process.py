"""The runner as a real process (`jokebot runner`), and the embedded default model."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from model.embedded import ensure_embedded_model
from model.runner import STATE, RunnerConfig, serve
from tests.greedy_reference import agrees_in_text, decided_greedy
from tests.runner_helpers import runner_client

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http(url: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_real_process_serves_then_stops_cleanly_on_sigterm(tiny_a):
    port = free_port()
    env = {**os.environ, "RUNNER_TOKEN": "proc-token", "PYTHONUNBUFFERED": "1",
           "MODEL_BASE": str(tiny_a), "DEVICE": "auto", "RUNNER_MAX_QUEUE": "8",
           "RUNNER_MAX_BATCH": "4"}  # fmt: skip
    cmd = [sys.executable, "-m", "bot.cli", "runner", "--model", str(tiny_a), "--version", "p1",
           "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines: list[str] = []
    ready = threading.Event()

    def pump() -> None:
        for line in proc.stdout:
            lines.append(line)
            if "runner ready" in line:
                ready.set()

    threading.Thread(target=pump, daemon=True).start()
    try:
        assert ready.wait(90), "".join(lines)
        url = re.search(r"runner ready at (http://\S+)", "".join(lines)).group(1)
        assert url == f"http://127.0.0.1:{port}"
        status, health = http(f"{url}/health")
        assert status == 200 and health["version"] == "p1" and health["max_queue"] == 8
        status, body = http(f"{url}/v1/completions", {"prompt": "Why", "max_tokens": 4})
        assert status == 200 and body["model"] == "p1"

        in_flight: list = []
        long = {"prompt": "x", "max_tokens": 200, "temperature": 0, "ignore_eos": True}
        worker = threading.Thread(
            target=lambda: in_flight.append(http(f"{url}/v1/completions", long))
        )
        worker.start()
        time.sleep(0.2)
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0, "".join(lines)
        assert time.monotonic() - started < 8
        worker.join(10)
        assert in_flight and in_flight[0][0] == 200  # the request in flight was finished
        assert in_flight[0][1]["usage"]["completion_tokens"] == 200
        log = "".join(lines)
        assert "shutting down" in log and "stopped" in log and "Traceback" not in log
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def test_serve_returns_1_when_the_model_cannot_load(tmp_path, caplog):
    """What `jokebot runner` exits with when its model cannot load (in-process: fast)."""
    config = RunnerConfig(model_ref=str(tmp_path / "missing"), port=0)
    assert await asyncio.wait_for(serve(config), 30) == 1
    assert "no such model folder" in caplog.text


@pytest.fixture(scope="session")
def embedded_dir(pytestconfig, tmp_path_factory) -> Path:
    """The converted embedded model, cached across runs in pytest's cache when there is one."""
    cache = pytestconfig.cache
    data_dir = (
        Path(cache.mkdir("jokebot-runner-embedded"))
        if cache is not None
        else tmp_path_factory.mktemp("embedded")
    )
    return ensure_embedded_model(data_dir)


@pytest.mark.slow
async def test_embedded_default_model_generates(embedded_dir):
    async with runner_client(embedded_dir, version="smol") as c:
        health = await (await c.get("/health")).json()
        assert health["version"] == "smol" and health["model_ref"] == str(embedded_dir)
        prompts = ["Why did the chicken cross the road?", "What do you call a fish", ""]

        async def complete(prompt: str) -> dict:
            body = {"prompt": prompt, "max_tokens": 12, "temperature": 0}
            resp = await c.post("/v1/completions", json=body)
            assert resp.status == 200
            return await resp.json()

        alone = [await complete(p) for p in prompts]
        for body in alone:
            choice = body["choices"][0]
            assert choice["text"].strip()
            assert choice["finish_reason"] in ("stop", "length")
            assert 0 < body["usage"]["completion_tokens"] <= 12
        together = await asyncio.gather(*(complete(p) for p in prompts))
        served = c.server.app[STATE].engine.current
        for prompt, body in zip(prompts, together, strict=True):  # batched as far as decided
            ref = decided_greedy(served.loaded.model, served.tokenizer, prompt, 12)
            assert agrees_in_text(body["choices"][0]["text"], ref, served.tokenizer), prompt
