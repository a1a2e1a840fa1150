//! `vtriage ingest` end to end: a messy mixed list triages every kind with one request per
//! unique indicator; `--dry-run --json` touches nothing; `status` reports the result.

mod common;

use std::process::Command;

use common::{World, sha256};
use vtriage::sim::{EngineStats, Known, KnownFile, KnownHost, KnownUrl};

fn known_world_config() -> vtriage::sim::SimConfig {
    let malicious = EngineStats {
        malicious: 12,
        undetected: 50,
        ..EngineStats::CLEAN_FILE
    };
    let known = Known {
        files: vec![
            KnownFile::clean_content(b"known one"),
            KnownFile {
                stats: malicious,
                ..KnownFile::clean_content(b"bad one")
            },
        ],
        urls: vec![KnownUrl::clean("http://shop.example.com/login")],
        domains: vec![KnownHost {
            id: "evil.example.net".into(),
            stats: Some(malicious),
        }],
        ips: vec![KnownHost {
            id: "8.8.8.8".into(),
            stats: Some(EngineStats::CLEAN_FILE),
        }],
    };
    vtriage::sim::SimConfig {
        known,
        ..World::fast_sim()
    }
}

fn vtriage(world: &World) -> Command {
    let mut cmd = world.command();
    cmd.env("VTRIAGE_QUOTA_REQUESTS", "1000")
        .env("VTRIAGE_QUOTA_WINDOW_SECS", "1")
        .current_dir(world.dir.path());
    cmd
}

/// A list in the style analysts paste around: defanged, duplicated, with prose and noise.
fn messy_list() -> String {
    let md5_of_known = {
        use md5::Digest;
        vtriage::hashing::hex(&md5::Md5::digest(b"known one"))
    };
    format!(
        "# IOCs from the incident report\n\
         {bad}  dropper.exe\n\
         {md5}\n\
         {md5_upper}\n\
         {unknown}\n\
         hxxp://shop[.]example[.]com/login\n\
         evil[.]example[.]net\n\
         8.8.8[.]8\n\
         10.0.0.5\n\
         contact: someone@example.org\n\
         evil.example.net\n",
        bad = sha256(b"bad one"),
        md5 = md5_of_known,
        md5_upper = md5_of_known.to_uppercase(),
        unknown = sha256(b"nobody has seen this"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mixed_list_triages_every_kind_with_one_request_per_unique_indicator() {
    let world = World::new(known_world_config()).await;
    let list = world.dir.path().join("iocs.txt");
    std::fs::write(&list, messy_list()).unwrap();
    let out = vtriage(&world)
        .args(["ingest", "--wait", "--json"])
        .arg(&list)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "something malicious: {stderr}");
    let results: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let results = results["results"].as_array().unwrap();
    // Unique: 3 hashes (the md5 twice in two cases is one), 1 URL, 1 domain (twice), 1 public IP.
    assert_eq!(results.len(), 6, "{results:#?}");
    let verdict = |indicator: &str| {
        results
            .iter()
            .find(|r| r["indicator"] == indicator)
            .map(|r| r["verdict"].as_str().unwrap().to_string())
    };
    assert_eq!(verdict(&sha256(b"bad one")).as_deref(), Some("malicious"));
    assert_eq!(
        verdict(&sha256(b"nobody has seen this")).as_deref(),
        Some("unknown")
    );
    assert_eq!(
        verdict("http://shop.example.com/login").as_deref(),
        Some("clean")
    );
    assert_eq!(verdict("evil.example.net").as_deref(), Some("malicious"));
    assert_eq!(verdict("8.8.8.8").as_deref(), Some("clean"));
    let stats = world.sim.stats();
    assert_eq!(
        stats.api_requests, 6,
        "one request per unique indicator: {stats:?}"
    );
    // The process copied its write-ahead log back into the database before it ended.
    let wal = std::path::PathBuf::from(format!("{}-wal", world.config.db));
    let wal_bytes = std::fs::metadata(&wal).map_or(0, |m| m.len());
    assert_eq!(wal_bytes, 0, "{} left behind", wal.display());
    assert!(
        stats.uploads.is_empty() && stats.url_submissions.is_empty(),
        "nothing submitted by default"
    );
    assert!(
        stderr.contains("1 private_ip") || stderr.contains("private"),
        "the private IP is reported as skipped: {stderr}"
    );

    // Ingesting the same list again costs nothing: every verdict is fresh.
    let again = vtriage(&world)
        .args(["ingest", "--wait"])
        .arg(&list)
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(world.sim.stats().api_requests, 6);

    // status reads the same database.
    let status = vtriage(&world).args(["status", "--json"]).output().unwrap();
    assert!(status.status.success());
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["remaining"], 0);
    assert_eq!(status["finished"], 6);
    assert_eq!(status["queue"]["by_verdict"]["malicious"], 2);
    assert_eq!(status["quota"]["today"], 6);
}

/// `ingest --wait --json` prints, beside what only it has, the records `report` prints: the
/// same fields and values, with the list and line each indicator came from in `sources`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_wait_prints_the_records_report_prints() {
    let world = World::new(known_world_config()).await;
    let list = world.dir.path().join("feed.txt");
    std::fs::write(&list, "# feed\nevil[.]example[.]net\n8.8.8.8\n").unwrap();
    let list = list.display().to_string();
    let (code, json, err) = world.run(&["ingest", "--wait", "--json", &list]);
    assert_eq!(code, Some(1), "something malicious: {err}");
    let document: serde_json::Value = serde_json::from_str(&json).unwrap();
    let records = world.report_records();
    assert_eq!(document["results"], serde_json::json!(records));
    assert_eq!(document["interrupted"], serde_json::Value::Null);
    let sources: Vec<(&str, &serde_json::Value)> = records
        .iter()
        .map(|r| (r["indicator"].as_str().unwrap(), &r["sources"]))
        .collect();
    assert_eq!(
        sources,
        [
            (
                "evil.example.net",
                &serde_json::json!([{"source": list, "line": 2}])
            ),
            ("8.8.8.8", &serde_json::json!([{"source": list, "line": 3}])),
        ]
    );
    assert_eq!(records[0]["verdict"], "malicious");
}

