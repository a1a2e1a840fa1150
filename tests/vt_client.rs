//! The VirusTotal client against recorded replies (`tests/fixtures/vt-responses/`) and
//! against a tiny in-process fake of the API bound on 127.0.0.1:0.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use vtriage::config::ApiKey;
use vtriage::quota::{Denied, Gate, GateFuture, Grant};
use vtriage::vt::{
    Analysis, AnalysisRef, AnalysisStatus, Client, Collection, Error, Object, Page, RetryPolicy,
    parse_data_string, url_id,
};

// ---------------------------------------------------------------------------------------------
// Recorded replies

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vt-responses")
}

fn fixture(name: &str) -> Vec<u8> {
    let path = fixtures_dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn object(name: &str) -> Object {
    Object::parse(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// What each recorded reply is, from its name, and the status it was recorded with.
enum Expect {
    Object,
    Analysis,
    AnalysisRef,
    Page,
    UrlString,
    Error(u16),
}

fn expectation(name: &str) -> Expect {
    if name.starts_with("error-") {
        let status = if name.contains("notfound") { 404 } else { 401 };
        Expect::Error(status)
    } else if name.contains("collection") || name.contains("comments") {
        Expect::Page
    } else if name.starts_with("analysis-") || name.starts_with("private-analysis") {
        Expect::Analysis
    } else if name.starts_with("post-") {
        Expect::AnalysisRef
    } else if name.starts_with("get-files-") {
        Expect::UrlString
    } else {
        Expect::Object
    }
}

#[test]
fn every_recorded_reply_parses_into_its_type() {
    let mut seen = BTreeSet::new();
    for entry in std::fs::read_dir(fixtures_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let body = std::fs::read(&path).unwrap();
        match expectation(&name) {
            Expect::Object => {
                let o = Object::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!o.id.is_empty(), "{name}: no id");
                assert!(
                    ["file", "url", "domain", "ip_address"].contains(&o.kind.as_str()),
                    "{name}: {}",
                    o.kind
                );
            }
            Expect::Analysis => {
                let a = Analysis::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!a.id.is_empty(), "{name}: no id");
            }
            Expect::AnalysisRef => {
                let r = AnalysisRef::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!r.id.is_empty(), "{name}: no id");
            }
            Expect::Page => {
                Page::parse(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            Expect::UrlString => {
                let url = parse_data_string(&body).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(url.starts_with("https://"), "{name}: {url}");
            }
            Expect::Error(status) => {
                let err = Error::from_response(status, &body);
                match status {
                    404 => assert!(matches!(err, Error::NotFound), "{name}: {err:?}"),
                    _ => assert!(err.is_auth(), "{name}: {err:?}"),
                }
            }
        }
        seen.insert(name);
    }
    assert_eq!(seen.len(), 33, "fixtures seen: {seen:?}");
}

#[test]
fn malicious_word_document_counts_53_engines() {
    let o = object("file-msword-malicious.malwaredb.json");
    let stats = o.last_analysis_stats().unwrap();
    assert_eq!(stats.malicious, 53);
    assert_eq!(stats.type_unsupported, 13);
    assert_eq!(stats.engines(), 62);
    assert_eq!(o.threat_label().as_deref(), Some("virus.hill/w97m"));
    assert_eq!(o.size(), Some(64000));
    assert_eq!(o.sha256(), Some(o.id.as_str()));
    assert!(!o.analysis_pending());
}

#[test]
fn a_lookup_by_md5_returns_the_sha256_as_id() {
    let o = object("file-pe-by-md5-2026.themains-r.json");
    assert_eq!(
        o.id,
        "52d3df0ed60c46f336c131bf2ca454f73bafdc4b04dfa2aea80746f5ba9e6d1c"
    );
    assert_eq!(o.md5(), Some("99017f6eebbac24f351415dd410d522d"));
    assert_eq!(o.meaningful_name(), Some("nuevo4.exe"));
    assert_eq!(o.last_analysis_stats().unwrap().malicious, 59);
    assert_eq!(o.threat_label().as_deref(), Some("trojan.hosts2/qhost"));
}

#[test]
fn a_label_without_family_loses_its_trailing_dot() {
    let o = object("file-pe32-dotnet-lowdetect.malwaredb.json");
    assert_eq!(o.threat_label().as_deref(), Some("trojan"));
    assert_eq!(o.last_analysis_stats().unwrap().malicious, 7);
}

#[test]
fn clean_files_have_stats_and_no_label() {
    let o = object("file-doscom-clean.malwaredb.json");
    let stats = o.last_analysis_stats().unwrap();
    assert_eq!(
        (stats.malicious, stats.timeout, stats.undetected),
        (0, 1, 60)
    );
    assert_eq!(o.threat_label(), None);
    assert_eq!(o.last_analysis_date(), Some(1600790003));
    let elf = object("file-elf-clean.malwaredb.json");
    assert_eq!(elf.last_analysis_stats().unwrap().failure, 2);
}

#[test]
fn old_domain_and_ip_reports_have_no_stats_and_are_not_pending() {
    for name in [
        "domain-github.com-2019.virustotalx.json",
        "ip-1.1.1.1-2019.virustotalx.json",
    ] {
        let o = object(name);
        assert_eq!(o.last_analysis_stats(), None, "{name}");
        assert!(!o.analysis_pending(), "{name}");
    }
    assert_eq!(
        object("domain-github.com-2019.virustotalx.json").id,
        "github.com"
    );
    let google = object("domain-google.com-2026.themains-r.json");
    assert_eq!(google.last_analysis_stats().unwrap().malicious, 1);
}

#[test]
fn url_objects_match_their_base64url_id() {
    assert_eq!(url_id("http://example.com/"), "aHR0cDovL2V4YW1wbGUuY29tLw");
    let o = object("url-example.com-2019.virustotalx.json");
    assert_eq!(o.kind, "url");
    assert_eq!(
        o.id,
        "2a1b402420ef46577471cdc7409b0fa2c6a204db316e59ade2d805435489a067"
    );
    assert_eq!(o.last_analysis_stats().unwrap().harmless, 64);
}

#[test]
fn an_old_integer_analysis_id_is_stringified() {
    let r = AnalysisRef::parse(&fixture(
        "post-files-analyse-integer-id-2019.virustotalx.json",
    ))
    .unwrap();
    assert_eq!(r.id, "1571524923");
    let r = AnalysisRef::parse(&fixture("post-files-2019.virustotalx.json")).unwrap();
    assert_eq!(
        r.id,
        "YmE0ZTM0ZGQ0YmRlNjdiMjIxMzYyZDU0YzRiYWYwNzA6MTU3MTUyNDc2OA=="
    );
}

#[test]
fn a_queued_analysis_has_no_stats_yet() {
    let a = Analysis::parse(&fixture(
        "analysis-file-queued-2019.reconstructed-from-vt-cli-issue14.json",
    ))
    .unwrap();
    assert_eq!(a.status, AnalysisStatus::Queued);
    assert_eq!(a.stats, None);
    assert_eq!(a.date, Some(1570172855));
}

#[test]
fn a_completed_analysis_names_what_it_analysed() {
    let a = Analysis::parse(&fixture("analysis-url-completed-2019.virustotalx.json")).unwrap();
    assert_eq!(a.status, AnalysisStatus::Completed);
    assert_eq!(a.stats.unwrap().harmless, 64);
    assert_eq!(
        a.url_id.as_deref(),
        Some("2a1b402420ef46577471cdc7409b0fa2c6a204db316e59ade2d805435489a067")
    );
    let a = Analysis::parse(&fixture(
        "private-analysis-completed-with-meta.docs-example.json",
    ))
    .unwrap();
    assert_eq!(a.status, AnalysisStatus::Completed);
    assert_eq!(a.stats, None);
    assert_eq!(
        a.file_sha256.as_deref(),
        Some("11a77c3d96c06974b53d7f40a577e6813739eb5c811b2a86f59038ea90add772")
    );
}

#[test]
fn pages_carry_their_cursor_until_the_last() {
    let votes = Page::parse(&fixture("url-votes-collection-2019.virustotalx.json")).unwrap();
    assert_eq!(votes.items.len(), 10);
    assert!(
        votes
            .cursor
            .as_deref()
            .is_some_and(|c| c.starts_with("CswBChEKBGRhdGUS"))
    );
    let empty = Page::parse(&fixture("ip-comments-empty-2019.virustotalx.json")).unwrap();
    assert!(empty.items.is_empty());
    assert_eq!(empty.cursor, None);
    let comments =
        Page::parse(&fixture("domain-comments-collection-2026.themains-r.json")).unwrap();
    assert_eq!(comments.items[0]["attributes"]["text"], "HELLO WORLD");
    assert!(comments.cursor.is_some());
}

// ---------------------------------------------------------------------------------------------
// A fake API

/// One request as the fake saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    /// The path as sent, still percent-encoded.
    path: String,
    query: Option<String>,
    headers: HeaderMap,
    body: Bytes,
}

impl Seen {
    fn api_key(&self) -> Option<&str> {
        self.headers.get("x-apikey").and_then(|v| v.to_str().ok())
    }
}

type Reply = (StatusCode, Vec<(&'static str, String)>, Vec<u8>);
type Responder = Arc<dyn Fn(&Seen, usize) -> Reply + Send + Sync>;

#[derive(Clone)]
struct FakeState {
    seen: Arc<Mutex<Vec<Seen>>>,
    respond: Responder,
}

struct Fake {
    base: String,
    origin: String,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Fake {
    /// Serves `respond(request, index of the request)` on 127.0.0.1:0 until the test ends.
    async fn start(respond: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static) -> Fake {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Fake::serve(listener, respond)
    }

    fn serve(
        listener: tokio::net::TcpListener,
        respond: impl Fn(&Seen, usize) -> Reply + Send + Sync + 'static,
    ) -> Fake {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let state = FakeState {
            seen: seen.clone(),
            respond: Arc::new(respond),
        };
        let app = Router::new().fallback(handle).with_state(state);
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Fake {
            base: format!("http://{addr}/api/v3"),
            origin: format!("http://{addr}"),
            seen,
        }
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

async fn handle(State(state): State<FakeState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let seen = Seen {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts.headers,
        body,
    };
    let index = {
        let mut all = state.seen.lock().unwrap();
        all.push(seen.clone());
        all.len() - 1
    };
    let (status, headers, body) = (state.respond)(&seen, index);
    let mut response = (status, body).into_response();
    for (name, value) in headers {
        response.headers_mut().insert(name, value.parse().unwrap());
    }
    response
}

fn json(status: u16, body: impl Into<Vec<u8>>) -> Reply {
    (
        StatusCode::from_u16(status).unwrap(),
        vec![("content-type", "application/json".into())],
        body.into(),
    )
}

/// A gate that admits everything and counts.
#[derive(Default)]
struct CountingGate {
    acquired: AtomicUsize,
    answered: AtomicUsize,
    unsent: AtomicUsize,
    paused: AtomicUsize,
}

impl Gate for CountingGate {
    fn acquire(&self) -> GateFuture<'_, Result<Grant, Denied>> {
        self.acquired.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(Grant::unrecorded()) })
    }
    fn answered(&self, _: Grant) -> GateFuture<'_, ()> {
        self.answered.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
    fn unsent(&self, _: Grant) -> GateFuture<'_, ()> {
        self.unsent.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {})
    }
    fn pause(&self) {
        self.paused.fetch_add(1, Ordering::SeqCst);
    }
}

/// A gate whose daily budget is spent.
struct SpentGate;

impl Gate for SpentGate {
    fn acquire(&self) -> GateFuture<'_, Result<Grant, Denied>> {
        Box::pin(async {
            Err(Denied::Exhausted {
                until: std::time::SystemTime::UNIX_EPOCH,
            })
        })
    }
    fn answered(&self, _: Grant) -> GateFuture<'_, ()> {
        unreachable!("nothing was granted")
    }
    fn unsent(&self, _: Grant) -> GateFuture<'_, ()> {
        unreachable!("nothing was granted")
    }
    fn pause(&self) {}
}

