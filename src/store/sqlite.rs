//! The SQLite adapter: a small read-only pool for reports and status, and three writer
//! connections. The writes each job makes (claim, stored-verdict check, quota grant, lease,
//! outcome) go through [`GroupCommit`]: a thread of its own runs them on its connection, those
//! waiting together in one transaction. Jobs are queued on a connection of their own (see
//! [`Enqueuer`]), and migrations and housekeeping (registration, pauses) take sqlx's writer
//! connection. All write in `BEGIN IMMEDIATE` transactions, so they take turns on SQLite's
//! write lock through `busy_timeout`, as separate processes do.
//! WAL, `busy_timeout` and `synchronous=NORMAL` are set on every connection.

use std::cell::RefCell;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, TimeZone, Utc};
use futures_util::stream::BoxStream;
use futures_util::{StreamExt, TryStreamExt};
use rusqlite::{OptionalExtension, params};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{AssertSqlSafe, Connection as _, Row, SqlitePool};
use tokio::sync::{OnceCell, mpsc};
use tokio_util::sync::CancellationToken;

use super::checkpoint::Checkpoints;
use super::enqueue::{Enqueueing, Enqueuer};
use super::group_commit::GroupCommit;
use super::{
    Clock, Columns, Enqueued, Error, FileSeen, Job, JobResult, MaySubmit, Millis, NewJob,
    QueueCounts, QuotaDecision, QuotaLimits, QuotaUsage, RawObject, ReportQuery, ReportRow,
    ReportSort, Retried, Snooze, Step, Store, WorkerInfo, verdict_from_row,
};
use crate::indicator::Kind;
use crate::verdict::{Verdict, VerdictRecord};

/// The schema, oldest first (see `migrations/sqlite/`).
const MIGRATIONS: [(i64, &str, &str); 12] = [
    (
        1,
        "queue",
        include_str!("../../migrations/sqlite/0001_queue.sql"),
    ),
    (
        2,
        "report views",
        include_str!("../../migrations/sqlite/0002_report_views.sql"),
    ),
    (
        3,
        "status counts",
        include_str!("../../migrations/sqlite/0003_status_counts.sql"),
    ),
    (
        4,
        "lean ingest",
        include_str!("../../migrations/sqlite/0004_lean_ingest.sql"),
    ),
    (
        5,
        "lean jobs",
        include_str!("../../migrations/sqlite/0005_lean_jobs.sql"),
    ),
    (
        6,
        "clustered provenance",
        include_str!("../../migrations/sqlite/0006_clustered_provenance.sql"),
    ),
    (
        7,
        "count new jobs per transaction",
        include_str!("../../migrations/sqlite/0007_count_new_jobs_per_transaction.sql"),
    ),
    (
        8,
        "file fingerprints",
        include_str!("../../migrations/sqlite/0008_file_fingerprints.sql"),
    ),
    (
        9,
        "lists read",
        include_str!("../../migrations/sqlite/0009_lists_read.sql"),
    ),
    (
        10,
        "poll estimates",
        include_str!("../../migrations/sqlite/0010_poll_estimates.sql"),
    ),
    (
        11,
        "worker limits",
        include_str!("../../migrations/sqlite/0011_worker_limits.sql"),
    ),
    (
        12,
        "upload step",
        include_str!("../../migrations/sqlite/0012_upload_step.sql"),
    ),
];

/// The size the write-ahead log file is cut back to when it starts over after growing past it
/// (a batch of a large list, or a migration, writes tens or hundreds of MiB to it).
const WAL_KEPT_BYTES: u64 = 64 << 20;

/// The page cache of the writer thread's connection (see [`GroupCommit`]): it holds what the
/// jobs being worked on touch.
const WRITER_CACHE_KIB: u32 = 16 * 1024;

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The connection for migrations and housekeeping writes.
    write: SqlitePool,
    /// The connection that queues jobs: lists, files, look-ups.
    enqueuer: Enqueuer,
    /// Read-only connections for reports and status, so that they never wait for the writer.
    read: SqlitePool,
    /// The database file.
    path: Arc<Path>,
    /// The writer and checkpoint threads, started by the first write. The last field: the
    /// checkpoints stop after every other connection closed, and their last one empties the log.
    threads: Arc<OnceCell<Threads>>,
}

/// The threads of a store that writes; commands that only read (`status`, `report`) start
/// neither.
#[derive(Debug)]
struct Threads {
    /// The writer thread for the writes of every job (claims, quota grants, outcomes),
    /// committed in groups.
    grouped: GroupCommit,
    /// The thread that copies the log back into the database file. The last field: it is
    /// dropped after the writer's queue.
    _checkpoints: Checkpoints,
}

/// Columns of a verdict row, in the order [`verdict_from_row`] reads them.
const VERDICT_COLUMNS: &str = "v.verdict, v.malicious, v.suspicious, v.harmless, v.undetected, v.timeout, \
     v.type_unsupported, v.failure, v.threat_label, v.sha256, v.md5, v.sha1, v.vt_id, v.vt_analysis_date, \
     v.checked_at, v.note, v.error, v.raw";

/// The fence of every change to a running job (binds: id, owner).
const FENCE: &str = "id = ?1 AND lease_owner = ?2 AND state = 'running'";

/// Jobs per statement of [`Store::results`].
const RESULTS_CHUNK: usize = 10_000;

