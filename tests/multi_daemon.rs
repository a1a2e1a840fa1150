//! Three `vtriage run` processes (the real binary) on one PostgreSQL database, as three hosts
//! would run them, against one `vtriage sim` process with the same quota as theirs: together
//! they never exceed the key's quota, every item is triaged once, nothing is uploaded twice,
//! and when one of them is killed mid-run the other two finish its work.
//!
//! Needs `VTRIAGE_TEST_PG` (see `scripts/postgres`); without it the test says it is skipped.

mod backends;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use backends::PgDatabase;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use vtriage::store::Store;
use vtriage::store::postgres::PgStore;

const KEY: &str = "multi-daemon-test-key-0123456789";
const BIN: &str = env!("CARGO_BIN_EXE_vtriage");
/// The quota the simulator enforces and every daemon is configured with: QUOTA requests in any
/// WINDOW_SECS. The window is long enough for the limiter's margin (5 %: 100 ms) to cover the
/// delay between a grant and the request's arrival with three debug daemons on two cores; with
/// a 1 s window (a 50 ms margin) an occasional request arrived late enough to draw a 429.
const QUOTA: u32 = 40;
const WINDOW_SECS: &str = "2";
const DAEMONS: usize = 3;
const FILES: usize = 100;
/// Files dropped on two hosts at once (same content, two paths): one job each.
const SHARED_FILES: usize = 20;
/// Indicators in lists, per kind.
const PER_KIND: usize = 225;
/// Indicators listed on two hosts at once.
const SHARED_LIST_LINES: usize = 30;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// One host: its drop directory and its lists directory.
struct Host {
    drop: PathBuf,
    lists: PathBuf,
}

/// Writes the 1,000 distinct items: files spread over the drop directories (some on two
/// hosts), and hashes, URLs, domains and IP addresses spread over the lists (some on two).
fn write_items(root: &Path) -> Vec<Host> {
    let hosts: Vec<Host> = (0..DAEMONS)
        .map(|d| {
            let host = Host {
                drop: root.join(format!("host{d}/drop")),
                lists: root.join(format!("host{d}/lists")),
            };
            std::fs::create_dir_all(&host.drop).unwrap();
            std::fs::create_dir_all(&host.lists).unwrap();
            host
        })
        .collect();
    for i in 0..FILES {
        let content = format!("multi-daemon sample {i}\n").repeat(10 + i);
        let d = i % DAEMONS;
        std::fs::write(hosts[d].drop.join(format!("sample-{i}.bin")), &content).unwrap();
        if i < SHARED_FILES {
            let other = &hosts[(d + 1) % DAEMONS];
            std::fs::write(other.drop.join(format!("copy-of-{i}.bin")), &content).unwrap();
        }
    }
    let mut lines: Vec<String> = Vec::new();
    for i in 0..PER_KIND {
        lines.push(sha256_hex(format!("listed hash {i}").as_bytes()));
        lines.push(format!(
            "https://dl{i}.payload-host.net/files/dropper{i}.exe"
        ));
        lines.push(format!("c2-node{i}.triage-test.org"));
        lines.push(format!("45.33.{}.{}", i / 200, 10 + i % 200));
    }
    for (d, host) in hosts.iter().enumerate() {
        let mut mine: Vec<&str> = lines
            .iter()
            .enumerate()
            .filter(|(n, _)| n % DAEMONS == d)
            .map(|(_, l)| l.as_str())
            .collect();
        // The next host's first lines, listed here too.
        mine.extend(
            lines
                .iter()
                .enumerate()
                .filter(|(n, _)| n % DAEMONS == (d + 1) % DAEMONS)
                .take(SHARED_LIST_LINES)
                .map(|(_, l)| l.as_str()),
        );
        std::fs::write(host.lists.join("iocs.txt"), mine.join("\n") + "\n").unwrap();
    }
    hosts
}

