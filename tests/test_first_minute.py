"""A fresh install tells jokes: the starter corpus, few-shot prompts for untrained versions, and
a first retrain that really trains (or says plainly that the corpus is too small)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from transformers import AutoTokenizer

import model.engine as engine_module
from bot.community.importer import import_jokes
from bot.community.starter import seed_starter_corpus, starter_jokes
from bot.runners.joke_teller import ExamplePool
from bot.store.database import Database
from loopback_discord import ADMINISTRATOR, DEFAULT_MEMBER_PERMISSIONS
from model.contracts.jokes import check_joke, reads_as_joke
from model.engine import Engine, SamplingParams
from model.hot_swap import load_candidate
from model.loading import read_layout
from model.textformat import (
    FEW_SHOT,
    PLAIN,
    few_shot_text,
    generation_prompt_ids,
    prompt_ids,
    prompt_layout,
)
from model.train import TrainJob, run_job
from tests.helpers import ROOT, jokebot_app, make_settings, process_env
from tests.runner_helpers import runner_client

ADMIN = DEFAULT_MEMBER_PERMISSIONS | ADMINISTRATOR
EXAMPLES = ["I used to hate facial hair, but then it grew on me.", "I'm on a seafood diet."]


def distinct_starter_count() -> int:
    return len({check.key for check in map(check_joke, starter_jokes()) if check.ok})


async def test_first_start_imports_the_starter_corpus_once(standin, tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model, starter_corpus=True)
    expected = distinct_starter_count()
    assert expected > 250  # pyjokes ships 283 English one-liners
    async with jokebot_app(standin, settings) as app:
        assert await app.db.corpus_by_source() == {"starter": expected}
        assert await app.services.training.new_jokes_since_last_training() == 0
        status = await (await standin.invoke("status")).wait_for_reply(timeout=20)
        assert f"Corpus: {expected} jokes ({expected} starter), 0 new" in status.content
        models = await (await standin.invoke("models", permissions=ADMIN)).wait_for_reply()
        assert f"{expected} starter" in models.content
        await (await standin.invoke("addjoke", {"text": EXAMPLES[1]})).wait_for_reply()
        assert await app.services.training.new_jokes_since_last_training() == 1
    async with jokebot_app(standin, settings) as app:  # a restart imports nothing again
        assert await app.db.corpus_by_source() == {"starter": expected, "user": 1}


async def test_starter_corpus_setting_off(standin, tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model, starter_corpus=False)
    async with jokebot_app(standin, settings) as app:
        assert await app.db.joke_count() == 0


async def test_starter_corpus_waits_for_an_empty_corpus(tmp_path, tiny_model):
    """A host who imported their own jokes before the first start gets no starter jokes."""
    settings = make_settings(tmp_path / "data", tiny_model, starter_corpus=True)
    db = await Database.open(settings.database_path)
    await import_jokes(db, EXAMPLES)
    assert await seed_starter_corpus(db, settings) is None
    assert await db.corpus_by_source() == {"import": 2}
    await db.close()


def test_prompt_layouts(tiny_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    few = generation_prompt_ids(tok, "A horse", EXAMPLES, FEW_SHOT)
    assert few == prompt_ids(tok, EXAMPLES[0] + "\n" + EXAMPLES[1] + "\nA horse")
    assert few_shot_text(EXAMPLES) == EXAMPLES[0] + "\n" + EXAMPLES[1] + "\n"
    assert generation_prompt_ids(tok, "A horse", EXAMPLES, PLAIN) == prompt_ids(tok, "A horse")
    assert generation_prompt_ids(tok, "A horse", (), FEW_SHOT) == prompt_ids(tok, "A horse")
    assert prompt_layout(None) == FEW_SHOT  # a base model never saw our joke layout
    assert prompt_layout({"token_layout": "start+joke+eos"}) == PLAIN  # trained before the field
    assert prompt_layout({"prompt_layout": "few-shot", "token_layout": "x"}) == FEW_SHOT
    assert read_layout(tiny_model) == FEW_SHOT
    plain = tmp_path / "v1"
    plain.mkdir()
    (plain / "manifest.json").write_text(json.dumps({"prompt_layout": "plain"}))
    assert read_layout(plain) == PLAIN


def plain_copy(model, folder):
    """A copy of `model` whose manifest says it was fine-tuned (the trainer's own field)."""
    shutil.copytree(model, folder)
    (folder / "manifest.json").write_text(json.dumps({"prompt_layout": "plain"}))
    return folder


async def test_runner_uses_examples_only_for_untrained_versions(tiny_model, tmp_path):
    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    body = {"prompt": "A horse", "max_tokens": 4, "seed": 1, "examples": EXAMPLES}
    expected = len(generation_prompt_ids(tok, "A horse", EXAMPLES, FEW_SHOT))
    async with runner_client(tiny_model) as client:
        answer = await (await client.post("/v1/completions", json=body)).json()
        assert answer["usage"]["prompt_tokens"] == expected
        bad = await client.post("/v1/completions", json={**body, "examples": "one joke"})
        assert bad.status == 400 and "examples" in (await bad.json())["error"]["message"]
        bad = await client.post("/v1/completions", json={**body, "examples": ["x"] * 9})
        assert bad.status == 400
    async with runner_client(plain_copy(tiny_model, tmp_path / "v1")) as client:
        answer = await (await client.post("/v1/completions", json=body)).json()
        assert answer["usage"]["prompt_tokens"] == len(prompt_ids(tok, "A horse"))


def test_few_shot_rows_stop_at_the_end_of_the_line(tiny_model, monkeypatch):
    """A few-shot row stops where the layout's line ends; a plain row does not."""
    served = load_candidate(str(tiny_model), "v0", device="cpu")
    assert served.prompt_layout == FEW_SHOT
    engine = Engine(max_batch=4, max_queue=8)
    engine.install(served)
    engine.start()
    try:
        greedy = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)
        shots = SamplingParams(**{**greedy.__dict__, "examples": ("Ha.",)})

        def text_of(params):
            return engine.submit("Knock knock", params).future.result(timeout=30).choices[0]

        monkeypatch.setattr(engine_module, "layout_stops", lambda layout: ())
        full_few, full_plain = text_of(shots).text, text_of(greedy).text
        word = full_few.split()[len(full_few.split()) // 2]  # stands in for a real newline
        monkeypatch.setattr(engine_module, "layout_stops", lambda layout: (word,))
        few, plain_text = text_of(shots), text_of(greedy)
    finally:
        engine.stop()
    assert few.finish_reason == "stop" and few.text == full_few[: full_few.find(word)]
    assert plain_text.text == full_plain and plain_text.finish_reason == "length"


async def test_example_pool_draws_short_corpus_jokes(tmp_path):
    db = await Database.open(tmp_path / "db.sqlite3")
    assert await ExamplePool(db, 3).pick() == []  # an empty corpus: no examples
    long_joke = "A very long joke " + "that goes on " * 12 + "and on."
    await import_jokes(db, [*EXAMPLES, "Why did the chicken cross the road?", long_joke])
    pool = ExamplePool(db, 3)
    picked = await pool.pick()
    assert len(picked) == 3 and len(set(picked)) == 3 and long_joke not in picked
    assert await ExamplePool(db, 0).pick() == []
    await db.close()


def test_reads_as_joke():
    assert reads_as_joke("I used to hate facial hair, but then it grew on me.")
    assert reads_as_joke('"Knock knock." "Who is there?" "Nobody."')
    for text in (
        "-_mean(a, b, c).",
        "USB talking point:",
        "def f(x): return x",
        "Too short.",
        "lowercase start is not a sentence.",
        "A\nB\nC three lines of text here.",
        "$$x^2 + y^2 = z^2$$ is a proof.",
    ):
        assert not reads_as_joke(text), text


async def test_retrain_refuses_a_corpus_too_small_to_learn_from(standin, tmp_path, tiny_model):
    settings = make_settings(tmp_path / "data", tiny_model, train_min_jokes=30)
    async with jokebot_app(standin, settings) as app:
        await import_jokes(app.db, EXAMPLES)
        reply = await (await standin.invoke("retrain", permissions=ADMIN)).wait_for_reply()
        assert reply.ephemeral
        assert "Not enough jokes to learn from: the corpus has 2 approved jokes" in reply.content
        assert "at least 30" in reply.content
        assert await app.db.last_finished_run() is None  # no run was started
    env = process_env(tmp_path / "data", tiny_model, TRAIN_MIN_JOKES="30")
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "train"], env=env, cwd=ROOT, capture_output=True,
        text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1
    assert "Not enough jokes to learn from: the corpus has 2 approved jokes" in done.stdout


