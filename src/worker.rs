//! Workers: claim jobs from the store, ask VirusTotal (within the quota), and finish each job
//! with a verdict, a snooze or a retry.
//!
//! What one claim of a job does:
//! - `lookup`: reuse a fresh stored verdict of the same content if there is one; otherwise one
//!   `GET` of the object. Known -> verdict. Unknown -> `unknown`, unless the job may submit: then
//!   the intent is committed (`submitted_at`), the file is uploaded (or the URL submitted) and
//!   the job snoozes until its first poll.
//! - `poll`: one `GET /analyses/{id}`. Completed -> verdict; otherwise snooze with backoff; past
//!   `poll.give_up_after_secs` the verdict is `pending`, the analysis id kept for a later re-check.
//!
//! The worker never holds a database transaction across a request; every change to its job is
//! fenced by the lease (see `store`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, UploadPolicy, secs};
use crate::indicator::Kind;
use crate::quota::Denied;
use crate::store::{Job, Millis, Retried, Snooze, Step, Store, now_millis};
use crate::verdict::{Verdict, VerdictRecord};
use crate::vt::{self, Analysis, AnalysisStatus, Object};

/// Everything a worker needs; cheap to clone (all shared).
#[derive(Clone)]
pub struct Worker {
    /// The queue.
    pub store: Arc<dyn Store>,
    /// VirusTotal, behind the quota gate.
    pub client: Arc<vt::Client>,
    /// Policy, thresholds and timing.
    pub config: Arc<Config>,
    /// This process's name in leases: `host:pid:start`.
    pub owner: String,
    /// Cancelled when a fatal error (a refused key) must stop every worker.
    pub fatal: CancellationToken,
    /// The fatal error, for the user.
    pub fatal_reason: Arc<std::sync::Mutex<Option<String>>>,
}

/// What to do with a job after one claim.
#[derive(Debug)]
enum Outcome {
    /// Finished with a verdict.
    Complete(VerdictRecord),
    /// Finished as failed, for good (a permanent error).
    Discard(VerdictRecord),
    /// Not finished: come back later without spending an attempt.
    Snooze(Snooze),
    /// Failed this time; try again later (counts as an attempt).
    Retry(String),
    /// Give the job back untouched (shutdown).
    Release,
    /// Give the job back and stop every worker (the key was refused).
    Fatal(String),
}

