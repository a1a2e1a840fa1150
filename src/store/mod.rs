//! The durable job queue, the verdicts and the shared quota ledger, behind the [`Store`] trait
//! (one adapter per database: SQLite in [`sqlite`], PostgreSQL in [`postgres`]).
//!
//! # The job state machine
//!
//! ```text
//!             enqueue (new, or a stale/reopened indicator)
//!                 |
//!                 v            claim (one statement, commits before any HTTP call;
//!   +------> available ------------------------------------------+  attempt + 1)
//!   |          ^   ^                                             v
//!   |  snooze  |   |  retry (transient error, backoff)        running --complete--> completed
//!   |  release |   +------------------------------------------+  |  \                  |
//!   |  (attempt|                                                 |   +--discard------> discarded
//!   |   - 1)   +-------------------------------------------------+   (permanent error,   |
//!   |                                                                 attempts used up)  |
//!   +--- rescue (lease expired, or its owner process died) ----------+                   |
//!   +--- enqueue/recheck of a stale verdict <-------------------------------------------+
//! ```
//!
//! - A job is `running` only under a lease (`lease_owner`, `lease_expires_at`); every change to a
//!   running job is fenced on `id`, `lease_owner` and `state = 'running'`, so a worker that lost its
//!   lease cannot overwrite the work of the one that rescued it.
//! - `step` says what the next claim does: `lookup` (ask VT about the indicator, and upload or
//!   submit it when unknown and allowed) or `poll` (ask for the analysis `analysis_id`).
//! - Snoozes (waiting for an analysis, for the quota, or for shutdown) give the attempt back:
//!   only failures count towards `max_attempts`.
//! - `submitted_at` is written (committed) before an upload or URL submission starts and
//!   `analysis_id` once VirusTotal accepted it. A job claimed with `submitted_at` set but no
//!   `analysis_id` was interrupted mid-submission: the worker looks it up before it would ever
//!   submit again, so a crash never causes a second upload of content VirusTotal received.
//! - The verdict is written in the same transaction that completes or discards the job.

mod checkpoint;
mod enqueue;
mod group_commit;
pub mod postgres;
pub mod sqlite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use futures_util::stream::BoxStream;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::indicator::Kind;
use crate::verdict::{Stats, Verdict, VerdictRecord};

/// Unix time in milliseconds, as stored.
pub type Millis = i64;

/// Errors from the database. Callers rarely branch on them: a store error stops the work and
/// is reported, the queue itself stays consistent.
pub type Error = sqlx::Error;

/// A clock in milliseconds since the Unix epoch: [`now_millis`], or a virtual one in tests.
pub type Clock = std::sync::Arc<dyn Fn() -> Millis + Send + Sync>;

/// What the next claim of a job does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    /// Look the indicator up (and submit it when unknown and allowed).
    Lookup,
    /// Submit it: its lookup found nothing, and the submission was stopped before it was sent
    /// (a shutdown during the quota wait), so the next claim need not pay for the lookup again.
    Upload,
    /// Poll the analysis of a submission.
    Poll,
}

impl Step {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Lookup => "lookup",
            Step::Upload => "upload",
            Step::Poll => "poll",
        }
    }

    /// Claim order when requests are scarce: an analysis that is due is polled (and a
    /// submission whose lookup was paid for is sent) before any new lookup, so a large backlog
    /// cannot starve the verdicts already paid for.
    pub fn priority(self) -> i64 {
        match self {
            Step::Poll | Step::Upload => 2,
            Step::Lookup => 1,
        }
    }

    /// The priority of a job a command is waiting for (`scan`, `lookup`, `ingest --wait`): above
    /// any step's, so that it does not wait behind a daemon's backlog.
    pub const AWAITED: i64 = 3;

    fn parse(s: &str) -> Step {
        match s {
            "poll" => Step::Poll,
            "upload" => Step::Upload,
            _ => Step::Lookup,
        }
    }
}

/// What a process's own policy lets it submit to VirusTotal. A job carries the permission of
/// whoever queued it. Any process may look it up and poll it, but one whose own policy does not
/// allow the submission too leaves it, once found unknown, at step `upload`, which it does not
/// claim: so a process configured never to upload never does, whatever others queued, and the
/// lookup is paid once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct MaySubmit {
    /// Unknown files may be uploaded (`[upload] files = "unknown"`, `scan --upload`).
    pub files: bool,
    /// Unknown URLs may be submitted (`[upload] urls = "unknown"`).
    pub urls: bool,
}

impl MaySubmit {
    /// Anything a job allows.
    pub const ANY: MaySubmit = MaySubmit {
        files: true,
        urls: true,
    };

    /// Nothing.
    pub const NONE: MaySubmit = MaySubmit {
        files: false,
        urls: false,
    };

    /// What either may submit.
    pub fn or(self, other: MaySubmit) -> MaySubmit {
        MaySubmit {
            files: self.files || other.files,
            urls: self.urls || other.urls,
        }
    }

