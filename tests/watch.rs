//! The drop-directory watcher, driven through its public API on real temporary directories
//! with settle times scaled down.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep, timeout};
use vtriage::config::WatchConfig;
use vtriage::watch::{SettledFile, watch};

/// Long enough for the watcher to have set up its watches and finished its first scan.
const STARTUP: Duration = Duration::from_millis(300);

fn config(settle_ms: u64) -> WatchConfig {
    WatchConfig {
        settle_ms,
        ..WatchConfig::default()
    }
}

/// Logs stay silent unless `TEST_LOG` is set (to a `RUST_LOG`-style filter, or `1` for debug).
fn init_logs() {
    if let Ok(filter) = std::env::var("TEST_LOG") {
        let filter = if filter == "1" {
            "vtriage=debug".to_string()
        } else {
            filter
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_test_writer()
            .try_init();
    }
}

/// A watcher running on a directory, with the receiving end of its channel.
struct Running {
    rx: mpsc::Receiver<SettledFile>,
    shutdown: Option<oneshot::Sender<()>>,
    handle: JoinHandle<anyhow::Result<()>>,
}

fn start(root: &Path, cfg: WatchConfig) -> Running {
    start_with_capacity(root, cfg, 64)
}

fn start_with_capacity(root: &Path, cfg: WatchConfig, capacity: usize) -> Running {
    start_after(root, cfg, capacity, Vec::new())
}

/// A watcher that was told which files an earlier one sent.
fn start_after(
    root: &Path,
    cfg: WatchConfig,
    capacity: usize,
    sent_before: Vec<SettledFile>,
) -> Running {
    init_logs();
    let (tx, rx) = mpsc::channel(capacity);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(watch(root.to_path_buf(), cfg, sent_before, tx, async {
        let _ = stop_rx.await;
    }));
    Running {
        rx,
        shutdown: Some(stop_tx),
        handle,
    }
}

impl Running {
    /// Receives until nothing arrived for `quiet`, or `limit` passed in total.
    async fn until_quiet(&mut self, quiet: Duration, limit: Duration) -> Vec<SettledFile> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let wait = quiet.min(deadline.saturating_duration_since(Instant::now()));
            match timeout(wait, self.rx.recv()).await {
                Ok(Some(file)) => got.push(file),
                _ => return got,
            }
        }
    }

    /// Receives until a file named `name` arrives (returning everything received), or panics
    /// after `limit`.
    async fn until_named(&mut self, name: &str, limit: Duration) -> Vec<SettledFile> {
        let deadline = Instant::now() + limit;
        let mut got = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match timeout(left, self.rx.recv()).await {
                Ok(Some(file)) => {
                    let done = file.path.file_name().is_some_and(|n| n == name);
                    got.push(file);
                    if done {
                        return got;
                    }
                }
                Ok(None) => panic!("watcher ended before {name} arrived; got {got:?}"),
                Err(_) => panic!("{name} did not arrive within {limit:?}; got {got:?}"),
            }
        }
    }

    /// Shuts the watcher down and returns its result, failing if it takes over two seconds.
    async fn stop(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.take().expect("not stopped yet").send(());
        timeout(Duration::from_secs(2), self.handle)
            .await
            .expect("watch did not end promptly after shutdown")
            .expect("watch panicked")
    }
}