const KEY: &str = "CANARY-5f3c9a1e-do-not-leak";

fn fast_retries() -> RetryPolicy {
    RetryPolicy {
        max_retries: 3,
        min_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
    }
}

fn client(fake: &Fake) -> (Client, Arc<CountingGate>) {
    let gate = Arc::new(CountingGate::default());
    let client = Client::new(
        &fake.base,
        ApiKey::new(KEY),
        gate.clone(),
        Duration::from_secs(5),
    )
    .unwrap()
    .with_retry(fast_retries());
    (client, gate)
}

const SHA256: &str = "001015aafcae8a6942366cbb0e7d39c0738752a7800c41ea1c655d47b0a4d04c";

fn temp_file(dir: &tempfile::TempDir, name: &str, len: usize) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(
        &path,
        (0..len).map(|i| (i % 251) as u8).collect::<Vec<u8>>(),
    )
    .unwrap();
    path
}

// ---------------------------------------------------------------------------------------------
// Behaviour against the fake

#[tokio::test]
async fn a_known_file_is_fetched_with_the_key_in_the_header() {
    let fake = Fake::start(|_, _| json(200, fixture("file-msword-malicious.malwaredb.json"))).await;
    let (client, gate) = client(&fake);
    let o = client.get_file(&SHA256.to_uppercase()).await.unwrap();
    assert_eq!(o.last_analysis_stats().unwrap().malicious, 53);
    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(seen[0].path, format!("/api/v3/files/{SHA256}"));
    assert_eq!(seen[0].api_key(), Some(KEY));
    assert_eq!(gate.acquired.load(Ordering::SeqCst), 1);
}

