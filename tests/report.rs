//! `vtriage report` on seeded databases: the exact shape of each format, the filters, streaming,
//! `--raw`, and the `v_report` view from the sqlite3 shell.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::StreamExt;
use serde_json::Value;
use vtriage::indicator::Kind;
use vtriage::report::{self, Filter, Format, Record};
use vtriage::store::sqlite::SqliteStore;
use vtriage::store::{FileSeen, NewJob, ReportQuery, ReportSort, Store};
use vtriage::verdict::{Stats, Verdict, VerdictRecord};

const T0: i64 = 1_790_000_000_000; // 2026-09-21T14:13:20Z
const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;

const FILE_SHA: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
const HASH_MD5: &str = "44d88612fea8a8f36de82e1278abb02f";
const HASH_SHA: &str = "131f95c51cc819465fa1797f6ccacf9d494aaaff46fa3eac73ae63ffbdfd8267";

async fn open() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("vtriage.db"))
        .await
        .unwrap();
    (dir, Arc::new(store))
}

/// One indicator to seed: enqueued at `seen`, finished with `verdict` (if any).
struct Seed {
    job: NewJob,
    seen: i64,
    verdict: Option<VerdictRecord>,
}

fn job(kind: Kind, indicator: &str) -> NewJob {
    NewJob {
        kind,
        indicator: indicator.into(),
        allow_submit: false,
        path: None,
        source: None,
    }
}

fn stats(malicious: u32, suspicious: u32) -> Stats {
    Stats {
        malicious,
        suspicious,
        harmless: 2,
        undetected: 60 - malicious - suspicious,
        timeout: 1,
        type_unsupported: 3,
        failure: 0,
        ..Stats::default()
    }
}

fn verdict(v: Verdict, s: Stats, at: i64) -> VerdictRecord {
    VerdictRecord {
        stats: Some(s),
        vt_analysis_date: Some(at / 1000 - 3600),
        ..VerdictRecord::bare(v, at)
    }
}

/// Enqueues and finishes every seed (in order, so job ids follow the seeds).
async fn seed(store: &SqliteStore, seeds: Vec<Seed>) {
    store
        .heartbeat("seeder", "host", 1, T0, 3_600_000, &[])
        .await
        .unwrap();
    for s in seeds {
        store.enqueue(&[s.job], s.seen, DAY, 5).await.unwrap();
        if let Some(v) = s.verdict {
            let job = store
                .claim("seeder", 1, s.seen, 60_000)
                .await
                .unwrap()
                .pop()
                .expect("the job just enqueued is due");
            if v.verdict == Verdict::Failed {
                assert!(store.discard(&job, &v, v.checked_at).await.unwrap());
            } else {
                assert!(store.complete(&job, &v, v.checked_at).await.unwrap());
            }
        }
    }
}

