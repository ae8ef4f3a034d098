"""Hot swap, all of it: load a candidate beside the serving model, prove it serves, swap it in.

`HotSwap` is the one place a runner changes what it serves: `/admin/load` (a new version
becomes current), and the vLLM-style adapter calls (`/v1/load_lora_adapter` merges a LoRA
adapter into a copy of the runner's base model and keeps it resident under its `lora_name`;
`/v1/unload_lora_adapter` lets it drain). Loading runs in one loader thread, off the event
loop; any failure raises `CandidateError` with a reason a host can act on, and the model that
is serving is never touched until its successor has passed the smoke test. The engine's
registry (`model.registry`: `install`, `add_pinned`, `unpin`) only records the outcome; a
replaced model finishes the requests it had accepted and is then released by the engine's
worker.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from model.batch import RunningBatch
from model.engine import Engine
from model.loading import LoadedModel, load_model_and_tokenizer, read_layout
from model.metrics import RunnerMetrics
from model.precision import ServingPrecision
from model.registry import ServedModel
from model.textformat import prompt_ids

log = logging.getLogger(__name__)

SMOKE_PROMPTS = ("", "Why did the chicken cross the road?")
SMOKE_TOKENS = 4


class CandidateError(Exception):
    """The candidate model cannot serve; the message says why."""


class LoadInProgress(Exception):
    """A load is already under way; one at a time."""


def default_version(ref: str) -> str:
    """A serving name for a model: its folder name (or the last part of a hub id)."""
    name = Path(str(ref).rstrip("/")).name
    return name or str(ref)


def looks_local(ref: str) -> bool:
    """True for a folder path; False for a hub id such as `gpt2` or `org/name`."""
    if Path(ref).expanduser().exists():
        return True
    return ref.startswith(("/", "./", "../", "~", ".\\")) or ref.count("/") > 1 or "\\" in ref


def _model_folder(ref: str) -> str:
    if not looks_local(ref):
        return ref
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        raise CandidateError(f"no such model folder: {ref}")
    if not (folder / "config.json").is_file():
        raise CandidateError(f"{ref} is not a model folder (no config.json)")
    return str(folder)


def load_candidate(
    ref: str,
    version: str | None = None,
    device: str = "auto",
    compile: bool = False,
    precision: ServingPrecision | None = None,
) -> ServedModel:
    """Load `ref`, check tokenizer and weights, smoke-test generation; return it ready to serve
    (in `precision`'s dtype: the runner's, chosen at its first load)."""
    ref = str(ref)
    version = version or default_version(ref)
    ref = _model_folder(ref)
    start = time.monotonic()
    try:
        loaded = load_model_and_tokenizer(ref, device=device, precision=precision)
    except Exception as exc:
        raise CandidateError(f"could not load {ref}: {type(exc).__name__}: {exc}") from exc
    return _prove(loaded, version, ref, compile, start, device, precision)


def load_adapter_candidate(
    base_ref: str,
    adapter: str,
    name: str,
    device: str = "auto",
    *,
    parent: str | None = None,
    precision: ServingPrecision | None = None,
) -> ServedModel:
    """A copy of the base model with the LoRA adapter at `adapter` merged in, smoke-tested."""
    folder = Path(adapter).expanduser()
    if not (folder / "adapter_config.json").is_file():
        raise CandidateError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    start = time.monotonic()
    try:
        from peft import PeftModel

        loaded = load_model_and_tokenizer(
            _model_folder(base_ref), device=device, precision=precision
        )
        merged = PeftModel.from_pretrained(loaded.model, str(folder)).merge_and_unload()
        merged.eval()
    except Exception as exc:
        raise CandidateError(
            f"could not apply the adapter {adapter} to {base_ref}: {type(exc).__name__}: {exc}"
        ) from exc
    loaded = LoadedModel(
        model=merged, tokenizer=loaded.tokenizer, device=loaded.device, ref=str(folder),
        prompt_layout=read_layout(folder.parent),  # the version's manifest, beside its adapter
    )  # fmt: skip
    served = _prove(loaded, name, str(folder), False, start, device, precision)
    served.parent = parent
    return served


def _prove(
    loaded: LoadedModel,
    version: str,
    ref: str,
    compile: bool,
    start: float,
    device: str,
    precision: ServingPrecision | None = None,
) -> ServedModel:
    check_tokenizer(loaded.tokenizer, loaded.model.get_input_embeddings().num_embeddings, ref)
    served = ServedModel(loaded, version, compile=compile)
    try:
        smoke_test(served)
    except CandidateError:
        raise
    except Exception as exc:
        if not compile:
            raise CandidateError(
                f"smoke test of {ref} failed: {type(exc).__name__}: {exc}"
            ) from exc
        log.warning("torch.compile failed for %s (%s); serving it uncompiled", ref, exc)
        return load_candidate(ref, version, device, compile=False, precision=precision)
    log.info(
        "loaded %s as %s on %s in %s in %.1f s (smoke test passed)",
        ref, version, loaded.device, loaded.model.dtype, time.monotonic() - start,
    )  # fmt: skip
    return served


def check_tokenizer(tokenizer, vocab: int, ref: str) -> None:
    """The tokenizer must fit the model and really encode and decode text (that it has an eos
    is checked where every tokenizer is loaded, `model.loading.load_tokenizer`)."""
    if len(tokenizer) > vocab or tokenizer.eos_token_id >= vocab:
        raise CandidateError(
            f"tokenizer mismatch: the tokenizer of {ref} has {len(tokenizer)} tokens "
            f"(eos {tokenizer.eos_token_id}) but the model's embedding has {vocab}"
        )
    ids = tokenizer(SMOKE_PROMPTS[-1], add_special_tokens=False).input_ids
    if not ids or max(ids) >= vocab or "chicken" not in tokenizer.decode(ids):
        raise CandidateError(
            f"the tokenizer of {ref} does not encode text (missing or broken tokenizer files; "
            f"it has {len(tokenizer)} tokens)"
        )


class _SmokeRow:
    def __init__(self, ids: list[int]) -> None:
        self.prompt_ids = ids
        self.last_token = ids[-1]
        self.length = len(ids)


def smoke_test(served: ServedModel) -> None:
    """Generate a few greedy tokens for two prompts of different lengths through a batch."""
    tokenizer = served.tokenizer
    model = served.loaded.model
    batch = RunningBatch(model, tokenizer.pad_token_id, forward=served.batch.forward)
    rows = [_SmokeRow(prompt_ids(tokenizer, p)) for p in SMOKE_PROMPTS]
    with torch.inference_mode():
        logits = batch.prefill(rows)
        for step in range(SMOKE_TOKENS):
            if not torch.isfinite(logits).all():
                raise CandidateError("smoke test failed: the model produced non-finite logits")
            if logits.shape[-1] < len(tokenizer):
                raise CandidateError(
                    f"tokenizer mismatch: {len(tokenizer)} tokens, model logits {logits.shape[-1]}"
                )
            for row, token in zip(rows, logits.argmax(dim=-1).tolist(), strict=True):
                row.last_token, row.length = token, row.length + 1
            if step < SMOKE_TOKENS - 1:
                logits = batch.decode()
    tokenizer.decode([r.last_token for r in rows])
    batch.reset()


class HotSwap:
    """Changes what one runner serves: one load at a time, in a loader thread, then the swap."""

    def __init__(
        self,
        engine: Engine,
        metrics: RunnerMetrics,
        device: str,
        compile: bool,
        precision: ServingPrecision | None = None,
    ):
        self.engine = engine
        self.precision = precision or ServingPrecision("auto")  # chosen once, kept by swaps
        self.metrics = metrics
        self.device = device
        self.compile = compile
        self.loader = ThreadPoolExecutor(1, thread_name_prefix="jokebot-loader")
        self.task: asyncio.Task | None = None
        self.error: str | None = None  # why the initial model could not load
        self.base: tuple[str, str] | None = None  # (ref, version) of the first model served:
        # adapters apply to it, as vLLM applies them to the model it was started with
        self.stopping = False

    @property
    def loading(self) -> bool:
        return self.task is not None and not self.task.done()

    def _start(self, work) -> asyncio.Task:
        if self.loading:
            raise LoadInProgress()
        task = asyncio.create_task(work())
        task.add_done_callback(lambda t: t.cancelled() or t.exception())  # retrieved, no warning
        self.task = task
        return task

    def start_load(self, ref: str, version: str | None, *, initial: bool = False) -> asyncio.Task:
        """Start loading `ref` beside the serving model; LoadInProgress if one is under way."""
        return self._start(lambda: self._load(ref, version, initial))

    async def _in_loader(self, *args):
        return await asyncio.get_running_loop().run_in_executor(self.loader, *args)

    async def _load(self, ref: str, version: str | None, initial: bool) -> dict:
        start = time.monotonic()
        version = version or default_version(ref)
        log.info("loading %s as %s", ref, version)
        try:
            served = await self._in_loader(
                load_candidate, ref, version, self.device, self.compile, self.precision
            )
        except CandidateError as exc:
            if initial:
                self.error = str(exc)
            else:
                self.metrics.swaps.labels("failed").inc()
            log.error("could not load %s: %s (the serving model is unchanged)", ref, exc)
            raise
        if self.stopping:
            raise CandidateError("the runner is shutting down")
        previous = self.engine.install(served)
        if initial:
            self.base = (served.ref, served.version)
        seconds = time.monotonic() - start
        self.error = None
        self.metrics.set_serving(served.version, served.ref)
        if not initial:
            self.metrics.swaps.labels("ok").inc()
            self.metrics.swap_duration.observe(seconds)
        info = {"version": served.version, "model_ref": served.ref, "swap_seconds": seconds}
        if previous is not None:
            log.info(
                "swapped %s -> %s in %.2f s; %s drains its in-flight requests, then is released",
                previous.version, served.version, seconds, previous.version,
            )  # fmt: skip
            info["previous_version"] = previous.version
        return info

    def start_adapter_load(self, name: str, adapter: str) -> asyncio.Task:
        """Start merging the adapter into a copy of the base model, to serve as `name`."""
        return self._start(lambda: self._load_adapter(name, adapter))

    async def _load_adapter(self, name: str, adapter: str) -> dict:
        if self.base is None:
            raise CandidateError("no base model is serving yet")
        base_ref, base_version = self.base
        start = time.monotonic()
        log.info("loading the adapter %s as %s on %s", adapter, name, base_version)
        try:
            served = await self._in_loader(
                lambda: load_adapter_candidate(
                    base_ref,
                    adapter,
                    name,
                    self.device,
                    parent=base_version,
                    precision=self.precision,
                )
            )
        except CandidateError as exc:
            self.metrics.swaps.labels("failed").inc()
            log.error("could not load the adapter %s: %s", adapter, exc)
            raise
        if self.stopping:
            raise CandidateError("the runner is shutting down")
        self.engine.add_pinned(served)
        seconds = time.monotonic() - start
        self.metrics.swaps.labels("ok").inc()
        self.metrics.swap_duration.observe(seconds)
        log.info("adapter %s serves as %s (%.2f s)", adapter, name, seconds)
        return {"version": name, "model_ref": adapter, "swap_seconds": seconds}

    def unload_adapter(self, name: str) -> bool:
        """Let the adapter `name` finish its requests and be released; False if not loaded."""
        return self.engine.unpin(name) is not None

    def shutdown(self) -> None:
        self.stopping = True
        if self.task is not None and not self.task.done():
            self.task.cancel()
        self.loader.shutdown(wait=False, cancel_futures=True)
