-- Learning from votes (the preference phase of a training run).
-- What the runner wrote after the prompt, so a vote can train on exactly that continuation
-- (NULL for jokes shown before this migration: derived from `text` and `prompt`), and who asked
-- for the joke (so /forgetme can keep the jokes a member asked for out of training).
ALTER TABLE generated_jokes ADD COLUMN completion TEXT;
ALTER TABLE generated_jokes ADD COLUMN requested_by INTEGER;
CREATE INDEX generated_jokes_requested_by ON generated_jokes (requested_by);

-- The votes a training run exported: `votes_until` is the newest `voted_at` among them;
-- `learned` becomes 1 once its preference phase ran and its version was promoted. Votes cast
-- (or changed) after the newest learned export are the new votes a run counts.
CREATE TABLE vote_exports (
    run_id       INTEGER PRIMARY KEY REFERENCES training_runs (id) ON DELETE CASCADE,
    votes_until  TEXT    NOT NULL DEFAULT '',
    jokes        INTEGER NOT NULL DEFAULT 0,
    learned      INTEGER NOT NULL DEFAULT 0 CHECK (learned IN (0, 1))
);
CREATE INDEX votes_voted_at ON votes (voted_at);