/// Starts the simulator on a free loopback port; returns it and its API base URL.
async fn start_sim() -> (Child, String) {
    let mut sim = Command::new(BIN)
        .args(["sim", "--listen", "127.0.0.1:0", "--key", KEY])
        .args([
            "--quota-requests",
            &QUOTA.to_string(),
            "--quota-window-secs",
            WINDOW_SECS,
        ])
        .args(["--analysis-secs", "0.1,0.3"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sim.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the simulator says where it listens")
        .unwrap()
        .unwrap();
    let url = first
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the simulator: {first}"))
        .trim()
        .to_owned();
    (sim, url)
}

/// The environment every process of this deployment shares.
fn deployment(cmd: &mut Command, db: &str, api_url: &str, dir: &Path) {
    cmd.current_dir(dir)
        .env("VTRIAGE_DB", db)
        .env("VTRIAGE_API_URL", api_url)
        .env("VT_API_KEY", KEY)
        .env("VTRIAGE_QUOTA_REQUESTS", QUOTA.to_string())
        .env("VTRIAGE_QUOTA_WINDOW_SECS", WINDOW_SECS)
        .env("VTRIAGE_QUOTA_DAILY", "100000")
        .env("VTRIAGE_UPLOAD_FILES", "unknown")
        .env("VTRIAGE_POLL_FIRST_DELAY_SECS", "0.3")
        .env("VTRIAGE_POLL_MAX_INTERVAL_SECS", "0.5")
        .env("VTRIAGE_DAEMON_RETRY_DELAY_SECS", "0.1")
        .env("VTRIAGE_DAEMON_SHUTDOWN_GRACE_SECS", "1")
        .env("VTRIAGE_WATCH_SETTLE_MS", "200")
        .env_remove("RUST_LOG");
}

fn start_daemon(db: &str, api_url: &str, dir: &Path, host: &Host) -> Child {
    let mut cmd = Command::new(BIN);
    deployment(&mut cmd, db, api_url, dir);
    cmd.arg("run")
        .arg("--drop")
        .arg(&host.drop)
        .arg("--lists")
        .arg(&host.lists)
        .stdout(Stdio::null())
        .stderr(if std::env::var_os("TEST_LOG").is_some() {
            Stdio::inherit()
        } else {
            Stdio::null()
        })
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Jobs by state.
async fn states(store: &PgStore) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT COUNT(*), COUNT(*) FILTER (WHERE state = 'completed'),
                COUNT(*) FILTER (WHERE state = 'discarded')
         FROM jobs",
    )
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Waits until the job counts (total, completed, discarded) satisfy `done`, polling every
/// 100 ms, or panics with `what` after `limit`.
async fn wait_for_jobs(
    store: &PgStore,
    limit: Duration,
    what: &str,
    done: impl Fn((i64, i64, i64)) -> bool,
) {
    let started = Instant::now();
    loop {
        let counts = states(store).await;
        if done(counts) {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}: (total, completed, discarded) = {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_daemons_share_one_queue_and_one_quota_and_survive_a_kill() {
    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let hosts = write_items(dir.path());
    let (mut sim, api_url) = start_sim().await;
    // The test's own view of the database (also creates the schema before the daemons race).
    let store = PgStore::open(&db.url).await.unwrap();

    let mut daemons: Vec<Child> = hosts
        .iter()
        .map(|h| start_daemon(&db.url, &api_url, dir.path(), h))
        .collect();
    let pids: Vec<u32> = daemons.iter().map(|d| d.id().unwrap()).collect();

    // Every host queued its own drop directory and lists: 1,000 distinct items.
    let distinct = (FILES + 4 * PER_KIND) as i64;
    wait_for_jobs(&store, Duration::from_secs(40), "all items queued", |c| {
        c.0 >= distinct
    })
    .await;

    // `status` (from any host) lists every daemon with its host and a recent heartbeat.
    let mut status = Command::new(BIN);
    deployment(&mut status, &db.url, &api_url, dir.path());
    let out = status.args(["status", "--json"]).output().await.unwrap();
    assert!(out.status.success(), "status failed: {out:?}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let workers = status["workers"].as_array().expect("workers in status");
    let listed: HashSet<u64> = workers.iter().filter_map(|w| w["pid"].as_u64()).collect();
    for pid in &pids {
        assert!(
            listed.contains(&u64::from(*pid)),
            "daemon {pid} in {workers:?}"
        );
    }
    for w in workers {
        assert!(
            !w["host"].as_str().unwrap_or("").is_empty(),
            "a host: {w:?}"
        );
        let age_ms = vtriage::store::now_millis() - w["heartbeat_at"].as_i64().unwrap();
        assert!(age_ms <= 10_000, "a recent heartbeat: {w:?}");
    }

    // Kill the first daemon while it holds jobs, once a quarter of the work is done.
    let victim = format!("%:{}:%", pids[0]);
    let waiting = Instant::now();
    let held: Vec<i64> = loop {
        let finished = states(&store).await.1;
        let held: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM jobs WHERE state = 'running' AND lease_owner LIKE $1",
        )
        .bind(&victim)
        .fetch_all(store.pool())
        .await
        .unwrap();
        if finished >= distinct / 4 && !held.is_empty() {
            break held;
        }
        assert!(
            waiting.elapsed() < Duration::from_secs(60),
            "the first daemon never held a job"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    daemons[0].kill().await.unwrap();
    daemons[0].wait().await.unwrap();

    // The other two finish everything, the killed daemon's jobs included.
    wait_for_jobs(
        &store,
        Duration::from_secs(120),
        "every item triaged",
        |c| c.1 + c.2 >= distinct,
    )
    .await;
    let (total, completed, discarded) = states(&store).await;
    assert_eq!(total, distinct, "one job per distinct item");
    assert_eq!(completed, distinct, "every item triaged");
    assert_eq!(discarded, 0);
    let verdicts: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM verdicts")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(verdicts, distinct, "one verdict per item");
    let taken_over: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE id = ANY($1) AND state = 'completed'")
            .bind(&held)
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(taken_over, held.len() as i64, "the killed daemon's jobs");
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.by_state["completed"]["file"], FILES as u64);
    assert!(
        !counts.by_verdict.contains_key("failed"),
        "nothing failed: {counts:?}"
    );

    // The survivors stop cleanly on SIGTERM.
    for child in &mut daemons[1..] {
        let pid = child.id().unwrap().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let exit = tokio::time::timeout(Duration::from_secs(20), child.wait())
            .await
            .expect("a daemon stops within its grace period")
            .unwrap();
        assert!(exit.success(), "clean exit: {exit:?}");
    }

    // What VirusTotal (the simulator) saw.
    let stats_url = api_url.trim_end_matches("/api/v3").to_owned() + "/_sim/stats";
    let stats: serde_json::Value = reqwest::get(&stats_url)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["quota_rejections"], 0, "never a 429: {stats}");
    let max_in_window = stats["max_in_window"].as_u64().unwrap();
    assert!(
        (1..=u64::from(QUOTA)).contains(&max_in_window),
        "at most {QUOTA} requests in any window, saw {max_in_window}"
    );
    let uploads = stats["uploads"].as_object().unwrap();
    assert_eq!(uploads.len(), FILES, "every unknown file uploaded: {stats}");
    assert!(
        uploads.values().all(|n| n.as_u64() == Some(1)),
        "no file uploaded twice: {uploads:?}"
    );
    // One lookup per item, plus at most one repeat for each job the killed daemon held.
    let requests = stats["requests"].as_object().unwrap();
    let lookups: u64 = [
        "GET /files/{id}",
        "GET /urls/{id}",
        "GET /domains/{id}",
        "GET /ip_addresses/{id}",
    ]
    .iter()
    .filter_map(|k| requests.get(*k).and_then(|n| n.as_u64()))
    .sum();
    assert!(
        lookups >= distinct as u64 && lookups <= distinct as u64 + held.len() as u64,
        "{lookups} lookups for {distinct} items ({} held by the killed daemon): {requests:?}",
        held.len()
    );

    sim.kill().await.unwrap();
    store.close().await;
    eprintln!("three daemons, {distinct} items: {:?}", started.elapsed());
}

/// A file only another host saw, claimed here while that host's daemon seemed gone (down, or
/// cut off from the database for longer than a worker may stay silent), is left for that host
/// rather than failed: its daemon, running all along, would never queue it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_only_another_host_saw_waits_for_it_instead_of_failing() {
    use tokio_util::sync::CancellationToken;
    use vtriage::config::{ApiKey, Config, UploadPolicy};
    use vtriage::indicator::Kind;
    use vtriage::pipeline::Pipeline;
    use vtriage::sim::SimConfig;
    use vtriage::store::{FileSeen, NewJob, now_millis};

    let Some(db) = PgDatabase::create().await else {
        return;
    };
    let sim = vtriage::sim::spawn(SimConfig {
        api_keys: vec![KEY.into()],
        ..SimConfig::default()
    })
    .await
    .unwrap();
    let content = b"seen on host b only";
    let elsewhere = PgStore::open(&db.url).await.unwrap().on_host("host-b");
    let file = NewJob {
        kind: Kind::File,
        indicator: sha256_hex(content),
        allow_submit: true,
        path: Some(FileSeen::at("/drop/b.bin", content.len() as u64)),
        source: None,
    };
    let ids = elsewhere
        .enqueue(&[file], now_millis(), 86_400_000, 5)
        .await
        .unwrap();
    let mut config = Config {
        db: db.url.clone(),
        ..Config::default()
    };
    config.virustotal.api_url = sim.base_url();
    config.virustotal.api_key = Some(ApiKey::new(KEY));
    (config.quota.requests, config.quota.window_secs) = (1000, 1.0);
    config.upload.files = UploadPolicy::Unknown;
    let pipeline = Pipeline::open(config, CancellationToken::new())
        .await
        .unwrap();
    pipeline.spawn_workers();
    let deadline = Instant::now() + Duration::from_secs(15);
    let left = loop {
        let row: (String, String, i64) =
            sqlx::query_as("SELECT state, step, scheduled_at FROM jobs WHERE id = $1")
                .bind(ids[0].0)
                .fetch_one(elsewhere.pool())
                .await
                .unwrap();
        if row.0 != "running" && row.1 == "upload" {
            break row;
        }
        assert!(Instant::now() < deadline, "not looked up in time: {row:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    pipeline.shutdown().await;
    assert_eq!(left.0, "available", "left for host b, not failed: {left:?}");
    assert!(
        left.2 > now_millis(),
        "and not claimed again at once: {left:?}"
    );
    assert!(sim.stats().uploads.is_empty());
}
