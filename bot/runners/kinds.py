"""How a version is swapped into each kind of serving engine (`RUNNER_KIND`).

- `jokebot`: our runner's `POST /admin/load` (load beside, smoke-test, swap; `/health` says
  which version serves).
- `vllm`: runtime LoRA adapters, `POST /v1/load_lora_adapter {lora_name, lora_path}` (server
  started with `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True --enable-lora`), selected per request
  by `model`; the previous adapter is unloaded after the swap. Trained versions keep their
  unmerged adapter in `<version>/adapter` (TRAIN_LORA=true); the base version is the model
  vLLM was started with (the `/v1/models` entry without a `parent`).
- `sglang`: `POST /update_weights_from_disk {model_path}` replaces the weights in place;
  `GET /get_model_info` says which `model_path` serves.

Our runner also answers the vLLM adapter calls and SGLang's weight update, so both paths are
tested against a real process (vLLM and SGLang themselves were not run here).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bot.runners.client import RunnerClient, RunnerError
from model.contracts.manifest import ADAPTER_FOLDER, version_name

BASE = version_name(0)  # the version that is the base model (vLLM serves it without adapter)


@dataclass(frozen=True)
class Target:
    """A version to serve: its folder (or hub id), its name (`v3`) and its number (3; None for
    what a replica was found serving when the pool had not been told which version it is)."""

    path: str
    name: str
    number: int | None = None

    @classmethod
    def of(cls, path: str, number: int) -> Target:
        return cls(str(path), version_name(number), number)


def settings_problem(kind: str, *, train_lora: bool, retrain_from: str) -> str | None:
    """Why these settings cannot work with this engine, for a start-up error; None if fine."""
    if kind == "vllm" and not train_lora:
        return (
            "RUNNER_KIND=vllm serves trained versions as LoRA adapters, and a full fine-tune "
            "cannot be loaded into a running vLLM: set TRAIN_LORA=true (and RETRAIN_FROM=base)"
        )
    if kind == "vllm" and retrain_from != "base":
        return (
            "RUNNER_KIND=vllm applies every adapter to the model vLLM was started with, so each "
            "version must be trained from it: set RETRAIN_FROM=base"
        )
    return None


class EngineKind:
    """jokebot: our runner's `/admin/load`; the version is in `/health`."""

    name = "jokebot"

    async def swap(self, client: RunnerClient, target: Target, previous: Target | None) -> None:
        await client.load(target.path, target.name)

    async def serving(self, client: RunnerClient, health: dict[str, Any]) -> str | None:
        """The version name this replica serves now (None: unknown)."""
        return health.get("version")

    def request_model(self, target: Target | None) -> str | None:
        """The `model` field of a completion for `target` (None: what the engine serves)."""
        return None

    def remember(self, target: Target) -> None:
        """The pool serves `target` now (SGLang maps weight paths back to version names)."""


class VllmKind(EngineKind):
    name = "vllm"

    def __init__(self) -> None:
        self.base_name: str | None = None  # the model vLLM was started with, by its served name

    @staticmethod
    def adapter(target: Target) -> Path | None:
        folder = Path(target.path) / ADAPTER_FOLDER
        return folder if (folder / "adapter_config.json").is_file() else None

    async def _models(self, client: RunnerClient) -> list[dict[str, Any]]:
        models = await client.models()
        base = next((m for m in models if not m.get("parent")), None)
        if base is not None:
            self.base_name = base["id"]
        return models

    async def swap(self, client: RunnerClient, target: Target, previous: Target | None) -> None:
        adapter = self.adapter(target)
        models = await self._models(client)
        loaded = {m["id"] for m in models if m.get("parent")}
        if adapter is None and target.name not in (self.base_name, BASE):
            raise RunnerError(
                f"{target.name} has no LoRA adapter folder ({target.path}/{ADAPTER_FOLDER}): "
                "vLLM can only swap in versions trained with TRAIN_LORA=true"
            )
        if adapter is not None and target.name not in loaded:
            await client.load_lora_adapter(target.name, str(adapter))
        for stale in loaded - {target.name}:  # the old adapter, once the new one serves
            await client.unload_lora_adapter(stale)

    async def serving(self, client: RunnerClient, health: dict[str, Any]) -> str | None:
        models = await self._models(client)
        adapters = [m["id"] for m in models if m.get("parent")]
        if len(adapters) == 1:
            return adapters[0]
        return BASE if not adapters else None  # several adapters: mid-swap, say unknown

    def request_model(self, target: Target | None) -> str | None:
        if target is None or self.adapter(target) is None:
            return self.base_name
        return target.name


class SglangKind(EngineKind):
    name = "sglang"

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}  # model_path -> version name, as swapped in

    async def swap(self, client: RunnerClient, target: Target, previous: Target | None) -> None:
        await client.update_weights_from_disk(target.path)
        self.paths[str(Path(target.path))] = target.name

    async def serving(self, client: RunnerClient, health: dict[str, Any]) -> str | None:
        path = (await client.model_info()).get("model_path")
        return self.paths.get(str(Path(path))) if path else None

    def remember(self, target: Target) -> None:
        self.paths[str(Path(target.path))] = target.name


def engine_kind(name: str) -> EngineKind:
    return {"jokebot": EngineKind, "vllm": VllmKind, "sglang": SglangKind}[name]()
