"""Training data: the stable train/validation split, examples and batches.

The split is decided by the joke alone: sha256 of its duplicate key
(`model.contracts.jokes.normalise_key`) read as a number in [0, 1); below `validation_fraction`
means validation. A joke therefore never moves between training and validation when the corpus
grows or shrinks, and an edit that keeps the key keeps the side. One exception, for tiny
corpora only: when a side would be empty (say 5 jokes at 10%), the joke with the smallest hash
joins validation (or the one with the largest hash joins training), so there is always at least
one of each; that joke may return to its own side once the corpus is big enough to fill both
sides by itself.

Every example is laid out by `model.textformat.example_ids` (start token, joke, eos), and the
collator pads each batch to its longest example, with no loss on the padding.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from model.contracts.corpus import CorpusJoke
from model.textformat import example_ids

log = logging.getLogger(__name__)

# A joke is at most 280 characters (~80 tokens); this only guards against odd snapshots.
DEFAULT_MAX_EXAMPLE_TOKENS = 128


def file_sha256(path: str | Path) -> str:
    """The hash of the snapshot file, recorded with the run."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_score(key: str) -> float:
    """sha256 of the key as a number in [0, 1): the joke's fixed place in the split."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2**64


def split_jokes(
    jokes: Sequence[CorpusJoke], validation_fraction: float
) -> tuple[list[CorpusJoke], list[CorpusJoke]]:
    """(training, validation) by hash of the key; at least one of each when there are two jokes."""
    if len(jokes) < 2:
        raise ValueError(f"need at least 2 jokes to train and validate, got {len(jokes)}")
    train = [j for j in jokes if split_score(j.key) >= validation_fraction]
    validation = [j for j in jokes if split_score(j.key) < validation_fraction]
    if not validation:
        first = min(train, key=lambda j: split_score(j.key))
        train.remove(first)
        validation.append(first)
    if not train:
        last = max(validation, key=lambda j: split_score(j.key))
        validation.remove(last)
        train.append(last)
    return train, validation


def encode_jokes(
    tokenizer, texts: Iterable[str], max_tokens: int = DEFAULT_MAX_EXAMPLE_TOKENS
) -> list[list[int]]:
    """Token ids of each joke as a training example; an over-long one is cut but keeps its eos."""
    examples = []
    for text in texts:
        ids = example_ids(tokenizer, text)
        if len(ids) > max_tokens:
            log.warning("a joke of %d tokens was cut to %d", len(ids), max_tokens)
            ids = [*ids[: max_tokens - 1], tokenizer.eos_token_id]
        examples.append(ids)
    return examples


class JokeDataset:
    """A list of examples in the form the Trainer (and its length-grouping sampler) expects."""

    def __init__(self, examples: Sequence[Sequence[int]]):
        self.examples = [list(e) for e in examples]

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return {"input_ids": self.examples[index]}


@dataclass
class JokeCollator:
    """Pad a batch on the right to its longest example; padding gets label -100 (no loss).

    Padding is found by position, not by token id: the pad token is often the eos token, and
    the eos that ends a joke must be learnt.
    """

    pad_token_id: int

    def __call__(self, features: Sequence[dict]) -> dict:
        import torch

        rows = [list(f["input_ids"]) for f in features]
        width = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), -100, dtype=torch.long)
        for i, row in enumerate(rows):
            values = torch.tensor(row, dtype=torch.long)
            input_ids[i, : len(row)] = values
            attention_mask[i, : len(row)] = 1
            labels[i, : len(row)] = values
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
