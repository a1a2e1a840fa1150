//! Group commit for the SQLite store: the small writes every worker makes for each job (a claim,
//! a stored-verdict check, a quota grant, an outcome) queue for one connection that a thread of
//! its own owns, and whatever is waiting when that thread becomes free runs in one transaction.
//! Under load one commit, and the WAL pages it writes, serves dozens of jobs; a write that finds
//! the queue empty is its own transaction.
//!
//! The thread runs each batch's statements itself, one after another. Through sqlx every
//! statement was a round trip between a tokio task and sqlx's connection thread, each a
//! wake-up of both, and the writer waited on those hand-offs more than it worked (see
//! BENCHMARKS.md). Here a batch costs one wake-up of the thread and one per answer.
//!
//! A write's result is handed back only once its transaction has committed. When one write of a
//! batch fails, or the commit does, the batch is rolled back and each of its writes runs again in
//! a transaction of its own, so that a failure reaches its own caller only.
//!
//! Quota grants go first ([`GroupCommit::write_first`]). A request holds one of the turns that
//! bound the requests in flight from its grant to its answer, and a grant queued behind a batch
//! of outcomes took longer than the request itself (4.6 ms against 1.7 ms, see BENCHMARKS.md).
//! The grants waiting are committed in a transaction of their own, ahead of the rest.

use std::any::Any;
use std::borrow::Cow;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::Error;

/// Most writes in one transaction.
const MAX_BATCH: usize = 128;

/// Writes waiting for the writer; senders wait when it is full.
const QUEUE: usize = 1024;

type Output = Box<dyn Any + Send>;

/// One write: runs inside a transaction it does not own, so it neither begins nor commits, and
/// may run twice (see the module documentation), so it has no effect outside the database.
type Write = Box<dyn FnMut(&Connection) -> rusqlite::Result<Output> + Send>;

struct Queued {
    write: Write,
    reply: oneshot::Sender<Result<Output, Error>>,
    first: bool,
}

/// The queue in front of the writer thread. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Queued>,
}

impl GroupCommit {
    /// Starts the thread that runs the queued writes on `conn`. It ends, closing `conn`, when
    /// the last clone of the returned queue is dropped.
    pub(super) fn start(conn: Connection) -> std::io::Result<GroupCommit> {
        let (queue, waiting) = mpsc::channel(QUEUE);
        std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, waiting))?;
        Ok(GroupCommit { queue })
    }

    /// Runs `write` in the next transaction and returns its result once that has committed.
    pub(super) async fn write<T, F>(&self, write: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.queued(write, false).await
    }

    /// [`GroupCommit::write`], ahead of the other writes waiting: for what a request waits on.
    pub(super) async fn write_first<T, F>(&self, write: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.queued(write, true).await
    }

    async fn queued<T, F>(&self, mut write: F, first: bool) -> Result<T, Error>
    where
        T: Send + 'static,
        F: FnMut(&Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let write: Write = Box::new(move |conn| write(conn).map(|t| Box::new(t) as Output));
        self.queue
            .send(Queued {
                write,
                reply,
                first,
            })
            .await
            .map_err(|_| Error::PoolClosed)?;
        let output = answer.await.map_err(|_| Error::PoolClosed)??;
        Ok(*output
            .downcast::<T>()
            .expect("a write is answered with its own result"))
    }
}

fn run(conn: Connection, mut waiting: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut firsts = Vec::new();
    while let Some(queued) = waiting.blocking_recv() {
        batch.push(queued);
        while batch.len() < MAX_BATCH {
            match waiting.try_recv() {
                Ok(queued) => batch.push(queued),
                Err(_) => break,
            }
        }
        firsts.extend(batch.extract_if(.., |queued| queued.first));
        commit_and_answer(&conn, &mut firsts);
        commit_and_answer(&conn, &mut batch);
    }
}

/// Runs `batch` in one transaction and answers each write, emptying `batch`.
fn commit_and_answer(conn: &Connection, batch: &mut Vec<Queued>) {
    if batch.is_empty() {
        return;
    }
    match in_one_transaction(conn, batch) {
        Ok(outputs) => {
            for (queued, output) in batch.drain(..).zip(outputs) {
                let _ = queued.reply.send(Ok(output));
            }
        }
        Err(e) if batch.len() == 1 => {
            let _ = batch.pop().expect("one").reply.send(Err(database_error(e)));
        }
        Err(e) => {
            let writes = batch.len();
            tracing::debug!(error = %e, writes, "a grouped write failed; running each alone");
            for mut queued in batch.drain(..) {
                let result = in_one_transaction(conn, std::slice::from_mut(&mut queued))
                    .map(|mut outputs| outputs.pop().expect("one write, one output"))
                    .map_err(database_error);
                let _ = queued.reply.send(result);
            }
        }
    }
}