/// A request that could not connect never reached VirusTotal: the gate takes it back, every
/// try of it, rather than count it as spent; one that was answered stays counted.
#[tokio::test]
async fn requests_that_never_connected_are_handed_back_unsent() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v3", closed.local_addr().unwrap());
    drop(closed);
    let gate = Arc::new(CountingGate::default());
    let unreachable = Client::new(
        &base,
        ApiKey::new(KEY),
        gate.clone(),
        Duration::from_secs(5),
    )
    .unwrap()
    .with_retry(fast_retries());
    let err = unreachable.get_file(SHA256).await.unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
    assert_eq!(
        gate.acquired.load(Ordering::SeqCst),
        4,
        "the try and 3 retries"
    );
    assert_eq!(gate.unsent.load(Ordering::SeqCst), 4);
    assert_eq!(gate.answered.load(Ordering::SeqCst), 0);

    let fake = Fake::start(|_, _| json(503, "{}")).await;
    let (client, gate) = client(&fake);
    client.get_file(SHA256).await.unwrap_err();
    assert_eq!(gate.answered.load(Ordering::SeqCst), 4);
    assert_eq!(gate.unsent.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_the_configured_requests_are_under_way_at_once() {
    let (under_way, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let app = Router::new().fallback({
        let (under_way, most) = (under_way.clone(), most.clone());
        move || async move {
            let n = under_way.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(20)).await;
            under_way.fetch_sub(1, Ordering::SeqCst);
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                fixture("file-msword-malicious.malwaredb.json"),
            )
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}/api/v3", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let gate = Arc::new(CountingGate::default());
    let client = Client::new(
        &base,
        ApiKey::new(KEY),
        gate.clone(),
        Duration::from_secs(5),
    )
    .unwrap()
    .with_requests_in_flight(3);
    let client = Arc::new(client);
    let lookups: Vec<_> = (0..12)
        .map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.get_file(SHA256).await })
        })
        .collect();
    for lookup in lookups {
        lookup.await.unwrap().unwrap();
    }
    assert_eq!(
        most.load(Ordering::SeqCst),
        3,
        "twelve lookups at once, three requests at a time"
    );
    assert_eq!(gate.acquired.load(Ordering::SeqCst), 12);
}

