"""A running batch over one model's forward with a shared KV cache, joinable at token granularity.

Rows (one per choice of a request) live side by side in a `DynamicCache`, left-padded to a
common length; a 2-D attention mask hides the padding and explicit position ids give every row
its own positions, so padding never changes what a row computes. New rows are prefilled in
their own forward pass and then concatenated into the running cache; finished rows are dropped
from it, and leading columns that are padding for every remaining row are trimmed away.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Protocol

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer


class BatchRow(Protocol):
    prompt_ids: list[int]
    last_token: int  # the most recently chosen token, not yet fed to the model
    length: int  # prompt tokens + chosen tokens (the last one included)


class UnsupportedModelError(RuntimeError):
    """The model's cache layout cannot be batched by concatenation (e.g. sliding-window layers)."""


def _left_pad(x: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - x.shape[dim]
    if missing <= 0:
        return x
    shape = list(x.shape)
    shape[dim] = missing
    return torch.cat([x.new_zeros(shape), x], dim=dim)


class GrowingLayer(DynamicLayer):
    """A full-attention cache layer that appends into spare capacity.

    `DynamicLayer` concatenates the whole cache at every step (measured: ~12% of a batch-16
    decode step of SmolLM2 on 2 cores); this one doubles its buffer when full and hands out
    views. Code that replaces `keys`/`values` (merging or dropping rows) is noticed and the
    buffer is rebuilt from the new tensors at the next update.
    """

    def __init__(self) -> None:
        super().__init__()
        self._key_buf: torch.Tensor | None = None
        self._value_buf: torch.Tensor | None = None
        self._view: torch.Tensor | None = None

    def update(self, key_states, value_states, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        used = self.keys.shape[-2] if self.keys is not None and self.keys.numel() else 0
        new = key_states.shape[-2]
        buf = self._key_buf
        if (
            self.keys is not self._view
            or buf is None
            or buf.shape[0] != key_states.shape[0]
            or used + new > buf.shape[-2]
        ):
            capacity = max(32, 2 * (used + new))
            b, h, _, d = key_states.shape
            key_buf = key_states.new_empty((b, h, capacity, d))
            value_buf = value_states.new_empty((b, h, capacity, value_states.shape[-1]))
            if used:
                key_buf[:, :, :used] = self.keys
                value_buf[:, :, :used] = self.values
            self._key_buf, self._value_buf = key_buf, value_buf
        self._key_buf[:, :, used : used + new] = key_states
        self._value_buf[:, :, used : used + new] = value_states
        self.keys = self._key_buf[:, :, : used + new]
        self.values = self._value_buf[:, :, : used + new]
        self._view = self.keys
        return self.keys, self.values


class RunningBatch:
    """The rows that are generating on one model, and their shared KV cache."""

    def __init__(self, model, pad_token_id: int, forward=None) -> None:
        self.model = model
        self.forward = forward if forward is not None else model
        self.pad_token_id = pad_token_id
        self.device = model.device
        self.rows: list = []
        self.cache: DynamicCache | None = None
        self.mask: torch.Tensor | None = None  # [rows, cache length + 0], 1 = real token
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"  # renamed in 5.x
        self._logits_to_keep = "logits_to_keep" in params

    def __len__(self) -> int:
        return len(self.rows)

    def _run(self, cache: DynamicCache, **kwargs) -> torch.Tensor:
        kwargs[self._cache_kw] = cache
        if self._logits_to_keep:
            kwargs["logits_to_keep"] = 1
        return self.forward(**kwargs, use_cache=True).logits[:, -1, :]

    def prefill(self, rows: Sequence[BatchRow]) -> torch.Tensor:
        """Run the prompts of `rows`, add them to the batch; return their next-token logits."""
        width = max(len(r.prompt_ids) for r in rows)
        ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            n = len(r.prompt_ids)
            ids[i, width - n :] = torch.tensor(r.prompt_ids, dtype=torch.long)
            mask[i, width - n :] = 1
        positions = (mask.cumsum(dim=-1) - 1).clamp(min=0)
        cache = DynamicCache(config=self.model.config)
        for layer in cache.layers:
            if type(layer) is not DynamicLayer:
                raise UnsupportedModelError(
                    f"cache layer {type(layer).__name__} cannot be batched (only full attention)"
                )
        cache.layers = [GrowingLayer() for _ in cache.layers]
        logits = self._run(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=positions.to(self.device),
            cache=cache,
        )
        self._merge(list(rows), cache, mask.to(self.device))
        return logits

    def _merge(self, rows: list, cache: DynamicCache, mask: torch.Tensor) -> None:
        if self.cache is None:
            self.rows, self.cache, self.mask = rows, cache, mask
            return
        width = max(self.mask.shape[1], mask.shape[1])
        for old, new in zip(self.cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, width, 2), _left_pad(new.keys, width, 2)])
            old.values = torch.cat(
                [_left_pad(old.values, width, 2), _left_pad(new.values, width, 2)]
            )
        self.mask = torch.cat([_left_pad(self.mask, width, 1), _left_pad(mask, width, 1)])
        self.rows = self.rows + rows

    def decode(self) -> torch.Tensor:
        """Feed every row its last chosen token; return next-token logits [rows, vocab]."""
        ids = torch.tensor([[r.last_token] for r in self.rows], dtype=torch.long)
        positions = torch.tensor([[r.length - 1] for r in self.rows], dtype=torch.long)
        mask = torch.cat([self.mask, self.mask.new_ones((len(self.rows), 1))], dim=1)
        logits = self._run(
            input_ids=ids.to(self.device),
            attention_mask=mask,
            position_ids=positions.to(self.device),
            cache=self.cache,
        )
        self.mask = mask
        return logits

    def keep(self, keep_rows: Sequence) -> None:
        """Drop every row not in `keep_rows` (which must be in batch order)."""
        if len(keep_rows) == len(self.rows):
            return
        if not keep_rows:
            self.reset()
            return
        wanted = {id(r) for r in keep_rows}
        index = [i for i, r in enumerate(self.rows) if id(r) in wanted]
        sel = torch.tensor(index, dtype=torch.long, device=self.device)
        self.rows = [self.rows[i] for i in index]
        self.mask = self.mask.index_select(0, sel)
        first = int(self.mask.any(dim=0).nonzero()[0])  # leading columns that are all padding
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.keys = layer.keys.index_select(0, sel)[:, :, first:, :]
            layer.values = layer.values.index_select(0, sel)[:, :, first:, :]

    def reset(self) -> None:
        self.rows, self.cache, self.mask = [], None, None