    /// What `upload` allows.
    pub fn of(upload: &crate::config::UploadConfig) -> MaySubmit {
        use crate::config::UploadPolicy::Unknown;
        MaySubmit {
            files: upload.files == Unknown,
            urls: upload.urls == Unknown,
        }
    }

    /// Whether a job of `kind` that may be submitted may be submitted by this process.
    pub fn allows(self, kind: Kind) -> bool {
        match kind {
            Kind::File => self.files,
            Kind::Url => self.urls,
            Kind::Hash | Kind::Domain | Kind::Ip => false,
        }
    }

    /// The kinds of job a claim may take at step `upload` with a permission to submit, as two
    /// SQL parameters (`kind IN (?, ?)`; an empty string matches no kind).
    fn kinds(self) -> (&'static str, &'static str) {
        (
            if self.files { "file" } else { "" },
            if self.urls { "url" } else { "" },
        )
    }
}

/// A request to triage one indicator.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// What kind of job.
    pub kind: Kind,
    /// The normalised indicator (a file's SHA-256).
    pub indicator: String,
    /// May the file be uploaded (the URL submitted) when VirusTotal does not know it?
    pub allow_submit: bool,
    /// For a file: where it was seen, and what it looked like there.
    pub path: Option<FileSeen>,
    /// Where the indicator came from: a list and its line. Shared: a list names every one of
    /// its jobs.
    pub source: Option<(Arc<str>, u32)>,
}

/// A file as it was seen at a path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSeen {
    /// Where.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
    /// Its modification time (nanoseconds since the Unix epoch) and inode, when the drop
    /// directory's watcher saw it: a daemon that restarts does not read such a file again while
    /// all three are unchanged.
    pub unchanged_if: Option<(i64, i64)>,
}

impl FileSeen {
    /// A file of `size` bytes at `path`, seen other than by the watcher (no time, no inode).
    pub fn at(path: impl Into<String>, size: u64) -> FileSeen {
        FileSeen {
            path: path.into(),
            size,
            unchanged_if: None,
        }
    }
}

/// A path as the database keeps it: as it is when it is UTF-8; otherwise each byte that is not
/// UTF-8 is written `\xNN`, so that the file can still be found ([`path_candidates`]) where a
/// lossy conversion would name a file that does not exist. (Malware extracted from archives
/// often has names in legacy encodings.)
pub fn path_text(path: &Path) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStrExt;
        let mut text = String::new();
        for chunk in path.as_os_str().as_bytes().utf8_chunks() {
            text.push_str(chunk.valid());
            for byte in chunk.invalid() {
                text.push_str(&format!("\\x{byte:02x}"));
            }
        }
        text
    }
    #[cfg(not(unix))]
    {
        path.display().to_string()
    }
}

/// The paths a stored path may name: itself, then, when it has `\xNN` escapes, the path of
/// those bytes ([`path_text`]). A name that really contains `\x41` is tried as it is first;
/// whoever reads the file checks its content anyway.
pub fn path_candidates(stored: &str) -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from(stored)];
    #[cfg(unix)]
    if stored.contains("\\x") {
        use std::os::unix::ffi::OsStringExt;
        let (text, mut bytes) = (stored.as_bytes(), Vec::with_capacity(stored.len()));
        let mut i = 0;
        while i < text.len() {
            let hex = text
                .get(i + 2..i + 4)
                .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                .and_then(|h| u8::from_str_radix(std::str::from_utf8(h).ok()?, 16).ok());
            match hex {
                Some(byte) if text[i..].starts_with(b"\\x") => {
                    bytes.push(byte);
                    i += 4;
                }
                _ => {
                    bytes.push(text[i]);
                    i += 1;
                }
            }
        }
        candidates.push(PathBuf::from(std::ffi::OsString::from_vec(bytes)));
    }
    candidates
}

/// What enqueueing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Enqueued {
    /// A new job.
    New,
    /// A finished job whose verdict is stale (or may now be improved) is queued again.
    Reopened,
    /// The job is already queued or running: nothing more to do.
    Queued,
    /// The stored verdict is fresh: no request needed.
    Fresh,
}

/// A claimed job, as a worker sees it.
#[derive(Debug, Clone)]
pub struct Job {
    /// Row id.
    pub id: i64,
    /// What kind of job.
    pub kind: Kind,
    /// The normalised indicator.
    pub indicator: String,
    /// What this claim does.
    pub step: Step,
    /// This attempt (1-based).
    pub attempt: u32,
    /// Attempts allowed before the job is discarded.
    pub max_attempts: u32,
    /// May the worker upload/submit?
    pub allow_submit: bool,
    /// When an upload/submission was started, if one was.
    pub submitted_at: Option<Millis>,
    /// The analysis to poll, once a submission was accepted.
    pub analysis_id: Option<String>,
    /// Polls already spent on that analysis.
    pub polls: u32,
    /// The lease holder (the fence of every change).
    pub owner: String,
}