#[tokio::test]
async fn an_unknown_file_is_not_found() {
    let fake = Fake::start(|_, _| json(404, fixture("error-notfound-file.malwaredb.json"))).await;
    let (client, _) = client(&fake);
    let err = client.get_file(SHA256).await.unwrap_err();
    assert!(matches!(err, Error::NotFound), "{err:?}");
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn a_wrong_key_is_reported_once_and_never_retried() {
    let fake =
        Fake::start(|_, _| json(401, fixture("error-wrongcredentials.malwaredb.json"))).await;
    let (client, gate) = client(&fake);
    let err = client.get_domain("example.com").await.unwrap_err();
    assert!(err.is_auth(), "{err:?}");
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("WrongCredentialsError"));
    assert_eq!(fake.count(), 1);
    assert_eq!(gate.acquired.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn transient_failures_are_retried_until_success() {
    let fake = Fake::start(|_, n| match n {
        0 | 1 => json(
            503,
            r#"{"error":{"code":"TransientError","message":"try again"}}"#,
        ),
        _ => json(200, fixture("ip-8.8.8.8-2026.themains-r.json")),
    })
    .await;
    let (client, gate) = client(&fake);
    let o = client.get_ip("8.8.8.8").await.unwrap();
    assert_eq!(o.id, "8.8.8.8");
    assert_eq!(fake.count(), 3);
    // Every attempt is a request that counts against the quota, and its answer is reported.
    assert_eq!(gate.acquired.load(Ordering::SeqCst), 3);
    assert_eq!(gate.answered.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn retries_stop_after_the_policy_allows() {
    let fake = Fake::start(|_, _| {
        (
            StatusCode::GATEWAY_TIMEOUT,
            vec![],
            b"<html>timeout</html>".to_vec(),
        )
    })
    .await;
    let (client, _) = client(&fake);
    let err = client.get_domain("example.com").await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transient {
                status: Some(504),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.count(), 1 + fast_retries().max_retries as usize);
}

#[tokio::test]
async fn quota_replies_pause_the_gate_and_are_retried() {
    // 429 bodies come without gzip even when the client asked for it.
    let fake = Fake::start(|_, n| match n {
        0 => json(
            429,
            r#"{"error":{"code":"QuotaExceededError","message":"Quota exceeded"}}"#,
        ),
        _ => json(200, fixture("domain-google.com-2026.themains-r.json")),
    })
    .await;
    let (client, gate) = client(&fake);
    let o = client.get_domain("google.com").await.unwrap();
    assert_eq!(o.id, "google.com");
    assert_eq!(fake.count(), 2);
    assert_eq!(gate.paused.load(Ordering::SeqCst), 1);
    assert_eq!(gate.acquired.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn persistent_quota_replies_end_as_a_quota_error() {
    let fake = Fake::start(|_, _| {
        json(
            429,
            r#"{"error":{"code":"TooManyRequestsError","message":"slow down"}}"#,
        )
    })
    .await;
    let (client, gate) = client(&fake);
    let err = client.get_url("http://example.com/").await.unwrap_err();
    assert!(
        matches!(&err, Error::Quota { code } if code == "TooManyRequestsError"),
        "{err:?}"
    );
    assert_eq!(fake.count(), 4);
    assert_eq!(gate.paused.load(Ordering::SeqCst), 4);
    assert_eq!(
        fake.seen()[0].path,
        "/api/v3/urls/aHR0cDovL2V4YW1wbGUuY29tLw"
    );
}

#[tokio::test]
async fn a_truncated_body_on_200_is_transient() {
    let full = fixture("file-elf-clean.malwaredb.json");
    let fake = Fake::start(move |_, _| json(200, full[..full.len() / 2].to_vec())).await;
    let (client, _) = client(&fake);
    let err = client.get_file(SHA256).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transient {
                status: Some(200),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn a_spent_daily_budget_sends_nothing() {
    let fake = Fake::start(|_, _| json(200, fixture("file-elf-clean.malwaredb.json"))).await;
    let client = Client::new(
        &fake.base,
        ApiKey::new(KEY),
        Arc::new(SpentGate),
        Duration::from_secs(5),
    )
    .unwrap();
    let err = client.get_file(SHA256).await.unwrap_err();
    assert!(
        matches!(err, Error::Denied(Denied::Exhausted { .. })),
        "{err:?}"
    );
    assert_eq!(fake.count(), 0);
}

#[tokio::test]
async fn a_small_file_is_uploaded_directly_as_the_part_named_file() {
    let fake = Fake::start(|_, _| json(200, fixture("post-files-2019.virustotalx.json"))).await;
    let (client, gate) = client(&fake);
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "sample.bin", 1000);
    let analysis = client.upload_file(&path, 10_000).await.unwrap();
    assert_eq!(
        analysis.id,
        "YmE0ZTM0ZGQ0YmRlNjdiMjIxMzYyZDU0YzRiYWYwNzA6MTU3MTUyNDc2OA=="
    );

    let seen = fake.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/api/v3/files")
    );
    assert_eq!(seen[0].api_key(), Some(KEY));
    let content_type = seen[0]
        .headers
        .get(header::CONTENT_TYPE)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(
        content_type.starts_with("multipart/form-data; boundary="),
        "{content_type}"
    );
    let body = String::from_utf8_lossy(&seen[0].body);
    assert!(
        body.contains("Content-Disposition: form-data; name=\"file\"; filename=\"sample.bin\""),
        "{body}"
    );
    assert!(!body.contains("filename*"));
    let content = std::fs::read(&path).unwrap();
    assert!(
        seen[0]
            .body
            .windows(content.len())
            .any(|w| w == content.as_slice())
    );
    assert_eq!(gate.acquired.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_large_file_goes_through_an_upload_url_that_is_not_gated() {
    let fake = Fake::start(|seen, _| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", "/api/v3/files/upload_url") => {
            let host = seen
                .headers
                .get(header::HOST)
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned();
            json(
                200,
                format!(r#"{{"data": "http://{host}/_ah/upload/once-only-token/"}}"#),
            )
        }
        ("POST", "/_ah/upload/once-only-token/") => {
            json(200, fixture("post-files-analyse-rescan.malwaredb.json"))
        }
        _ => json(
            404,
            r#"{"error":{"code":"NotFoundError","message":"no such route"}}"#,
        ),
    })
    .await;
    let (client, gate) = client(&fake);
    let client = client.with_direct_upload_limit(100);
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "big.iso", 4096);
    let analysis = client.upload_file(&path, 1 << 20).await.unwrap();
    assert_eq!(
        analysis.id,
        "ZWY0Y2M1NWMzOTkwY2E2MmJmMDUyM2NlMTA1ZGU3NTA6MTcwMjIzNTY5MA=="
    );

    let seen = fake.seen();
    let routes: Vec<_> = seen
        .iter()
        .map(|s| (s.method.as_str(), s.path.as_str()))
        .collect();
    assert_eq!(
        routes,
        [
            ("GET", "/api/v3/files/upload_url"),
            ("POST", "/_ah/upload/once-only-token/")
        ]
    );
    let body = String::from_utf8_lossy(&seen[1].body);
    assert!(
        body.contains("name=\"file\"; filename=\"big.iso\""),
        "{body}"
    );
    assert!(seen[1].body.len() > 4096);
    // Only the upload URL request counts against the quota.
    assert_eq!(gate.acquired.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_failed_upload_is_never_sent_twice() {
    let fake = Fake::start(|_, _| {
        json(
            503,
            r#"{"error":{"code":"TransientError","message":"later"}}"#,
        )
    })
    .await;
    let (client, _) = client(&fake);
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "sample.bin", 100);
    let err = client.upload_file(&path, 10_000).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::Transient {
                status: Some(503),
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn an_html_413_is_too_large() {
    let fake = Fake::start(|_, _| {
        let html =
            b"<html><head><title>413 Request Entity Too Large</title></head></html>".to_vec();
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            vec![("content-type", "text/html".into())],
            html,
        )
    })
    .await;
    let (client, _) = client(&fake);
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "sample.bin", 100);
    let err = client.upload_file(&path, 10_000).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                size: None,
                limit: None
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn a_file_over_the_limit_is_refused_locally() {
    let fake = Fake::start(|_, _| json(200, fixture("post-files-2019.virustotalx.json"))).await;
    let (client, gate) = client(&fake);
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "sample.bin", 2000);
    let err = client.upload_file(&path, 1000).await.unwrap_err();
    assert!(
        matches!(
            err,
            Error::TooLarge {
                size: Some(2000),
                limit: Some(1000)
            }
        ),
        "{err:?}"
    );
    assert_eq!(fake.count(), 0);
    assert_eq!(gate.acquired.load(Ordering::SeqCst), 0);
    let missing = client
        .upload_file(&dir.path().join("gone"), 1000)
        .await
        .unwrap_err();
    assert!(matches!(missing, Error::Io { .. }), "{missing:?}");
}

#[tokio::test]
async fn urls_are_submitted_as_a_form_field() {
    let fake = Fake::start(|_, _| json(200, fixture("post-urls-analyse.docs-example.json"))).await;
    let (client, _) = client(&fake);
    let r = client.submit_url("http://example.com/a?b=c").await.unwrap();
    assert!(r.id.starts_with("u-a354494a"));
    let seen = fake.seen();
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("POST", "/api/v3/urls")
    );
    assert_eq!(
        seen[0].body.as_ref(),
        b"url=http%3A%2F%2Fexample.com%2Fa%3Fb%3Dc"
    );
}

#[tokio::test]
async fn analysis_ids_are_escaped_in_the_path() {
    let fake =
        Fake::start(|_, _| json(200, fixture("analysis-url-completed-2019.virustotalx.json")))
            .await;
    let (client, _) = client(&fake);
    let a = client.get_analysis("odd/id?x#y==").await.unwrap();
    assert_eq!(a.status, AnalysisStatus::Completed);
    assert_eq!(fake.seen()[0].path, "/api/v3/analyses/odd%2Fid%3Fx%23y==");
    let err = client.get_analysis("..").await.unwrap_err();
    assert!(matches!(err, Error::Invalid(_)), "{err:?}");
    assert_eq!(fake.count(), 1);
}

#[tokio::test]
async fn comments_and_votes_follow_the_v3_shapes() {
    let fake = Fake::start(|seen, _| match (seen.method.as_str(), seen.path.as_str()) {
        ("GET", _) => json(
            200,
            fixture("domain-comments-collection-2026.themains-r.json"),
        ),
        ("POST", p) if p.ends_with("/votes") => json(
            409,
            r#"{"error":{"code":"AlreadyExistsError","message":"already voted"}}"#,
        ),
        _ => json(200, r#"{"data":{"type":"comment","id":"d-example.com-1"}}"#),
    })
    .await;
    let (client, _) = client(&fake);
    let page = client
        .get_comments(Collection::Domains, "google.com", 10, Some("abc="))
        .await
        .unwrap();
    assert_eq!(page.items.len(), 10);
    let created = client
        .add_comment(Collection::Domains, "example.com", "#phishing kit")
        .await
        .unwrap();
    assert_eq!(created["data"]["id"], "d-example.com-1");
    let err = client
        .add_vote(Collection::Domains, "example.com", "malicious")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    let bad = client
        .add_vote(Collection::Domains, "example.com", "evil")
        .await
        .unwrap_err();
    assert!(matches!(bad, Error::Invalid(_)), "{bad:?}");

    let seen = fake.seen();
    assert_eq!(seen.len(), 3, "an invalid verdict must not reach the API");
    assert_eq!(seen[0].path, "/api/v3/domains/google.com/comments");
    assert_eq!(seen[0].query.as_deref(), Some("limit=10&cursor=abc%3D"));
    let comment: serde_json::Value = serde_json::from_slice(&seen[1].body).unwrap();
    assert_eq!(
        comment,
        serde_json::json!({"data": {"type": "comment", "attributes": {"text": "#phishing kit"}}})
    );
    let vote: serde_json::Value = serde_json::from_slice(&seen[2].body).unwrap();
    assert_eq!(
        vote,
        serde_json::json!({"data": {"type": "vote", "attributes": {"verdict": "malicious"}}})
    );
}

#[tokio::test]
async fn relationships_and_network_locations_use_their_paths() {
    let fake = Fake::start(|seen, _| {
        if seen.path.ends_with("/network_location") {
            json(200, fixture("domain-haiku-os.org.malwaredb.json"))
        } else {
            json(200, fixture("url-votes-collection-2019.virustotalx.json"))
        }
    })
    .await;
    let (client, _) = client(&fake);
    let page = client
        .get_relationship(Collection::Files, SHA256, "contacted_domains", 5, None)
        .await
        .unwrap();
    assert!(page.cursor.is_some());
    let location = client
        .get_url_network_location("aHR0cDovL2V4YW1wbGUuY29tLw")
        .await
        .unwrap();
    assert_eq!(location.id, "haiku-os.org");
    let seen = fake.seen();
    assert_eq!(
        seen[0].path,
        format!("/api/v3/files/{SHA256}/contacted_domains")
    );
    assert_eq!(seen[0].query.as_deref(), Some("limit=5"));
    assert_eq!(
        seen[1].path,
        "/api/v3/urls/aHR0cDovL2V4YW1wbGUuY29tLw/network_location"
    );
}

#[tokio::test]
async fn downloads_stream_to_disk_without_sending_the_key_to_storage() {
    let storage = Fake::start(|_, _| (StatusCode::OK, vec![], vec![7u8; 100_000])).await;
    let signed = format!("{}/sample/abc?Signature=xyz", storage.origin);
    let api = Fake::start(move |_, _| json(200, format!(r#"{{"data": "{signed}"}}"#))).await;
    let (client, gate) = client(&api);
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("sample");
    let n = client.download_file(SHA256, &dest).await.unwrap();
    assert_eq!(n, 100_000);
    assert_eq!(std::fs::read(&dest).unwrap(), vec![7u8; 100_000]);
    assert_eq!(
        api.seen()[0].path,
        format!("/api/v3/files/{SHA256}/download_url")
    );
    assert_eq!(storage.seen()[0].api_key(), None);
    assert_eq!(gate.acquired.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn redirects_never_carry_the_key_to_another_host() {
    let elsewhere = Fake::start(|_, _| json(200, fixture("file-elf-clean.malwaredb.json"))).await;
    let target = format!("{}/steal", elsewhere.origin);
    let api = Fake::start(move |_, _| {
        (
            StatusCode::FOUND,
            vec![("location", target.clone())],
            Vec::new(),
        )
    })
    .await;
    let (client, _) = client(&api);
    let err = client.get_file(SHA256).await.unwrap_err();
    assert!(
        matches!(err, Error::Permanent { status: 302, .. }),
        "{err:?}"
    );
    assert_eq!(elsewhere.count(), 0);
}

#[tokio::test]
async fn no_error_ever_shows_the_api_key() {
    let echo = format!(
        r#"{{"error":{{"code":"WrongCredentialsError","message":"Wrong API key {KEY}"}}}}"#
    );
    let fake = Fake::start(move |seen, _| match seen.path.rsplit('/').next().unwrap() {
        "auth.example" => json(401, echo.clone()),
        "missing.example" => json(404, fixture("error-notfound-url.docs-example.json")),
        "busy.example" => json(503, format!("<html>upstream said {KEY}</html>")),
        "quota.example" => json(429, ""),
        "bad.example" => json(
            400,
            format!(r#"{{"error":{{"code":"BadRequestError","message":"{KEY}"}}}}"#),
        ),
        _ => json(200, "{\"data\": {"),
    })
    .await;
    let (client, _) = client(&fake);
    let mut errors = Vec::new();
    for domain in [
        "auth.example",
        "missing.example",
        "busy.example",
        "quota.example",
        "bad.example",
        "cut.example",
    ] {
        errors.push(client.get_domain(domain).await.unwrap_err());
    }
    // Nothing listens on a port just released: a connection error.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let unreachable = Client::new(
        &format!("http://{closed}/api/v3"),
        ApiKey::new(KEY),
        Arc::new(CountingGate::default()),
        Duration::from_secs(2),
    )
    .unwrap()
    .with_retry(fast_retries());
    errors.push(unreachable.get_domain("example.com").await.unwrap_err());
    errors.push(
        Client::new(
            "not a url",
            ApiKey::new(KEY),
            Arc::new(CountingGate::default()),
            Duration::from_secs(1),
        )
        .unwrap_err(),
    );

    assert!(errors[0].is_auth());
    assert!(
        matches!(errors[6], Error::Transient { status: None, .. }),
        "{:?}",
        errors[6]
    );
    for err in &errors {
        let shown = format!("{err} / {err:?}");
        assert!(!shown.contains(KEY), "the key leaked: {shown}");
    }
    assert!(!format!("{client:?}").contains(KEY));
    assert!(fake.seen().iter().all(|s| s.api_key() == Some(KEY)));
}

#[tokio::test]
async fn a_mislabelled_gzip_quota_reply_is_still_a_quota_error() {
    // vt-go and vt-cli once failed with "gzip: invalid header" on VirusTotal's 429 replies.
    let fake = Fake::start(|_, n| match n {
        0 => (
            StatusCode::TOO_MANY_REQUESTS,
            vec![("content-encoding", "gzip".into())],
            br#"{"error":{"code":"QuotaExceededError","message":"Quota exceeded"}}"#.to_vec(),
        ),
        _ => json(200, fixture("domain-haiku-os.org.malwaredb.json")),
    })
    .await;
    let (client, gate) = client(&fake);
    let o = client.get_domain("haiku-os.org").await.unwrap();
    assert_eq!(o.id, "haiku-os.org");
    assert_eq!(gate.paused.load(Ordering::SeqCst), 1);
    assert_eq!(fake.count(), 2);
}

#[tokio::test]
async fn a_submission_that_could_not_connect_is_retried() {
    // Reserve a port, leave it closed for the first attempt, then serve on it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gate = Arc::new(CountingGate::default());
    let client = Client::new(
        &format!("http://{addr}/api/v3"),
        ApiKey::new(KEY),
        gate.clone(),
        Duration::from_secs(2),
    )
    .unwrap()
    .with_retry(RetryPolicy {
        max_retries: 8,
        min_delay: Duration::from_millis(100),
        max_delay: Duration::from_millis(200),
    });
    let submission = tokio::spawn(async move { client.submit_url("http://example.com/").await });
    tokio::time::sleep(Duration::from_millis(30)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let fake = Fake::serve(listener, |_, _| {
        json(200, fixture("post-urls-analyse.docs-example.json"))
    });
    let r = submission.await.unwrap().unwrap();
    assert!(r.id.starts_with("u-"));
    assert_eq!(fake.count(), 1, "the URL must be submitted exactly once");
    assert!(gate.acquired.load(Ordering::SeqCst) >= 2);
}

/// Bytes that do not hash to the SHA-256 they were hashed to (written over as they stream) cut
/// the upload off before its end: the server never receives a whole request.
#[tokio::test]
async fn an_upload_whose_bytes_stop_matching_their_hash_is_cut_off() {
    let fake = Fake::start(|_, _| json(200, fixture("post-files-2019.virustotalx.json"))).await;
    let (client, _gate) = client(&fake);
    let dir = tempfile::tempdir().unwrap();
    let path = temp_file(&dir, "sample.bin", 1000);
    let file = std::fs::File::open(&path).unwrap();
    let upload = vtriage::vt::UploadFile::hashed(&path, file, "0".repeat(64), 1000);
    let err = client
        .upload_file_with(&upload, 10_000, None)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Changed(_)), "{err:?}");
    assert!(fake.seen().is_empty(), "no request arrived whole");
}
