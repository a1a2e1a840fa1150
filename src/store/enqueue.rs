//! How the SQLite store queues jobs: on a connection of its own, one prepared statement per job,
//! and for a large list several batches to a transaction.
//!
//! Each commit writes every page its transaction changed to the log, and a list's indicators
//! land all over the unique `(kind, indicator)` index: a transaction of 50,000 new jobs dirties
//! most of that index's pages, and the next one dirties them again. So while the parser keeps
//! batches coming, they share a transaction, up to [`JOBS_PER_TRANSACTION`]; when it falls
//! behind, what is queued is committed first, so the write lock is never held while a list is
//! read (a slow pipe on standard input).

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, Transaction, TransactionBehavior, params};
use tokio::sync::mpsc::{self, error::TryRecvError};
use tokio_util::sync::CancellationToken;

use super::group_commit::database_error;
use super::{Enqueued, Error, Millis, NewJob, Requeue, Step};
use crate::indicator::Kind;

/// Jobs per transaction at most. The CLI queued a million-line list in 14.7–15.0 s in
/// transactions of 50,000 (one per batch), 11.5–13.3 s in transactions of 200,000 and
/// 11.0–12.7 s in one (on a slow hour; BENCHMARKS.md, and `examples/ingest_schema.rs` for the
/// database's part). Meanwhile the other writers (a daemon's workers) wait for the write lock,
/// about two seconds here.
const JOBS_PER_TRANSACTION: usize = 200_000;

/// Jobs queued between two looks at the stop token: about 10 ms of work.
const JOBS_BETWEEN_STOP_CHECKS: usize = 1024;

/// A 32 MiB page cache (SQLite's default is 2 MiB) keeps most of a large list's index pages in
/// memory from one batch to the next (64 MiB saved 4 % of a million-line list's time for 40 MB
/// more memory: BENCHMARKS.md, tenth session).
const CACHE_KIB: u32 = 32 * 1024;

/// What a job's enqueueing is measured against: when, how old a verdict may be, and how many
/// attempts a new job gets.
#[derive(Debug, Clone, Copy)]
pub(super) struct Enqueueing {
    pub now: Millis,
    pub max_age_ms: i64,
    pub max_attempts: u32,
}

/// The connection that queues jobs, opened on first use (commands that only read never need
/// it), and used by one blocking task at a time.
#[derive(Debug, Clone)]
pub(super) struct Enqueuer {
    path: Arc<Path>,
    conn: Arc<Mutex<Option<Connection>>>,
}

impl Enqueuer {
    pub(super) fn new(path: Arc<Path>) -> Enqueuer {
        Enqueuer {
            path,
            conn: Arc::new(Mutex::new(None)),
        }
    }

    /// Queues `jobs` in one transaction; returns what queueing each did, in order.
    pub(super) async fn batch(
        &self,
        jobs: Vec<NewJob>,
        how: Enqueueing,
    ) -> Result<Vec<(i64, Enqueued)>, Error> {
        self.run(move |conn| {
            let mut out = Vec::with_capacity(jobs.len());
            let mut queueing = Queueing::begin(conn)?;
            queueing.queue(&jobs, how, &mut out)?;
            queueing.commit()?;
            Ok(out)
        })
        .await
    }

    /// Queues the batches as they arrive (see the module's documentation); returns what
    /// queueing each job did, in order. On an error, the batches committed before it stay.
    /// Once `stop` is cancelled, what is queued so far is committed and the rest left.
    pub(super) async fn batches(
        &self,
        mut batches: mpsc::Receiver<Vec<NewJob>>,
        how: Enqueueing,
        stop: &CancellationToken,
    ) -> Result<Vec<(i64, Enqueued)>, Error> {
        let mut out = Vec::new();
        let mut next = super::next_batch(&mut batches, stop).await;
        // The connection is taken for one transaction at a time, so that other enqueues of
        // this process (a file dropped meanwhile) have their turn between two.
        while let Some(first) = next {
            let more;
            let stopping = stop.clone();
            (batches, out, more) = self
                .run(move |conn| {
                    let mut queueing = Queueing::begin(conn)?;
                    let mut batch = first;
                    let more = loop {
                        if !queueing.queue_until(&batch, how, &mut out, &stopping)? {
                            break None;
                        }
                        match batches.try_recv() {
                            Ok(b) if queueing.jobs + b.len() <= JOBS_PER_TRANSACTION => batch = b,
                            Ok(b) => break Some(b),
                            // The parser is behind (or done): commit before waiting for it.
                            Err(TryRecvError::Empty | TryRecvError::Disconnected) => break None,
                        }
                    };
                    queueing.commit()?;
                    Ok((batches, out, more))
                })
                .await?;
            next = match more {
                _ if stop.is_cancelled() => None,
                Some(batch) => Some(batch),
                None => super::next_batch(&mut batches, stop).await,
            };
        }
        Ok(out)
    }

