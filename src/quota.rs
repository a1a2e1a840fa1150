//! The request budget of one API key: at most `requests` API calls in any sliding window of
//! `window_secs`, at most `daily` per UTC day (and `monthly` per UTC month when set).
//!
//! Every VirusTotal API call passes through a [`Gate`] first; uploads to a single-use upload
//! URL do not (VirusTotal does not count them).

use std::future::Future;
use std::pin::Pin;
use std::time::SystemTime;

/// Why a request may not be made now, beyond waiting for the sliding window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The daily (or monthly) budget is spent; it resets at `until` (UTC midnight).
    #[error("the API quota for today is used up; it resets at {}", chrono::DateTime::<chrono::Utc>::from(*until).format("%Y-%m-%d %H:%M UTC"))]
    Exhausted {
        /// When the budget resets.
        until: SystemTime,
    },
    /// The process is shutting down; no new request should start.
    #[error("shutting down")]
    ShuttingDown,
}

/// A boxed future, so that `Gate` can be used as a trait object.
pub type GateFuture<'a> = Pin<Box<dyn Future<Output = Result<(), Denied>> + Send + 'a>>;

/// Admission control for API requests.
pub trait Gate: Send + Sync + 'static {
    /// Waits until one more request fits the quota and records it as spent.
    fn acquire(&self) -> GateFuture<'_>;
    /// VirusTotal answered 429 anyway (another client shares the key): no request for this key
    /// until a whole window has passed.
    fn pause(&self);
}

/// A gate that admits everything: for tests and for `quota.requests` set to a huge number.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

impl Gate for Unlimited {
    fn acquire(&self) -> GateFuture<'_> {
        Box::pin(async { Ok(()) })
    }
    fn pause(&self) {}
}
