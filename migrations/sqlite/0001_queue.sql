-- The job queue, the verdicts and the shared quota ledger. Times are Unix milliseconds (UTC).
-- docs/schema.md describes every column; the v_* views are the stable interface for sqlite3 users.

-- One job per indicator: the durable record of its triage. See src/store/mod.rs for the states.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('file', 'hash', 'url', 'domain', 'ip')),
    indicator        TEXT    NOT NULL,            -- normalised value; a file's SHA-256
    state            TEXT    NOT NULL DEFAULT 'available'
                     CHECK (state IN ('available', 'running', 'completed', 'discarded')),
    step             TEXT    NOT NULL DEFAULT 'lookup' CHECK (step IN ('lookup', 'poll')),
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
CREATE INDEX jobs_claimable ON jobs (state, priority DESC, scheduled_at);

-- Where a file was seen (a file job has one row per path holding that content).
CREATE TABLE file_paths (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    path    TEXT    NOT NULL,
    size    INTEGER,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, path)
);

-- Where an indicator came from: an IOC list and line, or "command line".
CREATE TABLE sources (
    job_id  INTEGER NOT NULL REFERENCES jobs (id),
    source  TEXT    NOT NULL,
    line    INTEGER NOT NULL DEFAULT 0,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, source, line)
);

-- The latest verdict of each job, written in the transaction that finishes the job.
CREATE TABLE verdicts (
    job_id           INTEGER PRIMARY KEY REFERENCES jobs (id),
    verdict          TEXT    NOT NULL
                     CHECK (verdict IN ('malicious', 'suspicious', 'clean', 'unknown', 'failed', 'pending')),
    malicious        INTEGER,
    suspicious       INTEGER,
    harmless         INTEGER,
    undetected       INTEGER,
    timeout          INTEGER,
    type_unsupported INTEGER,
    failure          INTEGER,
    engines          INTEGER,                     -- engines that answered
    threat_label     TEXT,
    sha256           TEXT,
    md5              TEXT,
    sha1             TEXT,
    vt_id            TEXT,                        -- VirusTotal's id of the object
    vt_analysis_date INTEGER,                     -- Unix seconds, as VirusTotal gave it
    checked_at       INTEGER NOT NULL,
    note             TEXT,                        -- why a verdict is unknown or pending
    error            TEXT,                        -- why a verdict is failed
    raw              BLOB                         -- the VirusTotal object, zstd-compressed JSON
);
CREATE INDEX verdicts_by_verdict ON verdicts (verdict, checked_at);
CREATE INDEX verdicts_sha256 ON verdicts (sha256);
CREATE INDEX verdicts_md5 ON verdicts (md5);
CREATE INDEX verdicts_sha1 ON verdicts (sha1);

-- Requests spent per API key (named by a fingerprint, never the key) in the recent past: the
-- sliding window is counted here, so every process sharing the database shares the quota.
CREATE TABLE quota_log (
    key_id TEXT    NOT NULL,
    at     INTEGER NOT NULL
);
CREATE INDEX quota_log_by_key ON quota_log (key_id, at);

-- Requests per key and UTC day ('2026-11-22') and month ('2026-11').
CREATE TABLE quota_periods (
    key_id TEXT    NOT NULL,
    period TEXT    NOT NULL,
    used   INTEGER NOT NULL,
    PRIMARY KEY (key_id, period)
);

-- A 429 from VirusTotal pauses the key for every process until this time.
CREATE TABLE quota_pauses (
    key_id TEXT PRIMARY KEY,
    until  INTEGER NOT NULL
);

-- Processes working this database (for status and for rescuing the jobs of dead ones).
CREATE TABLE workers (
    owner        TEXT PRIMARY KEY,                -- host:pid:start
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   INTEGER NOT NULL,
    heartbeat_at INTEGER NOT NULL
);