/// Six indicators, one of each kind plus a failure and one still queued:
/// 1 file (malicious, 2 paths), 2 hash (clean, VT gave its SHA-256), 3 url (suspicious, from a
/// list), 4 domain (unknown, from two lists), 5 ip (failed), 6 ipv6 (queued, no verdict).
fn standard_seeds() -> Vec<Seed> {
    let mut file = job(Kind::File, FILE_SHA);
    file.path = Some(FileSeen::at("/drop/in/invoice.doc", 1234));
    let mut file2 = file.clone();
    file2.path = Some(FileSeen::at("/drop/old/copy.doc", 1234));
    let mut url = job(Kind::Url, "http://evil.example/payload?a=1,2");
    url.source = Some(("/lists/feed.txt".into(), 7));
    let mut domain = job(Kind::Domain, "unknown.example");
    domain.source = Some(("/lists/feed.txt".into(), 8));
    let mut domain2 = domain.clone();
    domain2.source = Some(("command line".into(), 0));
    let mut ip = job(Kind::Ip, "192.0.2.10");
    ip.source = Some(("/lists/other.csv".into(), 2));
    vec![
        Seed {
            job: file2,
            seen: T0,
            verdict: None,
        },
        Seed {
            job: file,
            seen: T0,
            verdict: Some(VerdictRecord {
                threat_label: Some("trojan.emotet/docdl".into()),
                sha256: Some(FILE_SHA.into()),
                md5: Some("0".repeat(32)),
                vt_id: Some(FILE_SHA.into()),
                raw: Some(br#"{"id":"275a","type":"file","attributes":{"size":1234}}"#.to_vec()),
                ..verdict(Verdict::Malicious, stats(53, 1), T0 + HOUR)
            }),
        },
        Seed {
            job: job(Kind::Hash, HASH_MD5),
            seen: T0 + HOUR,
            verdict: Some(VerdictRecord {
                sha256: Some(HASH_SHA.into()),
                md5: Some(HASH_MD5.into()),
                ..verdict(Verdict::Clean, stats(0, 0), T0 + 2 * HOUR)
            }),
        },
        Seed {
            job: url,
            seen: T0 + 2 * HOUR,
            verdict: Some(verdict(Verdict::Suspicious, stats(2, 1), T0 + 3 * HOUR)),
        },
        Seed {
            job: domain,
            seen: T0 + 3 * HOUR,
            verdict: None,
        },
        Seed {
            job: domain2,
            seen: T0 + 3 * HOUR,
            verdict: Some(VerdictRecord::noted(
                Verdict::Unknown,
                "VirusTotal does not know it",
                T0 + 4 * HOUR,
            )),
        },
        Seed {
            job: ip,
            seen: T0 + 4 * HOUR,
            verdict: Some(VerdictRecord::failed(
                "HTTP 400: bad request",
                T0 + 5 * HOUR,
            )),
        },
        Seed {
            job: job(Kind::Ip, "2001:db8::10"),
            seen: T0 + 5 * HOUR,
            verdict: None,
        },
    ]
}

async fn standard() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let (dir, store) = open().await;
    seed(&store, standard_seeds()).await;
    (dir, store)
}

async fn render(store: &SqliteStore, filter: &Filter, format: Format) -> String {
    let mut out = Vec::new();
    report::write(report::records(store, filter), format, &mut out)
        .await
        .unwrap();
    String::from_utf8(out).unwrap()
}

async fn indicators(store: &SqliteStore, filter: &Filter) -> Vec<String> {
    report::records(store, filter)
        .map(|r| r.unwrap().indicator)
        .collect()
        .await
}

fn query(f: impl FnOnce(&mut ReportQuery)) -> Filter {
    let mut filter = Filter::default();
    f(&mut filter.query);
    filter
}

#[tokio::test]
async fn json_is_an_array_of_records_with_every_documented_field() {
    let (_d, store) = standard().await;
    let json: Value = serde_json::from_str(&render(&store, &Filter::default(), Format::Json).await)
        .expect("valid JSON");
    let records = json.as_array().expect("an array");
    assert_eq!(records.len(), 6);
    let expected: BTreeSet<&str> = [
        "kind",
        "indicator",
        "verdict",
        "state",
        "stats",
        "engines",
        "threat_label",
        "sha256",
        "md5",
        "sha1",
        "paths",
        "sources",
        "vt_link",
        "first_seen",
        "checked_at",
        "vt_analysis_date",
        "error",
        "note",
    ]
    .into();
    for r in records {
        let keys: BTreeSet<&str> = r.as_object().unwrap().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, expected);
    }

    let file = &records[0];
    assert_eq!(file["kind"], "file");
    assert_eq!(file["indicator"], FILE_SHA);
    assert_eq!(file["verdict"], "malicious");
    assert_eq!(file["state"], "completed");
    let stats: BTreeSet<&str> = file["stats"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(
        stats,
        [
            "malicious",
            "suspicious",
            "harmless",
            "undetected",
            "timeout",
            "type-unsupported",
            "failure"
        ]
        .into()
    );
    assert_eq!(file["stats"]["malicious"], 53);
    assert_eq!(file["stats"]["type-unsupported"], 3);
    // Engines that gave a verdict: 53 + 1 + 2 + 6 (timeouts and unsupported types did not).
    assert_eq!(file["engines"], 62);
    assert_eq!(file["threat_label"], "trojan.emotet/docdl");
    assert_eq!(file["sha256"], FILE_SHA);
    assert_eq!(
        file["paths"],
        serde_json::json!(["/drop/in/invoice.doc", "/drop/old/copy.doc"])
    );
    assert_eq!(file["sources"], serde_json::json!([]));
    assert_eq!(
        file["vt_link"],
        format!("https://www.virustotal.com/gui/file/{FILE_SHA}")
    );
    assert_eq!(file["first_seen"], "2026-09-21T14:13:20.000Z");
    assert_eq!(file["checked_at"], "2026-09-21T15:13:20.000Z");
    assert_eq!(file["vt_analysis_date"], "2026-09-21T14:13:20Z");
    assert_eq!(file["error"], Value::Null);

    let hash = &records[1];
    assert_eq!(hash["md5"], HASH_MD5);
    assert_eq!(hash["sha256"], HASH_SHA, "VirusTotal's SHA-256 of a hash");
    assert_eq!(
        hash["vt_link"],
        format!("https://www.virustotal.com/gui/file/{HASH_SHA}")
    );

    let domain = &records[3];
    assert_eq!(domain["verdict"], "unknown");
    assert_eq!(domain["note"], "VirusTotal does not know it");
    assert_eq!(domain["stats"], Value::Null);
    assert_eq!(
        domain["sources"],
        serde_json::json!([
            {"source": "/lists/feed.txt", "line": 8},
            {"source": "command line", "line": 0}
        ])
    );
    assert_eq!(
        domain["vt_link"],
        "https://www.virustotal.com/gui/domain/unknown.example"
    );

    let ip = &records[4];
    assert_eq!(ip["verdict"], "failed");
    assert_eq!(ip["state"], "discarded");
    assert_eq!(ip["error"], "HTTP 400: bad request");
    assert_eq!(
        ip["vt_link"],
        "https://www.virustotal.com/gui/ip-address/192.0.2.10"
    );

    let queued = &records[5];
    assert_eq!(queued["verdict"], Value::Null);
    assert_eq!(queued["state"], "available");
    assert_eq!(queued["checked_at"], Value::Null);
}

