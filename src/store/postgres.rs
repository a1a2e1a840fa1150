//! The PostgreSQL adapter: the same queue, verdicts and quota ledger as [`super::sqlite`], for
//! several daemons on several hosts sharing one database.
//!
//! It mirrors the SQLite adapter statement by statement; what differs is what concurrent
//! writers need, since SQLite has one writer at a time and PostgreSQL has many:
//! - claims lock their rows with `FOR UPDATE SKIP LOCKED` in a CTE, so two daemons never claim
//!   the same job and never wait for each other;
//! - `take_quota` serialises the requests of one key with a transaction-scoped advisory lock,
//!   so every process using that key sees one sliding window, one day and one month; it is a
//!   database function (in the migration) so that the lock is held for one round trip only;
//! - enqueue locks the job rows it may reopen, in a fixed order, and inserts with
//!   `ON CONFLICT DO NOTHING`, so two hosts seeing the same file make one job;
//! - a transaction that PostgreSQL aborts as a deadlock victim is run again.
//!
//! Unsigned counts are stored as INTEGER/BIGINT (PostgreSQL has no unsigned types) and
//! converted at this boundary.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgConnection, PgPool, Row};
use tokio_util::sync::CancellationToken;

use super::sqlite::{compress, decompress, periods};
use super::{
    Clock, Columns, Enqueued, Error, FileSeen, Job, JobResult, MaySubmit, Millis, NewJob,
    QueueCounts, QuotaDecision, QuotaLimits, QuotaUsage, RawObject, ReportQuery, ReportRow,
    ReportSort, Requeue, Retried, Snooze, Step, Store, WorkerInfo, verdict_from_row,
};
use crate::indicator::Kind;
use crate::verdict::{Stats, Verdict, VerdictRecord};

/// The schema, oldest first (see `migrations/postgres/`).
const MIGRATIONS: [(i64, &str, &str); 9] = [
    (
        1,
        "queue",
        include_str!("../../migrations/postgres/0001_queue.sql"),
    ),
    (
        2,
        "report views",
        include_str!("../../migrations/postgres/0002_report_views.sql"),
    ),
    (
        3,
        "lean ingest",
        include_str!("../../migrations/postgres/0003_lean_ingest.sql"),
    ),
    (
        4,
        "file fingerprints",
        include_str!("../../migrations/postgres/0004_file_fingerprints.sql"),
    ),
    (
        5,
        "lists read, file hosts",
        include_str!("../../migrations/postgres/0005_lists_read_and_file_hosts.sql"),
    ),
    (
        6,
        "poll estimates",
        include_str!("../../migrations/postgres/0006_poll_estimates.sql"),
    ),
    (
        7,
        "status counts",
        include_str!("../../migrations/postgres/0007_status_counts.sql"),
    ),
    (
        8,
        "worker limits",
        include_str!("../../migrations/postgres/0008_worker_limits.sql"),
    ),
    (
        9,
        "upload step",
        include_str!("../../migrations/postgres/0009_upload_step.sql"),
    ),
];

/// The PostgreSQL store.
///
/// Several hosts share it, each with its own files: a path in `file_paths` is the host's that saw
/// it. A file job is claimed by a daemon on a host holding a copy, since only there can the file
/// be uploaded, unless no host holding one runs a daemon ([`Store::claim`]);
/// [`Store::file_paths`] gives this host's copies.
#[derive(Debug, Clone)]
pub struct PgStore {
    /// Connections for every statement: PostgreSQL handles concurrent writers itself.
    pool: PgPool,
    /// This host's name ([`super::this_host`]).
    host: Arc<str>,
}

/// Columns of a verdict row, in the order [`verdict_from_row`] reads them.
const VERDICT_COLUMNS: &str = "v.verdict, v.malicious, v.suspicious, v.harmless, v.undetected, v.timeout, \
     v.type_unsupported, v.failure, v.threat_label, v.sha256, v.md5, v.sha1, v.vt_id, v.vt_analysis_date, \
     v.checked_at, v.note, v.error, v.raw";

/// The fence of every change to a running job (binds: id, owner).
const FENCE: &str = "id = $1 AND lease_owner = $2 AND state = 'running'";

/// The advisory lock of [`PgStore::fold_counts`] (any number no other lock of the database
/// uses; the quota's are hashes of key ids).
const FOLD_LOCK: i64 = 0x7674_7269_6167_6501;

/// How long opening the database waits for the server's first answer.
const FIRST_ANSWER: Duration = Duration::from_secs(15);

/// How often a transaction chosen as a deadlock victim is run again before the error is
/// returned.
const DEADLOCK_RETRIES: u32 = 5;

impl PgStore {
    /// Connects to the database at `url` (`postgres://user:password@host:port/database`) and
    /// applies the migrations. Several processes may do this at once: the migrator takes a
    /// database-wide lock.
    pub async fn open(url: &str) -> Result<PgStore, Error> {
        let options = PgConnectOptions::from_str(url)?.application_name("vtriage");
        // One connection first, on a short leash: a server that refuses or never answers is
        // said at once, not after the pool's patience (which is for a busy server).
        let first = tokio::time::timeout(FIRST_ANSWER, PgConnection::connect_with(&options))
            .await
            .map_err(|_| {
                Error::Io(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "the server did not answer within {} s",
                        FIRST_ANSWER.as_secs()
                    ),
                ))
            })??;
        let _ = first.close().await;
        let pool = PgPoolOptions::new()
            .max_connections(8)
            // Patience for a busy pool, not for an outage: a daemon cut off from the server
            // says so (and its loops back off) within half a minute rather than two.
            .acquire_timeout(Duration::from_secs(30))
            // No pool maintenance task, whose loop can spin a core for good in sqlx 0.9.0 (see
            // SqliteStore::open). A broken connection is still found when it is next acquired.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await?;
        super::migrator(&MIGRATIONS).run(&pool).await?;
        Ok(PgStore {
            pool,
            host: super::this_host().into(),
        })
    }

    /// The same store, as a process on host `host` would see it (for tests of several hosts).
    pub fn on_host(self, host: &str) -> PgStore {
        PgStore {
            host: host.into(),
            ..self
        }
    }

    /// Folds the logged changes of the job and verdict counts into them (migration 7), unless
    /// another process is doing it: one at a time, so that no two lock the counts in different
    /// orders.
    async fn fold_counts(&self) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        let ours: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock($1)")
            .bind(FOLD_LOCK)
            .fetch_one(&mut *tx)
            .await?;
        if !ours {
            return Ok(());
        }
        sqlx::query(
            "WITH moved AS (DELETE FROM job_count_changes RETURNING state, kind, step, n)
             INSERT INTO job_counts (state, kind, step, n)
             SELECT state, kind, step, SUM(n) FROM moved GROUP BY state, kind, step
             ON CONFLICT (state, kind, step) DO UPDATE SET n = job_counts.n + excluded.n",
        )
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "WITH moved AS (DELETE FROM verdict_count_changes RETURNING verdict, n)
             INSERT INTO verdict_counts (verdict, n)
             SELECT verdict, SUM(n) FROM moved GROUP BY verdict
             ON CONFLICT (verdict) DO UPDATE SET n = verdict_counts.n + excluded.n",
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// [`PgStore::fold_counts`] after a change of many jobs (a list queued, a re-check) that no
    /// daemon may be running to fold: a long log would make `status` slow to add it up.
    async fn fold_counts_or_warn(&self) {
        if let Err(e) = self.fold_counts().await {
            tracing::warn!(error = %e, "cannot fold the status counts; the next fold will");
        }
    }

    /// The connection pool, for reports that stream rows.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// Is this the error PostgreSQL gives the victim of a deadlock (SQLSTATE 40P01)?