#[tokio::test]
async fn a_dry_run_prints_what_would_be_queued_and_touches_nothing() {
    let world = World::new(World::fast_sim()).await;
    let list = world.dir.path().join("iocs.txt");
    std::fs::write(&list, messy_list()).unwrap();
    let out = vtriage(&world)
        .args(["ingest", "--dry-run", "--json"])
        .arg(&list)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 6);
    let url = lines.iter().find(|l| l["type"] == "url").unwrap();
    assert_eq!(url["value"], "http://shop.example.com/login");
    assert_eq!(url["source"], format!("{}:6", list.display()));
    assert!(lines.iter().any(|l| l["type"] == "md5"));
    assert!(
        lines
            .iter()
            .any(|l| l["type"] == "ipv4" && l["value"] == "8.8.8.8")
    );
    assert_eq!(world.sim.stats().api_requests, 0);
    assert!(
        !std::path::Path::new(&world.config.db).exists(),
        "no database was even created"
    );
}

#[tokio::test]
async fn an_unreadable_list_does_not_stop_the_others() {
    let world = World::new(World::fast_sim()).await;
    let good = world.dir.path().join("good.txt");
    std::fs::write(&good, format!("{}\n", sha256(b"x"))).unwrap();
    let missing = world.dir.path().join("missing.txt");
    let out = vtriage(&world)
        .arg("ingest")
        .arg(&missing)
        .arg(&good)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("missing.txt"), "names the file: {stderr}");
    assert!(stderr.contains("queued 1 new"), "{stderr}");
}

/// A key without limits (`quota.unlimited`): the configured limits (here one request a minute,
/// which would hold the six requests for five minutes) are not enforced, every request is still
/// counted for `status` by the time the process ends, and the backlog is estimated at the last
/// minute's pace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unlimited_key_is_not_held_by_the_limits_and_its_requests_are_counted() {
    let world = World::new(known_world_config()).await;
    let list = world.dir.path().join("iocs.txt");
    std::fs::write(&list, messy_list()).unwrap();
    let unlimited = |cmd: &mut Command| {
        cmd.env("VTRIAGE_QUOTA_UNLIMITED", "true")
            .env("VTRIAGE_QUOTA_REQUESTS", "1")
            .env("VTRIAGE_QUOTA_WINDOW_SECS", "60");
    };
    let mut ingest = vtriage(&world);
    unlimited(&mut ingest);
    let out = ingest
        .args(["ingest", "--wait"])
        .arg(&list)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "something malicious: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(world.sim.stats().api_requests, 6);

    // Twelve more queued and not worked: at the last minute's pace (six verdicts), two minutes.
    let more = world.dir.path().join("more.txt");
    let hashes: Vec<String> = (0..12)
        .map(|i| sha256(format!("more {i}").as_bytes()))
        .collect();
    std::fs::write(&more, hashes.join("\n")).unwrap();
    let mut ingest = vtriage(&world);
    unlimited(&mut ingest);
    assert!(ingest.arg("ingest").arg(&more).status().unwrap().success());

    let mut status = vtriage(&world);
    unlimited(&mut status);
    let json = status.args(["status", "--json"]).output().unwrap();
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(json["limits"]["unlimited"], true);
    assert_eq!(json["quota"]["today"], 6);
    assert_eq!(json["quota"]["in_window"], 0);
    assert_eq!(json["verdicts_last_minute"], 6);
    assert_eq!(json["eta_secs"], 120, "12 jobs at 6 a minute");
    let mut status = vtriage(&world);
    unlimited(&mut status);
    let text = String::from_utf8(status.arg("status").output().unwrap().stdout).unwrap();
    assert!(text.contains("quota: no limits, 6 today"), "{text}");
    assert!(
        text.contains("backlog: 12 jobs, about 2 min at the last minute's pace (6 verdicts/min)"),
        "{text}"
    );
}

