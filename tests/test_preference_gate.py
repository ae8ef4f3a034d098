"""The gate knows about votes: vote separation (within its noise), diversity, the wording; and
the pure pieces of the preference phase (weights, loss choice, layout, figures)."""

from __future__ import annotations

import pytest

from bot.training.coordinator import TrainingOutcome
from bot.training.gate import GatePolicy, decide, separation_tolerance
from bot.training.progress import TrainingProgress, describe
from bot.training.wording import training_result, votes_learned, votes_rolled_back
from model.contracts.preferences import VotedJoke
from model.contracts.training_events import parse_event
from model.contracts.training_job import JobError, TrainJob
from model.preference import choose_loss, class_weights
from model.preference_eval import distinct_n, separation, separation_se

POLICY = GatePolicy(min_nll_gain=0.01, max_one_joke_drop=0.05, max_copy_rate=0.2)
SERVING = {
    "nll": 4.0,
    "one_joke_rate": 0.9,
    "copy_rate": 0.0,
    "vote_separation": 0.7,
    "vote_separation_se": 0.02,
    "distinct_2": 0.9,
}
LEARNED = {"ran": True, "up": 30, "down": 20}


def candidate(**changes):
    figures = {**SERVING, "nll": 3.5, "preference": LEARNED, "votes_up": 30, "votes_down": 20}
    figures["vote_pairs"] = 400
    return {**figures, **changes}


def test_a_candidate_that_follows_the_votes_better_is_promoted_and_the_verdict_says_so():
    decision = decide(candidate(vote_separation=0.85), SERVING, POLICY)
    assert decision.promote
    assert "votes separated 70% → 85% (400 held-out pairs)" in decision.reason
    assert "distinct-2 0.90 → 0.90" in decision.reason


def test_a_candidate_that_follows_the_votes_less_is_refused_beyond_the_noise():
    assert separation_tolerance(candidate(), SERVING, 0.05) == pytest.approx(0.055, abs=1e-3)
    refused = decide(candidate(vote_separation=0.6), SERVING, POLICY)
    assert not refused.promote and "votes less than the serving model" in refused.reason
    assert decide(candidate(vote_separation=0.66), SERVING, POLICY).promote  # within noise
    noisy = {"vote_separation_se": 0.12}  # few held-out votes: only a large drop counts
    assert decide(candidate(vote_separation=0.5, **noisy), {**SERVING, **noisy}, POLICY).promote


def test_less_variety_is_refused_only_when_the_candidate_learned_from_votes():
    repetitive = candidate(distinct_2=0.6)  # below 80% of 0.9
    refused = decide(repetitive, SERVING, POLICY)
    assert not refused.promote and "less varied" in refused.reason
    corpus_only = {**repetitive, "preference": {"ran": False}}
    assert decide(corpus_only, SERVING, POLICY).promote
    assert decide(candidate(distinct_2=0.75), SERVING, POLICY).promote


def test_without_vote_figures_the_gate_is_as_before():
    plain = {"nll": 4.0, "one_joke_rate": 0.9, "copy_rate": 0.0}
    decision = decide({**plain, "nll": 3.0}, plain, POLICY)
    assert decision.promote and "votes" not in decision.reason


def test_the_announcement_and_versions_say_what_the_version_learned():
    metrics = {"serving": SERVING, "candidate": candidate(vote_separation=0.85)}
    outcome = TrainingOutcome(7, "promoted", "better: …", version=3, serving="v3", metrics=metrics)
    text = training_result(outcome)
    assert "Votes: v3 learned from 50 votes (👍 30 / 👎 20)" in text
    assert "separates 85% of held-out 👍/👎 pairs" in text
    assert votes_learned({"nll": 3.0}) == ""
    assert "Note:" not in text  # the phase kept its last step