fn is_deadlock(e: &Error) -> bool {
    matches!(e, Error::Database(db) if db.code().as_deref() == Some("40P01"))
}

/// `u32` counts as PostgreSQL integers.
fn int(n: u32) -> i64 {
    i64::from(n)
}

/// A stored count back as `u32` (negative values cannot be written by this adapter).
fn count(n: i32) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// Inserts or replaces the verdict of a job. `keep_better`: a failed attempt does not replace a
/// verdict VirusTotal already gave (a failed re-check must not lose the earlier verdict).
async fn upsert_verdict(
    conn: &mut PgConnection,
    job_id: i64,
    v: &VerdictRecord,
    keep_better: bool,
) -> Result<(), Error> {
    let raw = v.raw.as_deref().map(compress);
    let s = v.stats;
    let sql = if keep_better {
        "INSERT INTO verdicts (job_id, verdict, malicious, suspicious, harmless, undetected, timeout,
             type_unsupported, failure, engines, threat_label, sha256, md5, sha1, vt_id, vt_analysis_date,
             checked_at, note, error, raw)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
         ON CONFLICT (job_id) DO UPDATE SET verdict = excluded.verdict, checked_at = excluded.checked_at,
             note = excluded.note, error = excluded.error
         WHERE verdicts.verdict IN ('failed', 'pending')"
    } else {
        "INSERT INTO verdicts (job_id, verdict, malicious, suspicious, harmless, undetected, timeout,
             type_unsupported, failure, engines, threat_label, sha256, md5, sha1, vt_id, vt_analysis_date,
             checked_at, note, error, raw)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
         ON CONFLICT (job_id) DO UPDATE SET verdict = excluded.verdict, malicious = excluded.malicious,
             suspicious = excluded.suspicious, harmless = excluded.harmless, undetected = excluded.undetected,
             timeout = excluded.timeout, type_unsupported = excluded.type_unsupported,
             failure = excluded.failure, engines = excluded.engines, threat_label = excluded.threat_label,
             sha256 = COALESCE(excluded.sha256, verdicts.sha256), md5 = COALESCE(excluded.md5, verdicts.md5),
             sha1 = COALESCE(excluded.sha1, verdicts.sha1), vt_id = COALESCE(excluded.vt_id, verdicts.vt_id),
             vt_analysis_date = excluded.vt_analysis_date, checked_at = excluded.checked_at,
             note = excluded.note, error = excluded.error, raw = COALESCE(excluded.raw, verdicts.raw)"
    };
    // INTEGER columns: counts beyond i32 cannot come from VirusTotal (about 70 engines).
    let c = |f: fn(&Stats) -> u32| s.as_ref().map(|s| f(s).min(i32::MAX as u32) as i32);
    sqlx::query(sql)
        .bind(job_id)
        .bind(v.verdict.as_str())
        .bind(c(|s| s.malicious))
        .bind(c(|s| s.suspicious))
        .bind(c(|s| s.harmless))
        .bind(c(|s| s.undetected))
        .bind(c(|s| s.timeout))
        .bind(c(|s| s.type_unsupported))
        .bind(c(|s| s.failure))
        .bind(c(Stats::engines))
        .bind(&v.threat_label)
        .bind(&v.sha256)
        .bind(&v.md5)
        .bind(&v.sha1)
        .bind(&v.vt_id)
        .bind(v.vt_analysis_date)
        .bind(v.checked_at)
        .bind(&v.note)
        .bind(&v.error)
        .bind(raw)
        .execute(conn)
        .await?;
    Ok(())
}

impl Columns for PgRow {
    fn text(&self, i: usize) -> Option<String> {
        self.try_get(i).ok().flatten()
    }
    /// Counts are `INTEGER` here, times `BIGINT`.
    fn int(&self, i: usize) -> Option<i64> {
        match self.try_get::<Option<i64>, _>(i) {
            Ok(n) => n,
            Err(_) => self
                .try_get::<Option<i32>, _>(i)
                .ok()
                .flatten()
                .map(i64::from),
        }
    }
    fn blob(&self, i: usize) -> Option<Vec<u8>> {
        self.try_get(i).ok().flatten()
    }
}

fn job_from_row(row: &PgRow, owner: &str) -> Job {
    let kind: String = row.get("kind");
    let step: String = row.get("step");
    Job {
        id: row.get("id"),
        kind: kind.parse().unwrap_or(Kind::Hash),
        indicator: row.get("indicator"),
        step: Step::parse(&step),
        attempt: count(row.get("attempt")),
        max_attempts: count(row.get("max_attempts")),
        allow_submit: row.get("allow_submit"),
        submitted_at: row.get("submitted_at"),
        analysis_id: row.get("analysis_id"),
        polls: count(row.get("polls")),
        owner: owner.to_owned(),
    }
}

