//! What can go wrong when talking to VirusTotal, as the variants callers branch on.
//!
//! The mapping from an HTTP reply to a variant lives here ([`Error::from_response`]) and looks
//! at the status and `error.code` only, never at the message text, which VirusTotal does not
//! keep stable. No variant ever carries the API key: the key travels in a header only, and
//! text echoed back by a server is scrubbed of it before it is stored.

use std::path::PathBuf;

use crate::quota;

/// An error from the VirusTotal client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// HTTP 404: VirusTotal does not know the item. Normal for a hash never seen (the worker
    /// may upload the file if policy allows).
    #[error("VirusTotal does not know this item (HTTP 404)")]
    NotFound,

    /// HTTP 401 (or an authentication error code): the key is wrong, missing or disabled.
    /// Never retried: every worker should stop and tell the user.
    #[error(
        "VirusTotal rejected the API key ({code}: {message}); check VT_API_KEY or [virustotal] api_key"
    )]
    Auth {
        /// VirusTotal's `error.code`, e.g. `WrongCredentialsError` (empty if the body was not JSON).
        code: String,
        /// VirusTotal's message, scrubbed of the key.
        message: String,
    },

    /// HTTP 403: the key lacks the privilege (premium-only endpoint). Permanent for that item.
    #[error("the API key may not do this (HTTP 403 {code}): {message}")]
    Forbidden {
        /// VirusTotal's `error.code` (usually `ForbiddenError`).
        code: String,
        /// VirusTotal's message, scrubbed of the key.
        message: String,
    },

    /// The file is too large: refused locally (`size` and `limit` set) or by VirusTotal's front
    /// end with HTTP 413 (both `None`).
    #[error("{}", too_large_message(*size, *limit))]
    TooLarge {
        /// The file's size in bytes, when known.
        size: Option<u64>,
        /// The limit it exceeds, when known.
        limit: Option<u64>,
    },

    /// HTTP 429 (`QuotaExceededError`, `TooManyRequestsError`): over the key's quota. The
    /// client has already paused the gate; retry after the window.
    #[error(
        "VirusTotal says the API quota is exceeded ({}); requests for this key are paused",
        or_unknown(code)
    )]
    Quota {
        /// VirusTotal's `error.code` (empty if the body was not JSON).
        code: String,
    },

    /// Worth retrying later: 5xx, 424, 400 `NotAvailableYet`, a connection error, a timeout,
    /// or a 2xx reply whose body is truncated or not what the API documents.
    #[error("VirusTotal is temporarily unavailable{}: {detail}", status_suffix(*status))]
    Transient {
        /// The HTTP status, `None` when no reply arrived.
        status: Option<u16>,
        /// What happened, for the log.
        detail: String,
    },

    /// Any other 4xx: permanent for that item (bad request, invalid argument ...).
    #[error(
        "VirusTotal refused the request (HTTP {status} {}): {message}",
        or_unknown(code)
    )]
    Permanent {
        /// The HTTP status.
        status: u16,
        /// VirusTotal's `error.code` (empty if the body was not JSON).
        code: String,
        /// VirusTotal's message, scrubbed of the key.
        message: String,
    },

    /// HTTP 409 `AlreadyExistsError` (a vote already cast ...): usually to be treated as success.
    #[error("already exists on VirusTotal: {message}")]
    AlreadyExists {
        /// VirusTotal's message, scrubbed of the key.
        message: String,
    },

    /// The quota gate refused to admit the request (daily budget spent, or shutting down).
    #[error(transparent)]
    Denied(#[from] quota::Denied),

    /// A submission was called off after its quota was granted and before anything was sent:
    /// the caller no longer holds the job (see [`BeforeSending`](super::client::BeforeSending)).
    #[error("the submission was called off before it was sent")]
    CalledOff,

    /// The file changed after it was hashed: it was not sent, or its upload was cut off before
    /// its end, so VirusTotal received nothing whole. Never retried: the new content is another
    /// file.
    #[error("{}: the file changed after it was hashed; it was not uploaded", .0.display())]
    Changed(PathBuf),

    /// A local file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// The request could not even be built: a malformed base URL, an empty or dot-only id,
    /// an API key with characters no HTTP header may carry. Fix the input; never retried.
    #[error("invalid input for VirusTotal: {0}")]
    Invalid(String),
}

