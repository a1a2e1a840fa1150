//! `vtriage run`: the daemon users leave running. It watches a drop directory (files to triage)
//! and a lists directory (IOC lists to ingest), queues what settles there, and works the queue
//! with the workers until SIGINT/SIGTERM.
//!
//! Hashing runs on blocking threads, in parallel with network work; the watcher's channel is
//! bounded, so a storm of dropped files waits for the hashers instead of filling memory.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use backon::{ExponentialBuilder, Retryable};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, UploadPolicy};
use crate::indicator::Kind;
use crate::lists;
use crate::pipeline::Pipeline;
use crate::store::{FileSeen, NewJob, Store, now_millis};
use crate::watch::{self, SettledFile};

/// Files (or indicators) queued per transaction.
const BATCH: usize = 500;

/// Offers `attempt` to the database until it takes it, while `refused` says the error is the
/// database's (disk full, locked): after 200 ms, then twice as long each time up to 30 s, since
/// what the watcher handed over is not handed over again while the daemon runs. Not once the
/// daemon is stopping: what was not queued was not recorded either, so the next start reads it
/// again. `log` says why each offer failed.
async fn until_the_database_takes_it<T, E, Fut>(
    attempt: impl FnMut() -> Fut,
    refused: impl Fn(&E) -> bool,
    log: impl Fn(&E),
    stop: &CancellationToken,
) -> Result<T, E>
where
    Fut: Future<Output = Result<T, E>>,
{
    let backoff = ExponentialBuilder::new()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .without_max_times();
    let waiting = stop.clone();
    attempt
        .retry(backoff)
        .sleep(move |delay| {
            let stop = waiting.clone();
            async move {
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => {}
                }
            }
        })
        .when(|e| refused(e) && !stop.is_cancelled())
        .notify(|e, _| log(e))
        .await
}

/// What the daemon watches.
#[derive(Debug, Clone, Default)]
pub struct Watched {
    /// Files dropped here are triaged.
    pub drop: Option<PathBuf>,
    /// IOC lists dropped here are ingested.
    pub lists: Option<PathBuf>,
}