/// Paths relative to `root`, sorted, as strings.
fn relative(root: &Path, files: &[SettledFile]) -> Vec<String> {
    let mut names: Vec<String> = files
        .iter()
        .map(|f| {
            f.path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// After a restart, the files the first watcher sent are not sent again while their size,
/// modification time and inode are the same; a changed file and a new one are.
#[tokio::test]
async fn files_sent_before_a_restart_are_sent_again_only_if_changed() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["same.exe", "changed.exe", "gone.exe"] {
        fs::write(dir.path().join(name), name).unwrap();
    }
    let mut first = start(dir.path(), config(150));
    let sent = first
        .until_quiet(Duration::from_millis(800), Duration::from_secs(5))
        .await;
    first.stop().await.unwrap();
    assert_eq!(sent.len(), 3);

    fs::write(dir.path().join("changed.exe"), "other content").unwrap();
    fs::remove_file(dir.path().join("gone.exe")).unwrap();
    fs::write(dir.path().join("new.exe"), "new").unwrap();
    let mut second = start_after(dir.path(), config(150), 64, sent);
    let got = second
        .until_quiet(Duration::from_millis(800), Duration::from_secs(5))
        .await;
    assert_eq!(relative(dir.path(), &got), ["changed.exe", "new.exe"]);
    second.stop().await.unwrap();
}

#[tokio::test]
async fn files_present_at_start_are_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a.exe"), b"hello").unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    fs::write(dir.path().join("sub/b.doc"), b"").unwrap();
    let mut w = start(dir.path(), config(150));

    let got = w
        .until_quiet(Duration::from_millis(800), Duration::from_secs(5))
        .await;
    assert_eq!(relative(dir.path(), &got), ["a.exe", "sub/b.doc"]);
    let sizes: HashMap<_, _> = got.iter().map(|f| (f.path.clone(), f.size)).collect();
    assert_eq!(sizes[&dir.path().join("a.exe")], 5);
    assert_eq!(
        sizes[&dir.path().join("sub/b.doc")],
        0,
        "zero-byte files are files too"
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn a_file_written_in_chunks_is_sent_once_with_its_final_size() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start(dir.path(), config(400));
    sleep(STARTUP).await;

    let path = dir.path().join("slow.bin");
    let mut file = fs::File::create(&path).unwrap();
    for _ in 0..3 {
        file.write_all(&[7u8; 1000]).unwrap();
        file.flush().unwrap();
        sleep(Duration::from_millis(300)).await;
    }
    drop(file);

    let got = w
        .until_quiet(Duration::from_millis(1500), Duration::from_secs(6))
        .await;
    assert_eq!(relative(dir.path(), &got), ["slow.bin"]);
    assert_eq!(got[0].size, 3000);
    assert_eq!(
        got[0].modified,
        fs::metadata(&path).unwrap().modified().unwrap()
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn a_file_renamed_into_place_is_sent_once_and_the_part_file_never() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start(dir.path(), config(200));
    sleep(STARTUP).await;

    let part = dir.path().join("report.pdf.part");
    let mut file = fs::File::create(&part).unwrap();
    file.write_all(&[1u8; 500]).unwrap();
    sleep(Duration::from_millis(400)).await; // longer than the settle time: .part must still wait
    file.write_all(&[2u8; 500]).unwrap();
    drop(file);
    fs::rename(&part, dir.path().join("report.pdf")).unwrap();

    let got = w
        .until_quiet(Duration::from_millis(1000), Duration::from_secs(5))
        .await;
    assert_eq!(relative(dir.path(), &got), ["report.pdf"]);
    assert_eq!(got[0].size, 1000);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn ignored_names_and_dot_files_are_never_sent() {
    let dir = tempfile::tempdir().unwrap();
    let skipped = ["a.tmp", "b.crdownload", "~$doc.docx", ".hidden", "c.part"];
    fs::write(dir.path().join(skipped[0]), b"x").unwrap();
    fs::create_dir(dir.path().join(".cache")).unwrap();
    fs::write(dir.path().join(".cache/inside"), b"x").unwrap();
    let mut w = start(dir.path(), config(150));
    sleep(STARTUP).await;

    for name in &skipped[1..] {
        fs::write(dir.path().join(name), b"x").unwrap();
    }
    fs::create_dir(dir.path().join(".git")).unwrap();
    fs::write(dir.path().join(".git/HEAD"), b"x").unwrap();
    fs::write(dir.path().join("keep.bin"), b"x").unwrap();

    let mut got = w.until_named("keep.bin", Duration::from_secs(5)).await;
    got.extend(
        w.until_quiet(Duration::from_millis(600), Duration::from_secs(2))
            .await,
    );
    assert_eq!(relative(dir.path(), &got), ["keep.bin"]);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn a_configured_ignore_glob_is_honoured() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = WatchConfig {
        ignore: vec!["*.log".into(), "quarantine/**".into()],
        ..config(150)
    };
    let mut w = start(dir.path(), cfg);
    sleep(STARTUP).await;

    fs::write(dir.path().join("debug.log"), b"x").unwrap();
    fs::create_dir(dir.path().join("quarantine")).unwrap();
    fs::write(dir.path().join("quarantine/evil.exe"), b"x").unwrap();
    fs::write(dir.path().join("debug.log.exe"), b"x").unwrap();

    let mut got = w.until_named("debug.log.exe", Duration::from_secs(5)).await;
    got.extend(
        w.until_quiet(Duration::from_millis(600), Duration::from_secs(2))
            .await,
    );
    assert_eq!(relative(dir.path(), &got), ["debug.log.exe"]);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn an_invalid_ignore_glob_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let cfg = WatchConfig {
        ignore: vec!["[".into()],
        ..config(150)
    };
    let err = watch(
        dir.path().to_path_buf(),
        cfg,
        Vec::new(),
        tx,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(format!("{err:#}").contains("ignore glob"), "{err:#}");
}

/// Files in the storm test; `WATCH_STORM=10000 cargo test --test watch thousand` for the big one.
fn storm_size() -> usize {
    std::env::var("WATCH_STORM")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_files_dropped_at_once_are_each_sent_once() {
    let dir = tempfile::tempdir().unwrap();
    // A small channel: the receiver applies back-pressure while events keep coming.
    let mut w = start_with_capacity(dir.path(), config(200), 8);
    sleep(STARTUP).await;

    let storm = storm_size();
    let expected: Vec<String> = (0..storm).map(|i| format!("drop-{i:05}.bin")).collect();
    // Written from another thread, so that the watcher drains events while they come.
    let (root, names) = (dir.path().to_path_buf(), expected.clone());
    let writer = tokio::task::spawn_blocking(move || {
        for name in &names {
            fs::write(root.join(name), name.as_bytes()).unwrap();
        }
    });

    let deadline = Instant::now() + Duration::from_secs(5) + Duration::from_millis(storm as u64);
    let mut got = Vec::new();
    while got.len() < expected.len() && Instant::now() < deadline {
        if let Ok(Some(file)) = timeout(Duration::from_millis(200), w.rx.recv()).await {
            got.push(file);
        }
    }
    writer.await.unwrap();
    got.extend(
        w.until_quiet(Duration::from_millis(600), Duration::from_secs(2))
            .await,
    );
    assert_eq!(relative(dir.path(), &got), expected);
    assert!(got.iter().all(|f| f.size == 14), "every file complete");
    w.stop().await.unwrap();
}

#[tokio::test]
async fn a_fifo_is_skipped_without_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("at-start.fifo"))
        .status();
    assert!(status.unwrap().success());
    let mut w = start(dir.path(), config(150));
    sleep(STARTUP).await;

    let status = std::process::Command::new("mkfifo")
        .arg(dir.path().join("later.fifo"))
        .status();
    assert!(status.unwrap().success());
    fs::write(dir.path().join("after.bin"), b"x").unwrap();

    let mut got = w.until_named("after.bin", Duration::from_secs(5)).await;
    got.extend(
        w.until_quiet(Duration::from_millis(500), Duration::from_secs(2))
            .await,
    );
    assert_eq!(relative(dir.path(), &got), ["after.bin"]);
    w.stop().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_is_not_followed_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("target.bin"), b"outside").unwrap();
    fs::create_dir(outside.path().join("tree")).unwrap();
    fs::write(outside.path().join("tree/deep.bin"), b"deep").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("target.bin"),
        dir.path().join("link.bin"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join("tree"), dir.path().join("linkdir")).unwrap();
    fs::write(dir.path().join("real.bin"), b"x").unwrap();
    let mut w = start(dir.path(), config(150));

    let mut got = w.until_named("real.bin", Duration::from_secs(5)).await;
    got.extend(
        w.until_quiet(Duration::from_millis(600), Duration::from_secs(2))
            .await,
    );
    assert_eq!(relative(dir.path(), &got), ["real.bin"]);
    w.stop().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_is_followed_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("target.bin"), b"outside").unwrap();
    fs::create_dir(outside.path().join("tree")).unwrap();
    fs::write(outside.path().join("tree/deep.bin"), b"deep").unwrap();
    std::os::unix::fs::symlink(
        outside.path().join("target.bin"),
        dir.path().join("link.bin"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path().join("tree"), dir.path().join("linkdir")).unwrap();
    let cfg = WatchConfig {
        follow_symlinks: true,
        ..config(150)
    };
    let mut w = start(dir.path(), cfg);

    let got = w
        .until_quiet(Duration::from_millis(800), Duration::from_secs(5))
        .await;
    assert_eq!(relative(dir.path(), &got), ["link.bin", "linkdir/deep.bin"]);
    let link = got.iter().find(|f| f.path.ends_with("link.bin")).unwrap();
    assert_eq!(link.size, 7, "the size is the target's");
    w.stop().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn a_symlink_loop_does_not_hang_when_following() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("sub")).unwrap();
    std::os::unix::fs::symlink("..", dir.path().join("sub/up")).unwrap();
    std::os::unix::fs::symlink(".", dir.path().join("self")).unwrap();
    fs::write(dir.path().join("sub/real.bin"), b"x").unwrap();
    let cfg = WatchConfig {
        follow_symlinks: true,
        ..config(150)
    };
    let mut w = start(dir.path(), cfg);

    let got = w.until_named("real.bin", Duration::from_secs(5)).await;
    assert_eq!(relative(dir.path(), &got), ["sub/real.bin"]);
    // Still responsive after the loop.
    fs::write(dir.path().join("later.bin"), b"x").unwrap();
    w.until_named("later.bin", Duration::from_secs(5)).await;
    w.stop().await.unwrap();
}

#[tokio::test]
async fn a_file_created_and_deleted_quickly_is_not_sent() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = start(dir.path(), config(300));
    sleep(STARTUP).await;

    let brief = dir.path().join("brief.bin");
    fs::write(&brief, b"here and gone").unwrap();
    sleep(Duration::from_millis(100)).await;
    fs::remove_file(&brief).unwrap();
    fs::write(dir.path().join("marker.bin"), b"x").unwrap();

    let mut got = w.until_named("marker.bin", Duration::from_secs(5)).await;
    got.extend(
        w.until_quiet(Duration::from_millis(600), Duration::from_secs(2))
            .await,
    );
    assert_eq!(relative(dir.path(), &got), ["marker.bin"]);
    w.stop().await.unwrap();
}

#[tokio::test]
async fn a_file_modified_after_it_was_sent_is_sent_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.bin");
    fs::write(&path, b"v1").unwrap();
    let mut w = start(dir.path(), config(150));
    let first = w.until_named("doc.bin", Duration::from_secs(5)).await;
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].size, 2);

    // Reading it (as the hasher will) is not a change.
    let _ = fs::read(&path).unwrap();
    sleep(Duration::from_millis(500)).await;
    fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(b" and v2")
        .unwrap();

    let second = w.until_named("doc.bin", Duration::from_secs(5)).await;
    assert_eq!(second.len(), 1, "{second:?}");
    assert_eq!(second[0].size, 9);
    assert!(
        w.until_quiet(Duration::from_millis(600), Duration::from_secs(2))
            .await
            .is_empty()
    );
    w.stop().await.unwrap();
}

