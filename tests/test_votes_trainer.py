"""A 👎 joke is learnt without its end-of-joke token, a 👍 joke with it (model.votes_trainer):
what the preference phase trains on, as TRL prepares it, on the tiny GPT-2."""

from __future__ import annotations

from datasets import Dataset
from trl import KTOConfig

from model.loading import load_model_and_tokenizer
from model.preference import prompt_text
from model.votes_trainer import VotesKTOTrainer

JOKES = [  # (completion, liked)
    ("My cat likes the piano.", True),
    ("My dog likes the piano.", False),
    ("My cat likes the moon.", True),
    ("My dog likes the moon.", False),
]


def test_disliked_jokes_lose_their_ending_and_liked_ones_keep_it(tmp_path, tiny_model):
    loaded = load_model_and_tokenizer(str(tiny_model), device="cpu")
    tokenizer = loaded.tokenizer
    rows = [
        {"prompt": prompt_text(tokenizer, ""), "completion": text, "label": liked}
        for text, liked in JOKES
    ]
    args = KTOConfig(
        output_dir=str(tmp_path / "out"), use_cpu=True, report_to=[], bf16=False,
        per_device_train_batch_size=2, max_length=64,
    )  # fmt: skip
    trainer = VotesKTOTrainer(
        model=loaded.model, args=args, train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
    )  # fmt: skip
    prepared = list(trainer.train_dataset)
    eos = tokenizer.eos_token_id
    for (text, liked), example in zip(JOKES, prepared, strict=True):
        ids = example["completion_ids"]
        words = tokenizer(text, add_special_tokens=False).input_ids
        assert ids == ([*words, eos] if liked else words), (text, liked, ids)