    /// Runs `work` on the connection, in a blocking task.
    async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Connection) -> Result<T, Error> + Send + 'static,
    ) -> Result<T, Error> {
        let (path, conn) = (self.path.clone(), self.conn.clone());
        tokio::task::spawn_blocking(move || {
            // A panic cannot leave the connection inside a transaction: dropping one rolls it back.
            let mut conn = conn.lock().unwrap_or_else(PoisonError::into_inner);
            if conn.is_none() {
                *conn = Some(super::sqlite::open_writer(&path, CACHE_KIB)?);
            }
            work(conn.as_mut().expect("opened above"))
        })
        .await
        .map_err(|e| Error::Io(std::io::Error::other(e)))?
    }
}

/// A transaction that queues jobs, counting the new ones.
struct Queueing<'c> {
    tx: Transaction<'c>,
    /// Jobs queued in it.
    jobs: usize,
    /// New jobs of each kind.
    new: HashMap<Kind, i64>,
}

impl Queueing<'_> {
    fn begin(conn: &mut Connection) -> Result<Queueing<'_>, Error> {
        Ok(Queueing {
            tx: conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(database_error)?,
            jobs: 0,
            new: HashMap::new(),
        })
    }

    /// Queues `jobs`, adding what queueing each did to `out`.
    fn queue(
        &mut self,
        jobs: &[NewJob],
        how: Enqueueing,
        out: &mut Vec<(i64, Enqueued)>,
    ) -> Result<(), Error> {
        // Prepared once per call (a chunk of a batch): looking a statement up in the cache
        // hashes its text, which for two statements per job was a few per cent of a large
        // list's time.
        let mut statements = Statements {
            insert: self.tx.prepare_cached(INSERT_JOB).map_err(database_error)?,
            source: self
                .tx
                .prepare_cached(INSERT_SOURCE)
                .map_err(database_error)?,
        };
        for job in jobs {
            let queued = queue_job(&self.tx, &mut statements, job, how).map_err(database_error)?;
            if queued.1 == Enqueued::New {
                *self.new.entry(job.kind).or_default() += 1;
            }
            out.push(queued);
        }
        self.jobs += jobs.len();
        Ok(())
    }

    /// [`Queueing::queue`], a chunk of jobs at a time until `stop` is cancelled (a large batch
    /// takes a second): returns whether it queued them all.
    fn queue_until(
        &mut self,
        jobs: &[NewJob],
        how: Enqueueing,
        out: &mut Vec<(i64, Enqueued)>,
        stop: &CancellationToken,
    ) -> Result<bool, Error> {
        for chunk in jobs.chunks(JOBS_BETWEEN_STOP_CHECKS) {
            if stop.is_cancelled() {
                return Ok(false);
            }
            self.queue(chunk, how, out)?;
        }
        Ok(true)
    }

    /// Counts the new jobs for `status` (one statement per kind, where a trigger ran one per
    /// job: migration 0007), then commits.
    fn commit(self) -> Result<(), Error> {
        for (kind, n) in &self.new {
            self.tx
                .prepare_cached(
                    "UPDATE job_counts SET n = n + ?2
                     WHERE state = 'available' AND kind = ?1 AND step = 'lookup'",
                )
                .and_then(|mut count| count.execute(params![kind.as_str(), n]))
                .map_err(database_error)?;
        }
        self.tx.commit().map_err(database_error)
    }
}