def test_the_announcement_says_when_the_votes_phase_ended_on_earlier_weights():
    checks = [
        {"step": 0, "epoch": 0.0, "distinct_2": 0.93, "one_joke_rate": 0.94},
        {"step": 15, "epoch": 1.0, "distinct_2": 0.9, "one_joke_rate": 0.92},
        {"step": 45, "epoch": 3.0, "distinct_2": 0.61, "one_joke_rate": 0.81},
    ]
    phase = {"ran": True, "kept_step": 15, "rolled_back": "step 45: …", "sample_checks": checks}
    metrics = {"serving": SERVING, "candidate": candidate(preference=phase)}
    outcome = TrainingOutcome(7, "promoted", "better: …", version=3, serving="v3", metrics=metrics)
    assert (
        "Note: the votes phase ended on step 15 of 45: later its jokes were less varied or less "
        "often whole (distinct-2 0.61, one-joke rate 81%; 0.93 and 94% when it began)."
    ) in training_result(outcome)
    nothing = {**phase, "kept_step": 0}
    assert "ended where it began (nothing learned)" in votes_rolled_back({"preference": nothing})


def test_separation_counts_pairs_and_ties_half():
    assert separation([2.0, 1.0, 0.0], [True, False, False]) == (1.0, 2)
    assert separation([0.0, 0.0], [True, False]) == (0.5, 1)
    assert separation([1.0, 3.0, 4.0], [True, False, True]) == (0.5, 2)
    assert separation([1.0], [True]) == (None, 0)
    assert separation_se(0.5, 10, 10) == pytest.approx(0.13, abs=0.01)
    assert separation_se(0.5, 100, 100) < separation_se(0.5, 10, 10)


def test_distinct_2_falls_when_one_joke_repeats():
    varied = ["why did the duck cross", "a horse walks into a bar", "my cat likes the lamp"]
    assert distinct_n(varied) == 1.0
    assert distinct_n(["the same joke again"] * 4) == 0.25
    assert distinct_n(["hi"]) == 0.0


def test_imbalanced_votes_are_weighted_and_the_loss_fits_the_prompts():
    assert class_weights(30, 10) == (1.0, 3.0)
    assert class_weights(5, 20) == (4.0, 1.0)
    assert class_weights(7, 0) == (1.0, 1.0)
    job = TrainJob.from_dict({"snapshot": "s", "base": "b", "output": "o"})
    empty = [VotedJoke(id=i, completion="x", key=str(i)) for i in range(3)]
    prompted = [VotedJoke(id=9, prompt="Why", completion=" x", key="w")] * 3
    assert choose_loss(job, empty + prompted[:2]) == "apo_zero_unpaired"
    assert choose_loss(job, empty + prompted) == "kto"
    assert choose_loss(job.model_copy(update={"preference_loss": "kto"}), empty) == "kto"


def test_the_job_keeps_time_for_the_phase_and_refuses_nonsense():
    base = {"snapshot": "s", "base": "b", "output": "o", "max_minutes": 10}
    assert TrainJob.from_dict(base).corpus_seconds == 600
    votes = TrainJob.from_dict({**base, "preferences": "p.jsonl", "preference_phase": True})
    assert votes.corpus_seconds == pytest.approx(420)  # 30% kept for the preference phase
    assert "preferences" not in votes.hyperparameters()
    with pytest.raises(JobError, match="preference_loss"):
        TrainJob.from_dict({**base, "preference_loss": "dpo"})
    with pytest.raises(JobError, match="preference_holdout"):
        TrainJob.from_dict({**base, "preference_holdout": 1.5})


def test_discord_progress_shows_the_phase_learning_from_votes():
    progress = TrainingProgress()
    for line in (
        '{"event": "start", "train_jokes": 36, "validation_jokes": 4, "total_steps": 10,'
        ' "device": "cpu"}',
        '{"event": "progress", "step": 10, "total_steps": 10, "loss": 2.0}',
        '{"event": "votes", "liked": 30, "disliked": 20, "up": 70, "down": 45, "held_out": 12,'
        ' "total_steps": 8, "loss": "apo_zero_unpaired"}',
        '{"event": "progress", "step": 2, "total_steps": 8, "loss": 0.4, "phase": "votes"}',
    ):
        progress.apply(parse_event(line))
    text = describe(progress)
    assert text.startswith("Learning from 115 votes (👍 70 / 👎 45) on 50 jokes:")
    assert "step 2/8" in text and "loss 0.400" in text
