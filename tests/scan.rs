//! `vtriage scan` end to end against the in-process simulator; costs are read from the
//! simulator's own request counters.

mod common;

use std::time::{Duration, Instant};

use common::{World, sha256};
use vtriage::demo::EICAR;
use vtriage::sim::{Known, KnownFile, SimConfig, SimQuota};
use vtriage::verdict::Verdict;

fn verdict_of(outcome: &vtriage::scan::ScanOutcome, sha: &str) -> Verdict {
    let r = outcome
        .results
        .iter()
        .find(|r| r.indicator == sha)
        .expect("a result for the file");
    r.verdict.as_ref().expect("a verdict").verdict
}

#[tokio::test]
async fn a_known_file_costs_one_request_and_no_upload() {
    let content = b"a file the simulator knows";
    let known = Known {
        files: vec![KnownFile::clean_content(content)],
        ..Known::default()
    };
    let world = World::new(SimConfig {
        known,
        ..World::fast_sim()
    })
    .await
    .allow_uploads();
    let path = world.file("known.bin", content);
    let outcome = world.scan(&[&path], true).await;
    assert_eq!(verdict_of(&outcome, &sha256(content)), Verdict::Clean);
    let stats = world.sim.stats();
    assert_eq!(stats.api_requests, 1, "{stats:?}");
    assert_eq!(stats.requests.get("GET /files/{id}"), Some(&1));
    assert!(stats.uploads.is_empty());
    assert_eq!(outcome.exit_code(), 0);
}

/// Where a file was seen is stored as its absolute path, whatever spelling found it (`scan` ran
/// from elsewhere, `./`, `..`): one file, one location, as the daemon stores them.
#[tokio::test]
async fn a_file_is_stored_under_its_absolute_path_however_it_was_named() {
    let world = World::new(World::fast_sim()).await;
    let file = world.file("sub/a.txt", b"one file, two spellings");
    let dir = world.files_dir();
    let dotted = dir
        .join("sub")
        .join("..")
        .join(".")
        .join("sub")
        .join("a.txt");
    let outcome = world.scan(&[&dotted, &dir.join("sub")], false).await;
    let canonical = std::fs::canonicalize(&file).unwrap();
    assert_eq!(outcome.results.len(), 1);
    assert_eq!(outcome.results[0].paths, [canonical.display().to_string()]);
}

/// A path that cannot be read is listed and the rest is triaged; the exit status says that
/// something was left without a verdict, so a script never takes it for "nothing malicious".
#[tokio::test]
async fn an_unreadable_path_is_reported_and_the_exit_status_is_2() {
    let world = World::new(World::fast_sim()).await;
    let readable = world.file("readable.txt", b"readable content");
    let missing = world.dir.path().join("missing.txt");
    let outcome = world.scan(&[&readable, &missing], false).await;
    assert_eq!(outcome.results.len(), 1, "the readable file is triaged");
    assert_eq!(outcome.errors.len(), 1);
    assert!(outcome.errors[0].path.contains("missing.txt"));
    assert_eq!(outcome.exit_code(), 2);
}