/// A running job goes back to `available` without losing an attempt.
#[derive(Debug, Clone)]
pub struct Snooze {
    /// Not claimed again before this time.
    pub until: Millis,
    /// What the next claim does.
    pub step: Step,
    /// The analysis to poll (kept when `None`).
    pub analysis_id: Option<String>,
    /// Polls spent so far on the analysis.
    pub polls: u32,
}

/// Outcome of a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Back to `available` at the given time.
    Later,
    /// Attempts are used up: discarded with a `failed` verdict.
    Discarded,
    /// The lease was lost (another worker owns the job now): nothing was changed.
    LeaseLost,
}

/// The state of the queue, for `status` and `scan`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct QueueCounts {
    /// Jobs by state and kind: `counts["available"]["file"]`.
    pub by_state: BTreeMap<String, BTreeMap<String, u64>>,
    /// Jobs by verdict.
    pub by_verdict: BTreeMap<String, u64>,
    /// Available jobs by step (what remains to be spent).
    pub remaining_by_step: BTreeMap<String, u64>,
    /// Available jobs at step `upload`, by kind: unknown to VirusTotal, to be submitted by a
    /// process that may ([`MaySubmit`]).
    pub to_submit_by_kind: BTreeMap<String, u64>,
    /// The oldest job not finished yet: (indicator, created_at).
    pub oldest_pending: Option<(String, Millis)>,
    /// Most recent errors: (indicator, error, at).
    pub last_errors: Vec<(String, String, Millis)>,
}

impl QueueCounts {
    /// Counts `n` jobs of `kind` in `state` at `step` (a row of `job_counts`).
    fn add(&mut self, state: String, kind: String, step: &str, n: u64) {
        if state == "available" || state == "running" {
            *self.remaining_by_step.entry(step.to_owned()).or_default() += n;
        }
        if state == "available" && step == Step::Upload.as_str() {
            *self.to_submit_by_kind.entry(kind.clone()).or_default() += n;
        }
        *self
            .by_state
            .entry(state)
            .or_default()
            .entry(kind)
            .or_default() += n;
    }
}

/// The result of one job, for `scan` summaries.
#[derive(Debug, Clone, Serialize)]
pub struct JobResult {
    /// Row id.
    pub id: i64,
    /// Kind of job.
    pub kind: Kind,
    /// The normalised indicator.
    pub indicator: String,
    /// Queue state.
    pub state: String,
    /// The stored verdict, if any.
    pub verdict: Option<VerdictRecord>,
    /// Paths of a file job.
    pub paths: Vec<String>,
}

/// A worker process registered in the database.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerInfo {
    /// Its lease name: `host:pid:start`.
    pub owner: String,
    /// The host it runs on.
    pub host: String,
    /// Its process id on that host.
    pub pid: i64,
    /// Its last heartbeat.
    pub heartbeat_at: Millis,
    /// Jobs it holds right now.
    pub in_flight: i64,
    /// The quota limits it runs with, as JSON ([`Store::describe_worker`]; `status` reads them).
    #[serde(skip)]
    pub limits: Option<String>,
}

/// A row of `owner, host, pid, heartbeat_at, in_flight, limits`.
pub(crate) type WorkerRow = (String, String, i64, Millis, i64, Option<String>);

impl From<WorkerRow> for WorkerInfo {
    fn from((owner, host, pid, heartbeat_at, in_flight, limits): WorkerRow) -> Self {
        WorkerInfo {
            owner,
            host,
            pid,
            heartbeat_at,
            in_flight,
            limits,
        }
    }
}

/// The quota limits that one API key must honour.
#[derive(Debug, Clone, Copy)]
pub struct QuotaLimits {
    /// Requests per window.
    pub requests: u32,
    /// Window length in milliseconds.
    pub window_ms: i64,
    /// Requests per UTC day.
    pub daily: u32,
    /// Requests per UTC month.
    pub monthly: Option<u32>,
}

/// The answer to "may I send a request now?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaDecision {
    /// Yes; it has been recorded as spent at this time.
    Granted(Millis),
    /// Not before this time (the sliding window, or a pause after a 429).
    WaitUntil(Millis),
    /// Not before this time: the day's (or month's) budget is spent.
    Exhausted(Millis),
}

/// Quota use of one key at one moment, for `status`.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct QuotaUsage {
    /// Requests in the current sliding window.
    pub in_window: u64,
    /// Requests today (UTC).
    pub today: u64,
    /// Requests this month (UTC).
    pub this_month: u64,
    /// Paused until (after a 429), if in the future.
    pub paused_until: Option<Millis>,
}

