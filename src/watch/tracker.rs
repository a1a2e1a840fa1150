//! The synchronous half of the watcher: the paths waiting to settle, what was already handed
//! on, and the stat() and directory walks that decide. It is driven by the async loop in
//! [`super`], which runs [`Tracker::tick`] on a blocking thread.
//!
//! It never opens a file (opening a FIFO blocks) and never changes the watched tree: it only
//! stats and lists, and adds a watch per directory when notify cannot watch the tree
//! recursively.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use walkdir::WalkDir;

use super::{Ignore, SettledFile};

/// Adds a notify watch on one directory alone, not its subdirectories.
pub(crate) type WatchDir = Box<dyn FnMut(&Path) -> notify::Result<()> + Send>;

/// What identifies one version of a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fingerprint {
    /// Size in bytes.
    size: u64,
    /// Modification time.
    modified: SystemTime,
    /// The inode: a file renamed over another one is new content even if a copy preserved
    /// size and mtime (`cp -p`, `rsync -t`).
    inode: u64,
}

impl Fingerprint {
    fn of(meta: &std::fs::Metadata) -> Fingerprint {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Fingerprint {
            size: meta.len(),
            // Platforms without mtime get the epoch: size alone then decides.
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            inode,
        }
    }
}

/// A path waiting to settle.
#[derive(Debug, Clone, Copy)]
struct Observation {
    /// The fingerprint seen at the last stat; `None` until the first.
    last: Option<Fingerprint>,
    /// When `last` was first seen.
    since: Instant,
}

/// What was decided about a path that is not pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Handed on with this fingerprint: only a different one is sent again.
    Sent(Fingerprint),
    /// A FIFO, socket or device: warned about once, never opened.
    Special,
}

/// A [`Verdict`] plus the rescan that last saw the path, so a rescan can forget paths that
/// vanished while events were lost.
#[derive(Debug, Clone, Copy)]
struct Known {
    verdict: Verdict,
    generation: u64,
}

/// What a stat() says about a pending path.
enum Found {
    File(Fingerprint),
    Dir,
    Symlink,
    Special,
    Gone,
    Unreadable(io::Error),
}

fn stat(path: &Path, follow_symlinks: bool) -> Found {
    let meta = if follow_symlinks {
        std::fs::metadata(path)
    } else {
        std::fs::symlink_metadata(path)
    };
    match meta {
        Ok(meta) => classify(&meta),
        // NotADirectory: a parent was replaced by a file; the path is gone all the same.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Found::Gone
        }
        Err(e) => Found::Unreadable(e),
    }
}

fn classify(meta: &std::fs::Metadata) -> Found {
    let kind = meta.file_type();
    if kind.is_file() {
        Found::File(Fingerprint::of(meta))
    } else if kind.is_dir() {
        Found::Dir
    } else if kind.is_symlink() {
        Found::Symlink
    } else {
        Found::Special
    }
}

/// The watcher's state. Memory: the pending map is capped; the map of decided paths holds one
/// small entry per file present in the tree, and forgets files that vanish; the set of
/// unreadable directories likewise.
pub(crate) struct Tracker {
    /// The watched directory, as given (notify reports paths under it in the same form).
    root: PathBuf,
    /// Names never sent.
    ignore: Ignore,
    /// Follow symbolic links (walks detect loops).
    follow_symlinks: bool,
    /// How long a fingerprint must stay unchanged.
    settle: Duration,
    /// Most pending paths; more means an event storm, answered by a rescan.
    cap: usize,
    /// Paths to stat at the next tick.
    pending: HashMap<PathBuf, Observation>,
    /// Ordered so that everything under a vanished directory is one range.
    known: BTreeMap<PathBuf, Known>,
    /// Directories walked when they appeared, with when: each is walked once more a settle
    /// period later. Notify reports a new directory before it watches it, so files created in
    /// it between our walk and its watch have no events.
    new_dirs: Vec<(PathBuf, Instant)>,
    /// Events were lost or the pending map overflowed: walk the whole tree at the next tick.
    /// Hints are ignored meanwhile: the walk finds those paths anyway.
    rescan_needed: bool,
    /// Counts full rescans.
    generation: u64,
    /// The watched directory itself is gone (or no longer a directory).
    root_lost: bool,
    /// Adds a watch on one directory (`None`: nothing is watched, as in unit tests).
    watch_dir: Option<WatchDir>,
    /// Each directory walked is watched on its own, through `watch_dir`: notify's recursive
    /// watch fails at the first subdirectory it cannot read, and never watches one that
    /// becomes readable later.
    per_directory: bool,
    /// Directories that could not be read or watched, each warned about once; a walk that
    /// reads one forgets it.
    unreadable: BTreeSet<PathBuf>,
}