#[tokio::test]
async fn a_new_subdirectory_with_files_is_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("drop");
    fs::create_dir(&root).unwrap();
    let mut w = start(&root, config(150));
    sleep(STARTUP).await;

    // Created in place, and moved in whole with files already inside.
    fs::create_dir_all(root.join("made/inner")).unwrap();
    fs::write(root.join("made/inner/one.bin"), b"1").unwrap();
    let staging = dir.path().join("staging");
    fs::create_dir_all(staging.join("deep")).unwrap();
    fs::write(staging.join("two.bin"), b"2").unwrap();
    fs::write(staging.join("deep/three.bin"), b"3").unwrap();
    fs::rename(&staging, root.join("moved")).unwrap();

    let got = w
        .until_quiet(Duration::from_millis(800), Duration::from_secs(5))
        .await;
    assert_eq!(
        relative(&root, &got),
        [
            "made/inner/one.bin",
            "moved/deep/three.bin",
            "moved/two.bin"
        ]
    );
    // A file written later into the moved-in directory: it is watched too.
    fs::write(root.join("moved/deep/four.bin"), b"4").unwrap();
    w.until_named("four.bin", Duration::from_secs(5)).await;
    w.stop().await.unwrap();
}

#[cfg(unix)]
#[tokio::test]
async fn non_utf8_names_are_sent() {
    use std::ffi::OsStr;
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let name = OsStr::from_bytes(b"caf\xe9.bin");
    let mut w = start(dir.path(), config(150));
    sleep(STARTUP).await;
    fs::write(dir.path().join(name), b"x").unwrap();

    let got = w
        .until_quiet(Duration::from_millis(800), Duration::from_secs(5))
        .await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].path, dir.path().join(name));
    w.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_ends_watch_promptly() {
    let dir = tempfile::tempdir().unwrap();
    for i in 0..50 {
        fs::write(dir.path().join(format!("f{i}")), b"x").unwrap();
    }
    // Nobody receives and the channel holds one file: the watcher is blocked on sending.
    let w = start_with_capacity(dir.path(), config(50), 1);
    sleep(STARTUP).await;
    let began = Instant::now();
    w.stop().await.unwrap();
    assert!(
        began.elapsed() < Duration::from_millis(500),
        "took {:?}",
        began.elapsed()
    );
}