/// The queue and verdict store. Every method is one short transaction; none is held across a
/// network call.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Enqueues (or deduplicates) indicators in one transaction, recording paths and sources.
    /// A finished job is reopened when its verdict is older than `max_age_ms`, failed, or
    /// `unknown` and the new request allows a submission the old one did not.
    async fn enqueue(
        &self,
        jobs: &[NewJob],
        now: Millis,
        max_age_ms: i64,
        max_attempts: u32,
    ) -> Result<Vec<(i64, Enqueued)>, Error>;

    /// Enqueues the batches as they arrive, as [`Store::enqueue`] does each, and returns what
    /// enqueueing each job did, in order. A store may commit several batches together (SQLite
    /// does, while they keep coming). On an error, the batches committed before it stay queued.
    /// Once `stop` is cancelled it stops, between two batches or (SQLite) within one, keeping
    /// what it queued: then fewer outcomes than jobs sent come back.
    async fn enqueue_batches(
        &self,
        batches: tokio::sync::mpsc::Receiver<Vec<NewJob>>,
        now: Millis,
        max_age_ms: i64,
        max_attempts: u32,
        stop: &CancellationToken,
    ) -> Result<Vec<(i64, Enqueued)>, Error> {
        enqueue_each(self, batches, now, max_age_ms, max_attempts, stop).await
    }

    /// Claims up to `n` due jobs for `owner`, polls first, then in schedule order, whatever
    /// they may submit: for tests and tools. Workers claim with [`Store::claim_as`] and their
    /// process's policy.
    async fn claim(
        &self,
        owner: &str,
        n: u32,
        now: Millis,
        lease_ms: i64,
    ) -> Result<Vec<Job>, Error> {
        self.claim_as(owner, n, now, lease_ms, MaySubmit::ANY).await
    }

    /// [`Store::claim`] for a process that may submit only what `may` says: a job at step
    /// `upload` it may not submit is left to a process that may (any process looks jobs up).
    async fn claim_as(
        &self,
        owner: &str,
        n: u32,
        now: Millis,
        lease_ms: i64,
        may: MaySubmit,
    ) -> Result<Vec<Job>, Error>;

    /// Extends the lease of a running job; false when the lease was lost.
    async fn extend_lease(&self, job: &Job, until: Millis) -> Result<bool, Error>;

    /// Records that the job's lookup found nothing, so its next step is [`Step::Upload`]: a stop
    /// or a crash before the submission is sent then costs the next run no second lookup. False
    /// when the job is no longer this worker's.
    async fn mark_unknown(&self, job: &Job, now: Millis) -> Result<bool, Error>;

    /// Records that an upload/submission is about to start (committed before it starts); false
    /// when the job is no longer this worker's, or no longer allowed to be submitted.
    async fn mark_submitting(&self, job: &Job, now: Millis) -> Result<bool, Error>;

    /// Counts this claim of `job` as an attempt again (`counted`), or not while it only waits for
    /// quota: a process killed during the wait then leaves the job uncharged. False when the job
    /// is no longer this worker's.
    async fn count_attempt(&self, job: &Job, counted: bool) -> Result<bool, Error>;

    /// Clears that mark when VirusTotal refused the submission (a 429 or another 4xx reply): it
    /// surely did not arrive, so the next claim submits again without first spending lookups to
    /// confirm it. False when the job is no longer this worker's.
    async fn unmark_submitting(&self, job: &Job, now: Millis) -> Result<bool, Error>;

    /// Back to `available` without spending an attempt.
    async fn snooze(&self, job: &Job, snooze: &Snooze, now: Millis) -> Result<bool, Error>;

    /// Back to `available` after a failure, or discarded when attempts are used up.
    async fn retry(
        &self,
        job: &Job,
        until: Millis,
        error: &str,
        now: Millis,
    ) -> Result<Retried, Error>;

    /// Finishes the job with its verdict, in one transaction.
    async fn complete(
        &self,
        job: &Job,
        verdict: &VerdictRecord,
        now: Millis,
    ) -> Result<bool, Error>;

    /// Finishes the job as discarded with a `failed` verdict, in one transaction.
    async fn discard(&self, job: &Job, verdict: &VerdictRecord, now: Millis)
    -> Result<bool, Error>;

    /// Returns the job to `available` untouched (shutdown, or the key was refused).
    async fn release(&self, job: &Job, now: Millis) -> Result<bool, Error>;

    /// Returns jobs whose lease expired, or whose owner is not a live worker, to `available`
    /// (or discards them when attempts are used up). Returns how many.
    async fn rescue(&self, now: Millis) -> Result<u64, Error>;

    /// Registers or refreshes a worker process; drops workers silent for `stale_ms` (none with
    /// `i64::MAX`) and those named in `dead` (local processes that no longer exist).
    async fn heartbeat(
        &self,
        owner: &str,
        host: &str,
        pid: u32,
        now: Millis,
        stale_ms: i64,
        dead: &[String],
    ) -> Result<(), Error>;

    /// Records the quota limits `owner` runs with (JSON), for `status`.
    async fn describe_worker(&self, owner: &str, limits: &str) -> Result<(), Error>;

    /// Registered worker processes, with the jobs each holds.
    async fn workers(&self) -> Result<Vec<WorkerInfo>, Error>;

    /// Unregisters a worker (clean shutdown).
    async fn unregister(&self, owner: &str) -> Result<(), Error>;

    /// Gives the queued jobs among `ids` the priority [`Step::AWAITED`], which they keep through
    /// their snoozes (a wait for quota, a poll) until they finish. A permission to submit that
    /// `may` (the waiting process's policy) does not give is withdrawn: the process waits for
    /// them, so it must be able to claim them (a `recheck --wait` of jobs another run queued to
    /// upload would otherwise wait forever), and the latest request's permission wins anyway.
    async fn put_first(&self, ids: &[i64], may: MaySubmit) -> Result<(), Error>;

    /// A path of a file job that can be read for an upload (most recently seen first).
    async fn file_paths(&self, job_id: i64) -> Result<Vec<String>, Error>;

    /// Whether another host saw the file of a job (PostgreSQL; SQLite has one host).
    async fn seen_on_other_hosts(&self, _job_id: i64) -> Result<bool, Error> {
        Ok(false)
    }

    /// The files last seen at paths under `dir` (a prefix of the paths as stored) with their
    /// modification time and inode, whose jobs a restart would not change: queued or running,
    /// or finished with a verdict that stays for a sighting that allows a submission when
    /// `allow_submit` (see [`Store::enqueue`]; however old the verdict: a running daemon does not
    /// look again at what it triaged either). A restarted daemon need not read them again.
    async fn files_seen_under(&self, dir: &str, allow_submit: bool)
    -> Result<Vec<FileSeen>, Error>;

    /// Records that the IOC list `seen` (as the lists directory's watcher saw it, with its time
    /// and inode) was queued whole.
    async fn list_read(&self, seen: &FileSeen, now: Millis) -> Result<(), Error>;

    /// The lists under `dir` recorded by [`Store::list_read`], but for those with a job that
    /// reading the list again would change: a failed one (another try), or, when `submit_urls`,
    /// an unknown URL that could not be submitted before (see [`Store::enqueue`]). A restarted
    /// daemon need not read them again while they are unchanged.
    async fn lists_read_under(&self, dir: &str, submit_urls: bool) -> Result<Vec<FileSeen>, Error>;

    /// When to poll an analysis, as the process that saved it last had learned it
    /// ([`crate::worker::PollClock::take_learned`]), if any did.
    async fn poll_estimates(&self) -> Result<Option<(f64, f64)>, Error>;

    /// Saves what this process learned of when to poll, for the next one to start from.
    async fn save_poll_estimates(&self, estimates: (f64, f64), now: Millis) -> Result<(), Error>;

    /// A fresh verdict for a file known under any of its hashes, if one is stored; an
    /// `unknown` one too when `unknown_will_do` (the asker would not upload the file anyway).
    async fn fresh_verdict_for_hash(
        &self,
        hash: &str,
        since: Millis,
        unknown_will_do: bool,
    ) -> Result<Option<VerdictRecord>, Error>;

    /// Results of the given jobs, in the order given (ids of no job are skipped). Their
    /// verdicts come without the VirusTotal object (`raw`): see [`Store::raw_object`].
    async fn results(&self, ids: &[i64]) -> Result<Vec<JobResult>, Error>;

    /// Those of the given jobs that are not finished yet.
    async fn unfinished(&self, ids: &[i64]) -> Result<Vec<i64>, Error>;

    /// The queue at a glance.
    async fn counts(&self) -> Result<QueueCounts, Error>;

    /// Jobs whose verdict was written at or after `since`: the recent pace, for `status`.
    async fn finished_since(&self, since: Millis) -> Result<u64, Error>;

    /// Reopens finished jobs whose verdict is one of `verdicts` and whose kind is one of `kinds`
    /// (each: all when empty), checked before `older_than`. A `pending` analysis is polled
    /// again; anything else is looked up again. Returns how many were reopened.
    async fn recheck(
        &self,
        verdicts: &[Verdict],
        kinds: &[Kind],
        older_than: Millis,
        now: Millis,
    ) -> Result<u64, Error>;

    /// Reopens the `pending` verdicts (the daemon's periodic re-check) whose last check is at least
    /// half their age ago, and at least `min_gap_ms`. The age counts from the submission, or else
    /// from when the job was queued. So an analysis that never finishes costs a poll at about
    /// 1.5, 2.25, 3.4... times its age at the give-up, seven polls the first day and ever fewer, where a
    /// fixed gap of five minutes would cost 288 a day for ever. Returns how many were reopened.
    async fn recheck_pending(&self, min_gap_ms: i64, now: Millis) -> Result<u64, Error>;

    /// Atomically checks the quota of `key_id` and, if a request fits, records it at the time
    /// `clock` tells. The clock is read once the backend holds the key's lock: a time read
    /// before waiting for the lock would be stale by the wait, and the requests granted after
    /// it would be counted from too early a start and reach VirusTotal too soon. (SQLite answers
    /// once the group of writes the grant ran in has committed: milliseconds, well within the
    /// limiter's margin.)
    async fn take_quota(
        &self,
        key_id: &str,
        limits: &QuotaLimits,
        clock: Clock,
    ) -> Result<QuotaDecision, Error>;

    /// The request of `key_id` granted at `granted_at` was answered at `answered_at`: it is
    /// counted from then on, as VirusTotal may have counted it any time up to its answer. (When
    /// the grant has already left the ledger, the request is recorded again at `answered_at`.)
    async fn move_quota_grant(
        &self,
        key_id: &str,
        granted_at: Millis,
        answered_at: Millis,
    ) -> Result<(), Error>;

    /// The request of `key_id` granted at `granted_at` never left this machine (no connection
    /// could be made): VirusTotal did not count it, so it leaves the window and the day's and
    /// month's counts.
    async fn return_quota_grant(&self, key_id: &str, granted_at: Millis) -> Result<(), Error>;

    /// Pauses `key_id` for every process until `until` (after a 429).
    async fn pause_quota(&self, key_id: &str, until: Millis) -> Result<(), Error>;

    /// Adds `n` requests of `key_id` to its UTC day and month at `now`, without a sliding window
    /// or a limit (a key without limits counts in batches: [`crate::quota::Unlimited`]), and
    /// returns the key's pause when one is in force at `now`.
    async fn count_requests(
        &self,
        key_id: &str,
        n: u64,
        now: Millis,
    ) -> Result<Option<Millis>, Error>;

    /// Keys (fingerprints) that spent requests, most recently active first.
    async fn quota_keys(&self) -> Result<Vec<String>, Error>;

    /// Quota use of `key_id`.
    async fn quota_usage(
        &self,
        key_id: &str,
        window_ms: i64,
        now: Millis,
    ) -> Result<QuotaUsage, Error>;

    // --- Reports (`vtriage report`, `lookup`): read-only, streamed. ---

    /// The jobs matching `query`, in its order, one row at a time: a report of a million
    /// verdicts never holds more than a few rows in memory. The stored VirusTotal object is not
    /// read (see [`Store::raw_object`]).
    fn report(&self, query: &ReportQuery) -> BoxStream<'_, Result<ReportRow, Error>>;

    /// The stored VirusTotal object (decompressed JSON) behind the verdict of the job whose
    /// indicator is `indicator` (a file's SHA-256, or any of its stored MD5/SHA-1/SHA-256;
    /// hashes are compared in lower case), most recently checked first. `None` when no job
    /// matches; `Some` with no object when the job has no stored object.
    async fn raw_object(&self, indicator: &str) -> Result<Option<RawObject>, Error>;

    /// Closes the connections once the work is done: SQLite then folds its log back into the
    /// database and removes the log and shared-memory files, instead of leaving them behind.
    async fn close(&self);
}