impl Worker {
    /// Runs one worker until `stop` is cancelled (or a fatal error), claiming one job at a
    /// time. When idle it checks for due work every `idle` interval.
    pub async fn run(self, stop: CancellationToken, idle: Duration) {
        loop {
            if stop.is_cancelled() || self.fatal.is_cancelled() {
                return;
            }
            let lease_ms = (self.config.daemon.lease_secs * 1000.0) as i64;
            let jobs = match self
                .store
                .claim(&self.owner, 1, now_millis(), lease_ms)
                .await
            {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::error!(error = %e, "cannot claim jobs; retrying");
                    Vec::new()
                }
            };
            let Some(job) = jobs.into_iter().next() else {
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = stop.cancelled() => return,
                    _ = self.fatal.cancelled() => return,
                }
                continue;
            };
            let span = tracing::info_span!("job", id = job.id, kind = %job.kind, indicator = %job.indicator, attempt = job.attempt);
            self.work_on(job, &stop).instrument(span).await;
        }
    }

    /// Processes one claimed job to its next state, keeping its lease alive meanwhile.
    pub async fn work_on(&self, job: Job, stop: &CancellationToken) {
        let lease_ms = (self.config.daemon.lease_secs * 1000.0) as i64;
        let grace = secs(self.config.daemon.shutdown_grace_secs);
        let outcome = {
            let work = self.process(&job);
            tokio::pin!(work);
            let mut heartbeat =
                tokio::time::interval(Duration::from_millis((lease_ms / 3).max(100) as u64));
            heartbeat.tick().await;
            let stopping = async {
                stop.cancelled().await;
                tokio::time::sleep(grace).await;
            };
            tokio::pin!(stopping);
            loop {
                tokio::select! {
                    outcome = &mut work => break outcome,
                    _ = heartbeat.tick() => {
                        if !self.store.extend_lease(&job, now_millis() + lease_ms).await.unwrap_or(true) {
                            tracing::warn!("lease lost; another worker owns this job now");
                            return;
                        }
                    }
                    // Shutdown: in-flight work gets the grace period, then is released.
                    _ = &mut stopping => break Outcome::Release,
                }
            }
        };
        if let Err(e) = self.apply(&job, outcome).await {
            // The job stays `running` under our lease; the rescuer returns it when it expires.
            tracing::error!(error = %e, "could not record the outcome; the job will be retried");
        }
    }

    async fn apply(&self, job: &Job, outcome: Outcome) -> Result<(), crate::store::Error> {
        let now = now_millis();
        let kept = match outcome {
            Outcome::Complete(v) => {
                match &v.note {
                    Some(note) => tracing::info!(verdict = %v.verdict, %note, "verdict"),
                    None => tracing::info!(verdict = %v.verdict, "verdict"),
                }
                self.store.complete(job, &v, now).await?
            }
            Outcome::Discard(v) => {
                tracing::warn!(error = v.error.as_deref().unwrap_or(""), "failed");
                self.store.discard(job, &v, now).await?
            }
            Outcome::Snooze(s) => self.store.snooze(job, &s, now).await?,
            Outcome::Retry(error) => {
                let delay = retry_delay(&self.config, job.attempt);
                match self.store.retry(job, now + delay, &error, now).await? {
                    Retried::Later => {
                        tracing::warn!(%error, retry_in_ms = delay, "attempt failed; will retry");
                        true
                    }
                    Retried::Discarded => {
                        tracing::warn!(%error, "attempts used up; marked failed");
                        true
                    }
                    Retried::LeaseLost => false,
                }
            }
            Outcome::Release => self.store.release(job, now).await?,
            Outcome::Fatal(reason) => {
                self.store.release(job, now).await?;
                let mut slot = self.fatal_reason.lock().unwrap_or_else(|p| p.into_inner());
                if slot.is_none() {
                    tracing::error!("{reason}");
                    *slot = Some(reason);
                }
                self.fatal.cancel();
                true
            }
        };
        if !kept {
            tracing::warn!(
                "lease lost before the outcome was recorded; another worker owns this job"
            );
        }
        Ok(())
    }

    async fn process(&self, job: &Job) -> Outcome {
        match job.step {
            Step::Lookup => self.lookup(job).await,
            Step::Poll => self.poll(job).await,
        }
    }

    async fn lookup(&self, job: &Job) -> Outcome {
        let now = now_millis();
        if matches!(job.kind, Kind::File | Kind::Hash) {
            let since = now - max_age_ms(&self.config);
            if let Ok(Some(mut v)) = self
                .store
                .fresh_verdict_for_hash(&job.indicator, since)
                .await
            {
                v.note = Some("stored verdict of the same content reused".into());
                return Outcome::Complete(v);
            }
        }
        let found = match job.kind {
            Kind::File | Kind::Hash => self.client.get_file(&job.indicator).await,
            Kind::Url => self.client.get_url(&job.indicator).await,
            Kind::Domain => self.client.get_domain(&job.indicator).await,
            Kind::Ip => self.client.get_ip(&job.indicator).await,
        };
        match found {
            Ok(object) if object.analysis_pending() => {
                // Known to VirusTotal but not analysed yet (ours or someone else's submission).
                self.wait_for_analysis(
                    job,
                    Step::Lookup,
                    "VirusTotal has not finished analysing it",
                )
            }
            Ok(object) => Outcome::Complete(verdict_of_object(&object, &self.config, now)),
            Err(vt::Error::NotFound) => self.unknown(job).await,
            Err(e) => self.failure(job, e),
        }
    }

    /// VirusTotal does not know the indicator: submit it when allowed, else `unknown`.
    async fn unknown(&self, job: &Job) -> Outcome {
        let now = now_millis();
        let policy = match job.kind {
            Kind::File => self.config.upload.files,
            Kind::Url => self.config.upload.urls,
            Kind::Hash => {
                return unknown(
                    now,
                    "VirusTotal does not know this hash (a hash cannot be uploaded)",
                );
            }
            Kind::Domain | Kind::Ip => return unknown(now, "VirusTotal does not know it"),
        };
        if !job.allow_submit && policy == UploadPolicy::Never {
            let what = if job.kind == Kind::File {
                "upload.files"
            } else {
                "upload.urls"
            };
            return unknown(
                now,
                format!("VirusTotal does not know it; not submitted ({what} = \"never\")"),
            );
        }
        if let Some(started) = job.submitted_at {
            // An earlier submission was interrupted before VirusTotal's answer was recorded. Until
            // VirusTotal has had every chance to show the object, assume it did receive it.
            let waited = now - started;
            if waited < (self.config.poll.give_up_after_secs * 1000.0) as i64 {
                return self.wait_for_analysis(
                    job,
                    Step::Lookup,
                    "an interrupted submission is being confirmed",
                );
            }
            tracing::warn!(
                waited_ms = waited,
                "an interrupted submission never reached VirusTotal; submitting again"
            );
        }
        match job.kind {
            Kind::File => self.upload(job).await,
            _ => self.submit_url(job).await,
        }
    }

    async fn upload(&self, job: &Job) -> Outcome {
        let now = now_millis();
        let paths = match self.store.file_paths(job.id).await {
            Ok(paths) => paths,
            Err(e) => return Outcome::Retry(format!("database: {e}")),
        };
        // Any copy will do, as long as it still has the content the job is named after.
        let Some((path, size)) = paths.iter().find_map(|p| {
            let meta = std::fs::metadata(p).ok()?;
            meta.is_file().then(|| (p.clone(), meta.len()))
        }) else {
            return Outcome::Discard(VerdictRecord::failed(
                "no copy of the file is left to upload",
                now,
            ));
        };
        let max = self.config.upload.max_file_size;
        if size > max {
            return unknown(
                now,
                format!(
                    "VirusTotal does not know it; not uploaded: {size} bytes is over the {max}-byte limit"
                ),
            );
        }
        match crate::hashing::sha256_file(Path::new(&path)).await {
            Ok(digest) if digest == job.indicator => {}
            Ok(_) => {
                return Outcome::Retry(format!(
                    "{path} changed since it was hashed; looking for another copy"
                ));
            }
            Err(e) => return Outcome::Retry(format!("cannot read {path}: {e}")),
        }
        if !self.store.mark_submitting(job, now).await.unwrap_or(false) {
            return Outcome::Release;
        }
        tracing::info!(%path, size, "uploading");
        match self.client.upload_file(Path::new(&path), max).await {
            Ok(analysis) => self.first_poll(analysis.id),
            Err(vt::Error::TooLarge { .. }) => {
                unknown(now, "VirusTotal refused the upload as too large")
            }
            Err(e) => self.failure(job, e),
        }
    }

    async fn submit_url(&self, job: &Job) -> Outcome {
        if !self
            .store
            .mark_submitting(job, now_millis())
            .await
            .unwrap_or(false)
        {
            return Outcome::Release;
        }
        match self.client.submit_url(&job.indicator).await {
            Ok(analysis) => self.first_poll(analysis.id),
            Err(e) => self.failure(job, e),
        }
    }

    fn first_poll(&self, analysis_id: String) -> Outcome {
        let delay = (self.config.poll.first_delay_secs * 1000.0) as i64;
        Outcome::Snooze(Snooze {
            until: now_millis() + delay,
            step: Step::Poll,
            analysis_id: Some(analysis_id),
            polls: 0,
        })
    }

    async fn poll(&self, job: &Job) -> Outcome {
        let Some(id) = job.analysis_id.as_deref() else {
            return self.wait_for_analysis(
                job,
                Step::Lookup,
                "no analysis id; looking the object up",
            );
        };
        match self.client.get_analysis(id).await {
            Ok(a) if a.status == AnalysisStatus::Completed => {
                Outcome::Complete(verdict_of_analysis(&a, &self.config))
            }
            Ok(_) => self.wait_for_analysis(job, Step::Poll, "analysis not finished"),
            // The analysis is gone (expired): the object itself tells the verdict.
            Err(vt::Error::NotFound) => {
                self.wait_for_analysis(job, Step::Lookup, "analysis expired")
            }
            Err(e) => self.failure(job, e),
        }
    }

    /// Snoozes until the next poll, or records `pending` once polling has gone on too long.
    fn wait_for_analysis(&self, job: &Job, step: Step, why: &str) -> Outcome {
        let now = now_millis();
        let started = job.submitted_at.unwrap_or(now);
        let give_up = (self.config.poll.give_up_after_secs * 1000.0) as i64;
        if job.submitted_at.is_some() && now - started >= give_up && job.analysis_id.is_some() {
            return Outcome::Complete(VerdictRecord::noted(
                Verdict::Pending,
                format!(
                    "{why} after {} s; it will be polled again later",
                    (now - started) / 1000
                ),
                now,
            ));
        }
        // An object VirusTotal shows as not analysed that we never submitted (someone else's
        // upload, or a file VirusTotal never finishes) has no submission time of ours: the
        // polls spent on it measure the wait, so that it too ends `pending` instead of being
        // polled forever.
        if job.submitted_at.is_none() && polled_ms(&self.config, job.polls) >= give_up {
            return Outcome::Complete(VerdictRecord::noted(
                Verdict::Pending,
                format!(
                    "{why} after {} polls; it will be looked up again later",
                    job.polls
                ),
                now,
            ));
        }
        let polls = job.polls + 1;
        Outcome::Snooze(Snooze {
            until: now + poll_interval(&self.config, polls),
            step,
            analysis_id: None,
            polls,
        })
    }

    /// Maps a client error to the job's next state.
    fn failure(&self, job: &Job, e: vt::Error) -> Outcome {
        let now = now_millis();
        match e {
            e if e.is_auth() => Outcome::Fatal(format!("VirusTotal refused the API key: {e}")),
            vt::Error::Denied(Denied::ShuttingDown) => Outcome::Release,
            vt::Error::Denied(Denied::Exhausted { until }) => {
                let until = until
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as Millis)
                    .unwrap_or(now);
                Outcome::Snooze(Snooze {
                    until,
                    step: job.step,
                    analysis_id: None,
                    polls: job.polls,
                })
            }
            vt::Error::Quota { .. } => {
                let window = (self.config.quota.window_secs * 1000.0) as i64;
                Outcome::Snooze(Snooze {
                    until: now + window,
                    step: job.step,
                    analysis_id: None,
                    polls: job.polls,
                })
            }
            e if e.is_retryable() => Outcome::Retry(e.to_string()),
            e => Outcome::Discard(VerdictRecord::failed(e.to_string(), now)),
        }
    }
}

