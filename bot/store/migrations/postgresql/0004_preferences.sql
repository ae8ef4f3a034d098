-- PostgreSQL's twin of ../0004_preferences.sql: what the runner wrote after the prompt (NULL for
-- jokes shown before: derived from `text` and `prompt`), who asked for the joke (/forgetme), and
-- the votes each training run exported (`votes_until`: the newest `voted_at` among them, as
-- text; `learned` once its version learned from them and was promoted).
ALTER TABLE generated_jokes ADD COLUMN completion text;
ALTER TABLE generated_jokes ADD COLUMN requested_by bigint;
CREATE INDEX generated_jokes_requested_by ON generated_jokes (requested_by);

CREATE TABLE vote_exports (
    run_id       bigint  PRIMARY KEY REFERENCES training_runs (id) ON DELETE CASCADE,
    votes_until  text    NOT NULL DEFAULT '',
    jokes        integer NOT NULL DEFAULT 0,
    learned      boolean NOT NULL DEFAULT FALSE
);
CREATE INDEX votes_voted_at ON votes (voted_at);
