"""TRL's KTOTrainer with the liked jokes' own likelihood in the loss (an SFT term).

KTO pushes the likelihood of 👎 jokes down and of 👍 jokes up. When most shown jokes are voted
down (a community that likes a rarer kind of joke) the push down dominates, and a small model
finds the cheapest way to make every voted joke less likely: text that is like no joke at all,
repeated phrases and runs of capitals that never end (`benchmarks/bench_taste.py`: one-joke
rates of 67-79% in such communities). Adding the liked jokes' negative log-likelihood, their
endings included, as RPO does for DPO (TRL's `DPOConfig.rpo_alpha`; KTOConfig has no such
term), keeps the probability mass on well-formed jokes the community liked. With it the phase
can take larger steps and follow the votes further (README, "How much it moves").

The term is read from the forward pass KTO makes anyway (a forward hook keeps its per-token
log-probabilities): no extra pass, and DistributedDataParallel sees one forward per step.
"""

from __future__ import annotations

import torch
from trl import KTOTrainer


class AnchoredKTOTrainer(KTOTrainer):
    """A KTOTrainer whose loss adds `sft_weight` x the mean NLL per token of the batch's 👍
    completions."""

    def __init__(self, *args, sft_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.sft_weight = sft_weight
        self._policy_log_probs: torch.Tensor | None = None
        self._hook = None
        if sft_weight > 0:
            policy = self.accelerator.unwrap_model(self.model)
            self._hook = policy.register_forward_hook(self._keep_policy_log_probs)

    def train(self, *args, **kwargs):
        """Train; the model leaves without the hook (the gate and the saved model never see it)."""
        try:
            return super().train(*args, **kwargs)
        finally:
            if self._hook is not None:
                self._hook.remove()
                self._hook = None

    def _keep_policy_log_probs(self, module, args, output) -> None:
        log_probs = getattr(output, "log_probs", None)
        if log_probs is not None and log_probs.requires_grad:
            self._policy_log_probs = log_probs  # KTO's own forward, the one with gradients

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        self._policy_log_probs = None
        loss = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        log_probs, self._policy_log_probs = self._policy_log_probs, None
        if self.sft_weight <= 0 or return_outputs or log_probs is None:
            return loss
        mask = inputs["completion_mask"][:, 1:].to(log_probs.device)  # the tokens predicted
        liked = torch.as_tensor(inputs["label"], dtype=mask.dtype, device=mask.device)
        weight = mask * liked.unsqueeze(1)
        log_probs = log_probs[:, -mask.shape[1] :]
        tokens = weight.sum().clamp(min=1)  # a batch without 👍 adds 0 and stays in the graph
        return loss + self.sft_weight * -(log_probs * weight).sum() / tokens
