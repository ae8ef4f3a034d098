"""Load any Hugging Face causal LM the same way, whether a hub id (`gpt2`) or a local folder."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from model.devices import resolve_device, serving_dtype
from model.precision import ServingPrecision
from model.textformat import prompt_layout


@dataclass
class LoadedModel:
    """A model ready to generate, with the tokenizer it was trained with."""

    model: PreTrainedModel
    tokenizer: object
    device: torch.device
    ref: str
    prompt_layout: str = "few-shot"  # model.textformat: what its manifest asks for


def load_tokenizer(ref: str):
    """A tokenizer with an eos (the one place that is checked: every model is loaded here) and a
    pad token (reusing eos) so that batches can be padded."""
    tokenizer = AutoTokenizer.from_pretrained(str(ref))
    if tokenizer.eos_token_id is None:
        raise ValueError(f"the tokenizer of {ref} has no eos token; jokebot needs one to end jokes")
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model_and_tokenizer(
    ref: str | Path,
    device: str | torch.device = "auto",
    dtype: torch.dtype | None = None,
    precision: ServingPrecision | None = None,
) -> LoadedModel:
    """Load weights and tokenizer via `from_pretrained`; hub ids and folders share this path.

    The dtype: `dtype` if given, else `precision`'s (a runner's or the gate's choice, made at
    its first load, by timing on `auto`), else `serving_dtype` (float32 on a CPU)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    tokenizer = load_tokenizer(str(ref))
    if dtype is None:
        dtype = precision.load_dtype(dev) if precision is not None else serving_dtype(dev)
    model = AutoModelForCausalLM.from_pretrained(str(ref), dtype=dtype, attn_implementation="sdpa")
    model.to(dev)
    model.eval()
    if precision is not None:
        model = precision.settle(model, dev, tokenizer.pad_token_id)
    return LoadedModel(
        model=model, tokenizer=tokenizer, device=dev, ref=str(ref), prompt_layout=read_layout(ref)
    )


def read_layout(ref: str | Path) -> str:
    """The prompt layout of a version folder (its manifest), `few-shot` for a base model."""
    try:
        manifest = json.loads((Path(ref) / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        manifest = None
    return prompt_layout(manifest if isinstance(manifest, dict) else None)