/// A dropped file's name (and VirusTotal's label) could rewrite the verdict table on an analyst's
/// terminal: ESC moves the cursor, CR returns to the line's start. Tables show them escaped;
/// JSON keeps them exact.
#[tokio::test]
async fn control_characters_in_names_and_labels_are_escaped_in_tables_only() {
    let content = b"a sample with a name that rewrites the terminal";
    let known = Known {
        files: vec![KnownFile {
            stats: vtriage::sim::EngineStats::EICAR,
            label: Some("trojan\x1b]0;owned\x07".into()),
            ..KnownFile::clean_content(content)
        }],
        ..Known::default()
    };
    let world = World::new(SimConfig {
        known,
        ..World::fast_sim()
    })
    .await;
    let name = "invoice.pdf\x1b[1A\x1b[2K\rclean      benign.txt";
    let path = world.file(name, content);
    let outcome = world.scan(&[&path], false).await;
    assert_eq!(verdict_of(&outcome, &sha256(content)), Verdict::Malicious);
    let escaped = "invoice.pdf\\x1b[1A\\x1b[2K\\rclean      benign.txt";

    let table = vtriage::scan::summary_table(&outcome, "file contents");
    assert!(!table.contains(['\x1b', '\r', '\x07']), "{table:?}");
    assert!(table.contains(escaped), "{table}");
    assert!(table.contains("trojan\\x1b]0;owned\\x07"), "{table}");

    let store = vtriage::pipeline::open_store(&world.config).await.unwrap();
    let report = |format| {
        let store = store.clone();
        async move {
            let mut out = Vec::new();
            let filter = vtriage::report::Filter::default();
            vtriage::report::write(vtriage::report::records(&*store, &filter), format, &mut out)
                .await
                .unwrap();
            String::from_utf8(out).unwrap()
        }
    };
    let table = report(vtriage::report::Format::Table).await;
    assert!(!table.contains(['\x1b', '\r', '\x07']), "{table:?}");
    assert!(table.contains("trojan\\x1b]0;owned\\x07"), "{table}");
    // The path is cut in the middle to fit; its end shows the escapes.
    assert!(table.contains("\\rclean      benign.txt\n"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&report(vtriage::report::Format::Jsonl).await).unwrap();
    assert!(json["paths"][0].as_str().unwrap().ends_with(name), "{json}");
    assert_eq!(json["threat_label"], "trojan\x1b]0;owned\x07");
}

/// A FIFO or a device named on the command line is listed as not triaged (exit status 2), not
/// silently ignored; one met inside a folder is listed as skipped and never opened.
#[tokio::test]
async fn a_fifo_or_device_given_is_an_error_and_one_in_a_folder_is_skipped() {
    let world = World::new(World::fast_sim()).await;
    world.file("folder/readable.txt", b"readable content");
    let folder = world.files_dir().join("folder");
    let fifo = world.dir.path().join("given.fifo");
    for path in [&fifo, &folder.join("inside.fifo")] {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(made.success());
    }
    let outcome = world
        .scan(&[&fifo, std::path::Path::new("/dev/null"), &folder], false)
        .await;
    assert_eq!(outcome.results.len(), 1, "the regular file is triaged");
    assert_eq!(outcome.errors.len(), 2, "{:?}", outcome.errors);
    assert_eq!(outcome.skipped.len(), 1, "{:?}", outcome.skipped);
    assert_eq!(outcome.exit_code(), 2);
    let table = vtriage::scan::summary_table(&outcome, "file contents");
    assert!(table.contains("error      /dev/null\n"), "{table}");
    assert!(
        table.contains("given.fifo\n           not a regular file"),
        "{table}"
    );
    assert!(table.contains("skipped    "), "{table}");
    assert!(
        table.contains("1 file contents: 1 unknown; 2 unreadable; 1 skipped"),
        "{table}"
    );
}

#[tokio::test]
async fn an_unknown_file_is_not_uploaded_by_default() {
    let world = World::new(World::fast_sim()).await;
    let path = world.file("secret.docx", b"confidential draft");
    let outcome = world.scan(&[&path], false).await;
    let r = &outcome.results[0];
    let v = r.verdict.as_ref().unwrap();
    assert_eq!(v.verdict, Verdict::Unknown);
    assert!(
        v.note.as_deref().unwrap().contains("never"),
        "the note says why: {v:?}"
    );
    let stats = world.sim.stats();
    assert_eq!(stats.api_requests, 1);
    assert!(stats.uploads.is_empty(), "default policy never uploads");
}

#[tokio::test]
async fn with_upload_an_unknown_file_is_uploaded_once_and_polled_to_a_verdict() {
    let world = World::new(World::fast_sim()).await;
    let eicar = world.file("eicar.com", EICAR);
    let clean = world.file("clean.txt", b"nothing to see");
    let outcome = world.scan(&[&eicar, &clean], true).await;
    assert_eq!(verdict_of(&outcome, &sha256(EICAR)), Verdict::Malicious);
    assert_eq!(
        verdict_of(&outcome, &sha256(b"nothing to see")),
        Verdict::Clean
    );
    assert_eq!(outcome.exit_code(), 1, "something malicious");
    let stats = world.sim.stats();
    assert_eq!(stats.uploads.get(&sha256(EICAR)), Some(&1));
    assert_eq!(stats.uploads.get(&sha256(b"nothing to see")), Some(&1));
    assert_eq!(
        stats.requests.get("GET /files/{id}"),
        Some(&2),
        "one lookup each"
    );
    assert!(
        stats
            .requests
            .get("GET /analyses/{id}")
            .copied()
            .unwrap_or(0)
            >= 2,
        "polled: {stats:?}"
    );
}

/// A name that is not UTF-8 (a legacy encoding, as archives of samples often have) is kept
/// escaped, `\xNN`, not lossily: the file can still be found to be uploaded.
#[cfg(unix)]
#[tokio::test]
async fn a_file_whose_name_is_not_utf8_can_still_be_uploaded() {
    use std::os::unix::ffi::OsStrExt;
    let world = World::new(World::fast_sim()).await;
    let name = std::ffi::OsStr::from_bytes(b"\xcf\xf0\xe8\xea\xe0\xe7.exe");
    let path = world.dir.path().join(name);
    std::fs::write(&path, EICAR).unwrap();
    let outcome = world.scan(&[&path], true).await;
    assert_eq!(verdict_of(&outcome, &sha256(EICAR)), Verdict::Malicious);
    assert_eq!(world.sim.stats().uploads.get(&sha256(EICAR)), Some(&1));
    let shown = &outcome.results[0].paths[0];
    assert!(
        shown.ends_with("/\\xcf\\xf0\\xe8\\xea\\xe0\\xe7.exe"),
        "{shown}"
    );
}

#[tokio::test]
async fn a_file_over_32_mb_goes_through_an_upload_url() {
    let world = World::new(World::fast_sim()).await;
    let mut big = vec![0u8; 33 * 1024 * 1024];
    big[..16].copy_from_slice(b"big file content");
    let path = world.file("big.iso", &big);
    let outcome = world.scan(&[&path], true).await;
    assert_eq!(verdict_of(&outcome, &sha256(&big)), Verdict::Clean);
    let stats = world.sim.stats();
    assert_eq!(
        stats.requests.get("GET /files/upload_url"),
        Some(&1),
        "{stats:?}"
    );
    assert_eq!(
        stats.requests.get("POST /files"),
        None,
        "not the direct endpoint"
    );
    assert_eq!(stats.uploads.get(&sha256(&big)), Some(&1));
}

#[tokio::test]
async fn a_file_over_the_size_cap_is_looked_up_but_never_uploaded() {
    let mut world = World::new(World::fast_sim()).await;
    world.config.upload.max_file_size = 1000;
    let content = vec![7u8; 2000];
    let path = world.file("large.bin", &content);
    let outcome = world.scan(&[&path], true).await;
    let v = outcome.results[0].verdict.clone().unwrap();
    assert_eq!(v.verdict, Verdict::Unknown);
    assert!(v.note.unwrap().contains("limit"), "a clear note");
    let stats = world.sim.stats();
    assert_eq!(stats.api_requests, 1);
    assert!(stats.uploads.is_empty());
}

#[tokio::test]
async fn identical_files_cost_one_lookup() {
    let world = World::new(World::fast_sim()).await;
    for name in ["a/x.exe", "b/y.exe", "c/z.exe"] {
        world.file(name, b"same content everywhere");
    }
    let outcome = world.scan(&[&world.files_dir()], false).await;
    assert_eq!(outcome.results.len(), 1);
    assert_eq!(
        outcome.results[0].paths.len(),
        3,
        "all three paths are recorded"
    );
    assert_eq!(world.sim.stats().api_requests, 1);
}

#[tokio::test]
async fn a_stored_verdict_is_reused_without_a_request() {
    let world = World::new(World::fast_sim()).await.allow_uploads();
    let path = world.file("eicar.com", EICAR);
    world.scan(&[&path], true).await;
    let spent = world.sim.stats().api_requests;
    let again = world.scan(&[&path], true).await;
    assert_eq!(verdict_of(&again, &sha256(EICAR)), Verdict::Malicious);
    assert_eq!(
        world.sim.stats().api_requests,
        spent,
        "the second scan cost nothing"
    );
}

#[tokio::test]
async fn a_429_makes_it_wait_and_finish() {
    // The simulator allows 3 requests per 300 ms, but vtriage is configured for far more (as
    // when another client shares the key): it gets 429s, pauses, and still finishes.
    let quota = SimQuota {
        requests: 3,
        window: Duration::from_millis(300),
        daily: None,
        monthly: None,
    };
    let mut world = World::new(SimConfig {
        quota: Some(quota),
        ..World::fast_sim()
    })
    .await;
    world.config.quota.window_secs = 0.3;
    let paths: Vec<_> = (0..8)
        .map(|i| world.file(&format!("f{i}"), format!("content {i}").as_bytes()))
        .collect();
    let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let outcome = world.scan(&refs, false).await;
    assert!(outcome.interrupted.is_none());
    assert_eq!(outcome.results.len(), 8);
    assert!(
        outcome
            .results
            .iter()
            .all(|r| r.verdict.as_ref().unwrap().verdict == Verdict::Unknown)
    );
    assert!(
        world.sim.stats().quota_rejections > 0,
        "the simulator did push back"
    );
}

#[tokio::test]
async fn the_configured_quota_is_never_exceeded() {
    let quota = SimQuota {
        requests: 4,
        window: Duration::from_millis(250),
        daily: None,
        monthly: None,
    };
    let mut world = World::new(SimConfig {
        quota: Some(quota),
        ..World::fast_sim()
    })
    .await;
    world.config.quota.requests = 4;
    world.config.quota.window_secs = 0.25;
    let paths: Vec<_> = (0..12)
        .map(|i| world.file(&format!("f{i}"), format!("content {i}").as_bytes()))
        .collect();
    let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    world.scan(&refs, false).await;
    let stats = world.sim.stats();
    assert_eq!(stats.quota_rejections, 0, "{stats:?}");
    assert_eq!(stats.api_requests, 12);
    assert!(stats.max_in_window <= 4);
}

#[tokio::test]
async fn a_wrong_key_stops_the_run_quickly_without_retrying() {
    let mut world = World::new(World::fast_sim()).await;
    world.config.virustotal.api_key = Some(vtriage::config::ApiKey::new("wrong-key"));
    world.config.daemon.workers = 1;
    let paths: Vec<_> = (0..5)
        .map(|i| world.file(&format!("f{i}"), format!("content {i}").as_bytes()))
        .collect();
    let refs: Vec<&std::path::Path> = paths.iter().map(|p| p.as_path()).collect();
    let started = Instant::now();
    let outcome = world.scan(&refs, false).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(outcome.exit_code(), 2);
    let why = outcome.interrupted.unwrap();
    assert!(why.contains("key"), "{why}");
    assert!(
        why.starts_with("VirusTotal rejected the API key (WrongCredentialsError"),
        "said once, with VirusTotal's reason: {why}"
    );
    assert!(
        !why.contains("wrong-key"),
        "the key itself is never printed"
    );
    assert_eq!(world.sim.stats().auth_failures, 1, "no retry");
}

#[test]
fn the_demo_runs_offline_and_finds_the_eicar_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vtriage"))
        .arg("demo")
        .current_dir(dir.path())
        .env_remove("VT_API_KEY")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit 1: something malicious\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("malicious"), "{stdout}");
    assert!(stdout.contains("eicar.com"), "{stdout}");
}

