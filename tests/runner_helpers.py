"""Shared helpers for the runner tests (no tests here). The tiny models come from conftest."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path

from aiohttp.test_utils import TestClient, TestServer

from model.runner import RunnerConfig, build_app
from tests.helpers import wait_healthy, wait_until


def broken_copies(good: Path, root: Path) -> dict[str, Path]:
    """Candidates that must be refused: corrupt weights, no tokenizer, missing folder."""
    corrupt = root / "corrupt"
    shutil.copytree(good, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 64)
    no_tok = root / "no-tokenizer"
    no_tok.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        if (good / name).exists():
            shutil.copyfile(good / name, no_tok / name)
    return {"missing": root / "does-not-exist", "corrupt": corrupt, "no-tokenizer": no_tok}


async def wait_ready(client: TestClient, timeout: float = 30.0) -> dict:
    """The runner's /health body once it is ready (AssertionError at once if loading failed)."""
    health: dict = {}

    async def ready() -> bool:
        response = await client.get("/health")
        health.update(await response.json())
        if health.get("status") == "failed":
            raise AssertionError(f"runner never became ready: {health}")
        return response.status == 200

    await wait_until(ready, timeout, what="ready: the runner", every=0.05)
    return health


@contextlib.asynccontextmanager
async def runner_client(model_ref: Path | str, *, ready: bool = True, **overrides):
    """An in-process runner app on a loopback port, and a client for it."""
    config = RunnerConfig(model_ref=str(model_ref), port=0, **overrides)
    app = build_app(config)
    async with TestClient(TestServer(app)) as client:
        if ready:
            await wait_ready(client)
        yield client


@contextlib.contextmanager
def runner_process(model: Path | str, *, version: str = "v0", port: int, token: str, **env):
    """A real `jokebot runner` process on a loopback port (yields the Popen once healthy)."""
    import os
    import subprocess
    import sys

    environ = {**os.environ, "RUNNER_TOKEN": token, "MODEL_BASE": str(model), **env}
    cmd = [sys.executable, "-m", "bot.cli", "runner", "--port", str(port),
           "--model", str(model), "--version", version]  # fmt: skip
    process = subprocess.Popen(cmd, env=environ)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, process)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
