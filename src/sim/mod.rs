//! A VirusTotal API v3 simulator, so that the pipeline, the tests and the benchmarks run
//! offline: `vtriage sim` serves it, tests start one on port 0 with [`spawn`].
//!
//! It answers with the shapes of recorded real replies (`shared/corpus/vt-responses/`) and
//! honours the facts of `shared/vt-api-v3.md`: `x-apikey` authentication (401s), a per-key
//! sliding-window, daily and monthly quota (429 `QuotaExceededError`, never gzip-encoded), files by
//! SHA-256/SHA-1/MD5, streamed uploads (`POST /files` up to 32 MiB, else a 413 HTML page;
//! single-use upload URLs up to 650 MiB), analyses that go `queued`, `in-progress`,
//! `completed` over time, URLs by either id form, domains, IP addresses, comments, votes and
//! relationships with cursor paging, premium-only downloads, and injected faults.
//!
//! Verdicts: content containing the EICAR test string is malicious (60 engines), anything
//! else uploaded is clean; preloaded objects ([`Known`]) keep their given counts. A file is
//! "pending" (no `last_analysis_*` attributes) from its upload until its analysis completes.
//!
//! Outside `/api/v3`: `GET /_sim/stats` returns [`SimStats`] as JSON (no key needed, not
//! counted), `POST /_upload/{token}` is the single-use upload URL, `GET /_download/{token}`
//! serves a kept sample.
//!
//! This module owns only the simulator; it must not depend on the client (`vt`), so that it
//! stays an independent reference for it.

mod cli;
mod http;
mod json;
mod known;
mod state;
mod upload;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;

pub use cli::{SimArgs, run};
pub use known::{EngineStats, Known, KnownError, KnownFile, KnownHost, KnownUrl};

use state::Sim;

/// How a simulator behaves.
#[derive(Clone)]
pub struct SimConfig {
    /// Valid keys; empty means any non-empty key is valid.
    pub api_keys: Vec<String>,
    /// Keys that may use premium-only endpoints (downloads); they are valid keys too. Others
    /// get 403 `ForbiddenError` there.
    pub premium_keys: Vec<String>,
    /// Per-key request budget; `None` is unlimited.
    pub quota: Option<SimQuota>,
    /// Each analysis takes a duration drawn uniformly from `[min, max]` (seeded): `queued`
    /// for its first third, then `in-progress`, then `completed`.
    pub analysis_delay: (Duration, Duration),
    /// Objects known from the start.
    pub known: Known,
    /// Injected failures.
    pub faults: Faults,
    /// Seed of every random choice (analysis durations, faults, tokens), for reproducible runs.
    pub seed: u64,
}

impl fmt::Debug for SimConfig {
    // Keys are secrets even in a simulator (they may be real keys pasted by mistake).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field(
                "api_keys",
                &format_args!("[{} redacted]", self.api_keys.len()),
            )
            .field(
                "premium_keys",
                &format_args!("[{} redacted]", self.premium_keys.len()),
            )
            .field("quota", &self.quota)
            .field("analysis_delay", &self.analysis_delay)
            .field(
                "known",
                &format_args!(
                    "{} files, {} urls, {} domains, {} ips",
                    self.known.files.len(),
                    self.known.urls.len(),
                    self.known.domains.len(),
                    self.known.ips.len()
                ),
            )
            .field("faults", &self.faults)
            .field("seed", &self.seed)
            .finish()
    }
}

impl Default for SimConfig {
    /// Any key, no quota, analyses of 0.2 to 0.5 s, nothing known, no faults.
    fn default() -> Self {
        SimConfig {
            api_keys: Vec::new(),
            premium_keys: Vec::new(),
            quota: None,
            analysis_delay: (Duration::from_millis(200), Duration::from_millis(500)),
            known: Known::default(),
            faults: Faults::default(),
            seed: 0,
        }
    }
}

/// A per-key quota, as VirusTotal enforces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimQuota {
    /// At most this many accepted API requests ...
    pub requests: u32,
    /// ... in any sliding window this long.
    pub window: Duration,
    /// At most this many per UTC day, when set.
    pub daily: Option<u32>,
    /// At most this many per UTC calendar month, when set (a public key's is reported as 15.5 K).
    pub monthly: Option<u32>,
}

/// Fault injection.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Faults {
    /// Fraction (0 to 1) of accepted API requests that get a fault: a 503, a 504, a 500 HTML
    /// page (all before the request takes effect), a dropped connection or a truncated 200
    /// (both after it took effect), or added latency; each equally likely.
    pub rate: f64,
    /// How late a "latency" fault answers.
    pub latency: Duration,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rate: 0.0,
            latency: Duration::from_secs(1),
        }
    }
}

/// What the simulator saw, for tests and benchmarks (`GET /_sim/stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SimStats {
    /// Accepted requests by endpoint pattern (`"GET /files/{id}"`, `"POST /files"`,
    /// `"GET /analyses/{id}"`, `"GET /domains/{id}/comments"`, ...), plus `"POST upload_url"`
    /// for posts to single-use upload URLs and `"GET download"` for sample downloads. Requests
    /// refused with 401 or 429 are not here.
    pub requests: BTreeMap<String, u64>,
    /// Accepted API requests (those that count against the quota).
    pub api_requests: u64,
    /// SHA-256 to the number of times a file with that content was received.
    pub uploads: BTreeMap<String, u64>,
    /// URL (as submitted) to the number of `POST /urls` with it.
    pub url_submissions: BTreeMap<String, u64>,
    /// 429s sent.
    pub quota_rejections: u64,
    /// 401s sent.
    pub auth_failures: u64,
    /// Faults injected, all kinds.
    pub faults_injected: u64,
    /// Faults by kind: `transient_503`, `deadline_504`, `html_500`, `dropped_connection`,
    /// `truncated_json`, `latency`.
    #[serde(default)]
    pub faults_by_kind: BTreeMap<String, u64>,
    /// The most accepted requests of one key seen in any sliding quota window (0 without a
    /// quota): a client that respects the quota keeps this at most `SimQuota::requests`.
    pub max_in_window: u64,
}

/// A running simulator started by [`spawn`].
#[derive(Debug)]
pub struct SimHandle {
    addr: SocketAddr,
    sim: Arc<Sim>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl SimHandle {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/api/v3`.
    pub fn base_url(&self) -> String {
        self.sim.api.clone()
    }

    /// Revokes `key` while running: every later request with it gets a 401, as when a key is
    /// revoked on VirusTotal mid-run. Tests of how the pipeline stops use it.
    pub fn revoke_key(&self, key: &str) {
        self.sim.set_revoked(key, true);
    }

    /// Accepts a key revoked with [`SimHandle::revoke_key`] again.
    pub fn restore_key(&self, key: &str) {
        self.sim.set_revoked(key, false);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.sim.stats()
    }

    /// Stops accepting, lets in-flight requests finish (briefly) and waits for the server.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

/// Starts a simulator on `127.0.0.1:0` in the background. Dropping the handle stops it too.
pub async fn spawn(config: SimConfig) -> std::io::Result<SimHandle> {
    let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
    let addr = listener.local_addr()?;
    let sim = Arc::new(Sim::new(config, http::origin(addr)));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(http::run_server(listener, Arc::clone(&sim), async move {
        let _ = stopped.await;
    }));
    Ok(SimHandle {
        addr,
        sim,
        stop: Some(stop),
        task,
    })
}

/// Serves a simulator on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    config: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    let sim = Arc::new(Sim::new(config, http::origin(addr)));
    http::run_server(listener, sim, shutdown).await
}
