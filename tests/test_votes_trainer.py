"""The preference phase's trainer on the tiny GPT-2.

Its loss is KTO's plus the liked jokes' NLL times PREFERENCE_SFT_WEIGHT (model.votes_trainer),
read from KTO's own forward pass: checked against a plain forward on the same jokes. Its epoch check
(model.sample_check) ends it on the last check whose samples held up."""

from __future__ import annotations

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import KTOConfig

from model.distributed import World
from model.loading import load_model_and_tokenizer
from model.lora import add_lora
from model.preference import prompt_text
from model.sample_check import SampleCheck, SampleFigures
from model.votes_trainer import AnchoredKTOTrainer

JOKES = [  # (completion, liked)
    ("My cat likes the piano.", True),
    ("My dog likes the piano.", False),
    ("My cat likes the moon, and the moon likes my cat.", True),
    ("My dog likes the moon.", False),
]


def kto_trainer(
    tmp_path, model_path, sft_weight: float, jokes=JOKES, *, lora: bool = False,
    steps: int = 1, rate: float = 5e-5,
):  # fmt: skip
    loaded = load_model_and_tokenizer(str(model_path), device="cpu")
    tokenizer = loaded.tokenizer
    model = add_lora(loaded.model, r=4, alpha=8, dropout=0.0) if lora else loaded.model
    rows = [
        {"prompt": prompt_text(tokenizer, ""), "completion": text, "label": liked}
        for text, liked in jokes
    ]
    args = KTOConfig(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], bf16=False,
        per_device_train_batch_size=len(rows), max_length=64, precompute_ref_log_probs=True,
        max_steps=steps, learning_rate=rate, save_strategy="no", disable_tqdm=True,
    )  # fmt: skip
    trainer = AnchoredKTOTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer, sft_weight=sft_weight,
    )  # fmt: skip
    return trainer, loaded


def kto_loss(
    tmp_path, model_path, sft_weight: float, jokes=JOKES, **options
) -> tuple[float, object]:
    trainer, loaded = kto_trainer(tmp_path, model_path, sft_weight, jokes, **options)
    batch = next(iter(trainer.get_train_dataloader()))
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.requires_grad
    return float(loss.detach()), loaded


def liked_nll(loaded, jokes=JOKES) -> float:
    """Mean NLL per token of the liked completions, their eos included, after the start token."""
    tokenizer, model = loaded.tokenizer, loaded.model
    total, count = 0.0, 0
    with torch.no_grad():
        for text, liked in jokes:
            if not liked:
                continue
            prompt = tokenizer(prompt_text(tokenizer, "")).input_ids
            words = tokenizer(text, add_special_tokens=False).input_ids
            completion = [*words, tokenizer.eos_token_id]
            ids = torch.tensor([prompt + completion])
            log_probs = model(input_ids=ids).logits[0, :-1].float().log_softmax(-1)
            targets = ids[0, 1:]
            picked = log_probs.gather(1, targets[:, None])[:, 0][len(prompt) - 1 :]
            total -= float(picked.sum())
            count += len(completion)
    return total / count


@pytest.mark.parametrize(("sft_weight", "lora"), [(0.5, False), (2.0, False), (1.0, True)])
def test_the_loss_adds_the_liked_jokes_nll_times_the_weight(tmp_path, tiny_model, sft_weight, lora):
    """Also through a LoRA-wrapped model (a new adapter changes nothing yet: same NLL)."""
    plain, loaded = kto_loss(tmp_path / "plain", tiny_model, 0.0)
    anchored, _ = kto_loss(tmp_path / "anchored", tiny_model, sft_weight, lora=lora)
    nll = liked_nll(loaded)
    assert nll > 1.0  # a random tiny model: the term is far from nothing
    assert anchored - plain == pytest.approx(sft_weight * nll, rel=1e-3)


