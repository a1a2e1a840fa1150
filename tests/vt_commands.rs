//! `vtriage vt ...` against the simulator: each subcommand hits the right endpoint (the
//! simulator's request counters), prints VirusTotal's JSON, and spends the shared quota.

mod common;

use clap::Parser;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use vtriage::sim::{EngineStats, Known, KnownFile, KnownHost, KnownUrl, SimConfig};
use vtriage::vt;
use vtriage::vtcmd::{self, VtCommand};

use common::{KEY, World};

const SHA: &str = "275a021bbfb6489e54d471899f7db9d1663fc695ec2fe2a2c4538aabf651fd0f";
const MD5: &str = "44d88612fea8a8f36de82e1278abb02f";

/// The `vt` subcommands as the command line parses them.
#[derive(Debug, Parser)]
struct Vt {
    #[command(subcommand)]
    command: VtCommand,
}

fn known() -> Known {
    Known {
        files: vec![KnownFile {
            sha256: SHA.into(),
            md5: Some(MD5.into()),
            sha1: None,
            stats: EngineStats::EICAR,
            label: Some("virus.eicar/test".into()),
            size: Some(68),
            name: Some("eicar.com".into()),
        }],
        urls: vec![KnownUrl {
            url: "http://evil.example/x".into(),
            stats: EngineStats::CLEAN_URL,
            label: None,
        }],
        domains: vec![KnownHost {
            id: "evil.example.com".into(),
            stats: Some(EngineStats::CLEAN_URL),
        }],
        ips: vec![KnownHost {
            id: "8.8.8.8".into(),
            stats: None,
        }],
    }
}

async fn world(premium: bool) -> World {
    World::new(SimConfig {
        known: known(),
        premium_keys: if premium { vec![KEY.into()] } else { vec![] },
        ..World::fast_sim()
    })
    .await
}

async fn client(w: &World) -> vt::Client {
    vtriage::pipeline::client(&w.config, CancellationToken::new())
        .await
        .unwrap()
}

/// Runs `vtriage vt ARGS...` (the library behind it) and parses what it prints.
async fn vt(client: &vt::Client, args: &[&str]) -> Result<Value, vtcmd::Error> {
    let parsed = Vt::try_parse_from(std::iter::once("vt").chain(args.iter().copied()))
        .expect("the arguments parse");
    let mut out = Vec::new();
    vtcmd::run(client, &parsed.command, &mut out).await?;
    Ok(serde_json::from_slice(&out).expect("the output is JSON"))
}

fn hits(w: &World, endpoint: &str) -> u64 {
    w.sim.stats().requests.get(endpoint).copied().unwrap_or(0)
}

#[tokio::test]
async fn object_subcommands_get_their_object() {
    let w = world(false).await;
    let c = client(&w).await;
    let file = vt(&c, &["file", MD5]).await.unwrap();
    assert_eq!(file["data"]["id"], SHA, "found by MD5, named by SHA-256");
    assert_eq!(
        file["data"]["attributes"]["last_analysis_stats"]["malicious"],
        60
    );
    assert_eq!(hits(&w, "GET /files/{id}"), 1);

    let url = vt(&c, &["url", "http://evil.example/x"]).await.unwrap();
    assert_eq!(url["data"]["type"], "url");
    assert_eq!(hits(&w, "GET /urls/{id}"), 1);

    let domain = vt(&c, &["domain", "evil.example.com"]).await.unwrap();
    assert_eq!(domain["data"]["id"], "evil.example.com");
    assert_eq!(hits(&w, "GET /domains/{id}"), 1);

    let ip = vt(&c, &["ip", "8.8.8.8"]).await.unwrap();
    assert_eq!(ip["data"]["id"], "8.8.8.8");
    assert_eq!(hits(&w, "GET /ip_addresses/{id}"), 1);

    assert!(matches!(
        vt(&c, &["domain", "never-seen.example.com"]).await,
        Err(vtcmd::Error::Vt(vt::Error::NotFound))
    ));
}