/// Runs the daemon until the pipeline's stop token is cancelled or a fatal error stops the
/// workers. Returns the fatal error, if any.
pub async fn run(pipeline: &Pipeline, watched: &Watched) -> anyhow::Result<()> {
    pipeline.spawn_workers();
    let mut tasks = JoinSet::new();
    let stop = pipeline.stop.clone();
    if let Some(dir) = &watched.drop {
        let (tx, rx) = mpsc::channel(1024);
        let allow = pipeline.config.upload.files == UploadPolicy::Unknown;
        let max_age_ms = pipeline.config.verdict.max_age_ms();
        // Left out, so read again: files whose jobs a restart would change (a failed verdict,
        // an unknown one that an upload now allowed may improve).
        let seen = pipeline.store.files_seen_under(&under(dir), allow).await;
        let queued_before = sent_before("files", seen)?;
        let (cfg, dir2, stop2) = (pipeline.config.watch.clone(), dir.clone(), stop.clone());
        tasks.spawn(async move {
            let stopped = async move { stop2.cancelled().await };
            watch::watch(dir2, cfg, queued_before, tx, stopped).await
        });
        tasks.spawn(queue_dropped_files(
            rx,
            pipeline.store.clone(),
            allow,
            max_age_ms,
            pipeline.config.daemon.max_attempts,
            stop.clone(),
        ));
        tracing::info!(dir = %dir.display(), "watching the drop directory");
    }
    if let Some(dir) = &watched.lists {
        let (tx, rx) = mpsc::channel(64);
        let submit_urls = pipeline.config.upload.urls == UploadPolicy::Unknown;
        // Left out, so read again: lists with a failed job, or an unknown URL that may now be
        // submitted.
        let seen = pipeline
            .store
            .lists_read_under(&under(dir), submit_urls)
            .await;
        let read_before = sent_before("lists", seen)?;
        let (cfg, dir2, stop2) = (pipeline.config.watch.clone(), dir.clone(), stop.clone());
        tasks.spawn(async move {
            let stopped = async move { stop2.cancelled().await };
            watch::watch(dir2, cfg, read_before, tx, stopped).await
        });
        tasks.spawn(queue_lists(
            rx,
            pipeline.store.clone(),
            pipeline.config.clone(),
            stop.clone(),
        ));
        tracing::info!(dir = %dir.display(), "watching the lists directory");
    }
    // Analyses that outlived `give_up_after_secs` stay `pending`; they are polled again, ever
    // less often (`Store::recheck_pending`), without ever failing.
    let (store, every) = (
        pipeline.store.clone(),
        crate::config::secs(pipeline.config.poll.max_interval_secs),
    );
    let stop2 = stop.clone();
    tasks.spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = stop2.cancelled() => return Ok(()),
            }
            if let Err(e) = store
                .recheck_pending(every.as_millis() as i64, now_millis())
                .await
            {
                tracing::warn!(error = %e, "cannot requeue pending analyses");
            }
        }
    });
    // A watcher or queuer that fails stops the daemon at once, with an error: running on
    // without it would leave what is dropped unnoticed, and a supervisor restarts a daemon that
    // exits with an error.
    let failed = loop {
        tokio::select! {
            _ = stop.cancelled() => break None,
            _ = pipeline.worker.fatal.cancelled() => break None,
            Some(done) = tasks.join_next() => match done {
                Ok(Ok(())) => {}
                Ok(Err(e)) => break Some(e),
                Err(e) => break Some(anyhow::anyhow!("a daemon task panicked: {e}")),
            },
        }
    };
    if let Some(e) = &failed {
        tracing::error!(error = format!("{e:#}"), "stopping the daemon");
    }
    let grace = crate::config::secs(pipeline.config.daemon.shutdown_grace_secs);
    tokio::join!(pipeline.shutdown(), stop_tasks(tasks, grace));
    if let Some(e) = failed {
        return Err(e);
    }
    match pipeline.worker.fatal.is_cancelled() {
        true => anyhow::bail!("{}", pipeline.fatal_reason()),
        false => Ok(()),
    }
}

/// Waits up to `grace` for the watchers and queuers to stop (they stop at the signal, between
/// two blocks of a file or a list), then aborts those that did not: what they had not queued
/// was not recorded either, so the next start reads it again.
async fn stop_tasks(mut tasks: JoinSet<anyhow::Result<()>>, grace: Duration) {
    let joined = tokio::time::timeout(grace, async {
        while let Some(done) = tasks.join_next().await {
            if let Ok(Err(e)) = done {
                tracing::warn!(error = format!("{e:#}"), "a watcher stopped with an error");
            }
        }
    })
    .await;
    if joined.is_err() {
        tracing::warn!(
            "the watchers did not stop within the grace period; what they had not queued is read again at the next start"
        );
        tasks.shutdown().await;
    }
}

/// The `what` (files or lists) of a watched directory queued before this process started, as
/// its watcher takes them: it does not read them again while they are unchanged.
fn sent_before(
    what: &str,
    seen: Result<Vec<FileSeen>, crate::store::Error>,
) -> anyhow::Result<Vec<SettledFile>> {
    let seen = seen.map_err(|e| anyhow::anyhow!("cannot read the {what} queued before: {e}"))?;
    let sent: Vec<SettledFile> = seen.into_iter().filter_map(settled).collect();
    tracing::info!(
        count = sent.len(),
        "{what} queued before are not read again while unchanged"
    );
    Ok(sent)
}

/// The prefix of the paths under `dir`, with a separator: `drop` is not a prefix of
/// `drop2/a.exe`.
fn under(dir: &Path) -> String {
    crate::store::path_text(&dir.join(""))
}

