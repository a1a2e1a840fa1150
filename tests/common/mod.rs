//! Shared test harness: a simulator on a loopback port, a fresh database, and a configuration
//! pointing at both with time scaled down.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use vtriage::config::{ApiKey, Config, UploadPolicy};
use vtriage::pipeline::Pipeline;
use vtriage::sim::{self, SimConfig, SimHandle};

/// The key the simulator accepts in tests.
pub const KEY: &str = "test-key-0123456789";

/// A test world: the simulator, a temporary directory with the database, and a config.
pub struct World {
    pub sim: SimHandle,
    pub dir: tempfile::TempDir,
    pub config: Config,
}

/// Logs go to the test output when TEST_LOG is set.
pub fn init_logs() {
    if std::env::var_os("TEST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter("vtriage=debug")
            .with_test_writer()
            .try_init();
    }
}

impl World {
    /// A world whose simulator accepts `KEY` and answers analyses in 100-300 ms.
    pub async fn new(sim_config: SimConfig) -> World {
        init_logs();
        let sim = sim::spawn(SimConfig {
            api_keys: vec![KEY.into()],
            ..sim_config
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config {
            db: dir.path().join("vtriage.db").display().to_string(),
            ..Config::default()
        };
        config.virustotal.api_url = sim.base_url();
        config.virustotal.api_key = Some(ApiKey::new(KEY));
        config.quota.requests = 1000;
        config.quota.window_secs = 1.0;
        config.quota.daily = 100_000;
        config.poll.first_delay_secs = 0.1;
        config.poll.max_interval_secs = 0.3;
        config.poll.give_up_after_secs = 30.0;
        config.daemon.retry_delay_secs = 0.05;
        config.daemon.shutdown_grace_secs = 1.0;
        World { sim, dir, config }
    }

    /// Default simulator settings with fast analyses.
    pub fn fast_sim() -> SimConfig {
        SimConfig {
            analysis_delay: (Duration::from_millis(100), Duration::from_millis(300)),
            ..SimConfig::default()
        }
    }

    /// Writes a file under the world's directory.
    pub fn file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.dir.path().join("files").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
        path
    }

    /// The `vtriage` binary on this world's database and simulator, with the test key.
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vtriage"));
        cmd.env("VT_API_KEY", KEY)
            .env("VTRIAGE_DB", &self.config.db)
            .env("VTRIAGE_API_URL", self.sim.base_url());
        cmd
    }

    /// Runs the binary with `args`, with a quota that never makes a test wait; returns its exit
    /// status, standard output and standard error. (A test calling it needs a multi-threaded
    /// runtime: the simulator answers while this thread waits.)
    pub fn run(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = self
            .command()
            .env("VTRIAGE_QUOTA_REQUESTS", "1000")
            .env("VTRIAGE_QUOTA_WINDOW_SECS", "1")
            .args(args)
            .output()
            .unwrap();
        let text = |bytes: Vec<u8>| String::from_utf8(bytes).unwrap();
        (out.status.code(), text(out.stdout), text(out.stderr))
    }

    /// `vtriage report --format jsonl` on this world's database: every record.
    pub fn report_records(&self) -> Vec<serde_json::Value> {
        let (code, out, err) = self.run(&["report", "--format", "jsonl"]);
        assert_eq!(code, Some(0), "{err}");
        json_lines(&out)
    }

    /// The folder `file` writes into.
    pub fn files_dir(&self) -> PathBuf {
        self.dir.path().join("files")
    }

    /// Allows uploads.
    pub fn allow_uploads(mut self) -> World {
        self.config.upload.files = UploadPolicy::Unknown;
        self
    }

    /// Opens a pipeline on this world's configuration.
    pub async fn pipeline(&self) -> Pipeline {
        Pipeline::open(self.config.clone(), CancellationToken::new())
            .await
            .unwrap()
    }

    /// Runs `vtriage scan` (the library function) on `paths`, as `scan --upload` when `upload`.
    pub async fn scan(&self, paths: &[&Path], upload: bool) -> vtriage::scan::ScanOutcome {
        let mut config = self.config.clone();
        if upload {
            config.upload.files = UploadPolicy::Unknown;
        }
        let pipeline = Pipeline::open(config, CancellationToken::new())
            .await
            .unwrap();
        let paths: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
        tokio::time::timeout(
            Duration::from_secs(60),
            vtriage::scan::scan(&pipeline, &paths),
        )
        .await
        .expect("scan finished in time")
        .unwrap()
    }
}

/// The JSON objects of `text`, one a line.
pub fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect()
}

/// SHA-256 of bytes, hex.
pub fn sha256(content: &[u8]) -> String {
    use sha2::Digest;
    vtriage::hashing::hex(&sha2::Sha256::digest(content))
}

/// Waits until exactly `items` jobs exist and all are finished (completed or discarded), or
/// panics after `limit`. Returns the final counts.
pub async fn wait_all_finished(
    store: &dyn vtriage::store::Store,
    items: u64,
    limit: Duration,
) -> vtriage::store::QueueCounts {
    let started = std::time::Instant::now();
    loop {
        let counts = store.counts().await.unwrap();
        let count = |states: &[&str]| -> u64 {
            states
                .iter()
                .filter_map(|s| counts.by_state.get(*s))
                .flat_map(|k| k.values())
                .sum()
        };
        if count(&["completed", "discarded"]) == items && count(&["available", "running"]) == 0 {
            return counts;
        }
        assert!(
            started.elapsed() < limit,
            "not finished after {limit:?}: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sends `signal` (`INT`, `TERM`) to `child`.
pub fn send(signal: &str, child: &Child) {
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success(), "kill -{signal}");
}

/// Waits for `child` to exit; kills it and fails after `limit`.
pub async fn exits_within(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running {limit:?} after the signal");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `PRAGMA integrity_check` of a SQLite store: "ok" when the file is sound.
pub async fn integrity(store: &vtriage::store::sqlite::SqliteStore) -> String {
    sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(store.read_pool())
        .await
        .unwrap()
}
