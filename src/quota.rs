//! The request budget of one API key: at most `requests` API calls in any sliding window of
//! `window_secs`, at most `daily` per UTC day (and `monthly` per UTC month when set).
//!
//! Every VirusTotal API call passes through a [`Gate`] first; uploads to a single-use upload
//! URL do not (VirusTotal does not count them). A key with limits has a [`Limiter`]; a key
//! without any (`quota.unlimited`) has an [`Unlimited`] gate, which only counts.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::QuotaConfig;
use crate::recurring::Recurring;
use crate::store::{Millis, QuotaDecision, QuotaLimits, Store, now_millis};

/// Why a request may not be made now, beyond waiting for the sliding window.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The daily (or monthly) budget is spent; it resets at `until` (UTC midnight).
    #[error("the API key's daily or monthly quota is used up; it resets at {}", chrono::DateTime::<chrono::Utc>::from(*until).format("%Y-%m-%d %H:%M UTC"))]
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
    /// The request of `grant` never left this machine (no connection could be made): VirusTotal
    /// did not count it, so neither does the gate. Else an outage would spend the day's budget
    /// on requests that never arrived, and nothing could be asked once the network is back.
    fn unsent(&self, grant: Grant) -> GateFuture<'_, ()>;
    /// VirusTotal answered 429 anyway (another client shares the key): no request for this key
    /// until a whole window has passed.
    fn pause(&self);
    /// No more requests will be made: saves what the gate counted but has not recorded yet.
    fn save_counts(&self) -> GateFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// How often an [`Unlimited`] gate adds its requests to the ledger, and learns of pauses other
/// processes recorded.
const COUNT_EVERY: Duration = Duration::from_secs(1);

/// The gate of a key without limits (`quota.unlimited`: a premium key without a contracted
/// quota). There is nothing to enforce, so no request waits for the database: requests are
/// counted in memory and added to the key's day and month (which `status` shows) once a
/// [`COUNT_EVERY`], and at [`Gate::save_counts`]. A 429 still pauses the key: in this process at
/// once, in the others sharing the database at their next count.
pub struct Unlimited {
    store: Arc<dyn Store>,
    key_id: String,
    /// The configured window, for pauses.
    window_ms: i64,
    counts: Arc<Counts>,
    shutdown: CancellationToken,
}

/// What an [`Unlimited`] gate shares with its counting task.
#[derive(Default)]
struct Counts {
    /// Requests made and not yet added to the ledger.
    unsaved: AtomicU64,
    /// No request before this time (after a 429, here or in another process).
    paused_until: AtomicI64,
}

impl Counts {
    /// Adds the unsaved requests to the ledger and takes up the key's pause.
    async fn save(&self, store: &dyn Store, key_id: &str) {
        let n = self.unsaved.swap(0, Ordering::AcqRel);
        match store.count_requests(key_id, n, now_millis()).await {
            Ok(paused) => {
                self.paused_until
                    .fetch_max(paused.unwrap_or(0), Ordering::Relaxed);
            }
            Err(e) => {
                self.unsaved.fetch_add(n, Ordering::AcqRel);
                tracing::warn!(error = %e, "could not count requests; trying again");
            }
        }
    }
}

impl Unlimited {
    /// The gate of `key_id`, counting in the background until `shutdown`. Needs a tokio runtime.
    pub fn start(
        store: Arc<dyn Store>,
        key_id: String,
        cfg: &QuotaConfig,
        shutdown: CancellationToken,
    ) -> Unlimited {
        let counts = Arc::new(Counts::default());
        tokio::spawn({
            let (store, key_id, counts, stop) = (
                store.clone(),
                key_id.clone(),
                counts.clone(),
                shutdown.clone(),
            );
            async move {
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(COUNT_EVERY) => counts.save(&*store, &key_id).await,
                        // The requests still under way are saved by `save_counts`.
                        _ = stop.cancelled() => return,
                    }
                }
            }
        });
        Unlimited {
            store,
            key_id,
            window_ms: (cfg.window_secs * 1000.0).round() as i64,
            counts,
            shutdown,
        }
    }
}

impl Unlimited {
    /// [`Gate::acquire`], its waits told to `waits`.
    async fn acquire_telling(&self, waits: &mut Waits) -> Result<Grant, Denied> {
        loop {
            if self.shutdown.is_cancelled() {
                return Err(Denied::ShuttingDown);
            }
            let paused = self.counts.paused_until.load(Ordering::Relaxed);
            if paused <= now_millis() {
                self.counts.unsaved.fetch_add(1, Ordering::AcqRel);
                return Ok(Grant::unrecorded());
            }
            waits.sleep_until(paused, &self.shutdown).await?;
        }
    }
}

impl Gate for Unlimited {
    fn acquire(&self) -> GateFuture<'_, Result<Grant, Denied>> {
        Box::pin(async move {
            let mut waits = Waits::default();
            let acquired = self.acquire_telling(&mut waits).await;
            waits.over().await;
            acquired
        })
    }

    fn answered(&self, _: Grant) -> GateFuture<'_, ()> {
        Box::pin(async {})
    }

    fn unsent(&self, _: Grant) -> GateFuture<'_, ()> {
        // Taken back from the count not saved yet; one saved already (they are, once a second)
        // stays counted, on the safe side.
        let _ = self
            .counts
            .unsaved
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        Box::pin(async {})
    }

    fn pause(&self) {
        let until = now_millis() + self.window_ms;
        self.counts.paused_until.fetch_max(until, Ordering::Relaxed);
        record_pause(self.store.clone(), self.key_id.clone(), until);
    }

    fn save_counts(&self) -> GateFuture<'_, ()> {
        Box::pin(async move { self.counts.save(&*self.store, &self.key_id).await })
    }
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
    /// When the spent budget last said so resets: it is logged once per reset.
    exhausted_until: AtomicI64,
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
            exhausted_until: AtomicI64::new(0),
            shutdown,
        }
    }
}