#[tokio::test]
async fn jsonl_holds_the_same_records_one_per_line() {
    let (_d, store) = standard().await;
    let array: Value =
        serde_json::from_str(&render(&store, &Filter::default(), Format::Json).await).unwrap();
    let lines = render(&store, &Filter::default(), Format::Jsonl).await;
    let parsed: Vec<Value> = lines
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one JSON object"))
        .collect();
    assert_eq!(Value::Array(parsed), array);
}

#[tokio::test]
async fn an_empty_report_is_still_valid_in_every_format() {
    let (_d, store) = open().await;
    let filter = Filter::default();
    let json: Value = serde_json::from_str(&render(&store, &filter, Format::Json).await).unwrap();
    assert_eq!(json, serde_json::json!([]));
    assert_eq!(render(&store, &filter, Format::Jsonl).await, "");
    let stix: Value = serde_json::from_str(&render(&store, &filter, Format::Stix).await).unwrap();
    assert_eq!(stix["type"], "bundle");
    assert!(
        stix.get("objects").is_none(),
        "STIX 2.1: `objects`, when present, is not empty"
    );
    assert!(stix["id"].as_str().unwrap().starts_with("bundle--"));
    let csv = render(&store, &filter, Format::Csv).await;
    assert_eq!(csv.lines().count(), 1, "the header only");
}

#[tokio::test]
async fn csv_has_a_header_and_round_trips_through_a_csv_parser() {
    let (_d, store) = standard().await;
    let text = render(&store, &Filter::default(), Format::Csv).await;
    assert!(text.contains("\r\n"), "RFC 4180 line ends");
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, report::CSV_HEADER);
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), 6);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();

    let records: Vec<Record> = report::records(&*store, &Filter::default())
        .map(|r| r.unwrap())
        .collect()
        .await;
    for (row, rec) in rows.iter().zip(&records) {
        assert_eq!(&row[col("indicator")], rec.indicator);
        assert_eq!(&row[col("kind")], rec.kind.as_str());
        assert_eq!(
            &row[col("verdict")],
            rec.verdict.map(|v| v.as_str()).unwrap_or("")
        );
        let paths: Vec<&str> = if row[col("paths")].is_empty() {
            vec![]
        } else {
            row[col("paths")]
                .split(report::CSV_LIST_SEPARATOR)
                .collect()
        };
        assert_eq!(paths, rec.paths);
        assert_eq!(&row[col("vt_link")], rec.vt_link);
        assert_eq!(
            &row[col("malicious")],
            rec.stats
                .map(|s| s.malicious.to_string())
                .unwrap_or_default()
        );
    }
    // The URL holds a comma: it must come back whole.
    assert_eq!(
        &rows[2][col("indicator")],
        "http://evil.example/payload?a=1,2"
    );
    assert_eq!(&rows[2][col("sources")], "/lists/feed.txt:7");
    assert_eq!(&rows[0][col("type-unsupported")], "3");
}