impl PgStore {
    /// Runs one fenced `UPDATE jobs SET {set}` (binds: id, owner, `value` as $3), on rows that
    /// also meet `also` (`""` or ` AND ...`); returns whether the lease still held (and `also`
    /// was met).
    async fn fenced_update(
        &self,
        job: &Job,
        set: &str,
        also: &str,
        value: Millis,
    ) -> Result<bool, Error> {
        let sql = format!("UPDATE jobs SET {set} WHERE {FENCE}{also}");
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(job.id)
            .bind(&job.owner)
            .bind(value)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A transaction holding the quota lock of `key_id`, the one `take_quota` takes (see
    /// migrations/postgres), so that no grant is judged while the key's rows change.
    async fn quota_locked(
        &self,
        key_id: &str,
    ) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT pg_advisory_xact_lock(30324, hashtext($1))")
            .bind(key_id)
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }

    /// One attempt at [`Store::enqueue`]; `order` visits the jobs sorted by (kind, indicator),
    /// so concurrent enqueues lock shared rows in the same order and cannot deadlock each other.
    /// Mentions of one indicator keep their given order, so the first one decides, as in SQLite.
    async fn enqueue_once(
        &self,
        jobs: &[NewJob],
        order: &[usize],
        now: Millis,
        max_age_ms: i64,
        max_attempts: u32,
    ) -> Result<Vec<(i64, Enqueued)>, Error> {
        let mut tx = self.pool.begin().await?;
        let mut out = vec![(0, Enqueued::Queued); jobs.len()];
        for &i in order {
            let job = &jobs[i];
            let (id, outcome) = loop {
                // Locks the job row: a concurrent enqueue of the same indicator waits, then sees
                // what this one decided.
                let existing = sqlx::query(
                    "SELECT id, state, allow_submit, analysis_id FROM jobs
                     WHERE kind = $1 AND indicator = $2 FOR UPDATE",
                )
                .bind(job.kind.as_str())
                .bind(&job.indicator)
                .fetch_optional(&mut *tx)
                .await?;
                let Some(row) = existing else {
                    // Another host may insert the same indicator at this moment: the loser of
                    // the race finds no row to return and reads the winner's on the next turn.
                    let inserted: Option<i64> = sqlx::query_scalar(
                        "INSERT INTO jobs (kind, indicator, max_attempts, scheduled_at, allow_submit,
                             priority, created_at, updated_at)
                         VALUES ($1, $2, $3, $4, $5, $6, $4, $4)
                         ON CONFLICT (kind, indicator) DO NOTHING RETURNING id",
                    )
                    .bind(job.kind.as_str())
                    .bind(&job.indicator)
                    .bind(int(max_attempts) as i32)
                    .bind(now)
                    .bind(job.allow_submit)
                    .bind(Step::Lookup.priority() as i32)
                    .fetch_optional(&mut *tx)
                    .await?;
                    match inserted {
                        Some(id) => break (id, Enqueued::New),
                        None => continue,
                    }
                };
                let (id, state): (i64, String) = (row.get(0), row.get(1));
                // The verdict of a finished job, read by a statement of its own, after the lock:
                // one that waited for a completion holding the lock still sees, under READ
                // COMMITTED, the verdict as it was when it began (none), and would take a verdict
                // written a moment ago for a missing one, reopen the job and pay for a lookup.
                let verdict: Option<(String, Millis)> = match state.as_str() {
                    "completed" | "discarded" => {
                        sqlx::query_as("SELECT verdict, checked_at FROM verdicts WHERE job_id = $1")
                            .bind(id)
                            .fetch_optional(&mut *tx)
                            .await?
                    }
                    _ => None,
                };
                let (verdict, checked_at) = verdict.unzip();
                let known = (state, row.get(2), row.get(3), verdict, checked_at);
                match super::requeue(known, job.allow_submit, now - max_age_ms) {
                    Requeue::Queued { permission_changes } => {
                        if permission_changes {
                            sqlx::query(
                                "UPDATE jobs SET allow_submit = $3, updated_at = $2 WHERE id = $1",
                            )
                            .bind(id)
                            .bind(now)
                            .bind(job.allow_submit)
                            .execute(&mut *tx)
                            .await?;
                        }
                        break (id, Enqueued::Queued);
                    }
                    Requeue::Reopen(step) => {
                        sqlx::query(
                            "UPDATE jobs SET state = 'available', step = $2, priority = $3, attempt = 0,
                                 max_attempts = $4, scheduled_at = $5, updated_at = $5, finished_at = NULL,
                                 allow_submit = $6, last_error = NULL,
                                 submitted_at = CASE WHEN $2 = 'poll' THEN submitted_at END,
                                 analysis_id = CASE WHEN $2 = 'poll' THEN analysis_id END,
                                 polls = CASE WHEN $2 = 'poll' THEN polls ELSE 0 END
                             WHERE id = $1",
                        )
                        .bind(id)
                        .bind(step.as_str())
                        .bind(step.priority() as i32)
                        .bind(int(max_attempts) as i32)
                        .bind(now)
                        .bind(job.allow_submit)
                        .execute(&mut *tx)
                        .await?;
                        break (id, Enqueued::Reopened);
                    }
                    Requeue::Fresh => break (id, Enqueued::Fresh),
                }
            };
            if let Some(seen) = &job.path {
                let (modified_ns, inode) = seen.unchanged_if.unzip();
                sqlx::query(
                    "INSERT INTO file_paths (job_id, host, path, size, seen_at, modified_ns, inode)
                     VALUES ($1, $7, $2, $3, $4, $5, $6)
                     ON CONFLICT (job_id, host, path) DO UPDATE SET size = excluded.size,
                         seen_at = excluded.seen_at, modified_ns = excluded.modified_ns,
                         inode = excluded.inode",
                )
                .bind(id)
                .bind(&seen.path)
                .bind(i64::try_from(seen.size).unwrap_or(i64::MAX))
                .bind(now)
                .bind(modified_ns)
                .bind(inode)
                .bind(&*self.host)
                .execute(&mut *tx)
                .await?;
            }
            if let Some((source, line)) = &job.source {
                sqlx::query(
                    "INSERT INTO sources (job_id, source, line, seen_at) VALUES ($1, $2, $3, $4)
                     ON CONFLICT DO NOTHING",
                )
                .bind(id)
                .bind(&**source)
                .bind(int(*line))
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
            out[i] = (id, outcome);
        }
        tx.commit().await?;
        Ok(out)
    }

    /// One attempt at [`Store::rescue`].
    async fn rescue_once(&self, now: Millis) -> Result<u64, Error> {
        let mut tx = self.pool.begin().await?;
        // Rows are locked in id order and locked ones skipped (a worker is finishing them, or
        // another daemon is rescuing them): two rescuers never deadlock, and what one skips
        // the next round picks up if it is still abandoned.
        let rescued: Vec<(i64, String, i32)> = sqlx::query_as(
            "WITH abandoned AS (
                 SELECT id FROM jobs
                 WHERE state = 'running' AND (lease_expires_at < $1 OR lease_owner IS NULL
                       OR lease_owner NOT IN (SELECT owner FROM workers))
                 ORDER BY id FOR UPDATE SKIP LOCKED)
             UPDATE jobs SET state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
                 finished_at = CASE WHEN attempt >= max_attempts THEN $1 END,
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $1
             FROM abandoned WHERE jobs.id = abandoned.id
             RETURNING jobs.id, jobs.state, jobs.attempt",
        )
        .bind(now)
        .fetch_all(&mut *tx)
        .await?;
        for (id, _, attempts) in rescued.iter().filter(|(_, s, _)| s == "discarded") {
            let why = format!(
                "abandoned {attempts} times by workers that stopped or crashed while working on it"
            );
            upsert_verdict(&mut tx, *id, &VerdictRecord::failed(why, now), true).await?;
        }
        tx.commit().await?;
        Ok(rescued.len() as u64)
    }
}

