//! Reliability against VirusTotal's faults: 20% injected faults on a mixed workload, retries
//! that are bounded and spaced, a key revoked mid-run, and replies that are malformed in every
//! way a proxy or a bug can make them. Each test prints its figures (`--nocapture`) for
//! RELIABILITY.md.

mod common;

use common::{integrity, wait_all_finished};

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use common::{KEY, World, sha256};
use tokio_util::sync::CancellationToken;
use vtriage::config::UploadPolicy;
use vtriage::daemon::{self, Watched};
use vtriage::indicator::Kind;
use vtriage::pipeline::Pipeline;
use vtriage::sim::{Faults, Known, KnownFile, KnownUrl, SimConfig, SimQuota};
use vtriage::store::sqlite::SqliteStore;
use vtriage::store::{NewJob, Store, now_millis};

/// A mixed workload: unknown files (to upload), known files, known and unknown hashes, known
/// and new URLs (to submit), in a drop directory and one IOC list.
struct Mixed {
    drop: PathBuf,
    lists: PathBuf,
    items: u64,
    unknown_files: usize,
    new_urls: usize,
}

/// What the simulator knows for [`Mixed`] with `n` of each group.
fn mixed_known(n: usize) -> Known {
    Known {
        files: (0..n)
            .flat_map(|i| {
                [
                    KnownFile::clean_content(format!("known file {i}").as_bytes()),
                    KnownFile::clean_content(format!("known hash {i}").as_bytes()),
                ]
            })
            .collect(),
        urls: (0..n)
            .map(|i| KnownUrl::clean(&format!("http://known{i}.example.com/path")))
            .collect(),
        ..Known::default()
    }
}

/// Writes the workload: `3n` unknown files, `n` of every other group (`8n` items).
fn mixed_workload(root: &Path, n: usize) -> Mixed {
    let drop = root.join("drop");
    let lists = root.join("lists");
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::create_dir_all(&lists).unwrap();
    for i in 0..3 * n {
        std::fs::write(
            drop.join(format!("unknown{i}.bin")),
            format!("unknown file {i}"),
        )
        .unwrap();
    }
    for i in 0..n {
        std::fs::write(
            drop.join(format!("known{i}.bin")),
            format!("known file {i}"),
        )
        .unwrap();
    }
    let mut list = String::new();
    for i in 0..n {
        list += &format!("{}\n", sha256(format!("known hash {i}").as_bytes()));
        list += &format!("{}\n", sha256(format!("never seen {i}").as_bytes()));
        list += &format!("http://known{i}.example.com/path\n");
        list += &format!("hxxp://new{i}[.]example[.]com/landing\n");
    }
    std::fs::write(lists.join("iocs.txt"), list).unwrap();
    Mixed {
        drop,
        lists,
        items: 8 * n as u64,
        unknown_files: 3 * n,
        new_urls: n,
    }
}

/// Sets the client's retries (`[virustotal] retries`, `retry_min_delay_secs`,
/// `retry_max_delay_secs`): `retries` of them, from `min_ms` up to `max_ms` apart.
fn retry(world: &mut World, retries: u32, min_ms: u64, max_ms: u64) {
    let vt = &mut world.config.virustotal;
    vt.retries = retries;
    vt.retry_min_delay_secs = min_ms as f64 / 1000.0;
    vt.retry_max_delay_secs = max_ms as f64 / 1000.0;
}

/// The pipeline of `world`'s configuration.
async fn pipeline(world: &World) -> Arc<Pipeline> {
    let p = Pipeline::open(world.config.clone(), CancellationToken::new());
    Arc::new(p.await.unwrap())
}

/// Queues `jobs` (`max_attempts` each); their ids.
async fn queue(pipeline: &Pipeline, jobs: &[NewJob], max_attempts: u32) -> Vec<i64> {
    pipeline
        .store
        .enqueue(jobs, now_millis(), 86_400_000, max_attempts)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect()
}

/// Works until none of `ids` is left (20 s at most), shuts the pipeline down; their results.
async fn work_through(pipeline: &Pipeline, ids: &[i64]) -> Vec<vtriage::store::JobResult> {
    pipeline.spawn_workers();
    tokio::time::timeout(Duration::from_secs(20), pipeline.drain(ids, |_, _| {}))
        .await
        .expect("finished in time")
        .unwrap();
    let results = pipeline.store.results(ids).await.unwrap();
    pipeline.shutdown().await;
    results
}

