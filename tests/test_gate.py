"""The promotion gate refuses a candidate that is not measurably better."""

from bot.training.gate import GatePolicy, decide

POLICY = GatePolicy(min_nll_gain=0.02, max_one_joke_drop=0.05, max_copy_rate=0.2)
SERVING = {"nll": 4.0, "one_joke_rate": 0.8, "copy_rate": 0.0}


def test_better_candidate_is_promoted():
    decision = decide({"nll": 3.0, "one_joke_rate": 0.9, "copy_rate": 0.05}, SERVING, POLICY)
    assert decision.promote
    assert "4.000 → 3.000" in decision.reason


def test_worse_candidate_is_refused():
    decision = decide({"nll": 4.5, "one_joke_rate": 0.9, "copy_rate": 0.0}, SERVING, POLICY)
    assert not decision.promote
    assert "not better" in decision.reason


def test_marginal_gain_below_margin_is_refused():
    decision = decide({"nll": 3.95, "one_joke_rate": 0.9, "copy_rate": 0.0}, SERVING, POLICY)
    assert not decision.promote


def test_fewer_one_joke_answers_is_refused():
    decision = decide({"nll": 3.0, "one_joke_rate": 0.5, "copy_rate": 0.0}, SERVING, POLICY)
    assert not decision.promote
    assert "one-line" in decision.reason


def test_a_parrot_is_refused():
    decision = decide({"nll": 2.0, "one_joke_rate": 1.0, "copy_rate": 0.6}, SERVING, POLICY)
    assert not decision.promote
    assert "copies" in decision.reason


def test_one_joke_drop_within_sampling_noise_is_tolerated():
    """16 samples: one unlucky sample is a 6% drop, not evidence of a worse model."""
    serving = {"nll": 4.5, "one_joke_rate": 1.0, "n_samples": 16}
    unlucky = {"nll": 3.3, "one_joke_rate": 15 / 16, "n_samples": 16}
    assert decide(unlucky, serving, POLICY).promote
    worse = {"nll": 3.3, "one_joke_rate": 10 / 16, "n_samples": 16}
    assert not decide(worse, serving, POLICY).promote
    many = {"nll": 3.3, "one_joke_rate": 0.85, "n_samples": 400}
    assert not decide(many, {**serving, "n_samples": 400}, POLICY).promote  # noise is small
