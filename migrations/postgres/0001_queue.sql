-- The job queue, the verdicts and the shared quota ledger, for PostgreSQL: the same tables,
-- columns and meaning as migrations/sqlite/0001_queue.sql (read that file for the comments on
-- each column). Times are Unix milliseconds (UTC) in BIGINT; counts are INTEGER.

CREATE TABLE jobs (
    id               BIGSERIAL PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('file', 'hash', 'url', 'domain', 'ip')),
    indicator        TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'available'
                     CHECK (state IN ('available', 'running', 'completed', 'discarded')),
    step             TEXT    NOT NULL DEFAULT 'lookup' CHECK (step IN ('lookup', 'poll')),
    priority         INTEGER NOT NULL DEFAULT 1,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    scheduled_at     BIGINT  NOT NULL,
    lease_owner      TEXT,
    lease_expires_at BIGINT,
    allow_submit     BOOLEAN NOT NULL DEFAULT FALSE,
    submitted_at     BIGINT,
    analysis_id      TEXT,
    polls            INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    finished_at      BIGINT,
    UNIQUE (kind, indicator)
);
CREATE INDEX jobs_claimable ON jobs (state, priority DESC, scheduled_at);
-- Rescue and status look at running jobs by owner; a partial index keeps that cheap.
CREATE INDEX jobs_running_by_owner ON jobs (lease_owner) WHERE state = 'running';

CREATE TABLE file_paths (
    job_id  BIGINT NOT NULL REFERENCES jobs (id),
    path    TEXT   NOT NULL,
    size    BIGINT,
    seen_at BIGINT NOT NULL,
    PRIMARY KEY (job_id, path)
);

CREATE TABLE sources (
    job_id  BIGINT  NOT NULL REFERENCES jobs (id),
    source  TEXT    NOT NULL,
    line    BIGINT  NOT NULL DEFAULT 0,
    seen_at BIGINT  NOT NULL,
    PRIMARY KEY (job_id, source, line)
);

CREATE TABLE verdicts (
    job_id           BIGINT  PRIMARY KEY REFERENCES jobs (id),
    verdict          TEXT    NOT NULL
                     CHECK (verdict IN ('malicious', 'suspicious', 'clean', 'unknown', 'failed', 'pending')),
    malicious        INTEGER,
    suspicious       INTEGER,
    harmless         INTEGER,
    undetected       INTEGER,
    timeout          INTEGER,
    type_unsupported INTEGER,
    failure          INTEGER,
    engines          INTEGER,
    threat_label     TEXT,
    sha256           TEXT,
    md5              TEXT,
    sha1             TEXT,
    vt_id            TEXT,
    vt_analysis_date BIGINT,
    checked_at       BIGINT  NOT NULL,
    note             TEXT,
    error            TEXT,
    raw              BYTEA
);
CREATE INDEX verdicts_by_verdict ON verdicts (verdict, checked_at);
CREATE INDEX verdicts_sha256 ON verdicts (sha256);
CREATE INDEX verdicts_md5 ON verdicts (md5);
CREATE INDEX verdicts_sha1 ON verdicts (sha1);

-- Requests spent per API key in the recent past. Every daemon on every host writes here, under
-- a per-key advisory lock, so the sliding window is one window for all of them.
CREATE TABLE quota_log (
    key_id TEXT   NOT NULL,
    at     BIGINT NOT NULL
);
CREATE INDEX quota_log_by_key ON quota_log (key_id, at);

CREATE TABLE quota_periods (
    key_id TEXT    NOT NULL,
    period TEXT    NOT NULL,
    used   BIGINT  NOT NULL,
    PRIMARY KEY (key_id, period)
);

CREATE TABLE quota_pauses (
    key_id TEXT   PRIMARY KEY,
    until  BIGINT NOT NULL
);

CREATE TABLE workers (
    owner        TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          BIGINT  NOT NULL,
    started_at   BIGINT  NOT NULL,
    heartbeat_at BIGINT  NOT NULL
);
