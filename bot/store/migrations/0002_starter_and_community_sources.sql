-- Jokes may also come from the starter corpus that ships with jokebot ('starter') and from
-- upvoted generated jokes ('community'). SQLite cannot alter a CHECK, so the table is rebuilt
-- with its rows, ids and index intact (nothing references jokes yet).
CREATE TABLE jokes_new (
    id          INTEGER PRIMARY KEY,
    text        TEXT    NOT NULL,
    norm_key    TEXT    NOT NULL UNIQUE,
    author_id   INTEGER,
    guild_id    INTEGER,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    source      TEXT    NOT NULL
                        CHECK (source IN ('user', 'import', 'starter', 'community')),
    status      TEXT    NOT NULL DEFAULT 'approved'
                        CHECK (status IN ('approved', 'pending', 'rejected'))
);
INSERT INTO jokes_new (id, text, norm_key, author_id, guild_id, created_at, source, status)
    SELECT id, text, norm_key, author_id, guild_id, created_at, source, status FROM jokes;
DROP TABLE jokes;
ALTER TABLE jokes_new RENAME TO jokes;
CREATE INDEX jokes_status ON jokes (status, id);
