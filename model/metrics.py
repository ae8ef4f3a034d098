"""Prometheus metrics of one runner app, in its own registry (tests build several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from model.engine import EngineMetrics
from model.precision import PrecisionChoice
from model.registry import ServedModel

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60)
BATCH_BUCKETS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


class RunnerMetrics(EngineMetrics):
    """Every metric the runner exports; also the engine's reporting hooks."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry or CollectorRegistry()
        self.requests = Counter(
            "jokebot_runner_requests", "HTTP requests by endpoint and status code",
            ["endpoint", "code"], registry=r,
        )  # fmt: skip
        self.errors = Counter(
            "jokebot_runner_errors", "HTTP responses with a status code >= 400",
            ["endpoint", "code"], registry=r,
        )  # fmt: skip
        self.queue_depth = Gauge(
            "jokebot_runner_queue_depth", "Requests waiting for a place in the batch", registry=r
        )
        self.running = Gauge(
            "jokebot_runner_running_sequences", "Sequences (choices) in the running batch",
            registry=r,
        )  # fmt: skip
        self.batch_size = Histogram(
            "jokebot_runner_batch_size", "Sequences per decode step (forward pass)",
            buckets=BATCH_BUCKETS, registry=r,
        )  # fmt: skip
        self.generated_tokens = Counter(
            "jokebot_runner_generated_tokens", "Tokens chosen by the model (eos included)",
            registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "jokebot_runner_time_to_first_token_seconds",
            "From accepting a completion request to its first generated token",
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.latency = Histogram(
            "jokebot_runner_request_latency_seconds",
            "Latency of successful completion requests", buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip
        self.serving = Gauge(
            "jokebot_runner_serving_version", "1 for the model version now serving",
            ["version", "model_ref"], registry=r,
        )  # fmt: skip
        self.swaps = Counter(
            "jokebot_runner_swaps", "Model loads through /admin/load by result", ["result"],
            registry=r,
        )  # fmt: skip
        self.swap_duration = Histogram(
            "jokebot_runner_swap_duration_seconds", "Load + smoke test + swap of a new model",
            buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80), registry=r,
        )  # fmt: skip
        self.released = Counter(
            "jokebot_runner_models_released", "Replaced models drained and released", registry=r
        )
        for result in ("ok", "failed"):
            self.swaps.labels(result)
        self.dtype = Info(
            "jokebot_runner_dtype", "The dtype the runner serves in, and how it was chosen",
            registry=r,
        )  # fmt: skip
        self.dtype_probe = Gauge(
            "jokebot_runner_dtype_probe_seconds",
            "DTYPE=auto: best time of the batched probe (prefill + decode steps) per dtype",
            ["dtype"], registry=r,
        )  # fmt: skip

    def bind_engine(self, engine) -> None:
        self.queue_depth.set_function(lambda: engine.queue_depth)
        self.running.set_function(lambda: engine.running_rows)

    def set_serving(self, version: str, model_ref: str) -> None:
        self.serving.clear()
        self.serving.labels(version, model_ref).set(1)

    def set_precision(self, choice: PrecisionChoice) -> None:
        """The serving dtype, chosen once (`model.precision.ServingPrecision`)."""
        self.dtype.info(
            {"dtype": choice.dtype, "requested": choice.requested, "device": choice.device,
             "reason": choice.reason}
        )  # fmt: skip
        for name, seconds in choice.seconds.items():
            self.dtype_probe.labels(name).set(seconds)

    def observe_response(self, endpoint: str, code: int) -> None:
        self.requests.labels(endpoint, str(code)).inc()
        if code >= 400:
            self.errors.labels(endpoint, str(code)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    # engine hooks (called from the worker thread; prometheus-client is thread-safe)
    def batch_step(self, rows: int) -> None:
        self.batch_size.observe(rows)

    def tokens_generated(self, count: int) -> None:
        self.generated_tokens.inc(count)

    def first_token(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def model_released(self, served: ServedModel) -> None:
        self.released.inc()
