"""Start the model runner as a child process of `jokebot run`, and stop it with the bot."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger(__name__)


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (good enough for a loopback child process)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


class RunnerProcess:
    """A `jokebot runner` child on loopback, with a fresh admin token unless one is configured."""

    def __init__(
        self,
        *,
        model_ref: str,
        version: str,
        host: str = "127.0.0.1",
        port: int = 0,
        admin_token: str | None = None,
        extra_args: list[str] | None = None,
    ) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        self.model_ref, self.version = model_ref, version
        self._extra_args = extra_args or []
        self.process: asyncio.subprocess.Process | None = None
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        env = {**os.environ, "RUNNER_TOKEN": self.admin_token}
        args = ["--host", self.host, "--port", str(self.port)]
        args += ["--model", self.model_ref, "--version", self.version, *self._extra_args]
        log.info("starting the model runner on %s with %s", self.url, self.version)
        # The child inherits stdout/stderr, so its log lines reach the host's terminal or journal.
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot.cli", "runner", *args, env=env
        )

    async def keep_alive(self, current_model: Callable[[], Awaitable[tuple[str, str]]]) -> None:
        """Restart the runner when it dies (a crash, the OOM killer), with the serving version.

        Runs until cancelled. Meanwhile the bot's runner client retries with backoff and
        /joke tells users the joke machine is unavailable.
        """
        delay = 1.0
        while True:
            assert self.process is not None
            started = time.monotonic()
            code = await self.process.wait()
            if self._stopping:
                return
            if time.monotonic() - started > 120:
                delay = 1.0  # it ran fine for a while: this is a fresh failure
            log.error("the model runner exited with code %s; restarting in %.0f s", code, delay)
            await asyncio.sleep(delay)
            self.model_ref, self.version = await current_model()
            await self.start()
            delay = min(delay * 2, 60.0)

    async def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        self._stopping = True
        if not self.is_alive():
            return
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            log.warning("the model runner did not stop in %.0fs; killing it", timeout)
            self.process.kill()
            await self.process.wait()
