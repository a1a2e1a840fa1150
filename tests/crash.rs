//! Crash safety: the real `vtriage run` binary, killed with SIGKILL at random moments and
//! restarted, over 200 mixed items (unknown files uploaded, known files, hashes, URLs submitted)
//! against the simulator with analyses that take seconds. Nothing may be lost, nothing uploaded
//! or submitted twice, and the database must stay intact.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{KEY, World, sha256};
use rand::RngExt;
use vtriage::sim::{Known, KnownFile, KnownUrl, SimConfig};
use vtriage::store::sqlite::SqliteStore;

const KILLS: usize = 20;

fn start(world: &World, drop: &Path, lists: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_vtriage"))
        .args(["run", "--drop"])
        .arg(drop)
        .arg("--lists")
        .arg(lists)
        .env("VT_API_KEY", KEY)
        .env("VTRIAGE_DB", &world.config.db)
        .env("VTRIAGE_API_URL", world.sim.base_url())
        .env("VTRIAGE_UPLOAD_FILES", "unknown")
        .env("VTRIAGE_UPLOAD_URLS", "unknown")
        .env("VTRIAGE_QUOTA_REQUESTS", "10000")
        .env("VTRIAGE_QUOTA_WINDOW_SECS", "1")
        .env("VTRIAGE_QUOTA_DAILY", "1000000")
        .env("VTRIAGE_WATCH_SETTLE_MS", "100")
        .env("VTRIAGE_POLL_FIRST_DELAY_SECS", "0.5")
        .env("VTRIAGE_POLL_MAX_INTERVAL_SECS", "1")
        .env("VTRIAGE_POLL_GIVE_UP_AFTER_SECS", "60")
        .env("VTRIAGE_DAEMON_RETRY_DELAY_SECS", "0.1")
        .env("VTRIAGE_DAEMON_WORKERS", "8")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_twenty_times_loses_nothing_and_uploads_nothing_twice() {
    // The simulator knows 20 files, 30 hashes and 20 URLs; analyses take 1-3 s.
    let known_files: Vec<Vec<u8>> = (0..20)
        .map(|i| format!("known file {i}").into_bytes())
        .collect();
    let known_hash_contents: Vec<Vec<u8>> = (0..30)
        .map(|i| format!("known hash {i}").into_bytes())
        .collect();
    let known_urls: Vec<String> = (0..20)
        .map(|i| format!("http://known{i}.example.com/path"))
        .collect();
    let known = Known {
        files: known_files
            .iter()
            .chain(&known_hash_contents)
            .map(|c| KnownFile::clean_content(c))
            .collect(),
        urls: known_urls.iter().map(|u| KnownUrl::clean(u)).collect(),
        ..Known::default()
    };
    let sim_config = SimConfig {
        known,
        analysis_delay: (Duration::from_secs(1), Duration::from_secs(3)),
        ..SimConfig::default()
    };
    let world = World::new(sim_config).await;

    let drop = world.dir.path().join("drop");
    let lists = world.dir.path().join("lists");
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::create_dir_all(&lists).unwrap();
    for i in 0..80 {
        std::fs::write(
            drop.join(format!("unknown{i}.bin")),
            format!("unknown file {i}"),
        )
        .unwrap();
    }
    for (i, c) in known_files.iter().enumerate() {
        std::fs::write(drop.join(format!("known{i}.bin")), c).unwrap();
    }
    let mut list = String::new();
    for c in &known_hash_contents {
        list += &format!("{}\n", sha256(c));
    }
    for i in 0..30 {
        list += &format!("{}\n", sha256(format!("never seen {i}").as_bytes()));
    }
    for u in &known_urls {
        list += &format!("{u}\n");
    }
    for i in 0..20 {
        list += &format!("hxxp://new{i}[.]example[.]com/landing\n");
    }
    std::fs::write(lists.join("iocs.txt"), list).unwrap();

    let mut rng = rand::rng();
    for _ in 0..KILLS {
        let mut child = start(&world, &drop, &lists);
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
    }
    let mut last = start(&world, &drop, &lists);
    let store = SqliteStore::open(&world.dir.path().join("vtriage.db"))
        .await
        .unwrap();
    let counts = common::wait_all_finished(&store, 200, Duration::from_secs(120)).await;
    last.kill().unwrap();
    last.wait().unwrap();

    let stats = world.sim.stats();
    eprintln!(
        "crash test: {KILLS} SIGKILLs, 200 items, verdicts {:?}, sim {:?}",
        counts.by_verdict, stats.requests
    );
    assert_eq!(
        counts.by_verdict.get("failed"),
        None,
        "nothing failed: {counts:?}"
    );
    assert_eq!(counts.by_verdict.get("pending"), None);
    assert_eq!(
        counts.by_verdict.values().sum::<u64>(),
        200,
        "every item has a verdict"
    );
    assert_eq!(stats.uploads.len(), 80, "every unknown file uploaded");
    assert!(
        stats.uploads.values().all(|&n| n == 1),
        "no file uploaded twice: {:?}",
        stats.uploads
    );
    assert_eq!(
        stats.url_submissions.len(),
        20,
        "every unknown URL submitted"
    );
    assert!(
        stats.url_submissions.values().all(|&n| n == 1),
        "no URL submitted twice: {:?}",
        stats.url_submissions
    );
    assert_eq!(common::integrity(&store).await, "ok");
}