/// Reopens jobs for a re-check (`$2` is now): a `pending` analysis is polled again (at a poll's
/// priority), anything else looked up again.
const REOPEN_FOR_RECHECK: &str = "UPDATE jobs SET state = 'available', attempt = 0,
         scheduled_at = $2, updated_at = $2, finished_at = NULL, last_error = NULL,
         step = CASE WHEN analysis_id IS NOT NULL AND
             (SELECT verdict FROM verdicts WHERE job_id = jobs.id) = 'pending' THEN 'poll' ELSE 'lookup' END,
         priority = CASE WHEN analysis_id IS NOT NULL AND
             (SELECT verdict FROM verdicts WHERE job_id = jobs.id) = 'pending' THEN 2 ELSE 1 END";

#[async_trait]
impl Store for PgStore {
    async fn close(&self) {
        Self::close(self).await;
    }

    async fn enqueue(
        &self,
        jobs: &[NewJob],
        now: Millis,
        max_age_ms: i64,
        max_attempts: u32,
    ) -> Result<Vec<(i64, Enqueued)>, Error> {
        let mut order: Vec<usize> = (0..jobs.len()).collect();
        order.sort_by(|&a, &b| {
            (jobs[a].kind.as_str(), &jobs[a].indicator, a).cmp(&(
                jobs[b].kind.as_str(),
                &jobs[b].indicator,
                b,
            ))
        });
        let mut tries = 0;
        loop {
            match self
                .enqueue_once(jobs, &order, now, max_age_ms, max_attempts)
                .await
            {
                Err(e) if is_deadlock(&e) && tries < DEADLOCK_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    async fn enqueue_batches(
        &self,
        batches: tokio::sync::mpsc::Receiver<Vec<NewJob>>,
        now: Millis,
        max_age_ms: i64,
        max_attempts: u32,
        stop: &CancellationToken,
    ) -> Result<Vec<(i64, Enqueued)>, Error> {
        let queued = super::enqueue_each(self, batches, now, max_age_ms, max_attempts, stop).await;
        self.fold_counts_or_warn().await;
        queued
    }

    async fn claim_as(
        &self,
        owner: &str,
        n: u32,
        now: Millis,
        lease_ms: i64,
        may: MaySubmit,
    ) -> Result<Vec<Job>, Error> {
        // SKIP LOCKED: daemons claiming at the same moment take different jobs instead of
        // queueing behind each other's row locks. A job whose every path is on other hosts
        // with a daemon is theirs (`bool_or` of no rows is NULL: a job with no path is
        // anyone's). Without a daemon there, anyone may look it up: a known file gets its
        // verdict; one to upload waits for that host (`Store::seen_on_other_hosts`). A job to
        // submit (step `upload`) is left to processes whose own policy allows that too
        // (`MaySubmit`).
        let (files, urls) = may.kinds();
        let rows = sqlx::query(
            "WITH picked AS (
                 SELECT id FROM jobs WHERE state = 'available' AND scheduled_at <= $3
                   AND (SELECT bool_or(p.host IN ('', $5)
                                       OR p.host NOT IN (SELECT host FROM workers))
                        FROM file_paths p WHERE p.job_id = jobs.id) IS NOT FALSE
                   AND (NOT allow_submit OR step <> 'upload' OR kind IN ($6, $7))
                 ORDER BY priority DESC, scheduled_at, id LIMIT $4
                 FOR UPDATE SKIP LOCKED),
             claimed AS (
                 UPDATE jobs SET state = 'running', lease_owner = $1, lease_expires_at = $2,
                     attempt = attempt + 1, updated_at = $3
                 FROM picked WHERE jobs.id = picked.id
                 RETURNING jobs.id, jobs.kind, jobs.indicator, jobs.step, jobs.attempt,
                     jobs.max_attempts, jobs.allow_submit, jobs.submitted_at, jobs.analysis_id,
                     jobs.polls, jobs.priority, jobs.scheduled_at)
             SELECT * FROM claimed ORDER BY priority DESC, scheduled_at, id",
        )
        .bind(owner)
        .bind(now + lease_ms)
        .bind(now)
        .bind(int(n))
        .bind(&*self.host)
        .bind(files)
        .bind(urls)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| job_from_row(r, owner)).collect())
    }

    async fn extend_lease(&self, job: &Job, until: Millis) -> Result<bool, Error> {
        self.fenced_update(job, "lease_expires_at = $3", "", until)
            .await
    }

    async fn mark_unknown(&self, job: &Job, now: Millis) -> Result<bool, Error> {
        // The priority of `Step::Upload`.
        const SET: &str = "step = 'upload', priority = GREATEST(priority, 2), updated_at = $3";
        self.fenced_update(job, SET, "", now).await
    }

    async fn mark_submitting(&self, job: &Job, now: Millis) -> Result<bool, Error> {
        // The permission too, which a later enqueue may withdraw.
        const SET: &str = "submitted_at = $3, updated_at = $3";
        self.fenced_update(job, SET, " AND allow_submit", now).await
    }

    async fn count_attempt(&self, job: &Job, counted: bool) -> Result<bool, Error> {
        let attempt = match counted {
            true => job.attempt,
            false => job.attempt.saturating_sub(1),
        };
        const SET: &str = "attempt = $3";
        self.fenced_update(job, SET, "", i64::from(attempt)).await
    }

    async fn unmark_submitting(&self, job: &Job, now: Millis) -> Result<bool, Error> {
        const SET: &str = "submitted_at = NULL, updated_at = $3";
        self.fenced_update(job, SET, "", now).await
    }

