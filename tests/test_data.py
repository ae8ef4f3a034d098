"""Training data: stable hash split, example layout, snapshot reading, padding collator."""

from __future__ import annotations

import json

import pytest

from model.contracts.corpus import CorpusJoke, read_snapshot, write_snapshot
from model.contracts.jokes import normalise_key
from model.data import JokeCollator, encode_jokes, split_jokes, split_score
from model.loading import load_tokenizer


def make_jokes(start: int, count: int) -> list[CorpusJoke]:
    texts = [f"Joke number {i}: why did the robot {i} cross the road?" for i in range(start, count)]
    return [CorpusJoke(id=i, text=t, key=normalise_key(t)) for i, t in enumerate(texts, start)]


def sides(train, validation) -> dict[str, str]:
    return {j.key: "train" for j in train} | {j.key: "validation" for j in validation}


def test_a_joke_keeps_its_side_when_the_corpus_grows():
    small = make_jokes(0, 300)
    before = sides(*split_jokes(small, 0.1))
    grown = make_jokes(0, 1200)
    after = sides(*split_jokes(list(reversed(grown)), 0.1))  # order must not matter either
    assert all(after[key] == side for key, side in before.items())
    validation_share = sum(side == "validation" for side in after.values()) / len(after)
    assert 0.06 < validation_share < 0.14


def test_split_follows_the_hash_of_the_key():
    jokes = make_jokes(0, 200)
    train, validation = split_jokes(jokes, 0.1)
    assert all(split_score(j.key) < 0.1 for j in validation)
    assert all(split_score(j.key) >= 0.1 for j in train)
    assert 0.0 <= split_score("anything") < 1.0


def test_five_jokes_give_at_least_one_of_each_deterministically():
    jokes = make_jokes(0, 5)
    train, validation = split_jokes(jokes, 0.1)
    assert len(train) >= 1 and len(validation) >= 1
    assert len(train) + len(validation) == 5
    assert set(split_jokes(list(reversed(jokes)), 0.1)[1]) == set(validation)
    if len(validation) == 1:  # no joke fell below 0.1 on its own: the smallest hash is chosen
        assert validation[0].key == min((j.key for j in jokes), key=split_score)


def test_a_side_is_never_empty_even_at_extreme_fractions():
    jokes = make_jokes(0, 3)
    train, validation = split_jokes(jokes, 0.999999)
    assert len(train) == 1 and len(validation) == 2
    assert train[0].key == max((j.key for j in jokes), key=split_score)


def test_one_joke_cannot_be_split():
    with pytest.raises(ValueError, match="at least 2"):
        split_jokes(make_jokes(0, 1), 0.1)


def test_snapshot_reading_skips_blank_lines_and_duplicate_keys(tmp_path):
    path = tmp_path / "snapshot.jsonl"
    rows = [
        {
            "id": 1,
            "text": "Why did the chicken cross?",
            "key": normalise_key("Why did the chicken"),
        },
        {
            "id": 2,
            "text": "why did the CHICKEN cross…",
            "key": normalise_key("Why did the chicken"),
        },
        {"id": 3, "text": "I told a joke about UDP."},  # no key: computed here
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    jokes = read_snapshot(path)
    assert [j.id for j in jokes] == [1, 3]
    assert jokes[1].key == "i told a joke about udp"


def test_snapshot_round_trips_the_corpus_record(tmp_path):
    """The bot writes what the trainer reads: one record type on both sides."""
    corpus = make_jokes(7, 10)
    path = tmp_path / "snapshot.jsonl"
    write_snapshot(path, corpus)
    assert read_snapshot(path) == corpus


def test_example_layout_is_start_joke_eos(tiny_model):
    tokenizer = load_tokenizer(str(tiny_model))
    eos = tokenizer.eos_token_id
    [ids] = encode_jokes(tokenizer, ["Hello world"])
    assert ids == [eos, 15496, 995, eos]  # GPT-2: start token is eos (no separate bos)
    [cut] = encode_jokes(tokenizer, ["word " * 50], max_tokens=10)
    assert len(cut) == 10 and cut[-1] == eos


def test_collator_pads_to_the_longest_and_masks_only_padding():
    pad = 7  # pad equals the eos of the examples: masking must go by position
    batch = JokeCollator(pad_token_id=pad)(
        [{"input_ids": [7, 1, 2, 7]}, {"input_ids": [7, 3, 7]}, {"input_ids": [7, 4, 5, 6, 7]}]
    )
    assert batch["input_ids"].shape == (3, 5)
    assert batch["input_ids"][1].tolist() == [7, 3, 7, 7, 7]
    assert batch["attention_mask"][1].tolist() == [1, 1, 1, 0, 0]
    assert batch["labels"][1].tolist() == [7, 3, 7, -100, -100]  # the real eos keeps its label
    assert batch["labels"][2].tolist() == [7, 4, 5, 6, 7]
    assert batch["labels"][0].tolist() == [7, 1, 2, 7, -100]
