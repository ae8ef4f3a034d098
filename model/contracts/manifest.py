"""A model version's folder as both sides see it: its name, its manifest and its adapter folder.

The trainer writes `manifest.json` once, as a `VersionManifest`, when the version is complete;
what only the bot knows (the version's number, its parent, the line's base model) travels to
the trainer in the job (`VersionOrigin`), so nothing is written twice. The bot reads the same
model back (`VersionManifest.read`) to keep it with the version in its database.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
ADAPTER_FOLDER = "adapter"  # inside a version's folder: the unmerged LoRA adapter, for vLLM


def version_name(number: int) -> str:
    """What runners and people call version `number`: `v3`."""
    return f"v{number}"


class VersionOrigin(BaseModel):
    """What only the bot knows about the version a training job builds (its job field `origin`).

    A job written by hand may leave it out: the manifest then names no number and no parent,
    and the base model is the job's `base`."""

    version: int | None = None
    parent_version: int | None = None
    base_model: str = ""  # the model the line of versions started from (MODEL_BASE)


class VersionManifest(BaseModel):
    """`manifest.json`: where a version came from, how it was trained and how it measured."""

    format: int = 1
    created: str  # ISO 8601, UTC
    version: int | None = None
    parent_version: int | None = None
    base_model: str  # the model the line of versions started from
    trained_from: str  # the weights this run fine-tuned (the base, or the serving version)
    compared_with: str  # the model the gate measured it against
    corpus_hash: str  # `model.contracts.corpus.corpus_hash` of the jokes it learnt from
    corpus_size: int
    snapshot_sha256: str  # the snapshot file's bytes
    token_layout: str  # how an example was laid out in tokens (`model.textformat`)
    prompt_layout: str  # how the version wants to be prompted (`plain`, `few-shot`)
    start_token: str | None = None
    eos_token: str | None = None
    split: dict[str, Any]
    world_size: int = 1
    hyperparameters: dict[str, Any]
    training: dict[str, Any]
    metrics: dict[str, dict[str, Any]]  # `candidate` and `serving`: the gate's figures
    samples: dict[str, str]
    duration_seconds: float
    software: dict[str, str]

    def write(self, folder: str | Path) -> None:
        """Write `manifest.json` into `folder` (the version's temporary folder: it is published
        with the rest, never on its own)."""
        path = Path(folder) / MANIFEST_FILE
        text = self.model_dump_json(indent=2, fallback=str)  # e.g. an enum of transformers
        path.write_text(text + "\n", encoding="utf-8")

    @classmethod
    def read(cls, folder: str | Path) -> VersionManifest | None:
        """The manifest of the version in `folder`; None (and a warning) when it has none or
        it is not a manifest."""
        path = Path(folder) / MANIFEST_FILE
        try:
            return cls.model_validate_json(path.read_text(encoding="utf-8"))
        except (OSError, ValidationError) as error:
            log.warning("%s is not a version manifest: %s", path, error)
            return None