fn in_one_transaction(conn: &Connection, batch: &mut [Queued]) -> rusqlite::Result<Vec<Output>> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    let done = batch
        .iter_mut()
        .map(|queued| (queued.write)(conn))
        .collect::<rusqlite::Result<Vec<_>>>()
        .and_then(|outputs| conn.execute_batch("COMMIT").map(|()| outputs));
    // A failed write, or a COMMIT that failed (the disk was full), leaves the transaction open.
    if done.is_err() && !conn.is_autocommit() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

/// An error of the writer connection, as the store reports errors (its message is SQLite's:
/// "database or disk is full", ...).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
struct WriterError {
    message: String,
    code: Option<i32>,
}

pub(super) fn database_error(e: rusqlite::Error) -> Error {
    let code = e.sqlite_error().map(|f| f.extended_code);
    Error::Database(Box::new(WriterError {
        message: e.to_string(),
        code,
    }))
}

impl sqlx::error::DatabaseError for WriterError {
    fn message(&self) -> &str {
        &self.message
    }

    fn code(&self) -> Option<Cow<'_, str>> {
        self.code.map(|c| Cow::Owned(c.to_string()))
    }

    fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
        self
    }

    fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
        self
    }

    fn kind(&self) -> sqlx::error::ErrorKind {
        sqlx::error::ErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(dir: &std::path::Path) -> Connection {
        let conn = Connection::open(dir.join("t.db")).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER NOT NULL)")
            .unwrap();
        conn
    }

    fn insert(n: i64) -> impl FnMut(&Connection) -> rusqlite::Result<i64> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t (n) VALUES (?1)", [n])?;
            Ok(n)
        }
    }

    /// Occupies the writer thread with a write that returns once the sender is used or dropped.
    fn hold_writer(
        grouped: &GroupCommit,
    ) -> (
        std::sync::mpsc::Sender<()>,
        tokio::task::JoinHandle<Result<(), Error>>,
    ) {
        let (held, hold) = std::sync::mpsc::channel::<()>();
        let holder = grouped.clone();
        let holding = tokio::spawn(async move {
            holder
                .write(move |_| {
                    let _ = hold.recv();
                    Ok(())
                })
                .await
        });
        (held, holding)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_together_each_get_their_answer_and_one_failure_stays_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let grouped = GroupCommit::start(open(dir.path())).unwrap();
        // Hold the writer thread so that every write below queues up into one batch.
        let (held, holding) = hold_writer(&grouped);
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..20 {
            let grouped = grouped.clone();
            writes.spawn(async move { (n, grouped.write(insert(n)).await) });
        }
        let failing = grouped.clone();
        let failure = tokio::spawn(async move {
            failing
                .write(|conn| conn.execute("INSERT INTO missing (n) VALUES (1)", []))
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // Dropped too: the batch runs again write by write after the failure, and the holder
        // must not wait a second time.
        held.send(()).unwrap();
        drop(held);
        holding.await.unwrap().unwrap();
        while let Some(done) = writes.join_next().await {
            let (n, result) = done.unwrap();
            assert_eq!(result.unwrap(), n, "each write gets its own answer");
        }
        let error = failure.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
        let (rows, sum): (i64, i64) = grouped
            .write(|conn| {
                conn.query_row("SELECT COUNT(*), SUM(n) FROM t", [], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
            })
            .await
            .unwrap();
        assert_eq!(
            (rows, sum),
            (20, (0..20).sum()),
            "every good write committed once"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_first_runs_ahead_of_the_writes_queued_before_it() {
        let dir = tempfile::tempdir().unwrap();
        let grouped = GroupCommit::start(open(dir.path())).unwrap();
        let (held, holding) = hold_writer(&grouped);
        let pause = || tokio::time::sleep(std::time::Duration::from_millis(20));
        pause().await;
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..5 {
            let grouped = grouped.clone();
            writes.spawn(async move { grouped.write(insert(n)).await });
            // Queued in this order behind the held writer.
            pause().await;
        }
        let first = grouped.clone();
        writes.spawn(async move { first.write_first(insert(100)).await });
        pause().await;
        held.send(()).unwrap();
        holding.await.unwrap().unwrap();
        while let Some(done) = writes.join_next().await {
            done.unwrap().unwrap();
        }
        // Rowids follow the order the rows were written in.
        let order: Vec<i64> = grouped
            .write(|conn| {
                let mut rows = conn.prepare("SELECT n FROM t ORDER BY rowid")?;
                rows.query_map([], |r| r.get(0))?.collect()
            })
            .await
            .unwrap();
        assert_eq!(order, [100, 0, 1, 2, 3, 4]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_is_answered_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let grouped = GroupCommit::start(open(dir.path())).unwrap();
        grouped.write(insert(7)).await.unwrap();
        // Another connection sees it: the transaction was committed before the answer.
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        let n: i64 = other
            .query_row("SELECT n FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 7);
    }
}
