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

-- Checks the quota of one key and, if a request fits, records it: the whole of
-- `Store::take_quota`, in one round trip, so that the per-key lock is held for microseconds
-- rather than for several network round trips while other daemons queue behind it.
-- Every process using the key serialises on the advisory lock (first key: "vt" in ASCII, a
-- namespace of its own). A caller that queued for the lock is judged and recorded at the moment
-- it got it (`p_now` plus the wait, measured on the server): its request leaves after that, and
-- recording the earlier time would let the window look free too soon.
-- Returns ('granted', at), ('wait', until) or ('exhausted', until).
CREATE FUNCTION take_quota(
    p_key TEXT, p_now BIGINT, p_requests INTEGER, p_window_ms BIGINT,
    p_daily BIGINT, p_monthly BIGINT,
    p_day TEXT, p_day_end BIGINT, p_month TEXT, p_month_end BIGINT,
    OUT o_decision TEXT, OUT o_at BIGINT)
LANGUAGE plpgsql AS $$
DECLARE
    v_started TIMESTAMPTZ := clock_timestamp();
    v_now     BIGINT;
    v_until   BIGINT;
    v_used    BIGINT;
    v_count   INTEGER;
    v_oldest  BIGINT;
BEGIN
    v_now := p_now;
    -- Only a caller that really queued behind another is moved forward: an uncontended call is
    -- judged at exactly the time it was given.
    IF NOT pg_try_advisory_xact_lock(30324, hashtext(p_key)) THEN
        PERFORM pg_advisory_xact_lock(30324, hashtext(p_key));
        v_now := p_now + floor(extract(epoch FROM clock_timestamp() - v_started) * 1000)::BIGINT;
    END IF;

    SELECT q.until INTO v_until FROM quota_pauses q WHERE q.key_id = p_key;
    IF v_until IS NOT NULL AND v_until > v_now THEN
        o_decision := 'wait'; o_at := v_until; RETURN;
    END IF;

    SELECT q.used INTO v_used FROM quota_periods q WHERE q.key_id = p_key AND q.period = p_day;
    IF COALESCE(v_used, 0) >= p_daily THEN
        o_decision := 'exhausted'; o_at := p_day_end; RETURN;
    END IF;
    IF p_monthly IS NOT NULL THEN
        SELECT q.used INTO v_used FROM quota_periods q WHERE q.key_id = p_key AND q.period = p_month;
        IF COALESCE(v_used, 0) >= p_monthly THEN
            o_decision := 'exhausted'; o_at := p_month_end; RETURN;
        END IF;
    END IF;

    -- The sliding window: with `p_requests` already sent after `now - window`, the next one
    -- fits once the oldest of the last `p_requests` leaves the window.
    SELECT COUNT(*), MIN(r.at) INTO v_count, v_oldest
    FROM (SELECT q.at FROM quota_log q
          WHERE q.key_id = p_key AND q.at > v_now - p_window_ms
          ORDER BY q.at DESC LIMIT p_requests) r;
    IF v_count >= p_requests THEN
        o_decision := 'wait'; o_at := v_oldest + p_window_ms; RETURN;
    END IF;

    INSERT INTO quota_log (key_id, at) VALUES (p_key, v_now);
    DELETE FROM quota_log q WHERE q.key_id = p_key AND q.at <= v_now - p_window_ms;
    INSERT INTO quota_periods AS q (key_id, period, used) VALUES (p_key, p_day, 1), (p_key, p_month, 1)
        ON CONFLICT (key_id, period) DO UPDATE SET used = q.used + 1;
    o_decision := 'granted'; o_at := v_now;
END
$$;
