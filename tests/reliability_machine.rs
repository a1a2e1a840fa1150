//! Faults on this machine, through the real binary: the disk fills up under the database, another
//! process holds a read transaction open for a long time, and two daemons are started on the
//! same database. Each test prints its figures (`--nocapture`) for RELIABILITY.md.

mod common;

use common::{integrity, wait_all_finished};

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{KEY, World, sha256};
use vtriage::sim::{Known, KnownFile, KnownUrl, SimConfig};
use vtriage::store::sqlite::SqliteStore;

/// A daemon process; killed if the test ends early.
struct Daemon(Child);

impl Daemon {
    fn start(world: &World, db: &Path, drop: &Path, lists: &Path, log: &Path) -> Daemon {
        let child = Command::new(env!("CARGO_BIN_EXE_vtriage"))
            .args(["run", "--drop"])
            .arg(drop)
            .arg("--lists")
            .arg(lists)
            .env("VT_API_KEY", KEY)
            .env("VTRIAGE_DB", db)
            .env("VTRIAGE_API_URL", world.sim.base_url())
            .env("VTRIAGE_UPLOAD_FILES", "unknown")
            .env("VTRIAGE_UPLOAD_URLS", "unknown")
            .env("VTRIAGE_QUOTA_REQUESTS", "10000")
            .env("VTRIAGE_QUOTA_WINDOW_SECS", "1")
            .env("VTRIAGE_QUOTA_DAILY", "1000000")
            .env("VTRIAGE_WATCH_SETTLE_MS", "100")
            .env("VTRIAGE_POLL_FIRST_DELAY_SECS", "0.2")
            .env("VTRIAGE_POLL_MAX_INTERVAL_SECS", "0.4")
            .env("VTRIAGE_POLL_GIVE_UP_AFTER_SECS", "5")
            .env("VTRIAGE_DAEMON_RETRY_DELAY_SECS", "0.1")
            .env("VTRIAGE_DAEMON_WORKERS", "6")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        Daemon(child)
    }

    fn running(&mut self) -> bool {
        self.0.try_wait().unwrap().is_none()
    }

