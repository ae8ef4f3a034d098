"""The community loop end to end (issue #16, "Done when"): a fresh install, its members ask for
jokes and vote through the real 👍/👎 buttons by a rule, an admin runs /retrain in Discord, and
the promoted version's fresh jokes follow the votes.

Everything is real: the discord.py client against the loopback Discord, the SQLite file, the
runner process over HTTP, the trainer process with its corpus and preference phases, the gate
and the hot swap. The model is a tiny GPT-2 with the real GPT-2 tokenizer, pre-trained (by the
trainer) on jokes of one template ("My goat paints the kite."), so that like the embedded model
it already writes jokes, about eight animals, before the install learns anything. The rule the
members vote by: a joke about a duck or a goat (about a quarter of what the base writes).

Measured on fresh samples from the runner, not by exact numbers: the rule's share must at least
double and gain 20 points. Today's mechanism alone (upvoted jokes join the corpus,
`PREFERENCE_TRAINING=off`, which this test reads from the environment) does not get there from
these votes: the host's 160 corpus jokes outweigh the two dozen upvoted ones. Measured on a
2-core box: with the phase 21-26% -> 66-76% (4 runs), without it 26% -> 34-38% (3 runs).
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sqlite3
from pathlib import Path

import pytest

from bot.community.importer import import_jokes
from loopback_discord import LoopbackDiscord
from model.contracts.jokes import normalise_key
from model.event_writer import EventWriter
from model.train import TrainJob, run_job
from tests.helpers import ADMIN, TOKEN, TRAINING_RESULT, App, jokebot_app, make_settings

ANIMALS = ["duck", "goat", "cow", "horse", "sheep", "pig", "dog", "cat"]
VERBS = ["likes", "hates", "eats", "sells", "paints", "hides"]
THINGS = ["hat", "boat", "cake", "song", "lamp", "book", "coat", "drum", "kite", "cup"]
RULE = re.compile(r"\b(duck|goat)s?\b", re.IGNORECASE)  # what the members like

SHOWN = 80  # /joke answers the members vote on
VOTERS = 5  # members voting on each
FOLLOW_RULE = 0.85  # the share of votes that follow the rule; the rest are the other button
IN_FLIGHT = 8  # commands and presses sent at once
FRESH = 128  # samples per version for the rule's share


def template_jokes(seed: int, n: int, things: list[str] = THINGS) -> list[str]:
    combos = [(a, v, t) for a in ANIMALS for v in VERBS for t in things]
    random.Random(seed).shuffle(combos)
    return [f"My {animal} {verb} the {thing}." for animal, verb, thing in combos[:n]]


@pytest.fixture(scope="module")
def taste_base(tmp_path_factory, tiny_model) -> Path:
    """The install's base model: the tiny GPT-2 after 100 steps (by the trainer itself) on 160
    template jokes about half the things. It writes clean template jokes, in the layout every
    trained version serves; the host's corpus names all the things, so a retrain lowers the NLL
    and the gate can promote."""
    work = tmp_path_factory.mktemp("taste-base")
    snapshot = work / "snapshot.jsonl"
    with snapshot.open("w", encoding="utf-8") as out:
        for number, text in enumerate(template_jokes(0, 160, THINGS[:5]), 1):
            out.write(json.dumps({"id": number, "text": text, "key": normalise_key(text)}) + "\n")
    job = TrainJob(
        snapshot=str(snapshot),
        base=str(tiny_model),
        output=str(work / "base"),
        device="cpu",
        epochs=1,
        min_steps=100,
        learning_rate=1e-2,
        batch_size=8,
        eval_steps=1000,
        eval_samples=4,
        sample_max_tokens=16,
    )
    return Path(run_job(job, EventWriter())["output"])


async def rule_share(app: App, n: int = FRESH) -> float:
    """The rule's share among `n` fresh unprompted jokes from the serving runner, sampled as
    /joke samples them."""
    s = app.services.settings
    completions = await in_flight(
        (
            app.services.runner.complete(
                "", max_tokens=s.joke_max_tokens, temperature=s.joke_temperature, top_p=s.joke_top_p
            )
            for _ in range(n)
        ),
        limit=32,  # within the runner's queue
    )
    return sum(bool(RULE.search(c.text)) for c in completions) / n


async def in_flight(calls, limit: int = IN_FLIGHT) -> list:
    gate = asyncio.Semaphore(limit)

    async def one(call):
        async with gate:
            return await call

    return await asyncio.gather(*(one(call) for call in calls))


async def ask_for_joke(standin: LoopbackDiscord, member: int):
    interaction = await standin.invoke("joke", user_id=member, username=f"m{member}")
    return await interaction.wait_for_reply(timeout=60)


async def vote(standin: LoopbackDiscord, message, member: int, button: str) -> None:
    press = await standin.press(message, button, user_id=member, username=f"m{member}")
    await press.wait_for_ack(timeout=30)
    await press.wait_for_reply(timeout=30)  # the ephemeral "You voted": the vote is stored


async def test_members_votes_steer_the_next_version(tmp_path, taste_base):
    settings = make_settings(
        tmp_path / "data",
        taste_base,
        rate_joke_member="off",  # a busy server: the members ask many times a minute
        rate_joke_server="off",
        train_epochs=3,
        train_min_steps=0,
        preference_learning_rate=1e-3,  # a tiny model needs a big step and a strong pull
        preference_beta=2.0,
        promote_max_copy_rate=1.0,  # template jokes: a copy is a joke like any other here
    )
    rng = random.Random(16)
    async with LoopbackDiscord(token=TOKEN) as standin, jokebot_app(standin, settings) as app:
        await import_jokes(app.db, template_jokes(1, 160))  # the host's own jokes
        before = await rule_share(app)

        jokes = await in_flight(ask_for_joke(standin, 500 + n) for n in range(SHOWN))
        ballots = []
        for joke in jokes:
            follows = bool(RULE.search(joke.content))
            for voter in range(VOTERS):
                likes = follows if rng.random() < FOLLOW_RULE else not follows
                ballots.append((joke, 600 + voter, "👍" if likes else "👎"))
        rng.shuffle(ballots)
        await in_flight(vote(standin, joke, member, button) for joke, member, button in ballots)
        with sqlite3.connect(app.db.path) as raw:
            assert raw.execute("SELECT count(*) FROM votes").fetchone() == (SHOWN * VOTERS,)

        retrain = await standin.invoke("retrain", permissions=ADMIN)
        final = await retrain.wait_for_reply(lambda m: TRAINING_RESULT in m.content, timeout=240)
        assert "promoted: **v1** now serves" in final.content, final.content
        assert (await app.services.runner.health())["version"] == "v1"
        after = await rule_share(app)

    shown = sum(bool(RULE.search(joke.content)) for joke in jokes) / SHOWN
    figures = f"rule share: fresh {before:.0%}, shown {shown:.0%}, after /retrain {after:.0%}"
    print(figures)
    assert 0.05 <= before <= 0.45, figures  # the base writes the rule, but not mostly
    assert after >= 2 * before and after >= before + 0.2, figures
    assert "learned from" in final.content  # and /retrain said so