#[tokio::test]
async fn comments_and_votes_are_posted_and_listed() {
    let w = world(false).await;
    let c = client(&w).await;
    let posted = vt(
        &c,
        &[
            "comment",
            "add",
            "domain",
            "evil.example.com",
            "phishing kit #phishing",
        ],
    )
    .await
    .unwrap();
    assert_eq!(posted["data"]["type"], "comment");
    assert_eq!(hits(&w, "POST /domains/{id}/comments"), 1);
    let listed = vt(&c, &["domain", "evil.example.com", "--comments"])
        .await
        .unwrap();
    assert_eq!(
        listed["data"][0]["attributes"]["text"],
        "phishing kit #phishing"
    );
    assert_eq!(hits(&w, "GET /domains/{id}/comments"), 1);

    let voted = vt(&c, &["vote", "file", SHA, "malicious"]).await.unwrap();
    assert_eq!(voted["data"]["attributes"]["verdict"], "malicious");
    assert_eq!(hits(&w, "POST /files/{id}/votes"), 1);
    let votes = vt(&c, &["file", SHA, "--votes"]).await.unwrap();
    assert_eq!(votes["data"][0]["attributes"]["verdict"], "malicious");
    assert_eq!(hits(&w, "GET /files/{id}/votes"), 1);

    // A URL given as a URL is addressed by its URL id.
    vt(
        &c,
        &[
            "comment",
            "add",
            "url",
            "http://evil.example/x",
            "seen in a phish",
        ],
    )
    .await
    .unwrap();
    assert_eq!(hits(&w, "POST /urls/{id}/comments"), 1);
    assert!(Vt::try_parse_from(["vt", "vote", "file", SHA, "dunno"]).is_err());
}

#[tokio::test]
async fn all_follows_the_cursors_one_request_per_page() {
    let w = world(false).await;
    let c = client(&w).await;
    for n in 0..3 {
        vt(
            &c,
            &["comment", "add", "ip", "8.8.8.8", &format!("note {n}")],
        )
        .await
        .unwrap();
    }
    let one = vt(&c, &["ip", "8.8.8.8", "--comments", "--limit", "1"])
        .await
        .unwrap();
    assert_eq!(one["data"].as_array().unwrap().len(), 1);
    assert!(one["meta"]["cursor"].is_string());
    assert_eq!(hits(&w, "GET /ip_addresses/{id}/comments"), 1);

    let all = vt(
        &c,
        &["ip", "8.8.8.8", "--comments", "--limit", "1", "--all"],
    )
    .await
    .unwrap();
    let texts: Vec<&str> = all["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["attributes"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, ["note 2", "note 1", "note 0"]);
    assert_eq!(all["meta"]["pages"], 3);
    assert_eq!(hits(&w, "GET /ip_addresses/{id}/comments"), 1 + 3);
}

#[tokio::test]
async fn relationship_asks_for_that_relationship() {
    let w = world(false).await;
    let c = client(&w).await;
    let page = vt(
        &c,
        &[
            "domain",
            "evil.example.com",
            "--relationship",
            "resolutions",
            "--limit",
            "5",
        ],
    )
    .await
    .unwrap();
    assert!(page["data"].is_array());
    assert_eq!(hits(&w, "GET /domains/{id}/{relationship}"), 1);
}

#[tokio::test]
async fn analysis_gets_the_analysis() {
    let w = world(false).await;
    let c = client(&w).await;
    let submitted = c.submit_url("http://new.example/landing").await.unwrap();
    let analysis = vt(&c, &["analysis", &submitted.id]).await.unwrap();
    assert_eq!(analysis["data"]["type"], "analysis");
    assert_eq!(analysis["data"]["id"], submitted.id.as_str());
    assert_eq!(hits(&w, "GET /analyses/{id}"), 1);
}

#[tokio::test]
async fn download_needs_a_premium_key_and_says_so() {
    let w = world(false).await;
    let c = client(&w).await;
    let out = w.dir.path().join("sample.bin");
    let err = vt(&c, &["download", SHA, "-o", out.to_str().unwrap()])
        .await
        .unwrap_err();
    assert!(matches!(err, vtcmd::Error::PremiumOnly { .. }));
    assert!(err.to_string().contains("premium"), "{err}");
    assert!(!out.exists(), "nothing written");
    assert_eq!(hits(&w, "GET /files/{id}/download_url"), 1);
}

#[tokio::test]
async fn download_with_a_premium_key_writes_the_file() {
    let w = world(true).await;
    let c = client(&w).await;
    let sample = w.file(
        "sample.txt",
        b"a sample uploaded so that it can be downloaded",
    );
    let sha = common::sha256(b"a sample uploaded so that it can be downloaded");
    c.upload_file(&sample, 1 << 20).await.unwrap();
    let out = w.dir.path().join("downloaded.bin");
    let answer = vt(&c, &["download", &sha, "-o", out.to_str().unwrap()])
        .await
        .unwrap();
    assert_eq!(answer["bytes"], 46);
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"a sample uploaded so that it can be downloaded"
    );
    assert_eq!(hits(&w, "GET /files/{id}/download_url"), 1);
}

