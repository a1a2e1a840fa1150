//! Secrets and policy, through the real binary: a canary API key never reaches a log line (trace
//! included), an error message, the database files, a report or the simulator's state; with
//! uploads and submissions set to "never", nothing is uploaded or submitted; a config file that
//! others can read and that holds a key gets a warning.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use vtriage::config::{ApiKey, Config};
use vtriage::sim::{self, Known, KnownFile, KnownUrl, SimConfig, SimHandle};
use vtriage::store::Store;
use vtriage::store::sqlite::SqliteStore;

/// A key that must never be seen outside the process's memory and the `x-apikey` header.
const CANARY: &str = "canary-5ecr3t-7f3a9c1e5b2d4e6f8a0b";

struct Setup {
    sim: SimHandle,
    dir: tempfile::TempDir,
    drop: PathBuf,
    lists: PathBuf,
    items: u64,
}

impl Setup {
    /// Unknown and known files in a drop directory; known, unknown and new hashes and URLs in
    /// a list.
    async fn new() -> Setup {
        let known = Known {
            files: (0..4)
                .map(|i| KnownFile::clean_content(format!("known {i}").as_bytes()))
                .collect(),
            urls: (0..4)
                .map(|i| KnownUrl::clean(&format!("http://known{i}.example.org/")))
                .collect(),
            ..Known::default()
        };
        let sim = sim::spawn(SimConfig {
            api_keys: vec![CANARY.into()],
            known,
            analysis_delay: (Duration::from_millis(100), Duration::from_millis(300)),
            ..SimConfig::default()
        })
        .await
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let drop = dir.path().join("drop");
        let lists = dir.path().join("lists");
        std::fs::create_dir_all(&drop).unwrap();
        std::fs::create_dir_all(&lists).unwrap();
        for i in 0..4 {
            std::fs::write(drop.join(format!("u{i}")), format!("unknown {i}")).unwrap();
            std::fs::write(drop.join(format!("k{i}")), format!("known {i}")).unwrap();
        }
        let mut list = String::new();
        for i in 0..4 {
            list += &format!("http://known{i}.example.org/\nhttp://new{i}.example.net/x\n");
            list += &format!("{}\n", sha256(format!("nobody has {i}").as_bytes()));
        }
        std::fs::write(lists.join("iocs.txt"), list).unwrap();
        Setup {
            sim,
            dir,
            drop,
            lists,
            items: 20,
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.path().join("vtriage.db")
    }

    fn command(&self, upload: &str) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vtriage"));
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("VT_API_KEY", CANARY)
            .env("VTRIAGE_DB", self.db())
            .env("VTRIAGE_API_URL", self.sim.base_url())
            .env("VTRIAGE_UPLOAD_FILES", upload)
            .env("VTRIAGE_UPLOAD_URLS", upload)
            .env("VTRIAGE_QUOTA_REQUESTS", "10000")
            .env("VTRIAGE_QUOTA_WINDOW_SECS", "1")
            .env("VTRIAGE_QUOTA_DAILY", "1000000")
            .env("VTRIAGE_WATCH_SETTLE_MS", "100")
            .env("VTRIAGE_POLL_FIRST_DELAY_SECS", "0.2")
            .env("VTRIAGE_POLL_MAX_INTERVAL_SECS", "0.3")
            .env("VTRIAGE_DAEMON_WORKERS", "4")
            .current_dir(self.dir.path());
        cmd
    }

    fn run_daemon(&self, upload: &str, log: &Path, rust_log: &str) -> Child {
        self.command(upload)
            .args(["-vv", "run", "--drop"])
            .arg(&self.drop)
            .arg("--lists")
            .arg(&self.lists)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap()
    }

