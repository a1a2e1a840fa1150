//! The VirusTotal v3 client: typed, lenient, frugal with the quota.
//!
//! This module owns the HTTP conversation with VirusTotal (or the simulator): building
//! requests, the `x-apikey` header, admission through the [`quota::Gate`](crate::quota::Gate),
//! retries, the mapping of replies to [`Error`] variants and the parsing of bodies into
//! [`Object`], [`Analysis`], [`AnalysisRef`] and [`Page`]. It does not decide what to do with a
//! verdict, whether an item may be uploaded (the caller checks the upload policy before calling
//! [`Client::upload_file`] or [`Client::submit_url`]), nor when to poll: that is the worker's.

mod client;
mod error;
mod model;

use base64::Engine;

pub use client::{Client, DIRECT_UPLOAD_LIMIT, MAX_UPLOAD_SIZE, RetryPolicy, UploadFile};
pub use error::Error;
pub use model::{Analysis, AnalysisRef, AnalysisStatus, Object, Page, Stats, parse_data_string};

use crate::indicator::{Indicator, Kind};

/// A top-level collection of the API: the first path segment of an object's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Collection {
    /// `files`
    Files,
    /// `urls`
    Urls,
    /// `domains`
    Domains,
    /// `ip_addresses`
    IpAddresses,
}

impl Collection {
    /// The path segment.
    pub fn as_str(self) -> &'static str {
        match self {
            Collection::Files => "files",
            Collection::Urls => "urls",
            Collection::Domains => "domains",
            Collection::IpAddresses => "ip_addresses",
        }
    }
}

impl std::fmt::Display for Collection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<Kind> for Collection {
    fn from(kind: Kind) -> Collection {
        match kind {
            Kind::File | Kind::Hash => Collection::Files,
            Kind::Url => Collection::Urls,
            Kind::Domain => Collection::Domains,
            Kind::Ip => Collection::IpAddresses,
        }
    }
}

/// The VirusTotal id of a URL: the unpadded base64url of the URL as given (VirusTotal
/// canonicalises it on its side).
pub fn url_id(url: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(url.as_bytes())
}

impl Client {
    /// Looks an indicator up in the collection that holds it (`GET /files/{hash}`,
    /// `GET /urls/{url_id}`, `GET /domains/{d}` or `GET /ip_addresses/{ip}`).
    pub async fn get_indicator(&self, indicator: &Indicator) -> Result<Object, Error> {
        match indicator {
            Indicator::Hash(h) => self.get_object(Collection::Files, h.as_str()).await,
            Indicator::Url(u) => self.get_url(u).await,
            Indicator::Domain(d) => self.get_domain(d).await,
            Indicator::Ip(ip) => self.get_ip(&ip.to_string()).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_ids_are_unpadded_base64url_of_the_url_as_given() {
        assert_eq!(url_id("http://example.com/"), "aHR0cDovL2V4YW1wbGUuY29tLw");
        assert_eq!(
            url_id("http://www.google.com"),
            "aHR0cDovL3d3dy5nb29nbGUuY29t"
        );
        // `?` and `>` encode to the characters that differ between base64 and base64url.
        assert_eq!(url_id("a?>"), "YT8-");
    }

    #[test]
    fn collections_name_their_path_segment() {
        assert_eq!(Collection::IpAddresses.as_str(), "ip_addresses");
        assert_eq!(Collection::from(Kind::Hash), Collection::Files);
    }
}
