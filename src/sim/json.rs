//! How the simulator's replies look: the JSON shapes of VirusTotal's recorded responses
//! (`data` objects with `type`, `id`, `links.self`, `attributes`; collections; errors) and
//! the few HTML pages its front end sends. Nothing here holds state.

use std::io::Write as _;

use axum::http::StatusCode;
use bytes::Bytes;
use serde_json::{Map, Value, json};

use super::known::EngineStats;

/// A finished reply, before transport details (gzip, faults) are applied.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// `content-type` header.
    pub content_type: &'static str,
    /// The body as VirusTotal would send it uncompressed.
    pub body: Bytes,
    /// The gzip-encoded body, when already at hand (cached objects keep it).
    pub gzipped: Option<Bytes>,
}

/// JSON content type, as VirusTotal sends it.
pub(crate) const JSON: &str = "application/json; charset=utf-8";
/// HTML content type of the front end's error pages.
pub(crate) const HTML: &str = "text/html; charset=UTF-8";
/// Content type of downloaded samples.
pub(crate) const BINARY: &str = "application/octet-stream";

impl Reply {
    /// A JSON reply.
    pub fn json(status: StatusCode, value: &Value) -> Reply {
        Reply::json_bytes(
            status,
            Bytes::from(serde_json::to_vec(value).expect("a Value always serialises")),
        )
    }

    /// A JSON reply already serialised.
    pub fn json_bytes(status: StatusCode, body: Bytes) -> Reply {
        Reply {
            status,
            content_type: JSON,
            body,
            gzipped: None,
        }
    }

    /// `{"error": {"code", "message"}}`, as every API error looks.
    pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Reply {
        Reply::json(
            status,
            &json!({ "error": { "code": code, "message": message.into() } }),
        )
    }

    /// 404 `NotFoundError`.
    pub fn not_found(message: impl Into<String>) -> Reply {
        Reply::error(StatusCode::NOT_FOUND, "NotFoundError", message)
    }

    /// 400 `BadRequestError`.
    pub fn bad_request(message: impl Into<String>) -> Reply {
        Reply::error(StatusCode::BAD_REQUEST, "BadRequestError", message)
    }

    /// An HTML page, as the front end sends for 413 and some 5xx.
    pub fn html(status: StatusCode, title: &str, text: &str) -> Reply {
        let page = format!(
            "<!DOCTYPE html>\n<html lang=en>\n<meta charset=utf-8>\n<title>Error {code} ({title})!!1</title>\n\
             <p><b>{code}.</b> <ins>That's an error.</ins>\n<p>{text} <ins>That's all we know.</ins>\n",
            code = status.as_u16()
        );
        Reply {
            status,
            content_type: HTML,
            body: Bytes::from(page),
            gzipped: None,
        }
    }

    /// Raw bytes (a downloaded sample).
    pub fn binary(body: Bytes) -> Reply {
        Reply {
            status: StatusCode::OK,
            content_type: BINARY,
            body,
            gzipped: None,
        }
    }
}

/// Gzip-encodes a body (fast level: the simulator must keep up with benchmarks).
pub(crate) fn gzip(body: &[u8]) -> Bytes {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 3 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(body).expect("writing to memory cannot fail");
    Bytes::from(enc.finish().expect("writing to memory cannot fail"))
}

/// Which attribute set a stats object has: files have eight keys, the others five.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StatsShape {
    /// Files: all eight categories.
    File,
    /// URLs, domains, IP addresses: malicious, suspicious, undetected, harmless, timeout.
    Web,
}

/// `last_analysis_stats` / `stats` in the shape VirusTotal uses for the object type.
pub(crate) fn stats(s: &EngineStats, shape: StatsShape) -> Value {
    let mut m = Map::new();
    m.insert("malicious".into(), s.malicious.into());
    m.insert("suspicious".into(), s.suspicious.into());
    m.insert("undetected".into(), s.undetected.into());
    m.insert("harmless".into(), s.harmless.into());
    m.insert("timeout".into(), s.timeout.into());
    if shape == StatsShape::File {
        m.insert("confirmed-timeout".into(), s.confirmed_timeout.into());
        m.insert("type-unsupported".into(), s.type_unsupported.into());
        m.insert("failure".into(), s.failure.into());
    }
    Value::Object(m)
}

/// Engine names used for `last_analysis_results`; counts beyond this list get numbered names.
const ENGINES: [&str; 72] = [
    "Bkav",
    "Lionic",
    "Elastic",
    "MicroWorld-eScan",
    "ClamAV",
    "CTX",
    "CAT-QuickHeal",
    "Skyhigh",
    "ALYac",
    "Cylance",
    "Zillya",
    "Sangfor",
    "K7AntiVirus",
    "K7GW",
    "CrowdStrike",
    "Baidu",
    "VirIT",
    "Symantec",
    "tehtris",
    "ESET-NOD32",
    "TrendMicro-HouseCall",
    "Avast",
    "Cynet",
    "Kaspersky",
    "BitDefender",
    "NANO-Antivirus",
    "SUPERAntiSpyware",
    "Tencent",
    "Emsisoft",
    "F-Secure",
    "DrWeb",
    "VIPRE",
    "TrendMicro",
    "McAfeeD",
    "Trapmine",
    "FireEye",
    "Sophos",
    "Ikarus",
    "Jiangmin",
    "Webroot",
    "Varist",
    "Avira",
    "Antiy-AVL",
    "Kingsoft",
    "Gridinsoft",
    "Xcitium",
    "Arcabit",
    "ViRobot",
    "ZoneAlarm",
    "GData",
    "Google",
    "AhnLab-V3",
    "Acronis",
    "McAfee",
    "TACHYON",
    "VBA32",
    "Malwarebytes",
    "Panda",
    "Zoner",
    "Rising",
    "Yandex",
    "huorong",
    "MaxSecure",
    "Fortinet",
    "AVG",
    "DeepInstinct",
    "Paloalto",
    "Alibaba",
    "SentinelOne",
    "Microsoft",
    "Trustlook",
    "Cybereason",
];