/// A new job. OR IGNORE rather than ON CONFLICT DO NOTHING: a statement that may abort halfway
/// (on a CHECK or NOT NULL) keeps a copy of every page it changes, to undo just itself; one that
/// ignores cannot abort. Our rows cannot break those constraints.
const INSERT_JOB: &str = "INSERT OR IGNORE INTO jobs (kind, indicator, allow_submit, max_attempts,
         scheduled_at, priority, created_at, updated_at)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?5, ?5)";

/// Where a job came from.
const INSERT_SOURCE: &str =
    "INSERT OR IGNORE INTO sources (job_id, source, line, seen_at) VALUES (?1, ?2, ?3, ?4)";

/// The statements every job of a list runs.
struct Statements<'c> {
    insert: rusqlite::CachedStatement<'c>,
    source: rusqlite::CachedStatement<'c>,
}

/// Queues one job in the open transaction: a job for a new indicator, or the known one again
/// where [`super::requeue`] says so; then where it came from.
fn queue_job(
    conn: &Connection,
    statements: &mut Statements<'_>,
    job: &NewJob,
    how: Enqueueing,
) -> rusqlite::Result<(i64, Enqueued)> {
    let inserted = statements.insert.execute(params![
        job.kind.as_str(),
        job.indicator,
        job.allow_submit,
        how.max_attempts,
        how.now,
        Step::Lookup.priority()
    ])?;
    // A job listed twice is new only the first time; the second finds it queued.
    let queued = if inserted == 1 {
        (conn.last_insert_rowid(), Enqueued::New)
    } else {
        requeue_known(conn, job, how)?
    };
    let id = queued.0;
    if let Some(seen) = &job.path {
        let (modified_ns, inode) = seen.unchanged_if.unzip();
        conn.prepare_cached(
            "INSERT INTO file_paths (job_id, path, size, seen_at, modified_ns, inode)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (job_id, path) DO UPDATE SET size = excluded.size,
                 seen_at = excluded.seen_at, modified_ns = excluded.modified_ns,
                 inode = excluded.inode",
        )?
        .execute(params![
            id,
            seen.path,
            seen.size as i64,
            how.now,
            modified_ns,
            inode
        ])?;
    }
    if let Some((source, line)) = &job.source {
        statements
            .source
            .execute(params![id, source, line, how.now])?;
    }
    Ok(queued)
}

/// Enqueues a job whose indicator is already in the queue: nothing to do while it is queued
/// or running but take this enqueue's permission to submit; a finished one is queued again
/// when its verdict is stale (or may now improve).
fn requeue_known(
    conn: &Connection,
    job: &NewJob,
    how: Enqueueing,
) -> rusqlite::Result<(i64, Enqueued)> {
    let (id, known) = conn
        .prepare_cached(
            "SELECT j.id, j.state, j.allow_submit, j.analysis_id, v.verdict, v.checked_at
             FROM jobs j LEFT JOIN verdicts v ON v.job_id = j.id
             WHERE j.kind = ?1 AND j.indicator = ?2",
        )?
        .query_row(params![job.kind.as_str(), job.indicator], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                (r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?),
            ))
        })?;
    match super::requeue(known, job.allow_submit, how.now - how.max_age_ms) {
        Requeue::Queued { permission_changes } => {
            if permission_changes {
                conn.prepare_cached(
                    "UPDATE jobs SET allow_submit = ?3, updated_at = ?2 WHERE id = ?1",
                )?
                .execute(params![id, how.now, job.allow_submit])?;
            }
            Ok((id, Enqueued::Queued))
        }
        Requeue::Reopen(step) => {
            conn.prepare_cached(
                "UPDATE jobs SET state = 'available', step = ?2, priority = ?3, attempt = 0,
                         max_attempts = ?4, scheduled_at = ?5, updated_at = ?5, finished_at = NULL,
                         allow_submit = ?6, last_error = NULL,
                         submitted_at = CASE WHEN ?2 = 'poll' THEN submitted_at END,
                         analysis_id = CASE WHEN ?2 = 'poll' THEN analysis_id END,
                         polls = CASE WHEN ?2 = 'poll' THEN polls ELSE 0 END
                     WHERE id = ?1",
            )?
            .execute(params![
                id,
                step.as_str(),
                step.priority(),
                how.max_attempts,
                how.now,
                job.allow_submit
            ])?;
            Ok((id, Enqueued::Reopened))
        }
        Requeue::Fresh => Ok((id, Enqueued::Fresh)),
    }
}
