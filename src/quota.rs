//! The request budget of one API key: at most `requests` API calls in any sliding window of
//! `window_secs`, at most `daily` per UTC day (and `monthly` per UTC month when set).
//!
//! Every VirusTotal API call passes through a [`Gate`] first; uploads to a single-use upload
//! URL do not (VirusTotal does not count them).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::QuotaConfig;
use crate::store::{Millis, QuotaDecision, QuotaLimits, Store, now_millis};

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
pub type GateFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One request admitted by a [`Gate`]; handed back to [`Gate::answered`] once its reply is in.
#[derive(Debug, Clone, Copy)]
#[must_use = "hand the grant back to `Gate::answered` once the reply is in"]
pub struct Grant {
    /// When the ledger recorded it (`None`: no ledger).
    recorded_at: Option<Millis>,
}

impl Grant {
    /// A grant that no ledger recorded, for gates without one.
    pub fn unrecorded() -> Grant {
        Grant { recorded_at: None }
    }
}

/// Admission control for API requests.
pub trait Gate: Send + Sync + 'static {
    /// Waits until one more request fits the quota and records it as spent.
    fn acquire(&self) -> GateFuture<'_, Result<Grant, Denied>>;
    /// The request of `grant` has its reply (or failed). VirusTotal counted it when it arrived,
    /// at some moment up to now: a request slower than the limiter's margin is counted from now,
    /// so that a slow request cannot make the next ones look due too early.
    fn answered(&self, grant: Grant) -> GateFuture<'_, ()>;
    /// VirusTotal answered 429 anyway (another client shares the key): no request for this key
    /// until a whole window has passed.
    fn pause(&self);
}

/// A gate that admits everything: for tests and for `quota.requests` set to a huge number.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unlimited;

impl Gate for Unlimited {
    fn acquire(&self) -> GateFuture<'_, Result<Grant, Denied>> {
        Box::pin(async { Ok(Grant::unrecorded()) })
    }
    fn answered(&self, _: Grant) -> GateFuture<'_, ()> {
        Box::pin(async {})
    }
    fn pause(&self) {}
}

/// The quota gate of one API key, kept in the database so that every worker and every process
/// sharing the database shares one budget, and a restart does not reset the day's count.
pub struct Limiter {
    /// Where the request log lives.
    store: Arc<dyn Store>,
    /// The key's fingerprint (never the key).
    key_id: String,
    /// The limits, with the window widened by a safety margin (see [`Limiter::new`]).
    limits: QuotaLimits,
    /// The configured window, for pauses.
    window_ms: i64,
    /// How much the window is widened: a request answered within it needs no second record.
    margin_ms: i64,
    /// Set after a 429, checked before touching the database.
    paused_until: AtomicI64,
    /// Cancelled at shutdown: waiting callers give up with `Denied::ShuttingDown`.
    shutdown: CancellationToken,
}

impl Limiter {
    /// A limiter for `key_id`. The server counts arrival times, which the ledger cannot know:
    /// the window is widened by 5% (at least 50 ms, at most 1 s), which covers a request
    /// answered within that margin of its grant, and a slower one is counted again from its
    /// answer ([`Gate::answered`]). (1 s of a 60 s window costs under 2% of throughput.) A request
    /// still unanswered a whole widened window after its grant is not counted until its answer:
    /// only a direct upload of tens of megabytes takes that long.
    pub fn new(
        store: Arc<dyn Store>,
        key_id: String,
        cfg: &QuotaConfig,
        shutdown: CancellationToken,
    ) -> Limiter {
        let window_ms = (cfg.window_secs * 1000.0).round() as i64;
        let margin = (window_ms / 20).clamp(50, 1000);
        Limiter {
            store,
            key_id,
            limits: QuotaLimits {
                requests: cfg.requests,
                window_ms: window_ms + margin,
                daily: cfg.daily,
                monthly: cfg.monthly,
            },
            window_ms,
            margin_ms: margin,
            paused_until: AtomicI64::new(0),
            shutdown,
        }
    }

    async fn sleep_until(&self, at: Millis) -> Result<(), Denied> {
        let wait = (at - now_millis()).max(0) as u64;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(wait)) => Ok(()),
            _ = self.shutdown.cancelled() => Err(Denied::ShuttingDown),
        }
    }
}

impl Gate for Limiter {
    fn acquire(&self) -> GateFuture<'_, Result<Grant, Denied>> {
        Box::pin(async move {
            loop {
                if self.shutdown.is_cancelled() {
                    return Err(Denied::ShuttingDown);
                }
                let paused = self.paused_until.load(Ordering::Relaxed);
                if paused > now_millis() {
                    self.sleep_until(paused).await?;
                    continue;
                }
                match self
                    .store
                    .take_quota(&self.key_id, &self.limits, Arc::new(now_millis))
                    .await
                {
                    Ok(QuotaDecision::Granted(at)) => {
                        return Ok(Grant {
                            recorded_at: Some(at),
                        });
                    }
                    Ok(QuotaDecision::WaitUntil(at)) => self.sleep_until(at).await?,
                    Ok(QuotaDecision::Exhausted(at)) => {
                        return Err(Denied::Exhausted {
                            until: UNIX_EPOCH + Duration::from_millis(at as u64),
                        });
                    }
                    Err(e) => {
                        // The ledger is unreachable (disk full, locked): no request without it.
                        tracing::warn!(error = %e, "quota ledger unavailable; waiting before the next request");
                        self.sleep_until(now_millis() + 1000).await?;
                    }
                }
            }
        })
    }

    fn answered(&self, grant: Grant) -> GateFuture<'_, ()> {
        Box::pin(async move {
            let Some(granted_at) = grant.recorded_at else {
                return;
            };
            let now = now_millis();
            if now - granted_at <= self.margin_ms {
                return;
            }
            if let Err(e) = self
                .store
                .move_quota_grant(&self.key_id, granted_at, now)
                .await
            {
                // The grant stays counted from its first record, covered by the margin alone.
                tracing::warn!(error = %e, "could not count a slow request from its answer");
            }
        })
    }

    fn pause(&self) {
        let until = now_millis() + self.window_ms;
        self.paused_until.fetch_max(until, Ordering::Relaxed);
        tracing::warn!(
            "VirusTotal answered 429: pausing this key for {} ms",
            self.window_ms
        );
        let (store, key_id) = (self.store.clone(), self.key_id.clone());
        tokio::spawn(async move {
            if let Err(e) = store.pause_quota(&key_id, until).await {
                tracing::warn!(error = %e, "could not record the quota pause");
            }
        });
    }
}