#[tokio::test]
async fn watch_ends_when_the_receiver_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("a"), b"x").unwrap();
    let w = start(dir.path(), config(50));
    drop(w.rx);
    let result = timeout(Duration::from_secs(3), w.handle)
        .await
        .expect("watch kept running");
    result.unwrap().unwrap();
}

#[tokio::test]
async fn a_missing_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (tx, _rx) = mpsc::channel(1);
    let missing: PathBuf = dir.path().join("nope");
    let err = watch(missing, config(100), Vec::new(), tx, std::future::pending())
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("nope"), "{err:#}");
}

/// A cleanup job or a remount may remove the drop directory and make it again: the watcher
/// waits for it and watches it again, and what is dropped afterwards is sent.
#[tokio::test]
async fn a_directory_that_disappears_is_watched_again_once_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("drop");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("before"), b"x").unwrap();
    let mut w = start(&root, config(100));
    w.until_named("before", Duration::from_secs(3)).await;
    fs::remove_dir_all(&root).unwrap();
    sleep(Duration::from_millis(500)).await;
    assert!(!w.handle.is_finished(), "the watcher gave up");
    fs::create_dir(&root).unwrap();
    fs::write(root.join("left-in-place"), b"y").unwrap();
    w.until_named("left-in-place", Duration::from_secs(5)).await;
    // Once watched again, a new file is seen by its events too, not only by the rescan.
    sleep(STARTUP).await;
    fs::write(root.join("after"), b"z").unwrap();
    let got = w.until_named("after", Duration::from_secs(3)).await;
    assert_eq!(relative(&root, &got), ["after"]);
    w.stop().await.unwrap();
}