/// Claims up to ?4 due jobs for ?1 until ?2 (now: ?3), the most urgent first, but for jobs at
/// step `upload` that may be submitted, of kinds other than ?5 and ?6
/// ([`super::MaySubmit::kinds`]). `LIMIT ?4 + 0`,
/// not `LIMIT ?4`: SQLite plans with a bare LIMIT parameter's value, so every new value made it
/// compile the statement (and its triggers) again, 5 % of the pipeline's CPU; the plan is the
/// same either way (the claimable index gives the order).
const CLAIM: &str = "UPDATE jobs SET state = 'running', lease_owner = ?1, lease_expires_at = ?2,
         attempt = attempt + 1, updated_at = ?3
     WHERE id IN (SELECT id FROM jobs WHERE state = 'available' AND scheduled_at <= ?3
                    AND (NOT allow_submit OR step <> 'upload' OR kind IN (?5, ?6))
                  ORDER BY priority DESC, scheduled_at, id LIMIT ?4 + 0)
     RETURNING id, kind, indicator, step, attempt, max_attempts, allow_submit, submitted_at,
               analysis_id, polls";

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and applies the migrations.
    pub async fn open(path: &Path) -> Result<SqliteStore, Error> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            .foreign_keys(true);
        // A 32 MiB page cache (SQLite's default is 2 MiB), as the enqueuer's: a migration may
        // rebuild the jobs table and its indexes.
        let write_options = options
            .clone()
            .pragma("cache_size", "-32768")
            .pragma("journal_size_limit", WAL_KEPT_BYTES.to_string());
        let write_pool = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(120))
            // No reaping of idle or old connections, so no pool maintenance task: sqlx 0.9.0's
            // can read a wrapped idle count and spin a core for good, which hangs the process
            // at exit too (sqlx#3645, seen once in our tests). Local connections need no reaping.
            .idle_timeout(None)
            .max_lifetime(None)
            // A COMMIT that failed (the disk was full) leaves the connection inside a
            // transaction as far as sqlx knows, and every later BEGIN on it fails: the one write
            // connection is replaced instead of poisoning the store for good.
            .after_release(|conn, _| Box::pin(async move { Ok(!conn.is_in_transaction()) }));
        // Two processes opening a new database at the same moment (a daemon and a `status`, or
        // two daemons started together) race: switching it to WAL cannot wait on
        // `busy_timeout`, so the loser's connect fails with "database is locked"; and the
        // loser of the schema's creation fails with "table ... already exists" (its migration
        // was rolled back). Either way, trying again finds the winner's work done.
        let write = racing_another_process(
            "connect",
            || write_pool.clone().connect_with(write_options.clone()),
            |e| !cannot_write(e),
        )
        .await?;
        let migrator = super::migrator(&MIGRATIONS);
        let applied = async || -> i64 {
            sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
                .fetch_one(&write)
                .await
                .unwrap_or(0)
        };
        let before = applied().await;
        racing_another_process(
            "migration",
            || migrator.run(&write),
            |e| !migration_cannot_write(e),
        )
        .await?;
        if applied().await > before {
            // A migration may have rewritten a whole table into the log: copy it back now
            // rather than leave it to the next process (`journal_size_limit` then shrinks it).
            sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&write)
                .await?;
        }
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            // As the write pool: no maintenance task.
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options.read_only(true))
            .await?;
        let path: Arc<Path> = path.into();
        Ok(SqliteStore {
            write,
            enqueuer: Enqueuer::new(path.clone()),
            read,
            path,
            threads: Arc::new(OnceCell::new()),
        })
    }

    /// Opens the database at `path` for reading only, where it cannot be written: a copy on
    /// read-only media, or a file of another user's. Nothing is migrated: a database whose
    /// schema is older than this version's is refused. Every write fails.
    pub async fn open_read_only(path: &Path) -> anyhow::Result<SqliteStore> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .read_only(true)
            .busy_timeout(Duration::from_secs(30));
        let connect = async |options: SqliteConnectOptions| -> anyhow::Result<SqlitePool> {
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                // As the writing pools: no maintenance task.
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_with(options)
                .await?;
            let version: Option<i64> =
                sqlx::query_scalar("SELECT MAX(version) FROM _sqlx_migrations")
                    .fetch_one(&pool)
                    .await?;
            let current = MIGRATIONS.last().expect("a schema").0;
            if version.unwrap_or(0) < current {
                anyhow::bail!(
                    "its schema is older than this version's (migration {} of {current}) and it \
                     cannot be upgraded where it is: copy it somewhere writable",
                    version.unwrap_or(0)
                );
            }
            Ok(pool)
        };
        // Reading a WAL database needs its shared-memory file, which a directory we may not
        // write cannot hold unless a writer left it there. Then it is read as immutable: right
        // on read-only media, where nothing writes; in another user's directory, a process of
        // theirs writing meanwhile could make the read inconsistent (copy the file first). An
        // immutable database is read without its log: changes still in one would be missed.
        let read = match connect(options.clone()).await {
            Err(e)
                if e.downcast_ref::<Error>()
                    .and_then(sqlite_code)
                    .is_some_and(|c| c & 0xff == CANTOPEN) =>
            {
                let mut log = path.as_os_str().to_owned();
                log.push("-wal");
                if std::fs::metadata(&log).is_ok_and(|m| m.is_file() && m.len() > 0) {
                    anyhow::bail!(
                        "its log {} holds changes that cannot be read where they are: copy the \
                         database and its -wal file somewhere writable",
                        Path::new(&log).display()
                    );
                }
                connect(options.immutable(true)).await?
            }
            opened => opened?,
        };
        let path: Arc<Path> = path.into();
        Ok(SqliteStore {
            write: read.clone(),
            enqueuer: Enqueuer::new(path.clone()),
            read,
            path,
            threads: Arc::new(OnceCell::new()),
        })
    }

    /// The writer and checkpoint threads, started on first use.
    async fn threads(&self) -> Result<&Threads, Error> {
        self.threads
            .get_or_try_init(|| async {
                let grouped = GroupCommit::start(open_writer(&self.path, WRITER_CACHE_KIB)?)
                    .map_err(Error::Io)?;
                let checkpoints = Checkpoints::start(open_writer(&self.path, WRITER_CACHE_KIB)?)
                    .map_err(Error::Io)?;
                Ok(Threads {
                    grouped,
                    _checkpoints: checkpoints,
                })
            })
            .await
    }

    /// The enqueuer, once the checkpoint thread runs: a large list writes hundreds of MiB to the
    /// log.
    async fn enqueuer(&self) -> Result<&Enqueuer, Error> {
        self.threads().await?;
        Ok(&self.enqueuer)
    }

    /// The writer thread (see [`GroupCommit`]).
    async fn grouped(&self) -> Result<&GroupCommit, Error> {
        Ok(&self.threads().await?.grouped)
    }

    /// Runs one fenced `UPDATE jobs SET {set}` (binds: id, owner, `value` as ?3), on rows that
    /// also meet `also` (`""` or ` AND ...`), with the next group of writes; returns whether the
    /// lease still held (and `also` was met).
    async fn fenced_update(
        &self,
        job: &Job,
        set: &'static str,
        also: &'static str,
        value: Millis,
    ) -> Result<bool, Error> {
        let (id, owner) = (job.id, job.owner.clone());
        self.grouped()
            .await?
            .write(move |conn| {
                let mut update =
                    conn.prepare_cached(&format!("UPDATE jobs SET {set} WHERE {FENCE}{also}"))?;
                Ok(update.execute(params![id, owner, value])? == 1)
            })
            .await
    }

    /// Finishes a job (`completed` or `discarded`) with its verdict, if the lease still holds.
    async fn finish(
        &self,
        job: &Job,
        state: &'static str,
        verdict: &VerdictRecord,
        now: Millis,
    ) -> Result<bool, Error> {
        // Compressed before queueing: the writer connection is not held meanwhile.
        let raw = verdict.raw.as_deref().map(compress);
        let (id, owner, verdict) = (job.id, job.owner.clone(), verdict.clone());
        self.grouped()
            .await?
            .write(move |conn| {
                let finish = Finish {
                    owner: &owner,
                    state,
                    at: now,
                };
                let keep_better = state == "discarded";
                upsert_verdict(
                    conn,
                    id,
                    &verdict,
                    raw.as_deref(),
                    keep_better,
                    Some(finish),
                )
            })
            .await
    }

    /// The read-only pool, for reports that stream rows.
    pub fn read_pool(&self) -> &SqlitePool {
        &self.read
    }

    /// Closes both pools, checkpointing the WAL. The writer goes last: only the last connection
    /// to close, if it may write, folds the log back and removes it and the shared-memory file.
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

/// A rusqlite connection that writes (the writer thread's, the enqueuer's, the checkpoints'),
/// set up as sqlx's connections are, with a page cache of `cache_kib`.
pub(super) fn open_writer(path: &Path, cache_kib: u32) -> Result<rusqlite::Connection, Error> {
    let open = || -> rusqlite::Result<rusqlite::Connection> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(Duration::from_secs(30))?;
        conn.execute_batch(&format!(
            "PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -{cache_kib};
             PRAGMA journal_size_limit = {WAL_KEPT_BYTES};"
        ))?;
        conn.set_prepared_statement_cache_capacity(32);
        Ok(conn)
    };
    open().map_err(|e| {
        Error::Io(std::io::Error::other(format!(
            "cannot open {}: {e}",
            path.display()
        )))
    })
}

/// SQLite's result code for a file it cannot open (`SQLITE_CANTOPEN`, in the low byte of its
/// extended codes).
const CANTOPEN: i64 = 14;
/// `SQLITE_READONLY`: a write to a file opened (or only openable) for reading.
const READONLY: i64 = 8;

/// SQLite's extended result code of a database error.
fn sqlite_code(e: &Error) -> Option<i64> {
    e.as_database_error()?.code()?.parse().ok()
}

/// Whether opening a database for writing failed because it can only be read: the file or its
/// directory is read-only (its log and shared-memory files cannot be made there), also when a
/// migration found it so.
pub fn cannot_write(e: &Error) -> bool {
    match e {
        Error::Migrate(m) => migration_cannot_write(m),
        e => sqlite_code(e).is_some_and(|c| matches!(c & 0xff, CANTOPEN | READONLY)),
    }
}

/// [`cannot_write`], for a migration's error.
fn migration_cannot_write(e: &sqlx::migrate::MigrateError) -> bool {
    use sqlx::migrate::MigrateError;
    match e {
        MigrateError::Execute(inner) | MigrateError::ExecuteMigration(inner, _) => {
            cannot_write(inner)
        }
        _ => false,
    }
}

