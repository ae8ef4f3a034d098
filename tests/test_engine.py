"""The generation engine without HTTP: continuous batching must not change what a request gets.

"Not change" within float noise: the forward pass is not batch-invariant on every CPU kernel,
so rows are compared with their runs alone as far as the model is decided
(`tests.greedy_reference`), and logits with a tolerance, never bit for bit across shapes.
"""

from __future__ import annotations

import gc
import time
import weakref
from concurrent.futures import wait

import pytest
import torch

from model.batch import RunningBatch
from model.engine import Engine, EngineMetrics
from model.hot_swap import load_candidate
from model.request import QueueFull, RequestError
from model.sampling_params import SamplingParams
from model.textformat import prompt_ids
from tests.greedy_reference import agrees, decided_greedy

PROMPTS = ["Why did the chicken", "", "A man walks into a bar and says", "Knock knock", "Q:"]


class Recorder(EngineMetrics):
    def __init__(self) -> None:
        self.batches: list[int] = []
        self.released: list[str] = []

    def batch_step(self, rows: int) -> None:
        self.batches.append(rows)

    def model_released(self, served) -> None:
        self.released.append(served.version)


@pytest.fixture(scope="module")
def served_a(tiny_a):
    return load_candidate(str(tiny_a), "a", device="cpu")


@pytest.fixture(scope="module")
def engine(served_a):
    rec = Recorder()
    eng = Engine(max_batch=16, max_queue=64, metrics=rec)
    eng.install(served_a)
    eng.start()
    yield eng, rec
    eng.stop()


def run_alone(engine: Engine, prompt: str, params: SamplingParams):
    return engine.submit(prompt, params).future.result(timeout=30)


def run_together(engine: Engine, jobs):
    """Queue every job at once (`submit_all`), so that the idle worker admits them together."""
    reqs = engine.submit_all(jobs)
    wait([r.future for r in reqs], timeout=30)
    return [r.future.result() for r in reqs]


def texts(result):
    return [(c.text, c.finish_reason) for c in result.choices]


def test_greedy_rows_in_a_batch_agree_with_their_runs_alone(engine, served_a):
    eng, rec = engine
    model, tok = served_a.loaded.model, served_a.tokenizer
    jobs = [
        (p, SamplingParams(max_tokens=3 + 9 * i, temperature=0.0, ignore_eos=True))
        for i, p in enumerate(PROMPTS)
    ]
    rec.batches.clear()
    together = run_together(eng, jobs)
    for (prompt, params), result in zip(jobs, together, strict=True):
        alone = decided_greedy(model, tok, prompt, params.max_tokens, ignore_eos=True)
        assert alone.complete  # this model is decided on these prompts: every token compared
        assert agrees(result.choices[0].token_ids, alone), prompt
        assert result.choices[0].finish_reason == "length"
    assert max(rec.batches) == len(PROMPTS)  # they really shared forward passes
    assert rec.batches[-1] == 1  # and rows left one by one as their budgets ran out


def test_seeded_sampling_is_reproducible(engine):
    """What `seed` promises: the same text for the same request alone, and for the same batch
    composition (not across compositions: the forward pass is not batch-invariant everywhere)."""
    eng, _ = engine
    jobs = [
        (p, SamplingParams(max_tokens=12, temperature=t, top_p=tp, seed=s, ignore_eos=True))
        for p, t, tp, s in zip(PROMPTS, (0.7, 1.0, 1.3, 0.9, 2.0), (0.9, 1.0, 0.5, 0.95, 0.3),
                               (1, 2, 3, 4, 5), strict=True)
    ]  # fmt: skip
    first = [texts(run_alone(eng, p, params)) for p, params in jobs]
    second = [texts(run_alone(eng, p, params)) for p, params in jobs]
    assert first == second
    batched = [texts(r) for r in run_together(eng, jobs)]
    assert [texts(r) for r in run_together(eng, jobs)] == batched
    other_seed = SamplingParams(max_tokens=12, temperature=1.0, seed=99, ignore_eos=True)
    assert texts(run_alone(eng, PROMPTS[0], other_seed)) != first[0]