impl Tracker {
    /// A tracker whose first tick scans the whole tree.
    pub(crate) fn new(
        root: PathBuf,
        ignore: Ignore,
        follow_symlinks: bool,
        settle: Duration,
        cap: usize,
    ) -> Tracker {
        Tracker {
            root,
            ignore,
            follow_symlinks,
            settle,
            cap: cap.max(1),
            pending: HashMap::new(),
            known: BTreeMap::new(),
            new_dirs: Vec::new(),
            rescan_needed: true,
            generation: 0,
            root_lost: false,
            watch_dir: None,
            per_directory: false,
            unreadable: BTreeSet::new(),
        }
    }

    /// Keeps `watch_dir` (the watch it adds) for as long as the tracker watches. With
    /// `per_directory`, notify could not watch the tree recursively: a walk of the whole tree
    /// then watches each directory.
    pub(crate) fn watch_with(&mut self, watch_dir: WatchDir, per_directory: bool) {
        self.watch_dir = Some(watch_dir);
        self.per_directory = per_directory;
        if per_directory {
            self.request_rescan();
        }
    }

    /// Drops the watch (the watched directory is gone).
    pub(crate) fn stop_watching(&mut self) {
        self.watch_dir = None;
        self.per_directory = false;
    }

    /// Files handed on before (by an earlier process): not sent again while unchanged. Those no
    /// longer there are forgotten by the first scan.
    pub(crate) fn sent_before(&mut self, files: Vec<SettledFile>) {
        for file in files {
            let fp = Fingerprint {
                size: file.size,
                modified: file.modified,
                inode: file.inode,
            };
            let known = Known {
                verdict: Verdict::Sent(fp),
                generation: self.generation,
            };
            self.known.insert(file.path, known);
        }
    }

    /// Something happened at `path`: look at it at the next tick.
    pub(crate) fn hint(&mut self, path: PathBuf) {
        if self.rescan_needed || self.pending.contains_key(&path) {
            return;
        }
        if path != self.root && self.ignore.is_ignored(relative(&self.root, &path)) {
            tracing::debug!(path = %path.display(), "ignored name");
            return;
        }
        if self.pending.len() >= self.cap {
            tracing::warn!(
                cap = self.cap,
                "too many changes at once; rescanning the drop directory"
            );
            self.request_rescan();
            return;
        }
        self.pending.insert(
            path,
            Observation {
                last: None,
                since: Instant::now(),
            },
        );
    }

    /// Events were lost: forget what is pending and walk the whole tree at the next tick.
    pub(crate) fn request_rescan(&mut self) {
        self.pending = HashMap::new();
        self.rescan_needed = true;
    }

    /// Whether a tick has anything to do.
    pub(crate) fn has_work(&self) -> bool {
        self.rescan_needed || !self.pending.is_empty() || !self.new_dirs.is_empty()
    }

    /// Whether the watched directory was gone at the last look (a rescan looks again).
    pub(crate) fn root_lost(&self) -> bool {
        self.root_lost
    }

