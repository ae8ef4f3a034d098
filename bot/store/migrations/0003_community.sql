-- The community loop: generated jokes shown in Discord, votes and reports, moderation reviews.
-- New tables only: `jokes` keeps its schema (0002 widens its `source` to 'community').
-- No foreign key points at `jokes` (the code cleans up on delete), so a later rebuild of
-- `jokes` cannot cascade into these tables.

-- Every generated joke that was shown, with where and by which model version.
CREATE TABLE generated_jokes (
    id              INTEGER PRIMARY KEY,
    text            TEXT    NOT NULL,
    norm_key        TEXT    NOT NULL,
    prompt          TEXT    NOT NULL DEFAULT '',
    model_version   INTEGER,
    guild_id        INTEGER,
    channel_id      INTEGER,
    message_id      INTEGER,
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- the corpus joke (source 'community') it became once voted up, NULL otherwise
    corpus_joke_id  INTEGER,
    -- 1 once an admin deleted its corpus copy: it never joins the corpus again
    blocked         INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1))
);
CREATE INDEX generated_jokes_version ON generated_jokes (model_version);
CREATE INDEX generated_jokes_corpus ON generated_jokes (corpus_joke_id);

-- One vote per member per generated joke.
CREATE TABLE votes (
    generated_id  INTEGER NOT NULL REFERENCES generated_jokes (id) ON DELETE CASCADE,
    user_id       INTEGER NOT NULL,
    value         INTEGER NOT NULL CHECK (value IN (-1, 1)),
    voted_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (generated_id, user_id)
);
CREATE INDEX votes_user ON votes (user_id);

-- A report is on a generated joke (the 🚩 button) or on a stored joke (/report id).
CREATE TABLE reports (
    id            INTEGER PRIMARY KEY,
    user_id       INTEGER NOT NULL,
    joke_id       INTEGER,
    generated_id  INTEGER REFERENCES generated_jokes (id) ON DELETE CASCADE,
    reported_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    CHECK ((joke_id IS NULL) <> (generated_id IS NULL))
);
CREATE UNIQUE INDEX reports_joke_once ON reports (joke_id, user_id) WHERE joke_id IS NOT NULL;
CREATE UNIQUE INDEX reports_generated_once ON reports (generated_id, user_id)
    WHERE generated_id IS NOT NULL;
CREATE INDEX reports_user ON reports (user_id);

-- Moderators' decisions on pending jokes; reports up to `reports_seen` were looked at.
CREATE TABLE reviews (
    id            INTEGER PRIMARY KEY,
    joke_id       INTEGER NOT NULL,
    reviewer_id   INTEGER,
    decision      TEXT    NOT NULL CHECK (decision IN ('approved', 'rejected')),
    reports_seen  INTEGER NOT NULL DEFAULT 0,
    reviewed_at   TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX reviews_joke ON reviews (joke_id, id);
