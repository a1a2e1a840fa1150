//! `vtriage lookup` and `vtriage recheck` against the simulator: the freshness rule (a fresh
//! stored verdict costs no request, a stale one costs one), re-checks ask VirusTotal again, and
//! lookups print like `report`.

mod common;

use futures_util::StreamExt;
use vtriage::indicator::{Indicator, Kind};
use vtriage::lookup::{self, Recheck};
use vtriage::report::{self, Filter, Format, Record};
use vtriage::sim::{EngineStats, Known, KnownFile, KnownHost, SimConfig};
use vtriage::store::{Enqueued, NewJob, ReportQuery, now_millis};
use vtriage::verdict::Verdict;

use common::World;

const SHA: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";

async fn world() -> World {
    World::new(SimConfig {
        known: Known {
            files: vec![KnownFile {
                sha256: SHA.into(),
                md5: Some(MD5.into()),
                sha1: None,
                stats: EngineStats::EICAR,
                label: Some("virus.eicar/test".into()),
                size: Some(68),
                name: None,
            }],
            domains: vec![KnownHost {
                id: "evil.example.com".into(),
                stats: Some(EngineStats::CLEAN_URL),
            }],
            ..Known::default()
        },
        ..World::fast_sim()
    })
    .await
}

fn parse(args: &[&str]) -> Vec<Indicator> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    lookup::parse_iocs(&args, &vtriage::ingest::Options::default()).unwrap()
}

fn hits(w: &World, endpoint: &str) -> u64 {
    w.sim.stats().requests.get(endpoint).copied().unwrap_or(0)
}

/// Looks `args` up through a fresh pipeline, returns the outcome and the printed records.
async fn look(w: &World, args: &[&str]) -> (lookup::LookupOutcome, Vec<Record>) {
    let pipeline = w.pipeline().await;
    let outcome = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        lookup::lookup(&pipeline, &parse(args)),
    )
    .await
    .expect("lookup finished in time")
    .unwrap();
    let filter = Filter {
        query: ReportQuery {
            jobs: outcome.ids.clone(),
            ..ReportQuery::default()
        },
        path: None,
    };
    let records = report::records(&*pipeline.store, &filter)
        .map(|r| r.unwrap())
        .collect()
        .await;
    (outcome, records)
}

/// A content VirusTotal does not know costs one lookup whether it is asked for as a hash or as
/// a file that may not be uploaded: the stored `unknown` answers the other.
#[tokio::test]
async fn an_unknown_content_is_looked_up_once_as_a_hash_and_as_a_file() {
    let w = world().await;
    let (first, second) = (b"nobody uploaded this".as_slice(), b"nor this".as_slice());
    let (_, records) = look(&w, &[&common::sha256(first)]).await;
    assert_eq!(records[0].verdict, Some(Verdict::Unknown), "{records:?}");
    let scanned = w.scan(&[&w.file("first.bin", first)], false).await;
    let verdict = scanned.results[0].verdict.as_ref().unwrap();
    assert_eq!(verdict.verdict, Verdict::Unknown, "{verdict:?}");
    assert_eq!(hits(&w, "GET /files/{id}"), 1);
    // The other way round.
    w.scan(&[&w.file("second.bin", second)], false).await;
    let (_, records) = look(&w, &[&common::sha256(second)]).await;
    assert_eq!(records[0].verdict, Some(Verdict::Unknown), "{records:?}");
    assert_eq!(hits(&w, "GET /files/{id}"), 2);
}

#[test]
fn defanged_indicators_are_refanged_and_typos_are_refused() {
    let found = parse(&[
        "hxxp://evil[.]example[.]com/x",
        "evil[.]example[.]com",
        MD5,
        "8.8.8.8",
    ]);
    let kinds: Vec<Kind> = found.iter().map(|i| i.kind()).collect();
    assert_eq!(kinds, [Kind::Url, Kind::Domain, Kind::Hash, Kind::Ip]);
    assert_eq!(found[0].value(), "http://evil.example.com/x");
    assert_eq!(found[1].value(), "evil.example.com");

    let args: Vec<String> = vec!["evil.example.com".into(), "not-an-indicator".into()];
    let rejected = lookup::parse_iocs(&args, &vtriage::ingest::Options::default()).unwrap_err();
    assert_eq!(rejected.len(), 1);
    assert_eq!(rejected[0].arg, "not-an-indicator");
}