    /// Number of pending paths (for tests and logs).
    pub(crate) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Rescans if needed, stats every pending path and returns the files that settled, in path
    /// order. Returns early, with partial work, once `stop` is set.
    pub(crate) fn tick(&mut self, now: Instant, stop: &AtomicBool) -> Vec<SettledFile> {
        if self.rescan_needed {
            self.rescan(now, stop);
        }
        let settle = self.settle;
        let (again, young) = std::mem::take(&mut self.new_dirs)
            .into_iter()
            .partition(|(_, seen)| now.saturating_duration_since(*seen) >= settle);
        self.new_dirs = young;
        for (dir, _) in again {
            self.walk(&dir, false, now, stop);
        }
        let mut settled = Vec::new();
        let mut dirs = Vec::new();
        let mut vanished = Vec::new();
        let (root, follow, settle, generation) = (
            &self.root,
            self.follow_symlinks,
            self.settle,
            self.generation,
        );
        let (known, root_lost) = (&mut self.known, &mut self.root_lost);
        self.pending.retain(|path, obs| {
            if stop.load(Ordering::Relaxed) {
                return true;
            }
            let found = stat(path, follow);
            if path == root {
                // Events on the directory itself matter only when it goes away.
                *root_lost |= !matches!(found, Found::Dir);
                return false;
            }
            match found {
                Found::File(fp) => {
                    let already_sent = matches!(known.get(path.as_path()),
                        Some(Known { verdict: Verdict::Sent(sent), .. }) if *sent == fp);
                    if obs.last != Some(fp) {
                        // A hint about a file already sent as it is (a chmod, a reader's
                        // open) is not new content.
                        if obs.last.is_none() && already_sent {
                            return false;
                        }
                        *obs = Observation {
                            last: Some(fp),
                            since: now,
                        };
                        return true;
                    }
                    if now.saturating_duration_since(obs.since) < settle {
                        return true;
                    }
                    if !already_sent {
                        let known_now = Known {
                            verdict: Verdict::Sent(fp),
                            generation,
                        };
                        known.insert(path.clone(), known_now);
                        settled.push(SettledFile {
                            path: path.clone(),
                            size: fp.size,
                            modified: fp.modified,
                            inode: fp.inode,
                        });
                    }
                    false
                }
                Found::Dir => {
                    dirs.push(path.clone());
                    false
                }
                Found::Symlink => {
                    tracing::debug!(path = %path.display(), "symbolic link not followed");
                    false
                }
                Found::Special => {
                    note_special(known, path, generation);
                    false
                }
                Found::Gone => {
                    tracing::debug!(path = %path.display(), "vanished before it settled");
                    vanished.push(path.clone());
                    false
                }
                Found::Unreadable(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "cannot stat; skipped");
                    false
                }
            }
        });
        for path in vanished {
            self.forget(&path);
        }
        for dir in dirs {
            // Files may already be inside a directory that was just created or moved in:
            // their events came before the directory was watched.
            self.walk(&dir, false, now, stop);
            self.new_dirs.push((dir, now));
        }
        settled.sort_by(|a, b| a.path.cmp(&b.path));
        settled
    }

    /// Walks the whole tree: new or changed files become pending, decided paths that are no
    /// longer there are forgotten.
    fn rescan(&mut self, now: Instant, stop: &AtomicBool) {
        self.rescan_needed = false;
        self.root_lost = !std::fs::metadata(&self.root).is_ok_and(|meta| meta.is_dir());
        if self.root_lost {
            return;
        }
        self.generation += 1;
        let root = self.root.clone();
        if self.walk(&root, true, now, stop) {
            let generation = self.generation;
            self.known.retain(|_, k| k.generation == generation);
        }
    }

    /// Walks `dir`, adding new or changed files to the pending map. A full walk also marks
    /// every decided path it meets with the current generation. Returns whether the walk
    /// completed; it stops early when the pending map is full (a rescan then follows) or when
    /// `stop` is set.
    fn walk(&mut self, dir: &Path, full: bool, now: Instant, stop: &AtomicBool) -> bool {
        // Those under `dir` already warned about are not warned about again; those this walk
        // reads are forgotten.
        let warned = take_under(&mut self.unreadable, dir);
        let complete = self.walk_entries(dir, full, now, stop, &warned);
        if !complete {
            self.unreadable.extend(warned);
        }
        if !self.per_directory
            && self.watch_dir.is_some()
            && self.unreadable.iter().any(|d| *d != self.root)
        {
            // notify did not watch it, and will not once it is readable (a chmod).
            tracing::info!(
                root = %self.root.display(),
                "a subdirectory cannot be read; watching each directory on its own"
            );
            self.per_directory = true;
            self.rescan_needed = true;
        }
        complete
    }

    /// The walk itself; `warned` holds the unreadable directories under `dir` warned about.
    fn walk_entries(
        &mut self,
        dir: &Path,
        full: bool,
        now: Instant,
        stop: &AtomicBool,
        warned: &BTreeSet<PathBuf>,
    ) -> bool {
        let Tracker {
            root,
            ignore,
            follow_symlinks,
            cap,
            pending,
            known,
            generation,
            rescan_needed,
            watch_dir,
            per_directory,
            unreadable,
            ..
        } = self;
        let entries = WalkDir::new(dir)
            .follow_links(*follow_symlinks)
            .into_iter()
            .filter_entry(|e| e.depth() == 0 || !ignore.is_ignored(relative(root, e.path())));
        for entry in entries {
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    if let Some(ancestor) = e.loop_ancestor() {
                        tracing::debug!(loop_to = %ancestor.display(), "symbolic link loop skipped");
                    } else if e
                        .io_error()
                        .is_none_or(|io| io.kind() != io::ErrorKind::NotFound)
                    {
                        match e.path() {
                            Some(path) if path.is_dir() => {
                                cannot_read(unreadable, warned, path, &e)
                            }
                            _ => tracing::debug!(error = %e, "cannot list; skipped"),
                        }
                    }
                    continue;
                }
            };
            let kind = entry.file_type();
            if kind.is_dir() {
                if *per_directory && let Some(watch_dir) = watch_dir {
                    // Before it is listed, so that nothing created in it falls between the two.
                    if let Err(e) = watch_dir(entry.path())
                        && !vanished(&e)
                    {
                        cannot_read(unreadable, warned, entry.path(), &e);
                    }
                }
                continue;
            }
            if kind.is_symlink() {
                tracing::debug!(path = %entry.path().display(), "symbolic link not followed");
                continue;
            }
            if full && let Some(k) = known.get_mut(entry.path()) {
                k.generation = *generation;
            }
            if !kind.is_file() {
                note_special(known, entry.path(), *generation);
                continue;
            }
            // Follows the link exactly when the walk does.
            let Ok(meta) = entry.metadata() else { continue };
            let fp = Fingerprint::of(&meta);
            let path = entry.into_path();
            let unchanged = matches!(known.get(&path),
                Some(Known { verdict: Verdict::Sent(sent), .. }) if *sent == fp);
            if unchanged || pending.contains_key(&path) {
                continue;
            }
            if pending.len() >= *cap {
                tracing::warn!(
                    cap = *cap,
                    "too many new files at once; the rest are found later"
                );
                *rescan_needed = true;
                return false;
            }
            pending.insert(
                path,
                Observation {
                    last: Some(fp),
                    since: now,
                },
            );
        }
        true
    }

    /// Forgets `path` and everything under it.
    fn forget(&mut self, path: &Path) {
        let under: Vec<PathBuf> = self
            .known
            .range::<Path, _>((Bound::Included(path), Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(path))
            .map(|(p, _)| p.clone())
            .collect();
        for p in under {
            self.known.remove(&p);
        }
        take_under(&mut self.unreadable, path);
    }
}