/// Told when a request waits for quota, by the gate of the task that set it ([`QUOTA_WAITS`]):
/// the worker holding a job meanwhile does not charge it an attempt while it only waits.
pub trait WaitWatcher: Send + Sync {
    /// The request waits for quota from now on.
    fn waiting(&self) -> GateFuture<'_, ()>;
    /// The wait is over (granted, or given up).
    fn waited(&self) -> GateFuture<'_, ()>;
}

tokio::task_local! {
    /// The watcher of this task's quota waits, if it set one.
    pub static QUOTA_WAITS: Arc<dyn WaitWatcher>;
}

/// Waits shorter than this are not told: a crash within one is unlikely, and telling costs the
/// job two writes.
const TOLD_WAIT_MS: Millis = 1000;

/// The quota waits of one request, told to the task's [`WaitWatcher`] (looked up only when a
/// long wait comes: most requests never wait).
#[derive(Default)]
struct Waits {
    /// The watcher told of a wait, once one was.
    told: Option<Arc<dyn WaitWatcher>>,
}

impl Waits {
    /// [`sleep_until`], telling the task's watcher first when the wait is long.
    async fn sleep_until(
        &mut self,
        at: Millis,
        shutdown: &CancellationToken,
    ) -> Result<(), Denied> {
        if self.told.is_none()
            && at - now_millis() >= TOLD_WAIT_MS
            && let Ok(watcher) = QUOTA_WAITS.try_with(Arc::clone)
        {
            watcher.waiting().await;
            self.told = Some(watcher);
        }
        sleep_until(at, shutdown).await
    }

    /// The request has its answer from the gate.
    async fn over(self) {
        if let Some(watcher) = self.told {
            watcher.waited().await;
        }
    }
}

/// Sleeps until `at`, unless `shutdown` comes first.
async fn sleep_until(at: Millis, shutdown: &CancellationToken) -> Result<(), Denied> {
    let wait = (at - now_millis()).max(0) as u64;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(wait)) => Ok(()),
        _ = shutdown.cancelled() => Err(Denied::ShuttingDown),
    }
}

/// Records a 429's pause of `key_id` until `until` for the other processes (in the background:
/// the caller has paused its own process already).
fn record_pause(store: Arc<dyn Store>, key_id: String, until: Millis) {
    tracing::warn!(
        "VirusTotal answered 429: pausing this key for {} ms",
        until - now_millis()
    );
    tokio::spawn(async move {
        if let Err(e) = store.pause_quota(&key_id, until).await {
            tracing::warn!(error = %e, "could not record the quota pause");
        }
    });
}

impl Limiter {
    /// [`Gate::acquire`], its waits told to `waits`.
    async fn acquire_telling(&self, waits: &mut Waits) -> Result<Grant, Denied> {
        loop {
            if self.shutdown.is_cancelled() {
                return Err(Denied::ShuttingDown);
            }
            let paused = self.paused_until.load(Ordering::Relaxed);
            if paused > now_millis() {
                waits.sleep_until(paused, &self.shutdown).await?;
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
                Ok(QuotaDecision::WaitUntil(at)) => {
                    waits.sleep_until(at, &self.shutdown).await?;
                }
                Ok(QuotaDecision::Exhausted(at)) => {
                    let denied = Denied::Exhausted {
                        until: UNIX_EPOCH + Duration::from_millis(at as u64),
                    };
                    // Else a command waiting for its verdicts would wait without a word.
                    if self.exhausted_until.swap(at, Ordering::Relaxed) != at {
                        tracing::warn!("{denied}; the work waits until then");
                    }
                    return Err(denied);
                }
                Err(e) => {
                    // The ledger is unreachable (disk full, locked): no request without it.
                    static SAID: Recurring = Recurring::every(crate::recurring::EVERY);
                    if let Some(recurred) = SAID.say(&e.to_string()) {
                        tracing::warn!(
                            error = %e,
                            recurred,
                            "quota ledger unavailable; waiting before the next request"
                        );
                    }
                    waits
                        .sleep_until(now_millis() + 1000, &self.shutdown)
                        .await?;
                }
            }
        }
    }
}

impl Gate for Limiter {
    fn acquire(&self) -> GateFuture<'_, Result<Grant, Denied>> {
        Box::pin(async move {
            let mut waits = Waits::default();
            let acquired = self.acquire_telling(&mut waits).await;
            waits.over().await;
            acquired
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

    fn unsent(&self, grant: Grant) -> GateFuture<'_, ()> {
        Box::pin(async move {
            let Some(granted_at) = grant.recorded_at else {
                return;
            };
            if let Err(e) = self
                .store
                .return_quota_grant(&self.key_id, granted_at)
                .await
            {
                // Counted though never sent: the safe side.
                tracing::warn!(error = %e, "could not take back a request that was never sent");
            }
        })
    }

    fn pause(&self) {
        let until = now_millis() + self.window_ms;
        self.paused_until.fetch_max(until, Ordering::Relaxed);
        record_pause(self.store.clone(), self.key_id.clone(), until);
    }
}
