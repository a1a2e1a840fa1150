//! The VirusTotal simulator, driven over HTTP with a plain reqwest client, as the real
//! client will drive it.

use std::time::{Duration, Instant};

use base64::Engine as _;
use bytes::Bytes;
use reqwest::multipart::{Form, Part};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use sha2::{Digest as _, Sha256};
use vtriage::sim::{
    EngineStats, Faults, Known, KnownFile, KnownHost, KnownUrl, SimConfig, SimHandle, SimQuota,
    spawn,
};

const KEY: &str = "test-key";
const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

fn fast() -> SimConfig {
    SimConfig {
        analysis_delay: (Duration::from_millis(60), Duration::from_millis(120)),
        ..SimConfig::default()
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

struct T {
    sim: SimHandle,
    http: Client,
    base: String,
}

impl T {
    async fn start(config: SimConfig) -> T {
        let sim = spawn(config).await.unwrap();
        let base = sim.base_url();
        T {
            sim,
            http: Client::new(),
            base,
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        let resp = self
            .http
            .get(format!("{}{path}", self.base))
            .header("x-apikey", KEY)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    async fn post_json(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let resp = self
            .http
            .post(format!("{}{path}", self.base))
            .header("x-apikey", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    async fn upload_to(&self, url: &str, content: Vec<u8>) -> reqwest::Response {
        let form = Form::new().part("file", Part::bytes(content).file_name("sample.bin"));
        self.http
            .post(url)
            .header("x-apikey", KEY)
            .multipart(form)
            .send()
            .await
            .unwrap()
    }

    async fn upload(&self, content: &[u8]) -> String {
        let resp = self
            .upload_to(&format!("{}/files", self.base), content.to_vec())
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["data"]["type"], "analysis");
        v["data"]["id"].as_str().unwrap().to_owned()
    }

    async fn submit_url(&self, url: &str) -> String {
        let resp = self
            .http
            .post(format!("{}/urls", self.base))
            .header("x-apikey", KEY)
            .form(&[("url", url)])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        let v: Value = resp.json().await.unwrap();
        v["data"]["id"].as_str().unwrap().to_owned()
    }

    /// Polls an analysis until it completes; returns the statuses seen and the last reply.
    async fn poll(&self, id: &str) -> (Vec<String>, Value) {
        let escaped = id.replace('=', "%3D");
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let (status, v) = self.get(&format!("/analyses/{escaped}")).await;
            assert_eq!(status, StatusCode::OK, "{v}");
            let s = v["data"]["attributes"]["status"]
                .as_str()
                .unwrap()
                .to_owned();
            if seen.last() != Some(&s) {
                seen.push(s.clone());
            }
            if s == "completed" {
                return (seen, v);
            }
            assert!(Instant::now() < deadline, "analysis {id} never completed");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test]
async fn missing_and_wrong_keys_get_401_and_do_not_count() {
    let t = T::start(SimConfig {
        api_keys: vec![KEY.into()],
        ..fast()
    })
    .await;
    let url = format!("{}/files/{}", t.base, "0".repeat(64));
    let resp = t.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "AuthenticationRequiredError");

    let resp = t
        .http
        .get(&url)
        .header("x-apikey", "not-the-key")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "WrongCredentialsError");

    let (status, _) = t.get(&format!("/files/{}", "0".repeat(64))).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let stats = t.sim.stats();
    assert_eq!(stats.auth_failures, 2);
    assert_eq!(stats.api_requests, 1);
    t.sim.shutdown().await;
}

#[tokio::test]
async fn unknown_hash_is_404_not_found_error() {
    let t = T::start(fast()).await;
    let md5 = "0123456789abcdef0123456789abcdef";
    let (status, v) = t.get(&format!("/files/{md5}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(v["error"]["code"], "NotFoundError");
    assert!(v["error"]["message"].as_str().unwrap().contains(md5));
    assert_eq!(t.sim.stats().requests["GET /files/{id}"], 1);
}

#[tokio::test]
async fn uploaded_eicar_is_pending_then_malicious_and_found_by_every_hash() {
    let t = T::start(fast()).await;
    let mut content = b"prefix bytes\n".to_vec();
    content.extend_from_slice(EICAR);
    let sha = sha256(&content);
    let analysis = t.upload(&content).await;

    // The object exists at once, but without results: pending, not clean.
    let (status, v) = t.get(&format!("/files/{sha}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["id"], sha.as_str());
    assert_eq!(v["data"]["type"], "file");
    let attrs = &v["data"]["attributes"];
    assert!(attrs.get("last_analysis_stats").is_none(), "{attrs}");
    assert!(attrs.get("last_analysis_results").is_none());
    assert!(attrs.get("last_analysis_date").is_none());
    assert_eq!(attrs["names"][0], "sample.bin");

    let (statuses, done) = t.poll(&analysis).await;
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("queued"),
        "{statuses:?}"
    );
    assert_eq!(done["data"]["attributes"]["stats"]["malicious"], 60);
    assert_eq!(done["meta"]["file_info"]["sha256"], sha.as_str());
    assert_eq!(done["meta"]["file_info"]["size"], content.len());

    let md5 = done["meta"]["file_info"]["md5"]
        .as_str()
        .unwrap()
        .to_owned();
    let sha1 = done["meta"]["file_info"]["sha1"]
        .as_str()
        .unwrap()
        .to_owned();
    for id in [sha.clone(), md5.to_uppercase(), sha1] {
        let (status, v) = t.get(&format!("/files/{id}")).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["data"]["id"], sha.as_str(), "looked up by {id}");
        let attrs = &v["data"]["attributes"];
        assert_eq!(attrs["last_analysis_stats"]["malicious"], 60);
        assert_eq!(
            attrs["popular_threat_classification"]["suggested_threat_label"],
            "virus.eicar/test"
        );
        assert!(attrs["last_analysis_date"].is_i64());
    }
    assert_eq!(t.sim.stats().uploads[&sha], 1);
}

#[tokio::test]
async fn uploaded_harmless_content_comes_out_clean() {
    let t = T::start(fast()).await;
    let analysis = t.upload(b"just some text").await;
    let (_, done) = t.poll(&analysis).await;
    let stats = &done["data"]["attributes"]["stats"];
    assert_eq!(stats["malicious"], 0);
    assert_eq!(stats["undetected"], 70);
    assert_eq!(
        done["data"]["attributes"]["results"]
            .as_object()
            .unwrap()
            .len(),
        70
    );
}

#[tokio::test]
async fn direct_upload_over_32_mib_is_413_html() {
    let t = T::start(fast()).await;
    const MIB: usize = 1024 * 1024;
    let len = 32 * MIB as u64 + 1;
    // Generated chunk by chunk: never the whole body in memory, let alone twice.
    let chunks = (0..33).map(move |i| {
        let n = if i < 32 { MIB } else { 1 };
        Ok::<_, std::io::Error>(Bytes::from(vec![b'a'; n]))
    });
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let form = Form::new().part(
        "file",
        Part::stream_with_length(body, len).file_name("big.bin"),
    );
    let resp = t
        .http
        .post(format!("{}/files", t.base))
        .header("x-apikey", KEY)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let ct = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    assert!(resp.text().await.unwrap().contains("413"));
    assert!(t.sim.stats().uploads.is_empty());
}

#[tokio::test]
async fn upload_urls_are_absolute_and_work_once() {
    let t = T::start(fast()).await;
    let (status, v) = t.get("/files/upload_url").await;
    assert_eq!(status, StatusCode::OK);
    let url = v["data"].as_str().unwrap().to_owned();
    assert!(
        url.starts_with(&format!("http://{}/_upload/", t.sim.addr())),
        "{url}"
    );

    let first = t.upload_to(&url, b"via upload url".to_vec()).await;
    assert_eq!(first.status(), StatusCode::OK);
    let v: Value = first.json().await.unwrap();
    assert_eq!(v["data"]["type"], "analysis");

    let second = t.upload_to(&url, b"via upload url".to_vec()).await;
    assert_eq!(second.status(), StatusCode::NOT_FOUND);
    let v: Value = second.json().await.unwrap();
    assert_eq!(v["error"]["code"], "NotFoundError");

    let stats = t.sim.stats();
    assert_eq!(stats.uploads[&sha256(b"via upload url")], 1);
    assert_eq!(stats.requests["POST upload_url"], 2);
    // Only GET /files/upload_url was an API request: posts to the upload URL are free.
    assert_eq!(stats.api_requests, 1);
}

#[tokio::test]
async fn quota_refuses_the_third_request_in_a_window_without_gzip_then_recovers() {
    let quota = SimQuota {
        requests: 2,
        window: Duration::from_millis(200),
        daily: None,
        monthly: None,
    };
    let t = T::start(SimConfig {
        quota: Some(quota),
        ..fast()
    })
    .await;
    // Ask for gzip explicitly, with decoding off, to see the encoding as sent.
    let raw = Client::builder().no_gzip().build().unwrap();
    let get = || {
        raw.get(format!("{}/files/upload_url", t.base))
            .header("x-apikey", KEY)
            .header("accept-encoding", "gzip")
            .send()
    };
    for _ in 0..2 {
        let ok = get().await.unwrap();
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()["content-encoding"], "gzip");
    }
    let refused = get().await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().get("content-encoding").is_none());
    let v: Value = serde_json::from_slice(&refused.bytes().await.unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "QuotaExceededError");

    tokio::time::sleep(Duration::from_millis(220)).await;
    assert_eq!(get().await.unwrap().status(), StatusCode::OK);
    let stats = t.sim.stats();
    assert_eq!(stats.quota_rejections, 1);
    assert_eq!(stats.api_requests, 3);
    assert_eq!(stats.max_in_window, 2);
}

#[tokio::test]
async fn the_daily_cap_holds_even_when_the_window_allows_more() {
    let quota = SimQuota {
        requests: 100,
        window: Duration::from_secs(60),
        daily: Some(3),
        monthly: None,
    };
    let t = T::start(SimConfig {
        quota: Some(quota),
        ..fast()
    })
    .await;
    for _ in 0..3 {
        assert_eq!(t.get("/files/upload_url").await.0, StatusCode::OK);
    }
    let (status, v) = t.get("/files/upload_url").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["error"]["code"], "QuotaExceededError");
}

#[tokio::test]
async fn the_monthly_cap_holds_even_when_the_day_allows_more() {
    let quota = SimQuota {
        requests: 100,
        window: Duration::from_secs(60),
        daily: Some(100),
        monthly: Some(2),
    };
    let t = T::start(SimConfig {
        quota: Some(quota),
        ..fast()
    })
    .await;
    for _ in 0..2 {
        assert_eq!(t.get("/files/upload_url").await.0, StatusCode::OK);
    }
    let (status, v) = t.get("/files/upload_url").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(v["error"]["code"], "QuotaExceededError");
}

fn known() -> Known {
    Known {
        files: vec![KnownFile {
            sha256: "52D3DF0ED60C46F336C131BF2CA454F73BAFDC4B04DFA2AEA80746F5BA9E6D1C".into(),
            md5: Some("99017f6eebbac24f351415dd410d522d".into()),
            sha1: None,
            stats: EngineStats {
                malicious: 59,
                undetected: 13,
                type_unsupported: 4,
                failure: 1,
                ..Default::default()
            },
            label: Some("trojan.hosts2/qhost".into()),
            size: Some(4096),
            name: Some("calc.exe".into()),
        }],
        urls: vec![KnownUrl {
            url: "http://evil.example/login".into(),
            stats: EngineStats {
                malicious: 7,
                harmless: 60,
                ..Default::default()
            },
            label: Some("phishing".into()),
        }],
        domains: vec![
            KnownHost {
                id: "evil.example".into(),
                stats: Some(EngineStats {
                    malicious: 3,
                    harmless: 80,
                    ..Default::default()
                }),
            },
            KnownHost {
                id: "old.example".into(),
                stats: None,
            },
        ],
        ips: vec![KnownHost {
            id: "192.0.2.7".into(),
            stats: Some(EngineStats {
                undetected: 90,
                ..Default::default()
            }),
        }],
    }
}

#[tokio::test]
async fn preloaded_objects_are_served_with_their_stats() {
    let t = T::start(SimConfig {
        known: known(),
        ..fast()
    })
    .await;
    let sha = "52d3df0ed60c46f336c131bf2ca454f73bafdc4b04dfa2aea80746f5ba9e6d1c";
    let (status, v) = t.get("/files/99017F6EEBBAC24F351415DD410D522D").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["id"], sha);
    assert_eq!(
        v["data"]["links"]["self"],
        format!("{}/files/{sha}", t.base)
    );
    let a = &v["data"]["attributes"];
    assert_eq!(a["last_analysis_stats"]["malicious"], 59);
    assert_eq!(a["last_analysis_stats"]["type-unsupported"], 4);
    assert_eq!(
        a["popular_threat_classification"]["suggested_threat_label"],
        "trojan.hosts2/qhost"
    );
    assert_eq!(a["meaningful_name"], "calc.exe");

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("http://evil.example/login");
    let (status, v) = t.get(&format!("/urls/{b64}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["type"], "url");
    assert_eq!(
        v["data"]["attributes"]["last_analysis_stats"]["malicious"],
        7
    );
    assert_eq!(v["data"]["attributes"]["threat_names"][0], "phishing");

    let (status, v) = t.get("/domains/evil.example").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["type"], "domain");
    assert_eq!(
        v["data"]["attributes"]["last_analysis_stats"]["malicious"],
        3
    );
    let (_, v) = t.get("/domains/old.example").await;
    assert!(v["data"]["attributes"].get("last_analysis_stats").is_none());
    let (status, v) = t.get("/ip_addresses/192.0.2.7").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["type"], "ip_address");
    assert_eq!(
        v["data"]["attributes"]["last_analysis_stats"]["undetected"],
        90
    );

    assert_eq!(
        t.get("/domains/unknown.example").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        t.get("/ip_addresses/198.51.100.1").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn a_submitted_url_is_found_by_both_id_forms_once_analysed() {
    let t = T::start(fast()).await;
    let url = "http://example.com";
    let analysis = t.submit_url(url).await;
    let canonical_sha = sha256(b"http://example.com/");
    assert!(
        analysis.starts_with(&format!("u-{canonical_sha}-")),
        "{analysis}"
    );

    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url);
    assert_eq!(
        t.get(&format!("/urls/{b64}")).await.0,
        StatusCode::NOT_FOUND,
        "not before the analysis"
    );

    let (_, done) = t.poll(&analysis).await;
    assert_eq!(done["meta"]["url_info"]["id"], canonical_sha.as_str());
    assert_eq!(done["meta"]["url_info"]["url"], "http://example.com/");
    assert_eq!(done["data"]["attributes"]["stats"]["malicious"], 0);

    for id in [b64.as_str(), canonical_sha.as_str()] {
        let (status, v) = t.get(&format!("/urls/{id}")).await;
        assert_eq!(status, StatusCode::OK, "by {id}");
        assert_eq!(v["data"]["id"], canonical_sha.as_str());
        assert_eq!(
            v["data"]["attributes"]["last_analysis_stats"]["harmless"],
            62
        );
    }
    let (status, v) = t.get(&format!("/urls/{b64}/network_location")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"]["type"], "domain");
    assert_eq!(v["data"]["id"], "example.com");

    // A re-analysis of a known URL gives a new analysis id.
    let (status, v) = t
        .post_json(&format!("/urls/{canonical_sha}/analyse"), Value::Null)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_ne!(v["data"]["id"], analysis.as_str());
    assert_eq!(t.sim.stats().url_submissions[url], 1);
}

#[tokio::test]
async fn comments_are_stored_and_paged_newest_first() {
    let t = T::start(SimConfig {
        known: known(),
        ..fast()
    })
    .await;
    for i in 0..5 {
        let body = serde_json::json!({ "data": { "type": "comment", "attributes": { "text": format!("note {i} #tag{i}") } } });
        let (status, v) = t.post_json("/domains/evil.example/comments", body).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(v["data"]["type"], "comment");
        assert!(
            v["data"]["id"]
                .as_str()
                .unwrap()
                .starts_with("d-evil.example-")
        );
    }
    let mut texts = Vec::new();
    let mut next = format!("{}/domains/evil.example/comments?limit=2", t.base);
    let mut pages = 0;
    loop {
        let v: Value = t
            .http
            .get(&next)
            .header("x-apikey", KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        assert_eq!(v["meta"]["count"], 5);
        for c in v["data"].as_array().unwrap() {
            texts.push(c["attributes"]["text"].as_str().unwrap().to_owned());
        }
        match v["links"]["next"].as_str() {
            Some(n) => {
                assert!(v["meta"]["cursor"].is_string());
                next = n.to_owned();
            }
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..5).rev().map(|i| format!("note {i} #tag{i}")).collect();
    assert_eq!(texts, expected);

    // Votes land in total_votes; other relationships are empty collections.
    let vote =
        serde_json::json!({ "data": { "type": "vote", "attributes": { "verdict": "malicious" } } });
    assert_eq!(
        t.post_json("/ip_addresses/192.0.2.7/votes", vote).await.0,
        StatusCode::OK
    );
    let (_, v) = t.get("/ip_addresses/192.0.2.7").await;
    assert_eq!(v["data"]["attributes"]["total_votes"]["malicious"], 1);
    let (_, v) = t.get("/ip_addresses/192.0.2.7/votes").await;
    assert_eq!(v["data"][0]["attributes"]["verdict"], "malicious");
    let (status, v) = t.get("/domains/evil.example/subdomains?limit=5").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(v["data"], serde_json::json!([]));
    assert_eq!(
        t.get("/domains/nowhere.example/comments").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn downloads_need_a_premium_key() {
    let t = T::start(SimConfig {
        premium_keys: vec!["gold".into()],
        ..fast()
    })
    .await;
    let content = b"small sample kept for download".to_vec();
    let sha = sha256(&content);
    t.upload(&content).await;
    let (status, v) = t.get(&format!("/files/{sha}/download_url")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(v["error"]["code"], "ForbiddenError");

    let premium = |path: String| {
        t.http
            .get(format!("{}{path}", t.base))
            .header("x-apikey", "gold")
            .send()
    };
    let v: Value = premium(format!("/files/{sha}/download_url"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = v["data"].as_str().unwrap();
    let fetched = t.http.get(url).send().await.unwrap().bytes().await.unwrap();
    assert_eq!(&fetched[..], &content[..]);
    let direct = premium(format!("/files/{sha}/download"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&direct[..], &content[..]);
    assert_eq!(
        premium(format!("/files/{}/download", "e".repeat(64)))
            .await
            .unwrap()
            .status(),
        StatusCode::NOT_FOUND
    );
}

/// What a client saw for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Seen {
    Transient,
    Deadline,
    Html500,
    Dropped,
    Truncated,
    Slow,
}

#[tokio::test]
async fn every_fault_kind_occurs_and_only_late_faults_take_effect() {
    let latency = Duration::from_millis(40);
    let t = T::start(SimConfig {
        faults: Faults { rate: 1.0, latency },
        seed: 7,
        ..fast()
    })
    .await;
    let mut seen = std::collections::BTreeMap::<Seen, u32>::new();
    let n = 90;
    for i in 0..n {
        let started = Instant::now();
        let sent = t
            .http
            .post(format!("{}/urls", t.base))
            .header("x-apikey", KEY)
            .form(&[("url", format!("http://site{i}.example/"))])
            .send()
            .await;
        let kind = match sent {
            Err(_) => Seen::Dropped,
            Ok(resp) => {
                let status = resp.status();
                let html = resp.headers()[reqwest::header::CONTENT_TYPE]
                    .to_str()
                    .unwrap()
                    .starts_with("text/html");
                let body = resp.bytes().await.unwrap();
                let json = serde_json::from_slice::<Value>(&body);
                match (status.as_u16(), json) {
                    (503, Ok(v)) if v["error"]["code"] == "TransientError" => Seen::Transient,
                    (504, Ok(v)) if v["error"]["code"] == "DeadlineExceededError" => Seen::Deadline,
                    (500, Err(_)) if html => Seen::Html500,
                    (200, Err(_)) => Seen::Truncated,
                    (200, Ok(_)) if started.elapsed() >= latency => Seen::Slow,
                    other => panic!("unexpected reply {other:?}"),
                }
            }
        };
        *seen.entry(kind).or_default() += 1;
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    let stats = t.sim.stats();
    assert_eq!(stats.faults_injected, n);
    assert_eq!(stats.faults_by_kind.values().sum::<u64>(), n);
    // Dropped and truncated replies come after the submission was taken; 5xx before it.
    let took_effect = seen[&Seen::Dropped] + seen[&Seen::Truncated] + seen[&Seen::Slow];
    assert_eq!(
        stats.url_submissions.values().sum::<u64>(),
        u64::from(took_effect)
    );
}

#[tokio::test]
async fn stats_are_served_as_json_without_a_key_and_without_counting() {
    let t = T::start(fast()).await;
    t.get("/files/upload_url").await;
    let origin = format!("http://{}", t.sim.addr());
    let v: Value = t
        .http
        .get(format!("{origin}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["api_requests"], 1);
    assert_eq!(v["requests"]["GET /files/upload_url"], 1);
    let again: Value = t
        .http
        .get(format!("{origin}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(again["api_requests"], 1);
    t.sim.shutdown().await;
}
