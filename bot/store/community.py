"""Storage of the community loop: shown jokes, votes, reports, reviews, deletion (SQLite or
PostgreSQL, through `Database`).

Shares the bot's one `Database` connection, taking turns on it like every other store (never
the raw connection); every method commits before it returns, so a vote or a deletion
acknowledged in Discord is on disk. What reads and then writes is one transaction.
Tables: `migrations/0003_*.sql`.

A generated joke joins the corpus (a `jokes` row with source 'community') while its net score
is at least `promote_at` and nobody reported it; it leaves again when that stops being true.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.store.database import Database
from model.contracts.jokes import JokeStatus, fold_whitespace
from model.contracts.preferences import VotedJoke
from model.contracts.votes import CommunityScore, VoteCounts

VoteChange = Literal["added", "changed", "withdrawn"]
# votes up and down among the rows counted (portable: no sum over a comparison)
_UPS = "sum(CASE WHEN value = 1 THEN 1 ELSE 0 END)"
# What every write of the community's tables serializes on (PostgreSQL; SQLite's writers take
# turns already): a vote, a report, a review, a deletion and /forgetme touch rows of several
# tables (votes, reports, generated jokes, the corpus) in different orders, and one lock for
# all of them is what keeps two of them from deadlocking, across processes.
COMMUNITY_WRITES = "community-writes"
_DOWNS = "sum(CASE WHEN value = -1 THEN 1 ELSE 0 END)"


@dataclass(frozen=True)
class GeneratedJoke:
    id: int
    text: str
    prompt: str
    model_version: int | None
    message_id: int | None
    corpus_joke_id: int | None


@dataclass(frozen=True)
class StoredJoke:
    """A row of the corpus table (`jokes`), whatever its status."""

    id: int
    text: str
    author_id: int | None
    source: str
    status: str


@dataclass(frozen=True)
class VoteOutcome:
    counts: VoteCounts
    vote: int  # the member's vote now: 1, -1, or 0 (withdrawn)
    change: VoteChange


@dataclass(frozen=True)
class ReportOutcome:
    new: bool  # False: this member had already reported it
    hidden: bool  # the report took the joke out of the corpus (now pending review)


@dataclass(frozen=True)
class ForgetOutcome:
    jokes: int
    votes: int
    reports: int


class CommunityStore:
    """Community data on top of the bot's database connection."""

    def __init__(
        self,
        db: Database,
        *,
        promote_at: int = 3,
        reports_to_hide: int = 3,
        community_status: JokeStatus = JokeStatus.APPROVED,
    ) -> None:
        self.db = db
        self.promote_at = promote_at
        self.reports_to_hide = reports_to_hide
        # the status a voted-up joke enters the corpus with: `moderation.initial_status`'s
        # verdict for source 'community' under the host's MODERATION (the store knows no rules)
        self.community_status = community_status

    async def _one(self, query: str, params: tuple = ()) -> tuple | None:
        row = await self.db.fetchone(query, params)
        return None if row is None else tuple(row)

    async def _scalar(self, query: str, params: tuple = ()) -> int:
        row = await self._one(query, params)
        return 0 if row is None or row[0] is None else row[0]

    # ---- generated jokes and votes ----------------------------------------------------------

    async def record_shown(
        self,
        text: str,
        key: str,
        *,
        prompt: str,
        model_version: int | None,
        guild_id: int | None,
        channel_id: int | None,
        completion: str | None = None,
        requested_by: int | None = None,
    ) -> int:
        """Store a generated joke about to be shown; its id goes into the buttons' custom ids.

        `completion` is what the model wrote after `prompt` (votes train on exactly that),
        `requested_by` the member who asked (their jokes leave training on /forgetme)."""
        return await self.db.insert(
            "INSERT INTO generated_jokes (text, norm_key, prompt, model_version, guild_id,"
            " channel_id, completion, requested_by) VALUES (?,?,?,?,?,?,?,?)",
            (text, key, prompt, model_version, guild_id, channel_id, completion, requested_by),
        )

    async def set_message(self, generated_id: int, message_id: int) -> None:
        await self.db.execute(
            "UPDATE generated_jokes SET message_id = ? WHERE id = ?", (message_id, generated_id)
        )

    async def generated(self, generated_id: int) -> GeneratedJoke | None:
        row = await self._one(
            "SELECT id, text, prompt, model_version, message_id, corpus_joke_id"
            " FROM generated_jokes WHERE id = ?",
            (generated_id,),
        )
        return None if row is None else GeneratedJoke(*row)

    async def counts(self, generated_id: int) -> VoteCounts:
        row = await self._one(
            f"SELECT coalesce({_UPS}, 0), coalesce({_DOWNS}, 0) FROM votes WHERE generated_id = ?",
            (generated_id,),
        )
        return VoteCounts(up=row[0], down=row[1]) if row else VoteCounts()

    async def vote(self, generated_id: int, user_id: int, value: int) -> VoteOutcome:
        """Cast `value` (1 or -1); the same vote again withdraws it, the other one changes it."""
        if value not in (1, -1):
            raise ValueError("a vote is 1 or -1")
        async with self.db.transaction():
            await self.db.serialize(COMMUNITY_WRITES)  # PostgreSQL: one at a time
            row = await self._one(
                "SELECT value FROM votes WHERE generated_id = ? AND user_id = ?",
                (generated_id, user_id),
            )
            if row is not None and row[0] == value:
                await self.db.execute(
                    "DELETE FROM votes WHERE generated_id = ? AND user_id = ?",
                    (generated_id, user_id),
                )
                change: VoteChange = "withdrawn"
                now = 0
            else:
                await self.db.execute(
                    "INSERT INTO votes (generated_id, user_id, value) VALUES (?,?,?)"
                    " ON CONFLICT (generated_id, user_id) DO UPDATE SET value = excluded.value,"
                    " voted_at = excluded.voted_at",
                    (generated_id, user_id, value),
                )
                change = "added" if row is None else "changed"
                now = value
            counts = await self._sync_corpus(generated_id)  # exactly the state this vote left
        return VoteOutcome(counts=counts, vote=now, change=change)

    async def _sync_corpus(self, generated_id: int) -> VoteCounts:
        """Put a generated joke into the corpus, or take it out, after its votes changed; its
        counts now. One query reads what decides it (every query in a transaction waits a turn
        of the event loop, and transactions take turns)."""
        row = await self._one(
            "SELECT text, norm_key, guild_id, corpus_joke_id, blocked,"
            f" (SELECT coalesce({_UPS}, 0) FROM votes WHERE generated_id = g.id),"
            f" (SELECT coalesce({_DOWNS}, 0) FROM votes WHERE generated_id = g.id),"
            " (SELECT count(*) FROM reports WHERE generated_id = g.id)"
            " FROM generated_jokes g WHERE id = ?",
            (generated_id,),
        )
        if row is None:
            return VoteCounts()
        text, key, guild_id, corpus_id, blocked, up, down, reports = row
        counts = VoteCounts(up=up, down=down)
        eligible = not blocked and reports == 0 and counts.net >= self.promote_at
        if eligible and corpus_id is None:
            result = await self.db.add_joke(
                text, key, source="community", guild_id=guild_id, status=self.community_status
            )
            if result.created:  # a joke already in the corpus stays as it is
                await self.db.execute(
                    "UPDATE generated_jokes SET corpus_joke_id = ? WHERE id = ?",
                    (result.id, generated_id),
                )
        elif not eligible and corpus_id is not None:
            await self._delete_joke_rows(corpus_id)
            await self.db.execute(
                "UPDATE generated_jokes SET corpus_joke_id = NULL WHERE id = ?", (generated_id,)
            )
        return counts

    async def version_scores(self) -> dict[int, CommunityScore]:
        """Community score per model version (only versions whose jokes got votes)."""
        rows = await self.db.fetchall(
            f"SELECT g.model_version, {_UPS}, {_DOWNS} FROM votes v"
            " JOIN generated_jokes g ON g.id = v.generated_id"
            " WHERE g.model_version IS NOT NULL GROUP BY g.model_version"
        )
        return {row[0]: CommunityScore(up=row[1], down=row[2]) for row in rows}

    # ---- reports ----------------------------------------------------------------------------

    async def report_generated(self, generated_id: int, user_id: int) -> ReportOutcome:
        """🚩 on a shown joke: it never joins the corpus (and leaves it if it had)."""
        async with self.db.transaction():
            await self.db.serialize(COMMUNITY_WRITES)
            written = await self.db.execute(
                "INSERT INTO reports (user_id, generated_id) VALUES (?, ?) ON CONFLICT DO NOTHING",
                (user_id, generated_id),
            )
            had_corpus = (await self.generated(generated_id) or _NO_JOKE).corpus_joke_id
            await self._sync_corpus(generated_id)
        return ReportOutcome(new=written.rowcount == 1, hidden=had_corpus is not None)

    async def report_joke(self, joke_id: int, user_id: int) -> ReportOutcome:
        """/report id: with `reports_to_hide` reports since the last review it goes pending.

        A joke deleted meanwhile gets no report (`new` is False): no report outlives its joke."""
        async with self.db.transaction():
            await self.db.serialize(COMMUNITY_WRITES)
            written = await self.db.execute(
                "INSERT INTO reports (user_id, joke_id)"
                " SELECT CAST(? AS BIGINT), id FROM jokes WHERE id = ?"
                " ON CONFLICT DO NOTHING",
                (user_id, joke_id),
            )
            seen = await self._scalar(
                "SELECT reports_seen FROM reviews WHERE joke_id = ? ORDER BY id DESC LIMIT 1",
                (joke_id,),
            )
            since = await self._scalar(
                "SELECT count(*) FROM reports WHERE joke_id = ? AND id > ?", (joke_id, seen)
            )
            hidden = False
            if since >= self.reports_to_hide:  # a moderator looks again
                update = await self.db.execute(
                    "UPDATE jokes SET status = ? WHERE id = ? AND status = ?",
                    (JokeStatus.PENDING, joke_id, JokeStatus.APPROVED),
                )
                hidden = update.rowcount == 1
        return ReportOutcome(new=written.rowcount == 1, hidden=hidden)

    # ---- stored jokes: lookup, moderation, deletion -----------------------------------------

    async def joke(self, joke_id: int) -> StoredJoke | None:
        row = await self._one(
            "SELECT id, text, author_id, source, status FROM jokes WHERE id = ?", (joke_id,)
        )
        return None if row is None else StoredJoke(*row)

    async def approved_count_by(self, author_id: int) -> int:
        return await self._scalar(
            "SELECT count(*) FROM jokes WHERE author_id = ? AND status = ?",
            (author_id, JokeStatus.APPROVED),
        )

    async def oldest_pending(self) -> tuple[StoredJoke | None, int]:
        """The joke /review shows next, and how many are pending in all."""
        row = await self._one(
            "SELECT id, text, author_id, source, status FROM jokes WHERE status = ?"
            " ORDER BY id LIMIT 1",
            (JokeStatus.PENDING,),
        )
        total = await self._scalar(
            "SELECT count(*) FROM jokes WHERE status = ?", (JokeStatus.PENDING,)
        )
        return (None if row is None else StoredJoke(*row)), total

    async def review(self, joke_id: int, reviewer_id: int, decision: JokeStatus) -> bool:
        """Approve or reject a pending joke; False when it is no longer pending (or gone)."""
        if decision not in (JokeStatus.APPROVED, JokeStatus.REJECTED):
            raise ValueError("decision is 'approved' or 'rejected'")
        async with self.db.transaction():
            await self.db.serialize(COMMUNITY_WRITES)
            update = await self.db.execute(
                "UPDATE jokes SET status = ? WHERE id = ? AND status = ?",
                (decision, joke_id, JokeStatus.PENDING),
            )
            if update.rowcount != 1:
                return False
            seen = await self._scalar("SELECT max(id) FROM reports WHERE joke_id = ?", (joke_id,))
            await self.db.execute(
                "INSERT INTO reviews (joke_id, reviewer_id, decision, reports_seen)"
                " VALUES (?,?,?,?)",
                (joke_id, reviewer_id, decision, seen),
            )
        return True

    async def _delete_joke_rows(self, joke_id: int) -> None:
        """Delete a corpus joke and what refers to it (no foreign keys point at `jokes`)."""
        await self.db.execute("DELETE FROM reports WHERE joke_id = ?", (joke_id,))
        await self.db.execute("DELETE FROM reviews WHERE joke_id = ?", (joke_id,))
        await self.db.execute("DELETE FROM jokes WHERE id = ?", (joke_id,))

    async def delete_joke(self, joke_id: int, *, author_id: int | None = None) -> bool:
        """Delete a stored joke for good (its text may be stored again); False if unknown, or
        not `author_id`'s when given (checked in the same transaction: an id freed by a
        deletion can be given to the next joke added).

        A community joke's generated original is blocked so that later votes do not bring it
        back.
        """
        async with self.db.transaction():
            await self.db.serialize(COMMUNITY_WRITES)
            joke = await self.joke(joke_id)
            if joke is None or (author_id is not None and joke.author_id != author_id):
                return False
            await self.db.execute(
                "UPDATE generated_jokes SET corpus_joke_id = NULL, blocked = TRUE"
                " WHERE corpus_joke_id = ?",
                (joke_id,),
            )
            await self._delete_joke_rows(joke_id)
        return True

    async def member_data(self, user_id: int) -> ForgetOutcome:
        """What /forgetme would erase."""
        return ForgetOutcome(
            jokes=await self._scalar("SELECT count(*) FROM jokes WHERE author_id = ?", (user_id,)),
            votes=await self._scalar("SELECT count(*) FROM votes WHERE user_id = ?", (user_id,)),
            reports=await self._scalar(
                "SELECT count(*) FROM reports WHERE user_id = ?", (user_id,)
            ),
        )

    async def forget_member(self, user_id: int) -> ForgetOutcome:
        """Erase every joke, vote and report of a member, in one transaction.

        The jokes' rows are deleted (so someone else may store the same text again); the
        generated jokes they asked for are blocked (they never train, nor join the corpus);
        those and the ones they voted on are re-checked against the corpus rules.
        """
        async with self.db.transaction():
            await self.db.serialize(COMMUNITY_WRITES)
            touched = [
                row[0]
                for row in await self.db.fetchall(
                    "SELECT generated_id FROM votes WHERE user_id = ?"
                    " UNION SELECT generated_id FROM reports WHERE user_id = ?"
                    " AND generated_id IS NOT NULL"
                    " UNION SELECT id FROM generated_jokes WHERE requested_by = ?",
                    (user_id, user_id, user_id),
                )
            ]
            own = [
                row[0]
                for row in await self.db.fetchall(
                    "SELECT id FROM jokes WHERE author_id = ?", (user_id,)
                )
            ]
            # the jokes they asked for (their prompts) never train again (and leave the corpus
            # below), and who asked is forgotten
            await self.db.execute(
                "UPDATE generated_jokes SET blocked = TRUE, requested_by = NULL"
                " WHERE requested_by = ?",
                (user_id,),
            )
            votes = await self.db.execute("DELETE FROM votes WHERE user_id = ?", (user_id,))
            reports = await self.db.execute("DELETE FROM reports WHERE user_id = ?", (user_id,))
            for joke_id in own:
                await self._delete_joke_rows(joke_id)
            for generated_id in dict.fromkeys(touched):
                await self._sync_corpus(generated_id)
        return ForgetOutcome(jokes=len(own), votes=votes.rowcount, reports=reports.rowcount)

    # ---- votes as training data (the preference phase) --------------------------------------

    async def voted_jokes(self) -> tuple[list[VotedJoke], str]:
        """Every shown joke that may train and has votes or a report, and the newest vote's
        `voted_at` among them ('' when none). Blocked jokes (deleted from the corpus, or asked
        for by a member who used /forgetme) are left out; a forgotten member's votes and
        reports are already gone. One statement: one consistent reading."""
        rows = [
            tuple(row)
            for row in await self.db.fetchall(
                "SELECT g.id, g.prompt, g.completion, g.text, g.norm_key,"
                " coalesce(sum(CASE WHEN v.value = 1 THEN 1 ELSE 0 END), 0),"
                " coalesce(sum(CASE WHEN v.value = -1 THEN 1 ELSE 0 END), 0),"
                " EXISTS (SELECT 1 FROM reports r WHERE r.generated_id = g.id), max(v.voted_at)"
                " FROM generated_jokes g LEFT JOIN votes v ON v.generated_id = g.id"
                " WHERE g.blocked = FALSE GROUP BY g.id"
                " HAVING count(v.user_id) > 0"
                " OR EXISTS (SELECT 1 FROM reports r WHERE r.generated_id = g.id)"
                " ORDER BY g.id"
            )
        ]
        jokes = [
            VotedJoke(
                id=row[0],
                prompt=fold_whitespace(row[1] or ""),
                completion=_completion(row[2], row[3], row[1] or ""),
                key=row[4],
                up=row[5],
                down=row[6],
                reported=bool(row[7]),
            )
            for row in rows
        ]
        return jokes, max((row[8] for row in rows if row[8]), default="")

    async def new_votes(self, *, all_votes: bool = False) -> int:
        """Votes cast or changed since the newest learned export (`all_votes`: every vote) on
        jokes that may train: what PREFERENCE_MIN_VOTES is compared with."""
        since = (None if all_votes else await self._learned_until()) or _BEFORE_ANY_VOTE
        return await self._scalar(
            "SELECT count(*) FROM votes v JOIN generated_jokes g ON g.id = v.generated_id"
            " WHERE g.blocked = FALSE AND v.voted_at > ?",
            (since,),
        )

    async def _learned_until(self) -> str:
        row = await self._one(
            "SELECT max(votes_until) FROM vote_exports WHERE learned = TRUE AND votes_until != ''"
        )
        return (row[0] if row else None) or ""

    async def record_vote_export(self, run_id: int, votes_until: str, jokes: int) -> None:
        """Remember what a training run's preference snapshot held."""
        await self.db.execute(
            "INSERT INTO vote_exports (run_id, votes_until, jokes) VALUES (?,?,?)"
            " ON CONFLICT (run_id) DO UPDATE SET votes_until = excluded.votes_until,"
            " jokes = excluded.jokes",
            (run_id, votes_until, jokes),
        )

    async def mark_votes_learned(self, run_id: int) -> None:
        """The run's version learned from its export and serves: its votes are no longer new."""
        await self.db.execute("UPDATE vote_exports SET learned = TRUE WHERE run_id = ?", (run_id,))


_BEFORE_ANY_VOTE = "1970-01-01T00:00:00.000Z"  # a timestamp (PostgreSQL) older than any vote


def _completion(stored: str | None, text: str, prompt: str) -> str:
    """The model's continuation: as stored, or (jokes shown before it was stored) the shown
    text after the prompt, which `/joke` joined as `prompt + " " + completion`."""
    if stored is not None:
        return stored
    prompt = fold_whitespace(prompt)
    if prompt and text.startswith(prompt):
        return text[len(prompt) :]
    return text


_NO_JOKE = GeneratedJoke(0, "", "", None, None, None)