/// Notes a directory that could not be read or watched, warning unless it was warned about.
fn cannot_read(
    unreadable: &mut BTreeSet<PathBuf>,
    warned: &BTreeSet<PathBuf>,
    dir: &Path,
    error: &dyn std::fmt::Display,
) {
    if unreadable.insert(dir.to_path_buf()) && !warned.contains(dir) {
        tracing::warn!(
            path = %dir.display(),
            error = %error,
            "cannot read this directory; its files are found once it can be read"
        );
    }
}

/// Removes and returns the paths in `set` that are `dir` or under it.
fn take_under(set: &mut BTreeSet<PathBuf>, dir: &Path) -> BTreeSet<PathBuf> {
    let under: BTreeSet<PathBuf> = set
        .range::<Path, _>((Bound::Included(dir), Bound::Unbounded))
        .take_while(|p| p.starts_with(dir))
        .cloned()
        .collect();
    for p in &under {
        set.remove(p);
    }
    under
}

/// Whether a watch failed because its directory is gone (removed during the walk).
fn vanished(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::PathNotFound => true,
        notify::ErrorKind::Io(io) => matches!(
            io.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        ),
        _ => false,
    }
}

/// Records a FIFO, socket or device, warning the first time only: writers to a FIFO cause an
/// event per write.
fn note_special(known: &mut BTreeMap<PathBuf, Known>, path: &Path, generation: u64) {
    let already = matches!(
        known.get(path),
        Some(Known {
            verdict: Verdict::Special,
            ..
        })
    );
    if !already {
        tracing::warn!(path = %path.display(), "not a regular file (FIFO, socket or device); skipped");
        known.insert(
            path.to_path_buf(),
            Known {
                verdict: Verdict::Special,
                generation,
            },
        );
    }
}