/// A structural check of STIX 2.1: what the JSON schema of `bundle` and `indicator` requires.
/// A dropped file's name, a list's name and VirusTotal's label are chosen by others: a cell
/// starting like a formula is shown by a spreadsheet, not run (CSV injection).
#[tokio::test]
async fn csv_cells_that_start_like_a_formula_are_not_formulas() {
    let (_d, store) = open().await;
    let mut file = job(Kind::File, FILE_SHA);
    file.path = Some(FileSeen::at("=HYPERLINK(\"http://x\")&A1.txt", 12));
    let mut hash = job(Kind::Hash, HASH_MD5);
    hash.source = Some(("@feed.txt".into(), 3));
    let label = VerdictRecord {
        threat_label: Some("-2+3 cmd|' /C calc'!A0".into()),
        ..verdict(Verdict::Malicious, stats(9, 0), T0)
    };
    seed(
        &store,
        vec![
            Seed {
                job: file,
                seen: T0,
                verdict: Some(label),
            },
            Seed {
                job: hash,
                seen: T0,
                verdict: None,
            },
        ],
    )
    .await;
    let text = render(&store, &Filter::default(), Format::Csv).await;
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(&rows[0][col("paths")], "'=HYPERLINK(\"http://x\")&A1.txt");
    assert_eq!(&rows[0][col("threat_label")], "'-2+3 cmd|' /C calc'!A0");
    assert_eq!(&rows[1][col("sources")], "'@feed.txt:3");
    assert_eq!(
        &rows[1][col("indicator")],
        HASH_MD5,
        "other cells are untouched"
    );
}

fn check_stix_bundle(bundle: &Value) {
    let uuid_of = |id: &str, prefix: &str| {
        let rest = id
            .strip_prefix(prefix)
            .unwrap_or_else(|| panic!("{id} starts with {prefix}"));
        uuid::Uuid::parse_str(rest).unwrap_or_else(|_| panic!("{id} ends with a UUID"))
    };
    assert_eq!(bundle["type"], "bundle");
    uuid_of(bundle["id"].as_str().unwrap(), "bundle--");
    for o in bundle["objects"].as_array().unwrap() {
        assert_eq!(o["type"], "indicator");
        assert_eq!(o["spec_version"], "2.1");
        assert_eq!(o["pattern_type"], "stix");
        uuid_of(o["id"].as_str().unwrap(), "indicator--");
        for field in ["created", "modified", "valid_from"] {
            let t = o[field]
                .as_str()
                .unwrap_or_else(|| panic!("{field} present"));
            assert!(t.ends_with('Z'), "{field} is UTC: {t}");
            chrono::DateTime::parse_from_rfc3339(t)
                .unwrap_or_else(|_| panic!("{field} is RFC 3339: {t}"));
        }
        assert!(o["modified"].as_str() >= o["created"].as_str());
        assert!(
            !o["indicator_types"].as_array().unwrap().is_empty(),
            "indicator_types is a non-empty list"
        );
        let pattern = o["pattern"].as_str().unwrap();
        assert!(pattern.starts_with('[') && pattern.ends_with(']'));
    }
}

