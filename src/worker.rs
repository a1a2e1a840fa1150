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

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Config, secs};
use crate::indicator::Kind;
use crate::quota::{Denied, QUOTA_WAITS, WaitWatcher};
use crate::recurring::Recurring;
use crate::store::{Job, MaySubmit, Millis, Retried, Snooze, Step, Store, now_millis};
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
    /// When to poll analyses, learned from what earlier polls saw (shared by all workers).
    pub poll_clock: Arc<PollClock>,
    /// Claims made for all the idle workers of this process at once.
    pub claims: Arc<SharedClaims>,
}

/// The workers of one process claim together: a worker that needs a job takes one claimed for
/// it a moment ago, or claims for every worker asking at that moment, in one statement (one
/// round trip to the database instead of one each). Every job claimed is for a worker already
/// asking, so none waits here longer than it takes that worker to get the lock.
#[derive(Debug)]
pub struct SharedClaims {
    /// What this process may submit: it claims no job at step `upload` it may not submit.
    may: MaySubmit,
    /// Workers inside [`SharedClaims::next`].
    asking: AtomicUsize,
    /// Jobs claimed for workers that are asking and have not taken theirs yet.
    claimed: tokio::sync::Mutex<VecDeque<Job>>,
}

impl SharedClaims {
    /// Claims for a process that may submit what `may` says.
    pub fn new(may: MaySubmit) -> SharedClaims {
        SharedClaims {
            may,
            asking: AtomicUsize::default(),
            claimed: tokio::sync::Mutex::default(),
        }
    }

    /// The next job for a worker of `owner`, if any is due. A worker awaits this to the end
    /// (dropping it midway could drop jobs just claimed: they would come back to the queue only
    /// when their lease expires or this process unregisters).
    pub async fn next(
        &self,
        store: &dyn Store,
        owner: &str,
        lease_ms: i64,
    ) -> Result<Option<Job>, crate::store::Error> {
        /// Counts this worker as asking until it has its answer (or gives up).
        struct Asking<'a>(&'a AtomicUsize);
        impl Drop for Asking<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.asking.fetch_add(1, Ordering::SeqCst);
        let _asking = Asking(&self.asking);
        let mut claimed = self.claimed.lock().await;
        if let Some(job) = claimed.pop_front() {
            return Ok(Some(job));
        }
        let asking = self.asking.load(Ordering::SeqCst).max(1);
        let n = u32::try_from(asking).unwrap_or(u32::MAX);
        let claimed_now = store.claim_as(owner, n, now_millis(), lease_ms, self.may);
        let mut jobs = VecDeque::from(claimed_now.await?);
        let mine = jobs.pop_front();
        claimed.extend(jobs);
        Ok(mine)
    }
}

/// A job's attempt, given back while its requests only wait for quota and charged again after:
/// a process killed during the wait leaves the job as it was (waiting is never an attempt),
/// while one killed working on it still charges it, so that a job that kills its process every
/// time ends (`Store::rescue`).
struct ChargedWhileWorking {
    store: Arc<dyn Store>,
    job: Job,
    /// The attempt is given back (a request waits for quota).
    given_back: AtomicBool,
}

impl ChargedWhileWorking {
    /// Charges the attempt again, if it was given back.
    async fn charge(&self) {
        if self.given_back.swap(false, Ordering::SeqCst) {
            let _ = self.store.count_attempt(&self.job, true).await;
        }
    }
}

impl WaitWatcher for ChargedWhileWorking {
    fn waiting(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Ok(true) = self.store.count_attempt(&self.job, false).await {
                self.given_back.store(true, Ordering::SeqCst);
            }
        })
    }

    fn waited(&self) -> BoxFuture<'_, ()> {
        Box::pin(self.charge())
    }
}

/// How long a file to upload that only other hosts hold is left before it is claimed again.
const OTHER_HOSTS_WAIT_MS: Millis = 5 * 60 * 1000;

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
    /// Give the job back without spending an attempt (shutdown, or left to a process that may
    /// submit it).
    Release,
    /// Give the job back and stop every worker (the key was refused).
    Fatal(String),
}

