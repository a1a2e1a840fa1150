-- What `status` and the reports need without reading every row of a large database.

-- Jobs per state, kind and step, and verdicts per verdict, kept exact by triggers (so by every
-- process that writes): `status` reads a few dozen rows instead of counting a million.
CREATE TABLE job_counts (
    state TEXT    NOT NULL,
    kind  TEXT    NOT NULL,
    step  TEXT    NOT NULL,
    n     INTEGER NOT NULL,
    PRIMARY KEY (state, kind, step)
) WITHOUT ROWID;
INSERT INTO job_counts (state, kind, step, n)
SELECT state, kind, step, COUNT(*) FROM jobs GROUP BY state, kind, step;
-- Every combination the CHECK constraints allow has a row, so the triggers only update.
INSERT OR IGNORE INTO job_counts (state, kind, step, n)
SELECT s.v, k.v, p.v, 0
FROM (SELECT 'available' AS v UNION ALL SELECT 'running' UNION ALL SELECT 'completed'
      UNION ALL SELECT 'discarded') AS s,
     (SELECT 'file' AS v UNION ALL SELECT 'hash' UNION ALL SELECT 'url' UNION ALL SELECT 'domain'
      UNION ALL SELECT 'ip') AS k,
     (SELECT 'lookup' AS v UNION ALL SELECT 'poll') AS p;

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

CREATE TABLE verdict_counts (
    verdict TEXT    PRIMARY KEY,
    n       INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO verdict_counts (verdict, n) SELECT verdict, COUNT(*) FROM verdicts GROUP BY verdict;
INSERT OR IGNORE INTO verdict_counts (verdict, n)
SELECT v, 0
FROM (SELECT 'malicious' AS v UNION ALL SELECT 'suspicious' UNION ALL SELECT 'clean'
      UNION ALL SELECT 'unknown' UNION ALL SELECT 'failed' UNION ALL SELECT 'pending');

CREATE TRIGGER verdict_counts_insert AFTER INSERT ON verdicts BEGIN
    UPDATE verdict_counts SET n = n + 1 WHERE verdict = NEW.verdict;
END;
CREATE TRIGGER verdict_counts_update AFTER UPDATE OF verdict ON verdicts
WHEN OLD.verdict IS NOT NEW.verdict BEGIN
    UPDATE verdict_counts SET n = n - 1 WHERE verdict = OLD.verdict;
    UPDATE verdict_counts SET n = n + 1 WHERE verdict = NEW.verdict;
END;
CREATE TRIGGER verdict_counts_delete AFTER DELETE ON verdicts BEGIN
    UPDATE verdict_counts SET n = n - 1 WHERE verdict = OLD.verdict;
END;

-- The oldest unfinished job is the first by id in its state (ids grow with creation).
CREATE INDEX jobs_by_state ON jobs (state);
-- The last errors, without scanning every job.
CREATE INDEX jobs_last_errors ON jobs (updated_at) WHERE last_error IS NOT NULL;
-- A report of one verdict in job order reads this index in order instead of sorting.
CREATE INDEX verdicts_by_verdict_job ON verdicts (verdict, job_id);