    /// SIGTERM and wait: the graceful stop.
    fn stop(mut self) -> std::process::ExitStatus {
        Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .unwrap();
        self.0.wait().unwrap()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A list of `n` hashes VirusTotal does not know, distinct per `tag`.
fn hash_list(dir: &Path, tag: &str, n: usize) {
    let list: String = (0..n)
        .map(|i| format!("{}\n", sha256(format!("{tag} {i}").as_bytes())))
        .collect();
    std::fs::write(dir.join(format!("{tag}.txt")), list).unwrap();
}

fn dirs(root: &Path) -> (PathBuf, PathBuf) {
    let (drop, lists) = (root.join("drop"), root.join("lists"));
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::create_dir_all(&lists).unwrap();
    (drop, lists)
}

/// A size-limited tmpfs, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    /// None when this process may not mount (not root): the test is then skipped.
    fn mount(at: &Path, bytes: u64) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(at)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| SmallDisk(at.to_path_buf()))
    }

    /// Fills the free space with a ballast file; returns its size.
    fn fill(&self) -> u64 {
        let mut f = std::fs::File::create(self.0.join("ballast")).unwrap();
        let chunk = vec![0u8; 16 * 1024];
        let mut written = 0;
        while f.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
        }
        // The last partial chunk may have filled the last bytes; either way the disk is full.
        written
    }

    fn free_up(&self) {
        std::fs::remove_file(self.0.join("ballast")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_gives_a_clear_error_no_corruption_and_work_resumes_with_space() {
    let world = World::new(World::fast_sim()).await;
    let Some(disk) = SmallDisk::mount(&world.dir.path().join("small"), 8 * 1024 * 1024) else {
        eprintln!("FIGURES disk-full: skipped (cannot mount a tmpfs here; run as root)");
        return;
    };
    let db = disk.0.join("vtriage.db");
    let (drop, lists) = dirs(world.dir.path());
    let log = world.dir.path().join("daemon.log");
    let mut daemon = Daemon::start(&world, &db, &drop, &lists, &log);
    hash_list(&lists, "before", 20);
    let store = {
        // The daemon creates the database; wait for it rather than race it.
        let started = Instant::now();
        while !db.exists() {
            assert!(started.elapsed() < Duration::from_secs(10));
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        SqliteStore::open(&db).await.unwrap()
    };
    wait_all_finished(&store, 20, Duration::from_secs(30)).await;

    let ballast = disk.fill();
    hash_list(&lists, "during", 400);
    for i in 0..20 {
        std::fs::write(
            drop.join(format!("f{i}")),
            format!("dropped while full {i}"),
        )
        .unwrap();
    }
    // The daemon meets the full disk: it says so and keeps running.
    let started = Instant::now();
    let full_message = loop {
        let text = std::fs::read_to_string(&log).unwrap();
        if let Some(line) = text.lines().find(|l| l.contains("full")) {
            break line.to_owned();
        }
        assert!(daemon.running(), "the daemon died on a full disk: {text}");
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "no error about the full disk: {text}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        daemon.running(),
        "the daemon keeps running while the disk is full"
    );
    let full_for = started.elapsed();
    disk.free_up();
    let counts = tokio::time::timeout(
        Duration::from_secs(60),
        wait_all_finished(&store, 440, Duration::from_secs(3600)),
    )
    .await
    .unwrap_or_else(|_| {
        let text = std::fs::read_to_string(&log).unwrap();
        let tail: Vec<&str> = text.lines().rev().take(15).collect();
        panic!("not resumed after the disk had space again: {tail:#?}")
    });
    let status = daemon.stop();
    let check = integrity(&store).await;
    let errors = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains("full"))
        .count();
    eprintln!(
        "FIGURES disk-full: tmpfs 8 MiB, ballast {ballast} bytes, full for {:.1} s, {errors} \
         log lines about it, first: {full_message:?}; items 440, verdicts {:?}, integrity \
         {check}, exit {status}",
        full_for.as_secs_f64(),
        counts.by_verdict
    );
    assert_eq!(counts.by_verdict.values().sum::<u64>(), 440);
    assert_eq!(counts.by_verdict.get("failed"), None, "{counts:?}");
    assert_eq!(check, "ok");
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_read_transaction_elsewhere_does_not_stop_the_daemon() {
    let world = World::new(World::fast_sim()).await;
    let db = PathBuf::from(&world.config.db);
    let (drop, lists) = dirs(world.dir.path());
    let log = world.dir.path().join("daemon.log");
    let store = SqliteStore::open(&db).await.unwrap();
    let daemon = Daemon::start(&world, &db, &drop, &lists, &log);
    // Another process opens a read transaction and keeps it open.
    let mut reader = Command::new("sqlite3")
        .arg(&db)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sqlite3 is installed");
    let mut stdin = reader.stdin.take().unwrap();
    writeln!(stdin, "BEGIN; SELECT 'jobs at start', count(*) FROM jobs;").unwrap();
    stdin.flush().unwrap();
    let held_since = Instant::now();
    hash_list(&lists, "while-read", 200);
    for i in 0..20 {
        std::fs::write(drop.join(format!("f{i}")), format!("file {i}")).unwrap();
    }
    // A big report reads at the same time, as a user would.
    let report = Command::new(env!("CARGO_BIN_EXE_vtriage"))
        .args(["report", "--format", "json"])
        .env("VTRIAGE_DB", &db)
        .output()
        .unwrap();
    assert!(report.status.success());
    wait_all_finished(&store, 220, Duration::from_secs(60)).await;
    // A second wave after the reader has held its snapshot for a while.
    tokio::time::sleep(Duration::from_secs(5).saturating_sub(held_since.elapsed())).await;
    hash_list(&lists, "second-wave", 50);
    let counts = wait_all_finished(&store, 270, Duration::from_secs(60)).await;
    let held = held_since.elapsed();
    // The reader is still inside its transaction: it still sees the database as it was.
    writeln!(
        stdin,
        "SELECT 'jobs in its snapshot', count(*) FROM jobs; COMMIT;"
    )
    .unwrap();
    writeln!(stdin, "SELECT 'jobs after', count(*) FROM jobs;").unwrap();
    drop_stdin(stdin);
    let out = reader.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let status = daemon.stop();
    eprintln!(
        "FIGURES long-reader: read transaction held {:.1} s while 270 items finished (in two waves) ({:?}); \
         reader saw {text:?}; daemon exit {status}",
        held.as_secs_f64(),
        counts.by_verdict
    );
    assert!(text.contains("jobs in its snapshot|0"), "{text}");
    assert!(text.contains("jobs after|270"), "{text}");
    assert_eq!(counts.by_verdict.values().sum::<u64>(), 270);
    assert_eq!(integrity(&store).await, "ok");
}

fn drop_stdin(stdin: std::process::ChildStdin) {
    drop(stdin);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_on_one_database_share_the_work_without_duplicates() {
    let n = 10;
    let known = Known {
        files: (0..n)
            .map(|i| KnownFile::clean_content(format!("known file {i}").as_bytes()))
            .collect(),
        urls: (0..n)
            .map(|i| KnownUrl::clean(&format!("http://known{i}.example.com/")))
            .collect(),
        ..Known::default()
    };
    let sim = SimConfig {
        known,
        analysis_delay: (Duration::from_millis(300), Duration::from_millis(800)),
        ..SimConfig::default()
    };
    let world = World::new(sim).await;
    let db = PathBuf::from(&world.config.db);
    let (drop, lists) = dirs(world.dir.path());
    for i in 0..n {
        std::fs::write(drop.join(format!("u{i}")), format!("unknown file {i}")).unwrap();
        std::fs::write(drop.join(format!("k{i}")), format!("known file {i}")).unwrap();
    }
    let mut list = String::new();
    for i in 0..n {
        list += &format!("http://known{i}.example.com/\nhttp://new{i}.example.com/x\n");
        list += &format!("{}\n", sha256(format!("nobody {i}").as_bytes()));
    }
    std::fs::write(lists.join("iocs.txt"), list).unwrap();
    let items = 5 * n as u64;
    // Both at once, on a database neither has created yet.
    let logs = [
        world.dir.path().join("a.log"),
        world.dir.path().join("b.log"),
    ];
    let mut a = Daemon::start(&world, &db, &drop, &lists, &logs[0]);
    let mut b = Daemon::start(&world, &db, &drop, &lists, &logs[1]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let store = SqliteStore::open(&db).await.unwrap();
    let counts = wait_all_finished(&store, items, Duration::from_secs(60)).await;
    let both_running = (a.running(), b.running());
    let (sa, sb) = (a.stop(), b.stop());
    let stats = world.sim.stats();
    let text: Vec<String> = logs
        .iter()
        .map(|l| std::fs::read_to_string(l).unwrap())
        .collect();
    let dup_uploads = stats.uploads.values().filter(|&&n| n > 1).count();
    let dup_urls = stats.url_submissions.values().filter(|&&n| n > 1).count();
    let jobs: i64 = sqlx::query_scalar("SELECT count(*) FROM jobs")
        .fetch_one(store.read_pool())
        .await
        .unwrap();
    let check = integrity(&store).await;
    eprintln!(
        "FIGURES two-daemons: items {items}, jobs rows {jobs}, both running {both_running:?}, \
         verdicts {:?}, uploads {} (duplicates {dup_uploads}), URL submissions {} (duplicates \
         {dup_urls}), integrity {check}, exits {sa} / {sb}",
        counts.by_verdict,
        stats.uploads.len(),
        stats.url_submissions.len()
    );
    assert_eq!(both_running, (true, true), "both work: {text:?}");
    assert_eq!(jobs, items as i64, "one job per item");
    assert_eq!(counts.by_verdict.values().sum::<u64>(), items);
    assert_eq!(counts.by_verdict.get("failed"), None, "{counts:?}");
    assert_eq!(stats.uploads.len(), n);
    assert_eq!(dup_uploads, 0, "{:?}", stats.uploads);
    assert_eq!(stats.url_submissions.len(), n);
    assert_eq!(dup_urls, 0, "{:?}", stats.url_submissions);
    assert_eq!(check, "ok");
    assert!(sa.success() && sb.success(), "{text:?}");
}