/// A file as the watcher saw it, from what the store kept (none without a time and inode).
fn settled(seen: FileSeen) -> Option<SettledFile> {
    let (modified_ns, inode) = seen.unchanged_if?;
    // A name kept escaped (not UTF-8) is the reading of it that exists (a stat for those only).
    let candidates = crate::store::path_candidates(&seen.path);
    let path = match &candidates[..] {
        [only] => only.clone(),
        _ => candidates
            .iter()
            .find(|p| p.exists())
            .unwrap_or(&candidates[0])
            .clone(),
    };
    Some(SettledFile {
        path,
        size: seen.size,
        modified: UNIX_EPOCH + Duration::from_nanos(u64::try_from(modified_ns).ok()?),
        inode: inode as u64,
    })
}

/// How a watcher saw `file`, as the store keeps it.
fn seen(file: &SettledFile) -> FileSeen {
    let modified_ns = file
        .modified
        .duration_since(UNIX_EPOCH)
        .ok()
        .and_then(|d| i64::try_from(d.as_nanos()).ok());
    FileSeen {
        path: crate::store::path_text(&file.path),
        size: file.size,
        // The inode's bits as they are: read back with the same cast.
        unchanged_if: modified_ns.map(|ns| (ns, file.inode as i64)),
    }
}

/// Hashes settled files (several at once, on blocking threads) and queues them in batches,
/// until the watcher stops or `stop` is cancelled.
async fn queue_dropped_files(
    mut rx: mpsc::Receiver<SettledFile>,
    store: Arc<dyn Store>,
    allow_submit: bool,
    max_age_ms: i64,
    max_attempts: u32,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut hashing = JoinSet::new();
    let mut later = ReadLater::default();
    let mut batch = Vec::new();
    let mut open = true;
    let mut stopping = false;
    while open || !hashing.is_empty() {
        tokio::select! {
            // Files being hashed are dropped, which stops their hashing: not recorded as seen,
            // they are read again at the next start.
            _ = stop.cancelled(), if !stopping => {
                (stopping, open) = (true, false);
                hashing.abort_all();
            }
            file = rx.recv(), if open && hashing.len() < parallel => match file {
                Some(file) => { hashing.spawn(hash_one(file, Duration::ZERO)); }
                None => open = false,
            },
            (file, waited) = later.next(), if open && hashing.len() < parallel => {
                if unchanged(&file) {
                    hashing.spawn(hash_one(file, waited));
                }
            }
            Some(done) = hashing.join_next(), if !hashing.is_empty() => {
                let Ok((file, waited, hashed)) = done else { continue };
                match hashed {
                    // Deleted (or changed) while it was hashed: nothing to triage, or the
                    // watcher sends it again.
                    Ok(_) if !unchanged(&file) => {}
                    Ok(sha256) => {
                        if !waited.is_zero() {
                            tracing::info!(path = %file.path.display(), "a dropped file is readable now");
                        }
                        batch.push(NewJob {
                            kind: Kind::File,
                            indicator: sha256,
                            allow_submit,
                            path: Some(seen(&file)),
                            source: None,
                        });
                    }
                    // Gone before it could be hashed: nothing to triage.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        if waited.is_zero() {
                            tracing::warn!(path = %file.path.display(), error = %e,
                                "cannot read a dropped file; trying again later");
                        }
                        later.add(file, waited);
                    }
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(100)), if !batch.is_empty() => {
                flush(&*store, &mut batch, max_age_ms, max_attempts, &stop).await;
            }
        }
        if batch.len() >= BATCH {
            flush(&*store, &mut batch, max_age_ms, max_attempts, &stop).await;
        }
    }
    flush(&*store, &mut batch, max_age_ms, max_attempts, &stop).await;
    Ok(())
}

/// Hashes `file`, which could not be read for `waited` before.
async fn hash_one(
    file: SettledFile,
    waited: Duration,
) -> (SettledFile, Duration, std::io::Result<String>) {
    let hashed = crate::hashing::sha256_file(&file.path).await;
    (file, waited, hashed)
}

/// The first wait before a file that could not be read is tried again; it doubles each time.
const FIRST_READ_RETRY: Duration = Duration::from_secs(5);
/// The longest wait between two tries.
const LAST_READ_RETRY: Duration = Duration::from_secs(600);