    async fn wait_finished(&self, daemon: &mut Child, log: &Path) -> vtriage::store::QueueCounts {
        let store = SqliteStore::open(&self.db()).await.unwrap();
        let started = Instant::now();
        loop {
            let counts = store.counts().await.unwrap();
            let total: u64 = counts.by_state.values().flat_map(|k| k.values()).sum();
            let done: u64 = counts.by_verdict.values().sum();
            let unfinished: u64 = ["available", "running"]
                .iter()
                .filter_map(|s| counts.by_state.get(*s))
                .flat_map(|k| k.values())
                .sum();
            if total == self.items && done == self.items && unfinished == 0 {
                store.close().await;
                return counts;
            }
            assert!(
                started.elapsed() < Duration::from_secs(40),
                "not finished: {counts:?}"
            );
            if let Some(status) = daemon.try_wait().unwrap() {
                panic!(
                    "the daemon stopped ({status}): {}",
                    std::fs::read_to_string(log).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

fn sha256(content: &[u8]) -> String {
    use sha2::Digest;
    vtriage::hashing::hex(&sha2::Sha256::digest(content))
}

fn terminate(child: &mut Child) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    child.wait().unwrap();
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Whether `haystack` holds the canary, or a recognisable piece of it.
fn leaks(haystack: &[u8]) -> bool {
    let needle = CANARY.as_bytes();
    let piece = &needle[..16];
    haystack.windows(piece.len()).any(|w| w == piece)
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// The bytes of the database and its WAL and shared-memory files, whichever exist.
fn database_bytes(db: &Path) -> Vec<(String, Vec<u8>)> {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let path = PathBuf::from(format!("{}{suffix}", db.display()));
            std::fs::read(&path)
                .ok()
                .map(|b| (path.display().to_string(), b))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_key_appears_in_no_log_error_database_report_or_simulator_state() {
    let setup = Setup::new().await;
    let log = setup.dir.path().join("trace.log");
    let mut daemon = setup.run_daemon("unknown", &log, "trace");
    let counts = setup.wait_finished(&mut daemon, &log).await;
    // The database files while the daemon still has them open (the WAL is live), then after.
    let mut scanned: Vec<(String, Vec<u8>)> = database_bytes(&setup.db());
    terminate(&mut daemon);
    scanned.extend(database_bytes(&setup.db()));
    let trace = std::fs::read(&log).unwrap();
    scanned.push(("daemon stderr at trace level".into(), trace.clone()));

    // Every other command that prints, with the key accepted ...
    let report = setup
        .command("unknown")
        .args(["report", "--format", "json"])
        .output()
        .unwrap();
    assert!(report.status.success(), "{}", output_text(&report));
    scanned.push(("report --format json".into(), output_text(&report).into()));
    let status = setup
        .command("unknown")
        .args(["-vv", "status"])
        .output()
        .unwrap();
    scanned.push(("status -vv".into(), output_text(&status).into()));
    let raw = setup
        .command("unknown")
        .args(["-vv", "vt", "url", "http://known0.example.org/"])
        .output()
        .unwrap();
    scanned.push(("vt url -vv".into(), output_text(&raw).into()));

    // ... and refused: the error messages of a rejected key.
    setup.sim.revoke_key(CANARY);
    let refused = setup
        .command("never")
        .args(["-vv", "lookup", &sha256(b"something new")])
        .output()
        .unwrap();
    let refused_text = output_text(&refused);
    assert!(!refused.status.success(), "{refused_text}");
    assert!(
        refused_text.contains("API key"),
        "the refusal is explained: {refused_text}"
    );
    scanned.push(("lookup with a refused key".into(), refused_text.into()));
    let wrong_daemon_log = setup.dir.path().join("refused.log");
    let mut refused_daemon = setup.run_daemon("unknown", &wrong_daemon_log, "trace");
    std::fs::write(setup.drop.join("late"), "dropped after the revocation").unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(status) = refused_daemon.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    if exited.is_err() {
        refused_daemon.kill().unwrap();
        refused_daemon.wait().unwrap();
        panic!("the daemon kept running with a refused key");
    }
    scanned.push((
        "daemon stderr with a refused key".into(),
        std::fs::read(&wrong_daemon_log).unwrap(),
    ));

    // The simulator's stored state, as any client can read it.
    let stats = reqwest::get(format!("http://{}/_sim/stats", setup.sim.addr()))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    scanned.push(("simulator /_sim/stats".into(), stats.to_vec()));

    // In-process: Debug and Display of everything that holds the key.
    let mut config = Config::default();
    config.virustotal.api_key = Some(ApiKey::new(CANARY));
    // What a panic message carrying the configuration (or an error built from it) shows.
    let debug = format!("{config:?} {:?}", ApiKey::new(CANARY));
    assert!(debug.contains("[redacted]"), "{debug}");
    scanned.push(("Debug of a Config and an ApiKey".into(), debug.into()));

    let bytes: usize = scanned.iter().map(|(_, b)| b.len()).sum();
    let lines = trace.iter().filter(|&&b| b == b'\n').count();
    let leaked: Vec<&str> = scanned
        .iter()
        .filter(|(_, b)| leaks(b))
        .map(|(what, _)| what.as_str())
        .collect();
    eprintln!(
        "FIGURES canary: {} items ({:?}), {} places scanned, {bytes} bytes, {lines} trace log \
         lines, leaks {}",
        setup.items,
        counts.by_verdict,
        scanned.len(),
        leaked.len()
    );
    assert!(lines > 100, "the trace log is really at trace level");
    assert!(leaked.is_empty(), "the canary leaked into {leaked:?}");
    // The test can see a leak: the key is in the process environment, as a control.
    assert!(leaks(format!("VT_API_KEY={CANARY}").as_bytes()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_uploads_and_submissions_never_nothing_is_uploaded_or_submitted() {
    let setup = Setup::new().await;
    let log = setup.dir.path().join("never.log");
    let mut daemon = setup.run_daemon("never", &log, "warn");
    let counts = setup.wait_finished(&mut daemon, &log).await;
    terminate(&mut daemon);
    let log = std::fs::read_to_string(&log).unwrap();
    // The one-shot commands too: `scan` without --upload, `lookup`, `ingest --wait`.
    let scan = setup
        .command("never")
        .arg("scan")
        .arg(&setup.drop)
        .output()
        .unwrap();
    assert_ne!(scan.status.code(), Some(2), "{}", output_text(&scan));
    let lookup = setup
        .command("never")
        .args([
            "lookup",
            "http://another.example.net/y",
            &sha256(b"one more"),
        ])
        .output()
        .unwrap();
    assert_ne!(lookup.status.code(), Some(2), "{}", output_text(&lookup));
    let stats = setup.sim.stats();
    eprintln!(
        "FIGURES never-policy: {} items ({:?}), uploads {}, URL submissions {}, requests {:?}",
        setup.items,
        counts.by_verdict,
        stats.uploads.len(),
        stats.url_submissions.len(),
        stats.requests
    );
    assert_eq!(counts.by_verdict.get("unknown"), Some(&12), "{counts:?}");
    assert!(!log.contains("uploading"), "{log}");
    assert!(stats.uploads.is_empty(), "{:?}", stats.uploads);
    assert!(
        stats.url_submissions.is_empty(),
        "{:?}",
        stats.url_submissions
    );
    assert_eq!(stats.requests.get("POST /files"), None);
    assert_eq!(stats.requests.get("POST /urls"), None);
    assert_eq!(stats.requests.get("GET /files/upload_url"), None);
}

#[test]
fn a_config_file_with_a_key_readable_by_others_gets_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("vtriage.toml");
    std::fs::write(
        &config,
        format!("db = \"x.db\"\n[virustotal]\napi_key = \"{CANARY}\"\n"),
    )
    .unwrap();
    let status = |mode: u32| {
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_vtriage"))
            .env_remove("RUST_LOG")
            .env_remove("VT_API_KEY")
            .arg("--config")
            .arg(&config)
            .arg("status")
            .current_dir(dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let readable = status(0o644);
    let group = status(0o640);
    let private = status(0o600);
    eprintln!("FIGURES config-permissions: 0644 -> {readable:?}, 0600 -> {private:?}");
    assert!(readable.contains("readable by other users"), "{readable}");
    assert!(group.contains("readable by other users"), "{group}");
    assert!(!private.contains("readable by other users"), "{private}");
    for text in [&readable, &group, &private] {
        assert!(!leaks(text.as_bytes()), "the warning names no key");
    }
}

/// A `vtriage.toml` in the working directory (inside a folder being triaged) configures nothing:
/// it could turn uploads on or send the key elsewhere. The user's own file, or one named, does.
#[test]
fn a_config_file_in_the_working_directory_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("vtriage.toml"), "db = \"from-cwd.db\"\n").unwrap();
    let home = tempfile::tempdir().unwrap();
    let status = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_vtriage"))
            .env_remove("RUST_LOG")
            .env_remove("VTRIAGE_DB")
            .env_remove("VTRIAGE_CONFIG")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", home.path())
            .args(args)
            .arg("status")
            .current_dir(dir.path())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let implicit = status(&[]);
    assert!(implicit.contains("vtriage.toml in the working directory is not read"));
    let users_db = home.path().join(".local/share/vtriage/vtriage.db");
    let users_db = format!("no database at {}", users_db.display());
    assert!(implicit.contains(&users_db), "{implicit}");
    let named = status(&["--config", "vtriage.toml"]);
    assert!(named.contains("no database at from-cwd.db"), "{named}");
    assert!(!named.contains("is not read"), "{named}");
    let users = home.path().join(".config/vtriage");
    std::fs::create_dir_all(&users).unwrap();
    std::fs::write(users.join("vtriage.toml"), "db = \"from-home.db\"\n").unwrap();
    let own = status(&[]);
    assert!(own.contains("no database at from-home.db"), "{own}");
}