def test_n_choices_differ_and_are_reproducible(engine):
    eng, _ = engine
    params = SamplingParams(max_tokens=10, temperature=1.0, top_p=1.0, n=4, seed=7)
    a = run_alone(eng, "Why", params)
    b = run_alone(eng, "Why", params)
    assert [c.index for c in a.choices] == [0, 1, 2, 3]
    assert texts(a) == texts(b)
    assert len({c.text for c in a.choices}) > 1
    assert a.completion_tokens == sum(c.tokens for c in a.choices)


def test_eos_stops_each_sequence_on_its_own(engine, served_a):
    eng, _ = engine
    greedy = SamplingParams(max_tokens=12, temperature=0.0)
    model, tok = served_a.loaded.model, served_a.tokenizer
    ref_a = decided_greedy(model, tok, PROMPTS[0], 12)
    cut = next(i for i, t in enumerate(ref_a.ids) if t != ref_a.ids[0])  # A's first new token
    fake_eos = ref_a.ids[cut]
    long_prompt, ref_b = next(
        (p, ref)
        for p in PROMPTS[1:]
        if (ref := decided_greedy(model, tok, p, 12)).complete and fake_eos not in ref.ids
    )
    real_stops = served_a.stop_token_ids
    served_a.stop_token_ids = real_stops | {fake_eos}  # the tiny random model "ends its joke"
    try:
        a, b = run_together(eng, [(PROMPTS[0], greedy), (long_prompt, greedy)])
    finally:
        served_a.stop_token_ids = real_stops
    assert a.choices[0].finish_reason == "stop"
    assert a.choices[0].token_ids == ref_a.ids[:cut]  # eos itself is not in the text
    assert a.choices[0].text == tok.decode(ref_a.ids[:cut])
    assert a.completion_tokens == cut
    assert agrees(b.choices[0].token_ids, ref_b)  # the other row went on to its budget
    assert b.choices[0].finish_reason == "length"


def test_stop_strings_cut_the_text(engine):
    eng, _ = engine
    greedy = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
    full = run_alone(eng, PROMPTS[2], greedy).choices[0].text
    words = full.split()
    stop = words[len(words) // 2]
    expected = full[: full.find(stop)]
    got = run_alone(eng, PROMPTS[2], SamplingParams(**{**greedy.__dict__, "stop": ("zzqx", stop)}))
    assert (got.choices[0].text, got.choices[0].finish_reason) == (expected, "stop")


def test_context_limits(engine, served_a):
    eng, _ = engine
    with pytest.raises(RequestError, match="context"):
        run_alone(eng, "joke " * 400, SamplingParams(max_tokens=5))
    prompt = "joke " * 250  # 251 of the tiny model's 256 positions
    res = run_alone(eng, prompt, SamplingParams(max_tokens=50, temperature=0.0, ignore_eos=True))
    assert res.choices[0].finish_reason == "length"
    assert res.prompt_tokens + res.completion_tokens == served_a.max_positions


def test_rows_joining_and_leaving_a_batch_compute_what_they_compute_alone(tiny_a):
    """Padding, rows joining a running batch (longer and shorter than its cache), rows leaving
    and the trimmed padding columns change no row's logits beyond float noise. Every row is fed
    fixed tokens, so the runs compared are the same whatever the logits."""
    served = load_candidate(str(tiny_a), "a", device="cpu")
    tok, model = served.tokenizer, served.loaded.model
    script = tok(" and the duck said the bar was closed for the night", add_special_tokens=False)
    script = script.input_ids  # one fixed token per step (11 steps at most)

    class R:
        def __init__(self, prompt):
            self.prompt_ids = prompt_ids(tok, prompt)
            self.last_token, self.length = self.prompt_ids[-1], len(self.prompt_ids)
            self.logits: list[torch.Tensor] = []

    def feed(rows, logits):
        for r, row_logits in zip(rows, logits, strict=True):
            r.logits.append(row_logits.clone())
            r.last_token, r.length = script[len(r.logits) - 1], r.length + 1

    def alone(prompt, steps):
        b, r = RunningBatch(model, tok.pad_token_id), R(prompt)
        with torch.inference_mode():
            feed([r], b.prefill([r]))
            for _ in range(steps - 1):
                feed([r], b.decode())
        return r.logits

    with torch.inference_mode():
        b = RunningBatch(model, tok.pad_token_id)
        first = [R(PROMPTS[1]), R(PROMPTS[0])]
        feed(first, b.prefill(first))
        for _ in range(3):
            feed(b.rows, b.decode())
        late = [R(PROMPTS[2]), R(PROMPTS[3])]  # longer and shorter than the running cache
        feed(late, b.prefill(late))
        for _ in range(3):
            feed(b.rows, b.decode())
        width = b.mask.shape[1]
        b.keep([r for r in b.rows if r is not late[0]])  # the longest row leaves: padding trimmed
        assert b.mask.shape[1] < width and b.mask[:, 0].any()
        assert b.cache.get_seq_length() == b.mask.shape[1]
        for _ in range(4):
            feed(b.rows, b.decode())
    for row, prompt, steps in [
        (first[0], PROMPTS[1], 11),
        (first[1], PROMPTS[0], 11),
        (late[0], PROMPTS[2], 4),
        (late[1], PROMPTS[3], 8),
    ]:
        assert len(row.logits) == steps
        torch.testing.assert_close(
            torch.stack(row.logits), torch.stack(alone(prompt, steps)), rtol=1e-4, atol=1e-4
        )


def test_queue_bound_and_cancel(tiny_a):
    eng = Engine(max_batch=1, max_queue=2)
    eng.install(
        load_candidate(str(tiny_a), "a", device="cpu")
    )  # worker not started: requests stay queued
    long = SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)
    first = eng.submit("a", long)
    with pytest.raises(QueueFull):  # one place is left, not two: all or none
        eng.submit_all([("b", long), ("c", long)])
    assert eng.queue_depth == 1
    eng.submit("b", long)
    with pytest.raises(QueueFull) as err:
        eng.submit("c", long)
    assert err.value.retry_after >= 1
    second = eng._waiting[1]
    eng.cancel(first)
    eng.start()
    try:
        deadline = time.monotonic() + 10
        while not second.future.done():
            assert time.monotonic() < deadline
            time.sleep(0.005)
            if eng.running_rows:  # the second one runs; its client goes away too
                eng.cancel(second)
        while eng.running_rows:
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert first.future.cancelled() and second.future.cancelled()
        assert 0 < eng.steps < 200  # the worker stopped generating for it
    finally:
        eng.stop()