impl Error {
    /// Whether the same request may succeed later without any change on our side: transient
    /// failures, quota (after the pause) and a spent daily budget.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Transient { .. }
                | Error::Quota { .. }
                | Error::Denied(quota::Denied::Exhausted { .. })
        )
    }

    /// Whether VirusTotal answered with a refusal (a 4xx reply, 429 included): the request
    /// surely took no effect. A 5xx, a timeout or a dropped connection may have come after it
    /// did.
    pub fn refused_by_virustotal(&self) -> bool {
        match self {
            Error::NotFound
            | Error::Auth { .. }
            | Error::Forbidden { .. }
            | Error::Quota { .. }
            | Error::Permanent { .. } => true,
            // 413 from VirusTotal's front end; refused locally, nothing was sent either.
            Error::TooLarge { .. } => true,
            Error::Transient { status, .. } => status.is_some_and(|s| (400..500).contains(&s)),
            _ => false,
        }
    }

    /// Whether the key itself is rejected: every worker should stop.
    pub fn is_auth(&self) -> bool {
        matches!(self, Error::Auth { .. })
    }

    /// Maps a non-2xx reply to an error, on the status plus `error.code`. Any body is accepted:
    /// JSON, HTML, empty or truncated.
    pub fn from_response(status: u16, body: &[u8]) -> Error {
        Self::from_response_scrubbed(status, body, None)
    }

    /// Like [`Error::from_response`], removing `secret` from any text kept from the body (a
    /// misbehaving server or proxy could echo the key back).
    pub(crate) fn from_response_scrubbed(status: u16, body: &[u8], secret: Option<&str>) -> Error {
        let (code, message) = error_fields(body);
        let message = scrub(
            message.unwrap_or_else(|| summarise_body(status, body)),
            secret,
        );
        let code = scrub(code.unwrap_or_default(), secret);
        match (status, code.as_str()) {
            (_, "AuthenticationRequiredError" | "WrongCredentialsError" | "UserNotActiveError")
            | (401, _) => Error::Auth { code, message },
            (_, "QuotaExceededError" | "TooManyRequestsError") | (429, _) => Error::Quota { code },
            (404, _) | (_, "NotFoundError") => Error::NotFound,
            (409, _) | (_, "AlreadyExistsError") => Error::AlreadyExists { message },
            (403, _) | (_, "ForbiddenError") => Error::Forbidden { code, message },
            (413, _) => Error::TooLarge {
                size: None,
                limit: None,
            },
            (400, "NotAvailableYet")
            | (424, _)
            | (500..=599, _)
            | (_, "TransientError" | "DeadlineExceededError" | "FailedDependencyError") => {
                let detail = if code.is_empty() {
                    message
                } else {
                    format!("{code}: {message}")
                };
                Error::Transient {
                    status: Some(status),
                    detail,
                }
            }
            _ => Error::Permanent {
                status,
                code,
                message,
            },
        }
    }
}

/// `error.code` and `error.message` of a JSON error body, when there is one.
fn error_fields(body: &[u8]) -> (Option<String>, Option<String>) {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) else {
        return (None, None);
    };
    let error = &value["error"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    (text(&error["code"]), text(&error["message"]))
}

/// A short description of a body that is not a JSON error, so that a user sees something
/// better than nothing ("an HTML page", "an empty body").
fn summarise_body(status: u16, body: &[u8]) -> String {
    let reason = reqwest::StatusCode::from_u16(status)
        .ok()
        .and_then(|s| s.canonical_reason())
        .unwrap_or("unexpected status");
    let shape = if body.iter().all(u8::is_ascii_whitespace) {
        "empty body"
    } else if body.trim_ascii_start().starts_with(b"<") {
        "HTML page"
    } else {
        "non-JSON body"
    };
    format!("{reason} ({shape})")
}

/// Replaces every occurrence of `secret` in `text`.
pub(crate) fn scrub(text: String, secret: Option<&str>) -> String {
    match secret {
        Some(s) if !s.is_empty() && text.contains(s) => text.replace(s, "[redacted]"),
        _ => text,
    }
}

fn too_large_message(size: Option<u64>, limit: Option<u64>) -> String {
    match (size, limit) {
        (Some(size), Some(limit)) => {
            format!("the file is too large to upload: {size} bytes, the limit is {limit} bytes")
        }
        _ => "VirusTotal refused the upload as too large (HTTP 413)".to_string(),
    }
}

fn or_unknown(code: &str) -> &str {
    if code.is_empty() {
        "no error code"
    } else {
        code
    }
}

fn status_suffix(status: Option<u16>) -> String {
    status.map(|s| format!(" (HTTP {s})")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_decides_when_the_body_is_html() {
        let html = b"<html><body>413 Request Entity Too Large</body></html>";
        assert!(matches!(
            Error::from_response(413, html),
            Error::TooLarge { size: None, .. }
        ));
        assert!(matches!(
            Error::from_response(502, b"<html>bad gateway</html>"),
            Error::Transient {
                status: Some(502),
                ..
            }
        ));
        assert!(matches!(Error::from_response(401, b""), Error::Auth { .. }));
        assert!(matches!(
            Error::from_response(429, b"{\"error\": {\"co"),
            Error::Quota { .. }
        ));
    }

    #[test]
    fn code_decides_over_message_text() {
        let body = br#"{"error":{"code":"NotAvailableYet","message":"not found"}}"#;
        assert!(matches!(
            Error::from_response(400, body),
            Error::Transient { .. }
        ));
        let body = br#"{"error":{"code":"InvalidArgumentError","message":"try again later"}}"#;
        match Error::from_response(400, body) {
            Error::Permanent { status, code, .. } => {
                assert_eq!(status, 400);
                assert_eq!(code, "InvalidArgumentError");
            }
            other => panic!("expected Permanent, got {other:?}"),
        }
    }

    #[test]
    fn failed_dependency_and_gateway_timeouts_are_transient() {
        for status in [424, 500, 503, 504] {
            assert!(
                Error::from_response(status, b"").is_retryable(),
                "status {status}"
            );
        }
    }

    #[test]
    fn a_secret_echoed_by_the_server_is_scrubbed() {
        let body =
            br#"{"error":{"code":"WrongCredentialsError","message":"key sekrit123 is wrong"}}"#;
        let err = Error::from_response_scrubbed(401, body, Some("sekrit123"));
        assert!(err.is_auth());
        assert!(!err.to_string().contains("sekrit123"));
        assert!(!format!("{err:?}").contains("sekrit123"));
    }

    #[test]
    fn local_refusal_names_size_and_limit() {
        let err = Error::TooLarge {
            size: Some(700),
            limit: Some(650),
        };
        assert_eq!(
            err.to_string(),
            "the file is too large to upload: 700 bytes, the limit is 650 bytes"
        );
    }
}