fn unknown(now: Millis, note: impl Into<String>) -> Outcome {
    Outcome::Complete(VerdictRecord::noted(Verdict::Unknown, note, now))
}

fn max_age_ms(config: &Config) -> i64 {
    (config.verdict.max_age_days * 86_400_000.0) as i64
}

/// Poll `n` (1-based) waits `first_delay * 1.5^(n-1)`, at most `max_interval`.
pub fn poll_interval(config: &Config, n: u32) -> Millis {
    let first = config.poll.first_delay_secs * 1000.0;
    let max = config.poll.max_interval_secs * 1000.0;
    (first * 1.5f64.powi(n.saturating_sub(1).min(60) as i32))
        .min(max)
        .max(1.0) as Millis
}

/// The time the first `polls` polls waited in all.
fn polled_ms(config: &Config, polls: u32) -> Millis {
    (1..=polls.min(10_000))
        .map(|n| poll_interval(config, n))
        .sum()
}

/// Failed attempt `n` waits `retry_delay_secs * 2^(n-1)`, at most 10 minutes (in ms).
pub fn retry_delay(config: &Config, attempt: u32) -> Millis {
    let base = config.daemon.retry_delay_secs * 1000.0;
    (base * 2f64.powi(attempt.saturating_sub(1).min(30) as i32)).clamp(1.0, 600_000.0) as Millis
}