#[tokio::test]
async fn a_fresh_stored_verdict_costs_no_request_and_a_stale_one_costs_one() {
    let mut w = world().await;
    let (first, records) = look(&w, &[MD5]).await;
    assert_eq!(first.enqueued, [Enqueued::New]);
    assert_eq!(records[0].verdict, Some(Verdict::Malicious));
    assert_eq!(records[0].sha256.as_deref(), Some(SHA));
    assert_eq!(hits(&w, "GET /files/{id}"), 1);

    let (again, records) = look(&w, &[MD5]).await;
    assert_eq!(again.enqueued, [Enqueued::Fresh]);
    assert_eq!(records[0].verdict, Some(Verdict::Malicious));
    assert_eq!(hits(&w, "GET /files/{id}"), 1, "fresh: no request");

    // Verdicts now count as stale after a few milliseconds.
    w.config.verdict.max_age_days = 1e-9;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    let (stale, records) = look(&w, &[MD5]).await;
    assert_eq!(stale.enqueued, [Enqueued::Reopened]);
    assert_eq!(records[0].verdict, Some(Verdict::Malicious));
    assert_eq!(hits(&w, "GET /files/{id}"), 2, "stale: one request");
}

/// A file uploaded by `scan --upload` keeps that permission; a `recheck --wait` under the default
/// policy (never upload) still works it, rather than wait forever for a job it may not claim.
#[tokio::test]
async fn recheck_wait_under_a_stricter_policy_works_jobs_queued_to_upload() {
    let w = world().await;
    let file = w.file("sample.bin", b"unknown to VirusTotal, uploaded once");
    let scanned = w.scan(&[&file], true).await;
    assert_eq!(w.sim.stats().uploads.len(), 1, "{scanned:?}");
    let pipeline = w.pipeline().await;
    let selection = Recheck {
        verdicts: vec![],
        kinds: vec![Kind::File],
        older_than: now_millis() + 1,
    };
    let queued = lookup::reopen(&*pipeline.store, &selection, true)
        .await
        .unwrap();
    assert_eq!(queued.reopened, 1);
    let worked = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        lookup::work(&pipeline, &queued.ids),
    );
    assert!(
        worked
            .await
            .expect("worked, not waited for forever")
            .is_none()
    );
    assert_eq!(w.sim.stats().uploads.len(), 1, "no second upload");
}

/// A verdict is checked when VirusTotal answered, not when its job was claimed: with one request
/// a second, the second answer comes a second after the first.
#[tokio::test]
async fn a_verdict_is_dated_by_virustotal_s_answer_not_by_the_quota_wait() {
    let mut w = world().await;
    w.config.quota.requests = 1;
    let asked = now_millis();
    let (_, records) = look(&w, &[SHA, "evil.example.com"]).await;
    let mut checked: Vec<i64> = records.iter().map(|r| r.checked_at_ms.unwrap()).collect();
    checked.sort_unstable();
    assert!(checked[0] >= asked, "{checked:?}");
    assert!(
        checked[1] - checked[0] >= 900,
        "the second answer waited a second for the quota: {checked:?}"
    );
}

/// A lookup is waited for: it goes before a daemon's backlog, however long, rather than after it
/// at the quota's pace.
#[tokio::test]
async fn a_lookup_goes_before_the_backlog() {
    let mut w = world().await;
    w.config.quota.requests = 10;
    let backlog: Vec<NewJob> = (0..200)
        .map(|i| NewJob {
            kind: Kind::Hash,
            indicator: format!("{i:064x}"),
            allow_submit: false,
            path: None,
            source: None,
        })
        .collect();
    let store = w.pipeline().await.store.clone();
    store
        .enqueue(&backlog, now_millis(), i64::MAX, 5)
        .await
        .unwrap();

    let (_, records) = look(&w, &[MD5]).await;
    assert_eq!(records[0].verdict, Some(Verdict::Malicious));
    // At 10 requests a second, the backlog first would have taken 20 s and all 200 requests;
    // the margin is for a slow machine, where the lookup's turn comes as quickly.
    let spent = hits(&w, "GET /files/{id}");
    assert!(
        spent <= 100,
        "{spent} lookups before the awaited one was done"
    );
    let ids: Vec<i64> = (1..=200).collect();
    assert!(store.unfinished(&ids).await.unwrap().len() >= 100);
}