/// `status`, `report` and `recheck` on a database that does not exist (a mistyped `--db`) say so
/// and fail, rather than create an empty one and report nothing.
#[tokio::test]
async fn reading_commands_refuse_a_database_that_does_not_exist() {
    let world = World::new(World::fast_sim()).await;
    let missing = world.dir.path().join("typo.db");
    for command in [
        &["status"][..],
        &["report"],
        &["recheck"],
        &["recheck", "--wait"],
    ] {
        let out = vtriage(&world)
            .env("VTRIAGE_DB", &missing)
            .args(command)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{command:?}");
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(
            said.contains(&format!("no database at {}", missing.display())),
            "{command:?}: {said}"
        );
        assert!(!missing.exists(), "{command:?} created it");
    }
}

/// A database in a directory that does not exist: the error says which directory, once.
#[tokio::test]
async fn a_database_in_a_missing_directory_names_the_directory() {
    let world = World::new(World::fast_sim()).await;
    let dir = world.dir.path().join("no-such-dir");
    let out = vtriage(&world)
        .env("VTRIAGE_DB", dir.join("v.db"))
        .args(["ingest", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!("there is no directory {}", dir.display())),
        "{said}"
    );
}

/// A list the database refuses (a full disk, here a trigger standing in for one) is named, and
/// the lists after it are still queued; the exit status says one failed.
#[tokio::test]
async fn a_list_the_database_refuses_is_named_and_the_next_ones_are_queued() {
    let world = World::new(World::fast_sim()).await;
    let created = vtriage(&world)
        .args(["ingest", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(created.status.code(), Some(0));
    let db = rusqlite::Connection::open(&world.config.db).unwrap();
    db.execute_batch(
        "CREATE TRIGGER full_disk BEFORE INSERT ON jobs WHEN NEW.indicator = 'refused.example.com'
         BEGIN SELECT RAISE(ABORT, 'database or disk is full (simulated)'); END;",
    )
    .unwrap();
    let refused = world.file("refused.txt", b"refused.example.com\n");
    let next = world.file("next.txt", b"next.example.com\n");
    let out = vtriage(&world)
        .arg("ingest")
        .args([&refused, &next])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(&format!(
            "{}: the database {} refused its indicators",
            refused.display(),
            world.config.db
        )) && said.contains("(simulated)"),
        "{said}"
    );
    let queued: Vec<String> = db
        .prepare("SELECT indicator FROM jobs")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(queued, ["next.example.com"]);
}

/// A PostgreSQL server that refuses the connection is said at once (not after the pool's two
/// minutes of patience), and without the password.
#[tokio::test]
async fn a_postgresql_server_that_refuses_is_said_at_once() {
    let world = World::new(World::fast_sim()).await;
    let mut status = vtriage(&world)
        .env("VTRIAGE_DB", "postgres://vt:s3cret@127.0.0.1:1/vtriage")
        .arg("status")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended =
        common::exits_within(&mut status, std::time::Duration::from_secs(20), "status").await;
    assert_eq!(ended.code(), Some(2));
    let mut said = String::new();
    std::io::Read::read_to_string(&mut status.stderr.take().unwrap(), &mut said).unwrap();
    assert!(
        said.contains("postgres://vt:***@127.0.0.1:1/vtriage"),
        "{said}"
    );
    assert!(!said.contains("s3cret"), "{said}");
}

/// The default database's directory (`~/.local/share/vtriage`) is made, private, by the first
/// command that writes the database; a command that only reads leaves the home as it was.
#[tokio::test]
async fn the_default_database_directory_is_made_by_the_first_write_only() {
    use std::os::unix::fs::PermissionsExt;
    let world = World::new(World::fast_sim()).await;
    let home = world.dir.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let run = |args: &[&str]| {
        vtriage(&world)
            .env_remove("VTRIAGE_DB")
            .env_remove("XDG_DATA_HOME")
            .env_remove("XDG_CONFIG_HOME")
            .env("HOME", &home)
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    assert_eq!(run(&["status"]).status.code(), Some(2));
    assert!(!home.join(".local").exists(), "status made a directory");
    let out = run(&["ingest", "-"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let dir = home.join(".local/share/vtriage");
    assert!(dir.join("vtriage.db").is_file());
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert_eq!(run(&["status"]).status.code(), Some(0));
}

/// With `--log-format json`, the error that stops a command is a JSON line too, so that a log
/// shipper does not lose the one line that matters.
#[tokio::test]
async fn with_json_logs_a_fatal_error_is_a_json_line() {
    let world = World::new(World::fast_sim()).await;
    let out = vtriage(&world)
        .env("VTRIAGE_QUOTA_DAILY", "many")
        .args(["--log-format", "json", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let line: serde_json::Value = serde_json::from_slice(&out.stderr)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(line["level"], "ERROR");
    let error = line["fields"]["error"].as_str().unwrap();
    assert!(error.contains("VTRIAGE_QUOTA_DAILY"), "{error}");
}
