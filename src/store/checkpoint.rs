//! Checkpoints off the writers' path: a thread with a connection of its own copies the
//! write-ahead log back into the database file every [`EVERY`].
//!
//! A checkpoint waits for two fsyncs, the log's and then the database file's, and each flushes
//! what was written since the last. Left alone, the writer whose commit takes the log past
//! SQLite's 1,000 pages copies all of them and waits for both; the thread every job's writes
//! go through spent a third of its time there (see BENCHMARKS.md). With this thread copying
//! the log a little at a time, that writer still checkpoints at 1,000 pages, which is what lets
//! the log start over from its beginning (SQLite restarts it only for a writer that finds it
//! wholly copied), but finds nearly everything copied and little left to flush. The log keeps
//! its usual length, so a disk with little room left is no worse off.
//!
//! A checkpoint that fails (the disk is full, a reader still needs old pages) copies what it
//! can and is tried again at the next tick.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use rusqlite::Connection;

/// How often the log is copied back.
const EVERY: Duration = Duration::from_millis(50);

/// The running checkpoint thread; it stops, closing its connection, when this is dropped.
#[derive(Debug)]
pub(super) struct Checkpoints {
    _running: Sender<()>,
}

impl Checkpoints {
    /// Starts checkpointing the database `conn` is open on.
    pub(super) fn start(conn: Connection) -> std::io::Result<Checkpoints> {
        let (running, stopped) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &stopped))?;
        Ok(Checkpoints { _running: running })
    }
}

fn run(conn: &Connection, stopped: &Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        // PASSIVE: copies what no reader still needs, without waiting for anyone.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint failed; trying again");
        }
    }
}
