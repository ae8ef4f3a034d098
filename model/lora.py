"""LoRA through peft: adapters on every linear layer while training, merged before saving."""

from __future__ import annotations

from model.contracts.manifest import ADAPTER_FOLDER


def add_lora(model, *, r: int, alpha: int, dropout: float = 0.05):
    """Wrap `model` so that only low-rank adapters on its linear layers train."""
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules="all-linear",  # attention and MLP projections, not the output layer
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def merge_lora(model):
    """An ordinary transformers model with the adapters folded into its weights."""
    return model.merge_and_unload() if hasattr(model, "merge_and_unload") else model


def save_adapter(model, version_folder) -> None:
    """Keep the unmerged adapter beside the merged weights (call before `merge_lora`).

    An engine that serves adapters at run time (vLLM's `/v1/load_lora_adapter`) loads this
    folder onto its base model; the merged weights serve everywhere else.
    """
    from pathlib import Path

    if hasattr(model, "peft_config"):
        model.save_pretrained(str(Path(version_folder) / ADAPTER_FOLDER))