/// Set in the child process that runs a test about unreadable directories.
#[cfg(unix)]
const UNPRIVILEGED_CHILD: &str = "VTRIAGE_TEST_UNPRIVILEGED_CHILD";

/// The uid and gid the child runs as when this process is root: `nobody`.
#[cfg(unix)]
const NOBODY: u32 = 65534;

/// Whether directory permissions stop this process (they do not stop root).
#[cfg(unix)]
fn permissions_bind(dir: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    let probe = dir.join("probe");
    fs::create_dir(&probe).unwrap();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o000)).unwrap();
    let binds = fs::read_dir(&probe).is_err();
    fs::set_permissions(&probe, fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_dir(&probe).unwrap();
    binds
}

/// A test of unreadable directories needs a process that permissions stop, and CI runs tests
/// as root. So the test runs again in a child process of this test binary, as `nobody` when
/// this one is root: `true` in that child (go on with the test), `false` in the parent once the
/// child passed. Where no child can run as another user, says so and returns `false`; the
/// tracker's unit tests (`src/watch/tracker.rs`) still cover the logic there.
#[cfg(unix)]
fn in_unprivileged_child(test: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    if std::env::var_os(UNPRIVILEGED_CHILD).is_some() {
        return true;
    }
    let dir = tempfile::tempdir().unwrap();
    let as_nobody = !permissions_bind(dir.path());
    if as_nobody {
        std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    }
    let child = |exe: &Path| {
        let mut cmd = std::process::Command::new(exe);
        cmd.args([test, "--exact"])
            .env(UNPRIVILEGED_CHILD, "1")
            .env("TMPDIR", dir.path());
        if as_nobody {
            cmd.uid(NOBODY).gid(NOBODY);
        }
        cmd.output()
    };
    let exe = std::env::current_exe().unwrap();
    let output = match child(&exe) {
        // Exec refused: the build directory is out of nobody's reach (under /root). A copy.
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let copy = dir.path().join(exe.file_name().unwrap());
            fs::copy(&exe, &copy).unwrap();
            fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
            child(&copy)
        }
        other => other,
    };
    match output {
        Err(e) => {
            let note = format!(
                "skipped: {test} cannot run as uid {NOBODY} here ({e}); only the unit tests \
                 in src/watch/ cover unreadable directories\n"
            );
            // Straight to stderr: libtest's capture would hide a passing test's print.
            let _ = std::io::stderr().write_all(note.as_bytes());
        }
        Ok(out) => {
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(out.status.success(), "the child failed:\n{said}");
            assert!(said.contains("1 passed"), "the child ran no test:\n{said}");
        }
    }
    false
}

/// Warnings and errors from the whole process, kept: for a child process, which runs one test.
#[cfg(unix)]
fn capture_warnings() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    #[derive(Clone, Default)]
    struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
    impl Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let lines = Lines::default();
    let writer = lines.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    lines.0
}

