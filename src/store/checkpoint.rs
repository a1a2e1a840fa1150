//! Checkpoints for the SQLite store, off the writer's path. A checkpoint copies the pages that
//! commits appended to the write-ahead log into the database file, then waits for the disk.
//! SQLite runs one on the connection that has just committed once the log passes 1,000 pages,
//! so a million-line list waited for the disk after every batch. Here a connection of its own
//! copies the log in the background while the writer goes on.
//!
//! The log starts over only when a write begins with all of it copied, which a writer that
//! commits back to back never gives the background copy time for: the writer still checkpoints
//! itself once the log passes [`WRITER_CHECKPOINT_PAGES`], which bounds it.

use std::time::Duration;

use sqlx::{Connection as _, SqliteConnection};
use tokio::sync::oneshot;

/// The log size (in pages of 4 KiB, so about 100 MiB) past which the writer checkpoints itself.
/// Higher made a million-line list queue faster (BENCHMARKS.md) at the price of a longer log.
pub(super) const WRITER_CHECKPOINT_PAGES: u32 = 25_000;

/// The size the log file is cut back to when it starts over after it grew past it.
pub(super) const WAL_KEPT_BYTES: u64 = 32 << 20;

/// How often the background connection copies the log.
const EVERY: Duration = Duration::from_millis(200);

/// The background checkpoints of one store; they stop when this is dropped.
#[derive(Debug)]
pub(super) struct Checkpoints {
    _stop: oneshot::Sender<()>,
}

impl Checkpoints {
    /// Starts checkpointing on `conn` (a connection that may write).
    pub(super) fn start(conn: SqliteConnection) -> Checkpoints {
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(run(conn, stopped));
        Checkpoints { _stop: stop }
    }
}

async fn run(mut conn: SqliteConnection, mut stopped: oneshot::Receiver<()>) {
    let mut ticks = tokio::time::interval(EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = &mut stopped => break,
            _ = ticks.tick() => {}
        }
        // PASSIVE copies what it can without waiting for readers or the writer; with nothing
        // new in the log it returns at once.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut conn)
            .await
        {
            tracing::debug!(error = %e, "background checkpoint failed; trying again later");
        }
    }
    let _ = conn.close().await;
}
