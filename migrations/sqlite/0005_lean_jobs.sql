-- Queueing a large list spent as long on the jobs table's CHECK constraints as on the inserts:
-- SQLite builds a temporary table for every `IN (...)` list of a CHECK, for every row written.
-- The same constraints written as `=` ... `OR` cost nothing measurable. A CHECK constraint
-- cannot be altered, so the table is rebuilt (the same columns and rows; ids are kept).

-- The files, sources and verdicts refer to jobs: their references are checked at COMMIT, once
-- every job is back under the same id.
PRAGMA defer_foreign_keys = ON;

-- A table of the database rather than TEMP: a temporary copy may be held in memory, and the
-- jobs can be millions.
CREATE TABLE jobs_before AS SELECT * FROM jobs;
DROP TABLE jobs;

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind = 'file' OR kind = 'hash' OR kind = 'url' OR kind = 'domain' OR kind = 'ip'),
    indicator        TEXT    NOT NULL,            -- normalised value; a file's SHA-256
    state            TEXT    NOT NULL DEFAULT 'available'
                     CHECK (state = 'available' OR state = 'running' OR state = 'completed' OR state = 'discarded'),
    step             TEXT    NOT NULL DEFAULT 'lookup' CHECK (step = 'lookup' OR step = 'poll'),
    priority         INTEGER NOT NULL DEFAULT 1,  -- higher is claimed first (polls before lookups)
    attempt          INTEGER NOT NULL DEFAULT 0,  -- incremented by a claim, given back by a snooze
    max_attempts     INTEGER NOT NULL,
    scheduled_at     INTEGER NOT NULL,            -- not claimed before this time
    lease_owner      TEXT,                        -- the worker holding it while running
    lease_expires_at INTEGER,
    allow_submit     INTEGER NOT NULL DEFAULT 0,  -- may upload the file / submit the URL if unknown
    submitted_at     INTEGER,                     -- an upload/submission was started (intent record)
    analysis_id      TEXT,                        -- the analysis to poll, once VT accepted it
    polls            INTEGER NOT NULL DEFAULT 0,  -- polls spent on the current analysis
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    UNIQUE (kind, indicator)
);

INSERT INTO jobs SELECT * FROM jobs_before;
DROP TABLE jobs_before;

-- Dropped with the table: its indexes and triggers. They come back as 0001 and 0003 created them,
-- but for `jobs_by_kind`, one of two indexes (with `sources_by_source`, below) that every queued
-- job paid for and no query needs: a report of some kinds in job order reads ranges of ids (the
-- rows of a range are adjacent whatever their kind), and `--source` matches names by suffix,
-- which an index on the name cannot find.
CREATE INDEX jobs_claimable ON jobs (state, priority DESC, scheduled_at);
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_last_errors ON jobs (updated_at) WHERE last_error IS NOT NULL;
CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
    UPDATE job_counts SET n = n + 1
    WHERE state = NEW.state AND kind = NEW.kind AND step = NEW.step;
END;
CREATE TRIGGER job_counts_update AFTER UPDATE OF state, step ON jobs
WHEN OLD.state IS NOT NEW.state OR OLD.step IS NOT NEW.step BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE state = OLD.state AND kind = OLD.kind AND step = OLD.step;
    UPDATE job_counts SET n = n + 1
    WHERE state = NEW.state AND kind = NEW.kind AND step = NEW.step;
END;
CREATE TRIGGER job_counts_delete AFTER DELETE ON jobs BEGIN
    UPDATE job_counts SET n = n - 1
    WHERE state = OLD.state AND kind = OLD.kind AND step = OLD.step;
END;

DROP INDEX sources_by_source;
