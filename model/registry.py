"""The resident models of an engine: the current one, pinned adapters, and replaced ones draining.

Several models can be resident at once during a hot swap: the current one takes new requests,
while a replaced one finishes the requests it had already accepted and is then released by the
engine's worker. `pinned` models (adapters loaded through the vLLM-style endpoints) stay
resident beside the current one until unpinned. `model.hot_swap` decides when to change the
registry; `model.engine.Engine` is a registry with a queue and a worker thread.
"""

from __future__ import annotations

import threading

import torch

from model.batch import RunningBatch
from model.loading import LoadedModel
from model.request import NotReady, Row, UnknownModel
from model.textformat import stop_token_ids


class ServedModel:
    """A loaded model with its serving name, and the batch of rows generating on it."""

    def __init__(
        self,
        loaded: LoadedModel,
        version: str,
        compile: bool = False,
        *,
        pinned: bool = False,
        parent: str | None = None,
    ) -> None:
        self.loaded = loaded
        self.version = version
        self.ref = loaded.ref
        self.pinned = pinned
        self.parent = parent  # the model an adapter was derived from
        self.tokenizer = loaded.tokenizer
        self.stop_token_ids = stop_token_ids(loaded.tokenizer)  # where a row's joke ends
        self.prompt_layout = loaded.prompt_layout
        self.device = loaded.device
        config = loaded.model.config
        self.max_positions = (
            int(
                getattr(config, "max_position_embeddings", None)
                or getattr(config, "n_positions", 0)
            )
            or 2048
        )
        forward = loaded.model
        if compile:
            forward = torch.compile(loaded.model, dynamic=True)
        self.batch = RunningBatch(loaded.model, loaded.tokenizer.pad_token_id, forward=forward)
        self.pending: list[Row] = []  # admitted rows waiting for their prefill

    def answers_to(self, name: str) -> bool:
        """Its version name, or an alias: the model reference as loaded, or its folder name."""
        ref = str(self.ref).rstrip("/")
        return name in (self.version, ref, ref.rsplit("/", 1)[-1])

    @property
    def rows_in_use(self) -> int:
        batch = self.batch  # read once: the worker may release this model meanwhile
        return (len(batch) if batch is not None else 0) + len(self.pending)

    def release(self) -> None:
        """Drop every reference to the weights so that their memory can be reclaimed."""
        self.batch.reset()
        self.batch = None
        self.pending = []
        self.loaded = None
        self.tokenizer = None


class ModelRegistry:
    """Which models are resident and which one is current; every change wakes the worker."""

    def __init__(self) -> None:
        self._cv = threading.Condition()  # guards the registry (and the engine's queue)
        self._models: list[ServedModel] = []  # resident: the current one plus any others
        self.current: ServedModel | None = None

    @property
    def resident_versions(self) -> list[str]:
        return [m.version for m in self._models]

    def resident(self) -> list[ServedModel]:
        """The models requests may name: the current one first, then adapters, then draining."""
        models = list(self._models)
        current = self.current
        rank = {id(m): (m is not current, not m.pinned) for m in models}
        return sorted(models, key=lambda m: rank[id(m)])

    def find(self, name: str | None) -> ServedModel:
        """The model for a request's `model` field (None: the current one); UnknownModel if none.

        Exact version names win over aliases, and the current model over the others.
        """
        models = self.resident()
        if name is None:
            if self.current is None:
                raise NotReady("no model is serving")
            return self.current
        for served in models:
            if served.version == name:
                return served
        for served in models:
            if served.answers_to(name):
                return served
        raise UnknownModel(name, [m.version for m in models])

    def install(self, served: ServedModel) -> ServedModel | None:
        """Make `served` take all new requests; the previous model drains, then is released."""
        with self._cv:
            previous = self.current
            self.current = served
            if served not in self._models:
                self._models.append(served)
            self._cv.notify_all()
        return previous

    def add_pinned(self, served: ServedModel) -> ServedModel | None:
        """Keep `served` resident beside the current model; one of the same name is unpinned."""
        with self._cv:
            same = [m for m in self._models if m.pinned and m.version == served.version]
            replaced = same[0] if same else None
            if replaced is not None:
                replaced.pinned = False  # drains, then is released
                replaced.version = f"{replaced.version} (replaced)"
            served.pinned = True
            self._models.append(served)
            self._cv.notify_all()
        return replaced

    def unpin(self, name: str) -> ServedModel | None:
        """Let the pinned model `name` drain and be released; None if there is none."""
        with self._cv:
            served = next((m for m in self._models if m.pinned and m.version == name), None)
            if served is not None:
                served.pinned = False
                self._cv.notify_all()
        return served

    def _retired(self) -> list[ServedModel]:
        """Resident models that take no new requests: replaced, or unpinned (under the lock)."""
        return [m for m in self._models if m is not self.current and not m.pinned]

    def _take_drained(self, bound: set[int]) -> list[ServedModel]:
        """Remove and return the retired models with no rows left and no request waiting for
        them (`bound`: ids of the models waiting requests are bound to)."""
        with self._cv:
            drained = [m for m in self._retired() if not m.rows_in_use and id(m) not in bound]
            for m in drained:
                self._models.remove(m)
        return drained

    def _take_all(self) -> list[ServedModel]:
        """Remove every model (the engine is stopping)."""
        with self._cv:
            models, self._models = self._models, []
            self.current = None
        return models
