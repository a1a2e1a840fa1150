-- A job whose lookup found nothing and whose upload (or URL submission) was stopped before it
-- was sent keeps that answer as its step, `upload`: the next run uploads it without paying for
-- the lookup again. A CHECK constraint cannot be altered, so the table is rebuilt as migration
-- 0005 did (the same columns, rows and ids), with its indexes and the triggers that count
-- changed and deleted jobs (new ones are counted by their enqueue, migration 0007).

PRAGMA defer_foreign_keys = ON;

CREATE TABLE jobs_before AS SELECT * FROM jobs;
DROP TABLE jobs;

CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind = 'file' OR kind = 'hash' OR kind = 'url' OR kind = 'domain' OR kind = 'ip'),
    indicator        TEXT    NOT NULL,            -- normalised value; a file's SHA-256
    state            TEXT    NOT NULL DEFAULT 'available'
                     CHECK (state = 'available' OR state = 'running' OR state = 'completed' OR state = 'discarded'),
    step             TEXT    NOT NULL DEFAULT 'lookup' CHECK (step = 'lookup' OR step = 'upload' OR step = 'poll'),
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

CREATE INDEX jobs_claimable ON jobs (state, priority DESC, scheduled_at);
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_last_errors ON jobs (updated_at) WHERE last_error IS NOT NULL;
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

-- Every combination the CHECK constraints allow has a row, so the triggers only update.
INSERT OR IGNORE INTO job_counts (state, kind, step, n)
SELECT s.v, k.v, 'upload', 0
FROM (SELECT 'available' AS v UNION ALL SELECT 'running' UNION ALL SELECT 'completed'
      UNION ALL SELECT 'discarded') AS s,
     (SELECT 'file' AS v UNION ALL SELECT 'hash' UNION ALL SELECT 'url' UNION ALL SELECT 'domain'
      UNION ALL SELECT 'ip') AS k;
