"""Load a candidate model beside the serving one and prove that it can serve before the swap.

Runs in a loader thread, off the event loop. Any failure raises `CandidateError` with a reason
a host can act on; the model that is serving is never touched here.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import torch

from model.batch import RunningBatch
from model.engine import ServedModel
from model.loading import load_model_and_tokenizer
from model.textformat import prompt_ids

log = logging.getLogger(__name__)

SMOKE_PROMPTS = ("", "Why did the chicken cross the road?")
SMOKE_TOKENS = 4


class CandidateError(Exception):
    """The candidate model cannot serve; the message says why."""


def default_version(ref: str) -> str:
    """A serving name for a model: its folder name (or the last part of a hub id)."""
    name = Path(str(ref).rstrip("/")).name
    return name or str(ref)


def looks_local(ref: str) -> bool:
    """True for a folder path; False for a hub id such as `gpt2` or `org/name`."""
    if Path(ref).expanduser().exists():
        return True
    return ref.startswith(("/", "./", "../", "~", ".\\")) or ref.count("/") > 1 or "\\" in ref


def load_candidate(
    ref: str, version: str | None = None, device: str = "auto", compile: bool = False
) -> ServedModel:
    """Load `ref`, check tokenizer and weights, smoke-test generation; return it ready to serve."""
    ref = str(ref)
    version = version or default_version(ref)
    if looks_local(ref):
        folder = Path(ref).expanduser()
        if not folder.is_dir():
            raise CandidateError(f"no such model folder: {ref}")
        if not (folder / "config.json").is_file():
            raise CandidateError(f"{ref} is not a model folder (no config.json)")
        ref = str(folder)
    start = time.monotonic()
    try:
        loaded = load_model_and_tokenizer(ref, device=device)
    except Exception as exc:
        raise CandidateError(f"could not load {ref}: {type(exc).__name__}: {exc}") from exc
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
        return load_candidate(ref, version, device, compile=False)
    log.info(
        "loaded %s as %s on %s in %.1f s (smoke test passed)",
        ref, version, loaded.device, time.monotonic() - start,
    )  # fmt: skip
    return served


def check_tokenizer(tokenizer, vocab: int, ref: str) -> None:
    """The tokenizer must fit the model, have an eos, and really encode and decode text."""
    if tokenizer.eos_token_id is None:
        raise CandidateError(f"the tokenizer of {ref} has no eos token; jokes could never end")
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
    if tokenizer.eos_token_id is None:
        raise CandidateError("the tokenizer has no eos token; jokes could never end")
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
