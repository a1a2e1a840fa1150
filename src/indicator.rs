//! Indicators, parsed once at the boundary (ingest, scan, CLI) and normalised, so that nothing
//! downstream handles raw strings.
//!
//! This module owns the canonical form of each indicator: what makes two inputs "the same"
//! for deduplication, and what is sent to VirusTotal.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The kind of a job: what was triaged and how VirusTotal is asked about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A local file, identified by its SHA-256; it may be uploaded if policy allows.
    File,
    /// A hash from a list (MD5, SHA-1 or SHA-256); it can only be looked up.
    Hash,
    /// A URL; it may be submitted if policy allows.
    Url,
    /// A domain name.
    Domain,
    /// An IPv4 or IPv6 address.
    Ip,
}

impl Kind {
    /// Every kind, in the order reports list them.
    pub const ALL: [Kind; 5] = [Kind::File, Kind::Hash, Kind::Url, Kind::Domain, Kind::Ip];

    /// The name stored in the database and printed in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::File => "file",
            Kind::Hash => "hash",
            Kind::Url => "url",
            Kind::Domain => "domain",
            Kind::Ip => "ip",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Kind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| format!("unknown kind {s:?} (expected file, hash, url, domain or ip)"))
    }
}

/// Which digest a hash is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgo {
    /// 32 hex digits.
    Md5,
    /// 40 hex digits.
    Sha1,
    /// 64 hex digits.
    Sha256,
}

impl HashAlgo {
    /// The name used in `ingest --dry-run --json` and reports.
    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
        }
    }
}

/// A file digest in lower-case hex; its algorithm follows from its length.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FileHash(String);

impl FileHash {
    /// Parses an MD5, SHA-1 or SHA-256 given in hex of either case.
    pub fn parse(s: &str) -> Option<FileHash> {
        let algo_ok = matches!(s.len(), 32 | 40 | 64);
        (algo_ok && s.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| FileHash(s.to_ascii_lowercase()))
    }

    /// The digest algorithm, from the length.
    pub fn algo(&self) -> HashAlgo {
        match self.0.len() {
            32 => HashAlgo::Md5,
            40 => HashAlgo::Sha1,
            _ => HashAlgo::Sha256,
        }
    }

    /// The lower-case hex digest.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for FileHash {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        FileHash::parse(&s).ok_or_else(|| format!("not an MD5, SHA-1 or SHA-256: {s:?}"))
    }
}

impl From<FileHash> for String {
    fn from(h: FileHash) -> String {
        h.0
    }
}

impl fmt::Display for FileHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One indicator of compromise, normalised.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "type", content = "value", rename_all = "lowercase")]
pub enum Indicator {
    /// A file digest (from a list, or computed from a local file).
    Hash(FileHash),
    /// An absolute URL with a scheme and a lower-case host.
    Url(String),
    /// A lower-case domain name without a trailing dot.
    Domain(String),
    /// An IP address.
    Ip(IpAddr),
}

impl Indicator {
    /// The job kind that triages this indicator (a hash from a list is `Hash`; local files
    /// become `File` jobs through the scanner, not through this type).
    pub fn kind(&self) -> Kind {
        match self {
            Indicator::Hash(_) => Kind::Hash,
            Indicator::Url(_) => Kind::Url,
            Indicator::Domain(_) => Kind::Domain,
            Indicator::Ip(_) => Kind::Ip,
        }
    }

    /// The normalised value, as stored and sent to VirusTotal.
    pub fn value(&self) -> String {
        match self {
            Indicator::Hash(h) => h.as_str().to_owned(),
            Indicator::Url(u) | Indicator::Domain(u) => u.clone(),
            Indicator::Ip(ip) => ip.to_string(),
        }
    }

    /// The fine-grained type name used by `ingest --dry-run --json`:
    /// md5, sha1, sha256, url, domain, ipv4 or ipv6.
    pub fn type_name(&self) -> &'static str {
        match self {
            Indicator::Hash(h) => h.algo().as_str(),
            Indicator::Url(_) => "url",
            Indicator::Domain(_) => "domain",
            Indicator::Ip(IpAddr::V4(_)) => "ipv4",
            Indicator::Ip(IpAddr::V6(_)) => "ipv6",
        }
    }

    /// Rebuilds an indicator from its stored kind and value (both written by this crate).
    pub fn from_stored(kind: Kind, value: &str) -> Option<Indicator> {
        match kind {
            Kind::File | Kind::Hash => FileHash::parse(value).map(Indicator::Hash),
            Kind::Url => Some(Indicator::Url(value.to_owned())),
            Kind::Domain => Some(Indicator::Domain(value.to_owned())),
            Kind::Ip => value.parse().ok().map(Indicator::Ip),
        }
    }
}

impl fmt::Display for Indicator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_lowercased_and_typed_by_length() {
        let h = FileHash::parse("D41D8CD98F00B204E9800998ECF8427E").unwrap();
        assert_eq!(h.as_str(), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(h.algo(), HashAlgo::Md5);
        assert_eq!(
            FileHash::parse(&"a".repeat(40)).unwrap().algo(),
            HashAlgo::Sha1
        );
        assert_eq!(
            FileHash::parse(&"a".repeat(64)).unwrap().algo(),
            HashAlgo::Sha256
        );
    }

    #[test]
    fn non_hex_or_odd_lengths_are_not_hashes() {
        assert!(FileHash::parse(&"g".repeat(32)).is_none());
        assert!(FileHash::parse(&"a".repeat(33)).is_none());
        assert!(FileHash::parse("").is_none());
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in Kind::ALL {
            assert_eq!(k.as_str().parse::<Kind>().unwrap(), k);
        }
        assert!("files".parse::<Kind>().is_err());
    }

    #[test]
    fn type_names_distinguish_ip_versions() {
        assert_eq!(
            Indicator::Ip("1.2.3.4".parse().unwrap()).type_name(),
            "ipv4"
        );
        assert_eq!(Indicator::Ip("::1".parse().unwrap()).type_name(), "ipv6");
    }
}