#[tokio::test]
async fn stix_bundle_has_one_valid_indicator_per_record_with_the_verdict() {
    let (_d, store) = standard().await;
    let text = render(&store, &Filter::default(), Format::Stix).await;
    let bundle: Value = serde_json::from_str(&text).unwrap();
    check_stix_bundle(&bundle);
    let objects = bundle["objects"].as_array().unwrap();
    assert_eq!(objects.len(), 6);
    let patterns: Vec<&str> = objects
        .iter()
        .map(|o| o["pattern"].as_str().unwrap())
        .collect();
    assert_eq!(
        patterns,
        vec![
            format!(
                "[file:hashes.'SHA-256' = '{FILE_SHA}' OR file:hashes.'MD5' = '{}']",
                "0".repeat(32)
            )
            .as_str(),
            &format!("[file:hashes.'SHA-256' = '{HASH_SHA}' OR file:hashes.'MD5' = '{HASH_MD5}']"),
            "[url:value = 'http://evil.example/payload?a=1,2']",
            "[domain-name:value = 'unknown.example']",
            "[ipv4-addr:value = '192.0.2.10']",
            "[ipv6-addr:value = '2001:db8::10']",
        ]
    );
    let file = &objects[0];
    let description = file["description"].as_str().unwrap();
    assert!(description.contains("malicious"), "{description}");
    assert!(description.contains("53/62 engines"), "{description}");
    assert!(description.contains("trojan.emotet/docdl"), "{description}");
    assert_eq!(
        file["indicator_types"],
        serde_json::json!(["malicious-activity"])
    );
    assert_eq!(file["created"], "2026-09-21T14:13:20.000Z");
    assert_eq!(file["modified"], "2026-09-21T15:13:20.000Z");
    assert_eq!(file["valid_from"], file["created"]);
    assert_eq!(
        objects[2]["indicator_types"],
        serde_json::json!(["anomalous-activity"])
    );
    assert_eq!(objects[1]["indicator_types"], serde_json::json!(["benign"]));

    // Ids are deterministic: a second export is byte for byte the same.
    assert_eq!(render(&store, &Filter::default(), Format::Stix).await, text);
    let ids: BTreeSet<&str> = objects.iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 6, "one id per indicator");
}

#[tokio::test]
async fn table_fits_in_80_columns_and_summarises_the_verdicts() {
    let (_d, store) = standard().await;
    let long = format!("http://evil.example/{}", "x".repeat(80));
    seed(
        &store,
        vec![Seed {
            job: job(Kind::Url, &long),
            seen: T0 + 6 * HOUR,
            verdict: None,
        }],
    )
    .await;
    let table = render(&store, &Filter::default(), Format::Table).await;
    for line in table.lines().filter(|l| !l.contains(&long)) {
        assert!(line.chars().count() <= 80, "too wide: {line:?}");
    }
    assert!(
        table.contains(&format!("queued     url             {long}\n")),
        "an indicator is never cut: {table}"
    );
    let lines: Vec<&str> = table.lines().collect();
    assert!(lines[0].starts_with("VERDICT"));
    assert!(lines[1].starts_with("malicious  file"));
    assert!(lines[1].contains("53/62"));
    assert!(lines[1].ends_with("/drop/in/invoice.doc"), "{}", lines[1]);
    assert!(lines[2].contains("+1 copies; trojan.emotet/docdl"));
    assert!(table.contains("queued     ip"));
    assert!(
        table.ends_with(
            "7 indicators: 1 malicious, 1 suspicious, 1 clean, 1 unknown, 1 failed, 2 queued\n"
        ),
        "{table}"
    );
}

#[tokio::test]
async fn verdict_and_kind_filters_combine() {
    let (_d, store) = standard().await;
    let f = query(|q| q.verdicts = vec![Verdict::Malicious, Verdict::Suspicious, Verdict::Clean]);
    assert_eq!(indicators(&store, &f).await.len(), 3);
    let f = query(|q| {
        q.verdicts = vec![Verdict::Malicious, Verdict::Suspicious, Verdict::Clean];
        q.kinds = vec![Kind::Url, Kind::Hash];
    });
    assert_eq!(
        indicators(&store, &f).await,
        vec![HASH_MD5, "http://evil.example/payload?a=1,2"]
    );
    let f = query(|q| q.kinds = vec![Kind::Ip]);
    assert_eq!(
        indicators(&store, &f).await,
        vec!["192.0.2.10", "2001:db8::10"]
    );
}

#[tokio::test]
async fn source_filter_matches_list_names_file_names_and_folders() {
    let (_d, store) = standard().await;
    let by = |s: &[&str]| query(|q| q.sources = s.iter().map(|s| s.to_string()).collect());
    assert_eq!(
        indicators(&store, &by(&["/lists/feed.txt"])).await,
        vec!["http://evil.example/payload?a=1,2", "unknown.example"]
    );
    assert_eq!(
        indicators(&store, &by(&["feed.txt"])).await.len(),
        2,
        "a list by its file name"
    );
    assert_eq!(
        indicators(&store, &by(&["eed.txt"])).await.len(),
        0,
        "not by a partial name"
    );
    assert_eq!(
        indicators(&store, &by(&["command line", "other.csv"])).await,
        vec!["unknown.example", "192.0.2.10"]
    );
    assert_eq!(
        indicators(&store, &by(&["/drop/old/"])).await,
        vec![FILE_SHA],
        "a file by a folder it was seen in"
    );
    assert!(indicators(&store, &by(&["/drop/ol"])).await.is_empty());
    // Combined with a verdict filter.
    let f = query(|q| {
        q.sources = vec!["feed.txt".into()];
        q.verdicts = vec![Verdict::Unknown];
    });
    assert_eq!(indicators(&store, &f).await, vec!["unknown.example"]);
}