/// What `vtriage report` selects. Every filter combines with the others (AND); a list matches
/// any of its values (OR); an empty list matches everything.
#[derive(Debug, Clone, Default)]
pub struct ReportQuery {
    /// Only these jobs (by id), e.g. the ones a `lookup` just triaged.
    pub jobs: Vec<i64>,
    /// Only these verdicts.
    pub verdicts: Vec<Verdict>,
    /// Only these kinds.
    pub kinds: Vec<Kind>,
    /// Only indicators that came from one of these: an IOC list (its name as stored, or its
    /// file name) or `command line`, or a file seen at or under one of these paths.
    pub sources: Vec<String>,
    /// Only files (jobs with at least one path); the path glob itself is matched by the caller.
    pub only_with_paths: bool,
    /// Only verdicts checked at or after this time.
    pub since: Option<Millis>,
    /// Only verdicts checked before this time.
    pub until: Option<Millis>,
    /// The order.
    pub sort: ReportSort,
    /// At most this many rows.
    pub limit: Option<u64>,
}

/// The orders a report can come in. Ties are broken by job id, so a report is deterministic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReportSort {
    /// In the order vtriage first saw the indicators.
    #[default]
    FirstSeen,
    /// Most recently checked first.
    CheckedAt,
    /// Most alarming verdict first, then most detections.
    Verdict,
    /// Alphabetically by indicator.
    Indicator,
    /// Most engines flagging it malicious first.
    Malicious,
    /// By kind (file, hash, url, domain, ip), then first seen.
    Kind,
}

