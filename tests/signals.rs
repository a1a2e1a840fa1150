//! SIGINT and SIGTERM against the built binary: hashing and list reading stop at the signal,
//! what was not finished is read again next time, and a second signal ends the process at once.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{World, exits_within, send};
use vtriage::store::Store;
use vtriage::store::sqlite::SqliteStore;

/// Each file these tests hash: sparse, so no disk space, but tens of seconds of hashing here
/// (several even at gigabytes a second).
const LARGE: u64 = 8 << 30;

/// The `vtriage` binary on this world's database and simulator, files settling in 200 ms.
fn vtriage(world: &World) -> Command {
    let mut cmd = world.command();
    cmd.env("VTRIAGE_WATCH_SETTLE_MS", "200")
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    cmd
}

/// A sparse file of `len` bytes of zeros.
fn sparse(path: &Path, len: u64) {
    std::fs::File::create(path).unwrap().set_len(len).unwrap();
}

async fn open_store(world: &World) -> SqliteStore {
    SqliteStore::open(Path::new(&world.config.db))
        .await
        .unwrap()
}

/// Jobs of every kind and state.
async fn jobs(store: &SqliteStore) -> u64 {
    let counts = store.counts().await.unwrap();
    counts.by_state.values().flat_map(|k| k.values()).sum()
}

/// `vtriage run` on `dir` (`--drop` or `--lists`), with a grace period of one second.
fn daemon(world: &World, option: &str, dir: &Path) -> Child {
    vtriage(world)
        .args(["run", option])
        .arg(dir)
        .env("VTRIAGE_DAEMON_SHUTDOWN_GRACE_SECS", "1")
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// A directory `name` in the world's directory, as the daemon stores it (absolute, links
/// resolved).
fn new_dir(world: &World, name: &str) -> PathBuf {
    let dir = world.dir.path().join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::canonicalize(dir).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_a_scan_while_it_hashes() {
    let world = World::new(World::fast_sim()).await;
    let big = new_dir(&world, "big");
    sparse(&big.join("a.bin"), LARGE);
    sparse(&big.join("c.bin"), LARGE);
    let mut scan = vtriage(&world)
        .arg("scan")
        .arg(&big)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    send("INT", &scan);
    let status = exits_within(&mut scan, Duration::from_secs(2), "the scan").await;
    assert_eq!(status.code(), Some(2), "an interruption");
    let mut out = String::new();
    scan.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        out.contains("interrupted before every file was hashed"),
        "{out}"
    );
    assert_eq!(
        jobs(&open_store(&world).await).await,
        0,
        "nothing half-hashed queued"
    );
}

/// Files the daemon hashes as it starts (a drop directory full of them) are not recorded as
/// seen when it stops part way: the next start reads them again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_while_it_hashes_the_drop_directory() {
    let world = World::new(World::fast_sim()).await;
    let drop = new_dir(&world, "drop");
    sparse(&drop.join("a.bin"), LARGE);
    sparse(&drop.join("c.bin"), LARGE);
    let mut run = daemon(&world, "--drop", &drop);
    // Settled after 200 ms, then hashed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send("TERM", &run);
    let status = exits_within(&mut run, Duration::from_secs(2), "the daemon").await;
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
    let store = open_store(&world).await;
    assert_eq!(jobs(&store).await, 0);
    let under = format!("{}/", drop.display());
    let seen = store.files_seen_under(&under, false).await.unwrap();
    assert!(seen.is_empty(), "read again at the next start: {seen:?}");
}

/// A list stopped part way is not recorded as read (the next start reads it again whole); the
/// batches queued before the stop stay queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_daemon_while_it_reads_a_list() {
    let world = World::new(World::fast_sim()).await;
    let lists = new_dir(&world, "lists");
    let lines = 1_000_000;
    let staged = world.dir.path().join("hashes.txt");
    let text: String = (0..lines).map(|i| format!("{i:064x}\n")).collect();
    std::fs::write(&staged, text).unwrap();
    let mut run = daemon(&world, "--lists", &lists);
    std::fs::rename(&staged, lists.join("hashes.txt")).unwrap();
    let store = open_store(&world).await;
    let started = Instant::now();
    while jobs(&store).await == 0 {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "nothing queued"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send("TERM", &run);
    // The grace period, and a little for the process to end.
    let status = exits_within(&mut run, Duration::from_millis(2500), "the daemon").await;
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
    let queued = jobs(&store).await;
    assert!((1..lines).contains(&queued), "{queued} of {lines} queued");
    let under = format!("{}/", lists.display());
    let read = store.lists_read_under(&under, false).await.unwrap();
    assert!(read.is_empty(), "not recorded as read: {read:?}");
}

/// The first SIGINT gives work in flight the grace period (here a request VirusTotal never
/// answers, and 30 s); a second ends the process at once, as a shell reports a process SIGINT
/// killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_sigint_ends_the_process_at_once() {
    let world = World::new(World::fast_sim()).await;
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/api/v3", silent.local_addr().unwrap());
    let mut lookup = vtriage(&world)
        .args(["lookup", &"ab".repeat(32)])
        .env("VTRIAGE_API_URL", url)
        .env("VTRIAGE_VIRUSTOTAL_TIMEOUT_SECS", "60")
        .env("VTRIAGE_DAEMON_SHUTDOWN_GRACE_SECS", "30")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The request is under way once its connection is accepted; it is never answered.
    let (_connection, _) = tokio::time::timeout(Duration::from_secs(30), silent.accept())
        .await
        .expect("a request")
        .unwrap();
    send("INT", &lookup);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        lookup.try_wait().unwrap().is_none(),
        "the first signal lets the request finish"
    );
    send("INT", &lookup);
    let status = exits_within(&mut lookup, Duration::from_secs(2), "the lookup").await;
    assert_eq!(status.code(), Some(130));
}