def test_swapped_out_model_is_released(tiny_a, tiny_b):
    rec = Recorder()
    eng = Engine(max_batch=8, metrics=rec)
    old = load_candidate(str(tiny_a), "old", device="cpu")
    eng.install(old)
    eng.start()
    try:
        slow = SamplingParams(max_tokens=120, temperature=0.0, ignore_eos=True)
        in_flight = [eng.submit("x", slow) for _ in range(3)]
        old_weights = weakref.ref(old.loaded.model)
        eng.install(load_candidate(str(tiny_b), "new", device="cpu"))
        after = eng.submit("x", slow)
        assert [r.future.result(timeout=30).version for r in in_flight] == ["old"] * 3
        assert after.future.result(timeout=30).version == "new"
        del old, in_flight
        deadline = time.monotonic() + 10
        while old_weights() is not None:
            assert time.monotonic() < deadline, "the old model was never released"
            time.sleep(0.02)
            gc.collect()
        assert rec.released == ["old"]
        assert eng.resident_versions == ["new"]
    finally:
        eng.stop()


def test_a_failing_forward_fails_its_requests_and_the_engine_goes_on(engine, served_a):
    eng, _ = engine
    real = served_a.batch.prefill

    def broken(rows):
        served_a.batch.prefill = real
        raise RuntimeError("boom")

    served_a.batch.prefill = broken
    with pytest.raises(RuntimeError, match="boom"):
        run_alone(eng, "Why", SamplingParams(max_tokens=3))
    assert eng.running_rows == 0
    assert (
        run_alone(eng, "Why", SamplingParams(max_tokens=3, ignore_eos=True)).completion_tokens == 3
    )


def test_requests_arriving_together_share_one_prefill(tiny_a):
    eng = Engine(max_batch=8, admit_window=0.5)
    eng.install(load_candidate(str(tiny_a), "a", device="cpu"))
    eng.start()
    try:
        params = SamplingParams(max_tokens=4, temperature=0.0)
        reqs = []
        for prompt in PROMPTS[:3]:  # a burst spread over ~0.1 s, starting from idle
            reqs.append(eng.submit(prompt, params))
            time.sleep(0.05)
        wait([r.future for r in reqs], timeout=30)
        assert eng.prefills == 1
    finally:
        eng.stop()