/// One job as a report sees it.
#[derive(Debug, Clone)]
pub struct ReportRow {
    /// The result (kind, indicator, state, verdict without its raw object, paths).
    pub job: JobResult,
    /// Where the indicator came from: (list or `command line`, line).
    pub sources: Vec<(String, u32)>,
    /// When vtriage first saw the indicator.
    pub created_at: Millis,
    /// Why the last attempt failed, if it did (the queue's own note, kept while retrying).
    pub last_error: Option<String>,
}

/// The stored VirusTotal object of a job.
#[derive(Debug, Clone)]
pub struct RawObject {
    /// The job's kind.
    pub kind: Kind,
    /// The job's indicator.
    pub indicator: String,
    /// The object as VirusTotal sent it (JSON), when one is stored.
    pub json: Option<Vec<u8>>,
}

/// An indicator already in the queue, as `enqueue` finds it: `(state, allow_submit,
/// analysis_id, verdict, checked_at)` of its job and verdict.
pub(crate) type KnownJob = (String, bool, Option<String>, Option<String>, Option<Millis>);

/// What enqueueing an indicator that is already queued does (both backends apply it).
pub(crate) enum Requeue {
    /// Queued or running: nothing, or take this enqueue's permission to submit, which differs
    /// (the latest caller's policy decides, so a `scan` without `--upload` withdraws the
    /// permission an interrupted `scan --upload` left).
    Queued { permission_changes: bool },
    /// Finished with a stale verdict (or one that may now improve): queue it again at `Step`.
    Reopen(Step),
    /// Finished with a fresh verdict: nothing to do.
    Fresh,
}