    async fn snooze(&self, job: &Job, snooze: &Snooze, now: Millis) -> Result<bool, Error> {
        let sql = format!(
            "UPDATE jobs SET state = 'available', attempt = GREATEST(attempt - 1, 0), scheduled_at = $3,
                 step = $4, priority = GREATEST(priority, $5), analysis_id = COALESCE($6, analysis_id), polls = $7,
                 lease_owner = NULL, lease_expires_at = NULL, updated_at = $8
             WHERE {FENCE}"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(job.id)
            .bind(&job.owner)
            .bind(snooze.until)
            .bind(snooze.step.as_str())
            .bind(snooze.step.priority() as i32)
            .bind(&snooze.analysis_id)
            .bind(int(snooze.polls) as i32)
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn retry(
        &self,
        job: &Job,
        until: Millis,
        error: &str,
        now: Millis,
    ) -> Result<Retried, Error> {
        let mut tx = self.pool.begin().await?;
        let sql = format!(
            "UPDATE jobs SET state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
                 finished_at = CASE WHEN attempt >= max_attempts THEN $5 END,
                 scheduled_at = $3, last_error = $4, lease_owner = NULL, lease_expires_at = NULL,
                 updated_at = $5
             WHERE {FENCE} RETURNING state"
        );
        let state: Option<String> = sqlx::query_scalar(AssertSqlSafe(sql))
            .bind(job.id)
            .bind(&job.owner)
            .bind(until)
            .bind(error)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
        let outcome = match state.as_deref() {
            None => Retried::LeaseLost,
            Some("discarded") => {
                let why = format!("gave up after {} attempts: {error}", job.attempt);
                upsert_verdict(&mut tx, job.id, &VerdictRecord::failed(why, now), true).await?;
                Retried::Discarded
            }
            Some(_) => Retried::Later,
        };
        tx.commit().await?;
        Ok(outcome)
    }

    async fn complete(
        &self,
        job: &Job,
        verdict: &VerdictRecord,
        now: Millis,
    ) -> Result<bool, Error> {
        finish(&self.pool, job, "completed", verdict, now).await
    }

    async fn discard(
        &self,
        job: &Job,
        verdict: &VerdictRecord,
        now: Millis,
    ) -> Result<bool, Error> {
        finish(&self.pool, job, "discarded", verdict, now).await
    }

    async fn release(&self, job: &Job, now: Millis) -> Result<bool, Error> {
        const SET: &str = "state = 'available', attempt = GREATEST(attempt - 1, 0),
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $3";
        self.fenced_update(job, SET, "", now).await
    }

    async fn rescue(&self, now: Millis) -> Result<u64, Error> {
        let mut tries = 0;
        loop {
            match self.rescue_once(now).await {
                Err(e) if is_deadlock(&e) && tries < DEADLOCK_RETRIES => tries += 1,
                other => return other,
            }
        }
    }

    async fn heartbeat(
        &self,
        owner: &str,
        host: &str,
        pid: u32,
        now: Millis,
        stale_ms: i64,
        dead: &[String],
    ) -> Result<(), Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO workers (owner, host, pid, started_at, heartbeat_at) VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(owner)
        .bind(host)
        .bind(int(pid))
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM workers WHERE heartbeat_at < $1")
            .bind(now - stale_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM workers WHERE owner = ANY($1)")
            .bind(dead)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        // Every daemon beats every few seconds: the log of count changes stays short.
        self.fold_counts().await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        let rows: Vec<super::WorkerRow> = sqlx::query_as(
            "SELECT w.owner, w.host, w.pid, w.heartbeat_at,
                    (SELECT COUNT(*) FROM jobs j WHERE j.lease_owner = w.owner AND j.state = 'running') AS in_flight,
                    w.limits
             FROM workers w ORDER BY w.host, w.pid",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.into_iter().map(WorkerInfo::from).collect())
    }

    async fn finished_since(&self, since: Millis) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM verdicts WHERE checked_at >= $1")
            .bind(since)
            .fetch_one(&self.pool)
            .await?;
        Ok(n as u64)
    }

    async fn describe_worker(&self, owner: &str, limits: &str) -> Result<(), Error> {
        sqlx::query("UPDATE workers SET limits = $2 WHERE owner = $1")
            .bind(owner)
            .bind(limits)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unregister(&self, owner: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM workers WHERE owner = $1")
            .bind(owner)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn put_first(&self, ids: &[i64], may: MaySubmit) -> Result<(), Error> {
        let (files, urls) = may.kinds();
        sqlx::query(
            "UPDATE jobs SET priority = $2, allow_submit = allow_submit AND kind IN ($3, $4)
             WHERE id = ANY($1) AND state = 'available'",
        )
        .bind(ids)
        .bind(Step::AWAITED as i32)
        .bind(files)
        .bind(urls)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn file_paths(&self, job_id: i64) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT path FROM file_paths WHERE job_id = $1 AND host IN ('', $2)
             ORDER BY seen_at DESC, path",
        )
        .bind(job_id)
        .bind(&*self.host)
        .fetch_all(&self.pool)
        .await
    }

    async fn seen_on_other_hosts(&self, job_id: i64) -> Result<bool, Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM file_paths WHERE job_id = $1 AND host NOT IN ('', $2))",
        )
        .bind(job_id)
        .bind(&*self.host)
        .fetch_one(&self.pool)
        .await
    }

    async fn files_seen_under(
        &self,
        dir: &str,
        allow_submit: bool,
    ) -> Result<Vec<FileSeen>, Error> {
        let rows: Vec<super::SightingRow> = sqlx::query_as(
            "SELECT DISTINCT ON (p.path) p.path, p.size, p.modified_ns, p.inode, p.seen_at,
                    j.state, j.allow_submit, j.analysis_id, v.verdict, v.checked_at
             FROM file_paths p JOIN jobs j ON j.id = p.job_id
             LEFT JOIN verdicts v ON v.job_id = p.job_id
             WHERE left(p.path, length($1)) = $1 AND p.host IN ('', $2)
             ORDER BY p.path, p.seen_at DESC",
        )
        .bind(dir)
        .bind(&*self.host)
        .fetch_all(&self.pool)
        .await?;
        Ok(super::files_seen(rows, allow_submit))
    }

    async fn list_read(&self, seen: &FileSeen, now: Millis) -> Result<(), Error> {
        let Some((modified_ns, inode)) = seen.unchanged_if else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO lists_read (host, path, size, modified_ns, inode, read_at)
             VALUES ($6, $1, $2, $3, $4, $5)
             ON CONFLICT (host, path) DO UPDATE SET size = excluded.size,
                 modified_ns = excluded.modified_ns, inode = excluded.inode,
                 read_at = excluded.read_at",
        )
        .bind(&seen.path)
        .bind(seen.size as i64)
        .bind(modified_ns)
        .bind(inode)
        .bind(now)
        .bind(&*self.host)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn lists_read_under(&self, dir: &str, submit_urls: bool) -> Result<Vec<FileSeen>, Error> {
        // As SQLite's (see there).
        let rows: Vec<super::ListRow> = sqlx::query_as(
            "SELECT path, size, modified_ns, inode FROM lists_read
             WHERE host = $2 AND left(path, length($1)) = $1
               AND path NOT IN (SELECT s.source FROM verdicts v
                                JOIN jobs j ON j.id = v.job_id
                                JOIN sources s ON s.job_id = v.job_id
                                WHERE v.verdict = 'failed'
                                   OR ($3 AND v.verdict = 'unknown' AND j.kind = 'url'
                                       AND NOT j.allow_submit))",
        )
        .bind(dir)
        .bind(&*self.host)
        .bind(submit_urls)
        .fetch_all(&self.pool)
        .await?;
        Ok(super::lists_seen(rows))
    }