#[tokio::test]
async fn since_and_until_bound_the_check_time() {
    let (_d, store) = standard().await;
    let f = query(|q| {
        q.since = Some(T0 + 2 * HOUR);
        q.until = Some(T0 + 4 * HOUR);
    });
    assert_eq!(
        indicators(&store, &f).await,
        vec![HASH_MD5, "http://evil.example/payload?a=1,2"]
    );
    let now = T0 + 5 * HOUR + 30 * 60_000;
    let f = query(|q| q.since = Some(report::parse_time("1h", now).unwrap()));
    assert_eq!(indicators(&store, &f).await, vec!["192.0.2.10"]);
}

#[tokio::test]
async fn path_glob_keeps_matching_files_and_limit_applies_after_it() {
    let (dir, store) = standard().await;
    let mut other = job(Kind::File, &"e".repeat(64));
    other.path = Some(FileSeen::at("/drop/in/setup.exe", 10));
    seed(
        &store,
        vec![Seed {
            job: other,
            seen: T0 + 6 * HOUR,
            verdict: Some(verdict(Verdict::Clean, stats(0, 0), T0 + 6 * HOUR)),
        }],
    )
    .await;
    let glob = |g: &str| Filter::default().with_path_glob(g).unwrap();
    assert_eq!(
        indicators(&store, &glob("*.exe")).await,
        vec!["e".repeat(64)]
    );
    assert_eq!(
        indicators(&store, &glob("/drop/old/**")).await,
        vec![FILE_SHA]
    );
    assert_eq!(indicators(&store, &glob("/drop/**")).await.len(), 2);
    assert!(
        indicators(&store, &glob("/drop/*.exe")).await.is_empty(),
        "`*` stays within a folder"
    );
    assert_eq!(
        indicators(&store, &glob("/drop/*/setup.exe")).await,
        vec!["e".repeat(64)]
    );
    let mut limited = glob("/drop/in/*");
    limited.query.limit = Some(1);
    limited.query.sort = ReportSort::Indicator;
    assert_eq!(indicators(&store, &limited).await, vec![FILE_SHA]);
    assert!(Filter::default().with_path_glob("a[").is_err());
    drop(dir);
}

#[tokio::test]
async fn sort_orders_are_deterministic() {
    let (_d, store) = standard().await;
    let sorted = |sort| query(|q| q.sort = sort);
    assert_eq!(
        indicators(&store, &sorted(ReportSort::Verdict)).await,
        vec![
            FILE_SHA,
            "http://evil.example/payload?a=1,2",
            HASH_MD5,
            "unknown.example",
            "192.0.2.10",
            "2001:db8::10"
        ]
    );
    assert_eq!(
        indicators(&store, &sorted(ReportSort::CheckedAt)).await[..2],
        ["192.0.2.10", "unknown.example"]
    );
    assert_eq!(
        indicators(&store, &sorted(ReportSort::Malicious)).await[..3],
        [FILE_SHA, "http://evil.example/payload?a=1,2", HASH_MD5]
    );
    let mut by_name = indicators(&store, &sorted(ReportSort::FirstSeen)).await;
    by_name.sort();
    assert_eq!(
        indicators(&store, &sorted(ReportSort::Indicator)).await,
        by_name
    );
    let mut limited = sorted(ReportSort::Verdict);
    limited.query.limit = Some(2);
    assert_eq!(indicators(&store, &limited).await.len(), 2);
}

#[tokio::test]
async fn raw_prints_the_stored_object_found_by_any_of_its_hashes() {
    let (_d, store) = standard().await;
    let expected = serde_json::json!({"id": "275a", "type": "file", "attributes": {"size": 1234}});
    for name in [
        FILE_SHA.to_owned(),
        FILE_SHA.to_uppercase(),
        "0".repeat(32),
        format!(" {FILE_SHA}\n"),
    ] {
        let text = report::raw(&*store, &name).await.unwrap();
        assert!(text.contains('\n'), "pretty-printed");
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
    }
    assert!(matches!(
        report::raw(&*store, "unknown.example").await,
        Err(report::RawError::NoObject(Kind::Domain, _))
    ));
    assert!(matches!(
        report::raw(&*store, "nothing.example").await,
        Err(report::RawError::NotInDatabase(_))
    ));
}