/// `path` relative to `root` for the ignore rules; a path outside the root (seen through an
/// alias) is judged by its name alone.
fn relative<'a>(root: &Path, path: &'a Path) -> &'a Path {
    path.strip_prefix(root)
        .ok()
        .or_else(|| path.file_name().map(Path::new))
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::sync::{Arc, Mutex};

    use super::*;

    const SETTLE: Duration = Duration::from_millis(100);

    fn tracker(root: &Path, cap: usize) -> Tracker {
        Tracker::new(
            root.to_path_buf(),
            Ignore::new(&[]).unwrap(),
            false,
            SETTLE,
            cap,
        )
    }

    fn names(files: &[SettledFile]) -> Vec<String> {
        files
            .iter()
            .map(|f| f.path.file_name().unwrap().to_string_lossy().into_owned())
            .collect()
    }

    /// Ticks at `start`, then once more a settle period later: what a file needs to settle.
    fn settle_round(t: &mut Tracker, start: Instant) -> Vec<SettledFile> {
        let never = AtomicBool::new(false);
        let mut out = t.tick(start, &never);
        out.extend(t.tick(start + SETTLE, &never));
        out
    }

    #[test]
    fn a_file_is_sent_only_after_its_fingerprint_held_for_the_settle_time() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.bin"), b"abc").unwrap();
        let mut t = tracker(dir.path(), 100);
        let never = AtomicBool::new(false);
        let t0 = Instant::now();
        assert!(t.tick(t0, &never).is_empty());
        assert!(
            t.tick(t0 + SETTLE - Duration::from_millis(1), &never)
                .is_empty()
        );
        let sent = t.tick(t0 + SETTLE, &never);
        assert_eq!(names(&sent), ["a.bin"]);
        assert_eq!(sent[0].size, 3);
        assert!(!t.has_work());
    }

    #[test]
    fn a_change_restarts_the_settle_clock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        fs::write(&path, b"abc").unwrap();
        let mut t = tracker(dir.path(), 100);
        let never = AtomicBool::new(false);
        let t0 = Instant::now();
        assert!(t.tick(t0, &never).is_empty());
        fs::write(&path, b"abcdef").unwrap();
        assert!(
            t.tick(t0 + SETTLE, &never).is_empty(),
            "changed, so not settled"
        );
        let sent = t.tick(t0 + 2 * SETTLE, &never);
        assert_eq!(sent.len(), 1);
        assert_eq!(sent[0].size, 6);
    }

    #[test]
    fn a_sent_file_is_sent_again_only_when_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        fs::write(&path, b"abc").unwrap();
        let mut t = tracker(dir.path(), 100);
        let t0 = Instant::now();
        assert_eq!(settle_round(&mut t, t0).len(), 1);

        t.hint(path.clone());
        assert!(
            settle_round(&mut t, t0 + 2 * SETTLE).is_empty(),
            "same content, no resend"
        );
        assert!(!t.has_work());

        fs::write(&path, b"abcd").unwrap();
        t.hint(path.clone());
        let again = settle_round(&mut t, t0 + 4 * SETTLE);
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].size, 4);
    }

    #[test]
    fn a_file_that_vanishes_before_settling_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.bin");
        fs::write(&path, b"abc").unwrap();
        let mut t = tracker(dir.path(), 100);
        let never = AtomicBool::new(false);
        let t0 = Instant::now();
        assert!(t.tick(t0, &never).is_empty());
        fs::remove_file(&path).unwrap();
        assert!(t.tick(t0 + SETTLE, &never).is_empty());
        assert!(!t.has_work());
    }

    #[test]
    fn a_vanished_directory_is_forgotten_with_everything_under_it() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        fs::create_dir(&sub).unwrap();
        fs::write(sub.join("a"), b"1").unwrap();
        fs::write(sub.join("b"), b"2").unwrap();
        fs::write(dir.path().join("sub-sibling"), b"3").unwrap();
        let mut t = tracker(dir.path(), 100);
        assert_eq!(settle_round(&mut t, Instant::now()).len(), 3);
        assert_eq!(t.known.len(), 3);

        fs::remove_dir_all(&sub).unwrap();
        t.hint(sub.clone());
        assert!(settle_round(&mut t, Instant::now()).is_empty());
        let left: Vec<_> = t
            .known
            .keys()
            .map(|p| p.file_name().unwrap().to_owned())
            .collect();
        assert_eq!(left, ["sub-sibling"]);
    }

    #[test]
    fn a_hinted_directory_is_walked_for_files_already_inside() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tracker(dir.path(), 100);
        assert!(settle_round(&mut t, Instant::now()).is_empty());
        let sub = dir.path().join("new/deeper");
        fs::create_dir_all(&sub).unwrap();
        fs::write(sub.join("x"), b"x").unwrap();
        t.hint(dir.path().join("new"));
        let never = AtomicBool::new(false);
        let t0 = Instant::now();
        assert!(
            t.tick(t0, &never).is_empty(),
            "the walk finds x; it must still settle"
        );
        assert_eq!(t.pending_len(), 1);
        assert_eq!(names(&settle_round(&mut t, t0 + SETTLE)), ["x"]);
    }

    #[test]
    fn a_new_directory_is_walked_again_for_files_created_before_it_was_watched() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tracker(dir.path(), 100);
        assert!(settle_round(&mut t, Instant::now()).is_empty());
        let sub = dir.path().join("new");
        fs::create_dir(&sub).unwrap();
        t.hint(sub.clone());
        let never = AtomicBool::new(false);
        let t0 = Instant::now();
        assert!(t.tick(t0, &never).is_empty());
        // Created after the walk, before notify watched the directory: no hint.
        fs::write(sub.join("late"), b"x").unwrap();
        assert!(t.has_work(), "the directory is due for a second walk");
        assert!(t.tick(t0 + SETTLE, &never).is_empty(), "found, not settled");
        assert_eq!(t.pending_len(), 1);
        assert_eq!(names(&t.tick(t0 + 2 * SETTLE, &never)), ["late"]);
        assert!(!t.has_work(), "walked twice, then left to notify");
    }

    #[test]
    fn too_many_hints_drop_the_pending_map_for_a_rescan() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = tracker(dir.path(), 4);
        assert!(settle_round(&mut t, Instant::now()).is_empty());
        for i in 0..10 {
            let path = dir.path().join(format!("f{i}"));
            fs::write(&path, b"x").unwrap();
            t.hint(path);
        }
        assert_eq!(t.pending_len(), 0, "overflow dropped the map");
        assert!(t.has_work(), "and asked for a rescan");
    }

    #[test]
    fn a_rescan_larger_than_the_cap_still_sends_every_file_once() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..10 {
            fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
        }
        let mut t = tracker(dir.path(), 3);
        let mut sent = Vec::new();
        let mut now = Instant::now();
        for _ in 0..20 {
            sent.extend(names(&settle_round(&mut t, now)));
            assert!(t.pending_len() <= 3);
            now += 2 * SETTLE;
        }
        sent.sort();
        let expected: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        assert_eq!(sent, expected);
    }

    #[test]
    fn ignored_names_are_neither_hinted_nor_scanned() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.part"), b"x").unwrap();
        fs::create_dir(dir.path().join(".git")).unwrap();
        fs::write(dir.path().join(".git/config"), b"x").unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        let mut t = tracker(dir.path(), 100);
        assert_eq!(names(&settle_round(&mut t, Instant::now())), ["keep"]);
        t.hint(dir.path().join("b.tmp"));
        assert_eq!(t.pending_len(), 0);
    }

    #[test]
    fn losing_the_root_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("drop");
        fs::create_dir(&root).unwrap();
        let mut t = tracker(&root, 100);
        assert!(settle_round(&mut t, Instant::now()).is_empty());
        assert!(!t.root_lost());
        fs::remove_dir(&root).unwrap();
        t.hint(root.clone());
        settle_round(&mut t, Instant::now());
        assert!(t.root_lost());
    }

    /// Stands in for notify: fails, as for a directory the daemon may not read, to watch the
    /// directories in `denied`, and records the others it watched.
    #[derive(Clone, Default)]
    struct Watches {
        denied: Arc<Mutex<BTreeSet<PathBuf>>>,
        watched: Arc<Mutex<BTreeSet<PathBuf>>>,
    }

    impl Watches {
        fn watch_dir(&self) -> WatchDir {
            let this = self.clone();
            Box::new(move |dir: &Path| {
                if this.denied.lock().unwrap().contains(dir) {
                    let denied = io::Error::from(io::ErrorKind::PermissionDenied);
                    return Err(notify::Error::io(denied).add_path(dir.to_path_buf()));
                }
                this.watched.lock().unwrap().insert(dir.to_path_buf());
                Ok(())
            })
        }

        /// Takes the directories watched since the last call.
        fn take(&self) -> Vec<PathBuf> {
            std::mem::take(&mut *self.watched.lock().unwrap())
                .into_iter()
                .collect()
        }
    }

    /// The warnings logged while `f` runs, one per line.
    fn warnings(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }

    /// Root is not stopped by permissions, so `locked` is "unreadable" only to the stand-in:
    /// its watch fails, and its listing still works (which the daemon's would not).
    #[test]
    fn watching_each_directory_skips_one_it_may_not_watch_with_one_warning() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (open, locked) = (root.join("open"), root.join("locked"));
        fs::create_dir(&open).unwrap();
        fs::create_dir(&locked).unwrap();
        fs::write(open.join("a"), b"a").unwrap();
        let watches = Watches::default();
        watches.denied.lock().unwrap().insert(locked.clone());
        let mut t = tracker(root, 100);
        t.watch_with(watches.watch_dir(), true);
        let now = Instant::now();

        let warned = warnings(|| assert_eq!(names(&settle_round(&mut t, now)), ["a"]));
        assert_eq!(watches.take(), [root.to_path_buf(), open.clone()]);
        assert_eq!(warned.len(), 1, "{warned:?}");
        assert!(
            warned[0].contains(&format!("path={}", locked.display())),
            "names it: {warned:?}"
        );
        assert!(
            warned[0].contains("found once it can be read"),
            "{warned:?}"
        );

        // A rescan meets it again and says nothing.
        t.request_rescan();
        assert!(warnings(|| drop(settle_round(&mut t, now))).is_empty());
        assert_eq!(watches.take(), [root.to_path_buf(), open.clone()]);

        // Directories made later are watched as they are found.
        fs::create_dir_all(open.join("new/deeper")).unwrap();
        t.hint(open.join("new"));
        settle_round(&mut t, now);
        assert_eq!(watches.take(), [open.join("new"), open.join("new/deeper")]);

        // Readable now: the event of its chmod gets it watched, and forgotten as unreadable...
        watches.denied.lock().unwrap().clear();
        t.hint(locked.clone());
        settle_round(&mut t, now);
        assert_eq!(watches.take(), std::slice::from_ref(&locked));
        assert!(t.unreadable.is_empty());

        // ...so that it is warned about again if it is locked again.
        watches.denied.lock().unwrap().insert(locked.clone());
        t.request_rescan();
        assert_eq!(warnings(|| drop(settle_round(&mut t, now))).len(), 1);
    }

    #[test]
    fn a_recursive_watch_leaves_subdirectories_to_notify() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        let watches = Watches::default();
        let mut t = tracker(dir.path(), 100);
        t.watch_with(watches.watch_dir(), false);
        settle_round(&mut t, Instant::now());
        t.hint(dir.path().join("sub"));
        settle_round(&mut t, Instant::now());
        assert!(watches.take().is_empty());
    }

    #[test]
    fn a_set_stop_flag_ends_the_tick_early() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a"), b"x").unwrap();
        let mut t = tracker(dir.path(), 100);
        let stop = AtomicBool::new(true);
        assert!(t.tick(Instant::now(), &stop).is_empty());
        assert_eq!(
            t.pending_len(),
            0,
            "the walk stopped before finding anything"
        );
    }
}