#[tokio::test]
async fn lookups_are_recorded_from_the_command_line_and_printed_like_report() {
    let w = world().await;
    let (outcome, records) =
        look(&w, &["evil[.]example[.]com", MD5, "never-seen.example.net"]).await;
    assert!(outcome.interrupted.is_none());
    assert_eq!(records.len(), 3);
    for r in &records {
        assert_eq!(
            r.sources,
            [report::SourceRef {
                source: "command line".into(),
                line: 0
            }]
        );
    }
    let verdicts: Vec<(&str, Option<Verdict>)> = records
        .iter()
        .map(|r| (r.indicator.as_str(), r.verdict))
        .collect();
    assert_eq!(
        verdicts,
        [
            ("evil.example.com", Some(Verdict::Clean)),
            (MD5, Some(Verdict::Malicious)),
            ("never-seen.example.net", Some(Verdict::Unknown)),
        ]
    );
    let mut out = Vec::new();
    let written = report::write(
        futures_util::stream::iter(records.into_iter().map(Ok)),
        Format::Table,
        &mut out,
    )
    .await
    .unwrap();
    assert_eq!(
        lookup::exit_code(false, &written),
        1,
        "something is malicious"
    );
    assert_eq!(lookup::exit_code(true, &written), 2, "interrupted");
    assert_eq!(
        lookup::exit_code(false, &report::Written::default()),
        0,
        "nothing malicious"
    );
    let pending = report::Written {
        records: 1,
        by_verdict: [("pending".to_string(), 1)].into(),
    };
    assert_eq!(
        lookup::exit_code(false, &pending),
        2,
        "an analysis not finished may yet find it malicious"
    );
}

/// The binary's `lookup --format jsonl|csv` prints what `report` prints afterwards, `sources`
/// (`command line`) included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lookup_prints_the_records_report_prints() {
    let w = world().await;
    let (code, jsonl, err) = w.run(&["lookup", "--format", "jsonl", MD5, "evil.example.com"]);
    assert_eq!(code, Some(1), "something malicious: {err}");
    let looked_up = common::json_lines(&jsonl);
    assert_eq!(looked_up, w.report_records());
    assert_eq!(looked_up.len(), 2);
    for r in &looked_up {
        assert_eq!(
            r["sources"],
            serde_json::json!([{"source": "command line", "line": 0}])
        );
    }
    assert_eq!(looked_up[0]["verdict"], "malicious");

    let (code, csv, err) = w.run(&["lookup", "--format", "csv", MD5, "evil.example.com"]);
    assert_eq!(code, Some(1), "{err}");
    assert_eq!(csv, w.run(&["report", "--format", "csv"]).1);
    // In the order given, whatever the order they were first queued in.
    let (_, jsonl, err) = w.run(&["lookup", "--format", "jsonl", "evil.example.com", MD5]);
    let looked_up = common::json_lines(&jsonl);
    assert_eq!(looked_up.len(), 2, "{err}");
    assert_eq!(
        looked_up[0]["indicator"], "evil.example.com",
        "{looked_up:?}"
    );
}

#[tokio::test]
async fn recheck_asks_virustotal_again() {
    let w = world().await;
    look(&w, &["evil.example.com", "never-seen.example.net"]).await;
    assert_eq!(hits(&w, "GET /domains/{id}"), 2);

    // Only the unknown one, and only verdicts older than now.
    let pipeline = w.pipeline().await;
    let selection = Recheck {
        verdicts: vec![Verdict::Unknown],
        kinds: vec![],
        older_than: now_millis() + 1,
    };
    let queued = lookup::reopen(&*pipeline.store, &selection, true)
        .await
        .unwrap();
    assert_eq!((queued.reopened, queued.queued_before), (1, 0));
    assert_eq!(queued.ids.len(), 1);
    assert!(lookup::work(&pipeline, &queued.ids).await.is_none());
    assert_eq!(hits(&w, "GET /domains/{id}"), 3, "one more request");

    // A plain recheck queues it (no daemon works it); `--wait` then waits for it.
    let selection = Recheck {
        older_than: now_millis() + 1,
        ..selection
    };
    let store = vtriage::pipeline::open_store(&w.config).await.unwrap();
    let plain = lookup::reopen(&*store, &selection, false).await.unwrap();
    assert_eq!((plain.reopened, plain.ids.len()), (1, 0));
    store.close().await;
    let pipeline = w.pipeline().await;
    let waited = lookup::reopen(&*pipeline.store, &selection, true)
        .await
        .unwrap();
    assert_eq!((waited.reopened, waited.queued_before), (0, 1));
    assert_eq!(waited.ids, queued.ids, "the same job");
    assert!(lookup::work(&pipeline, &waited.ids).await.is_none());
    assert_eq!(hits(&w, "GET /domains/{id}"), 4, "re-checked, once");

    // Nothing older than a day: nothing to re-check.
    let store = vtriage::pipeline::open_store(&w.config).await.unwrap();
    let selection = Recheck {
        verdicts: vec![],
        kinds: vec![Kind::Domain],
        older_than: now_millis() - 86_400_000,
    };
    assert_eq!(
        lookup::reopen(&*store, &selection, false)
            .await
            .unwrap()
            .reopened,
        0
    );
}
