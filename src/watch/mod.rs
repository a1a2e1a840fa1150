//! Drop-directory watching: finds the files that land under a directory and hands each one on
//! once it has finished being written.
//!
//! This module owns deciding *when* a file is complete: its size, modification time and inode
//! unchanged for `settle_ms`, checked with stat() on a timer. Notify events are only hints
//! about where to look, because they can be lost or coalesced; when notify reports lost
//! events, or too many paths are pending at once, the whole tree is walked again. A
//! subdirectory that cannot be read is skipped with a warning, and walked and watched once a
//! change to it (a chmod) shows it can be. It does not read, hash or move files, and never
//! modifies the watched tree; what happens to a file once it is sent belongs to the receiver
//! of the channel.
//!
//! Files are remembered in memory; after a restart, those the caller says were sent before are
//! not sent again while their size, modification time and inode are unchanged. Any other file
//! present is sent again, and the receiver deduplicates by content.

mod ignore;
mod tracker;

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, bail};
use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

pub use self::ignore::Ignore;
use self::tracker::{Tracker, WatchDir};
use crate::config::WatchConfig;

/// Most paths waiting to settle at once; beyond it, an event storm is answered by a rescan.
const PENDING_CAP: usize = 100_000;

/// Notify events buffered between the notify thread and the watch loop. When full, the
/// notify thread drops the event and asks for a rescan instead of blocking.
const EVENT_BUFFER: usize = 8192;

/// The shortest interval between two settledness checks, so that `settle_ms = 0` does not spin.
const MIN_CHECK_INTERVAL: Duration = Duration::from_millis(10);

/// A file that stopped changing: its size and modification time as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettledFile {
    /// Where it is, under the watched directory as given to [`watch`].
    pub path: PathBuf,
    /// Its size in bytes when it settled.
    pub size: u64,
    /// Its modification time when it settled.
    pub modified: SystemTime,
    /// Its inode (0 where there are none).
    pub inode: u64,
}

/// Scans `root` once (walkdir), then watches it recursively until `shutdown` resolves, sending
/// every regular file once its size and mtime were unchanged for `settle_ms`. A file whose
/// size/mtime change after it was sent is sent again (new content). If `root` disappears, it is
/// watched again (and rescanned) once it is back. A subdirectory that cannot be read is skipped
/// until it can be. Returns when shut down, when the receiver is dropped, or on a fatal error
/// (the watch of `root` cannot be set up). The files in `sent_before` (handed on before a
/// restart) are not sent again while they are found as they were.
pub async fn watch(
    root: PathBuf,
    cfg: WatchConfig,
    sent_before: Vec<SettledFile>,
    tx: mpsc::Sender<SettledFile>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let ignore = Ignore::new(&cfg.ignore)?;
    if !root.is_dir() {
        bail!("cannot watch {}: not a directory", root.display());
    }
    let settle = Duration::from_millis(cfg.settle_ms);
    let mut tracker = Tracker::new(
        root.clone(),
        ignore,
        cfg.follow_symlinks,
        settle,
        PENDING_CAP,
    );
    tracker.sent_before(sent_before);

    // Set when the notify thread had to drop an event.
    let events_lost = Arc::new(AtomicBool::new(false));
    let (event_tx, mut event_rx) = mpsc::channel::<notify::Result<Event>>(EVENT_BUFFER);
    let mut loop_state = Loop {
        tracker: Some(tracker),
        held: Vec::new(),
        held_overflow: false,
        stop: Arc::new(AtomicBool::new(false)),
    };
    tokio::pin!(shutdown);
    loop {
        // Watching starts before the first scan, so that nothing falls between the two.
        let (watch_dir, per_directory) =
            start_watching(&root, &cfg, event_tx.clone(), Arc::clone(&events_lost))?;
        let tracker = loop_state.tracker.as_mut().expect("present between ticks");
        tracker.watch_with(watch_dir, per_directory);
        tracing::info!(root = %root.display(), settle_ms = cfg.settle_ms, "watching");
        let ended = loop_state
            .run(settle, &mut event_rx, &events_lost, &tx, &mut shutdown)
            .await;
        match ended {
            // A cleanup job or a remount may remove the directory and make it again: what is
            // dropped into it afterwards must not go unnoticed. (No tick runs now.)
            Ok(Ended::RootLost) => {
                let tracker = loop_state.tracker.as_mut().expect("present between ticks");
                tracker.stop_watching();
                tracing::warn!(
                    root = %root.display(),
                    "the watched directory disappeared; waiting for it to come back"
                );
                if !wait_for_dir(&root, settle, &mut shutdown).await {
                    return Ok(());
                }
                tracing::info!(root = %root.display(), "the watched directory is back");
                let tracker = loop_state.tracker.as_mut().expect("present between ticks");
                tracker.request_rescan();
            }
            other => {
                // Ends a walk still running on the blocking pool.
                loop_state.stop.store(true, Ordering::Relaxed);
                return other
                    .map(drop)
                    .with_context(|| format!("watching {}", root.display()));
            }
        }
    }
}

