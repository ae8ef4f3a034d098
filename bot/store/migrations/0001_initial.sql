-- Jokes, model versions and training runs.
CREATE TABLE jokes (
    id          INTEGER PRIMARY KEY,
    text        TEXT    NOT NULL,
    norm_key    TEXT    NOT NULL UNIQUE,
    author_id   INTEGER,
    guild_id    INTEGER,
    created_at  TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    source      TEXT    NOT NULL CHECK (source IN ('user', 'import')),
    status      TEXT    NOT NULL DEFAULT 'approved'
                        CHECK (status IN ('approved', 'pending', 'rejected'))
);
CREATE INDEX jokes_status ON jokes (status, id);

CREATE TABLE model_versions (
    version         INTEGER PRIMARY KEY,
    path            TEXT    NOT NULL,
    parent_version  INTEGER REFERENCES model_versions (version),
    created_at      TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    status          TEXT    NOT NULL
                    CHECK (status IN ('base', 'promoted', 'rejected', 'pruned')),
    active          INTEGER NOT NULL DEFAULT 0 CHECK (active IN (0, 1)),
    metrics         TEXT    NOT NULL DEFAULT '{}',
    manifest        TEXT    NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX model_versions_one_active ON model_versions (active) WHERE active = 1;

CREATE TABLE training_runs (
    id                 INTEGER PRIMARY KEY,
    started_at         TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    finished_at        TEXT,
    trigger            TEXT    NOT NULL CHECK (trigger IN ('schedule', 'admin', 'cli')),
    requested_by       INTEGER,
    status             TEXT    NOT NULL DEFAULT 'running'
                       CHECK (status IN ('running', 'promoted', 'rejected', 'failed', 'cancelled')),
    corpus_size        INTEGER,
    corpus_hash        TEXT,
    last_joke_id       INTEGER,
    candidate_version  INTEGER REFERENCES model_versions (version),
    metrics            TEXT    NOT NULL DEFAULT '{}',
    message            TEXT
);