/// The job ended `unknown`, its note saying `why`.
fn assert_unknown_because(result: &vtriage::store::JobResult, why: &str) {
    let verdict = result.verdict.as_ref().expect("a verdict");
    assert_eq!(verdict.verdict.as_str(), "unknown", "{verdict:?}");
    let note = verdict.note.as_deref().unwrap_or_default();
    assert!(note.contains(why), "{verdict:?}");
}

/// A job for the file at `path` whose content was `hashed`, to upload if VirusTotal does not
/// know it.
fn file_job(path: &Path, hashed: &[u8]) -> NewJob {
    NewJob {
        kind: Kind::File,
        indicator: sha256(hashed),
        allow_submit: true,
        path: Some(vtriage::store::FileSeen::at(
            path.display().to_string(),
            hashed.len() as u64,
        )),
        source: None,
    }
}

async fn max_attempt(store: &SqliteStore) -> i64 {
    sqlx::query_scalar("SELECT COALESCE(MAX(attempt), 0) FROM jobs")
        .fetch_one(store.read_pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_item_completes_under_twenty_percent_faults_without_a_second_upload() {
    let n = 10;
    let sim = SimConfig {
        known: mixed_known(n),
        analysis_delay: (Duration::from_millis(100), Duration::from_millis(300)),
        faults: Faults {
            rate: 0.2,
            latency: Duration::from_millis(300),
        },
        seed: 6,
        ..SimConfig::default()
    };
    let mut world = World::new(sim).await.allow_uploads();
    world.config.upload.urls = UploadPolicy::Unknown;
    world.config.watch.settle_ms = 100;
    world.config.daemon.workers = 8;
    // A submission that failed before VirusTotal acted on it (503, 504, HTML 500) is confirmed
    // absent for this long before it is made again: scaled down from minutes.
    world.config.poll.give_up_after_secs = 2.0;
    let work = mixed_workload(world.dir.path(), n);
    // Retries scaled down from seconds to milliseconds, so faults cost little time.
    retry(&mut world, 4, 20, 200);
    let pipeline = pipeline(&world).await;
    let p = pipeline.clone();
    let watched = Watched {
        drop: Some(work.drop.clone()),
        lists: Some(work.lists.clone()),
    };
    let task = tokio::spawn(async move { daemon::run(&p, &watched).await });

    let started = Instant::now();
    let counts = wait_all_finished(&*pipeline.store, work.items, Duration::from_secs(60)).await;
    let elapsed = started.elapsed();
    pipeline.stop.cancel();
    task.await.unwrap().unwrap();

    let stats = world.sim.stats();
    let attempts = max_attempt(pipeline.sqlite.as_deref().expect("a SQLite pipeline")).await;
    let dup_uploads = stats.uploads.values().filter(|&&n| n > 1).count();
    let dup_urls = stats.url_submissions.values().filter(|&&n| n > 1).count();
    eprintln!(
        "FIGURES vt-faults: items {}, faults injected {} {:?}, api requests {}, verdicts {:?}, \
         uploads {} (duplicates {dup_uploads}), URL submissions {} (duplicates {dup_urls}), \
         max attempts of a job {attempts}, {:.1} s",
        work.items,
        stats.faults_injected,
        stats.faults_by_kind,
        stats.api_requests,
        counts.by_verdict,
        stats.uploads.len(),
        stats.url_submissions.len(),
        elapsed.as_secs_f64(),
    );
    assert!(
        stats.faults_injected >= 10,
        "faults were injected: {stats:?}"
    );
    assert_eq!(counts.by_verdict.get("failed"), None, "{counts:?}");
    assert_eq!(counts.by_verdict.get("pending"), None, "{counts:?}");
    assert_eq!(counts.by_verdict.values().sum::<u64>(), work.items);
    assert_eq!(
        stats.uploads.len(),
        work.unknown_files,
        "every unknown file uploaded"
    );
    assert_eq!(dup_uploads, 0, "no second upload: {:?}", stats.uploads);
    assert_eq!(stats.url_submissions.len(), work.new_urls);
    assert_eq!(
        dup_urls, 0,
        "no second submission: {:?}",
        stats.url_submissions
    );
    assert!(
        attempts <= i64::from(world.config.daemon.max_attempts),
        "attempts are bounded"
    );
    assert_eq!(
        integrity(pipeline.sqlite.as_deref().expect("a SQLite pipeline")).await,
        "ok"
    );
}

/// A fake VirusTotal that answers every request with a 503 and records when each came.
async fn always_503() -> (String, Arc<Mutex<Vec<Instant>>>) {
    let seen: Arc<Mutex<Vec<Instant>>> = Arc::default();
    async fn reply(State(seen): State<Arc<Mutex<Vec<Instant>>>>) -> Response {
        seen.lock().unwrap().push(Instant::now());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "<html><body>503 Service Unavailable</body></html>",
        )
            .into_response()
    }
    let app = Router::new().fallback(reply).with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/api/v3"), seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_always_fails_gets_bounded_spaced_attempts_then_a_failed_verdict() {
    let (url, seen) = always_503().await;
    let mut world = World::new(World::fast_sim()).await;
    world.config.virustotal.api_url = url;
    world.config.daemon.max_attempts = 3;
    world.config.daemon.retry_delay_secs = 0.2;
    world.config.daemon.workers = 1;
    retry(&mut world, 2, 50, 100);
    let pipeline = pipeline(&world).await;
    let job = NewJob {
        kind: Kind::Hash,
        indicator: sha256(b"never answered"),
        allow_submit: false,
        path: None,
        source: None,
    };
    let ids = queue(&pipeline, &[job], 3).await;
    let results = work_through(&pipeline, &ids).await;

    let times = seen.lock().unwrap().clone();
    let gaps: Vec<u128> = times
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    eprintln!(
        "FIGURES bounded-retries: {} requests for 3 attempts x 3 tries, gaps (ms) {gaps:?}",
        times.len()
    );
    // 3 worker attempts, each 1 try + 2 client retries: exactly 9 requests, never more.
    assert_eq!(times.len(), 9, "gaps {gaps:?}");
    // Every request waits at least the client's first delay after the one before it, and
    // each new attempt at least the worker's retry delay (0.2 s, then 0.4 s).
    assert!(gaps.iter().all(|&g| g >= 45), "spaced: {gaps:?}");
    assert!(
        gaps[2] >= 190 && gaps[5] >= 390,
        "attempts back off: {gaps:?}"
    );
    let v = results[0].verdict.as_ref().expect("a verdict");
    assert_eq!(v.verdict.as_str(), "failed");
    let outcome = vtriage::scan::ScanOutcome {
        results: results.clone(),
        ..Default::default()
    };
    assert_eq!(
        outcome.exit_code(),
        2,
        "a failed verdict is not a clean run"
    );
    let error = v.error.as_deref().unwrap_or_default();
    assert!(
        error.contains("503"),
        "the error says what happened: {error}"
    );
}

/// Starts `vtriage run` on the workload with stderr going to `log`.
fn start_daemon(world: &World, work: &Mixed, log: &Path, extra: &[(&str, &str)]) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_vtriage"));
    cmd.args(["run", "--drop"])
        .arg(&work.drop)
        .arg("--lists")
        .arg(&work.lists)
        .env("VT_API_KEY", KEY)
        .env("VTRIAGE_DB", &world.config.db)
        .env("VTRIAGE_API_URL", world.sim.base_url())
        .env("VTRIAGE_UPLOAD_FILES", "unknown")
        .env("VTRIAGE_UPLOAD_URLS", "unknown")
        .env("VTRIAGE_QUOTA_REQUESTS", "10000")
        .env("VTRIAGE_QUOTA_WINDOW_SECS", "1")
        .env("VTRIAGE_QUOTA_DAILY", "1000000")
        .env("VTRIAGE_WATCH_SETTLE_MS", "100")
        .env("VTRIAGE_POLL_FIRST_DELAY_SECS", "0.3")
        .env("VTRIAGE_POLL_MAX_INTERVAL_SECS", "0.5")
        .env("VTRIAGE_POLL_GIVE_UP_AFTER_SECS", "3")
        .env("VTRIAGE_DAEMON_RETRY_DELAY_SECS", "0.1")
        .env("VTRIAGE_DAEMON_WORKERS", "8")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// SIGTERM, then wait (a graceful stop).
fn terminate(child: &mut Child) -> std::process::ExitStatus {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap()
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let started = Instant::now();
    while started.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_mid_run_stops_every_worker_once_and_a_restart_finishes() {
    let n = 8;
    let sim = SimConfig {
        known: mixed_known(n),
        analysis_delay: (Duration::from_millis(500), Duration::from_millis(1500)),
        ..SimConfig::default()
    };
    let world = World::new(sim).await;
    let work = mixed_workload(world.dir.path(), n);
    let log = world.dir.path().join("first.log");
    let mut child = start_daemon(&world, &work, &log, &[]);
    let store = SqliteStore::open(Path::new(&world.config.db))
        .await
        .unwrap();
    // Revoke once some work is done and some is in flight.
    let started = Instant::now();
    loop {
        let done: u64 = store.counts().await.unwrap().by_verdict.values().sum();
        if done >= 10 {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "no progress");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    world.sim.revoke_key(KEY);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let Some(status) = status else {
        child.kill().unwrap();
        panic!("the daemon kept running with a revoked key");
    };
    let stderr = std::fs::read_to_string(&log).unwrap();
    let counts = store.counts().await.unwrap();
    let auth_failures = world.sim.stats().auth_failures;
    let done_before: u64 = counts.by_verdict.values().sum();
    let mentions: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("rejected the API key"))
        .collect();
    eprintln!(
        "FIGURES key-revoked: items {}, verdicts before revocation stop {done_before}, 401s \
         received {auth_failures}, exit {status}, messages {mentions:?}",
        work.items
    );
    assert_eq!(status.code(), Some(2), "an error exit: {stderr}");
    // One log line from the workers (whichever saw the 401 first) and the exit message.
    assert_eq!(mentions.len(), 2, "one clear message: {stderr}");
    assert!(
        mentions.last().unwrap().starts_with("vtriage: "),
        "{stderr}"
    );
    assert!(
        auth_failures <= 8,
        "the workers stopped at once: {auth_failures} 401s"
    );
    assert!(
        !counts.by_state.contains_key("running"),
        "in-flight jobs were given back: {counts:?}"
    );
    assert_eq!(
        counts.by_verdict.get("failed"),
        None,
        "nothing failed: {counts:?}"
    );
    assert!(!stderr.contains(KEY), "the key is not in the message");

    world.sim.restore_key(KEY);
    let log2 = world.dir.path().join("second.log");
    let mut child = start_daemon(&world, &work, &log2, &[]);
    let counts = wait_all_finished(&store, work.items, Duration::from_secs(60)).await;
    terminate(&mut child);
    let stats = world.sim.stats();
    eprintln!(
        "FIGURES key-revoked restart: verdicts {:?}, uploads {} (max per file {}), URL \
         submissions {} (max per URL {})",
        counts.by_verdict,
        stats.uploads.len(),
        stats.uploads.values().max().unwrap_or(&0),
        stats.url_submissions.len(),
        stats.url_submissions.values().max().unwrap_or(&0),
    );
    assert_eq!(counts.by_verdict.get("failed"), None);
    assert_eq!(counts.by_verdict.values().sum::<u64>(), work.items);
    assert_eq!(stats.uploads.len(), work.unknown_files);
    assert!(
        stats.uploads.values().all(|&n| n == 1),
        "{:?}",
        stats.uploads
    );
    assert_eq!(stats.url_submissions.len(), work.new_urls);
    assert!(stats.url_submissions.values().all(|&n| n == 1));
    assert_eq!(integrity(&store).await, "ok");
}

/// What a broken VirusTotal (or a proxy in front of it) answers for one hash.
#[derive(Clone, Copy, Debug)]
enum Broken {
    MissingFields,
    WrongTypes,
    NotJson,
    Empty,
    Truncated,
    Huge,
    NullData,
    NeverAnalysed,
    Fine,
}

/// The padding of the huge reply: 40 MB.
const HUGE: usize = 40 * 1024 * 1024;

const BROKEN: [Broken; 9] = [
    Broken::MissingFields,
    Broken::WrongTypes,
    Broken::NotJson,
    Broken::Empty,
    Broken::Truncated,
    Broken::Huge,
    Broken::NullData,
    Broken::NeverAnalysed,
    Broken::Fine,
];

fn broken_hash(b: Broken) -> String {
    sha256(format!("{b:?}").as_bytes())
}

async fn broken_server() -> String {
    async fn reply(UrlPath(id): UrlPath<String>) -> Response {
        let Some(b) = BROKEN.iter().find(|b| broken_hash(**b) == id) else {
            return (StatusCode::NOT_FOUND, "{}").into_response();
        };
        let ok = |body: String| (StatusCode::OK, body).into_response();
        match b {
            Broken::MissingFields => ok(r#"{"data":{}}"#.into()),
            Broken::WrongTypes => ok(
                r#"{"data":{"id":5,"type":["file"],"attributes":{"last_analysis_stats":"many","sha256":{},"last_analysis_date":"yesterday"}}}"#
                    .into(),
            ),
            Broken::NotJson => ok("<html><body>Bad gateway, but 200</body></html>".into()),
            Broken::Empty => ok(String::new()),
            Broken::Truncated => ok(format!(r#"{{"data":{{"id":"{id}","type":"file","attr"#)),
            Broken::Huge => {
                // A valid object, most of it one padding string.
                let pad = "A".repeat(HUGE);
                ok(format!(
                    r#"{{"data":{{"id":"{id}","type":"file","attributes":{{"sha256":"{id}","pad":"{pad}","last_analysis_date":1700000000,"last_analysis_results":{{"E":{{"category":"undetected"}}}},"last_analysis_stats":{{"malicious":0,"suspicious":0,"undetected":60,"harmless":0}}}}}}}}"#
                ))
            }
            Broken::NullData => ok(r#"{"data":null}"#.into()),
            // Known, but without engine results: VirusTotal is (forever) analysing it.
            Broken::NeverAnalysed => ok(format!(
                r#"{{"data":{{"id":"{id}","type":"file","attributes":{{"sha256":"{id}"}}}}}}"#
            )),
            Broken::Fine => ok(format!(
                r#"{{"data":{{"id":"{id}","type":"file","attributes":{{"sha256":"{id}","last_analysis_date":1700000000,"last_analysis_results":{{"E":{{"category":"malicious"}}}},"last_analysis_stats":{{"malicious":3,"suspicious":0,"undetected":60,"harmless":0}}}}}}}}"#
            )),
        }
    }
    let app = Router::new().route("/api/v3/files/{id}", axum::routing::get(reply));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/api/v3")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_replies_each_get_a_clear_outcome_and_the_work_goes_on() {
    if std::env::var_os("DBG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("vtriage=trace,sqlx=debug")
            .with_test_writer()
            .try_init();
    }
    let mut world = World::new(World::fast_sim()).await;
    world.config.virustotal.api_url = broken_server().await;
    world.config.poll.give_up_after_secs = 1.0;
    world.config.daemon.max_attempts = 2;
    world.config.daemon.retry_delay_secs = 0.05;
    world.config.daemon.workers = 2;
    retry(&mut world, 1, 10, 20);
    let pipeline = pipeline(&world).await;
    let jobs: Vec<NewJob> = BROKEN
        .iter()
        .map(|b| NewJob {
            kind: Kind::Hash,
            indicator: broken_hash(*b),
            allow_submit: false,
            path: None,
            source: None,
        })
        .collect();
    let ids: Vec<i64> = pipeline
        .store
        .enqueue(&jobs, now_millis(), 86_400_000, 2)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    pipeline.spawn_workers();
    let drained =
        tokio::time::timeout(Duration::from_secs(30), pipeline.drain(&ids, |_, _| {})).await;
    let rows: Vec<(String, String, i64, Option<String>)> =
        sqlx::query_as("SELECT indicator, state, attempt, last_error FROM jobs ORDER BY id")
            .fetch_all(
                pipeline
                    .sqlite
                    .as_deref()
                    .expect("a SQLite pipeline")
                    .read_pool(),
            )
            .await
            .unwrap();
    drained
        .unwrap_or_else(|_| panic!("every malformed reply got an outcome in time: {rows:?}"))
        .expect("nothing stopped the workers");
    let mut results = pipeline.store.results(&ids).await.unwrap();
    results.sort_by_key(|r| BROKEN.iter().position(|b| broken_hash(*b) == r.indicator));
    pipeline.shutdown().await;
    let mut outcomes = Vec::new();
    for (b, r) in BROKEN.iter().zip(&results) {
        assert_eq!(r.indicator, broken_hash(*b));
        let v = r
            .verdict
            .as_ref()
            .unwrap_or_else(|| panic!("{b:?}: no verdict"));
        let why = v.error.clone().or(v.note.clone()).unwrap_or_default();
        outcomes.push(format!("{b:?} -> {} ({why})", v.verdict.as_str()));
        match b {
            Broken::Fine => assert_eq!(v.verdict.as_str(), "malicious"),
            // Polled until `give_up_after_secs`, then `pending` (re-checked later), not forever.
            Broken::NeverAnalysed => {
                assert_eq!(v.verdict.as_str(), "pending", "{v:?}");
                assert!(why.contains("looked up again later"), "{why}");
            }
            // Refused unread (memory stays bounded), then failed once attempts ran out.
            Broken::Huge => {
                assert_eq!(v.verdict.as_str(), "failed", "{v:?}");
                assert!(why.contains("larger than"), "{why}");
            }
            _ => {
                assert!(
                    matches!(v.verdict.as_str(), "failed" | "unknown"),
                    "{b:?} is not a verdict VirusTotal gave: {v:?}"
                );
                assert!(!why.is_empty(), "{b:?}: the outcome says why");
            }
        }
    }
    eprintln!("FIGURES malformed-replies: {outcomes:#?}");
    let pending = vtriage::scan::ScanOutcome {
        results: results
            .into_iter()
            .filter(|r| {
                r.verdict
                    .as_ref()
                    .is_some_and(|v| v.verdict.as_str() == "pending")
            })
            .collect(),
        ..Default::default()
    };
    assert_eq!(pending.results.len(), 1);
    assert_eq!(
        pending.exit_code(),
        2,
        "an analysis not finished may yet find it malicious"
    );
}

/// Waits until the simulator has answered `n` API requests (10 s at most).
async fn answered(world: &World, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while world.sim.stats().api_requests < n {
        assert!(Instant::now() < deadline, "{n} requests answered in time");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A world whose one unknown file, `content` at `name`, has been looked up, and whose upload
/// now waits for the quota's next window, `window_secs` away: the world, its pipeline (workers
/// running), the file's path and its job's id.
async fn upload_waiting_for_quota(
    window_secs: f64,
    name: &str,
    content: &[u8],
) -> (World, Arc<Pipeline>, PathBuf, Vec<i64>) {
    let mut world = World::new(World::fast_sim()).await.allow_uploads();
    world.config.quota.requests = 1;
    world.config.quota.window_secs = window_secs;
    let path = world.file(name, content);
    let pipeline = pipeline(&world).await;
    let ids = queue(&pipeline, &[file_job(&path, content)], 5).await;
    pipeline.spawn_workers();
    // The lookup spends the window's one request; the upload then waits for the next window.
    answered(&world, 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    (world, pipeline, path, ids)
}

/// A submission is marked as started only once its quota is granted: a stop while it still waits
/// for the gate (a public key's minute) leaves no interrupted upload to confirm for an hour, and
/// keeps the lookup's answer, so that the next run uploads without asking again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_an_upload_waits_for_quota_leaves_no_upload_mark() {
    let content = b"unknown to VirusTotal, waiting for quota";
    let (mut world, pipeline, _, ids) = upload_waiting_for_quota(60.0, "wait.bin", content).await;
    // Recorded before the wait: a crash now would not cost the next run its lookup either.
    let (state, step): (String, String) = sqlx::query_as("SELECT state, step FROM jobs")
        .fetch_one(pipeline.sqlite.as_deref().unwrap().read_pool())
        .await
        .unwrap();
    assert_eq!((state.as_str(), step.as_str()), ("running", "upload"));
    pipeline.shutdown().await;
    let (state, submitted_at): (String, Option<i64>) =
        sqlx::query_as("SELECT state, submitted_at FROM jobs")
            .fetch_one(pipeline.sqlite.as_deref().unwrap().read_pool())
            .await
            .unwrap();
    assert_eq!(state, "available", "handed back for the next run");
    assert_eq!(submitted_at, None, "nothing was sent: no upload to confirm");
    assert!(world.sim.stats().uploads.is_empty());

    // The lookup's answer was kept: the next run uploads without asking again.
    let step: String = sqlx::query_scalar("SELECT step FROM jobs")
        .fetch_one(pipeline.sqlite.as_deref().unwrap().read_pool())
        .await
        .unwrap();
    assert_eq!(step, "upload");
    world.config.quota.requests = 1000;
    world.config.quota.window_secs = 1.0;
    let next = self::pipeline(&world).await;
    let results = work_through(&next, &ids).await;
    assert!(results[0].verdict.is_some(), "{results:?}");
    let stats = world.sim.stats();
    assert_eq!(stats.uploads.len(), 1, "{stats:?}");
    assert_eq!(
        stats.requests.get("GET /files/{id}"),
        Some(&1),
        "one lookup in all: {stats:?}"
    );
}

/// A file written over after it was queued: the old content's job ends at once, `unknown`, with
/// one lookup, instead of a lookup per attempt and then `failed`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_over_before_its_upload_costs_one_lookup() {
    let world = World::new(World::fast_sim()).await.allow_uploads();
    let old = b"the content that was hashed";
    let path = world.file("doc.bin", b"the content written over it since");
    let pipeline = pipeline(&world).await;
    let ids = queue(&pipeline, &[file_job(&path, old)], 5).await;
    let results = work_through(&pipeline, &ids).await;
    assert_unknown_because(&results[0], "changed");
    let stats = world.sim.stats();
    assert_eq!(stats.api_requests, 1, "{stats:?}");
    assert!(stats.uploads.is_empty());
}

/// The path of a file whose upload waits for quota is replaced by a symlink to a secret: what
/// was hashed is uploaded, from the file opened before the wait, never what the path now names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_replaced_while_the_upload_waits_sends_what_was_hashed() {
    let content = b"the sample that was dropped";
    let (world, pipeline, path, ids) =
        upload_waiting_for_quota(2.0, "drop/sample.bin", content).await;
    let secret = world.file("secret.txt", b"TOP SECRET, outside the drop directory");
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&secret, &path).unwrap();
    let results = work_through(&pipeline, &ids).await;
    let uploads: Vec<String> = world.sim.stats().uploads.into_keys().collect();
    assert_eq!(uploads, [sha256(content)], "{results:?}");
}

/// A file written to in place while its upload waits for quota: it is not sent (its length and
/// modification time changed), so VirusTotal never holds other content under the job's hash (a
/// verdict for the wrong file). One written while it streams is cut off before its end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_while_it_is_uploaded_is_not_uploaded() {
    let content = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";
    let (world, pipeline, path, ids) =
        upload_waiting_for_quota(2.0, "drop/invoice.exe", content).await;
    std::fs::write(&path, b"benign text written over the same file, in place").unwrap();
    let results = work_through(&pipeline, &ids).await;
    assert_unknown_because(&results[0], "changed after it was hashed");
    assert!(world.sim.stats().uploads.is_empty());
}

/// A process whose policy forbids uploads (the default) never uploads, even a file another
/// run queued with `--upload`. It does look such files up: one VirusTotal knows gets its
/// verdict, and an unknown one waits, with the lookup's answer kept, for a process that may
/// upload it, which then uploads it without looking it up again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_may_not_upload_looks_up_what_others_queued_to_upload() {
    let known = b"known to VirusTotal, queued to upload too";
    let mut world = World::new(SimConfig {
        known: Known {
            files: vec![KnownFile::clean_content(known)],
            ..Known::default()
        },
        ..World::fast_sim()
    })
    .await;
    let unknown = b"queued by an interrupted scan --upload";
    let jobs = [
        file_job(&world.file("cases/doc.bin", unknown), unknown),
        file_job(&world.file("cases/known.bin", known), known),
    ];
    let strict = pipeline(&world).await;
    let ids = queue(&strict, &jobs, 5).await;
    strict.spawn_workers();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let counts = strict.store.counts().await.unwrap();
        let known_done = strict.store.results(&ids[1..]).await.unwrap()[0]
            .verdict
            .is_some();
        if known_done && counts.remaining_by_step.get("upload") == Some(&1) {
            break;
        }
        assert!(Instant::now() < deadline, "{counts:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    strict.shutdown().await;
    let stats = world.sim.stats();
    assert!(stats.uploads.is_empty(), "{stats:?}");
    assert_eq!(stats.api_requests, 2, "a lookup each: {stats:?}");
    world.config.upload.files = UploadPolicy::Unknown;
    let results = work_through(&*pipeline(&world).await, &ids[..1]).await;
    let verdict = results[0].verdict.as_ref().unwrap();
    assert_eq!(verdict.verdict.as_str(), "clean", "{verdict:?}");
    let stats = world.sim.stats();
    assert_eq!(stats.uploads.len(), 1, "{stats:?}");
    assert_eq!(stats.requests.get("GET /files/{id}"), Some(&2), "{stats:?}");
}

/// An upload VirusTotal answers with a 429 (another client sharing the key spent the quota)
/// surely did not arrive: the next claim uploads again, without spending lookups to confirm an
/// interrupted upload for `give_up_after_secs` (30 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_refused_with_a_429_is_sent_again_without_lookups_to_confirm_it() {
    let mut world = World::new(SimConfig {
        quota: Some(SimQuota {
            requests: 1,
            window: Duration::from_secs(2),
            daily: None,
            monthly: None,
        }),
        ..World::fast_sim()
    })
    .await
    .allow_uploads();
    world.config.virustotal.retries = 0;
    let content = b"refused once with a 429";
    let path = world.file("cases/doc.bin", content);
    let pipeline = pipeline(&world).await;
    let ids = queue(&pipeline, &[file_job(&path, content)], 5).await;
    let results = work_through(&pipeline, &ids).await;
    let verdict = results[0].verdict.as_ref().unwrap();
    assert_eq!(verdict.verdict.as_str(), "clean", "{verdict:?}");
    let stats = world.sim.stats();
    assert!(stats.quota_rejections > 0, "{stats:?}");
    assert_eq!(stats.uploads.values().sum::<u64>(), 1, "{stats:?}");
    assert_eq!(stats.requests.get("GET /files/{id}"), Some(&1), "{stats:?}");
}

/// A job whose request waits for quota is not charged an attempt meanwhile: a process killed
/// during the wait (a daemon in a crash loop under a tight quota) leaves it as it was, rather
/// than `failed` after `max_attempts` crashes. It is charged again once its request may go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_not_charged_an_attempt_while_it_waits_for_quota() {
    let mut world = World::new(World::fast_sim()).await;
    (world.config.quota.requests, world.config.quota.window_secs) = (1, 3.0);
    world.config.daemon.workers = 2;
    let pipeline = pipeline(&world).await;
    let hash = |c: char| NewJob {
        kind: Kind::Hash,
        indicator: c.to_string().repeat(64),
        allow_submit: false,
        path: None,
        source: None,
    };
    let ids = queue(&pipeline, &[hash('a'), hash('b')], 5).await;
    pipeline.spawn_workers();
    let sqlite = pipeline.sqlite.clone().expect("a SQLite pipeline");
    let running = || async {
        sqlx::query_as::<_, (i64, i64)>("SELECT id, attempt FROM jobs WHERE state = 'running'")
            .fetch_all(sqlite.read_pool())
            .await
            .unwrap()
    };
    // One lookup is granted at once; the other waits for the next window, uncharged.
    let deadline = Instant::now() + Duration::from_secs(2);
    let waiting = loop {
        let jobs = running().await;
        if jobs.len() == 1 && jobs[0].1 == 0 {
            break jobs[0].0;
        }
        assert!(
            Instant::now() < deadline,
            "no job waits uncharged: {jobs:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::timeout(Duration::from_secs(20), pipeline.drain(&ids, |_, _| {}))
        .await
        .expect("finished in time")
        .unwrap();
    pipeline.shutdown().await;
    let attempt: i64 = sqlx::query_scalar("SELECT attempt FROM jobs WHERE id = ?1")
        .bind(waiting)
        .fetch_one(sqlite.read_pool())
        .await
        .unwrap();
    assert_eq!(attempt, 1, "charged once its request went");
}

/// Of two copies, one written over with a file over the upload limit: the intact one is
/// uploaded, rather than the job ending "over the limit".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_intact_copy_is_uploaded_when_another_was_written_over() {
    let mut world = World::new(World::fast_sim()).await.allow_uploads();
    world.config.upload.max_file_size = 1000;
    let content = b"the content both copies had";
    let intact = world.file("b/doc.bin", content);
    let overwritten = world.file("a/doc.bin", &[b'x'; 5000]);
    let pipeline = pipeline(&world).await;
    let jobs = [file_job(&overwritten, content), file_job(&intact, content)];
    let ids = queue(&pipeline, &jobs, 5).await;
    let results = work_through(&pipeline, &ids[..1]).await;
    let verdict = results[0].verdict.as_ref().unwrap();
    assert_ne!(verdict.verdict.as_str(), "unknown", "{verdict:?}");
    assert_eq!(world.sim.stats().uploads.len(), 1);
}
