//! `vtriage run` end to end: the watcher, the exact quota, shutdown and restart.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{World, exits_within, send, sha256};
use tokio_util::sync::CancellationToken;
use vtriage::daemon::{self, Watched};
use vtriage::demo::EICAR;
use vtriage::pipeline::Pipeline;
use vtriage::sim::{SimConfig, SimQuota};
use vtriage::store::Store;

/// A daemon running in this process.
struct Daemon {
    pipeline: Arc<Pipeline>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Daemon {
    async fn start(world: &World, watched: Watched) -> Daemon {
        let pipeline = Arc::new(
            Pipeline::open(world.config.clone(), CancellationToken::new())
                .await
                .unwrap(),
        );
        let p = pipeline.clone();
        let task = tokio::spawn(async move { daemon::run(&p, &watched).await });
        Daemon { pipeline, task }
    }

    /// A daemon watching a new drop directory, `drop` in the world's directory.
    async fn on_new_drop_directory(world: &World) -> (Daemon, PathBuf) {
        let drop = world.dir.path().join("drop");
        std::fs::create_dir(&drop).unwrap();
        let watched = Watched {
            drop: Some(drop.clone()),
            lists: None,
        };
        (Daemon::start(world, watched).await, drop)
    }

    async fn stop(self) {
        self.pipeline.stop.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Waits until `n` verdicts are stored, or panics after `limit`.
async fn wait_for_verdicts(store: &dyn Store, n: u64, limit: Duration) {
    let started = Instant::now();
    loop {
        let counts = store.counts().await.unwrap();
        let done: u64 = counts.by_verdict.values().sum();
        let unfinished: u64 = ["available", "running"]
            .iter()
            .filter_map(|s| counts.by_state.get(*s))
            .flat_map(|k| k.values())
            .sum();
        if done >= n && unfinished == 0 {
            return;
        }
        assert!(
            started.elapsed() < limit,
            "only {done} of {n} verdicts after {limit:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn watch_fast(world: &mut World) {
    world.config.watch.settle_ms = 300;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_written_in_pieces_is_triaged_once_complete() {
    let mut world = World::new(World::fast_sim()).await;
    watch_fast(&mut world);
    world.config.watch.settle_ms = 700;
    let (daemon, drop) = Daemon::on_new_drop_directory(&world).await;
    let path = drop.join("slow.bin");
    let chunks: [&[u8]; 3] = [b"first part, ", b"second part, ", b"last part"];
    for chunk in chunks {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(chunk).unwrap();
        f.sync_all().unwrap();
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    wait_for_verdicts(&*daemon.pipeline.store, 1, Duration::from_secs(10)).await;
    let whole = sha256(b"first part, second part, last part");
    let counts = daemon.pipeline.store.counts().await.unwrap();
    assert_eq!(
        counts.by_state["completed"]["file"], 1,
        "one job: the complete file only"
    );
    assert_eq!(world.sim.stats().api_requests, 1);
    let results = daemon.pipeline.store.results(&[1]).await.unwrap();
    assert_eq!(results[0].indicator, whole);
    daemon.stop().await;
}

/// Runs a daemon watching `watched` until it has `verdicts` verdicts, then `change`s the files,
/// restarts it and runs it until it has one more, and long enough for an unchanged file to settle
/// and be read again, were it read. Returns the rows of `sql` before and after the restart.
async fn across_a_restart<T>(
    world: &World,
    watched: Watched,
    verdicts: u64,
    sql: &str,
    change: impl FnOnce(),
) -> (Vec<T>, Vec<T>)
where
    T: for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow> + Send + Unpin,
{
    let rows = async || -> Vec<T> {
        let db = sqlx::SqlitePool::connect(&format!("sqlite:{}", world.config.db))
            .await
            .unwrap();
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(&db)
            .await
            .unwrap()
    };
    let daemon = Daemon::start(world, watched.clone()).await;
    wait_for_verdicts(&*daemon.pipeline.store, verdicts, Duration::from_secs(10)).await;
    daemon.stop().await;
    let before = rows().await;
    change();
    let daemon = Daemon::start(world, watched).await;
    wait_for_verdicts(
        &*daemon.pipeline.store,
        verdicts + 1,
        Duration::from_secs(10),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    daemon.stop().await;
    (before, rows().await)
}

/// A restarted daemon does not read the files it queued before again while they are unchanged
/// (their sighting keeps its time); a file changed meanwhile is queued as new content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_only_the_files_that_changed() {
    let mut world = World::new(World::fast_sim()).await;
    watch_fast(&mut world);
    let drop = world.dir.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join("same.bin"), "same").unwrap();
    std::fs::write(drop.join("changed.bin"), "before").unwrap();
    let watched = Watched {
        drop: Some(drop.clone()),
        lists: None,
    };
    let (before, after): (Vec<(String, i64)>, _) = across_a_restart(
        &world,
        watched,
        2,
        "SELECT path, seen_at FROM file_paths ORDER BY path, seen_at",
        || std::fs::write(drop.join("changed.bin"), "after, longer").unwrap(),
    )
    .await;
    assert_eq!(before.len(), 2);
    let of = |name: &str| -> Vec<(String, i64)> {
        let name = drop.join(name).display().to_string();
        after.iter().filter(|(p, _)| *p == name).cloned().collect()
    };
    assert_eq!(of("same.bin"), before[1..], "same.bin was queued again");
    assert_eq!(
        of("changed.bin").len(),
        2,
        "the new content is a second job"
    );
    assert_eq!(world.sim.stats().api_requests, 3);
}

/// A restarted daemon does not read the lists it queued before again while they are unchanged;
/// a list changed meanwhile is read again, and what it adds is queued.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_reads_only_the_lists_that_changed() {
    let mut world = World::new(World::fast_sim()).await;
    watch_fast(&mut world);
    let lists = world.dir.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    let (a, b, c) = ("a".repeat(64), "b".repeat(64), "c".repeat(64));
    std::fs::write(lists.join("same.txt"), format!("{a}\n")).unwrap();
    std::fs::write(lists.join("changed.txt"), format!("{b}\n")).unwrap();
    let watched = Watched {
        drop: None,
        lists: Some(lists.clone()),
    };
    let (before, after): (Vec<(String, i64)>, _) = across_a_restart(
        &world,
        watched,
        2,
        "SELECT path, read_at FROM lists_read ORDER BY path",
        || std::fs::write(lists.join("changed.txt"), format!("{b}\n{c}\n")).unwrap(),
    )
    .await;
    assert_eq!(before.len(), 2, "{before:?}");
    let of = |reads: &[(String, i64)], name: &str| -> i64 {
        let name = lists.join(name).display().to_string();
        reads.iter().find(|(p, _)| *p == name).unwrap().1
    };
    assert_eq!(
        of(&after, "same.txt"),
        of(&before, "same.txt"),
        "same.txt was read again"
    );
    assert!(of(&after, "changed.txt") > of(&before, "changed.txt"));
    assert_eq!(world.sim.stats().api_requests, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_files_dropped_at_once_are_all_triaged() {
    let mut world = World::new(World::fast_sim()).await;
    watch_fast(&mut world);
    world.config.daemon.workers = 8;
    let (daemon, drop) = Daemon::on_new_drop_directory(&world).await;
    for i in 0..1000 {
        std::fs::write(drop.join(format!("f{i:04}.bin")), format!("sample {i}")).unwrap();
    }
    wait_for_verdicts(&*daemon.pipeline.store, 1000, Duration::from_secs(60)).await;
    assert_eq!(
        world.sim.stats().api_requests,
        1000,
        "one lookup per distinct file"
    );
    daemon.stop().await;
}

/// A cleanup job or a remount removes the drop directory and makes it again: what is dropped
/// into the new one is triaged, by the same daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_directory_made_again_is_watched_again() {
    let mut world = World::new(World::fast_sim()).await;
    watch_fast(&mut world);
    let (daemon, drop) = Daemon::on_new_drop_directory(&world).await;
    std::fs::write(drop.join("first.bin"), "first").unwrap();
    wait_for_verdicts(&*daemon.pipeline.store, 1, Duration::from_secs(10)).await;
    std::fs::remove_dir_all(&drop).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join("second.bin"), "second").unwrap();
    wait_for_verdicts(&*daemon.pipeline.store, 2, Duration::from_secs(10)).await;
    assert!(!daemon.task.is_finished());
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_is_exact_sixty_indicators_at_four_per_second() {
    let quota = SimQuota {
        requests: 4,
        window: Duration::from_secs(1),
        daily: None,
        monthly: None,
    };
    let mut world = World::new(SimConfig {
        quota: Some(quota),
        ..World::fast_sim()
    })
    .await;
    watch_fast(&mut world);
    world.config.quota.requests = 4;
    world.config.quota.window_secs = 1.0;
    let lists = world.dir.path().join("lists");
    std::fs::create_dir(&lists).unwrap();
    let hashes: String = (0..60)
        .map(|i| format!("{}\n", sha256(format!("ioc {i}").as_bytes())))
        .collect();
    let daemon = Daemon::start(
        &world,
        Watched {
            drop: None,
            lists: Some(lists.clone()),
        },
    )
    .await;
    std::fs::write(lists.join("hashes.txt"), hashes).unwrap();
    // Wait for the list to be queued, then time the work itself.
    while daemon
        .pipeline
        .store
        .counts()
        .await
        .unwrap()
        .by_state
        .is_empty()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    wait_for_verdicts(&*daemon.pipeline.store, 60, Duration::from_secs(40)).await;
    let took = started.elapsed();
    let stats = world.sim.stats();
    assert_eq!(stats.quota_rejections, 0, "never a 429: {stats:?}");
    assert_eq!(stats.api_requests, 60);
    assert!(stats.max_in_window <= 4);
    // 60 requests at 4 per second: the last batch goes 14 s after the first.
    let minimum = Duration::from_secs(14);
    assert!(
        took <= minimum.mul_f64(1.2),
        "took {took:?}, minimum {minimum:?}"
    );
    daemon.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_then_restart_finishes_everything_without_a_second_upload() {
    let sim_config = SimConfig {
        analysis_delay: (Duration::from_millis(500), Duration::from_millis(1500)),
        ..SimConfig::default()
    };
    let world = World::new(sim_config).await.allow_uploads();
    let drop = world.dir.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    for i in 0..20 {
        std::fs::write(
            drop.join(format!("u{i}.bin")),
            format!("unknown content {i}"),
        )
        .unwrap();
    }
    std::fs::write(drop.join("eicar.com"), EICAR).unwrap();
    let run = |grace: &str| {
        vtriage(&world)
            .args(["run", "--drop"])
            .arg(&drop)
            .env("VTRIAGE_UPLOAD_FILES", "unknown")
            .env("VTRIAGE_QUOTA_REQUESTS", "1000")
            .env("VTRIAGE_QUOTA_WINDOW_SECS", "1")
            .env("VTRIAGE_POLL_FIRST_DELAY_SECS", "0.3")
            .env("VTRIAGE_POLL_MAX_INTERVAL_SECS", "0.5")
            .env("VTRIAGE_DAEMON_SHUTDOWN_GRACE_SECS", grace)
            .env("VTRIAGE_DAEMON_RETRY_DELAY_SECS", "0.1")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut first = run("0.2");
    // Mid-run: some uploads done, analyses in flight.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    send("TERM", &first);
    let status = exits_within(&mut first, Duration::from_secs(10), "the daemon").await;
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit");
    let mut second = run("1");
    let store = vtriage::store::sqlite::SqliteStore::open(Path::new(&world.config.db))
        .await
        .unwrap();
    wait_for_verdicts(&store, 21, Duration::from_secs(60)).await;
    send("TERM", &second);
    exits_within(&mut second, Duration::from_secs(10), "the daemon").await;
    let stats = world.sim.stats();
    assert_eq!(
        stats.uploads.len(),
        21,
        "every unknown content uploaded: {stats:?}"
    );
    assert!(
        stats.uploads.values().all(|&n| n == 1),
        "none twice: {:?}",
        stats.uploads
    );
    let counts = store.counts().await.unwrap();
    assert_eq!(counts.by_verdict.get("malicious"), Some(&1));
    assert_eq!(counts.by_verdict.get("clean"), Some(&20));
}

/// The `vtriage` binary on this world's database and simulator, files settling in 200 ms.
fn vtriage(world: &World) -> std::process::Command {
    let mut cmd = world.command();
    cmd.env("VTRIAGE_WATCH_SETTLE_MS", "200");
    cmd
}

/// A drop directory given as a relative path is stored absolute: the paths are read again for
/// uploads and after a restart, whatever directory the daemon is started from. One that does not
/// exist is refused, by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relative_drop_directory_is_stored_absolute() {
    let world = World::new(World::fast_sim()).await;
    let drop = world.dir.path().join("drop");
    std::fs::create_dir(&drop).unwrap();
    std::fs::write(drop.join("a.bin"), "relative").unwrap();
    let run = |dir: &str| {
        vtriage(&world)
            .args(["run", "--drop", dir])
            .current_dir(world.dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let missing = run("nowhere").wait_with_output().unwrap();
    assert_eq!(missing.status.code(), Some(2), "an error");
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(said.contains("nowhere"), "{said}");

    let mut daemon = run("./drop");
    let store = vtriage::store::sqlite::SqliteStore::open(Path::new(&world.config.db))
        .await
        .unwrap();
    wait_for_verdicts(&store, 1, Duration::from_secs(20)).await;
    send("TERM", &daemon);
    exits_within(&mut daemon, Duration::from_secs(10), "the daemon").await;
    let paths: Vec<String> = sqlx::query_scalar("SELECT path FROM file_paths")
        .fetch_all(store.read_pool())
        .await
        .unwrap();
    let absolute = std::fs::canonicalize(&drop).unwrap().join("a.bin");
    assert_eq!(paths, [absolute.display().to_string()]);
}

/// What the workers learned of analysis times survives a restart: the next process polls from
/// there rather than from `[poll] first_delay_secs`. A process that learned nothing saves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_poll_delays_learned_survive_a_restart() {
    let world = World::new(World::fast_sim()).await;
    let configured = world.pipeline().await;
    let first = configured.worker.poll_clock.first_delay();
    configured.shutdown().await;
    let saved = configured.store.poll_estimates().await.unwrap();
    assert_eq!(saved, None, "nothing learned, nothing saved");

    let learning = world.pipeline().await;
    let clock = &learning.worker.poll_clock;
    assert_eq!(clock.first_delay(), first, "nothing was learned before");
    // Every analysis is done long after the configured first poll.
    for _ in 0..50 {
        let at = clock.first_delay();
        clock.observe(0, at, false);
        clock.observe(1, at * 3, true);
    }
    let learned = clock.first_delay();
    assert!(learned > first * 2, "{learned} ms against {first} ms");
    learning.shutdown().await;

    let resumed = world.pipeline().await;
    assert_eq!(resumed.worker.poll_clock.first_delay(), learned);
    // `status` says it.
    let status = vtriage::status::gather(&*resumed.store, &world.config)
        .await
        .unwrap();
    let delays = status.poll_delays.expect("learned delays");
    assert_eq!((delays.first_secs * 1000.0) as i64, learned);
    assert!(
        vtriage::status::render(&status).contains("polls: the first about"),
        "{}",
        vtriage::status::render(&status)
    );
    resumed.shutdown().await;
}
