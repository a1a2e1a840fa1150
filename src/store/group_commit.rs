//! Group commit for the SQLite store: the small writes every worker makes for each job (a claim,
//! a quota grant, an outcome) queue for the one writer connection, and whatever is waiting when
//! it becomes free runs in one transaction. Under load one commit, and the WAL pages it writes,
//! serves dozens of jobs; a write that finds the queue empty is its own transaction as before.
//!
//! A write's result is handed back only once its transaction has committed. When one write of a
//! batch fails, or the commit does, the batch is rolled back and each of its writes runs again in
//! a transaction of its own, so that a failure reaches its own caller only.

use std::any::Any;

use futures_util::future::BoxFuture;
use sqlx::{SqliteConnection, SqlitePool};
use tokio::sync::{mpsc, oneshot};

use super::Error;

/// Most writes in one transaction.
const MAX_BATCH: usize = 128;

/// Writes waiting for the writer; senders wait when it is full.
const QUEUE: usize = 1024;

type Output = Box<dyn Any + Send>;

/// One write: runs inside a transaction it does not own, so it neither begins nor commits, and
/// may run twice (see the module documentation), so it has no effect outside the database.
type Write =
    Box<dyn for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<Output, Error>> + Send>;

struct Queued {
    write: Write,
    reply: oneshot::Sender<Result<Output, Error>>,
}

/// The queue in front of the writer connection. Cheap to clone.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Queued>,
}

impl GroupCommit {
    /// Starts the task that runs the queued writes on `pool` (which has one connection). It
    /// ends when the last clone of the returned queue is dropped.
    pub(super) fn start(pool: SqlitePool) -> GroupCommit {
        let (queue, waiting) = mpsc::channel(QUEUE);
        tokio::spawn(run(pool, waiting));
        GroupCommit { queue }
    }

    /// Runs `write` in the next transaction and returns its result once that has committed.
    pub(super) async fn write<T, F>(&self, mut write: F) -> Result<T, Error>
    where
        T: Send + 'static,
        F: for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<T, Error>>
            + Send
            + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let write: Write = Box::new(move |conn| {
            let done = write(conn);
            Box::pin(async move { done.await.map(|t| Box::new(t) as Output) })
        });
        self.queue
            .send(Queued { write, reply })
            .await
            .map_err(|_| Error::PoolClosed)?;
        let output = answer.await.map_err(|_| Error::PoolClosed)??;
        Ok(*output
            .downcast::<T>()
            .expect("a write is answered with its own result"))
    }
}

async fn run(pool: SqlitePool, mut waiting: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while waiting.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match in_one_transaction(&pool, &mut batch).await {
            Ok(outputs) => {
                for (queued, output) in batch.drain(..).zip(outputs) {
                    let _ = queued.reply.send(Ok(output));
                }
            }
            Err(e) if batch.len() == 1 => {
                let _ = batch.pop().expect("one").reply.send(Err(e));
            }
            Err(e) => {
                let writes = batch.len();
                tracing::debug!(error = %e, writes, "a grouped write failed; running each alone");
                for mut queued in batch.drain(..) {
                    let result = in_one_transaction(&pool, std::slice::from_mut(&mut queued))
                        .await
                        .map(|mut outputs| outputs.pop().expect("one write, one output"));
                    let _ = queued.reply.send(result);
                }
            }
        }
    }
}

async fn in_one_transaction(pool: &SqlitePool, batch: &mut [Queued]) -> Result<Vec<Output>, Error> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let mut outputs = Vec::with_capacity(batch.len());
    for queued in batch.iter_mut() {
        outputs.push((queued.write)(&mut tx).await?);
    }
    tx.commit().await?;
    Ok(outputs)
}

#[cfg(test)]
mod tests {
    use sqlx::Connection;
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;

    async fn pool(dir: &std::path::Path) -> SqlitePool {
        let options = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(dir.join("t.db"))
            .create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options)
            .await
            .unwrap();
        sqlx::query("CREATE TABLE t (n INTEGER NOT NULL)")
            .execute(&pool)
            .await
            .unwrap();
        pool
    }

    fn insert(
        n: i64,
    ) -> impl for<'c> FnMut(&'c mut SqliteConnection) -> BoxFuture<'c, Result<i64, Error>> + Send + 'static
    {
        move |conn| {
            Box::pin(async move {
                sqlx::query("INSERT INTO t (n) VALUES (?1)")
                    .bind(n)
                    .execute(&mut *conn)
                    .await?;
                Ok(n)
            })
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn writes_queued_together_each_get_their_answer_and_one_failure_stays_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        let grouped = GroupCommit::start(pool.clone());
        // Hold the writer so that every write below queues up into one batch.
        let held = pool.acquire().await.unwrap();
        let mut writes = tokio::task::JoinSet::new();
        for n in 0..20 {
            let grouped = grouped.clone();
            writes.spawn(async move { (n, grouped.write(insert(n)).await) });
        }
        let failing = grouped.clone();
        let failure = tokio::spawn(async move {
            failing
                .write(|conn| {
                    Box::pin(async move {
                        sqlx::query("INSERT INTO missing (n) VALUES (1)")
                            .execute(&mut *conn)
                            .await?;
                        Ok(())
                    })
                })
                .await
        });
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        drop(held);
        while let Some(done) = writes.join_next().await {
            let (n, result) = done.unwrap();
            assert_eq!(result.unwrap(), n, "each write gets its own answer");
        }
        let error = failure.await.unwrap().unwrap_err();
        assert!(error.to_string().contains("missing"), "{error}");
        let (rows, sum): (i64, i64) = sqlx::query_as("SELECT COUNT(*), SUM(n) FROM t")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            (rows, sum),
            (20, (0..20).sum()),
            "every good write committed once"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_is_answered_only_once_committed() {
        let dir = tempfile::tempdir().unwrap();
        let pool = pool(dir.path()).await;
        let grouped = GroupCommit::start(pool.clone());
        grouped.write(insert(7)).await.unwrap();
        // Another connection sees it: the transaction was committed before the answer.
        let mut other = sqlx::SqliteConnection::connect(&format!(
            "sqlite://{}",
            dir.path().join("t.db").display()
        ))
        .await
        .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT n FROM t")
            .fetch_one(&mut other)
            .await
            .unwrap();
        assert_eq!(n, 7);
    }
}
