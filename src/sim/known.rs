//! Objects the simulator knows from the start, and the analysis counts it reports.
//!
//! A known-objects file is JSON (`vtriage sim --known FILE.json`); every list may be left out:
//!
//! ```json
//! {
//!   "files": [
//!     { "sha256": "<64 hex>", "md5": "<32 hex>", "sha1": "<40 hex>",
//!       "stats": { "malicious": 59, "undetected": 13, "type-unsupported": 4 },
//!       "label": "trojan.hosts2/qhost", "size": 5120, "name": "calc.exe" }
//!   ],
//!   "urls": [ { "url": "http://evil.example/x", "stats": { "malicious": 7, "harmless": 60 },
//!               "label": "phishing" } ],
//!   "domains": [ { "id": "evil.example", "stats": { "malicious": 3, "harmless": 80 } },
//!                { "id": "old.example" } ],
//!   "ips": [ { "id": "192.0.2.1", "stats": { "malicious": 1, "undetected": 90 } } ]
//! }
//! ```
//!
//! `stats` is VirusTotal's `last_analysis_stats` object: missing counts are zero. `md5`,
//! `sha1`, `label`, `size` and `name` are optional. A domain or IP address without `stats`
//! is reported without `last_analysis_stats`, as VirusTotal does for old objects.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// VirusTotal's `last_analysis_stats` (and an analysis's `stats`): engines per category.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineStats {
    /// Engines that flagged the object as malicious.
    pub malicious: u32,
    /// Engines that flagged it as suspicious.
    pub suspicious: u32,
    /// Engines that found nothing.
    pub undetected: u32,
    /// Engines that judged it harmless (URLs, domains, IP addresses mostly).
    pub harmless: u32,
    /// Engines that timed out.
    pub timeout: u32,
    /// Engines that timed out twice (files only).
    #[serde(rename = "confirmed-timeout")]
    pub confirmed_timeout: u32,
    /// Engines that cannot scan this type (files only).
    #[serde(rename = "type-unsupported")]
    pub type_unsupported: u32,
    /// Engines that failed (files only).
    pub failure: u32,
}

impl EngineStats {
    /// The verdict of a harmless file: nothing found by any engine.
    pub const CLEAN_FILE: EngineStats = EngineStats {
        malicious: 0,
        suspicious: 0,
        undetected: 70,
        harmless: 0,
        timeout: 0,
        confirmed_timeout: 0,
        type_unsupported: 0,
        failure: 0,
    };

    /// The verdict of the EICAR test file: what real engines report for it, roughly.
    pub const EICAR: EngineStats = EngineStats {
        malicious: 60,
        suspicious: 0,
        undetected: 10,
        harmless: 0,
        timeout: 0,
        confirmed_timeout: 0,
        type_unsupported: 0,
        failure: 0,
    };

    /// The verdict of a harmless URL: URL engines say "clean" (harmless) or "unrated".
    pub const CLEAN_URL: EngineStats = EngineStats {
        malicious: 0,
        suspicious: 0,
        undetected: 10,
        harmless: 62,
        timeout: 0,
        confirmed_timeout: 0,
        type_unsupported: 0,
        failure: 0,
    };