    async fn poll_estimates(&self) -> Result<Option<(f64, f64)>, Error> {
        sqlx::query_as("SELECT first_ms, second_ms FROM poll_estimates")
            .fetch_optional(&self.pool)
            .await
    }

    async fn save_poll_estimates(
        &self,
        (first_ms, second_ms): (f64, f64),
        now: Millis,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO poll_estimates (id, first_ms, second_ms, updated_at) VALUES (1, $1, $2, $3)
             ON CONFLICT (id) DO UPDATE SET first_ms = excluded.first_ms,
                 second_ms = excluded.second_ms, updated_at = excluded.updated_at",
        )
        .bind(first_ms)
        .bind(second_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn fresh_verdict_for_hash(
        &self,
        hash: &str,
        since: Millis,
        unknown_will_do: bool,
    ) -> Result<Option<VerdictRecord>, Error> {
        let sql = format!(
            "SELECT {VERDICT_COLUMNS} FROM verdicts v
             WHERE (v.sha256 = $1 OR v.md5 = $1 OR v.sha1 = $1) AND v.checked_at >= $2
               AND (v.verdict IN ('malicious', 'suspicious', 'clean')
                    OR ($3 AND v.verdict = 'unknown'))
             ORDER BY v.checked_at DESC LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(hash)
            .bind(since)
            .bind(unknown_will_do)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.and_then(|r| verdict_from_row(&r, 0)))
    }

    async fn results(&self, ids: &[i64]) -> Result<Vec<JobResult>, Error> {
        // One statement for all the jobs, each with this host's paths, rather than two round
        // trips per job. The VirusTotal objects are left out: no caller shows them.
        let sql = format!(
            "SELECT j.id, j.kind, j.indicator, j.state, {},
                 ARRAY(SELECT path FROM file_paths WHERE job_id = j.id AND host IN ('', $2)
                       ORDER BY seen_at DESC, path)
             FROM unnest($1::bigint[]) WITH ORDINALITY AS e(id, n)
             JOIN jobs j ON j.id = e.id
             LEFT JOIN verdicts v ON v.job_id = j.id
             ORDER BY e.n",
            VERDICT_COLUMNS.replace("v.raw", "NULL::bytea")
        );
        let rows = sqlx::query(AssertSqlSafe(sql))
            .bind(ids)
            .bind(&*self.host)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|row| {
                let kind: String = row.get(1);
                JobResult {
                    id: row.get(0),
                    kind: kind.parse().unwrap_or(Kind::Hash),
                    indicator: row.get(2),
                    state: row.get(3),
                    verdict: verdict_from_row(row, 4),
                    paths: row.get(22),
                }
            })
            .collect())
    }

    async fn unfinished(&self, ids: &[i64]) -> Result<Vec<i64>, Error> {
        sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state IN ('available', 'running') AND id = ANY($1)",
        )
        .bind(ids)
        .fetch_all(&self.pool)
        .await
    }

    async fn counts(&self) -> Result<QueueCounts, Error> {
        let mut counts = QueueCounts::default();
        // The counts plus the changes not folded into them yet (migration 7).
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT state, kind, step, SUM(n)::BIGINT FROM (
                 SELECT state, kind, step, n FROM job_counts
                 UNION ALL SELECT state, kind, step, n FROM job_count_changes) c
             GROUP BY state, kind, step HAVING SUM(n) > 0",
        )
        .fetch_all(&self.pool)
        .await?;
        for (state, kind, step, n) in rows {
            counts.add(state, kind, &step, n as u64);
        }
        let rows: Vec<(String, i64)> = sqlx::query_as(
            "SELECT verdict, SUM(n)::BIGINT FROM (
                 SELECT verdict, n FROM verdict_counts
                 UNION ALL SELECT verdict, n FROM verdict_count_changes) c
             GROUP BY verdict HAVING SUM(n) > 0",
        )
        .fetch_all(&self.pool)
        .await?;
        counts.by_verdict = rows.into_iter().map(|(v, n)| (v, n as u64)).collect();
        // Ids grow with creation, so the first unfinished id is the oldest (`jobs_by_state`;
        // one MIN per state, which PostgreSQL reads off the index).
        counts.oldest_pending = sqlx::query_as(
            "SELECT indicator, created_at FROM jobs WHERE id = LEAST(
                 (SELECT MIN(id) FROM jobs WHERE state = 'available'),
                 (SELECT MIN(id) FROM jobs WHERE state = 'running'))",
        )
        .fetch_optional(&self.pool)
        .await?;
        counts.last_errors = sqlx::query_as(
            "SELECT indicator, last_error, updated_at FROM jobs WHERE last_error IS NOT NULL
             ORDER BY updated_at DESC LIMIT 5",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(counts)
    }

    async fn recheck(
        &self,
        verdicts: &[Verdict],
        kinds: &[Kind],
        older_than: Millis,
        now: Millis,
    ) -> Result<u64, Error> {
        // Empty filters mean "all"; arrays keep the statement fixed.
        let verdicts: Vec<&str> = verdicts.iter().map(|v| v.as_str()).collect();
        let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
        let sql = format!(
            "{REOPEN_FOR_RECHECK}
             WHERE id IN (SELECT j.id FROM jobs j JOIN verdicts v ON v.job_id = j.id
                          WHERE j.state IN ('completed', 'discarded') AND v.checked_at < $1
                            AND (cardinality($3::text[]) = 0 OR v.verdict = ANY($3))
                            AND (cardinality($4::text[]) = 0 OR j.kind = ANY($4)))"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(older_than)
            .bind(now)
            .bind(&verdicts)
            .bind(&kinds)
            .execute(&self.pool)
            .await?;
        self.fold_counts_or_warn().await;
        Ok(done.rows_affected())
    }

    async fn recheck_pending(&self, min_gap_ms: i64, now: Millis) -> Result<u64, Error> {
        let sql = format!(
            "{REOPEN_FOR_RECHECK}
             WHERE id IN (SELECT j.id FROM jobs j JOIN verdicts v ON v.job_id = j.id
                          WHERE j.state IN ('completed', 'discarded') AND v.verdict = 'pending'
                            AND v.checked_at <= $2 - GREATEST($1,
                                (v.checked_at - COALESCE(j.submitted_at, j.created_at)) / 2))"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(min_gap_ms)
            .bind(now)
            .execute(&self.pool)
            .await?;
        self.fold_counts_or_warn().await;
        Ok(done.rows_affected())
    }

    async fn take_quota(
        &self,
        key_id: &str,
        limits: &QuotaLimits,
        clock: Clock,
    ) -> Result<QuotaDecision, Error> {
        // One statement: the check, the per-key lock and the record are the database function
        // `take_quota` (migrations/postgres), so the lock is held for one round trip's work. The
        // clock is read just before it: the only wait left in between is another process's grant
        // for the same key, one statement long (there is no writer queue as in SQLite).
        let now = clock();
        let ((day, day_end), (month, month_end)) = periods(now);
        let (decision, at): (String, Millis) = sqlx::query_as(
            "SELECT o_decision, o_at FROM take_quota($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(key_id)
        .bind(now)
        .bind(i32::try_from(limits.requests).unwrap_or(i32::MAX))
        .bind(limits.window_ms)
        .bind(int(limits.daily))
        .bind(limits.monthly.map(int))
        .bind(day)
        .bind(day_end)
        .bind(month)
        .bind(month_end)
        .fetch_one(&self.pool)
        .await?;
        Ok(match decision.as_str() {
            "granted" => QuotaDecision::Granted(at),
            "exhausted" => QuotaDecision::Exhausted(at),
            _ => QuotaDecision::WaitUntil(at),
        })
    }

    async fn move_quota_grant(
        &self,
        key_id: &str,
        granted_at: Millis,
        answered_at: Millis,
    ) -> Result<(), Error> {
        // Under the key's lock, so that no grant is judged while the row is between its two
        // times. Rows of one key at one time are interchangeable: any one of them is moved.
        let mut tx = self.quota_locked(key_id).await?;
        let moved = sqlx::query(
            "UPDATE quota_log SET at = $3 WHERE ctid =
                (SELECT ctid FROM quota_log WHERE key_id = $1 AND at = $2 LIMIT 1)",
        )
        .bind(key_id)
        .bind(granted_at)
        .bind(answered_at)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if moved == 0 {
            sqlx::query("INSERT INTO quota_log (key_id, at) VALUES ($1, $2)")
                .bind(key_id)
                .bind(answered_at)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn return_quota_grant(&self, key_id: &str, granted_at: Millis) -> Result<(), Error> {
        let mut tx = self.quota_locked(key_id).await?;
        sqlx::query(
            "DELETE FROM quota_log WHERE ctid =
                (SELECT ctid FROM quota_log WHERE key_id = $1 AND at = $2 LIMIT 1)",
        )
        .bind(key_id)
        .bind(granted_at)
        .execute(&mut *tx)
        .await?;
        let ((day, _), (month, _)) = periods(granted_at);
        sqlx::query(
            "UPDATE quota_periods SET used = used - 1
             WHERE key_id = $1 AND period IN ($2, $3) AND used > 0",
        )
        .bind(key_id)
        .bind(day)
        .bind(month)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn pause_quota(&self, key_id: &str, until: Millis) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO quota_pauses (key_id, until) VALUES ($1, $2)
             ON CONFLICT (key_id) DO UPDATE SET until = GREATEST(quota_pauses.until, excluded.until)",
        )
        .bind(key_id)
        .bind(until)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn count_requests(
        &self,
        key_id: &str,
        n: u64,
        now: Millis,
    ) -> Result<Option<Millis>, Error> {
        if n > 0 {
            let ((day, _), (month, _)) = periods(now);
            sqlx::query(
                "INSERT INTO quota_periods AS q (key_id, period, used) VALUES ($1, $2, $4), ($1, $3, $4)
                 ON CONFLICT (key_id, period) DO UPDATE SET used = q.used + excluded.used",
            )
            .bind(key_id)
            .bind(day)
            .bind(month)
            .bind(n as i64)
            .execute(&self.pool)
            .await?;
        }
        sqlx::query_scalar("SELECT until FROM quota_pauses WHERE key_id = $1 AND until > $2")
            .bind(key_id)
            .bind(now)
            .fetch_optional(&self.pool)
            .await
    }

    async fn quota_keys(&self) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT key_id FROM quota_periods GROUP BY key_id ORDER BY MAX(period) DESC",
        )
        .fetch_all(&self.pool)
        .await
    }

    async fn quota_usage(
        &self,
        key_id: &str,
        window_ms: i64,
        now: Millis,
    ) -> Result<QuotaUsage, Error> {
        let ((day, _), (month, _)) = periods(now);
        let in_window: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM quota_log WHERE key_id = $1 AND at > $2")
                .bind(key_id)
                .bind(now - window_ms)
                .fetch_one(&self.pool)
                .await?;
        let used = |period: String| {
            sqlx::query_scalar::<_, i64>(
                "SELECT used FROM quota_periods WHERE key_id = $1 AND period = $2",
            )
            .bind(key_id.to_owned())
            .bind(period)
        };
        let today = used(day).fetch_optional(&self.pool).await?.unwrap_or(0);
        let this_month = used(month).fetch_optional(&self.pool).await?.unwrap_or(0);
        let paused_until: Option<Millis> =
            sqlx::query_scalar("SELECT until FROM quota_pauses WHERE key_id = $1")
                .bind(key_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(QuotaUsage {
            in_window: in_window as u64,
            today: today as u64,
            this_month: this_month as u64,
            paused_until: paused_until.filter(|&u| u > now),
        })
    }

    fn report(&self, query: &ReportQuery) -> BoxStream<'_, Result<ReportRow, Error>> {
        let (sql, texts) = report_sql(query);
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for text in texts {
            q = q.bind(text);
        }
        // NULL: no limit.
        let limit = query.limit.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        q.bind(limit)
            .fetch(&self.pool)
            .map(|row| row.and_then(|row| report_row(&row)))
            .boxed()
    }

    async fn raw_object(&self, indicator: &str) -> Result<Option<RawObject>, Error> {
        // One indexed look-up per way of naming the object, instead of an OR across tables
        // that would scan every job; naming every kind lets the unique (kind, indicator) index serve.
        let row = sqlx::query(
            "SELECT j.kind, j.indicator, v.raw FROM jobs j LEFT JOIN verdicts v ON v.job_id = j.id
             WHERE j.id IN (SELECT id FROM jobs
                            WHERE kind IN ('file', 'hash', 'url', 'domain', 'ip')
                              AND indicator IN ($1, lower($1))
                            UNION SELECT job_id FROM verdicts WHERE sha256 = lower($1)
                            UNION SELECT job_id FROM verdicts WHERE md5 = lower($1)
                            UNION SELECT job_id FROM verdicts WHERE sha1 = lower($1))
             ORDER BY v.raw IS NULL, v.checked_at DESC, j.id LIMIT 1",
        )
        .bind(indicator)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let kind: String = row.get(0);
        let blob: Option<Vec<u8>> = row.get(2);
        Ok(Some(RawObject {
            kind: kind.parse().unwrap_or(Kind::Hash),
            indicator: row.get(1),
            json: blob.as_deref().and_then(decompress),
        }))
    }
}

/// The report query for `query`, and the user-given texts to bind in order (`$1`, `$2`, ...;
/// the limit is bound last). Job ids, times, verdict and kind filters are numbers or enum
/// names, never user text, so they are inlined. The same query as SQLite's, in PostgreSQL's
/// dialect (`json_agg` for `json_group_array`, `right` for a negative `substr`).
fn report_sql(query: &ReportQuery) -> (String, Vec<String>) {
    let quoted = |names: Vec<&str>| {
        names
            .iter()
            .map(|n| format!("'{n}'"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut filter = String::new();
    let mut texts = Vec::new();
    if !query.jobs.is_empty() {
        let ids: Vec<String> = query.jobs.iter().map(i64::to_string).collect();
        filter += &format!(" AND j.id IN ({})", ids.join(", "));
    }
    if !query.verdicts.is_empty() {
        let names = query.verdicts.iter().map(|v| v.as_str()).collect();
        filter += &format!(" AND v.verdict IN ({})", quoted(names));
    }
    if !query.kinds.is_empty() {
        let names = query.kinds.iter().map(|k| k.as_str()).collect();
        filter += &format!(" AND j.kind IN ({})", quoted(names));
    }
    if query.only_with_paths {
        filter += " AND EXISTS (SELECT 1 FROM file_paths p WHERE p.job_id = j.id)";
    }
    if !query.sources.is_empty() {
        let mut any = Vec::new();
        for source in &query.sources {
            // "lists/a.txt/" and "lists/a.txt" name the same thing.
            let trimmed = source.trim_end_matches('/');
            texts.push(if trimmed.is_empty() {
                source.clone()
            } else {
                trimmed.to_owned()
            });
            let n = texts.len();
            // A list by its stored name or its file name; a file by its path or a folder above it.
            any.push(format!(
                "EXISTS (SELECT 1 FROM sources s WHERE s.job_id = j.id
                     AND (s.source = ${n} OR right(s.source, length(${n}) + 1) = '/' || ${n}))
                 OR EXISTS (SELECT 1 FROM file_paths p WHERE p.job_id = j.id
                     AND (p.path = ${n} OR substr(p.path, 1, length(${n}) + 1) = rtrim(${n}, '/') || '/'))"
            ));
        }
        filter += &format!(" AND ({})", any.join(" OR "));
    }
    for (bound, op) in [(query.since, ">="), (query.until, "<")] {
        if let Some(at) = bound {
            filter += &format!(" AND v.checked_at {op} {at}");
        }
    }
    let rank = |names: Vec<&str>, column: &str| {
        let arms: String = names
            .iter()
            .enumerate()
            .map(|(i, n)| format!(" WHEN '{n}' THEN {i}"))
            .collect();
        format!("CASE {column}{arms} ELSE {} END", names.len())
    };
    let order = match query.sort {
        ReportSort::FirstSeen => "j.id".to_owned(),
        ReportSort::CheckedAt => "v.checked_at DESC, j.id".to_owned(),
        ReportSort::Verdict => format!(
            "{}, COALESCE(v.malicious, -1) DESC, j.id",
            rank(
                Verdict::ALL.iter().map(|v| v.as_str()).collect(),
                "v.verdict"
            )
        ),
        ReportSort::Indicator => "j.indicator, j.id".to_owned(),
        ReportSort::Malicious => "COALESCE(v.malicious, -1) DESC, j.id".to_owned(),
        ReportSort::Kind => format!(
            "{}, j.id",
            rank(Kind::ALL.iter().map(|k| k.as_str()).collect(), "j.kind")
        ),
    };
    let limit = texts.len() + 1;
    let columns = VERDICT_COLUMNS.replace("v.raw", "NULL::bytea");
    let sql = format!(
        "SELECT j.id, j.kind, j.indicator, j.state, j.created_at, j.last_error,
             (SELECT json_agg(p.path ORDER BY p.path)::text FROM file_paths p WHERE p.job_id = j.id),
             (SELECT json_agg(json_build_array(s.source, s.line) ORDER BY s.source, s.line)::text
                FROM sources s WHERE s.job_id = j.id),
             {columns}
         FROM jobs j LEFT JOIN verdicts v ON v.job_id = j.id
         WHERE 1 = 1{filter}
         ORDER BY {order}
         LIMIT ${limit}"
    );
    (sql, texts)
}

/// Reads a row of [`report_sql`].
fn report_row(row: &PgRow) -> Result<ReportRow, Error> {
    let kind: String = row.try_get(1)?;
    let paths: Option<String> = row.try_get(6)?;
    let sources: Option<String> = row.try_get(7)?;
    let decode = |e: serde_json::Error| Error::Decode(Box::new(e));
    let paths: Vec<String> = match paths {
        Some(json) => serde_json::from_str(&json).map_err(decode)?,
        None => Vec::new(),
    };
    let sources: Vec<(String, u32)> = match sources {
        Some(json) => serde_json::from_str(&json).map_err(decode)?,
        None => Vec::new(),
    };
    Ok(ReportRow {
        job: JobResult {
            id: row.try_get(0)?,
            kind: kind.parse().unwrap_or(Kind::Hash),
            indicator: row.try_get(2)?,
            state: row.try_get(3)?,
            verdict: verdict_from_row(row, 8),
            paths,
        },
        sources,
        created_at: row.try_get(4)?,
        last_error: row.try_get(5)?,
    })
}

/// Completes or discards a running job and writes its verdict, in one transaction.
async fn finish(
    pool: &PgPool,
    job: &Job,
    state: &'static str,
    verdict: &VerdictRecord,
    now: Millis,
) -> Result<bool, Error> {
    let mut tx = pool.begin().await?;
    let sql = format!(
        "UPDATE jobs SET state = $3, finished_at = $4, updated_at = $4, lease_owner = NULL,
             lease_expires_at = NULL, last_error = $5
         WHERE {FENCE}"
    );
    let done = sqlx::query(AssertSqlSafe(sql))
        .bind(job.id)
        .bind(&job.owner)
        .bind(state)
        .bind(now)
        .bind(&verdict.error)
        .execute(&mut *tx)
        .await?;
    if done.rows_affected() != 1 {
        return Ok(false);
    }
    upsert_verdict(&mut tx, job.id, verdict, state == "discarded").await?;
    tx.commit().await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_migration_file_is_applied() {
        super::super::check_migrations("migrations/postgres", &super::MIGRATIONS);
    }
}