/// Dropped files and lists that could not be read (a permission, a lock), tried again later for
/// as long as they are there unchanged: making a file readable changes nothing the watcher
/// would take for new content, and a restart is not the only cure users should have.
#[derive(Default)]
struct ReadLater {
    /// When each is due, and how long it had waited before.
    due: Vec<(tokio::time::Instant, Duration, SettledFile)>,
}

impl ReadLater {
    /// `file` could not be read, after waiting `waited` (zero the first time).
    fn add(&mut self, file: SettledFile, waited: Duration) {
        let wait = (waited * 2).clamp(FIRST_READ_RETRY, LAST_READ_RETRY);
        self.due
            .push((tokio::time::Instant::now() + wait, wait, file));
    }

    /// The next file due, once it is due, with how long it waited; never while there is none.
    /// Cancel-safe: the file is taken out only once it is due.
    async fn next(&mut self) -> (SettledFile, Duration) {
        let Some(first) = (0..self.due.len()).min_by_key(|&i| self.due[i].0) else {
            return std::future::pending().await;
        };
        tokio::time::sleep_until(self.due[first].0).await;
        let (_, waited, file) = self.due.swap_remove(first);
        (file, waited)
    }
}

/// Whether `file` is still there as the watcher saw it settle (if it changed, the watcher sends
/// it again).
fn unchanged(file: &SettledFile) -> bool {
    std::fs::metadata(&file.path).is_ok_and(|meta| {
        meta.len() == file.size && meta.modified().is_ok_and(|m| m == file.modified)
    })
}

async fn flush(
    store: &dyn Store,
    batch: &mut Vec<NewJob>,
    max_age_ms: i64,
    max_attempts: u32,
    stop: &CancellationToken,
) {
    if batch.is_empty() {
        return;
    }
    let jobs: &[NewJob] = batch;
    let queued = until_the_database_takes_it(
        || store.enqueue(jobs, now_millis(), max_age_ms, max_attempts),
        |_| true,
        |e| tracing::error!(error = %e, files = jobs.len(), "cannot queue files; retrying"),
        stop,
    )
    .await;
    if let Err(e) = queued {
        tracing::warn!(error = %e, files = jobs.len(),
            "stopping with files not queued; they are read again at the next start");
    }
    batch.clear();
}

