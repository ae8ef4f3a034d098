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


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket listening on (host, port), port 0 for any free one; OSError if it is taken.

    The parent binds it and hands it to the runner child it starts, so the port is known at
    once and two processes can never both believe they own one port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family)


class RunnerProcess:
    """A `jokebot runner` child on loopback, with a fresh admin token unless one is configured.

    The port is bound here, in the constructor: OSError (EADDRINUSE) when `port` is taken. The
    child gets the listening socket and the parent closes its copy, so while no child runs,
    clients are refused at once rather than left waiting; a restart binds the port again."""

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
        self._listener: socket.socket | None = listening_socket(host, port)
        self.port = self._listener.getsockname()[1]
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
        listener = self._listener or listening_socket(self.host, self.port)  # a restart binds
        self._listener = None
        with listener:  # the parent's copy closes once the child has its own
            fd = listener.fileno()
            args = ["--host", self.host, "--port", str(self.port), "--listen-fd", str(fd)]
            args += ["--model", self.model_ref, "--version", self.version, *self._extra_args]
            log.info("starting the model runner on %s with %s", self.url, self.version)
            # The child inherits stdout/stderr: its log lines reach the host's terminal or journal.
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot.cli", "runner", *args, env=env, pass_fds=(fd,)
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
            try:
                await self.start()
            except OSError as error:  # the port was taken meanwhile: the next round tries again
                log.error("the model runner cannot listen on %s again: %s", self.url, error)
            delay = min(delay * 2, 60.0)

    async def stop(self, timeout: float = 8.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
        self._stopping = True
        if self._listener is not None:  # never started
            self._listener.close()
        if self.is_alive():
            await self._terminate(timeout)

    async def _terminate(self, timeout: float) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            log.warning("the model runner did not stop in %.0fs; killing it", timeout)
            self.process.kill()
            await self.process.wait()