/// [`Store::enqueue_batches`] as one [`Store::enqueue`] per batch, until `stop`.
async fn enqueue_each<S: Store + ?Sized>(
    store: &S,
    mut batches: tokio::sync::mpsc::Receiver<Vec<NewJob>>,
    now: Millis,
    max_age_ms: i64,
    max_attempts: u32,
    stop: &CancellationToken,
) -> Result<Vec<(i64, Enqueued)>, Error> {
    let mut out = Vec::new();
    while let Some(batch) = next_batch(&mut batches, stop).await {
        out.extend(store.enqueue(&batch, now, max_age_ms, max_attempts).await?);
    }
    Ok(out)
}

/// The next batch of a list, none once the list ends or `stop` is cancelled.
async fn next_batch(
    batches: &mut tokio::sync::mpsc::Receiver<Vec<NewJob>>,
    stop: &CancellationToken,
) -> Option<Vec<NewJob>> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        batch = batches.recv() => batch,
    }
}

/// The rows of [`Store::lists_read_under`]'s query: path, size, mtime and inode.
type ListRow = (String, i64, i64, i64);

/// The rows of [`Store::lists_read_under`]'s query, as the watcher compares them.
fn lists_seen(rows: Vec<ListRow>) -> Vec<FileSeen> {
    rows.into_iter()
        .filter_map(|(path, size, modified_ns, inode)| {
            Some(FileSeen {
                path,
                size: u64::try_from(size).ok()?,
                unchanged_if: Some((modified_ns, inode)),
            })
        })
        .collect()
}

/// A row of [`Store::files_seen_under`]'s query: the path's latest sighting (path, size, mtime,
/// inode, seen at) and its job as [`requeue`] reads it.
type SightingRow = (
    String,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    String,
    bool,
    Option<String>,
    Option<String>,
    Option<Millis>,
);

/// The rows of [`Store::files_seen_under`]'s query that say what the file looked like and
/// whose job a restart would leave as it is.
fn files_seen(rows: Vec<SightingRow>, allow_submit: bool) -> Vec<FileSeen> {
    rows.into_iter()
        .filter_map(|row| {
            let (path, size, modified_ns, inode, _, state, allowed, analysis, verdict, at) = row;
            let known = (state, allowed, analysis, verdict, at);
            // A restart ages no verdict.
            match requeue(known, allow_submit, Millis::MIN) {
                Requeue::Fresh
                | Requeue::Queued {
                    permission_changes: false,
                } => {}
                Requeue::Queued {
                    permission_changes: true,
                }
                | Requeue::Reopen(_) => return None,
            }
            Some(FileSeen {
                path,
                size: u64::try_from(size).ok()?,
                unchanged_if: Some((modified_ns?, inode?)),
            })
        })
        .collect()
}

/// This machine's name, as leases, the `workers` table and PostgreSQL's `file_paths` know it.
pub fn this_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// Decides [`Requeue`] for `known` when enqueued again with `allow_submit`; a verdict checked
/// before `fresh_since` is stale.
pub(crate) fn requeue(known: KnownJob, allow_submit: bool, fresh_since: Millis) -> Requeue {
    let (state, allowed_before, analysis_id, verdict, checked_at) = known;
    let newly_allowed = allow_submit && !allowed_before;
    if state != "completed" && state != "discarded" {
        return Requeue::Queued {
            permission_changes: allow_submit != allowed_before,
        };
    }
    let stale = match (verdict.as_deref(), checked_at) {
        (None | Some("failed") | Some("pending"), _) | (_, None) => true,
        (Some("unknown"), _) if newly_allowed => true,
        (_, Some(at)) => at < fresh_since,
    };
    if !stale {
        return Requeue::Fresh;
    }
    // A pending analysis is polled again; anything else is looked up afresh.
    if verdict.as_deref() == Some("pending") && analysis_id.is_some() {
        Requeue::Reopen(Step::Poll)
    } else {
        Requeue::Reopen(Step::Lookup)
    }
}