/// Claims the database refused in a row (a full disk): the worker waits longer after each, up
/// to 30 s, and says why once (and again when the reason changes), not five times a second.
#[derive(Debug, Default)]
struct RefusedClaims {
    in_a_row: u32,
    said: String,
}

impl RefusedClaims {
    /// Counts a refusal; returns whether its reason is news.
    fn refused(&mut self, why: &str) -> bool {
        self.in_a_row = self.in_a_row.saturating_add(1);
        let news = why != self.said;
        if news {
            self.said = why.to_owned();
        }
        news
    }

    /// Counts a claim taken; returns whether it ends a run of refusals.
    fn taken(&mut self) -> bool {
        self.said.clear();
        std::mem::take(&mut self.in_a_row) > 0
    }

    /// How long to wait before the next claim when there was no job to work on.
    fn wait(&self, idle: Duration) -> Duration {
        (idle * 2u32.saturating_pow(self.in_a_row.min(8))).min(Duration::from_secs(30))
    }
}

impl Worker {
    /// Runs one worker until `stop` is cancelled (or a fatal error), working on one job at a
    /// time (claimed together with the other workers, see [`SharedClaims`]). When idle it
    /// checks for due work every `idle` interval.
    pub async fn run(self, stop: CancellationToken, idle: Duration) {
        let mut refused = RefusedClaims::default();
        loop {
            if stop.is_cancelled() || self.fatal.is_cancelled() {
                return;
            }
            let lease_ms = (self.config.daemon.lease_secs * 1000.0) as i64;
            let job = match self.claims.next(&*self.store, &self.owner, lease_ms).await {
                Ok(job) => {
                    if refused.taken() {
                        tracing::info!("claiming jobs works again");
                    }
                    job
                }
                Err(e) => {
                    let why = e.to_string();
                    if refused.refused(&why) {
                        tracing::error!(error = %why, "cannot claim jobs; retrying, less often while it lasts");
                    }
                    None
                }
            };
            let Some(job) = job else {
                let wait = refused.wait(idle);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
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
        let charged = Arc::new(ChargedWhileWorking {
            store: self.store.clone(),
            job: job.clone(),
            given_back: AtomicBool::new(false),
        });
        let outcome = {
            let work = QUOTA_WAITS.scope(charged.clone(), self.process(&job));
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
        // Work dropped during a quota wait did not take its attempt back.
        charged.charge().await;
        self.record(&job, &outcome, lease_ms, stop).await;
    }

    /// Records `outcome`, trying again while the database refuses it (a full disk, a lock held
    /// too long), for the outcome holds an answer that cost quota. Meanwhile the lease is kept;
    /// at shutdown the job is left `running` for the rescuer to return when the lease expires.
    async fn record(&self, job: &Job, outcome: &Outcome, lease_ms: i64, stop: &CancellationToken) {
        let mut pause = Duration::from_millis(100);
        loop {
            let Err(e) = self.apply(job, outcome).await else {
                return;
            };
            static SAID: Recurring = Recurring::every(crate::recurring::EVERY);
            if let Some(recurred) = SAID.say(&e.to_string()) {
                tracing::error!(error = %e, recurred, "could not record the outcome; trying again");
            }
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => {
                    tracing::warn!("shutting down: the job will be retried once its lease expires");
                    return;
                }
            }
            pause = (pause * 2).min(Duration::from_secs(5));
            if let Ok(false) = self.store.extend_lease(job, now_millis() + lease_ms).await {
                tracing::warn!("lease lost; another worker owns this job now");
                return;
            }
        }
    }

    async fn apply(&self, job: &Job, outcome: &Outcome) -> Result<(), crate::store::Error> {
        let now = now_millis();
        let kept = match outcome {
            Outcome::Complete(v) => {
                let kept = self.store.complete(job, v, now).await?;
                // Whoever reads the log knows a dropped file by its name, not its hash.
                let path = match job.kind {
                    Kind::File if tracing::enabled!(tracing::Level::INFO) => self
                        .store
                        .file_paths(job.id)
                        .await
                        .ok()
                        .and_then(|p| p.into_iter().next()),
                    _ => None,
                };
                let (note, path) = (v.note.as_deref(), path.as_deref());
                tracing::info!(verdict = %v.verdict, note, path, "verdict");
                kept
            }
            Outcome::Discard(v) => {
                let kept = self.store.discard(job, v, now).await?;
                tracing::warn!(error = v.error.as_deref().unwrap_or(""), "failed");
                kept
            }
            Outcome::Snooze(s) => self.store.snooze(job, s, now).await?,
            Outcome::Retry(error) => {
                let delay = retry_delay(&self.config, job.attempt);
                match self.store.retry(job, now + delay, error, now).await? {
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
                    *slot = Some(reason.clone());
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
        let outcome = match job.step {
            Step::Lookup => self.lookup(job).await,
            // Looked up before, unknown: submit it (or say why not) without asking again.
            Step::Upload => self.unknown(job).await,
            Step::Poll => self.poll(job).await,
        };
        with_own_hash(job, outcome)
    }

    async fn lookup(&self, job: &Job) -> Outcome {
        let now = now_millis();
        if matches!(job.kind, Kind::File | Kind::Hash) {
            let since = now - self.config.verdict.max_age_ms();
            // A hash cannot be uploaded, nor a file without the permission: VirusTotal not
            // knowing the content a moment ago answers them as well as asking again would.
            let unknown_will_do = job.kind == Kind::Hash || !job.allow_submit;
            if let Ok(Some(mut v)) = self
                .store
                .fresh_verdict_for_hash(&job.indicator, since, unknown_will_do)
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
            // Checked when VirusTotal answered, which the quota may have held back for hours.
            Ok(object) => Outcome::Complete(verdict_of_object(&object, &self.config, now_millis())),
            Err(vt::Error::NotFound) => self.unknown(job).await,
            Err(e) => self.failure(job, e),
        }
    }

    /// VirusTotal does not know the indicator: submit it when allowed, else `unknown`.
    async fn unknown(&self, job: &Job) -> Outcome {
        let now = now_millis();
        // Whoever queued the job last decided, under their policy, whether it may be submitted;
        // this process submits it only if its own policy allows that too (`MaySubmit`).
        let setting = match job.kind {
            Kind::File => "upload.files",
            Kind::Url => "upload.urls",
            Kind::Hash => {
                return unknown(
                    now,
                    "VirusTotal does not know this hash (a hash cannot be uploaded)",
                );
            }
            Kind::Domain | Kind::Ip => return unknown(now, "VirusTotal does not know it"),
        };
        // An earlier submission was interrupted before VirusTotal's answer was recorded. Until
        // VirusTotal has had every chance to show the object, assume it did receive it (even if
        // the permission to submit was withdrawn since: waiting submits nothing).
        let confirming = job.submitted_at.map(|started| now - started);
        if let Some(waited) = confirming
            && waited < (self.config.poll.give_up_after_secs * 1000.0) as i64
        {
            return self.wait_for_analysis(
                job,
                Step::Lookup,
                "an interrupted submission is being confirmed",
            );
        }
        if !job.allow_submit {
            return unknown(
                now,
                format!("VirusTotal does not know it; not submitted ({setting} = \"never\")"),
            );
        }
        if !self.claims.may.allows(job.kind) {
            // The lookup's answer is kept, at step `upload` (which this process does not claim),
            // for a process that may: it will not pay for the lookup again.
            if job.step == Step::Lookup {
                let _ = self.store.mark_unknown(job, now).await;
            }
            tracing::info!(
                job = job.id,
                "VirusTotal does not know it; left to a process that may submit it \
                 ({setting} = \"unknown\")"
            );
            return Outcome::Release;
        }
        if let Some(waited) = confirming {
            tracing::warn!(
                waited_ms = waited,
                "an interrupted submission never reached VirusTotal; submitting again"
            );
        }
        // Recorded before the quota wait, so that a stop or a crash during it costs no second
        // lookup (a database that refuses only loses that saving). From here on the job is at
        // that step, and so is a snooze of it (the daily budget spent).
        let marked;
        let job = if job.step == Step::Lookup {
            if !self.store.mark_unknown(job, now).await.unwrap_or(true) {
                return Outcome::Release;
            }
            marked = Job {
                step: Step::Upload,
                ..job.clone()
            };
            &marked
        } else {
            job
        };
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
        let copies: Vec<(std::path::PathBuf, u64)> = paths
            .iter()
            .flat_map(|p| crate::store::path_candidates(p))
            .filter_map(|p| {
                let meta = std::fs::metadata(&p).ok()?;
                meta.is_file().then_some((p, meta.len()))
            })
            .collect();
        if copies.is_empty() {
            // Another host's copy: that host's daemon uploads it (claimed here while it seemed
            // gone: down, or cut off from the database), however long it takes to come back.
            if self.store.seen_on_other_hosts(job.id).await.unwrap_or(true) {
                tracing::info!("no copy of the file on this host; left to a host that saw it");
                return Outcome::Snooze(Snooze {
                    until: now + OTHER_HOSTS_WAIT_MS,
                    step: job.step,
                    analysis_id: None,
                    polls: job.polls,
                });
            }
            return Outcome::Discard(VerdictRecord::failed(
                "no copy of the file is left on this host to upload",
                now,
            ));
        }
        let max = self.config.upload.max_file_size;
        let mut unreadable = None;
        let mut found = None;
        let mut too_large = None;
        for (path, size) in copies {
            // One over the limit could not be uploaded anyway: not worth hashing.
            if size > max {
                too_large = Some(size);
                continue;
            }
            // Uploaded from the file hashed here, not opened again by its path after the quota
            // wait: what is sent is what was checked.
            match crate::hashing::open_and_hash(&path).await {
                Ok(hashed) if hashed.sha256 == job.indicator => {
                    found = Some((path, hashed));
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    let shown = crate::store::path_text(&path);
                    unreadable = Some(format!("cannot read {shown}: {e}"));
                }
            }
        }
        // No copy to upload: too large, unreadable for now (tried again), or every copy written
        // over since it was hashed (looking it up again would find nothing new; the new content
        // is a file of its own).
        let Some((path, hashed)) = found else {
            return match (too_large, unreadable) {
                (Some(size), _) => unknown(
                    now,
                    format!(
                        "VirusTotal does not know it; not uploaded: {size} bytes is over the {max}-byte limit"
                    ),
                ),
                (None, Some(why)) => Outcome::Retry(why),
                (None, None) => unknown(
                    now,
                    "VirusTotal does not know it; not uploaded: every copy changed since it was \
                     hashed (the new content is a file of its own)",
                ),
            };
        };
        let upload = vt::UploadFile::hashed(&path, hashed.file, hashed.sha256, hashed.len);
        let (shown, size) = (crate::store::path_text(&path), upload.size);
        let mark = || -> BoxFuture<'_, bool> {
            Box::pin(async {
                let marked = self.mark_submitting(job).await;
                if marked {
                    tracing::info!(path = %shown, size, "uploading");
                }
                marked
            })
        };
        match self
            .client
            .upload_file_with(&upload, max, Some(&mark))
            .await
        {
            Ok(analysis) => self.first_poll(analysis.id),
            Err(vt::Error::TooLarge { .. }) => {
                unknown(now_millis(), "VirusTotal refused the upload as too large")
            }
            Err(vt::Error::Changed(_)) => unknown(
                now_millis(),
                "VirusTotal does not know it; not uploaded: the file changed after it was hashed \
                 (the new content is a file of its own)",
            ),
            Err(e) => self.submission_failed(job, e).await,
        }
    }

    async fn submit_url(&self, job: &Job) -> Outcome {
        let mark = || -> BoxFuture<'_, bool> { Box::pin(self.mark_submitting(job)) };
        match self
            .client
            .submit_url_with(&job.indicator, Some(&mark))
            .await
        {
            Ok(analysis) => self.first_poll(analysis.id),
            Err(e) => self.submission_failed(job, e).await,
        }
    }

    /// A submission that failed. One VirusTotal refused (a 429 when another client shares the
    /// key) surely did not arrive: its mark is cleared, so that the next claim submits again
    /// instead of spending lookups, for up to `give_up_after_secs`, confirming it.
    async fn submission_failed(&self, job: &Job, e: vt::Error) -> Outcome {
        if e.refused_by_virustotal() {
            let _ = self.store.unmark_submitting(job, now_millis()).await;
        }
        self.failure(job, e)
    }

    /// Records that `job`'s submission is about to be sent, its quota granted: from then on, a
    /// crash leaves an interrupted submission to confirm, never a second upload. `false` when
    /// this worker no longer holds the job, a later enqueue withdrew the permission to submit it
    /// (or the database refused): the submission is called off.
    async fn mark_submitting(&self, job: &Job) -> bool {
        self.store
            .mark_submitting(job, now_millis())
            .await
            .unwrap_or(false)
    }

    fn first_poll(&self, analysis_id: String) -> Outcome {
        let delay = self.poll_clock.first_delay();
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
        let result = self.client.get_analysis(id).await;
        let now = now_millis();
        let waited = job.submitted_at.map(|at| now - at);
        match result {
            Ok(a) if a.status == AnalysisStatus::Completed => {
                if let Some(waited) = waited {
                    self.poll_clock.observe(job.polls, waited, true);
                }
                Outcome::Complete(verdict_of_analysis(&a, &self.config))
            }
            Ok(_) => {
                let Some(waited) = waited else {
                    return self.wait_for_analysis(job, Step::Poll, "analysis not finished");
                };
                self.poll_clock.observe(job.polls, waited, false);
                match self.give_up(job, now, "analysis not finished") {
                    Some(pending) => pending,
                    None => Outcome::Snooze(Snooze {
                        until: now + self.poll_clock.next_delay(job.polls + 1, waited),
                        step: Step::Poll,
                        analysis_id: None,
                        polls: job.polls + 1,
                    }),
                }
            }
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
        if let Some(pending) = self.give_up(job, now, why) {
            return pending;
        }
        // An object VirusTotal shows as not analysed that we never submitted (someone else's
        // upload, or a file VirusTotal never finishes) has no submission time of ours: the
        // polls spent on it measure the wait, so that it too ends `pending` instead of being
        // polled forever.
        let give_up_ms = (self.config.poll.give_up_after_secs * 1000.0) as i64;
        if job.submitted_at.is_none() && polled_ms(&self.config, job.polls) >= give_up_ms {
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

    /// `pending` (the analysis id kept) once polling has gone on for `give_up_after_secs`.
    fn give_up(&self, job: &Job, now: Millis, why: &str) -> Option<Outcome> {
        let started = job.submitted_at?;
        let give_up = (self.config.poll.give_up_after_secs * 1000.0) as i64;
        (now - started >= give_up && job.analysis_id.is_some()).then(|| {
            Outcome::Complete(VerdictRecord::noted(
                Verdict::Pending,
                format!(
                    "{why} after {} s; it will be polled again later",
                    (now - started) / 1000
                ),
                now,
            ))
        })
    }

    /// Maps a client error to the job's next state.
    fn failure(&self, job: &Job, e: vt::Error) -> Outcome {
        let now = now_millis();
        match e {
            // Its message says the key was rejected and what to check: not said twice.
            e if e.is_auth() => Outcome::Fatal(e.to_string()),
            vt::Error::Denied(Denied::ShuttingDown) | vt::Error::CalledOff => Outcome::Release,
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

/// Fraction of analyses the first poll should find finished.
const FIRST_QUANTILE: f64 = 0.65;
/// Fraction of the analyses still running at the first poll that the second should find finished.
const SECOND_QUANTILE: f64 = 0.9;
/// Learning rate, in log-time: one observation moves an estimate by at most about 15 %.
const STEP: f64 = 0.15;

/// When to poll analyses, learned from what the polls see.
///
/// Every poll costs quota, so polling on a fixed clock (vt-py: every 20 s) wastes it: with
/// analyses of 20 to 120 s that is about 4 polls per analysis. Instead the first poll is made
/// when about [`FIRST_QUANTILE`] of analyses are done, and the second when about
/// [`SECOND_QUANTILE`] of the rest are; after that the interval backs off by 1.5. Each estimate
/// is a stochastic quantile estimate (Robbins-Monro, in log-time): a poll that finds the analysis
/// finished nudges it down by `STEP * (1 - q)`, one that finds it running nudges it up by
/// `STEP * q`, so it settles where a fraction `q` are done; it follows a change in VirusTotal's
/// load within tens of analyses. A nudge starts from the time that poll really waited, so a burst
/// of analyses scheduled with the same estimate moves it about once, not once per analysis.
///
/// The estimates live in memory: a restarted daemon starts again from `[poll] first_delay_secs`.
#[derive(Debug)]
pub struct PollClock {
    estimates: std::sync::Mutex<PollEstimates>,
    /// The shortest delay ever used (a twentieth of the configured first delay).
    min_ms: f64,
    /// The longest delay ever used for the first two polls (`give_up_after_secs`).
    max_ms: f64,
    /// `[poll] max_interval_secs`, for the back-off after the second poll.
    max_interval_ms: f64,
}

/// The learned times since submission, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct PollEstimates {
    first_ms: f64,
    second_ms: f64,
    /// Whether they changed since [`PollClock::take_learned`] last gave them.
    changed: bool,
}

impl PollClock {
    /// Starts from `first_delay_secs` (and twice that for the second poll).
    pub fn new(poll: &crate::config::PollConfig) -> PollClock {
        let first = (poll.first_delay_secs * 1000.0).max(1.0);
        let max_ms = (poll.give_up_after_secs * 1000.0).max(first);
        PollClock {
            estimates: std::sync::Mutex::new(PollEstimates {
                first_ms: first,
                second_ms: (2.0 * first).min(max_ms),
                changed: false,
            }),
            min_ms: (first / 20.0).max(1.0),
            max_ms,
            max_interval_ms: (poll.max_interval_secs * 1000.0).max(1.0),
        }
    }

    /// Starts from what an earlier process learned (`saved`, as [`PollClock::take_learned`]
    /// gave it), within this configuration's bounds; from the configuration without it.
    pub fn resume(poll: &crate::config::PollConfig, saved: Option<(f64, f64)>) -> PollClock {
        let clock = PollClock::new(poll);
        if let Some((first_ms, second_ms)) = saved {
            let bounded = |ms: f64| ms.is_finite().then(|| ms.clamp(clock.min_ms, clock.max_ms));
            if let (Some(first_ms), Some(second_ms)) = (bounded(first_ms), bounded(second_ms)) {
                *clock.estimates.lock().unwrap_or_else(|p| p.into_inner()) = PollEstimates {
                    first_ms,
                    second_ms,
                    changed: false,
                };
            }
        }
        clock
    }

    /// What it learned since it was last asked, if anything: when to poll for the first and the
    /// second time, in milliseconds after the submission (to be saved for the next process).
    pub fn take_learned(&self) -> Option<(f64, f64)> {
        let mut e = self.estimates.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut e.changed).then_some((e.first_ms, e.second_ms))
    }

    fn estimates(&self) -> PollEstimates {
        *self.estimates.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long after a submission to poll the analysis for the first time.
    pub fn first_delay(&self) -> Millis {
        self.estimates().first_ms as Millis
    }

    /// Records what a poll saw: `polls_before` polls had been made before it (0 for the first),
    /// `waited_ms` had passed since the submission, and the analysis was `done` or not.
    pub fn observe(&self, polls_before: u32, waited_ms: Millis, done: bool) {
        let mut e = self.estimates.lock().unwrap_or_else(|p| p.into_inner());
        let waited = (waited_ms as f64).max(1.0);
        let (estimate, q) = match polls_before {
            0 => (&mut e.first_ms, FIRST_QUANTILE),
            1 => (&mut e.second_ms, SECOND_QUANTILE),
            _ => return,
        };
        let learned = if done {
            let down = (-STEP * (1.0 - q)).exp();
            estimate.min((*estimate * down).max(waited * down))
        } else {
            let up = (STEP * q).exp();
            estimate.max((*estimate * up).min(waited * up))
        }
        .clamp(self.min_ms, self.max_ms);
        let changed = learned != *estimate;
        *estimate = learned;
        e.changed |= changed;
    }

    /// How long to wait before poll number `polls + 1` of an analysis submitted `waited_ms` ago
    /// that `polls` polls have found unfinished.
    pub fn next_delay(&self, polls: u32, waited_ms: Millis) -> Millis {
        let e = self.estimates();
        let gap = (e.second_ms - e.first_ms).max(self.min_ms);
        let delay = if polls <= 1 {
            (e.second_ms.max(e.first_ms + self.min_ms) - waited_ms as f64).max(self.min_ms)
        } else {
            (gap * 1.5f64.powi(polls.saturating_sub(1).min(60) as i32)).min(self.max_interval_ms)
        };
        delay.max(1.0) as Millis
    }
}

/// A verdict on a file's content that VirusTotal gave no hash for (it does not know the file)
/// keeps the hash it was asked under, so that the same content asked for as a file or as a
/// listed hash is answered from it ([`Store::fresh_verdict_for_hash`]).
fn with_own_hash(job: &Job, outcome: Outcome) -> Outcome {
    match outcome {
        Outcome::Complete(mut v)
            if matches!(job.kind, Kind::File | Kind::Hash)
                && v.sha256.is_none()
                && v.md5.is_none()
                && v.sha1.is_none() =>
        {
            let hash = Some(job.indicator.clone());
            match job.indicator.len() {
                32 => v.md5 = hash,
                40 => v.sha1 = hash,
                _ => v.sha256 = hash,
            }
            Outcome::Complete(v)
        }
        other => other,
    }
}

fn unknown(now: Millis, note: impl Into<String>) -> Outcome {
    Outcome::Complete(VerdictRecord::noted(Verdict::Unknown, note, now))
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
    record.raw = Some(object.body.clone());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PollConfig;

    #[test]
    fn refused_claims_are_told_once_per_reason_and_waited_on_longer() {
        let idle = Duration::from_millis(200);
        let mut refused = RefusedClaims::default();
        assert_eq!(refused.wait(idle), idle);
        assert!(refused.refused("database or disk is full"));
        assert!(!refused.refused("database or disk is full"));
        assert_eq!(refused.wait(idle), idle * 4);
        assert!(
            refused.refused("database is locked"),
            "a new reason is told"
        );
        for _ in 0..10 {
            refused.refused("database is locked");
        }
        assert_eq!(refused.wait(idle), Duration::from_secs(30));
        assert!(refused.taken(), "the end of the refusals is told");
        assert!(!refused.taken());
        assert_eq!(refused.wait(idle), idle);
        assert!(
            refused.refused("database is locked"),
            "told again after a recovery"
        );
    }

    fn clock(first_delay_secs: f64) -> PollClock {
        PollClock::new(&PollConfig {
            first_delay_secs,
            max_interval_secs: 300.0,
            give_up_after_secs: 3600.0,
        })
    }

    /// Polls one analysis of `duration` ms the way the worker does; returns the polls made and
    /// how late the verdict was seen.
    fn poll_one(clock: &PollClock, duration: Millis) -> (u32, Millis) {
        let mut at = clock.first_delay();
        let mut polls = 0;
        loop {
            let done = at >= duration;
            clock.observe(polls, at, done);
            polls += 1;
            if done {
                return (polls, at - duration);
            }
            at += clock.next_delay(polls, at);
        }
    }

    #[test]
    fn analyses_of_20_to_120_s_take_fewer_than_one_and_a_half_polls_once_learned() {
        let clock = clock(30.0);
        let mut seed = 7u64;
        let mut durations = std::iter::from_fn(move || {
            seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            Some(20_000 + ((seed >> 33) % 100_001) as Millis)
        });
        for d in durations.by_ref().take(200) {
            poll_one(&clock, d);
        }
        let runs: Vec<(u32, Millis)> = durations.take(2000).map(|d| poll_one(&clock, d)).collect();
        let polls = runs.iter().map(|r| r.0 as f64).sum::<f64>() / runs.len() as f64;
        let late = runs.iter().map(|r| r.1 as f64).sum::<f64>() / runs.len() as f64;
        assert!(polls <= 1.5, "{polls} polls per analysis");
        // The best any schedule of 1.5 polls can do on U(20 s, 120 s) is about 23 s late.
        assert!(late < 35_000.0, "verdicts {late} ms late on average");
        let first = clock.first_delay();
        assert!(
            (70_000..=100_000).contains(&first),
            "first poll at {first} ms"
        );
    }

    /// A new process resumes where the last one's learning stood: the polls of its first
    /// analyses are not spent learning again.
    #[test]
    fn a_clock_resumes_from_what_was_learned_and_says_when_it_learned_more() {
        let first = clock(30.0);
        assert_eq!(first.take_learned(), None, "nothing learned yet");
        for d in [80_000, 95_000, 90_000].repeat(40) {
            poll_one(&first, d);
        }
        let learned = first.take_learned().expect("learned");
        assert_eq!(first.take_learned(), None, "given once");
        let config = PollConfig {
            first_delay_secs: 30.0,
            max_interval_secs: 300.0,
            give_up_after_secs: 3600.0,
        };
        let next = PollClock::resume(&config, Some(learned));
        assert_eq!(next.first_delay(), learned.0 as Millis);
        assert!(next.first_delay() > 60_000, "{learned:?}");
        assert_eq!(next.take_learned(), None);
        // Within the configuration's bounds; nonsense is ignored.
        let bounded = PollClock::resume(&config, Some((1e12, 2e12)));
        assert_eq!(bounded.first_delay(), 3_600_000);
        let ignored = PollClock::resume(&config, Some((f64::NAN, 1.0)));
        assert_eq!(ignored.first_delay(), 30_000);
    }

    #[test]
    fn a_burst_of_unfinished_analyses_moves_the_estimate_about_once() {
        let clock = clock(30.0);
        for _ in 0..1000 {
            clock.observe(0, 30_000, false);
        }
        let first = clock.first_delay();
        assert!(first > 30_000 && first < 34_000, "first poll at {first} ms");
    }

    #[test]
    fn analyses_that_finish_early_bring_the_first_poll_forward() {
        let clock = clock(30.0);
        for _ in 0..100 {
            let at = clock.first_delay();
            clock.observe(0, at, true);
        }
        assert!(clock.first_delay() < 5_000);
    }

    #[test]
    fn polls_after_the_second_back_off_up_to_the_maximum_interval() {
        let clock = clock(30.0);
        let third = clock.next_delay(2, 60_000);
        let fourth = clock.next_delay(3, 60_000 + third);
        assert!(fourth > third);
        assert_eq!(clock.next_delay(40, 0), 300_000);
    }
}
