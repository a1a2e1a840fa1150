//! STIX 2.1 export: one `indicator` object per record, written into a `bundle` as the records
//! arrive.
//!
//! Ids are deterministic (UUID v5 of the kind and indicator in a vtriage namespace), so a later
//! export of the same indicator is a new *version* of the same object (same id, later
//! `modified`), which is what sharing platforms expect. The bundle's id is derived from the ids
//! it holds; it is written last, which JSON allows, so that nothing has to be collected first.

use std::io::{self, Write};

use serde::Serialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::{Counts, Record, ip_version};
use crate::indicator::{FileHash, HashAlgo, Kind};
use crate::verdict::Verdict;

/// The namespace of vtriage's STIX ids.
pub fn namespace() -> Uuid {
    Uuid::new_v5(&Uuid::NAMESPACE_URL, b"https://vtriage.invalid/stix")
}

/// The id of the indicator object of `kind`/`indicator`.
pub fn indicator_id(kind: Kind, indicator: &str) -> String {
    let name = format!("{}:{indicator}", kind.as_str());
    format!("indicator--{}", Uuid::new_v5(&namespace(), name.as_bytes()))
}

/// A string literal of the STIX patterning language (single quotes; `\` and `'` escaped).
fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// The STIX pattern that matches the record's indicator: `[file:hashes.'SHA-256' = '…']` (every
/// known hash of a file, OR-ed), `[url:value = '…']`, `[domain-name:value = '…']`,
/// `[ipv4-addr:value = '…']` or `[ipv6-addr:value = '…']`.
pub fn pattern(r: &Record) -> String {
    match r.kind {
        Kind::File | Kind::Hash => {
            let mut hashes: Vec<(&str, &str)> = Vec::new();
            for (name, value) in [("SHA-256", &r.sha256), ("MD5", &r.md5), ("SHA-1", &r.sha1)] {
                if let Some(v) = value {
                    hashes.push((name, v));
                }
            }
            if hashes.is_empty() {
                // Not reachable for rows this crate wrote (the indicator is a hash), but a
                // pattern must name something.
                let algo = FileHash::parse(&r.indicator).map_or("SHA-256", |h| match h.algo() {
                    HashAlgo::Sha256 => "SHA-256",
                    HashAlgo::Md5 => "MD5",
                    HashAlgo::Sha1 => "SHA-1",
                });
                hashes.push((algo, &r.indicator));
            }
            let terms: Vec<String> = hashes
                .iter()
                .map(|(algo, v)| format!("file:hashes.'{algo}' = {}", literal(v)))
                .collect();
            format!("[{}]", terms.join(" OR "))
        }
        Kind::Url => format!("[url:value = {}]", literal(&r.indicator)),
        Kind::Domain => format!("[domain-name:value = {}]", literal(&r.indicator)),
        Kind::Ip => {
            let object = if ip_version(&r.indicator) == Some(6) {
                "ipv6-addr"
            } else {
                "ipv4-addr"
            };
            format!("[{object}:value = {}]", literal(&r.indicator))
        }
    }
}

/// The STIX open vocabulary `indicator-type-ov` term for a verdict.
fn indicator_type(verdict: Option<Verdict>) -> &'static str {
    match verdict {
        Some(Verdict::Malicious) => "malicious-activity",
        Some(Verdict::Suspicious) => "anomalous-activity",
        Some(Verdict::Clean) => "benign",
        _ => "unknown",
    }
}

fn describe(r: &Record) -> String {
    let verdict = r.verdict.map_or("not triaged yet", |v| v.as_str());
    let mut text = format!("VirusTotal verdict (vtriage): {verdict}.");
    if let (
        Some(Counts {
            malicious,
            suspicious,
            harmless,
            undetected,
            ..
        }),
        Some(engines),
    ) = (r.stats, r.engines)
    {
        text += &format!(
            " {malicious}/{engines} engines flag it malicious, {suspicious} suspicious, {harmless} harmless, {undetected} undetected."
        );
    }
    if let Some(label) = &r.threat_label {
        text += &format!(" Threat label: {label}.");
    }
    if let Some(at) = &r.vt_analysis_date {
        text += &format!(" Last analysed by VirusTotal at {at}.");
    }
    if let Some(at) = &r.checked_at {
        text += &format!(" Checked at {at}.");
    }
    if let Some(e) = &r.error {
        text += &format!(" Error: {e}.");
    } else if let Some(n) = &r.note {
        text += &format!(" Note: {n}.");
    }
    text
}