/// Writes nothing anywhere; remembers how many rows the database had yielded when the first
/// record reached the output.
struct Probe<'a> {
    pulled: &'a AtomicU64,
    at_first_write: Option<u64>,
    bytes: u64,
}

impl std::io::Write for Probe<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        // The first byte of a JSON line is the record itself.
        if self.at_first_write.is_none() {
            self.at_first_write = Some(self.pulled.load(Ordering::SeqCst));
        }
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_large_report_streams_each_record_as_the_database_yields_it() {
    const ROWS: i64 = 20_000;
    let (dir, store) = open().await;
    // Bulk-seed through a separate connection: 20,000 jobs with verdicts in one transaction.
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("vtriage.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        let mut tx = conn.begin().await.unwrap();
        sqlx::query(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
             INSERT INTO jobs (kind, indicator, state, max_attempts, scheduled_at, created_at, updated_at)
             SELECT 'domain', 'host' || i || '.example', 'completed', 5, ?2, ?2 + i, ?2 + i FROM n",
        )
        .bind(ROWS)
        .bind(T0)
        .execute(&mut *tx)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO verdicts (job_id, verdict, malicious, suspicious, harmless, undetected,
                 timeout, type_unsupported, failure, engines, checked_at)
             SELECT id, CASE WHEN id % 10 = 0 THEN 'malicious' ELSE 'clean' END,
                    id % 10, 0, 10, 50, 0, 0, 0, 60 + id % 10, created_at + 1000 FROM jobs",
        )
        .execute(&mut *tx)
        .await
        .unwrap();
        tx.commit().await.unwrap();
    }
    // Sorted by verdict: SQLite has to sort (on disk if need be), the rows still stream out.
    {
        let sort = ReportSort::Verdict;
        let pulled = AtomicU64::new(0);
        let filter = query(|q| q.sort = sort);
        let rows = report::records(&*store, &filter).inspect(|_| {
            pulled.fetch_add(1, Ordering::SeqCst);
        });
        let mut probe = Probe {
            pulled: &pulled,
            at_first_write: None,
            bytes: 0,
        };
        let written = report::write(rows, Format::Jsonl, &mut probe)
            .await
            .unwrap();
        assert_eq!(written.records, ROWS as u64);
        assert_eq!(written.count(Verdict::Malicious), ROWS as u64 / 10);
        assert_eq!(pulled.load(Ordering::SeqCst), ROWS as u64);
        assert_eq!(
            probe.at_first_write,
            Some(1),
            "the first record was written before the second one was read"
        );
        assert!(probe.bytes > 20 * ROWS as u64);
    }
    // In job order the records come a chunk at a time: each once, in order, up to the limit.
    for (verdicts, limit) in [
        (vec![], None),
        (vec![Verdict::Malicious], None),
        (vec![], Some(2_345)),
        (vec![Verdict::Malicious], Some(1_001)),
    ] {
        let filter = query(|q| {
            q.verdicts = verdicts.clone();
            q.limit = limit;
        });
        let records: Vec<Record> = report::records(&*store, &filter)
            .map(Result::unwrap)
            .collect()
            .await;
        let ids: Vec<i64> = records.iter().map(|r| r.job_id).collect();
        let expected: Vec<i64> = (1..=ROWS)
            .filter(|id| verdicts.is_empty() || id % 10 == 0)
            .take(limit.unwrap_or(u64::MAX) as usize)
            .collect();
        assert_eq!(ids, expected, "{verdicts:?} limit {limit:?}");
        for r in &records {
            assert_eq!(r.indicator, format!("host{}.example", r.job_id));
            let malicious = r.stats.as_ref().map(|s| s.malicious);
            assert_eq!(malicious, Some((r.job_id % 10) as u32));
            assert_eq!(r.engines, Some(60 + (r.job_id % 10) as u32));
        }
    }
}