fn engine_name(i: usize) -> std::borrow::Cow<'static, str> {
    match ENGINES.get(i) {
        Some(n) => (*n).into(),
        None => format!("Engine{i}").into(),
    }
}

/// `last_analysis_results` / `results`: one entry per engine, consistent with `s`.
pub(crate) fn results(s: &EngineStats, shape: StatsShape, label: Option<&str>) -> Value {
    let mut m = Map::new();
    let mut i = 0;
    for (category, count) in s.categories() {
        for _ in 0..count {
            let name = engine_name(i);
            i += 1;
            let result: Value = match (shape, category) {
                (StatsShape::File, "malicious") => label.unwrap_or("Malware.Generic").into(),
                (StatsShape::File, "suspicious") => "Suspicious.Generic".into(),
                (StatsShape::File, _) => Value::Null,
                (StatsShape::Web, "malicious") => "malicious".into(),
                (StatsShape::Web, "suspicious") => "suspicious".into(),
                (StatsShape::Web, "harmless") => "clean".into(),
                (StatsShape::Web, "timeout") => "timeout".into(),
                (StatsShape::Web, _) => "unrated".into(),
            };
            let mut e = Map::new();
            e.insert("method".into(), "blacklist".into());
            e.insert("engine_name".into(), name.as_ref().into());
            if shape == StatsShape::File {
                e.insert("engine_version".into(), "1.0.0".into());
                e.insert("engine_update".into(), "20260101".into());
            }
            e.insert("category".into(), category.into());
            e.insert("result".into(), result);
            m.insert(name.into_owned(), Value::Object(e));
        }
    }
    Value::Object(m)
}

/// `popular_threat_classification` for a label such as `trojan.hosts2/qhost`.
pub(crate) fn threat_classification(label: &str, malicious: u32) -> Value {
    let (category, names) = label.split_once('.').unwrap_or(("trojan", label));
    let names: Vec<Value> = names
        .split('/')
        .filter(|n| !n.is_empty())
        .enumerate()
        .map(|(i, n)| json!({ "value": n, "count": (malicious / (i as u32 + 2)).max(1) }))
        .collect();
    json!({
        "suggested_threat_label": label,
        "popular_threat_category": [{ "value": category, "count": malicious.max(1) }],
        "popular_threat_name": names,
    })
}

/// `{"data": {"type", "id", "links": {"self"}, "attributes"}}`.
pub(crate) fn object(
    kind: &str,
    id: &str,
    self_link: String,
    attributes: Map<String, Value>,
) -> Value {
    json!({ "data": { "type": kind, "id": id, "links": { "self": self_link }, "attributes": attributes } })
}

/// The reply to a submission: `{"data": {"type": "analysis", "id", "links": {"self"}}}`.
pub(crate) fn analysis_descriptor(api: &str, id: &str) -> Value {
    json!({ "data": { "type": "analysis", "id": id, "links": { "self": format!("{api}/analyses/{id}") } } })
}

/// Lower-case hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_agree_with_the_stats_they_come_from() {
        let s = EngineStats {
            malicious: 3,
            undetected: 2,
            type_unsupported: 1,
            ..Default::default()
        };
        let r = results(&s, StatsShape::File, Some("virus.eicar/test"));
        let r = r.as_object().unwrap();
        assert_eq!(r.len(), 6);
        let malicious: Vec<_> = r
            .values()
            .filter(|e| e["category"] == "malicious")
            .collect();
        assert_eq!(malicious.len(), 3);
        assert!(malicious.iter().all(|e| e["result"] == "virus.eicar/test"));
        assert_eq!(
            r.values()
                .filter(|e| e["category"] == "type-unsupported")
                .count(),
            1
        );
    }

    #[test]
    fn more_engines_than_names_still_get_distinct_entries() {
        let s = EngineStats {
            undetected: 100,
            ..Default::default()
        };
        assert_eq!(
            results(&s, StatsShape::Web, None)
                .as_object()
                .unwrap()
                .len(),
            100
        );
    }

    #[test]
    fn web_stats_have_five_keys_and_file_stats_eight() {
        let s = EngineStats::CLEAN_FILE;
        assert_eq!(stats(&s, StatsShape::File).as_object().unwrap().len(), 8);
        assert_eq!(stats(&s, StatsShape::Web).as_object().unwrap().len(), 5);
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read as _;
        let body = br#"{"data":{"id":"x"}}"#;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&gzip(body)[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }

    #[test]
    fn threat_label_splits_into_category_and_names() {
        let v = threat_classification("trojan.hosts2/qhost", 59);
        assert_eq!(v["popular_threat_category"][0]["value"], "trojan");
        assert_eq!(v["popular_threat_name"][1]["value"], "qhost");
    }
}