/// A world whose simulator knows `content` as malicious, with a threat label.
async fn world_knowing_malicious(content: &[u8]) -> World {
    let known = Known {
        files: vec![KnownFile {
            stats: vtriage::sim::EngineStats::EICAR,
            label: Some("virus.eicar/test".into()),
            ..KnownFile::clean_content(content)
        }],
        ..Known::default()
    };
    World::new(SimConfig {
        known,
        ..World::fast_sim()
    })
    .await
}

/// Scripts read `scan --format jsonl|csv` as they read `report`: the same records, field for
/// field and column for column, `sources` included, for the same files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_prints_the_records_report_prints() {
    let world = world_knowing_malicious(b"known bad").await;
    world.file("bad.exe", b"known bad");
    world.file("new.bin", b"nobody knows this one");
    let dir = world.files_dir().display().to_string();

    let (code, jsonl, err) = world.run(&["scan", "--format", "jsonl", &dir]);
    assert_eq!(code, Some(1), "something malicious: {err}");
    let scanned = common::json_lines(&jsonl);
    assert_eq!(scanned.len(), 2, "{jsonl}");
    assert_eq!(scanned, world.report_records());
    let bad = scanned
        .iter()
        .find(|r| r["indicator"] == sha256(b"known bad"))
        .expect("the malicious file");
    assert_eq!(bad["verdict"], "malicious");
    assert_eq!(bad["threat_label"], "virus.eicar/test");
    assert_eq!(bad["sources"], serde_json::json!([]), "a file has paths");
    assert!(bad["paths"][0].as_str().unwrap().ends_with("/bad.exe"));

    // Scanned again, every verdict is fresh: the same records, now as CSV.
    let (code, csv, err) = world.run(&["scan", "--format", "csv", &dir]);
    assert_eq!(code, Some(1), "{err}");
    let (_, report_csv, _) = world.run(&["report", "--format", "csv"]);
    assert_eq!(csv, report_csv);
    assert!(csv.starts_with("kind,indicator,verdict,state,"), "{csv}");
}

