"""Few-shot prompts for a version never fine-tuned on jokes: in-context examples drawn from the
corpus, used only when the version's manifest asks for them, each row ending with its line."""

from __future__ import annotations

import json
import shutil

from transformers import AutoTokenizer

import model.engine as engine_module
from bot.community.importer import import_jokes
from bot.runners.joke_teller import ExamplePool
from bot.store.database import Database
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
from tests.helpers import SHORT_JOKES as EXAMPLES
from tests.runner_helpers import runner_client


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