def test_a_batch_without_liked_jokes_is_plain_kto(tmp_path, tiny_model):
    disliked = [(text, False) for text, _ in JOKES]
    plain, _ = kto_loss(tmp_path / "plain", tiny_model, 0.0, disliked)
    anchored, _ = kto_loss(tmp_path / "anchored", tiny_model, 1.0, disliked)
    assert anchored == pytest.approx(plain, rel=1e-6)


def test_the_trained_model_leaves_without_the_hook(tmp_path, tiny_model):
    trainer, loaded = kto_trainer(tmp_path, tiny_model, 1.0)
    assert loaded.model._forward_hooks  # the term is read through it while training
    trainer.train()
    assert not loaded.model._forward_hooks


# ---- the sample check ---------------------------------------------------------------------------


def figures(distinct_2: float, one_joke_rate: float, samples: int = 48) -> SampleFigures:
    return SampleFigures(0, 0.0, distinct_2, one_joke_rate, 0.0, samples)


def test_samples_hold_up_unless_much_less_varied_or_worse_beyond_the_noise():
    start = figures(0.9, 0.9)
    assert figures(0.9, 0.9).holds_up_against(start)
    assert figures(0.77, 0.9).holds_up_against(start)  # 85% of the start's variety
    assert not figures(0.76, 0.9).holds_up_against(start)
    assert figures(0.9, 0.79).holds_up_against(start)  # 48 samples each: noise 0.12-0.15
    assert not figures(0.9, 0.7).holds_up_against(start)
    assert not figures(0.9, 0.84, samples=10_000).holds_up_against(figures(0.9, 0.9, 10_000))


class ScriptedCheck(SampleCheck):
    """The real check with scripted sample figures (start first, then one per check)."""

    def __init__(self, model, script: list[tuple[float, float]]):
        super().__init__(None, model, None, "cpu", World.from_env())
        self.script = list(script)

    def _measure(self, state) -> SampleFigures:
        distinct_2, one_joke_rate = self.script.pop(0)
        return SampleFigures(state.global_step, 0.0, distinct_2, one_joke_rate, 0.0, 48)


class StepWeights(TrainerCallback):
    """The model's weights after every step, before the check's decision."""

    def __init__(self, model):
        self.model, self.after = model, {}

    def on_step_end(self, args, state, control, **kwargs):
        self.after[state.global_step] = snapshot(self.model)

    def on_train_begin(self, args, state, control, **kwargs):
        self.after[0] = snapshot(self.model)


def snapshot(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


GOOD, COPYING, RAMBLING = (0.9, 0.9), (0.5, 0.9), (0.9, 0.5)


@pytest.mark.parametrize(
    ("script", "kept"),
    [
        ([GOOD, GOOD, GOOD, GOOD], 3),
        ([GOOD, GOOD, GOOD, COPYING], 2),
        ([GOOD, RAMBLING, GOOD, RAMBLING], 2),  # a bad check in between is not the end
        ([GOOD, COPYING, RAMBLING, COPYING], 0),  # none held up: the phase changes nothing
    ],
)
def test_the_phase_ends_on_the_last_check_whose_samples_held_up(tmp_path, tiny_model, script, kept):
    trainer, loaded = kto_trainer(tmp_path, tiny_model, 1.0, steps=3, rate=1e-3)  # a check a step
    weights, check = StepWeights(loaded.model), ScriptedCheck(loaded.model, script)
    trainer.add_callback(weights)
    trainer.add_callback(check)
    trainer.train()
    assert check.kept == kept and bool(check.reason) == (kept != 3)
    assert len(weights.after) == 4
    assert not torch.equal(weights.after[0]["transformer.h.0.mlp.c_fc.weight"],
                           weights.after[3]["transformer.h.0.mlp.c_fc.weight"])  # fmt: skip
    now = snapshot(loaded.model)
    for name, value in weights.after[kept].items():
        assert torch.equal(now[name], value), name
    summary = check.summary()
    assert summary["kept_step"] == kept and len(summary["sample_checks"]) == 4