/// `scan --json` keeps what only a scan has (files it could not read, an interruption) beside
/// the records `report` prints; `--format jsonl` prints the records alone and names the
/// unreadable file on standard error. Either way the exit status says it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scan_json_keeps_its_errors_beside_the_records_report_prints() {
    let world = world_knowing_malicious(b"known bad").await;
    let file = world.file("bad.exe", b"known bad").display().to_string();
    let missing = world.dir.path().join("missing.txt").display().to_string();

    let (code, json, err) = world.run(&["scan", "--json", &file, &missing]);
    assert_eq!(code, Some(2), "a path could not be read: {err}");
    let document: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        document["results"],
        serde_json::json!(world.report_records())
    );
    assert_eq!(document["results"][0]["verdict"], "malicious");
    assert_eq!(document["errors"][0]["path"], missing.as_str());
    assert_eq!(document["skipped"], serde_json::json!([]));
    assert_eq!(document["interrupted"], serde_json::Value::Null);

    let (code, jsonl, err) = world.run(&["scan", "--format", "jsonl", &file, &missing]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(common::json_lines(&jsonl), world.report_records());
    assert!(err.contains(&format!("vtriage: {missing}: ")), "{err}");

    // Nothing scanned, nothing printed: not every record in the database.
    let (code, jsonl, err) = world.run(&["scan", "--format", "jsonl", &missing]);
    assert_eq!(code, Some(2), "{err}");
    assert_eq!(jsonl, "");
}
