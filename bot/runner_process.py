"""Start the model runner as a child process of `jokebot run`, and stop it with the bot."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import sys

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
        self._args = [
            sys.executable,
            "-m",
            "bot.cli",
            "runner",
            "--host",
            host,
            "--port",
            str(self.port),
            "--model",
            model_ref,
            "--version",
            version,
            *(extra_args or []),
        ]
        self.process: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_alive(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def start(self) -> None:
        env = {**os.environ, "RUNNER_TOKEN": self.admin_token}
        log.info("starting the model runner on %s", self.url)
        # The child inherits stdout/stderr, so its log lines reach the host's terminal or journal.
        self.process = await asyncio.create_subprocess_exec(*self._args, env=env)

    async def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
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
