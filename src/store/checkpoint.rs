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
//!
//! When the store is dropped, a last checkpoint copies the whole log back and empties the file,
//! so that a process that ends (a CLI `ingest` of a large list) leaves no log of tens of MiB
//! behind for the next one to read through.

use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use rusqlite::Connection;

/// How often the log is copied back.
const EVERY: Duration = Duration::from_millis(50);

/// The running checkpoint thread. Dropping this stops it, after the last checkpoint, and waits
/// for it.
#[derive(Debug)]
pub(super) struct Checkpoints {
    running: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Checkpoints {
    /// Starts checkpointing the database `conn` is open on.
    pub(super) fn start(conn: Connection) -> std::io::Result<Checkpoints> {
        let (running, stopped) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-checkpoint".into())
            .spawn(move || run(&conn, &stopped))?;
        Ok(Checkpoints {
            running: Some(running),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpoints {
    fn drop(&mut self) {
        drop(self.running.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(conn: &Connection, stopped: &Receiver<()>) {
    while let Err(RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
        // PASSIVE: copies what no reader still needs, without waiting for anyone.
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::debug!(error = %e, "checkpoint failed; trying again");
        }
    }
    // TRUNCATE empties the log file once all of it is copied. Without waiting: a process that
    // is still reading or writing the log (another daemon) keeps it, and exiting goes on.
    let last = conn
        .busy_timeout(Duration::ZERO)
        .and_then(|()| conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())));
    if let Err(e) = last {
        tracing::debug!(error = %e, "the last checkpoint failed; the log stays for the next process");
    }
}
