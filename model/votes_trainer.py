"""TRL's KTOTrainer with two SFT terms in the loss: the liked jokes' and the corpus's.

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

The liked jokes are few (a community that likes a rare kind), and a larger step makes a small
model repeat them word for word. The second term, InstructGPT's "pretraining mix" (PPO-ptx),
adds the NLL of a random batch of the approved corpus (the corpus phase's training jokes):
the model keeps telling jokes of the whole corpus's variety while the votes move it. It costs
one more forward per step, made on the unwrapped model so that DistributedDataParallel still
sees one forward (its gradient hooks sit on the parameters, so the term's gradients are
reduced with the rest).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import torch
from trl import KTOTrainer

from model.data import JokeCollator


class AnchoredKTOTrainer(KTOTrainer):
    """A KTOTrainer whose loss adds `sft_weight` x the mean NLL per token of the batch's 👍
    completions and `corpus_weight` x that of as many random jokes of `corpus` (token ids
    laid out as the corpus phase trains them)."""

    def __init__(
        self,
        *args,
        sft_weight: float = 0.0,
        corpus: Sequence[Sequence[int]] = (),
        corpus_weight: float = 0.0,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self.sft_weight = sft_weight
        self.corpus = [list(ids) for ids in corpus] if corpus_weight > 0 else []
        self.corpus_weight = corpus_weight if self.corpus else 0.0
        self._corpus_draws = random.Random(self.args.seed + self.accelerator.process_index)
        self._collate = JokeCollator(self.processing_class.pad_token_id)
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
        if return_outputs:
            return loss
        if self.corpus_weight > 0:
            loss = loss + self.corpus_weight * self._corpus_nll(model, len(inputs["label"]))
        if self.sft_weight <= 0 or log_probs is None:
            return loss
        mask = inputs["completion_mask"][:, 1:].to(log_probs.device)  # the tokens predicted
        liked = torch.as_tensor(inputs["label"], dtype=mask.dtype, device=mask.device)
        weight = mask * liked.unsqueeze(1)
        log_probs = log_probs[:, -mask.shape[1] :]
        tokens = weight.sum().clamp(min=1)  # a batch without 👍 adds 0 and stays in the graph
        return loss + self.sft_weight * -(log_probs * weight).sum() / tokens

    def _corpus_nll(self, model, size: int) -> torch.Tensor:
        """Mean NLL per token of `size` random corpus jokes (the corpus phase's own loss)."""
        batch = self._collate(
            [
                {"input_ids": ids}
                for ids in self._corpus_draws.sample(self.corpus, min(size, len(self.corpus)))
            ]
        )
        policy = self.accelerator.unwrap_model(model)
        device = next(policy.parameters()).device
        return policy(**{name: value.to(device) for name, value in batch.items()}).loss
