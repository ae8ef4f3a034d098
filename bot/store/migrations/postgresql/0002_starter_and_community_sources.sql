-- Jokes may also come from the starter corpus ('starter') and from upvoted generated jokes
-- ('community'). PostgreSQL changes the CHECK in place (SQLite rebuilds the table).
ALTER TABLE jokes DROP CONSTRAINT jokes_source;
ALTER TABLE jokes ADD CONSTRAINT jokes_source
    CHECK (source IN ('user', 'import', 'starter', 'community'));