#[tokio::test]
async fn a_report_in_job_order_spans_gaps_in_the_job_ids() {
    let (dir, store) = open().await;
    // Job ids need not be dense: the report reads them a range at a time, some ranges empty.
    {
        use sqlx::Connection;
        let url = format!("sqlite://{}", dir.path().join("vtriage.db").display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        for id in [3_i64, 2_500, 9_999] {
            sqlx::query(
                "INSERT INTO jobs (id, kind, indicator, state, max_attempts, scheduled_at, created_at, updated_at)
                 VALUES (?1, 'domain', 'host' || ?1 || '.example', 'completed', 5, ?2, ?2, ?2)",
            )
            .bind(id)
            .bind(T0)
            .execute(&mut conn)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO verdicts (job_id, verdict, checked_at)
                 VALUES (?1, CASE WHEN ?1 = 2500 THEN 'clean' ELSE 'malicious' END, ?2)",
            )
            .bind(id)
            .bind(T0)
            .execute(&mut conn)
            .await
            .unwrap();
        }
    }
    for (verdicts, expected) in [
        (vec![], vec![3, 2_500, 9_999]),
        (vec![Verdict::Malicious], vec![3, 9_999]),
    ] {
        let filter = query(|q| q.verdicts = verdicts.clone());
        let ids: Vec<i64> = report::records(&*store, &filter)
            .map(|r| r.unwrap().job_id)
            .collect()
            .await;
        assert_eq!(ids, expected, "{verdicts:?}");
    }
}

#[tokio::test]
async fn the_report_view_works_from_the_sqlite3_shell() {
    let shell = std::path::Path::new("/usr/bin/sqlite3");
    if !shell.exists() {
        eprintln!("note: /usr/bin/sqlite3 is missing; skipping the sqlite3 shell test");
        return;
    }
    let (dir, store) = standard().await;
    store.close().await;
    let db = dir.path().join("vtriage.db");
    let out = std::process::Command::new(shell)
        .arg("-separator")
        .arg("|")
        .arg(&db)
        .arg("select kind, indicator, malicious, engines, paths, vt_link, checked_at from v_report where verdict='malicious'")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!(
            "file|{FILE_SHA}|53|62|/drop/in/invoice.doc; /drop/old/copy.doc|https://www.virustotal.com/gui/file/{FILE_SHA}|2026-09-21T15:13:20.000Z\n"
        )
    );
    let out = std::process::Command::new(shell)
        .arg(&db)
        .arg("select indicator, sources, verdict is null, state from v_report where kind = 'domain' or verdict is null order by job_id")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "unknown.example|/lists/feed.txt:8; command line:0|0|completed\n2001:db8::10||1|available\n"
    );
    let out = std::process::Command::new(shell)
        .arg(&db)
        .arg("select state, kind, verdict, jobs from v_queue where kind = 'ip' order by state")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "available|ip||1\ndiscarded|ip|failed|1\n"
    );
}

/// Runs the `vtriage` binary on the database `db`, without a configuration file; returns the exit
/// status and the standard output and error.
fn vtriage_on(db: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_vtriage"))
        .args(args)
        .env("VTRIAGE_DB", db)
        .env_remove("VT_API_KEY")
        .current_dir(db.parent().unwrap())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn report_and_status_read_a_database_they_cannot_write_and_leave_nothing_behind() {
    // A copy of the seeded database, on its own: the seeding store's connections are not
    // closed until it is gone, and they would keep the log open.
    let (seeded, store) = standard().await;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("vtriage.db");
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "VACUUM INTO '{}'",
        db.display()
    )))
    .execute(store.read_pool())
    .await
    .unwrap();
    drop((store, seeded));
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    // A clean exit folds the log back and removes it and the shared-memory file.
    let (code, out, err) = vtriage_on(
        &db,
        &["report", "--format", "csv", "--verdict", "malicious"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(FILE_SHA), "{out}");
    assert_eq!(listing(), ["vtriage.db"]);

    // Where SQLite cannot make its log (as on read-only media, or another user's directory; a
    // directory in the log's place does it even for root, who may write anywhere), the database
    // is read as it is.
    std::fs::create_dir(dir.path().join("vtriage.db-wal")).unwrap();
    let (code, out, err) = vtriage_on(
        &db,
        &["report", "--format", "csv", "--verdict", "malicious"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(FILE_SHA), "{out}");
    let (code, out, err) = vtriage_on(&db, &["status", "--json"]);
    assert_eq!(code, 0, "{err}");
    let status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(status["remaining"], 1, "{out}");
    assert_eq!(listing(), ["vtriage.db", "vtriage.db-wal"]);
}