/// The warnings captured that name `path`.
#[cfg(unix)]
fn warnings_naming(logs: &std::sync::Mutex<Vec<u8>>, path: &Path) -> Vec<String> {
    let text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let field = format!("path={}", path.display());
    text.lines()
        .filter(|line| line.contains(" WARN ") && line.contains(&field))
        .map(str::to_owned)
        .collect()
}

#[cfg(unix)]
fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Makes `dir` unreadable with `mode`, and checks that this process is bound by it.
#[cfg(unix)]
fn lock(dir: &Path, mode: u32) {
    chmod(dir, mode);
    assert!(
        fs::read_dir(dir).is_err(),
        "permissions must bind this process"
    );
}

/// Anyone who may write to the drop directory could stop the daemon (exit 2, then a restart
/// loop) with `mkdir x; chmod 000 x`: notify's recursive watch fails at the first directory it
/// may not read. That directory is now skipped with one warning, the rest of the tree is
/// watched, and the directory is read and watched once a chmod lets it be.
#[cfg(unix)]
#[tokio::test]
async fn a_subdirectory_unreadable_at_start_is_skipped_then_watched_once_readable() {
    if !in_unprivileged_child(
        "a_subdirectory_unreadable_at_start_is_skipped_then_watched_once_readable",
    ) {
        return;
    }
    let logs = capture_warnings();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("drop");
    let (open, locked) = (root.join("open"), root.join("locked"));
    fs::create_dir_all(&open).unwrap();
    fs::create_dir(&locked).unwrap();
    fs::write(root.join("top.bin"), b"1").unwrap();
    fs::write(open.join("a.bin"), b"2").unwrap();
    fs::write(locked.join("inside.bin"), b"3").unwrap();
    lock(&locked, 0o000);

    let mut w = start(&root, config(100));
    let got = w
        .until_quiet(Duration::from_millis(800), Duration::from_secs(5))
        .await;
    assert!(!w.handle.is_finished(), "the watcher gave up");
    assert_eq!(relative(&root, &got), ["open/a.bin", "top.bin"]);
    // The rest of the tree is watched: files and directories made later are seen.
    fs::write(open.join("b.bin"), b"4").unwrap();
    w.until_named("b.bin", Duration::from_secs(3)).await;
    fs::create_dir(open.join("new")).unwrap();
    sleep(STARTUP).await;
    fs::write(open.join("new/c.bin"), b"5").unwrap();
    w.until_named("c.bin", Duration::from_secs(3)).await;

    chmod(&locked, 0o755);
    w.until_named("inside.bin", Duration::from_secs(3)).await;
    // Watched too, now, not only read once.
    sleep(STARTUP).await;
    fs::write(locked.join("later.bin"), b"6").unwrap();
    w.until_named("later.bin", Duration::from_secs(3)).await;
    w.stop().await.unwrap();
    let warned = warnings_naming(&logs, &locked);
    assert_eq!(warned.len(), 1, "one warning: {warned:?}");
    assert!(
        warned[0].contains("found once it can be read"),
        "{warned:?}"
    );
}

/// The same directory moved in while the daemon runs (so notify could not watch it) is warned
/// about, and read and watched once a chmod lets it be.
#[cfg(unix)]
#[tokio::test]
async fn a_subdirectory_moved_in_unreadable_is_watched_once_readable() {
    if !in_unprivileged_child("a_subdirectory_moved_in_unreadable_is_watched_once_readable") {
        return;
    }
    let logs = capture_warnings();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("drop");
    fs::create_dir(&root).unwrap();
    let staging = dir.path().join("staging");
    fs::create_dir(&staging).unwrap();
    fs::write(staging.join("inside.bin"), b"1").unwrap();
    // Write and search but no read: it cannot be listed nor watched, yet it can be moved
    // (moving a directory to another parent rewrites its "..").
    lock(&staging, 0o300);
    let mut w = start(&root, config(100));
    sleep(STARTUP).await;

    let locked = root.join("locked");
    fs::rename(&staging, &locked).unwrap();
    let got = w
        .until_quiet(Duration::from_millis(800), Duration::from_secs(5))
        .await;
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(warnings_naming(&logs, &locked).len(), 1);

    chmod(&locked, 0o755);
    w.until_named("inside.bin", Duration::from_secs(3)).await;
    sleep(STARTUP).await;
    fs::write(locked.join("later.bin"), b"2").unwrap();
    w.until_named("later.bin", Duration::from_secs(3)).await;
    w.stop().await.unwrap();
    assert_eq!(warnings_naming(&logs, &locked).len(), 1);
}