/// Checks a backend's hand-kept list of migrations against its directory: every file in it is
/// listed, under the version its name starts with, in order (a new file left out of the list
/// would never be applied).
#[cfg(test)]
fn check_migrations(dir: &str, migrations: &[(i64, &'static str, &'static str)]) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut files: Vec<(i64, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let version = name.split('_').next().unwrap().parse().unwrap();
            (version, std::fs::read_to_string(&path).unwrap())
        })
        .collect();
    files.sort();
    let listed: Vec<(i64, String)> = migrations
        .iter()
        .map(|&(version, _, sql)| (version, sql.to_owned()))
        .collect();
    assert_eq!(listed, files, "{}", dir.display());
    let versions: Vec<i64> = listed.iter().map(|(v, _)| *v).collect();
    assert_eq!(versions, (1..=versions.len() as i64).collect::<Vec<_>>());
}

/// The schema migrations of one backend, embedded in the binary: (version, description, SQL).
/// Built by hand rather than by `sqlx::migrate!`, whose proc macro compiles a second copy of
/// both database drivers (and SQLite's C source) for the build host. The checksums are the same
/// ones `migrate!` records, so databases created either way are interchangeable.
fn migrator(migrations: &[(i64, &'static str, &'static str)]) -> sqlx::migrate::Migrator {
    use sqlx::SqlSafeStr as _;
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    Migrator::with_migrations(
        migrations
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    description.into(),
                    MigrationType::Simple,
                    sql.into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

/// A database row read by column index, whichever driver it comes from (sqlx's SQLite and
/// PostgreSQL rows, rusqlite's for the SQLite writer thread), so that the verdict columns are
/// decoded in one place.
pub(crate) trait Columns {
    /// A text column; `None` for NULL.
    fn text(&self, i: usize) -> Option<String>;
    /// An integer column; `None` for NULL.
    fn int(&self, i: usize) -> Option<i64>;
    /// A blob column; `None` for NULL.
    fn blob(&self, i: usize) -> Option<Vec<u8>>;
}

/// Reads the verdict columns starting at `at` (see `VERDICT_COLUMNS` of each adapter); `None` when the job has
/// no verdict (a LEFT JOIN gave NULLs).
pub(crate) fn verdict_from_row(row: &impl Columns, at: usize) -> Option<VerdictRecord> {
    let verdict = <Verdict as std::str::FromStr>::from_str(&row.text(at)?).ok()?;
    let count = |i: usize| row.int(at + 1 + i).and_then(|n| u32::try_from(n).ok());
    Some(VerdictRecord {
        verdict,
        stats: stats_from_counts(std::array::from_fn(count)),
        threat_label: row.text(at + 8),
        sha256: row.text(at + 9),
        md5: row.text(at + 10),
        sha1: row.text(at + 11),
        vt_id: row.text(at + 12),
        vt_analysis_date: row.int(at + 13),
        checked_at: row.int(at + 14).unwrap_or_default(),
        note: row.text(at + 15),
        error: row.text(at + 16),
        raw: row.blob(at + 17).as_deref().and_then(sqlite::decompress),
    })
}

/// The engine counts of a verdict row, in the order of its columns (`malicious`, `suspicious`,
/// `harmless`, `undetected`, `timeout`, `type_unsupported`, `failure`); `None` when it has none.
pub(crate) fn stats_from_counts(counts: [Option<u32>; 7]) -> Option<Stats> {
    let [
        malicious,
        suspicious,
        harmless,
        undetected,
        timeout,
        type_unsupported,
        failure,
    ] = counts;
    malicious.map(|malicious| Stats {
        malicious,
        suspicious: suspicious.unwrap_or(0),
        harmless: harmless.unwrap_or(0),
        undetected: undetected.unwrap_or(0),
        timeout: timeout.unwrap_or(0),
        type_unsupported: type_unsupported.unwrap_or(0),
        failure: failure.unwrap_or(0),
        ..Stats::default()
    })
}

/// The current time in Unix milliseconds.
pub fn now_millis() -> Millis {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_name_that_is_not_utf8_is_kept_escaped_and_found_again() {
        use std::os::unix::ffi::OsStrExt;
        let raw = Path::new(std::ffi::OsStr::from_bytes(
            b"/drop/\xff\xfename \xc3\xa9.txt",
        ));
        let stored = path_text(raw);
        assert_eq!(stored, "/drop/\\xff\\xfename é.txt");
        assert_eq!(
            path_candidates(&stored),
            [PathBuf::from(&stored), raw.to_path_buf()]
        );
        // UTF-8 names are kept as they are, and are their only reading.
        assert_eq!(path_text(Path::new("/drop/é.txt")), "/drop/é.txt");
        assert_eq!(
            path_candidates("/drop/é.txt"),
            [PathBuf::from("/drop/é.txt")]
        );
        // Only whole escapes are read as bytes.
        let odd = "/drop/\\x+1 \\xZZ \\x4";
        assert_eq!(path_candidates(odd)[1], PathBuf::from(odd));
    }
}