/// Runs `step` until it succeeds, up to six times in 1.5 s: for the races of opening a new
/// database that another process is opening too (see [`SqliteStore::open`]).
/// An error `may_be_a_race` says is not one is returned at once.
async fn racing_another_process<T, E, F, Fut>(
    what: &str,
    mut step: F,
    may_be_a_race: impl Fn(&E) -> bool,
) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut tries = 0;
    loop {
        match step().await {
            Ok(done) => return Ok(done),
            Err(e) if tries < 5 && may_be_a_race(&e) => {
                tries += 1;
                tracing::debug!(error = %e, "{what} raced another process; trying again");
                tokio::time::sleep(Duration::from_millis(100 * tries)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The quota decision for `key_id` at `now`, recording the request when it is granted.
fn take_quota(
    conn: &rusqlite::Connection,
    key_id: &str,
    limits: &QuotaLimits,
    now: Millis,
) -> rusqlite::Result<QuotaDecision> {
    let ((day, day_end), (month, month_end)) = periods(now);
    // The sliding window: with `requests` already sent after `window_start`, the next one
    // fits once the oldest of the last `requests` leaves the window.
    let window_start = now - limits.window_ms;
    // Finding that oldest request walks every request in the window: a thousand rows per grant
    // at a thousand requests a second. The days the window touches counted fewer requests than
    // it allows (day rows are `YYYY-MM-DD`, month rows shorter): then it cannot be full. The day
    // before counts too: a request granted then may be counted from its answer, in the window.
    let ((window_start_day, _), _) = periods(window_start - 86_400_000);
    let (paused, today, this_month, window_full_since): (Option<Millis>, i64, i64, Option<Millis>) =
        conn.prepare_cached(
            "SELECT (SELECT until FROM quota_pauses WHERE key_id = ?1),
                COALESCE((SELECT used FROM quota_periods WHERE key_id = ?1 AND period = ?2), 0),
                COALESCE((SELECT used FROM quota_periods WHERE key_id = ?1 AND period = ?3), 0),
                CASE WHEN (SELECT COALESCE(SUM(used), 0) FROM quota_periods
                           WHERE key_id = ?1 AND period >= ?6 AND length(period) = 10) <= ?5
                     THEN NULL
                     ELSE (SELECT at FROM quota_log WHERE key_id = ?1 AND at > ?4
                           ORDER BY at DESC LIMIT 1 OFFSET ?5)
                END",
        )?
        .query_row(
            params![
                key_id,
                day,
                month,
                window_start,
                limits.requests.saturating_sub(1),
                window_start_day
            ],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )?;
    if let Some(until) = paused.filter(|&u| u > now) {
        return Ok(QuotaDecision::WaitUntil(until));
    }
    if today >= i64::from(limits.daily) {
        return Ok(QuotaDecision::Exhausted(day_end));
    }
    if limits.monthly.is_some_and(|m| this_month >= i64::from(m)) {
        return Ok(QuotaDecision::Exhausted(month_end));
    }
    // `requests` sent within the window already: the oldest of them frees the next slot.
    if let Some(oldest) = window_full_since {
        return Ok(QuotaDecision::WaitUntil(oldest + limits.window_ms));
    }
    conn.prepare_cached("INSERT INTO quota_log (key_id, at) VALUES (?1, ?2)")?
        .execute(params![key_id, now])?;
    conn.prepare_cached("DELETE FROM quota_log WHERE key_id = ?1 AND at <= ?2")?
        .execute(params![key_id, window_start])?;
    add_to_periods(conn, key_id, (&day, &month), 1)?;
    Ok(QuotaDecision::Granted(now))
}

/// Adds `n` requests of `key_id` to its day's and month's counts.
fn add_to_periods(
    conn: &rusqlite::Connection,
    key_id: &str,
    (day, month): (&str, &str),
    n: u64,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO quota_periods (key_id, period, used) VALUES (?1, ?2, ?4), (?1, ?3, ?4)
         ON CONFLICT (key_id, period) DO UPDATE SET used = used + excluded.used",
    )?
    .execute(params![key_id, day, month, n as i64])?;
    Ok(())
}

/// The end of the key's pause (binds: key, now), if one holds.
const PAUSE: &str = "SELECT until FROM quota_pauses WHERE key_id = ?1 AND until > ?2";

/// [`Store::count_requests`].
fn count_requests(
    conn: &rusqlite::Connection,
    key_id: &str,
    n: u64,
    now: Millis,
) -> rusqlite::Result<Option<Millis>> {
    let ((day, _), (month, _)) = periods(now);
    add_to_periods(conn, key_id, (&day, &month), n)?;
    conn.prepare_cached(PAUSE)?
        .query_row(params![key_id, now], |r| r.get(0))
        .optional()
}

/// [`Store::move_quota_grant`]: rows of one key at one time are interchangeable, so any one of
/// them is moved.
fn move_quota_grant(
    conn: &rusqlite::Connection,
    key_id: &str,
    granted_at: Millis,
    answered_at: Millis,
) -> rusqlite::Result<()> {
    let moved = conn
        .prepare_cached(
            "UPDATE quota_log SET at = ?3 WHERE rowid =
                (SELECT rowid FROM quota_log WHERE key_id = ?1 AND at = ?2 LIMIT 1)",
        )?
        .execute(params![key_id, granted_at, answered_at])?;
    if moved == 0 {
        conn.prepare_cached("INSERT INTO quota_log (key_id, at) VALUES (?1, ?2)")?
            .execute(params![key_id, answered_at])?;
    }
    Ok(())
}

/// [`Store::return_quota_grant`]: any one row of the key at that time, as in
/// [`move_quota_grant`]. The counts are those of the grant's day and month.
fn return_quota_grant(
    conn: &rusqlite::Connection,
    key_id: &str,
    granted_at: Millis,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "DELETE FROM quota_log WHERE rowid =
            (SELECT rowid FROM quota_log WHERE key_id = ?1 AND at = ?2 LIMIT 1)",
    )?
    .execute(params![key_id, granted_at])?;
    let ((day, _), (month, _)) = periods(granted_at);
    conn.prepare_cached(
        "UPDATE quota_periods SET used = used - 1
         WHERE key_id = ?1 AND period IN (?2, ?3) AND used > 0",
    )?
    .execute(params![key_id, day, month])?;
    Ok(())
}

/// The columns of a verdict row as [`upsert_verdict`] writes them, and their parameters.
const VERDICT_INSERT: &str = "INSERT INTO verdicts (job_id, verdict, malicious, suspicious, harmless,
     undetected, timeout, type_unsupported, failure, engines, threat_label, sha256, md5, sha1, vt_id,
     vt_analysis_date, checked_at, note, error, raw)";
const VERDICT_VALUES: &str =
    "?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20";
/// A failed attempt does not replace a verdict VirusTotal already gave.
const KEEP_BETTER: &str = "ON CONFLICT (job_id) DO UPDATE SET verdict = excluded.verdict,
     checked_at = excluded.checked_at, note = excluded.note, error = excluded.error
     WHERE verdicts.verdict IN ('failed', 'pending')";
const REPLACE: &str = "ON CONFLICT (job_id) DO UPDATE SET verdict = excluded.verdict,
     malicious = excluded.malicious, suspicious = excluded.suspicious, harmless = excluded.harmless,
     undetected = excluded.undetected, timeout = excluded.timeout,
     type_unsupported = excluded.type_unsupported, failure = excluded.failure,
     engines = excluded.engines, threat_label = excluded.threat_label,
     sha256 = COALESCE(excluded.sha256, verdicts.sha256), md5 = COALESCE(excluded.md5, verdicts.md5),
     sha1 = COALESCE(excluded.sha1, verdicts.sha1), vt_id = COALESCE(excluded.vt_id, verdicts.vt_id),
     vt_analysis_date = excluded.vt_analysis_date, checked_at = excluded.checked_at,
     note = excluded.note, error = excluded.error, raw = COALESCE(excluded.raw, verdicts.raw)";

/// The end of a running job, written together with its verdict by [`upsert_verdict`].
struct Finish<'a> {
    /// The lease holder: nothing is written unless it still holds the job.
    owner: &'a str,
    /// `completed` or `discarded`.
    state: &'static str,
    at: Millis,
}

/// Inserts or replaces the verdict of a job (`raw`: its VirusTotal object, compressed).
/// `keep_better`: a failed attempt does not replace a verdict VirusTotal already gave (a failed
/// re-check must not lose the earlier verdict). With `finish`, the job is finished first, fenced
/// by its lease, and nothing is written when the lease no longer holds; returns whether it
/// held (always true without).
fn upsert_verdict(
    conn: &rusqlite::Connection,
    job_id: i64,
    v: &VerdictRecord,
    raw: Option<&[u8]>,
    keep_better: bool,
    finish: Option<Finish<'_>>,
) -> rusqlite::Result<bool> {
    if let Some(f) = finish {
        let finished = conn
            .prepare_cached(&format!(
                "UPDATE jobs SET state = ?3, finished_at = ?4, updated_at = ?4, lease_owner = NULL,
                     lease_expires_at = NULL, last_error = ?5
                 WHERE {FENCE}"
            ))?
            .execute(params![job_id, f.owner, f.state, f.at, v.error])?;
        if finished == 0 {
            return Ok(false);
        }
    }
    let s = v.stats;
    let conflict = if keep_better { KEEP_BETTER } else { REPLACE };
    conn.prepare_cached(&format!(
        "{VERDICT_INSERT} VALUES ({VERDICT_VALUES}) {conflict}"
    ))?
    .execute(params![
        job_id,
        v.verdict.as_str(),
        s.map(|s| s.malicious),
        s.map(|s| s.suspicious),
        s.map(|s| s.harmless),
        s.map(|s| s.undetected),
        s.map(|s| s.timeout),
        s.map(|s| s.type_unsupported),
        s.map(|s| s.failure),
        s.map(|s| s.engines()),
        v.threat_label,
        v.sha256,
        v.md5,
        v.sha1,
        v.vt_id,
        v.vt_analysis_date,
        v.checked_at,
        v.note,
        v.error,
        raw,
    ])?;
    Ok(true)
}

/// zstd at its default level: VT objects are repetitive JSON and shrink to about a fifth;
/// level 9 saved a little more but cost a millisecond per verdict (see BENCHMARKS.md).
pub fn compress(json: &[u8]) -> Vec<u8> {
    thread_local! {
        // A context per thread, kept: making one for every verdict allocated and cleared its
        // tables each time.
        static COMPRESSOR: RefCell<zstd::bulk::Compressor<'static>> =
            RefCell::new(zstd::bulk::Compressor::new(3).expect("level 3 is valid"));
    }
    COMPRESSOR
        .with_borrow_mut(|c| c.compress(json))
        .expect("compressing into memory cannot fail")
}

