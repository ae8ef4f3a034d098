"""The gate's measurements: one-joke and copy rules by hand, NLL against a per-joke reference,
samples drawn through the runner's engine."""

from __future__ import annotations

import math

import torch

from model.contracts.jokes import normalise_key
from model.evaluate import (
    Sample,
    copy_rate,
    is_one_joke,
    measure,
    one_joke_rate,
    sample_jokes,
    show_sample,
    validation_nll,
)
from model.loading import load_model_and_tokenizer
from model.textformat import FEW_SHOT, PLAIN, example_ids

JOKE = "I told my wife she was drawing her eyebrows too high. She looked surprised."


def test_one_joke_rule():
    """Ended by itself, one line of 10 to 280 characters (`model.contracts.jokes.is_one_joke`,
    the rule /joke picks by); reading like a sentence is /joke's preference, not the gate's."""
    assert is_one_joke(Sample(JOKE, finished=True))
    assert is_one_joke(Sample("  Ha ha, ha. \n", finished=True))  # 10 chars after trimming
    assert not is_one_joke(Sample("Ha ha ha!", finished=True))  # too short
    long = "Ha " * 92 + "ha."
    assert len(long) == 279 and is_one_joke(Sample(long + "!", finished=True))
    assert not is_one_joke(Sample(long + "!!", finished=True))  # too long
    assert not is_one_joke(Sample(JOKE, finished=False))  # ran out of tokens
    assert not is_one_joke(Sample("First joke here.\nSecond joke here.", finished=True))
    assert is_one_joke(Sample(" opens mid-sentence and ends without a stop", finished=True))


def test_rates_over_samples():
    train_keys = {normalise_key(JOKE)}
    samples = [
        Sample(JOKE.upper().replace(".", "!"), finished=True),  # a copy after normalisation
        Sample("A brand new joke about ducks and taxes.", finished=True),
        Sample("Unfinished rambling about ducks", finished=False),
        Sample("", finished=True),  # empty: neither a joke nor a copy
    ]
    assert one_joke_rate(samples) == 0.5
    assert copy_rate(samples, train_keys) == 0.25
    assert one_joke_rate([]) == 0.0 and copy_rate([], train_keys) == 0.0
    assert show_sample(samples[2:3] + samples[1:2]) == "A brand new joke about ducks and taxes."


def test_validation_nll_matches_a_joke_by_joke_reference(tiny_model):
    loaded = load_model_and_tokenizer(tiny_model, device="cpu")
    texts = ["Hi.", JOKE, "Why did the chicken cross the road? To get to the other side."]
    total, count = 0.0, 0
    with torch.no_grad():
        for text in texts:  # one unpadded joke at a time: no padding can leak in
            ids = torch.tensor([example_ids(loaded.tokenizer, text)])
            logits = loaded.model(input_ids=ids).logits[0, :-1]
            total += float(torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum"))
            count += ids.shape[1] - 1  # every token after the start, eos included
    nll, tokens = validation_nll(loaded.model, loaded.tokenizer, texts)
    assert tokens == count
    assert math.isclose(nll, total / count, rel_tol=1e-4)
    assert 9.0 < nll < 12.0  # a random model over 50,257 tokens: about ln(50257) = 10.8


def test_sampling_is_seeded(tiny_model):
    """Samples come from the runner's engine in batches; the same arguments (hence the same
    batch composition) give the same samples."""
    loaded = load_model_and_tokenizer(tiny_model, device="cpu")
    first = sample_jokes(loaded, 5, max_new_tokens=8, seed=3, batch_size=2)
    again = sample_jokes(loaded, 5, max_new_tokens=8, seed=3, batch_size=2)
    other = sample_jokes(loaded, 5, max_new_tokens=8, seed=4, batch_size=2)
    assert len(first) == 5 and first == again and first != other
    # a random model (almost) never says eos: nothing finished, so nothing counts as a joke
    assert one_joke_rate(first) == 0.0
    # served few-shot, the in-context examples reach the prompt (plain ignores them)
    pool = [JOKE, "Why did the chicken cross the road? To get to the other side."]
    as_plain = sample_jokes(loaded, 5, max_new_tokens=8, seed=3, batch_size=2, layout=PLAIN,
                            examples_pool=pool, shots=2)  # fmt: skip
    few_shot = sample_jokes(loaded, 5, max_new_tokens=8, seed=3, batch_size=2, layout=FEW_SHOT,
                            examples_pool=pool, shots=2)  # fmt: skip
    assert as_plain == first and few_shot != first


def test_measure_a_model_from_a_folder(tiny_model):
    loaded = load_model_and_tokenizer(str(tiny_model), device="cpu")
    result = measure(loaded, [JOKE], {normalise_key(JOKE)}, samples=3, max_new_tokens=6, seed=0)
    metrics = result.metrics
    assert metrics["n_validation"] == 1 and metrics["n_samples"] == len(result.samples) == 3
    assert metrics["nll"] > 9.0 and metrics["layout"] == PLAIN and metrics["shots"] == 0
    assert metrics["one_joke_rate"] == 0.0 and metrics["copy_rate"] == 0.0
