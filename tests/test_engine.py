"""The generation engine without HTTP: continuous batching must not change what a request gets."""

from __future__ import annotations

import gc
import time
import weakref
from concurrent.futures import wait

import pytest
import torch

from model.batch import RunningBatch
from model.engine import Engine, EngineMetrics, QueueFull, RequestError, SamplingParams
from model.hot_swap import load_candidate
from model.sampling import RowSampling, choose_tokens, make_generator, nucleus_threshold
from model.textformat import prompt_ids

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
    """Submit every job before the worker can pick any up, so that they share a batch."""
    with engine._cv:  # hold the worker back until all are queued
        reqs = [engine.submit(p, params) for p, params in jobs]
    wait([r.future for r in reqs], timeout=30)
    return [r.future.result() for r in reqs]


def texts(result):
    return [(c.text, c.finish_reason) for c in result.choices]


def test_greedy_in_a_batch_equals_alone(engine):
    eng, rec = engine
    jobs = [
        (p, SamplingParams(max_tokens=3 + 9 * i, temperature=0.0, ignore_eos=True))
        for i, p in enumerate(PROMPTS)
    ]
    alone = [texts(run_alone(eng, p, params)) for p, params in jobs]
    rec.batches.clear()
    together = [texts(r) for r in run_together(eng, jobs)]
    assert together == alone
    assert max(rec.batches) == len(PROMPTS)  # they really shared forward passes
    assert rec.batches[-1] == 1  # and rows left one by one as their budgets ran out


def test_seeded_sampling_reproducible_alone_and_in_a_batch(engine):
    eng, _ = engine
    jobs = [
        (p, SamplingParams(max_tokens=12, temperature=t, top_p=tp, seed=s, ignore_eos=True))
        for p, t, tp, s in zip(PROMPTS, (0.7, 1.0, 1.3, 0.9, 2.0), (0.9, 1.0, 0.5, 0.95, 0.3),
                               (1, 2, 3, 4, 5), strict=True)
    ]  # fmt: skip
    first = [texts(run_alone(eng, p, params)) for p, params in jobs]
    second = [texts(run_alone(eng, p, params)) for p, params in jobs]
    assert first == second
    assert [texts(r) for r in run_together(eng, jobs)] == first
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
    tok = served_a.tokenizer
    ids_a = run_alone(eng, PROMPTS[0], greedy).choices[0].token_ids
    cut = next(i for i, t in enumerate(ids_a) if t != ids_a[0])  # first new token in A's output
    fake_eos = ids_a[cut]
    long_prompt = next(
        p for p in PROMPTS[1:] if fake_eos not in run_alone(eng, p, greedy).choices[0].token_ids
    )
    long_alone = texts(run_alone(eng, long_prompt, greedy))
    real_eos = served_a.eos_token_id
    served_a.eos_token_id = fake_eos  # make the tiny random model "end its joke" mid-way
    try:
        a, b = run_together(eng, [(PROMPTS[0], greedy), (long_prompt, greedy)])
    finally:
        served_a.eos_token_id = real_eos
    assert a.choices[0].finish_reason == "stop"
    assert a.choices[0].text == tok.decode(ids_a[:cut])  # eos itself is not in the text
    assert a.completion_tokens == cut
    assert texts(b) == long_alone
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


def test_join_and_leave_mid_batch_keeps_rows_exact(tiny_a):
    """Rows that join a running batch (longer/shorter cache) and rows leaving it stay exact."""
    served = load_candidate(str(tiny_a), "a", device="cpu")
    tok, model = served.tokenizer, served.loaded.model

    class R:
        def __init__(self, prompt):
            self.prompt_ids = prompt_ids(tok, prompt)
            self.last_token, self.length, self.out = self.prompt_ids[-1], len(self.prompt_ids), []

    def feed(rows, logits):
        for r, t in zip(rows, logits.argmax(-1).tolist(), strict=True):
            r.out.append(t)
            r.last_token, r.length = t, r.length + 1

    def alone(prompt, steps):
        b, r = RunningBatch(model, tok.pad_token_id), R(prompt)
        with torch.inference_mode():
            feed([r], b.prefill([r]))
            for _ in range(steps - 1):
                feed([r], b.decode())
        return r.out

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
    assert first[0].out == alone(PROMPTS[1], 11)
    assert first[1].out == alone(PROMPTS[0], 11)
    assert late[0].out == alone(PROMPTS[2], 4)
    assert late[1].out == alone(PROMPTS[3], 8)


def test_sampling_respects_top_p_and_temperature():
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]] * 3))
    rows = [
        RowSampling(0.0, 1.0, None),
        RowSampling(1.0, 0.5, make_generator(0)),  # nucleus = the top token alone
        RowSampling(1.0, 0.75, make_generator(0)),  # nucleus = the top two tokens
    ]
    seen = [set(), set(), set()]
    for _ in range(200):
        for i, tok in enumerate(choose_tokens(logits, rows)):
            seen[i].add(tok)
    assert seen == [{0}, {0}, {0, 1}]
    # a wide distribution: top-k misses top_p, the wider search must find the nucleus (2191 tokens)
    wide = -torch.arange(5000, dtype=torch.float32)[None, :] * 1e-4
    row = [RowSampling(1.0, 0.5, make_generator(1))]
    picks = {choose_tokens(wide, row)[0] for _ in range(400)}
    assert len(picks) > 200 and max(picks) <= 2191


@pytest.mark.parametrize("spread", [0.01, 1.0, 4.0, 12.0])
def test_nucleus_is_the_smallest_top_set_reaching_top_p(spread):
    torch.manual_seed(int(spread * 100))
    logp = torch.log_softmax(torch.randn(4, 50257) * spread, dim=-1)
    top_p = torch.tensor([0.3, 0.9, 0.95, 0.999])
    threshold = nucleus_threshold(logp.exp(), logp, top_p)
    for row in range(4):
        probs = logp[row].exp().double()
        kept = probs[probs >= threshold[row]]
        assert (probs[probs < threshold[row]] <= kept.min()).all()  # a top set
        assert kept.sum() >= top_p[row] - 1e-5  # reaches top_p
        assert kept.sum() - kept.min() < top_p[row] + 1e-5  # and is the smallest that does
    assert (nucleus_threshold(logp.exp(), logp, torch.ones(4)) == 0).all()


def test_queue_bound_and_cancel(tiny_a):
    eng = Engine(max_batch=1, max_queue=2)
    eng.install(
        load_candidate(str(tiny_a), "a", device="cpu")
    )  # worker not started: requests stay queued
    long = SamplingParams(max_tokens=500, temperature=0.0, ignore_eos=True)
    first = eng.submit("a", long)
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