    /// Every engine that answered, in the order results are assigned to engine names.
    pub(crate) fn categories(&self) -> [(&'static str, u32); 8] {
        [
            ("malicious", self.malicious),
            ("suspicious", self.suspicious),
            ("harmless", self.harmless),
            ("undetected", self.undetected),
            ("type-unsupported", self.type_unsupported),
            ("timeout", self.timeout),
            ("confirmed-timeout", self.confirmed_timeout),
            ("failure", self.failure),
        ]
    }
}

/// A file VirusTotal "already knows".
#[derive(Debug, Clone, Deserialize)]
pub struct KnownFile {
    /// SHA-256, any case; the object's id.
    pub sha256: String,
    /// MD5, when it should be found by MD5 too.
    #[serde(default)]
    pub md5: Option<String>,
    /// SHA-1, when it should be found by SHA-1 too.
    #[serde(default)]
    pub sha1: Option<String>,
    /// Its `last_analysis_stats`; a re-analysis or upload of it gives the same counts.
    pub stats: EngineStats,
    /// `popular_threat_classification.suggested_threat_label`, and what engines name it.
    #[serde(default)]
    pub label: Option<String>,
    /// Size in bytes (0 when not given).
    #[serde(default)]
    pub size: Option<u64>,
    /// A file name (`names`, `meaningful_name`).
    #[serde(default)]
    pub name: Option<String>,
}

impl KnownFile {
    /// A file with this content that VirusTotal knows as clean (by SHA-256, SHA-1 and MD5).
    pub fn clean_content(content: &[u8]) -> KnownFile {
        use sha2::Digest;
        let hex = crate::hashing::hex;
        KnownFile {
            sha256: hex(&sha2::Sha256::digest(content)),
            md5: Some(hex(&md5::Md5::digest(content))),
            sha1: Some(hex(&sha1::Sha1::digest(content))),
            stats: EngineStats::CLEAN_FILE,
            label: None,
            size: Some(content.len() as u64),
            name: None,
        }
    }
}

/// A URL VirusTotal "already knows".
#[derive(Debug, Clone, Deserialize)]
pub struct KnownUrl {
    /// The URL as a client would submit it; it is canonicalised like submitted ones.
    pub url: String,
    /// Its `last_analysis_stats`; a re-analysis gives the same counts.
    pub stats: EngineStats,
    /// Reported as `threat_names` and as the engines' result.
    #[serde(default)]
    pub label: Option<String>,
}

impl KnownUrl {
    /// A URL VirusTotal knows as harmless.
    pub fn clean(url: &str) -> KnownUrl {
        let stats = EngineStats {
            harmless: 60,
            undetected: 10,
            ..EngineStats::CLEAN_FILE
        };
        KnownUrl {
            url: url.to_owned(),
            stats,
            label: None,
        }
    }
}

/// A domain or IP address VirusTotal knows.
#[derive(Debug, Clone, Deserialize)]
pub struct KnownHost {
    /// The domain name or IP address.
    pub id: String,
    /// Its `last_analysis_stats`; `None` reproduces old objects that lack them.
    #[serde(default)]
    pub stats: Option<EngineStats>,
}

/// Preloaded objects: see the module documentation for the JSON format.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Known {
    /// Known files.
    pub files: Vec<KnownFile>,
    /// Known URLs.
    pub urls: Vec<KnownUrl>,
    /// Known domains.
    pub domains: Vec<KnownHost>,
    /// Known IP addresses.
    pub ips: Vec<KnownHost>,
}

/// Why a known-objects file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KnownError {
    /// The file could not be read.
    #[error("cannot read known-objects file {path}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file is not in the documented format.
    #[error("known-objects file {path} is not valid")]
    Parse {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// A hash has the wrong length or is not hex.
    #[error("known file {0:?}: sha256, sha1 and md5 must be hex digests of the right length")]
    BadHash(String),
}

impl Known {
    /// Loads a known-objects file (format in the module documentation).
    pub fn load(path: &Path) -> Result<Known, KnownError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| KnownError::Read {
            path: shown.clone(),
            source,
        })?;
        let known: Known = serde_json::from_str(&text).map_err(|source| KnownError::Parse {
            path: shown,
            source,
        })?;
        known.check()?;
        Ok(known)
    }

    /// Checks the digests, so that a typo fails at start-up instead of as a silent 404.
    pub fn check(&self) -> Result<(), KnownError> {
        let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
        for f in &self.files {
            let ok = hex(&f.sha256, 64)
                && f.md5.as_deref().is_none_or(|m| hex(m, 32))
                && f.sha1.as_deref().is_none_or(|s| hex(s, 40));
            if !ok {
                return Err(KnownError::BadHash(f.sha256.clone()));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_file_parses_with_partial_stats_and_optional_fields() {
        let json = r#"{"files":[{"sha256":"AB","stats":{"malicious":3,"type-unsupported":2}}],
                       "domains":[{"id":"old.example"}]}"#;
        let known: Known = serde_json::from_str(json).unwrap();
        assert_eq!(known.files[0].stats.malicious, 3);
        assert_eq!(known.files[0].stats.type_unsupported, 2);
        assert_eq!(known.files[0].stats.undetected, 0);
        assert!(known.domains[0].stats.is_none());
        assert!(known.urls.is_empty());
        // "AB" is no SHA-256: refused before the simulator starts.
        assert!(matches!(known.check(), Err(KnownError::BadHash(_))));
    }

    #[test]
    fn unknown_top_level_lists_are_rejected() {
        assert!(serde_json::from_str::<Known>(r#"{"file":[]}"#).is_err());
    }

    #[test]
    fn loading_a_missing_file_names_it() {
        let err = Known::load(Path::new("/nonexistent/known.json")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/known.json"));
    }
}