#[tokio::test]
async fn url_id_and_file_id_cost_no_request() {
    let w = world(false).await;
    let c = client(&w).await;
    let path = w.file("empty", b"");
    let mut out = Vec::new();
    for args in [
        vec!["vt", "url-id", "http://example.com/"],
        vec!["vt", "file-id", path.to_str().unwrap()],
    ] {
        let parsed = Vt::try_parse_from(args).unwrap();
        vtcmd::run(&c, &parsed.command, &mut out).await.unwrap();
    }
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "aHR0cDovL2V4YW1wbGUuY29tLw\ne3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n"
    );
    assert_eq!(w.sim.stats().api_requests, 0);
}

/// An id that cannot be of its kind is refused before a request is spent on it (it used to
/// cost one, answered 404).
#[tokio::test]
async fn ids_that_cannot_be_of_their_kind_are_refused_without_a_request() {
    let w = world(false).await;
    let c = client(&w).await;
    let out = w.dir.path().join("never.bin");
    for args in [
        vec!["file", "zzz"],
        vec!["ip", "999.1.1.1"],
        vec!["domain", "not_a_domain"],
        vec!["domain", "8.8.8.8", "--comments"],
        vec!["comment", "add", "file", "zzz", "text"],
        vec!["vote", "ip", "1.2.3", "harmless"],
        vec!["download", "zzz", "-o", out.to_str().unwrap()],
    ] {
        let err = vt(&c, &args).await.unwrap_err();
        assert!(
            matches!(err, vtcmd::Error::InvalidId { .. }),
            "{args:?}: {err}"
        );
        assert!(err.to_string().contains("nothing was sent"), "{err}");
    }
    // Defanged and upper-case forms are what `lookup` accepts too.
    vt(&c, &["domain", "EVIL[.]example[.]com"]).await.unwrap();
    assert_eq!(
        w.sim.stats().api_requests,
        1,
        "only the valid domain was asked"
    );

    // The command line says why and exits 2.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_vtriage"))
        .args(["vt", "ip", "999.1.1.1"])
        .env("VT_API_KEY", KEY)
        .env("VTRIAGE_DB", &w.config.db)
        .env("VTRIAGE_API_URL", w.sim.base_url())
        .current_dir(w.dir.path())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    assert_eq!(
        String::from_utf8_lossy(&run.stderr),
        "vtriage: \"999.1.1.1\" is not an IP address; nothing was sent to VirusTotal\n"
    );
    assert_eq!(w.sim.stats().api_requests, 1);
    // Checked first: without a key or a database, the id is still what is wrong.
    let run = std::process::Command::new(env!("CARGO_BIN_EXE_vtriage"))
        .args(["vt", "file", "zzz"])
        .env_remove("VT_API_KEY")
        .env("VTRIAGE_DB", w.dir.path().join("no-such-dir/v.db"))
        .current_dir(w.dir.path())
        .output()
        .unwrap();
    assert_eq!(run.status.code(), Some(2));
    let said = String::from_utf8_lossy(&run.stderr);
    assert!(said.contains("\"zzz\" is not an MD5"), "{said}");
}

#[tokio::test]
async fn every_request_is_counted_in_the_shared_quota_ledger() {
    let w = world(false).await;
    let c = client(&w).await;
    vt(&c, &["file", SHA]).await.unwrap();
    vt(&c, &["domain", "evil.example.com", "--comments"])
        .await
        .unwrap();
    vt(&c, &["comment", "add", "domain", "evil.example.com", "x"])
        .await
        .unwrap();
    let store = vtriage::pipeline::open_store(&w.config).await.unwrap();
    let key_id = w.config.virustotal.api_key.as_ref().unwrap().fingerprint();
    let usage = store
        .quota_usage(&key_id, 60_000, vtriage::store::now_millis())
        .await
        .unwrap();
    assert_eq!(usage.today, 3);
    assert_eq!(w.sim.stats().api_requests, 3);
}