/// Ingests each settled IOC list and queues its indicators with their provenance, until the
/// watcher stops or `stop` is cancelled (a list being read then stops part way).
async fn queue_lists(
    mut rx: mpsc::Receiver<SettledFile>,
    store: Arc<dyn Store>,
    config: Arc<Config>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut later = ReadLater::default();
    loop {
        let (file, waited) = tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            file = rx.recv() => match file {
                Some(file) => (file, Duration::ZERO),
                None => return Ok(()),
            },
            (file, waited) = later.next() => {
                if !unchanged(&file) {
                    continue;
                }
                (file, waited)
            }
        };
        // Like the drop directory: a database that refuses a batch is retried (queueing a list
        // again only adds its provenance to what is already queued).
        let queued = until_the_database_takes_it(
            || lists::queue(&*store, &file.path, None, &config, &stop),
            |e| matches!(e, lists::ListError::Store(_)),
            |e| tracing::error!(error = %e, list = %file.path.display(), "cannot queue a list; retrying"),
            &stop,
        )
        .await;
        match queued {
            Ok(list) => {
                for line in lists::describe(&list.list, false).lines() {
                    tracing::info!("{line}");
                }
                // Not recorded, the list is read again after a restart: no harm done.
                if let Err(e) = store.list_read(&seen(&file), now_millis()).await {
                    tracing::warn!(error = %e, list = %file.path.display(), "cannot record a list as read");
                }
            }
            // Not a list at all (a binary file): reading it again would not change that.
            Err(e @ lists::ListError::Read { .. }) if e.is_not_a_list() => {
                tracing::warn!(error = %e, "not an IOC list; skipped");
            }
            // Gone before it could be read, as a dropped file may be: nothing to ingest.
            Err(lists::ListError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound => {}
            // Stopped part way, or refused until the daemon stopped: not recorded as read, so
            // read again whole at the next start.
            Err(e @ (lists::ListError::Store(_) | lists::ListError::Stopped { .. })) => {
                tracing::warn!(error = %e, list = %file.path.display(),
                    "stopping with a list not wholly queued; it is read again at the next start");
            }
            Err(e) => {
                if waited.is_zero() {
                    tracing::warn!(error = %e, "cannot read a list; trying again later");
                }
                later.add(file, waited);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_in(dir: &Path) -> SettledFile {
        let path = dir.join("locked.bin");
        std::fs::write(&path, b"content").unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        SettledFile {
            path,
            size: meta.len(),
            modified: meta.modified().unwrap(),
            inode: 0,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_file_is_tried_again_ever_less_often() {
        let dir = tempfile::tempdir().unwrap();
        let mut later = ReadLater::default();
        let mut waited = Duration::ZERO;
        let mut waits = Vec::new();
        for _ in 0..10 {
            later.add(file_in(dir.path()), waited);
            let started = tokio::time::Instant::now();
            let (_, w) = later.next().await;
            assert_eq!(started.elapsed(), w, "due after the wait it reports");
            waits.push(w.as_secs());
            waited = w;
        }
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 320, 600, 600, 600]);
    }

    #[tokio::test(start_paused = true)]
    async fn the_file_due_first_comes_first_and_a_cancelled_wait_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut later = ReadLater::default();
        later.add(file_in(dir.path()), Duration::from_secs(40));
        later.add(file_in(dir.path()), Duration::ZERO);
        // Given up before it is due (another branch of a select won): both are still there.
        let gave_up = tokio::time::timeout(Duration::from_secs(1), later.next()).await;
        assert!(gave_up.is_err());
        assert_eq!(later.next().await.1, FIRST_READ_RETRY);
        assert_eq!(later.next().await.1, Duration::from_secs(80));
    }

    /// A file found changed once hashed (deleted or written again since it settled, as while it
    /// was hashed): its digest is of nothing there to triage (the watcher sends a new version
    /// again). The change is made before hashing here; the check after hashing sees it alike.
    #[tokio::test]
    async fn a_file_changed_since_it_settled_is_not_queued() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(
            crate::store::sqlite::SqliteStore::open(&dir.path().join("v.db"))
                .await
                .unwrap(),
        );
        let kept = file_in(dir.path());
        let mut changed = kept.clone();
        changed.path = dir.path().join("changed.bin");
        std::fs::write(&changed.path, b"written again since it settled").unwrap();
        let (tx, rx) = mpsc::channel(4);
        tx.send(kept).await.unwrap();
        tx.send(changed).await.unwrap();
        drop(tx);
        queue_dropped_files(rx, store.clone(), false, 1, 5, CancellationToken::new())
            .await
            .unwrap();
        assert_eq!(
            store.counts().await.unwrap().by_state["available"]["file"],
            1
        );
    }

    /// A database that keeps refusing (a full disk) is offered the batch again and again, until
    /// the daemon stops: then at once, not when the disk has room again.
    #[tokio::test(start_paused = true)]
    async fn refused_batches_are_offered_again_until_the_daemon_stops() {
        let stop = CancellationToken::new();
        let offers = std::sync::atomic::AtomicU32::new(0);
        let stopper = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(600)).await;
            stopper.cancel();
        });
        let started = tokio::time::Instant::now();
        let refused: Result<(), &str> = until_the_database_takes_it(
            || {
                offers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                async { Err("database or disk is full") }
            },
            |_| true,
            |_| {},
            &stop,
        )
        .await;
        assert!(refused.is_err());
        let offers = offers.into_inner();
        assert!(
            (20..40).contains(&offers),
            "offered {offers} times in 10 min"
        );
        assert!(
            started.elapsed() < Duration::from_secs(601),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn a_file_that_changed_or_went_is_left_to_the_watcher() {
        let dir = tempfile::tempdir().unwrap();
        let file = file_in(dir.path());
        assert!(unchanged(&file));
        std::fs::write(&file.path, b"other content").unwrap();
        assert!(!unchanged(&file));
        std::fs::remove_file(&file.path).unwrap();
        assert!(!unchanged(&file));
    }
}