/// The inverse of [`compress`]; `None` for a damaged blob.
pub fn decompress(blob: &[u8]) -> Option<Vec<u8>> {
    zstd::decode_all(blob).ok()
}

// The rows of both drivers this adapter reads verdicts from (see `super::verdict_from_row`).
impl Columns for SqliteRow {
    fn text(&self, i: usize) -> Option<String> {
        self.try_get(i).ok().flatten()
    }
    fn int(&self, i: usize) -> Option<i64> {
        self.try_get(i).ok().flatten()
    }
    fn blob(&self, i: usize) -> Option<Vec<u8>> {
        self.try_get(i).ok().flatten()
    }
}

impl Columns for rusqlite::Row<'_> {
    fn text(&self, i: usize) -> Option<String> {
        self.get(i).ok().flatten()
    }
    fn int(&self, i: usize) -> Option<i64> {
        self.get(i).ok().flatten()
    }
    fn blob(&self, i: usize) -> Option<Vec<u8>> {
        self.get(i).ok().flatten()
    }
}

/// A claimed job from the columns [`CLAIM`] returns.
fn job_from_row(row: &rusqlite::Row<'_>, owner: &str) -> rusqlite::Result<Job> {
    Ok(Job {
        id: row.get(0)?,
        kind: row.get::<_, String>(1)?.parse().unwrap_or(Kind::Hash),
        indicator: row.get(2)?,
        step: Step::parse(&row.get::<_, String>(3)?),
        attempt: row.get(4)?,
        max_attempts: row.get(5)?,
        allow_submit: row.get(6)?,
        submitted_at: row.get(7)?,
        analysis_id: row.get(8)?,
        polls: row.get(9)?,
        owner: owner.to_owned(),
    })
}

/// The start of the UTC day and month holding `now`, as period names and their ends.
pub(crate) fn periods(now: Millis) -> ((String, Millis), (String, Millis)) {
    let t: DateTime<Utc> = Utc.timestamp_millis_opt(now).single().unwrap_or_default();
    let day = t.date_naive();
    let next_day = day
        .succ_opt()
        .unwrap_or(day)
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    let (y, m) = if t.month() == 12 {
        (t.year() + 1, 1)
    } else {
        (t.year(), t.month() + 1)
    };
    let next_month = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .unwrap_or(next_day);
    (
        (
            day.format("%Y-%m-%d").to_string(),
            next_day.timestamp_millis(),
        ),
        (t.format("%Y-%m").to_string(), next_month.timestamp_millis()),
    )
}

/// Reopens jobs for a re-check (`?2` is now): a `pending` analysis is polled again (at a poll's
/// priority), anything else looked up again.
const REOPEN_FOR_RECHECK: &str = "UPDATE jobs SET state = 'available', attempt = 0,
         scheduled_at = ?2, updated_at = ?2, finished_at = NULL, last_error = NULL,
         step = CASE WHEN analysis_id IS NOT NULL AND
             (SELECT verdict FROM verdicts WHERE job_id = jobs.id) = 'pending' THEN 'poll' ELSE 'lookup' END,
         priority = CASE WHEN analysis_id IS NOT NULL AND
             (SELECT verdict FROM verdicts WHERE job_id = jobs.id) = 'pending' THEN 2 ELSE 1 END";