/// Starts notify's recursive watch of `root`, its events going to `events`. When a
/// subdirectory cannot be read (notify's recursive watch fails at the first one), watches
/// `root` alone instead, and says so: the tracker then watches each directory it walks, and
/// skips the unreadable ones until they can be read. Returns what adds a watch on one
/// directory, and whether the tracker must watch each directory.
fn start_watching(
    root: &Path,
    cfg: &WatchConfig,
    events: mpsc::Sender<notify::Result<Event>>,
    events_lost: Arc<AtomicBool>,
) -> anyhow::Result<(WatchDir, bool)> {
    let cannot_watch = || format!("cannot watch {}", root.display());
    let mut watcher = new_watcher(cfg, events.clone(), Arc::clone(&events_lost))?;
    let per_directory = match watcher.watch(root, RecursiveMode::Recursive) {
        Ok(()) => false,
        Err(e) if unreadable_below(&e, root) => {
            tracing::info!(
                root = %root.display(),
                error = %e,
                "a subdirectory cannot be read; watching each directory on its own"
            );
            // A new watcher: the failed one keeps the recursive watches it set up first.
            watcher = new_watcher(cfg, events, events_lost)?;
            watcher
                .watch(root, RecursiveMode::NonRecursive)
                .with_context(cannot_watch)?;
            true
        }
        Err(e) => return Err(e).with_context(cannot_watch),
    };
    let watch_dir = move |dir: &Path| watcher.watch(dir, RecursiveMode::NonRecursive);
    Ok((Box::new(watch_dir), per_directory))
}

/// Whether notify's recursive watch failed because it may not read a directory under `root`
/// (rather than `root` itself).
fn unreadable_below(e: &notify::Error, root: &Path) -> bool {
    let denied = match &e.kind {
        notify::ErrorKind::Io(io) => io.kind() == io::ErrorKind::PermissionDenied,
        _ => false,
    };
    denied && !e.paths.is_empty() && e.paths.iter().all(|path| path != root)
}

/// A notify watcher whose events go to `events`.
fn new_watcher(
    cfg: &WatchConfig,
    events: mpsc::Sender<notify::Result<Event>>,
    events_lost: Arc<AtomicBool>,
) -> anyhow::Result<notify::RecommendedWatcher> {
    notify::RecommendedWatcher::new(
        move |event| {
            // Never block the notify thread: a full buffer means a storm, and a rescan
            // recovers whatever was dropped.
            if let Err(mpsc::error::TrySendError::Full(_)) = events.try_send(event) {
                events_lost.store(true, Ordering::Relaxed);
            }
        },
        notify::Config::default().with_follow_symlinks(cfg.follow_symlinks),
    )
    .context("cannot start the file watcher")
}