/// A STIX 2.1 `indicator` object (fields in the order the specification lists them, so that
/// the output reads naturally).
#[derive(Debug, Serialize)]
pub struct StixIndicator {
    /// Always `indicator`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Always `2.1`.
    pub spec_version: &'static str,
    /// `indicator--<uuid v5>`.
    pub id: String,
    /// When vtriage first saw the indicator.
    pub created: String,
    /// When the verdict was obtained (the version of this object).
    pub modified: String,
    /// The kind and indicator.
    pub name: String,
    /// The verdict, counts and label, in words.
    pub description: String,
    /// `malicious-activity`, `anomalous-activity`, `benign` or `unknown`.
    pub indicator_types: [&'static str; 1],
    /// The STIX pattern.
    pub pattern: String,
    /// Always `stix`.
    pub pattern_type: &'static str,
    /// Always `2.1`.
    pub pattern_version: &'static str,
    /// When the indicator became valid: when vtriage first saw it.
    pub valid_from: String,
    /// The VirusTotal page.
    pub external_references: [Value; 1],
}

/// The `indicator` object of a record.
pub fn indicator(r: &Record) -> StixIndicator {
    let created = super::rfc3339_millis(r.first_seen_ms);
    // A re-check that happened "before" first sight (clock skew) must not make modified < created.
    let modified = super::rfc3339_millis(
        r.checked_at_ms
            .unwrap_or(r.first_seen_ms)
            .max(r.first_seen_ms),
    );
    StixIndicator {
        kind: "indicator",
        spec_version: "2.1",
        id: indicator_id(r.kind, &r.indicator),
        created: created.clone(),
        modified,
        name: format!("{} {}", r.kind.as_str(), r.indicator),
        description: describe(r),
        indicator_types: [indicator_type(r.verdict)],
        pattern: pattern(r),
        pattern_type: "stix",
        pattern_version: "2.1",
        valid_from: created,
        external_references: [json!({"source_name": "VirusTotal", "url": r.vt_link})],
    }
}

/// Writes a bundle object by object.
pub struct BundleWriter<W: Write> {
    /// Where the bundle goes.
    out: W,
    /// Whether no object was written yet (for the commas).
    first: bool,
    /// A digest of the ids written, naming the bundle.
    ids: Sha256,
}

impl<W: Write> BundleWriter<W> {
    /// Starts a bundle.
    pub fn new(mut out: W) -> io::Result<BundleWriter<W>> {
        out.write_all(b"{\"type\": \"bundle\"")?;
        Ok(BundleWriter {
            out,
            first: true,
            ids: Sha256::new(),
        })
    }

    /// Adds the indicator of a record.
    pub fn push(&mut self, r: &Record) -> io::Result<()> {
        let object = indicator(r);
        self.ids.update(object.id.as_bytes());
        // STIX 2.1: `objects`, when present, holds at least one object.
        self.out.write_all(if self.first {
            b", \"objects\": [\n"
        } else {
            b",\n"
        })?;
        self.first = false;
        serde_json::to_writer(&mut self.out, &object)?;
        Ok(())
    }

    /// Closes the bundle; returns the writer.
    pub fn finish(mut self) -> io::Result<W> {
        let digest = self.ids.finalize();
        let id = Uuid::new_v5(&namespace(), &digest);
        let end = if self.first { "" } else { "\n]" };
        writeln!(self.out, "{end}, \"id\": \"bundle--{id}\"}}")?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: Kind, indicator: &str) -> Record {
        Record {
            job_id: 1,
            kind,
            indicator: indicator.into(),
            verdict: Some(Verdict::Malicious),
            state: "completed".into(),
            stats: None,
            engines: None,
            threat_label: None,
            sha256: None,
            md5: None,
            sha1: None,
            paths: vec![],
            sources: vec![],
            vt_link: String::new(),
            first_seen: String::new(),
            checked_at: None,
            vt_analysis_date: None,
            error: None,
            note: None,
            first_seen_ms: 0,
            checked_at_ms: None,
        }
    }

    #[test]
    fn patterns_name_the_right_cyber_observable() {
        assert_eq!(
            pattern(&record(Kind::Domain, "evil.example")),
            "[domain-name:value = 'evil.example']"
        );
        assert_eq!(
            pattern(&record(Kind::Ip, "192.0.2.1")),
            "[ipv4-addr:value = '192.0.2.1']"
        );
        assert_eq!(
            pattern(&record(Kind::Ip, "2001:db8::1")),
            "[ipv6-addr:value = '2001:db8::1']"
        );
        let mut file = record(Kind::Hash, &"a".repeat(32));
        file.md5 = Some("a".repeat(32));
        file.sha256 = Some("b".repeat(64));
        assert_eq!(
            pattern(&file),
            format!(
                "[file:hashes.'SHA-256' = '{}' OR file:hashes.'MD5' = '{}']",
                "b".repeat(64),
                "a".repeat(32)
            )
        );
    }

    #[test]
    fn quotes_and_backslashes_in_urls_are_escaped() {
        assert_eq!(
            pattern(&record(Kind::Url, r"http://x.example/a'b\c")),
            r"[url:value = 'http://x.example/a\'b\\c']"
        );
    }

    #[test]
    fn ids_are_stable_and_distinct_per_indicator() {
        let a = indicator_id(Kind::Domain, "a.example");
        assert_eq!(a, indicator_id(Kind::Domain, "a.example"));
        assert_ne!(a, indicator_id(Kind::Domain, "b.example"));
        assert_ne!(a, indicator_id(Kind::Url, "a.example"));
        let uuid = Uuid::parse_str(a.strip_prefix("indicator--").unwrap()).unwrap();
        assert_eq!(uuid.get_version_num(), 5);
    }
}