/// The verdict that a VirusTotal object (file, URL, domain, IP) gives.
pub fn verdict_of_object(object: &Object, config: &Config, now: Millis) -> VerdictRecord {
    let stats = object.last_analysis_stats();
    let mut record = match &stats {
        Some(s) => VerdictRecord::bare(Verdict::from_stats(s, &config.verdict), now),
        None => VerdictRecord::noted(
            Verdict::Unknown,
            "VirusTotal knows it but has no engine results",
            now,
        ),
    };
    record.stats = stats;
    record.threat_label = object.threat_label();
    record.sha256 = object.sha256().map(str::to_owned);
    record.md5 = object.md5().map(str::to_owned);
    record.sha1 = object.sha1().map(str::to_owned);
    record.vt_id = Some(object.id.clone());
    record.vt_analysis_date = object.last_analysis_date();
    record.raw = serde_json::to_vec(&object.raw).ok();
    record
}

/// The verdict of a completed analysis (no further request: the analysis carries the counts).
pub fn verdict_of_analysis(analysis: &Analysis, config: &Config) -> VerdictRecord {
    let now = now_millis();
    let stats = analysis.stats.unwrap_or_default();
    let mut record = VerdictRecord::bare(Verdict::from_stats(&stats, &config.verdict), now);
    record.stats = Some(stats);
    let info = &analysis.raw["meta"]["file_info"];
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    record.sha256 = analysis
        .file_sha256
        .clone()
        .or_else(|| text(&info["sha256"]));
    record.md5 = text(&info["md5"]);
    record.sha1 = text(&info["sha1"]);
    record.vt_id = record.sha256.clone().or_else(|| analysis.url_id.clone());
    record.vt_analysis_date = analysis.date;
    record.raw = serde_json::to_vec(&analysis.raw).ok();
    record
}
