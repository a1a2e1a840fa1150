//! Bad input never stops the work: a drop directory full of things that are not regular files
//! or that misbehave, and IOC lists of garbage, all watched by one daemon. Every regular file
//! and every valid indicator gets a verdict; the rest is skipped; the daemon keeps running.
//!
//! Scale (so that it runs in seconds on 2 cores): 1,000 small files instead of 100,000, a file
//! that grows for 2 s instead of a minute, a 16 MiB line instead of 2 GB, nesting 64 deep.

mod common;

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{World, sha256};
use tokio_util::sync::CancellationToken;
use vtriage::daemon::{self, Watched};
use vtriage::pipeline::Pipeline;
use vtriage::store::{JobResult, Store};

const SMALL_FILES: usize = 1000;
const DEPTH: usize = 64;

/// Every job with its verdict, by reading ids until none is left.
async fn all_results(store: &dyn Store) -> Vec<JobResult> {
    let total: u64 = store
        .counts()
        .await
        .unwrap()
        .by_state
        .values()
        .flat_map(|k| k.values())
        .sum();
    let ids: Vec<i64> = (1..=total as i64 + 50).collect();
    store.results(&ids).await.unwrap()
}

fn mkfifo(path: &Path) {
    let ok = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok, "mkfifo");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_files_and_bad_lists_each_get_an_outcome_and_the_daemon_keeps_running() {
    let mut world = World::new(World::fast_sim()).await;
    world.config.watch.settle_ms = 300;
    world.config.daemon.workers = 8;
    let drop = world.dir.path().join("drop");
    let lists = world.dir.path().join("lists");
    std::fs::create_dir_all(&drop).unwrap();
    std::fs::create_dir_all(&lists).unwrap();
    let pipeline = Arc::new(
        Pipeline::open(world.config.clone(), CancellationToken::new())
            .await
            .unwrap(),
    );
    let p = pipeline.clone();
    let watched = Watched {
        drop: Some(drop.clone()),
        lists: Some(lists.clone()),
    };
    let task = tokio::spawn(async move { daemon::run(&p, &watched).await });
    let started = Instant::now();

    // Things that are not regular files: none may block or stop the daemon.
    mkfifo(&drop.join("a.fifo"));
    let _socket = std::os::unix::net::UnixListener::bind(drop.join("a.sock")).unwrap();
    std::os::unix::fs::symlink(drop.join("loop2"), drop.join("loop1")).unwrap();
    std::os::unix::fs::symlink(drop.join("loop1"), drop.join("loop2")).unwrap();
    std::os::unix::fs::symlink(&drop, drop.join("self")).unwrap();
    std::os::unix::fs::symlink(drop.join("nowhere"), drop.join("dangling")).unwrap();
    // Regular files that are unusual.
    std::fs::write(drop.join("empty"), b"").unwrap();
    let sparse = std::fs::File::create(drop.join("sparse.bin")).unwrap();
    sparse.set_len(700 * 1024 * 1024).unwrap();
    drop_file(sparse);
    let weird = drop.join(OsStr::from_bytes(b"not-utf8-\xff\xfe.bin"));
    std::fs::write(&weird, b"a file whose name is not UTF-8").unwrap();
    let mut deep = drop.clone();
    for i in 0..DEPTH {
        deep.push(format!("d{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("deep.txt"), b"at the bottom").unwrap();
    let many = drop.join("many");
    std::fs::create_dir_all(&many).unwrap();
    for i in 0..SMALL_FILES {
        std::fs::write(many.join(format!("s{i}")), format!("small {i}")).unwrap();
    }
    // A file that disappears while (or before) it is hashed.
    let vanishing = std::fs::File::create(drop.join("vanishing.bin")).unwrap();
    vanishing.set_len(300 * 1024 * 1024).unwrap();
    drop_file(vanishing);

    // IOC lists: garbage, NUL bytes, encoding errors, a huge line; valid indicators among them.
    let wanted: Vec<String> = (0..6)
        .map(|i| sha256(format!("wanted {i}").as_bytes()))
        .collect();
    let garbage: Vec<u8> = (0..1_000_000u32)
        .map(|i| 0x80 | (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(lists.join("garbage.bin"), &garbage).unwrap();
    std::fs::write(
        lists.join("nul.txt"),
        [
            &b"\0\0\0\n"[..],
            wanted[0].as_bytes(),
            b"\nevil\0.example.com\0\n\0",
            b"\n",
            wanted[1].as_bytes(),
            b"\n",
        ]
        .concat(),
    )
    .unwrap();
    std::fs::write(
        lists.join("encoding.txt"),
        [
            &b"\xff\xfe\xc3\x28 broken \xe2\x82\n"[..],
            wanted[2].as_bytes(),
            b"\n\xed\xa0\x80 surrogate\n\xf8\x88\x80\x80\x80 too long\n",
            wanted[3].as_bytes(),
            b"\n",
        ]
        .concat(),
    )
    .unwrap();
    let mut huge = std::fs::File::create(lists.join("huge-line.txt")).unwrap();
    huge.write_all(wanted[4].as_bytes()).unwrap();
    huge.write_all(b"\n").unwrap();
    huge.write_all(&vec![b'a'; 16 * 1024 * 1024]).unwrap();
    huge.write_all(b"\n").unwrap();
    huge.write_all(wanted[5].as_bytes()).unwrap();
    huge.write_all(b"\n").unwrap();
    drop_file(huge);

    // A file that keeps growing for 2 s (in steps shorter than the settle time).
    let growing = drop.join("growing.log");
    let mut content = Vec::new();
    for i in 0..20 {
        let line = format!("line {i}\n");
        content.extend_from_slice(line.as_bytes());
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&growing)
            .unwrap();
        f.write_all(line.as_bytes()).unwrap();
        if i == 2 {
            let _ = std::fs::remove_file(drop.join("vanishing.bin"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Wait until every file and wanted indicator has a verdict and nothing is left to do.
    let expect_files = [
        sha256(b""),
        sha256(b"a file whose name is not UTF-8"),
        sha256(b"at the bottom"),
        sha256(&content),
    ];
    let (results, elapsed) = loop {
        let results = all_results(&*pipeline.store).await;
        let done = |sha: &String| {
            results
                .iter()
                .any(|r| &r.indicator == sha && r.verdict.is_some())
        };
        let unfinished = results
            .iter()
            .filter(|r| r.state == "available" || r.state == "running")
            .count();
        let small_done = results
            .iter()
            .filter(|r| r.paths.iter().any(|p| p.contains("/many/")) && r.verdict.is_some())
            .count();
        let sparse_done = results
            .iter()
            .any(|r| r.paths.iter().any(|p| p.ends_with("sparse.bin")) && r.verdict.is_some());
        if expect_files.iter().all(done)
            && wanted.iter().all(done)
            && small_done == SMALL_FILES
            && sparse_done
            && unfinished == 0
        {
            break (results, started.elapsed());
        }
        assert!(!task.is_finished(), "the daemon stopped");
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "not done: {small_done} small files, sparse {sparse_done}, {unfinished} unfinished, \
             {} jobs",
            results.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!task.is_finished(), "the daemon is still running");
    pipeline.stop.cancel();
    task.await.unwrap().unwrap();

    let path_of = |suffix: &str| {
        results
            .iter()
            .filter(|r| r.paths.iter().any(|p| p.ends_with(suffix)))
            .count()
    };
    let special = ["a.fifo", "a.sock", "loop1", "loop2", "dangling"]
        .iter()
        .map(|s| path_of(s))
        .sum::<usize>();
    let growing_jobs = path_of("growing.log");
    let vanished = path_of("vanishing.bin");
    let failed = results
        .iter()
        .filter(|r| {
            r.verdict
                .as_ref()
                .is_some_and(|v| v.verdict.as_str() == "failed")
        })
        .count();
    eprintln!(
        "FIGURES bad-input: {} jobs in {:.1} s: {SMALL_FILES} small files, nesting {DEPTH}, \
         700 MiB sparse file, 16 MiB line, 1 MB of binary garbage; special files queued \
         {special}, growing file jobs {growing_jobs}, vanished file jobs {vanished}, failed \
         {failed}",
        results.len(),
        elapsed.as_secs_f64()
    );
    assert_eq!(
        special, 0,
        "FIFOs, sockets and symlink loops are not triaged"
    );
    assert_eq!(growing_jobs, 1, "a growing file is triaged once, complete");
    assert!(vanished <= 1);
    assert_eq!(failed, 0, "nothing failed");
    // Nothing from the garbage: every job is a file, a wanted hash, or the NUL list's domain.
    let strays: Vec<&str> = results
        .iter()
        .filter(|r| r.paths.is_empty() && !wanted.contains(&r.indicator))
        .map(|r| r.indicator.as_str())
        .collect();
    assert!(
        strays.iter().all(|s| s.contains("example.com")),
        "garbage became indicators: {strays:?}"
    );
}

fn drop_file(f: std::fs::File) {
    drop(f);
}

/// Regression test for the first crash found by fuzzing (`fuzz/` target `ioc_parser`): a JSON
/// list starting with an invalid byte (decoded as U+FFFD, three bytes) panicked when the error
/// message cut the text in the middle of that character.
#[test]
fn a_json_list_starting_with_an_invalid_byte_is_rejected_without_a_panic() {
    use vtriage::ingest::{self, Format, Options};
    for format in [Format::Stix, Format::Misp, Format::Json] {
        let mut found = 0;
        let summary = ingest::parse_reader(
            "n.md",
            &b"\xff\x01\x00"[..],
            Some(format),
            &Options::default(),
            |_| found += 1,
        )
        .unwrap();
        assert_eq!(found, 0, "{format:?}: {summary:?}");
    }
    assert!(vtriage::ingest::json::parse_json("\u{fffd}\u{1}").is_err());
}

/// Regression test for the second crash found by fuzzing (`ioc_parser`): a token with a
/// multi-byte character right before `://` panicked when the URL's start was cut one byte after
/// that character's first byte.
#[test]
fn a_multi_byte_character_before_a_scheme_separator_does_not_panic() {
    use vtriage::ingest::{self, Format, Options};
    let body = b"`\n`\xbd://a\xef\xbf\xbd\xef`\n`\n";
    for format in [None, Some(Format::Text), Some(Format::Markdown)] {
        ingest::parse_reader("list.txt", &body[..], format, &Options::default(), |_| {}).unwrap();
    }
    let mut urls = Vec::new();
    ingest::parse_reader(
        "list.txt",
        "see\u{e9}://x and caf\u{e9}http://evil.example.com/a\n".as_bytes(),
        Some(Format::Text),
        &Options::default(),
        |f| urls.push(f.indicator.to_string()),
    )
    .unwrap();
    assert_eq!(
        urls,
        ["http://evil.example.com/a"],
        "the URL starts at its scheme"
    );
}
