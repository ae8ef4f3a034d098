"""Votes, reports, moderation and deletion through the real discord.py client and buttons."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from bot.discord_app.commands import votes
from loopback_discord import CommandHidden
from tests.helpers import ADMIN, jokebot_app, wait_until

ALICE, BOB, CAROL = 1001, 2002, 3003


async def _joke(standin, prompt: str | None = None):
    options = {"prompt": prompt} if prompt else {}
    return await (await standin.invoke("joke", options)).wait_for_reply(timeout=30)


async def _press(standin, message, button: str, user_id: int = ALICE, answers=True, **kw):
    """Press and wait for the acknowledgement (within 3 s) and, with `answers`, for the
    message the press answers with (a vote's ephemeral note), so nothing is left in flight."""
    press = await standin.press(message, button, user_id=user_id, username=f"u{user_id}", **kw)
    await press.wait_for_ack()
    assert press.ack_latency < 3
    if answers:
        await press.wait_for_reply(timeout=30)
    return press


async def _say(standin, name: str, options=None, user_id: int = ALICE, **kw):
    interaction = await standin.invoke(name, options or {}, user_id=user_id, **kw)
    return await interaction.wait_for_reply(timeout=30)


def _labels(message) -> list[str]:
    return [b["label"] for b in message.buttons]


def _rows(path, query, params=()):
    return sqlite3.connect(path).execute(query, params).fetchall()


@pytest.fixture
def community_settings(shared_settings):
    return shared_settings.model_copy(
        update={"community_min_score": 2, "reports_to_hide": 2, "moderation": "new"}
    )


async def test_joke_answer_has_buttons_and_is_stored(app):
    reply = await _joke(app.standin, "A horse walks into a bar")
    emojis = [b["emoji"]["name"] for b in reply.buttons]
    assert emojis == ["👍", "👎", "🚩", "🔁"]
    assert _labels(reply) == ["Upvote", "Downvote", "Report", "Another one"]
    await wait_until(
        lambda: _rows(app.db.path, "SELECT message_id FROM generated_jokes")[0][0],
        what="stored: the message id, after the post",
    )
    (row,) = _rows(
        app.db.path,
        "SELECT id, text, prompt, model_version, guild_id, channel_id, message_id, created_at"
        " FROM generated_jokes",
    )
    assert row[1:7] == (
        reply.content,
        "A horse walks into a bar",
        0,
        app.standin.guild_id,
        app.standin.channel_id,
        reply.id,
    )
    assert row[7]
    assert all(b["custom_id"].endswith(f":{row[0]}") for b in reply.buttons)


async def test_votes_change_withdraw_and_show_on_the_message(app):
    standin = app.standin
    reply = await _joke(standin)
    press = await _press(standin, reply, "👍")
    assert press.ack_type == 7  # the message itself was edited
    assert _labels(reply)[:2] == ["Upvote · 1", "Downvote"]
    note = await press.wait_for_reply()
    assert note.ephemeral and "You voted 👍" in note.content
    await _press(standin, reply, "👍", user_id=BOB)
    assert _labels(reply)[:2] == ["Upvote · 2", "Downvote"]
    changed = await _press(standin, reply, "👎")
    assert _labels(reply)[:2] == ["Upvote · 1", "Downvote · 1"]
    assert "changed your vote" in (await changed.wait_for_reply()).content
    withdrawn = await _press(standin, reply, "👎")
    assert _labels(reply)[:2] == ["Upvote · 1", "Downvote"]
    assert "withdrawn" in (await withdrawn.wait_for_reply()).content
    assert _rows(app.db.path, "SELECT user_id, value FROM votes") == [(BOB, 1)]


async def test_a_vote_the_store_is_slow_to_commit_is_deferred_then_shown(app, monkeypatch):
    """A burst of presses queues on the store: a press whose vote takes longer than
    ANSWER_WITHIN is deferred (type 6) inside Discord's 3 s, then the counts and the note come
    once the vote is committed."""
    reply = await _joke(app.standin)
    community = app.services.community
    vote = community.vote
    delay = votes.ANSWER_WITHIN + 0.5

    async def slow_vote(*args):
        await asyncio.sleep(delay)
        return await vote(*args)

    monkeypatch.setattr(community, "vote", slow_vote)
    press = await _press(app.standin, reply, "👍")
    assert press.ack_type == 6 and press.ack_latency < 3
    assert _labels(reply)[:2] == ["Upvote · 1", "Downvote"]
    assert "You voted 👍" in (await press.wait_for_reply()).content
    assert _rows(app.db.path, "SELECT user_id, value FROM votes") == [(ALICE, 1)]


async def test_a_press_on_a_message_from_before_a_restart(standin, shared_settings):
    async with jokebot_app(standin, shared_settings):
        reply = await _joke(standin)
    async with jokebot_app(standin, shared_settings):  # a new JokeBot on the same database
        press = await _press(standin, reply, "👍", user_id=BOB)
        assert press.ack_type == 7
        assert _labels(reply)[0] == "Upvote · 1"


async def test_another_one_posts_a_new_joke_with_buttons(app):
    reply = await _joke(app.standin, "Knock knock")
    press = await _press(app.standin, reply, "Another one")
    assert press.ack_type == 5
    second = await press.wait_for_reply(timeout=30)
    assert second.content.startswith("Knock knock") and not second.ephemeral
    assert _labels(second)[0] == "Upvote" and second.id != reply.id
    assert len(_rows(app.db.path, "SELECT id FROM generated_jokes")) == 2


async def test_votes_score_the_version_in_status_and_models(app):
    reply = await _joke(app.standin)
    await _press(app.standin, reply, "👍")
    await _press(app.standin, reply, "👍", user_id=BOB)
    await _press(app.standin, reply, "👎", user_id=CAROL)
    status = await _say(app.standin, "status")
    assert "Community score of v0: 67% upvoted (≥ 21% at 95%), 3 votes" in status.content
    models = await _say(app.standin, "models", permissions=ADMIN)
    assert "community: 67% upvoted" in models.content
    assert models.ephemeral and [a.filename for a in models.attachments] == ["versions.png"]
    assert models.attachments[0].data.startswith(b"\x89PNG\r\n\x1a\n")


async def test_upvoted_joke_joins_the_corpus_reported_one_never(standin, community_settings):
    async with jokebot_app(standin, community_settings) as running:
        good = await _joke(standin)
        await _press(standin, good, "👍")
        await _press(standin, good, "👍", user_id=BOB)
        assert [j.text for j in await running.db.corpus()] == [good.content]
        assert _rows(running.db.path, "SELECT source FROM jokes") == [("community",)]
        bad = await _joke(standin, "Reported")
        report = await _press(standin, bad, "🚩", user_id=CAROL)
        assert (await report.wait_for_reply()).ephemeral
        await _press(standin, bad, "👍")
        await _press(standin, bad, "👍", user_id=BOB)
        assert len(await running.db.corpus()) == 1


async def test_reports_take_a_stored_joke_out_until_reviewed(standin, community_settings):
    async with jokebot_app(standin, community_settings) as running:
        stored = await _say(standin, "addjoke", {"text": "An admin's joke."}, permissions=ADMIN)
        assert stored.content.startswith("Stored as #1.")
        first = await _say(standin, "report", {"id": 1}, user_id=BOB)
        assert first.ephemeral and "reported" in first.content
        assert await running.db.joke_count() == 1
        second = await _say(standin, "report", {"id": 1}, user_id=CAROL)
        assert "out of the training corpus" in second.content
        assert await running.db.joke_count() == 0
        unknown = await _say(standin, "report", {"id": 99})
        assert unknown.ephemeral and "There is no joke #99" in unknown.content
        review = await _say(standin, "review", permissions=ADMIN)
        assert "#1" in review.content and "An admin's joke." in review.content


async def test_moderation_all_then_review_approve_and_reject(standin, shared_settings):
    settings = shared_settings.model_copy(update={"moderation": "all"})
    async with jokebot_app(standin, settings) as running:
        held = await _say(standin, "addjoke", {"text": "The first held joke."})
        assert held.ephemeral and held.content == "Stored as #1, waiting for review."
        await _say(standin, "addjoke", {"text": "The second held joke."}, user_id=BOB)
        assert await running.db.joke_count() == 0
        with pytest.raises(CommandHidden):
            await standin.invoke("review")
        refused = await _say(standin, "review", respect_default_permissions=False)
        assert "only server managers" in refused.content
        page = await _say(standin, "review", permissions=ADMIN)
        assert page.ephemeral
        assert "#1" in page.content and "1 more after this one" in page.content
        assert _labels(page) == ["Approve", "Reject"]
        member_press = await _press(standin, page, "Approve", user_id=BOB)
        assert "only server managers" in (await member_press.wait_for_reply()).content
        approve = await _press(standin, page, "Approve", permissions=ADMIN, answers=False)
        assert approve.ack_type == 7
        assert page.content.startswith("Approved #1.") and "#2" in page.content
        await _press(standin, page, "Reject", permissions=ADMIN, answers=False)
        assert "Rejected #2." in page.content and "Nothing waits for review." in page.content
        assert page.buttons == []
        assert [j.text for j in await running.db.corpus()] == ["The first held joke."]


async def test_moderation_new_holds_a_members_first_jokes(standin, community_settings):
    async with jokebot_app(standin, community_settings) as running:
        held = await _say(standin, "addjoke", {"text": "A newcomer's joke."})
        assert held.content == "Stored as #1, waiting for review."
        admin = await _say(standin, "addjoke", {"text": "An admin's own joke."}, permissions=ADMIN)
        assert admin.content.startswith("Stored as #2. Thanks!")
        assert [j.text for j in await running.db.corpus()] == ["An admin's own joke."]


async def test_deljoke_own_other_and_admin(app):
    standin = app.standin
    await _say(standin, "addjoke", {"text": "Alice's joke about ducks."})
    await _say(standin, "addjoke", {"text": "Bob's joke about geese."}, user_id=BOB)
    refused = await _say(standin, "deljoke", {"id": 2})
    assert refused.ephemeral and "is not yours" in refused.content
    own = await _say(standin, "deljoke", {"id": 1})
    assert own.ephemeral and own.content.startswith("Deleted #1")
    assert "until the next training" in own.content
    by_admin = await _say(standin, "deljoke", {"id": 2}, user_id=CAROL, permissions=ADMIN)
    assert by_admin.content.startswith("Deleted #2")
    assert await app.db.corpus() == []
    gone = await _say(standin, "deljoke", {"id": 1})
    assert "There is no joke #1" in gone.content
    assert int(standin.registered_commands["deljoke"]["options"][0]["type"]) == 4  # integer


async def test_forgetme_erases_and_the_joke_can_be_stored_again(app):
    standin = app.standin
    await _say(standin, "addjoke", {"text": "A joke Alice wants back."})
    reply = await _joke(standin)
    await _press(standin, reply, "👍")
    question = await _say(standin, "forgetme")
    assert question.ephemeral and "1 jokes, 1 votes" in question.content
    someone_else = await _press(standin, question, "Erase my data", user_id=BOB)
    assert "not yours" in (await someone_else.wait_for_reply()).content
    confirm = await _press(standin, question, "Erase my data", answers=False)
    assert confirm.ack_type == 6
    await wait_until(lambda: question.edit_count, what="edited: the question")
    assert question.content.startswith("Done: erased 1 jokes, 1 votes")
    assert "until the next training" in question.content and question.buttons == []
    again = await _say(standin, "addjoke", {"text": "A joke Alice wants back."}, user_id=BOB)
    assert again.content.startswith("Stored as #")
    assert _rows(app.db.path, "SELECT author_id FROM jokes") == [(BOB,)]
    assert _rows(app.db.path, "SELECT count(*) FROM votes") == [(0,)]
    nothing = await _say(standin, "forgetme", user_id=CAROL)
    assert "stores no jokes" in nothing.content