@pytest.mark.parametrize("min_steps", [12])
def test_a_small_corpus_gets_enough_steps_to_change_the_weights(tmp_path, tiny_model, min_steps):
    from safetensors.torch import load_file

    snapshot = tmp_path / "snapshot.jsonl"
    with snapshot.open("w", encoding="utf-8") as out:
        for number, text in enumerate([*EXAMPLES, "Why did the chicken cross the road?"], 1):
            check = check_joke(text)
            out.write(json.dumps({"id": number, "text": check.text, "key": check.key}) + "\n")
    job = TrainJob.from_dict(
        {
            "snapshot": str(snapshot), "base": str(tiny_model), "output": str(tmp_path / "v1"),
            "device": "cpu", "epochs": 1, "batch_size": 16, "min_steps": min_steps,
            "eval_samples": 2, "sample_max_tokens": 8, "max_minutes": 5,
            "early_stopping_patience": 100,
        }
    )  # fmt: skip

    class Events:
        def emit(self, event, **fields):
            pass

    done = run_job(job, Events())
    manifest = json.loads((tmp_path / "v1" / "manifest.json").read_text())
    assert manifest["training"]["steps"] == min_steps  # one epoch would have been one step
    assert manifest["prompt_layout"] == PLAIN
    before = load_file(tiny_model / "model.safetensors")
    after = load_file(tmp_path / "v1" / "model.safetensors")
    changed = [name for name in before if name in after and not before[name].equal(after[name])]
    assert len(changed) > len(before) // 2, changed
    assert done["metrics"]["serving"]["layout"] == FEW_SHOT  # the base was measured as served
    assert done["metrics"]["candidate"]["layout"] == PLAIN