#[async_trait]
impl Store for SqliteStore {
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
        let how = Enqueueing {
            now,
            max_age_ms,
            max_attempts,
        };
        self.enqueuer().await?.batch(jobs.to_vec(), how).await
    }

    async fn enqueue_batches(
        &self,
        batches: mpsc::Receiver<Vec<NewJob>>,
        now: Millis,
        max_age_ms: i64,
        max_attempts: u32,
        stop: &CancellationToken,
    ) -> Result<Vec<(i64, Enqueued)>, Error> {
        let how = Enqueueing {
            now,
            max_age_ms,
            max_attempts,
        };
        self.enqueuer().await?.batches(batches, how, stop).await
    }

    async fn claim_as(
        &self,
        owner: &str,
        n: u32,
        now: Millis,
        lease_ms: i64,
        may: MaySubmit,
    ) -> Result<Vec<Job>, Error> {
        let owner = owner.to_owned();
        let (files, urls) = may.kinds();
        self.grouped()
            .await?
            .write(move |conn| {
                let mut claim = conn.prepare_cached(CLAIM)?;
                let until = now + lease_ms;
                let jobs = claim.query_map(params![owner, until, now, n, files, urls], |row| {
                    job_from_row(row, &owner)
                })?;
                jobs.collect()
            })
            .await
    }

    async fn extend_lease(&self, job: &Job, until: Millis) -> Result<bool, Error> {
        const SET: &str = "lease_expires_at = ?3";
        self.fenced_update(job, SET, "", until).await
    }

    async fn mark_unknown(&self, job: &Job, now: Millis) -> Result<bool, Error> {
        // The priority of `Step::Upload`.
        const SET: &str = "step = 'upload', priority = MAX(priority, 2), updated_at = ?3";
        self.fenced_update(job, SET, "", now).await
    }

    async fn mark_submitting(&self, job: &Job, now: Millis) -> Result<bool, Error> {
        // The permission too, which a later enqueue may withdraw.
        const SET: &str = "submitted_at = ?3, updated_at = ?3";
        self.fenced_update(job, SET, " AND allow_submit", now).await
    }

    async fn count_attempt(&self, job: &Job, counted: bool) -> Result<bool, Error> {
        let attempt = match counted {
            true => job.attempt,
            false => job.attempt.saturating_sub(1),
        };
        const SET: &str = "attempt = ?3";
        self.fenced_update(job, SET, "", i64::from(attempt)).await
    }

    async fn unmark_submitting(&self, job: &Job, now: Millis) -> Result<bool, Error> {
        const SET: &str = "submitted_at = NULL, updated_at = ?3";
        self.fenced_update(job, SET, "", now).await
    }

    async fn snooze(&self, job: &Job, snooze: &Snooze, now: Millis) -> Result<bool, Error> {
        let (id, owner, snooze) = (job.id, job.owner.clone(), snooze.clone());
        self.grouped()
            .await?
            .write(move |conn| {
                let mut update = conn.prepare_cached(&format!(
                    "UPDATE jobs SET state = 'available', attempt = MAX(attempt - 1, 0),
                         scheduled_at = ?3, step = ?4, priority = MAX(priority, ?5),
                         analysis_id = COALESCE(?6, analysis_id), polls = ?7,
                         lease_owner = NULL, lease_expires_at = NULL, updated_at = ?8
                     WHERE {FENCE}"
                ))?;
                let changed = update.execute(params![
                    id,
                    owner,
                    snooze.until,
                    snooze.step.as_str(),
                    snooze.step.priority(),
                    snooze.analysis_id,
                    snooze.polls,
                    now
                ])?;
                Ok(changed == 1)
            })
            .await
    }

    async fn retry(
        &self,
        job: &Job,
        until: Millis,
        error: &str,
        now: Millis,
    ) -> Result<Retried, Error> {
        let (id, owner, attempt, error) =
            (job.id, job.owner.clone(), job.attempt, error.to_owned());
        self.grouped()
            .await?
            .write(move |conn| {
                let state: Option<String> = conn
                    .prepare_cached(&format!(
                        "UPDATE jobs SET state = CASE WHEN attempt >= max_attempts THEN 'discarded'
                                                      ELSE 'available' END,
                             finished_at = CASE WHEN attempt >= max_attempts THEN ?5 END,
                             scheduled_at = ?3, last_error = ?4, lease_owner = NULL,
                             lease_expires_at = NULL, updated_at = ?5
                         WHERE {FENCE} RETURNING state"
                    ))?
                    .query_row(params![id, owner, until, error, now], |r| r.get(0))
                    .optional()?;
                Ok(match state.as_deref() {
                    None => Retried::LeaseLost,
                    Some("discarded") => {
                        let why = format!("gave up after {attempt} attempts: {error}");
                        let failed = VerdictRecord::failed(why, now);
                        upsert_verdict(conn, id, &failed, None, true, None)?;
                        Retried::Discarded
                    }
                    Some(_) => Retried::Later,
                })
            })
            .await
    }

    async fn complete(
        &self,
        job: &Job,
        verdict: &VerdictRecord,
        now: Millis,
    ) -> Result<bool, Error> {
        self.finish(job, "completed", verdict, now).await
    }

    async fn discard(
        &self,
        job: &Job,
        verdict: &VerdictRecord,
        now: Millis,
    ) -> Result<bool, Error> {
        self.finish(job, "discarded", verdict, now).await
    }

    async fn release(&self, job: &Job, now: Millis) -> Result<bool, Error> {
        const SET: &str = "state = 'available', attempt = MAX(attempt - 1, 0), lease_owner = NULL,
             lease_expires_at = NULL, updated_at = ?3";
        self.fenced_update(job, SET, "", now).await
    }

    async fn rescue(&self, now: Millis) -> Result<u64, Error> {
        const ABANDONED: &str = "state = 'running' AND (lease_expires_at < ?1
              OR lease_owner IS NULL OR lease_owner NOT IN (SELECT owner FROM workers))";
        self.grouped()
            .await?
            .write(move |conn| {
                let given_up = conn
                    .prepare_cached(&format!(
                        "SELECT id, attempt FROM jobs WHERE {ABANDONED} AND attempt >= max_attempts"
                    ))?
                    .query_map([now], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                for (id, attempts) in given_up {
                    let why = format!(
                        "abandoned {attempts} times by workers that stopped or crashed while working on it"
                    );
                    let failed = VerdictRecord::failed(why, now);
                    upsert_verdict(conn, id, &failed, None, true, None)?;
                }
                let rescued = conn
                    .prepare_cached(&format!(
                        "UPDATE jobs SET state = CASE WHEN attempt >= max_attempts THEN 'discarded' ELSE 'available' END,
                             finished_at = CASE WHEN attempt >= max_attempts THEN ?1 END,
                             lease_owner = NULL, lease_expires_at = NULL, updated_at = ?1
                         WHERE {ABANDONED}"
                    ))?
                    .execute([now])?;
                Ok(rescued as u64)
            })
            .await
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
        let mut tx = self.write.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO workers (owner, host, pid, started_at, heartbeat_at) VALUES (?1, ?2, ?3, ?4, ?4)
             ON CONFLICT (owner) DO UPDATE SET heartbeat_at = excluded.heartbeat_at",
        )
        .bind(owner)
        .bind(host)
        .bind(pid)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM workers WHERE heartbeat_at < ?1")
            .bind(now - stale_ms)
            .execute(&mut *tx)
            .await?;
        for gone in dead {
            sqlx::query("DELETE FROM workers WHERE owner = ?1")
                .bind(gone)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await
    }

    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error> {
        let rows: Vec<super::WorkerRow> = sqlx::query_as(
            "SELECT w.owner, w.host, w.pid, w.heartbeat_at,
                    (SELECT COUNT(*) FROM jobs j WHERE j.lease_owner = w.owner AND j.state = 'running') AS in_flight,
                    w.limits
             FROM workers w ORDER BY w.host, w.pid",
        )
        .fetch_all(&self.read)
        .await?;
        Ok(rows.into_iter().map(WorkerInfo::from).collect())
    }

    async fn finished_since(&self, since: Millis) -> Result<u64, Error> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM verdicts WHERE checked_at >= ?1")
            .bind(since)
            .fetch_one(&self.read)
            .await?;
        Ok(n as u64)
    }

    async fn describe_worker(&self, owner: &str, limits: &str) -> Result<(), Error> {
        sqlx::query("UPDATE workers SET limits = ?2 WHERE owner = ?1")
            .bind(owner)
            .bind(limits)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn unregister(&self, owner: &str) -> Result<(), Error> {
        sqlx::query("DELETE FROM workers WHERE owner = ?1")
            .bind(owner)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn put_first(&self, ids: &[i64], may: MaySubmit) -> Result<(), Error> {
        let (files, urls) = may.kinds();
        for chunk in ids.chunks(RESULTS_CHUNK) {
            let chunk = serde_json::to_string(chunk).map_err(|e| Error::Encode(Box::new(e)))?;
            sqlx::query(
                "UPDATE jobs SET priority = ?2, allow_submit = allow_submit AND kind IN (?3, ?4)
                 WHERE id IN (SELECT value FROM json_each(?1)) AND state = 'available'",
            )
            .bind(chunk)
            .bind(Step::AWAITED)
            .bind(files)
            .bind(urls)
            .execute(&self.write)
            .await?;
        }
        Ok(())
    }

    async fn file_paths(&self, job_id: i64) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT path FROM file_paths WHERE job_id = ?1 ORDER BY seen_at DESC, path",
        )
        .bind(job_id)
        .fetch_all(&self.read)
        .await
    }

    async fn files_seen_under(
        &self,
        dir: &str,
        allow_submit: bool,
    ) -> Result<Vec<FileSeen>, Error> {
        // The row of each path seen last (SQLite takes the bare columns from the MAX row).
        let rows: Vec<super::SightingRow> = sqlx::query_as(
            "SELECT p.path, p.size, p.modified_ns, p.inode, MAX(p.seen_at),
                    j.state, j.allow_submit, j.analysis_id, v.verdict, v.checked_at
             FROM file_paths p JOIN jobs j ON j.id = p.job_id
             LEFT JOIN verdicts v ON v.job_id = p.job_id
             WHERE substr(p.path, 1, length(?1)) = ?1 GROUP BY p.path",
        )
        .bind(dir)
        .fetch_all(&self.read)
        .await?;
        Ok(super::files_seen(rows, allow_submit))
    }

    async fn list_read(&self, seen: &FileSeen, now: Millis) -> Result<(), Error> {
        let Some((modified_ns, inode)) = seen.unchanged_if else {
            return Ok(());
        };
        sqlx::query(
            "INSERT INTO lists_read (path, size, modified_ns, inode, read_at)
             VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (path) DO UPDATE SET size = excluded.size,
                 modified_ns = excluded.modified_ns, inode = excluded.inode,
                 read_at = excluded.read_at",
        )
        .bind(&seen.path)
        .bind(seen.size as i64)
        .bind(modified_ns)
        .bind(inode)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn lists_read_under(&self, dir: &str, submit_urls: bool) -> Result<Vec<FileSeen>, Error> {
        // The verdicts named are few (unknown ones only when URLs may now be submitted), and
        // each finds its sources by its key.
        let rows: Vec<super::ListRow> = sqlx::query_as(
            "SELECT path, size, modified_ns, inode FROM lists_read
             WHERE substr(path, 1, length(?1)) = ?1
               AND path NOT IN (SELECT s.source FROM verdicts v
                                JOIN jobs j ON j.id = v.job_id
                                JOIN sources s ON s.job_id = v.job_id
                                WHERE v.verdict = 'failed'
                                   OR (?2 AND v.verdict = 'unknown' AND j.kind = 'url'
                                       AND NOT j.allow_submit))",
        )
        .bind(dir)
        .bind(submit_urls)
        .fetch_all(&self.read)
        .await?;
        Ok(super::lists_seen(rows))
    }

    async fn poll_estimates(&self) -> Result<Option<(f64, f64)>, Error> {
        sqlx::query_as("SELECT first_ms, second_ms FROM poll_estimates")
            .fetch_optional(&self.read)
            .await
    }

    async fn save_poll_estimates(
        &self,
        (first_ms, second_ms): (f64, f64),
        now: Millis,
    ) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO poll_estimates (id, first_ms, second_ms, updated_at) VALUES (1, ?1, ?2, ?3)
             ON CONFLICT (id) DO UPDATE SET first_ms = excluded.first_ms,
                 second_ms = excluded.second_ms, updated_at = excluded.updated_at",
        )
        .bind(first_ms)
        .bind(second_ms)
        .bind(now)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn fresh_verdict_for_hash(
        &self,
        hash: &str,
        since: Millis,
        unknown_will_do: bool,
    ) -> Result<Option<VerdictRecord>, Error> {
        // The unary `+` keeps the planner on the three hash indexes: left to itself it walks
        // `verdicts_by_verdict` through every recent verdict, once per lookup.
        // On the writer thread rather than a reader: the writer's page cache survives its own
        // commits, a reader's is dropped at every commit, which here is every few jobs.
        let hash = hash.to_owned();
        self.grouped()
            .await?
            .write(move |conn| {
                conn.prepare_cached(&format!(
                    "SELECT {VERDICT_COLUMNS} FROM verdicts v
                     WHERE (v.sha256 = ?1 OR v.md5 = ?1 OR v.sha1 = ?1) AND +v.checked_at >= ?2
                       AND (+v.verdict IN ('malicious', 'suspicious', 'clean')
                            OR (?3 AND +v.verdict = 'unknown'))
                     ORDER BY v.checked_at DESC LIMIT 1"
                ))?
                .query_row(params![hash, since, unknown_will_do], |r| {
                    Ok(verdict_from_row(r, 0))
                })
                .optional()
                .map(Option::flatten)
            })
            .await
    }

    async fn results(&self, ids: &[i64]) -> Result<Vec<JobResult>, Error> {
        // The ids go in as a JSON array, a chunk at a time, and each job comes back with its
        // paths as a JSON array: one statement per chunk rather than two per job (20,000 jobs
        // took 5 s). The VirusTotal objects are left out: no caller shows them.
        let sql = format!(
            "SELECT j.id, j.kind, j.indicator, j.state, {},
                 (SELECT json_group_array(path ORDER BY seen_at DESC, path)
                  FROM file_paths WHERE job_id = j.id)
             FROM json_each(?1) e CROSS JOIN jobs j ON j.id = e.value
             LEFT JOIN verdicts v ON v.job_id = j.id
             ORDER BY e.key",
            VERDICT_COLUMNS.replace("v.raw", "NULL")
        );
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(RESULTS_CHUNK) {
            let chunk = serde_json::to_string(chunk).map_err(|e| Error::Encode(Box::new(e)))?;
            let rows = sqlx::query(AssertSqlSafe(sql.clone()))
                .bind(chunk)
                .fetch_all(&self.read)
                .await?;
            for row in rows {
                let kind: String = row.get(1);
                let paths: String = row.get(22);
                out.push(JobResult {
                    id: row.get(0),
                    kind: kind.parse().unwrap_or(Kind::Hash),
                    indicator: row.get(2),
                    state: row.get(3),
                    verdict: verdict_from_row(&row, 4),
                    paths: serde_json::from_str(&paths).map_err(|e| Error::Decode(Box::new(e)))?,
                });
            }
        }
        Ok(out)
    }

    async fn unfinished(&self, ids: &[i64]) -> Result<Vec<i64>, Error> {
        // The ids go in and come back as JSON arrays: one statement and one row however many
        // there are (a row each would be a hand-off between threads per id, ten times a second
        // while `ingest --wait` waits on a long list). CROSS JOIN keeps the ids the outer loop,
        // each a look-up by row id (left to itself, the planner scans them once per job).
        let ids = serde_json::to_string(ids).map_err(|e| Error::Encode(Box::new(e)))?;
        let left: String = sqlx::query_scalar(
            "SELECT json_group_array(j.id) FROM json_each(?1) e CROSS JOIN jobs j ON j.id = e.value
             WHERE j.state IN ('available', 'running')",
        )
        .bind(ids)
        .fetch_one(&self.read)
        .await?;
        serde_json::from_str(&left).map_err(|e| Error::Decode(Box::new(e)))
    }

    async fn counts(&self) -> Result<QueueCounts, Error> {
        let mut counts = QueueCounts::default();
        // Counts kept by triggers (migration 0003) and by the enqueuer: a few dozen rows, however
        // large the queue.
        let rows: Vec<(String, String, String, i64)> =
            sqlx::query_as("SELECT state, kind, step, n FROM job_counts WHERE n > 0")
                .fetch_all(&self.read)
                .await?;
        for (state, kind, step, n) in rows {
            counts.add(state, kind, &step, n as u64);
        }
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT verdict, n FROM verdict_counts WHERE n > 0")
                .fetch_all(&self.read)
                .await?;
        counts.by_verdict = rows.into_iter().map(|(v, n)| (v, n as u64)).collect();
        // Ids grow with creation, so the first unfinished id is the oldest (`jobs_by_state`).
        counts.oldest_pending = sqlx::query_as(
            "SELECT indicator, created_at FROM jobs
             WHERE id = (SELECT MIN(id) FROM jobs WHERE state IN ('available', 'running'))",
        )
        .fetch_optional(&self.read)
        .await?;
        counts.last_errors = sqlx::query_as(
            "SELECT indicator, last_error, updated_at FROM jobs WHERE last_error IS NOT NULL
             ORDER BY updated_at DESC LIMIT 5",
        )
        .fetch_all(&self.read)
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
        // The filters are built from enum names (never user text), so they can be inlined.
        let list = |names: Vec<&str>| {
            names
                .iter()
                .map(|n| format!("'{n}'"))
                .collect::<Vec<_>>()
                .join(",")
        };
        let mut filter = String::new();
        if !verdicts.is_empty() {
            filter += &format!(
                " AND v.verdict IN ({})",
                list(verdicts.iter().map(|v| v.as_str()).collect())
            );
        }
        if !kinds.is_empty() {
            filter += &format!(
                " AND j.kind IN ({})",
                list(kinds.iter().map(|k| k.as_str()).collect())
            );
        }
        let sql = format!(
            "{REOPEN_FOR_RECHECK}
             WHERE id IN (SELECT j.id FROM jobs j JOIN verdicts v ON v.job_id = j.id
                          WHERE j.state IN ('completed', 'discarded') AND v.checked_at < ?1{filter})"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(older_than)
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    async fn recheck_pending(&self, min_gap_ms: i64, now: Millis) -> Result<u64, Error> {
        let sql = format!(
            "{REOPEN_FOR_RECHECK}
             WHERE id IN (SELECT j.id FROM jobs j JOIN verdicts v ON v.job_id = j.id
                          WHERE j.state IN ('completed', 'discarded') AND v.verdict = 'pending'
                            AND v.checked_at <= ?2 - MAX(?1,
                                (v.checked_at - COALESCE(j.submitted_at, j.created_at)) / 2))"
        );
        let done = sqlx::query(AssertSqlSafe(sql))
            .bind(min_gap_ms)
            .bind(now)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    async fn take_quota(
        &self,
        key_id: &str,
        limits: &QuotaLimits,
        clock: Clock,
    ) -> Result<QuotaDecision, Error> {
        let (key_id, limits) = (key_id.to_owned(), *limits);
        // The clock is read once the writer runs the grant (see RELIABILITY.md).
        self.grouped()
            .await?
            .write_first(move |conn| take_quota(conn, &key_id, &limits, clock()))
            .await
    }

    async fn move_quota_grant(
        &self,
        key_id: &str,
        granted_at: Millis,
        answered_at: Millis,
    ) -> Result<(), Error> {
        let key_id = key_id.to_owned();
        self.grouped()
            .await?
            .write_first(move |conn| move_quota_grant(conn, &key_id, granted_at, answered_at))
            .await
    }

    async fn return_quota_grant(&self, key_id: &str, granted_at: Millis) -> Result<(), Error> {
        let key_id = key_id.to_owned();
        self.grouped()
            .await?
            .write_first(move |conn| return_quota_grant(conn, &key_id, granted_at))
            .await
    }

    async fn pause_quota(&self, key_id: &str, until: Millis) -> Result<(), Error> {
        sqlx::query(
            "INSERT INTO quota_pauses (key_id, until) VALUES (?1, ?2)
             ON CONFLICT (key_id) DO UPDATE SET until = MAX(until, excluded.until)",
        )
        .bind(key_id)
        .bind(until)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn count_requests(
        &self,
        key_id: &str,
        n: u64,
        now: Millis,
    ) -> Result<Option<Millis>, Error> {
        if n == 0 {
            // Nothing to add (an idle daemon asks every second): a read takes up the pause
            // without waiting for the writer.
            return sqlx::query_scalar(PAUSE)
                .bind(key_id)
                .bind(now)
                .fetch_optional(&self.read)
                .await;
        }
        let key_id = key_id.to_owned();
        self.grouped()
            .await?
            .write(move |conn| count_requests(conn, &key_id, n, now))
            .await
    }

    async fn quota_keys(&self) -> Result<Vec<String>, Error> {
        sqlx::query_scalar(
            "SELECT key_id FROM quota_periods GROUP BY key_id ORDER BY MAX(period) DESC",
        )
        .fetch_all(&self.read)
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
            sqlx::query_scalar("SELECT COUNT(*) FROM quota_log WHERE key_id = ?1 AND at > ?2")
                .bind(key_id)
                .bind(now - window_ms)
                .fetch_one(&self.read)
                .await?;
        let used = |period: String| {
            sqlx::query_scalar::<_, i64>(
                "SELECT used FROM quota_periods WHERE key_id = ?1 AND period = ?2",
            )
            .bind(key_id.to_owned())
            .bind(period)
        };
        let today = used(day).fetch_optional(&self.read).await?.unwrap_or(0);
        let this_month = used(month).fetch_optional(&self.read).await?.unwrap_or(0);
        let paused_until: Option<Millis> =
            sqlx::query_scalar("SELECT until FROM quota_pauses WHERE key_id = ?1")
                .bind(key_id)
                .fetch_optional(&self.read)
                .await?;
        Ok(QuotaUsage {
            in_window: in_window as u64,
            today: today as u64,
            this_month: this_month as u64,
            paused_until: paused_until.filter(|&u| u > now),
        })
    }

    // --- Reports ---

    fn report(&self, query: &ReportQuery) -> BoxStream<'_, Result<ReportRow, Error>> {
        let report = report_sql(query);
        let limit = query
            .limit
            .map_or(i64::MAX, |n| i64::try_from(n).unwrap_or(i64::MAX));
        // The statement with the user-given texts bound as `?1`, `?2`, ...
        let with_texts = |sql: &str, texts: &[String]| {
            texts
                .iter()
                .fold(sqlx::query(AssertSqlSafe(sql.to_owned())), |q, text| {
                    q.bind(text.clone())
                })
        };
        if query.sort != ReportSort::FirstSeen {
            return with_texts(&report.rows, &report.texts)
                .bind(limit)
                .fetch(&self.read)
                .map(|row| row.and_then(|row| decode_report_record(row.try_get(1)?)))
                .boxed();
        }
        // In job order, one query per range of job ids (up to the last id when the report
        // starts), several at a time on the readers, fetched and decoded by a task of its own
        // while the caller writes out the chunks before: SQLite's threads and the caller's
        // work at the same time. The task ends at its next chunk once the stream is dropped.
        let (chunks, mut received) = tokio::sync::mpsc::channel(REPORT_CHUNKS_AHEAD);
        let read = self.read.clone();
        // Only the range of the jobs asked for, when some are: a `lookup` of three indicators
        // is then one query, not one per thousand jobs in the database.
        let asked = (
            query.jobs.iter().min().copied(),
            query.jobs.iter().max().copied(),
        );
        tokio::spawn(async move {
            let ids: Result<(Option<i64>, Option<i64>), Error> = match asked {
                (Some(first), Some(last)) => Ok((Some(first), Some(last))),
                _ => {
                    sqlx::query_as("SELECT MIN(id), MAX(id) FROM jobs")
                        .fetch_one(&read)
                        .await
                }
            };
            let (first, last) = match ids {
                Ok((first, last)) => (first.unwrap_or(1), last.unwrap_or(0)),
                Err(e) => {
                    let _ = chunks.send(Err(e)).await;
                    return;
                }
            };
            let fetch = |after: i64| {
                let chunk = with_texts(&report.chunk, &report.texts)
                    .bind(after)
                    .bind(after + REPORT_CHUNK);
                let read = &read;
                async move { decode_report_chunk(&chunk.fetch_one(read).await?) }
            };
            let mut fetched =
                futures_util::stream::iter((first - 1..last).step_by(REPORT_CHUNK as usize))
                    .map(fetch)
                    .buffered(REPORT_FETCHES_AT_ONCE);
            let mut left = limit;
            while left > 0
                && let Some(rows) = fetched.next().await
            {
                let rows = rows.map(|mut rows| {
                    rows.truncate(usize::try_from(left).unwrap_or(usize::MAX));
                    left -= rows.len() as i64;
                    rows
                });
                if rows.is_err() {
                    left = 0;
                }
                if chunks.send(rows).await.is_err() {
                    return;
                }
            }
        });
        futures_util::stream::poll_fn(move |cx| received.poll_recv(cx))
            .map_ok(|rows: Vec<ReportRow>| futures_util::stream::iter(rows.into_iter().map(Ok)))
            .try_flatten()
            .boxed()
    }

    async fn raw_object(&self, indicator: &str) -> Result<Option<RawObject>, Error> {
        // One indexed look-up per way of naming the object, instead of an OR across tables
        // that would scan every job; naming every kind lets the unique (kind, indicator) index serve.
        let row = sqlx::query(
            "SELECT j.kind, j.indicator, v.raw FROM jobs j LEFT JOIN verdicts v ON v.job_id = j.id
             WHERE j.id IN (SELECT id FROM jobs
                            WHERE kind IN ('file', 'hash', 'url', 'domain', 'ip')
                              AND indicator IN (?1, lower(?1))
                            UNION SELECT job_id FROM verdicts WHERE sha256 = lower(?1)
                            UNION SELECT job_id FROM verdicts WHERE md5 = lower(?1)
                            UNION SELECT job_id FROM verdicts WHERE sha1 = lower(?1))
             ORDER BY v.raw IS NULL, v.checked_at DESC, j.id LIMIT 1",
        )
        .bind(indicator)
        .fetch_optional(&self.read)
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

/// Job ids per query of a report in job order. One query per record hands each row from
/// SQLite's thread to the caller's with its own wake-up and copies every column: that was
/// four fifths of a report's time. A chunk comes as one JSON array instead.
const REPORT_CHUNK: i64 = 1000;

/// Chunk queries of a report running at once (each on its own reader connection).
const REPORT_FETCHES_AT_ONCE: usize = 3;

/// Chunks of a report decoded ahead of the one being written.
const REPORT_CHUNKS_AHEAD: usize = 2;

/// The statements of one report.
struct ReportSql {
    /// All records, one row (`id`, `record`) each; binds: the texts, then the limit.
    rows: String,
    /// In job order, the records of the job ids in a range: one row of three JSON arrays, in
    /// any order: the records without their paths and sources (NULL when there are none), then
    /// `[job id, path]` and `[job id, source, line]` of every job in the range; binds: the
    /// texts, then the range's bounds (exclusive, inclusive).
    chunk: String,
    /// The user-given texts, bound in order as `?1`, `?2`, ...
    texts: Vec<String>,
}

/// The report statements for `query`. Job ids, times, verdict and kind filters are numbers or enum
/// names, never user text, so they are inlined.
fn report_sql(query: &ReportQuery) -> ReportSql {
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
                     AND (s.source = ?{n} OR substr(s.source, -length(?{n}) - 1) = '/' || ?{n}))
                 OR EXISTS (SELECT 1 FROM file_paths p WHERE p.job_id = j.id
                     AND (p.path = ?{n} OR substr(p.path, 1, length(?{n}) + 1) = rtrim(?{n}, '/') || '/'))"
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
        // One verdict: its rows come in job order from `verdicts_by_verdict_job`, no sorting
        // (the filter leaves only jobs with a verdict, so `v.job_id` is `j.id`).
        ReportSort::FirstSeen if query.verdicts.len() == 1 => "v.job_id".to_owned(),
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
    // A record's paths and sources: looked up for each record, or (for a chunk) left empty
    // and read for the whole range at once.
    let per_record =
        "json((SELECT json_group_array(path ORDER BY path) FROM file_paths WHERE job_id = j.id)),
         json((SELECT json_group_array(json_array(source, line) ORDER BY source, line)
               FROM sources WHERE job_id = j.id))";
    let select = |lists: &str| {
        format!(
            "SELECT j.id AS id, json_array(j.id, j.kind, j.indicator, j.state, j.created_at, j.last_error,
                 {lists}, {}) AS record
             FROM jobs j LEFT JOIN verdicts v ON v.job_id = j.id
             WHERE 1 = 1{filter}",
            VERDICT_COLUMNS.replace(", v.raw", "")
        )
    };
    let (after, upto) = (texts.len() + 1, texts.len() + 2);
    ReportSql {
        rows: format!("{} ORDER BY {order} LIMIT ?{limit}", select(per_record)),
        // Two look-ups per record cost a third of SQLite's time; one range scan of each
        // table instead reads the same rows in index order.
        chunk: format!(
            "SELECT (SELECT '[' || group_concat(record, ',') || ']'
                     FROM ({} AND {order} > ?{after} AND {order} <= ?{upto})),
                    (SELECT json_group_array(json_array(job_id, path)) FROM file_paths
                     WHERE job_id > ?{after} AND job_id <= ?{upto}),
                    (SELECT json_group_array(json_array(job_id, source, line)) FROM sources
                     WHERE job_id > ?{after} AND job_id <= ?{upto})",
            select("json_array(), json_array()")
        ),
        texts,
    }
}

/// One record of [`report_sql`], a JSON array in this order.
#[derive(serde::Deserialize)]
struct ReportJson {
    id: i64,
    kind: String,
    indicator: String,
    state: String,
    created_at: Millis,
    last_error: Option<String>,
    paths: Vec<String>,
    sources: Vec<(String, u32)>,
    verdict: Option<String>,
    malicious: Option<u32>,
    suspicious: Option<u32>,
    harmless: Option<u32>,
    undetected: Option<u32>,
    timeout: Option<u32>,
    type_unsupported: Option<u32>,
    failure: Option<u32>,
    threat_label: Option<String>,
    sha256: Option<String>,
    md5: Option<String>,
    sha1: Option<String>,
    vt_id: Option<String>,
    vt_analysis_date: Option<i64>,
    checked_at: Option<Millis>,
    note: Option<String>,
    error: Option<String>,
}

/// Reads one row of [`ReportSql::chunk`]: its records, with the paths and sources merged into
/// them by job id.
fn decode_report_chunk(row: &SqliteRow) -> Result<Vec<ReportRow>, Error> {
    let (records, paths, sources): (Option<String>, String, String) =
        (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let decode = |e| Error::Decode(Box::new(e));
    let mut rows: Vec<ReportJson> = match records {
        Some(records) => serde_json::from_str(&records).map_err(decode)?,
        None => Vec::new(),
    };
    let mut paths: Vec<(i64, String)> = serde_json::from_str(&paths).map_err(decode)?;
    let mut sources: Vec<(i64, String, u32)> = serde_json::from_str(&sources).map_err(decode)?;
    // Aggregates promise no order; sorting here is cheaper than asking for it.
    rows.sort_unstable_by_key(|r| r.id);
    paths.sort_unstable();
    sources.sort_unstable();
    let mut paths = paths.into_iter().peekable();
    let mut sources = sources
        .into_iter()
        .map(|(id, s, l)| (id, (s, l)))
        .peekable();
    let rows = rows.into_iter().map(|mut r| {
        r.paths = of_job(&mut paths, r.id);
        r.sources = of_job(&mut sources, r.id);
        ReportRow::from(r)
    });
    Ok(rows.collect())
}

/// The items of job `id` from `items`, sorted by job id, dropping those of earlier jobs.
fn of_job<T>(items: &mut std::iter::Peekable<impl Iterator<Item = (i64, T)>>, id: i64) -> Vec<T> {
    while items.next_if(|(job, _)| *job < id).is_some() {}
    std::iter::from_fn(|| items.next_if(|(job, _)| *job == id).map(|(_, item)| item)).collect()
}

/// Reads one record of [`report_sql`].
fn decode_report_record(json: &str) -> Result<ReportRow, Error> {
    let record: ReportJson = serde_json::from_str(json).map_err(|e| Error::Decode(Box::new(e)))?;
    Ok(record.into())
}

impl From<ReportJson> for ReportRow {
    fn from(r: ReportJson) -> ReportRow {
        let verdict = r
            .verdict
            .and_then(|v| Verdict::from_str(&v).ok())
            .map(|verdict| VerdictRecord {
                verdict,
                stats: super::stats_from_counts([
                    r.malicious,
                    r.suspicious,
                    r.harmless,
                    r.undetected,
                    r.timeout,
                    r.type_unsupported,
                    r.failure,
                ]),
                threat_label: r.threat_label,
                sha256: r.sha256,
                md5: r.md5,
                sha1: r.sha1,
                vt_id: r.vt_id,
                vt_analysis_date: r.vt_analysis_date,
                checked_at: r.checked_at.unwrap_or(0),
                note: r.note,
                error: r.error,
                raw: None,
            });
        ReportRow {
            job: JobResult {
                id: r.id,
                kind: r.kind.parse().unwrap_or(Kind::Hash),
                indicator: r.indicator,
                state: r.state,
                verdict,
                paths: r.paths,
            },
            sources: r.sources,
            created_at: r.created_at,
            last_error: r.last_error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_migration_file_is_applied() {
        super::super::check_migrations("migrations/sqlite", &MIGRATIONS);
    }

    /// `status` and `report` only read: they start no writer or checkpoint thread (and so
    /// leave the log alone when they exit); the first write starts both.
    #[tokio::test]
    async fn only_a_write_starts_the_writer_threads() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("q.db")).await.unwrap();
        store.counts().await.unwrap();
        store.finished_since(0).await.unwrap();
        store.quota_keys().await.unwrap();
        assert!(store.threads.get().is_none());
        let job = NewJob {
            kind: Kind::Domain,
            indicator: "example.com".into(),
            allow_submit: false,
            path: None,
            source: None,
        };
        store.enqueue(&[job], 1, 1, 5).await.unwrap();
        assert!(store.threads.get().is_some());
    }

    /// Read where it cannot be written, a database is not migrated: one of an older schema is
    /// refused, with what to do; one of the current schema is read, and refuses writes.
    #[tokio::test]
    async fn a_database_opened_read_only_must_have_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.db");
        let pool = SqlitePoolOptions::new()
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&old)
                    .create_if_missing(true),
            )
            .await
            .unwrap();
        super::super::migrator(&MIGRATIONS[..4])
            .run(&pool)
            .await
            .unwrap();
        pool.close().await;
        let refused = SqliteStore::open_read_only(&old).await.err().unwrap();
        let current = MIGRATIONS.len();
        assert!(
            refused
                .to_string()
                .contains(&format!("migration 4 of {current}"))
                && refused.to_string().contains("copy it somewhere writable"),
            "{refused}"
        );

        let current = dir.path().join("current.db");
        SqliteStore::open(&current).await.unwrap().close().await;
        let store = SqliteStore::open_read_only(&current).await.unwrap();
        assert_eq!(store.counts().await.unwrap().by_state.len(), 0);
        let write = store.unregister("nobody").await.err().unwrap();
        assert!(cannot_write(&write), "{write}");
    }

    /// Migrations 5 and 12 rebuild `jobs` under the rows that refer to it, and 6 rebuilds
    /// `sources` and `file_paths` without rowids: a database written before them keeps every
    /// job under its id, with its sources, paths, verdict and counts, and the rebuilt tables
    /// still refuse what their constraints forbid.
    #[tokio::test]
    async fn rebuilding_tables_keeps_every_job_and_what_refers_to_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("before.db");
        let before = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                SqliteConnectOptions::new()
                    .filename(&path)
                    .create_if_missing(true)
                    .foreign_keys(true),
            )
            .await
            .unwrap();
        super::super::migrator(&MIGRATIONS[..4])
            .run(&before)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO jobs (id, kind, indicator, state, max_attempts, scheduled_at, created_at,
                 updated_at, finished_at)
             VALUES (7, 'file', 'aa', 'completed', 5, 1, 1, 1, 2),
                    (9, 'domain', 'example.com', 'available', 5, 1, 1, 1, NULL);
             INSERT INTO file_paths (job_id, path, seen_at) VALUES (7, '/drop/a.exe', 1);
             INSERT INTO sources (job_id, source, line, seen_at) VALUES (9, 'list.txt', 3, 1);
             INSERT INTO verdicts (job_id, verdict, malicious, checked_at) VALUES (7, 'malicious', 12, 2);",
        )
        .execute(&before)
        .await
        .unwrap();
        before.close().await;

        let store = SqliteStore::open(&path).await.unwrap();
        let results = store.results(&[7, 9]).await.unwrap();
        let summary: Vec<_> = results
            .iter()
            .map(|r| {
                let verdict = r
                    .verdict
                    .as_ref()
                    .map(|v| (v.verdict, v.stats.map(|s| s.malicious)));
                (
                    r.id,
                    r.indicator.as_str(),
                    r.state.as_str(),
                    verdict,
                    r.paths.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    7,
                    "aa",
                    "completed",
                    Some((Verdict::Malicious, Some(12))),
                    vec!["/drop/a.exe".to_owned()]
                ),
                (9, "example.com", "available", None, vec![]),
            ]
        );
        let sources: Vec<(i64, String, i64)> =
            sqlx::query_as("SELECT job_id, source, line FROM sources")
                .fetch_all(&store.read)
                .await
                .unwrap();
        assert_eq!(sources, [(9, "list.txt".to_owned(), 3)]);
        let counts = store.counts().await.unwrap();
        assert_eq!(counts.by_state["completed"]["file"], 1);
        assert_eq!(counts.by_state["available"]["domain"], 1);
        // The triggers came back with the table: a claim moves the count.
        let claimed = store.claim("test", 5, 10, 1_000).await.unwrap();
        assert_eq!(claimed.iter().map(|j| j.id).collect::<Vec<_>>(), [9]);
        let counts = store.counts().await.unwrap();
        assert_eq!(counts.by_state["running"]["domain"], 1);
        assert!(!counts.by_state.contains_key("available"));
        // Migration 12's step, counted as the others.
        let upload = Snooze {
            until: 10,
            step: Step::Upload,
            analysis_id: None,
            polls: 0,
        };
        assert!(store.snooze(&claimed[0], &upload, 10).await.unwrap());
        let counts = store.counts().await.unwrap();
        assert_eq!(counts.remaining_by_step.get("upload"), Some(&1));
        // The constraints, now written with OR, still refuse what they refused.
        for bad in [
            "INSERT INTO jobs (kind, indicator, max_attempts, scheduled_at, created_at, updated_at)
             VALUES ('mutex', 'x', 5, 1, 1, 1)",
            "UPDATE jobs SET state = 'lost' WHERE id = 7",
            "UPDATE jobs SET step = 'submit' WHERE id = 7",
        ] {
            let refused = sqlx::query(bad).execute(&store.write).await;
            assert!(
                refused.is_err_and(|e| e.to_string().contains("CHECK constraint failed")),
                "{bad}"
            );
        }
        // Sources and paths are kept in their keys' order, with no rowid, under the same keys
        // and references.
        for table in ["sources", "file_paths"] {
            let rowid = sqlx::query(AssertSqlSafe(format!("SELECT rowid FROM {table}")))
                .fetch_all(&store.read)
                .await;
            assert!(
                rowid.is_err_and(|e| e.to_string().contains("no such column")),
                "{table}"
            );
        }
        for (bad, refusal) in [
            (
                "INSERT INTO sources (job_id, source, line, seen_at) VALUES (9, 'list.txt', 3, 5)",
                "UNIQUE constraint failed",
            ),
            (
                "INSERT INTO file_paths (job_id, path, seen_at) VALUES (7, '/drop/a.exe', 5)",
                "UNIQUE constraint failed",
            ),
            (
                "INSERT INTO sources (job_id, source, line, seen_at) VALUES (404, 'list.txt', 1, 5)",
                "FOREIGN KEY constraint failed",
            ),
        ] {
            let refused = sqlx::query(bad).execute(&store.write).await;
            assert!(
                refused.is_err_and(|e| e.to_string().contains(refusal)),
                "{bad}"
            );
        }
    }
}
