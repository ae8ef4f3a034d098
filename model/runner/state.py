"""What one runner app is configured with and owns: engine, metrics and the hot swap."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

from aiohttp import web

from model.engine import Engine
from model.hot_swap import CandidateError, HotSwap
from model.metrics import RunnerMetrics
from model.precision import ServingPrecision


@dataclass
class RunnerConfig:
    model_ref: str
    version: str = "v0"
    host: str = "127.0.0.1"
    port: int = 8765
    device: str = "auto"
    dtype: str = "auto"  # auto | float32 | bfloat16 | float16 (model.precision)
    admin_token: str | None = None
    max_queue: int = 64
    max_batch: int = 16
    compile: bool = False
    default_max_tokens: int = 64
    listen_fd: int | None = None  # serve on this listening socket (from `jokebot run`)


class RunnerState:
    """Everything one runner app owns: engine, metrics and the hot swap."""

    def __init__(self, config: RunnerConfig) -> None:
        self.config = config
        self.metrics = RunnerMetrics()
        self.engine = Engine(
            max_batch=config.max_batch, max_queue=config.max_queue, metrics=self.metrics
        )
        self.metrics.bind_engine(self.engine)
        precision = ServingPrecision(config.dtype, on_choice=self.metrics.set_precision)
        self.swap = HotSwap(self.engine, self.metrics, config.device, config.compile, precision)
        self.initial_load: asyncio.Task | None = None
        self.stopping = False
        self.started = time.time()

    @property
    def load_error(self) -> str | None:
        return self.swap.error

    @property
    def serving(self) -> bool:
        """A model serves and the runner is not shutting down."""
        return self.engine.ready and not self.stopping

    async def load_initial(self) -> None:
        with contextlib.suppress(CandidateError):
            await self.swap.start_load(self.config.model_ref, self.config.version, initial=True)


STATE = web.AppKey("runner_state", RunnerState)