/// Waits until `root` is a directory again (true) or `shutdown` resolves (false).
async fn wait_for_dir(
    root: &Path,
    settle: Duration,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> bool {
    let every = (settle / 4).max(Duration::from_millis(100));
    loop {
        let root2 = root.to_path_buf();
        if tokio::task::spawn_blocking(move || root2.is_dir())
            .await
            .unwrap_or(false)
        {
            return true;
        }
        tokio::select! {
            () = &mut *shutdown => return false,
            () = tokio::time::sleep(every) => {}
        }
    }
}

/// Why the watch loop ended.
enum Ended {
    /// Shut down, or the receiver is gone.
    Stopped,
    /// The watched directory disappeared.
    RootLost,
}

/// The state of the watch loop besides the tracker's own.
struct Loop {
    /// The tracker, or `None` while a tick runs on the blocking pool.
    tracker: Option<Tracker>,
    /// Hints that arrived while the tracker was away.
    held: Vec<PathBuf>,
    /// `held` overflowed: rescan instead.
    held_overflow: bool,
    /// Tells a running tick to give up (on shutdown).
    stop: Arc<AtomicBool>,
}

impl Loop {
    async fn run(
        &mut self,
        settle: Duration,
        events: &mut mpsc::Receiver<notify::Result<Event>>,
        events_lost: &AtomicBool,
        tx: &mpsc::Sender<SettledFile>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> anyhow::Result<Ended> {
        let mut ticker = tokio::time::interval((settle / 4).max(MIN_CHECK_INTERVAL));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tick_job: Option<tokio::task::JoinHandle<(Tracker, Vec<SettledFile>)>> = None;
        // Settled files not yet accepted by the receiver. No tick runs while it is non-empty,
        // so it never holds more than one tick's worth (bounded by the pending cap).
        let mut ready: VecDeque<SettledFile> = VecDeque::new();
        loop {
            // Unbiased: a steady stream of events must not starve sending, nor the reverse.
            tokio::select! {
                () = &mut *shutdown => return Ok(Ended::Stopped),
                () = tx.closed() => {
                    tracing::debug!("receiver of settled files is gone; watching ends");
                    return Ok(Ended::Stopped);
                }
                joined = async { tick_job.as_mut().expect("guarded").await }, if tick_job.is_some() => {
                    tick_job = None;
                    let (tracker, settled) = joined.context("the watcher's tick failed")?;
                    let root_lost = self.restore(tracker);
                    ready.extend(settled);
                    if root_lost {
                        return Ok(Ended::RootLost);
                    }
                }
                permit = tx.reserve(), if !ready.is_empty() => {
                    let Ok(permit) = permit else {
                        tracing::debug!("receiver of settled files is gone; watching ends");
                        return Ok(Ended::Stopped);
                    };
                    permit.send(ready.pop_front().expect("guarded"));
                }
                Some(event) = events.recv() => self.on_event(event),
                _ = ticker.tick(), if tick_job.is_none() && ready.is_empty() => {
                    let mut tracker = self.tracker.take().expect("present between ticks");
                    if events_lost.swap(false, Ordering::Relaxed) {
                        tracing::warn!("file watcher events were dropped; rescanning");
                        tracker.request_rescan();
                    }
                    if !tracker.has_work() {
                        self.tracker = Some(tracker);
                        continue;
                    }
                    let stop = Arc::clone(&self.stop);
                    // stat() and directory walks block: keep them off the async threads.
                    tick_job = Some(tokio::task::spawn_blocking(move || {
                        let settled = tracker.tick(Instant::now(), &stop);
                        (tracker, settled)
                    }));
                }
            }
        }
    }

    /// Takes the tracker back after a tick, replaying what arrived meanwhile. Returns whether
    /// the tick found the watched directory gone.
    fn restore(&mut self, mut tracker: Tracker) -> bool {
        if std::mem::take(&mut self.held_overflow) {
            tracker.request_rescan();
        }
        for path in self.held.drain(..) {
            tracker.hint(path);
        }
        tracing::trace!(pending = tracker.pending_len(), "tick done");
        let root_lost = tracker.root_lost();
        self.tracker = Some(tracker);
        root_lost
    }

    fn on_event(&mut self, event: notify::Result<Event>) {
        let paths = match event {
            Ok(event) if event.need_rescan() => {
                tracing::warn!("the file watcher lost events; rescanning");
                self.rescan();
                return;
            }
            // Reads (a hasher opening a sent file) change nothing; a close after writing is a
            // good moment to look.
            Ok(Event {
                kind: EventKind::Access(AccessKind::Close(AccessMode::Write)),
                paths,
                ..
            }) => paths,
            Ok(Event {
                kind: EventKind::Access(_),
                ..
            }) => return,
            Ok(event) => event.paths,
            Err(e) => {
                tracing::warn!(error = %e, "file watcher error");
                e.paths
            }
        };
        for path in paths {
            match &mut self.tracker {
                Some(tracker) => tracker.hint(path),
                None if self.held_overflow => {}
                None if self.held.len() < PENDING_CAP => self.held.push(path),
                None => {
                    self.held = Vec::new();
                    self.held_overflow = true;
                }
            }
        }
    }

    fn rescan(&mut self) {
        match &mut self.tracker {
            Some(tracker) => tracker.request_rescan(),
            None => {
                self.held = Vec::new();
                self.held_overflow = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(kind: notify::ErrorKind, path: &str) -> notify::Error {
        notify::Error::new(kind).add_path(PathBuf::from(path))
    }

    fn denied() -> notify::ErrorKind {
        notify::ErrorKind::Io(io::Error::from(io::ErrorKind::PermissionDenied))
    }

    #[test]
    fn only_a_subdirectory_that_may_not_be_read_makes_the_watch_per_directory() {
        let root = Path::new("/srv/drop");
        assert!(unreadable_below(&error(denied(), "/srv/drop/x"), root));
        // The root's own failures, and failures that skipping one directory would not cure
        // (the limit on watches), keep ending the watch.
        assert!(!unreadable_below(&error(denied(), "/srv/drop"), root));
        assert!(!unreadable_below(&notify::Error::new(denied()), root));
        let limit = notify::ErrorKind::MaxFilesWatch;
        assert!(!unreadable_below(&error(limit, "/srv/drop/x"), root));
    }
}
