//! The job state machine, one transition per test, each run against both backends (a fresh
//! SQLite file, and a fresh PostgreSQL database when `VTRIAGE_TEST_PG` names a server).

mod backends;

use std::collections::HashSet;
use std::sync::Arc;

use backends::Backend;
use tokio_util::sync::CancellationToken;
use vtriage::indicator::Kind;
use vtriage::store::{
    Clock, Enqueued, FileSeen, MaySubmit, NewJob, QuotaDecision, QuotaLimits, Retried, Snooze,
    Step, Store,
};
use vtriage::verdict::{Stats, Verdict, VerdictRecord};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_790_000_000_000; // a fixed "now" (Nov 2026), so tests do not depend on the clock

/// A clock stopped at `t`, for the quota ledger.
fn at(t: i64) -> Clock {
    Arc::new(move || t)
}

fn hash_job(indicator: &str) -> NewJob {
    job(Kind::Hash, indicator, false)
}

/// A job for `indicator`, that may be submitted if `allow_submit`.
fn job(kind: Kind, indicator: &str, allow_submit: bool) -> NewJob {
    NewJob {
        kind,
        indicator: indicator.into(),
        allow_submit,
        path: None,
        source: None,
    }
}

fn clean(now: i64) -> VerdictRecord {
    VerdictRecord {
        stats: Some(Stats {
            undetected: 70,
            ..Stats::default()
        }),
        sha256: Some("a".repeat(64)),
        md5: Some("b".repeat(32)),
        ..VerdictRecord::bare(Verdict::Clean, now)
    }
}

/// A stop token never cancelled.
fn never() -> CancellationToken {
    CancellationToken::new()
}

async fn register(store: &dyn Store, owner: &str, now: i64) {
    store
        .heartbeat(owner, "host", 1, now, 60_000, &[])
        .await
        .unwrap();
}

async fn duplicate_indicators_become_one_job_with_every_source(db: Backend) {
    let s = db.store.clone();
    let mut a = hash_job(&"a".repeat(64));
    a.source = Some(("list1.txt".into(), 3));
    let mut b = a.clone();
    b.source = Some(("list2.txt".into(), 9));
    let out = s.enqueue(&[a, b], T0, DAY, 5).await.unwrap();
    assert_eq!(out[0].1, Enqueued::New);
    assert_eq!(out[1], (out[0].0, Enqueued::Queued));
    assert_eq!(db.rows("sources").await, 2);
}

/// A batch of new jobs of every kind, then a batch mixing new and known ones: every job gets back
/// its own id, and its source or path lands on that job.
async fn each_job_of_a_batch_gets_its_own_id_and_provenance(db: Backend) {
    let s = db.store.clone();
    let job = |kind, indicator: &str, line| NewJob {
        kind,
        indicator: indicator.into(),
        allow_submit: false,
        path: (kind == Kind::File).then(|| FileSeen::at(format!("/drop/{indicator}"), 10)),
        source: Some(("list.txt".into(), line)),
    };
    let first = [
        job(Kind::Url, "http://a.example/", 1),
        job(Kind::File, &"f".repeat(64), 2),
        job(Kind::Ip, "192.0.2.1", 3),
        job(Kind::Domain, "a.example", 4),
    ];
    let out = s.enqueue(&first, T0, DAY, 5).await.unwrap();
    assert!(out.iter().all(|(_, e)| *e == Enqueued::New), "{out:?}");
    let second = [
        job(Kind::Domain, "b.example", 5),
        job(Kind::Ip, "192.0.2.1", 6),
        job(Kind::File, &"e".repeat(64), 7),
        job(Kind::Url, "http://a.example/", 8),
    ];
    let again = s.enqueue(&second, T0, DAY, 5).await.unwrap();
    assert_eq!(again[1], (out[2].0, Enqueued::Queued));
    assert_eq!(again[3], (out[0].0, Enqueued::Queued));
    assert_eq!((again[0].1, again[2].1), (Enqueued::New, Enqueued::New));
    for (jobs, queued) in [(&first, &out), (&second, &again)] {
        let ids: Vec<i64> = queued.iter().map(|(id, _)| *id).collect();
        let results = s.results(&ids).await.unwrap();
        let named: Vec<_> = results
            .iter()
            .map(|r| (r.kind, r.indicator.as_str()))
            .collect();
        let asked: Vec<_> = jobs
            .iter()
            .map(|j| (j.kind, j.indicator.as_str()))
            .collect();
        assert_eq!(named, asked);
    }
    assert_eq!(
        s.file_paths(again[2].0).await.unwrap(),
        [format!("/drop/{}", "e".repeat(64))]
    );
    assert_eq!(
        s.file_paths(out[1].0).await.unwrap(),
        [format!("/drop/{}", "f".repeat(64))]
    );
    assert_eq!(db.rows("sources").await, 8);
}

async fn claim_takes_due_jobs_once_and_polls_first(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w1", T0).await;
    s.enqueue(
        &[hash_job(&"1".repeat(32)), hash_job(&"2".repeat(32))],
        T0,
        DAY,
        5,
    )
    .await
    .unwrap();
    let mut jobs = s.claim("w1", 2, T0, 1000).await.unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        s.claim("w1", 1, T0, 1000).await.unwrap().is_empty(),
        "running jobs are not claimed twice"
    );
    let (poll, lookup) = (jobs.pop().unwrap(), jobs.pop().unwrap());
    let later_poll = Snooze {
        until: T0 + 10,
        step: Step::Poll,
        analysis_id: Some("an-1".into()),
        polls: 0,
    };
    assert!(s.snooze(&poll, &later_poll, T0).await.unwrap());
    let lookup_now = Snooze {
        until: T0,
        step: Step::Lookup,
        analysis_id: None,
        polls: 0,
    };
    assert!(s.snooze(&lookup, &lookup_now, T0).await.unwrap());
    let first = s.claim("w1", 1, T0 + 5, 1000).await.unwrap();
    assert_eq!(first[0].id, lookup.id, "the poll is not due yet");
    s.release(&first[0], T0 + 5).await.unwrap();
    let next = s.claim("w1", 1, T0 + 20, 1000).await.unwrap();
    assert_eq!(
        next[0].id, poll.id,
        "a due poll goes before an older lookup"
    );
    assert_eq!(next[0].step, Step::Poll);
    assert_eq!(next[0].analysis_id.as_deref(), Some("an-1"));
}

/// `scan` and `lookup` put the jobs they wait for first, and those stay first through their
/// snoozes (a wait for quota, a poll) until they finish.
async fn awaited_jobs_are_claimed_first(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w1", T0).await;
    let jobs: Vec<_> = (0..3).map(|i| hash_job(&format!("{i:064x}"))).collect();
    let ids: Vec<i64> = s
        .enqueue(&jobs, T0, DAY, 5)
        .await
        .unwrap()
        .iter()
        .map(|(id, _)| *id)
        .collect();
    s.put_first(&ids[2..], MaySubmit::ANY).await.unwrap();
    let first = s.claim("w1", 1, T0, 1000).await.unwrap().pop().unwrap();
    assert_eq!(first.id, ids[2]);
    // The quota ran out: back to the queue, still before the older jobs.
    let quota_wait = Snooze {
        until: T0,
        step: Step::Lookup,
        analysis_id: None,
        polls: 0,
    };
    assert!(s.snooze(&first, &quota_wait, T0).await.unwrap());
    let again = s.claim("w1", 1, T0, 1000).await.unwrap().pop().unwrap();
    assert_eq!(
        again.id, ids[2],
        "an awaited job keeps its turn through a snooze"
    );
    // Then the backlog, oldest first.
    let backlog = s.claim("w1", 1, T0, 1000).await.unwrap().pop().unwrap();
    assert_eq!(backlog.id, ids[0]);
}

async fn snooze_gives_the_attempt_back_and_retry_keeps_it(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    s.enqueue(&[hash_job(&"c".repeat(40))], T0, DAY, 2)
        .await
        .unwrap();
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    assert_eq!(job.attempt, 1);
    let snooze = Snooze {
        until: T0,
        step: Step::Lookup,
        analysis_id: None,
        polls: 1,
    };
    s.snooze(&job, &snooze, T0).await.unwrap();
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    assert_eq!(job.attempt, 1, "a snooze is not an attempt");
    assert_eq!(s.retry(&job, T0, "503", T0).await.unwrap(), Retried::Later);
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    assert_eq!(job.attempt, 2);
    assert_eq!(
        s.retry(&job, T0, "503 again", T0).await.unwrap(),
        Retried::Discarded
    );
    let results = s.results(&[job.id]).await.unwrap();
    assert_eq!(results[0].state, "discarded");
    let v = results[0].verdict.as_ref().unwrap();
    assert_eq!(v.verdict, Verdict::Failed);
    assert!(v.error.as_deref().unwrap().contains("503 again"));
}

async fn completion_is_fenced_by_the_lease(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w1", T0).await;
    s.enqueue(&[hash_job(&"d".repeat(64))], T0, DAY, 5)
        .await
        .unwrap();
    let job = s.claim("w1", 1, T0, 1000).await.unwrap().pop().unwrap();
    // The lease expires; the rescuer gives the job back and w2 takes it.
    assert_eq!(s.rescue(T0 + 2000).await.unwrap(), 1);
    register(&*s, "w2", T0 + 2000).await;
    let stolen = s
        .claim("w2", 1, T0 + 2000, 1000)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert!(
        !s.complete(&job, &clean(T0), T0 + 2001).await.unwrap(),
        "the old owner is fenced out"
    );
    let r = s.results(&[job.id]).await.unwrap();
    assert_eq!(r[0].state, "running", "still the new owner's");
    assert!(
        r[0].verdict.is_none(),
        "and no verdict was written by the old one"
    );
    assert!(s.complete(&stolen, &clean(T0), T0 + 2002).await.unwrap());
    let r = s.results(&[job.id]).await.unwrap();
    assert_eq!(r[0].state, "completed");
    assert_eq!(r[0].verdict.as_ref().unwrap().verdict, Verdict::Clean);
}

/// `ingest --wait` and `lookup` wait on this: the ids given that are queued or running.
async fn unfinished_names_the_queued_and_running_jobs_among_those_asked(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w1", T0).await;
    let jobs: Vec<NewJob> = (0..30).map(|i| hash_job(&format!("{i:064x}"))).collect();
    let ids: Vec<i64> = s
        .enqueue(&jobs, T0, DAY, 5)
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    // Twenty claimed, ten of them completed: ten running and ten still queued are left.
    let claimed = s.claim("w1", 20, T0, 60_000).await.unwrap();
    for job in &claimed[..10] {
        assert!(s.complete(job, &clean(T0), T0 + 1).await.unwrap());
    }
    let done: Vec<i64> = claimed[..10].iter().map(|j| j.id).collect();
    let mut expected: Vec<i64> = ids
        .iter()
        .copied()
        .filter(|id| !done.contains(id))
        .collect();
    expected.sort_unstable();
    // An id that names no job is not waited on.
    let mut asked = ids.clone();
    asked.push(ids.iter().max().unwrap() + 1000);
    let mut left = s.unfinished(&asked).await.unwrap();
    left.sort_unstable();
    assert_eq!(left, expected);
    assert_eq!(s.unfinished(&[]).await.unwrap(), Vec::<i64>::new());
}

async fn jobs_of_a_worker_that_died_are_rescued_at_once(db: Backend) {
    let s = db.store.clone();
    register(&*s, "dead", T0).await;
    s.enqueue(&[hash_job(&"e".repeat(64))], T0, DAY, 5)
        .await
        .unwrap();
    s.claim("dead", 1, T0, 3_600_000).await.unwrap();
    assert_eq!(
        s.rescue(T0 + 1).await.unwrap(),
        0,
        "a live worker keeps its lease"
    );
    // A restart notices the old process is gone and drops it from the workers table.
    s.heartbeat("new", "host", 2, T0 + 2, 60_000, &["dead".to_string()])
        .await
        .unwrap();
    assert_eq!(s.rescue(T0 + 3).await.unwrap(), 1);
    assert_eq!(s.claim("new", 1, T0 + 3, 1000).await.unwrap().len(), 1);
}

/// A worker's quota limits are kept with it, for `status`; a heartbeat leaves them.
async fn a_workers_limits_are_kept_with_it(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    register(&*s, "quiet", T0).await;
    s.describe_worker("w", r#"{"requests":20}"#).await.unwrap();
    s.heartbeat("w", "host", 1, T0 + 1, 60_000, &[])
        .await
        .unwrap();
    let workers = s.workers().await.unwrap();
    let limits = |owner: &str| {
        let w = workers.iter().find(|w| w.owner == owner).unwrap();
        w.limits.clone()
    };
    assert_eq!(limits("w").as_deref(), Some(r#"{"requests":20}"#));
    assert_eq!(limits("quiet"), None);
}

async fn a_job_abandoned_too_often_is_discarded_as_failed(db: Backend) {
    let s = db.store.clone();
    s.enqueue(&[hash_job(&"f".repeat(64))], T0, DAY, 1)
        .await
        .unwrap();
    register(&*s, "w", T0).await;
    let job = s.claim("w", 1, T0, 10).await.unwrap().pop().unwrap();
    assert_eq!(s.rescue(T0 + 100).await.unwrap(), 1);
    let r = s.results(&[job.id]).await.unwrap();
    assert_eq!(r[0].state, "discarded");
    assert_eq!(r[0].verdict.as_ref().unwrap().verdict, Verdict::Failed);
}

/// The same, but abandoned while it only waited for quota (its attempt given back): it is
/// returned to the queue, not discarded, and charged again when next claimed.
async fn a_job_abandoned_while_it_waits_for_quota_is_not_charged(db: Backend) {
    let s = db.store.clone();
    s.enqueue(&[hash_job(&"f".repeat(64))], T0, DAY, 1)
        .await
        .unwrap();
    register(&*s, "w", T0).await;
    let job = s.claim("w", 1, T0, 10).await.unwrap().pop().unwrap();
    assert!(s.count_attempt(&job, false).await.unwrap());
    assert_eq!(s.rescue(T0 + 100).await.unwrap(), 1);
    assert_eq!(s.results(&[job.id]).await.unwrap()[0].state, "available");
    let again = s.claim("w", 1, T0 + 100, 10).await.unwrap().pop().unwrap();
    assert_eq!(again.attempt, 1);
    assert!(s.count_attempt(&again, false).await.unwrap());
    assert!(s.count_attempt(&again, true).await.unwrap());
    assert_eq!(s.rescue(T0 + 200).await.unwrap(), 1);
    assert_eq!(s.results(&[job.id]).await.unwrap()[0].state, "discarded");
}

async fn fresh_verdicts_are_reused_and_stale_ones_reopened(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let [(id, _)] = s
        .enqueue(&[hash_job(&"a".repeat(64))], T0, DAY, 5)
        .await
        .unwrap()[..]
    else {
        panic!()
    };
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    s.complete(&job, &clean(T0), T0).await.unwrap();
    let again = s
        .enqueue(&[hash_job(&"a".repeat(64))], T0 + 1000, DAY, 5)
        .await
        .unwrap();
    assert_eq!(again[0], (id, Enqueued::Fresh));
    let later = s
        .enqueue(&[hash_job(&"a".repeat(64))], T0 + 2 * DAY, DAY, 5)
        .await
        .unwrap();
    assert_eq!(later[0], (id, Enqueued::Reopened));
    assert_eq!(
        s.claim("w", 1, T0 + 2 * DAY, 1000).await.unwrap()[0].step,
        Step::Lookup
    );
    // The same content under another hash (md5) is answered from the stored verdict.
    let found = s
        .fresh_verdict_for_hash(&"b".repeat(32), T0 - 1, false)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.verdict, Verdict::Clean);
    assert_eq!(found.stats.unwrap().undetected, 70);
    // A content VirusTotal does not know answers only those who would not upload it.
    s.enqueue(&[hash_job(&"c".repeat(40))], T0, DAY, 5)
        .await
        .unwrap();
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    let unknown = VerdictRecord {
        sha1: Some("c".repeat(40)),
        ..VerdictRecord::bare(Verdict::Unknown, T0)
    };
    assert!(s.complete(&job, &unknown, T0).await.unwrap());
    let c = "c".repeat(40);
    assert!(
        s.fresh_verdict_for_hash(&c, T0 - 1, false)
            .await
            .unwrap()
            .is_none()
    );
    let found = s.fresh_verdict_for_hash(&c, T0 - 1, true).await.unwrap();
    assert_eq!(found.map(|v| v.verdict), Some(Verdict::Unknown));
}

async fn an_unknown_file_is_reopened_when_uploads_become_allowed(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let file = |allow| NewJob {
        path: Some(FileSeen::at("/drop/x.exe", 10)),
        ..job(Kind::File, &"9".repeat(64), allow)
    };
    s.enqueue(&[file(false)], T0, DAY, 5).await.unwrap();
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    s.complete(
        &job,
        &VerdictRecord::noted(Verdict::Unknown, "not uploaded", T0),
        T0,
    )
    .await
    .unwrap();
    assert_eq!(
        s.enqueue(&[file(false)], T0 + 1, DAY, 5).await.unwrap()[0].1,
        Enqueued::Fresh
    );
    assert_eq!(
        s.enqueue(&[file(true)], T0 + 2, DAY, 5).await.unwrap()[0].1,
        Enqueued::Reopened
    );
    let job = s.claim("w", 1, T0 + 2, 1000).await.unwrap().pop().unwrap();
    assert!(job.allow_submit);
    assert_eq!(
        s.file_paths(job.id).await.unwrap(),
        vec!["/drop/x.exe".to_string()]
    );
}

/// The permission to upload is the latest enqueue's: a `scan` without `--upload` withdraws the
/// one an interrupted `scan --upload` left, even from a job a worker has claimed meanwhile.
async fn the_latest_enqueue_decides_whether_a_file_may_be_uploaded(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let file = |allow| NewJob {
        path: Some(FileSeen::at("/cases/x.exe", 10)),
        ..job(Kind::File, &"8".repeat(64), allow)
    };
    s.enqueue(&[file(true)], T0, DAY, 5).await.unwrap();
    assert_eq!(
        s.enqueue(&[file(false)], T0 + 1, DAY, 5).await.unwrap()[0].1,
        Enqueued::Queued
    );
    let job = s.claim("w", 1, T0 + 1, 1000).await.unwrap().pop().unwrap();
    assert!(!job.allow_submit, "withdrawn while queued");
    s.release(&job, T0 + 2).await.unwrap();

    s.enqueue(&[file(true)], T0 + 3, DAY, 5).await.unwrap();
    let job = s.claim("w", 1, T0 + 3, 1000).await.unwrap().pop().unwrap();
    assert!(job.allow_submit, "given again");
    s.enqueue(&[file(false)], T0 + 4, DAY, 5).await.unwrap();
    assert!(
        !s.mark_submitting(&job, T0 + 5).await.unwrap(),
        "withdrawn after the claim: the upload is called off"
    );
    s.enqueue(&[file(true)], T0 + 6, DAY, 5).await.unwrap();
    assert!(s.mark_submitting(&job, T0 + 7).await.unwrap());
}

/// A process claims a job that may be submitted only when its own policy allows that too; polls
/// (already submitted) and jobs that may not be submitted are anyone's.
async fn a_process_that_may_not_submit_looks_up_jobs_that_may_be_and_leaves_the_submission(
    db: Backend,
) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let sha = "7".repeat(64);
    s.enqueue(
        &[
            job(Kind::File, &sha, true),
            job(Kind::Url, "http://x.test/", true),
            job(Kind::Domain, "x.test", false),
        ],
        T0,
        DAY,
        5,
    )
    .await
    .unwrap();
    let never = MaySubmit {
        files: false,
        urls: false,
    };
    // Anyone may look a job up, whatever may follow.
    let mut claimed = s.claim_as("w", 10, T0, 1000, never).await.unwrap();
    claimed.sort_by_key(|j| j.kind.as_str());
    let kinds: Vec<Kind> = claimed.iter().map(|j| j.kind).collect();
    assert_eq!(kinds, [Kind::Domain, Kind::File, Kind::Url]);
    let url_id = claimed[2].id;
    // The lookups found the file and the URL unknown: the answers are kept, and the jobs left
    // to a process that may submit them.
    for job in &claimed[1..] {
        assert!(s.mark_unknown(job, T0).await.unwrap());
        assert!(s.release(job, T0).await.unwrap());
    }
    let counts = s.counts().await.unwrap();
    assert_eq!(
        counts.remaining_by_step.get("upload"),
        Some(&2),
        "{counts:?}"
    );
    assert!(
        s.claim_as("w", 10, T0, 1000, never)
            .await
            .unwrap()
            .is_empty()
    );
    let files_only = MaySubmit {
        files: true,
        urls: false,
    };
    let claimed = s.claim_as("w", 10, T0, 1000, files_only).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].kind, claimed[0].step),
        (Kind::File, Step::Upload)
    );
    // Stopped before its upload was sent: it keeps the lookup's answer, and still needs a
    // process that may upload.
    let upload = Snooze {
        until: T0,
        step: Step::Upload,
        analysis_id: None,
        polls: 0,
    };
    assert!(s.snooze(&claimed[0], &upload, T0).await.unwrap());
    assert!(
        s.claim_as("w", 10, T0, 1000, never)
            .await
            .unwrap()
            .is_empty()
    );
    let claimed = s.claim_as("w", 10, T0, 1000, files_only).await.unwrap();
    assert_eq!(claimed[0].step, Step::Upload);
    // Submitted, then polled: a poll is anyone's.
    let file = &claimed[0];
    let poll = Snooze {
        until: T0,
        step: Step::Poll,
        analysis_id: Some("an-analysis".into()),
        polls: 0,
    };
    assert!(s.snooze(file, &poll, T0).await.unwrap());
    let claimed = s.claim_as("w", 10, T0, 1000, never).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].step, Step::Poll);
    // A process waiting for the URL (`recheck --wait`) puts it first and withdraws what its
    // own policy does not give: it can then finish it (`unknown`) rather than wait forever.
    s.put_first(&[url_id], never).await.unwrap();
    let url = s.claim_as("w", 10, T0, 1000, never).await.unwrap();
    assert_eq!(url.len(), 1);
    assert_eq!(
        (url[0].id, url[0].step, url[0].allow_submit),
        (url_id, Step::Upload, false)
    );
}

async fn a_failed_recheck_keeps_the_earlier_verdict(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    s.enqueue(&[hash_job(&"a".repeat(64))], T0, DAY, 1)
        .await
        .unwrap();
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    s.complete(&job, &clean(T0), T0).await.unwrap();
    s.enqueue(&[hash_job(&"a".repeat(64))], T0 + 2 * DAY, DAY, 1)
        .await
        .unwrap();
    let job = s
        .claim("w", 1, T0 + 2 * DAY, 1000)
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(
        s.retry(&job, T0, "503", T0 + 2 * DAY).await.unwrap(),
        Retried::Discarded
    );
    let r = s.results(&[job.id]).await.unwrap();
    assert_eq!(r[0].verdict.as_ref().unwrap().verdict, Verdict::Clean);
}

/// The daemon polls a `pending` analysis again once half its age has passed since its last
/// check (never sooner than the gap it is given), so one that never finishes costs ever fewer
/// polls rather than one every few minutes for ever.
async fn pending_analyses_are_polled_again_ever_less_often(db: Backend) {
    const MINUTE: i64 = 60_000;
    const GAP: i64 = 5 * MINUTE;
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let url = job(Kind::Url, "http://x.test/", true);
    s.enqueue(&[url], T0, DAY, 5).await.unwrap();
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    assert!(s.mark_submitting(&job, T0).await.unwrap());
    let poll = Snooze {
        until: T0,
        step: Step::Poll,
        analysis_id: Some("an-analysis".into()),
        polls: 0,
    };
    assert!(s.snooze(&job, &poll, T0).await.unwrap());
    let pending = |at| VerdictRecord::noted(Verdict::Pending, "analysis not finished", at);
    // Given up on an hour after the submission, then polled again at 1.5 and 2.25 hours.
    let mut checked = T0 + 60 * MINUTE;
    for wait in [30 * MINUTE, 45 * MINUTE] {
        let job = s.claim("w", 1, checked, 1000).await.unwrap().pop().unwrap();
        assert_eq!(
            (job.step, job.analysis_id.as_deref()),
            (Step::Poll, Some("an-analysis"))
        );
        assert!(s.complete(&job, &pending(checked), checked).await.unwrap());
        let due = checked + wait;
        assert_eq!(s.recheck_pending(GAP, due - 1).await.unwrap(), 0);
        assert_eq!(s.recheck_pending(GAP, due).await.unwrap(), 1);
        checked = due;
    }
    // An object VirusTotal shows unanalysed that this tool never submitted counts from when it
    // was queued; a minute old, it still waits the whole gap.
    s.enqueue(&[hash_job(&"c".repeat(64))], checked, DAY, 5)
        .await
        .unwrap();
    let jobs = s.claim("w", 2, checked, 1000).await.unwrap();
    assert_eq!(jobs.len(), 2);
    for job in &jobs {
        assert!(
            s.complete(job, &pending(checked + MINUTE), checked + MINUTE)
                .await
                .unwrap()
        );
    }
    let due = checked + MINUTE + GAP;
    assert_eq!(s.recheck_pending(GAP, due - 1).await.unwrap(), 0);
    assert_eq!(s.recheck_pending(GAP, due).await.unwrap(), 1);
}

async fn submission_intent_survives_a_restart(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let url = NewJob {
        source: Some(("cli".into(), 0)),
        ..job(Kind::Url, "http://x.test/", true)
    };
    s.enqueue(&[url], T0, DAY, 5).await.unwrap();
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    assert!(s.mark_submitting(&job, T0 + 1).await.unwrap());
    db.close().await;
    // "Crash": reopen the database; the rescuer returns the job with its intent record.
    let s = db.open_again().await;
    s.heartbeat("w2", "host", 2, T0 + 2, 60_000, &["w".to_string()])
        .await
        .unwrap();
    s.rescue(T0 + 2).await.unwrap();
    let job = s.claim("w2", 1, T0 + 2, 1000).await.unwrap().pop().unwrap();
    assert_eq!(job.submitted_at, Some(T0 + 1));
    assert_eq!(job.analysis_id, None);
    // A submission VirusTotal refused (a 429) leaves no intent behind.
    assert!(s.mark_submitting(&job, T0 + 3).await.unwrap());
    assert!(s.unmark_submitting(&job, T0 + 4).await.unwrap());
    assert!(s.release(&job, T0 + 4).await.unwrap());
    let job = s.claim("w2", 1, T0 + 5, 1000).await.unwrap().pop().unwrap();
    assert_eq!(job.submitted_at, None);
}

async fn the_quota_ledger_never_grants_more_than_the_window_allows(db: Backend) {
    let s = db.store.clone();
    let limits = QuotaLimits {
        requests: 3,
        window_ms: 1000,
        daily: 5,
        monthly: None,
    };
    for i in 0..3 {
        assert_eq!(
            s.take_quota("k", &limits, at(T0 + i)).await.unwrap(),
            QuotaDecision::Granted(T0 + i)
        );
    }
    assert_eq!(
        s.take_quota("k", &limits, at(T0 + 10)).await.unwrap(),
        QuotaDecision::WaitUntil(T0 + 1000)
    );
    assert_eq!(
        s.take_quota("k", &limits, at(T0 + 1000)).await.unwrap(),
        QuotaDecision::Granted(T0 + 1000)
    );
    assert_eq!(
        s.take_quota("k", &limits, at(T0 + 2500)).await.unwrap(),
        QuotaDecision::Granted(T0 + 2500)
    );
    // Five today: the daily cap holds until midnight UTC.
    match s.take_quota("k", &limits, at(T0 + 5000)).await.unwrap() {
        QuotaDecision::Exhausted(until) => assert_eq!(until % DAY, 0, "resets at midnight UTC"),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(s.quota_usage("k", 1000, T0 + 5000).await.unwrap().today, 5);
    // Another key has its own budget.
    assert_eq!(
        s.take_quota("other", &limits, at(T0 + 5000)).await.unwrap(),
        QuotaDecision::Granted(T0 + 5000)
    );
}

async fn a_pause_holds_every_request_of_the_key(db: Backend) {
    let s = db.store.clone();
    let limits = QuotaLimits {
        requests: 100,
        window_ms: 1000,
        daily: 1000,
        monthly: None,
    };
    s.pause_quota("k", T0 + 500).await.unwrap();
    assert_eq!(
        s.take_quota("k", &limits, at(T0)).await.unwrap(),
        QuotaDecision::WaitUntil(T0 + 500)
    );
    assert_eq!(
        s.take_quota("k", &limits, at(T0 + 500)).await.unwrap(),
        QuotaDecision::Granted(T0 + 500)
    );
}

/// Several processes claim from one queue at once: every job goes to exactly one of them.
async fn concurrent_claims_never_hand_out_a_job_twice(db: Backend) {
    let jobs: Vec<NewJob> = (0..200).map(|i| hash_job(&format!("{i:064x}"))).collect();
    db.store.enqueue(&jobs, T0, DAY, 5).await.unwrap();
    let mut daemons = Vec::new();
    for d in 0..4 {
        let store = db.open_again().await;
        let owner = format!("daemon-{d}");
        register(&*store, &owner, T0).await;
        daemons.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = store.claim(&owner, 7, T0, 60_000).await.unwrap();
                if got.is_empty() {
                    return mine;
                }
                for job in got {
                    assert!(store.complete(&job, &clean(T0), T0).await.unwrap());
                    mine.push(job.id);
                }
            }
        }));
    }
    let mut seen = HashSet::new();
    let mut busy = 0;
    for daemon in daemons {
        let ids = daemon.await.unwrap();
        busy += usize::from(!ids.is_empty());
        for id in ids {
            assert!(seen.insert(id), "job {id} was claimed twice");
        }
    }
    assert_eq!(seen.len(), 200, "every job was claimed");
    assert!(busy >= 2, "the work was shared");
}

/// The workers of one process claim together (`worker::SharedClaims`): twelve ask at once for
/// five due jobs; each job goes to exactly one of them, the others find none, none is left over.
async fn workers_of_one_process_share_their_claims(db: Backend) {
    let jobs: Vec<NewJob> = (0..5).map(|i| hash_job(&format!("{i:064x}"))).collect();
    db.store.enqueue(&jobs, T0, DAY, 5).await.unwrap();
    register(&*db.store, "w", T0).await;
    let claims = Arc::new(vtriage::worker::SharedClaims::new(MaySubmit::ANY));
    let mut workers = Vec::new();
    for _ in 0..12 {
        let (claims, store) = (claims.clone(), db.store.clone());
        workers.push(tokio::spawn(async move {
            claims.next(&*store, "w", 60_000).await.unwrap()
        }));
    }
    let mut got = HashSet::new();
    let mut none = 0;
    for worker in workers {
        match worker.await.unwrap() {
            Some(job) => assert!(got.insert(job.id), "job {} handed out twice", job.id),
            None => none += 1,
        }
    }
    assert_eq!((got.len(), none), (5, 7));
    let counts = db.store.counts().await.unwrap();
    assert_eq!(counts.by_state["running"]["hash"], 5, "all five are leased");
    assert!(
        claims
            .next(&*db.store, "w", 60_000)
            .await
            .unwrap()
            .is_none()
    );
}

/// Two hosts enqueue overlapping batches (the same file dropped on both) at the same moment:
/// one job per indicator, and no enqueue fails.
async fn concurrent_enqueues_of_the_same_indicators_make_one_job_each(db: Backend) {
    let all: Vec<NewJob> = (0..60).map(|i| hash_job(&format!("{i:040x}"))).collect();
    let mut tasks = Vec::new();
    for d in 0..3usize {
        let store = db.open_again().await;
        // Each host sees the indicators in its own order.
        let mut batch = all.clone();
        batch.rotate_left(d * 20);
        if d == 1 {
            batch.reverse();
        }
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            for chunk in batch.chunks(15) {
                out.extend(store.enqueue(chunk, T0, DAY, 5).await.unwrap());
            }
            out
        }));
    }
    let mut new = 0;
    let mut ids = HashSet::new();
    for task in tasks {
        for (id, outcome) in task.await.unwrap() {
            new += usize::from(outcome == Enqueued::New);
            ids.insert(id);
        }
    }
    assert_eq!(new, 60, "each indicator is new exactly once");
    assert_eq!(ids.len(), 60);
    assert_eq!(db.rows("jobs").await, 60);
}

/// A list arrives as batches on a channel: every job is queued once, in order, an indicator
/// repeated within a batch or across batches is found queued under its first job, and each
/// occurrence keeps its line.
async fn batches_from_a_channel_are_queued_in_order(db: Backend) {
    let s = db.store.clone();
    let job = |i: u32, line| NewJob {
        source: Some(("list.txt".into(), line)),
        ..hash_job(&format!("{i:064x}"))
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let queueing = tokio::spawn(async move { s.enqueue_batches(rx, T0, DAY, 5, &never()).await });
    tx.send(vec![job(1, 1), job(2, 2), job(1, 3)])
        .await
        .unwrap();
    tx.send(vec![job(3, 4), job(2, 5)]).await.unwrap();
    drop(tx);
    let out = queueing.await.unwrap().unwrap();
    let outcomes: Vec<Enqueued> = out.iter().map(|(_, e)| *e).collect();
    use Enqueued::{New, Queued};
    assert_eq!(outcomes, [New, New, Queued, New, Queued]);
    let ids: Vec<i64> = out.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        (ids[2], ids[4]),
        (ids[0], ids[1]),
        "repeats find the first job"
    );
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 3);
    assert_eq!(db.rows("jobs").await, 3);
    assert_eq!(db.rows("sources").await, 5);
    // The same jobs through `enqueue`: the same ids.
    let again = db.store.enqueue(&[job(3, 9)], T0, DAY, 5).await.unwrap();
    assert_eq!(again, [(ids[3], Queued)]);
}

/// While the next batch is not ready (a list read slowly from a pipe), what was queued is
/// committed: others see it, and can queue jobs, in this process or another, without waiting for
/// the rest of the list.
async fn a_list_that_arrives_slowly_holds_no_lock_while_it_waits(db: Backend) {
    let s = db.store.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let queueing = tokio::spawn(async move { s.enqueue_batches(rx, T0, DAY, 5, &never()).await });
    tx.send(vec![hash_job(&"1".repeat(64))]).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while db.rows("jobs").await < 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first batch was never committed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // A held write lock would keep these waiting for their 30 s busy timeout, a held
    // connection for the rest of the list.
    let other_process = db.open_again().await;
    for (store, indicator) in [(&other_process, "2"), (&db.store, "3")] {
        let written = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            store.enqueue(&[hash_job(&indicator.repeat(64))], T0, DAY, 5),
        )
        .await
        .expect("an enqueue waited for the unfinished list");
        assert_eq!(written.unwrap()[0].1, Enqueued::New);
    }
    tx.send(vec![hash_job(&"4".repeat(64))]).await.unwrap();
    drop(tx);
    assert_eq!(queueing.await.unwrap().unwrap().len(), 2);
    assert_eq!(db.rows("jobs").await, 4);
}

/// A stop (shutdown while a list is read) ends the queueing of its batches: what was queued
/// stays, and fewer outcomes than jobs sent say the list was not queued whole.
async fn a_stop_ends_the_queueing_of_batches_keeping_what_was_queued(db: Backend) {
    let s = db.store.clone();
    let stop = CancellationToken::new();
    let stopping = stop.clone();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let queueing = tokio::spawn(async move { s.enqueue_batches(rx, T0, DAY, 5, &stopping).await });
    tx.send(vec![hash_job(&"1".repeat(64))]).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while db.rows("jobs").await < 1 {
        assert!(tokio::time::Instant::now() < deadline, "never committed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The list is not over (the sender is kept): the stop alone ends the wait for more.
    stop.cancel();
    let out = tokio::time::timeout(std::time::Duration::from_secs(10), queueing)
        .await
        .expect("stopped at once")
        .unwrap()
        .unwrap();
    assert_eq!(out.len(), 1);
    let late = tx.send(vec![hash_job(&"2".repeat(64))]).await;
    assert!(late.is_err(), "nothing is taken after the stop");
    assert_eq!(db.rows("jobs").await, 1);
}

/// The files last seen under a directory, with what they looked like: the latest sighting of
/// each path, only those the watcher saw (with a time and inode), only under that directory.
async fn files_seen_under_a_directory_are_its_latest_sightings(db: Backend) {
    let s = db.store.clone();
    let file = |content: char, path: &str, unchanged_if| NewJob {
        kind: Kind::File,
        path: Some(FileSeen {
            unchanged_if,
            ..FileSeen::at(path, 10)
        }),
        ..hash_job(&content.to_string().repeat(64))
    };
    let first = [
        file('a', "/drop/a.exe", Some((1, 7))),
        file('b', "/drop/b.exe", Some((2, 8))),
        file('c', "/drop2/c.exe", Some((3, 9))),
        file('d', "/drop/d.exe", None),
    ];
    s.enqueue(&first, T0, DAY, 5).await.unwrap();
    // b.exe was replaced by other content later.
    s.enqueue(&[file('e', "/drop/b.exe", Some((4, 10)))], T0 + 1, DAY, 5)
        .await
        .unwrap();
    let mut seen = s.files_seen_under("/drop/", false).await.unwrap();
    seen.sort_by(|x, y| x.path.cmp(&y.path));
    let expected = [
        FileSeen {
            unchanged_if: Some((1, 7)),
            ..FileSeen::at("/drop/a.exe", 10)
        },
        FileSeen {
            unchanged_if: Some((4, 10)),
            ..FileSeen::at("/drop/b.exe", 10)
        },
    ];
    assert_eq!(seen, expected);
}

/// Claims the three queued jobs and finishes them by their indicator's first letter: `a` clean,
/// `b` failed, any other unknown.
async fn clean_failed_and_unknown(s: &dyn Store) {
    for job in s.claim("w", 3, T0, 1000).await.unwrap() {
        let done = match job.indicator.as_bytes()[0] {
            b'a' => s.complete(&job, &clean(T0), T0).await,
            b'b' => {
                s.discard(&job, &VerdictRecord::bare(Verdict::Failed, T0), T0)
                    .await
            }
            _ => {
                let unknown = VerdictRecord::bare(Verdict::Unknown, T0);
                s.complete(&job, &unknown, T0).await
            }
        };
        assert!(done.unwrap());
    }
}

/// A file whose job a restart would change (a failed verdict, an unknown one that an upload now
/// allowed may improve) is left out: a restarted daemon reads it again. A verdict's age does not
/// count: a running daemon does not look again at what it triaged either.
async fn files_whose_jobs_a_restart_would_change_are_left_out(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let file = |content: char, name: &str| NewJob {
        kind: Kind::File,
        path: Some(FileSeen {
            unchanged_if: Some((1, 1)),
            ..FileSeen::at(format!("/drop/{name}"), 10)
        }),
        ..hash_job(&content.to_string().repeat(64))
    };
    let files = [
        file('a', "clean.exe"),
        file('b', "failed.exe"),
        file('c', "unknown.exe"),
    ];
    s.enqueue(&files, T0, DAY, 5).await.unwrap();
    clean_failed_and_unknown(&*s).await;
    let names = |seen: Vec<FileSeen>| {
        let mut names: Vec<String> = seen.into_iter().map(|f| f.path).collect();
        names.sort();
        names
    };
    let without_uploads = s.files_seen_under("/drop/", false).await.unwrap();
    assert_eq!(
        names(without_uploads),
        ["/drop/clean.exe", "/drop/unknown.exe"]
    );
    let with_uploads = s.files_seen_under("/drop/", true).await.unwrap();
    assert_eq!(names(with_uploads), ["/drop/clean.exe"]);
}

/// The lists recorded as read under a directory, as recorded last, but for a list with a job
/// that reading it again would change: a failed one (another try), an unknown URL when URLs may
/// now be submitted.
async fn lists_read_are_those_without_a_job_to_change(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let seen = |path: &str, unchanged_if| FileSeen {
        unchanged_if,
        ..FileSeen::at(path, 100)
    };
    let from = |list: &str, job: NewJob| NewJob {
        source: Some((list.into(), 1)),
        ..job
    };
    let url = NewJob {
        kind: Kind::Url,
        ..hash_job("http://unknown.example/")
    };
    s.enqueue(
        &[
            from("/lists/good.txt", hash_job(&"a".repeat(64))),
            from("/lists/bad.txt", hash_job(&"b".repeat(64))),
            from("/lists/urls.txt", url),
        ],
        T0,
        DAY,
        5,
    )
    .await
    .unwrap();
    let lists = ["/lists/good.txt", "/lists/bad.txt", "/lists/urls.txt"];
    for list in lists.iter().chain(&["/lists2/other.txt"]) {
        s.list_read(&seen(list, Some((1, 2))), T0).await.unwrap();
    }
    // Read again after a change; one seen without a time is not recorded.
    s.list_read(&seen("/lists/good.txt", Some((3, 4))), T0 + 1)
        .await
        .unwrap();
    s.list_read(&seen("/lists/untimed.txt", None), T0)
        .await
        .unwrap();
    let read = |submit_urls| {
        let s = s.clone();
        async move {
            let mut read = s.lists_read_under("/lists/", submit_urls).await.unwrap();
            read.sort_by(|x, y| x.path.cmp(&y.path));
            read.into_iter().map(|f| f.path).collect::<Vec<_>>()
        }
    };
    let mut all = lists.map(String::from).to_vec();
    all.sort();
    assert_eq!(read(true).await, all);
    assert_eq!(
        s.lists_read_under("/lists/", false)
            .await
            .unwrap()
            .iter()
            .find(|f| f.path == "/lists/good.txt"),
        Some(&seen("/lists/good.txt", Some((3, 4))))
    );
    clean_failed_and_unknown(&*s).await;
    assert_eq!(read(false).await, ["/lists/good.txt", "/lists/urls.txt"]);
    assert_eq!(read(true).await, ["/lists/good.txt"]);
}

/// The poll delays a process learned are kept for the next one: the last saved wins.
async fn poll_estimates_are_kept_for_the_next_process(db: Backend) {
    let s = db.store.clone();
    assert_eq!(s.poll_estimates().await.unwrap(), None);
    s.save_poll_estimates((45_000.5, 90_000.0), T0)
        .await
        .unwrap();
    s.save_poll_estimates((61_000.25, 95_000.0), T0 + 1)
        .await
        .unwrap();
    let next = db.open_again().await;
    assert_eq!(
        next.poll_estimates().await.unwrap(),
        Some((61_000.25, 95_000.0))
    );
}

/// `status` reads counts that SQLite keeps with triggers rather than counting every job: after
/// each kind of transition they say what a full count would.
async fn status_counts_follow_every_transition(db: Backend) {
    use std::collections::BTreeMap;
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let hashes: Vec<String> = ["1", "2", "3", "4"].iter().map(|c| c.repeat(64)).collect();
    let mut jobs: Vec<NewJob> = hashes.iter().map(|h| hash_job(h)).collect();
    jobs.push(NewJob {
        kind: Kind::Url,
        ..hash_job("http://example.com/")
    });
    s.enqueue(&jobs, T0, DAY, 1).await.unwrap();
    let claimed = s.claim("w", 3, T0, 60_000).await.unwrap();
    let running = s.counts().await.unwrap();
    assert_eq!(running.by_state["running"]["hash"], 3);
    assert_eq!(running.remaining_by_step["lookup"], 5);

    assert!(s.complete(&claimed[0], &clean(T0), T0).await.unwrap());
    assert_eq!(
        s.retry(&claimed[1], T0, "503", T0).await.unwrap(),
        Retried::Discarded
    );
    let to_poll = Snooze {
        until: T0 + 1000,
        step: Step::Poll,
        analysis_id: Some("an-analysis".into()),
        polls: 0,
    };
    assert!(s.snooze(&claimed[2], &to_poll, T0).await.unwrap());

    let counts = s.counts().await.unwrap();
    let kinds = |pairs: &[(&str, u64)]| -> BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| (k.to_string(), *n)).collect()
    };
    let expected: BTreeMap<String, BTreeMap<String, u64>> = [
        ("available", kinds(&[("hash", 2), ("url", 1)])),
        ("completed", kinds(&[("hash", 1)])),
        ("discarded", kinds(&[("hash", 1)])),
    ]
    .into_iter()
    .map(|(state, k)| (state.to_string(), k))
    .collect();
    assert_eq!(counts.by_state, expected);
    assert_eq!(counts.by_verdict, kinds(&[("clean", 1), ("failed", 1)]));
    assert_eq!(
        counts.remaining_by_step,
        kinds(&[("lookup", 2), ("poll", 1)])
    );
    assert_eq!(
        counts.oldest_pending.map(|(indicator, _)| indicator),
        Some(claimed[2].indicator.clone())
    );
    assert_eq!(counts.last_errors.len(), 1, "{:?}", counts.last_errors);

    // The failed job is queued again: it leaves `discarded`, its old verdict stays until replaced.
    let again = s
        .enqueue(&[hash_job(&hashes[1])], T0, DAY, 1)
        .await
        .unwrap();
    assert_eq!(again[0].1, Enqueued::Reopened);
    let counts = s.counts().await.unwrap();
    assert_eq!(
        counts.by_state["available"],
        kinds(&[("hash", 3), ("url", 1)])
    );
    assert!(!counts.by_state.contains_key("discarded"), "{counts:?}");
    assert_eq!(counts.by_verdict, kinds(&[("clean", 1), ("failed", 1)]));
    // The same once a heartbeat has folded PostgreSQL's log of changes into its counts.
    register(&*s, "w", T0 + 1).await;
    let folded = s.counts().await.unwrap();
    assert_eq!(
        (folded.by_state, folded.by_verdict, folded.remaining_by_step),
        (counts.by_state, counts.by_verdict, counts.remaining_by_step)
    );
    if let backends::Concrete::Postgres(pg) = &db.kind {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM job_count_changes")
            .fetch_one(pg.pool())
            .await
            .unwrap();
        assert_eq!(left, 0, "folded");
    }
}

on_both_backends!(
    a_workers_limits_are_kept_with_it,
    duplicate_indicators_become_one_job_with_every_source,
    each_job_of_a_batch_gets_its_own_id_and_provenance,
    claim_takes_due_jobs_once_and_polls_first,
    awaited_jobs_are_claimed_first,
    snooze_gives_the_attempt_back_and_retry_keeps_it,
    completion_is_fenced_by_the_lease,
    unfinished_names_the_queued_and_running_jobs_among_those_asked,
    jobs_of_a_worker_that_died_are_rescued_at_once,
    a_job_abandoned_too_often_is_discarded_as_failed,
    a_job_abandoned_while_it_waits_for_quota_is_not_charged,
    fresh_verdicts_are_reused_and_stale_ones_reopened,
    an_unknown_file_is_reopened_when_uploads_become_allowed,
    the_latest_enqueue_decides_whether_a_file_may_be_uploaded,
    a_process_that_may_not_submit_looks_up_jobs_that_may_be_and_leaves_the_submission,
    a_failed_recheck_keeps_the_earlier_verdict,
    pending_analyses_are_polled_again_ever_less_often,
    submission_intent_survives_a_restart,
    the_quota_ledger_never_grants_more_than_the_window_allows,
    a_pause_holds_every_request_of_the_key,
    concurrent_claims_never_hand_out_a_job_twice,
    workers_of_one_process_share_their_claims,
    concurrent_enqueues_of_the_same_indicators_make_one_job_each,
    batches_from_a_channel_are_queued_in_order,
    a_list_that_arrives_slowly_holds_no_lock_while_it_waits,
    a_stop_ends_the_queueing_of_batches_keeping_what_was_queued,
    files_seen_under_a_directory_are_its_latest_sightings,
    files_whose_jobs_a_restart_would_change_are_left_out,
    lists_read_are_those_without_a_job_to_change,
    status_counts_follow_every_transition,
    poll_estimates_are_kept_for_the_next_process,
);

/// PostgreSQL: an enqueue that waits for a completion holding the job's lock sees the verdict
/// written with it (fresh: no request), not a finished job without one (reopened: a lookup
/// paid twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enqueue_racing_a_completion_sees_its_verdict() {
    let Some(db) = Backend::postgres().await else {
        return;
    };
    let backends::Concrete::Postgres(pg) = &db.kind else {
        unreachable!("a PostgreSQL backend")
    };
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let job = hash_job(&"d".repeat(64));
    s.enqueue(std::slice::from_ref(&job), T0, DAY, 5)
        .await
        .unwrap();
    let claimed = s.claim("w", 1, T0, 60_000).await.unwrap().pop().unwrap();
    // A completion as `finish` writes it, its transaction held open while the enqueue comes.
    let mut completing = pg.pool().begin().await.unwrap();
    sqlx::query("UPDATE jobs SET state = 'completed', finished_at = $2 WHERE id = $1")
        .bind(claimed.id)
        .bind(T0)
        .execute(&mut *completing)
        .await
        .unwrap();
    sqlx::query("INSERT INTO verdicts (job_id, verdict, checked_at) VALUES ($1, 'clean', $2)")
        .bind(claimed.id)
        .bind(T0)
        .execute(&mut *completing)
        .await
        .unwrap();
    let racing = tokio::spawn({
        let s = s.clone();
        async move { s.enqueue(&[job], T0 + 1000, DAY, 5).await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !racing.is_finished(),
        "the enqueue waits for the job's lock"
    );
    completing.commit().await.unwrap();
    assert_eq!(racing.await.unwrap()[0], (claimed.id, Enqueued::Fresh));
}

/// The reporting views read the same on both backends: the columns `sqlite3` users see are the
/// ones `psql` users see, with the same text formats.
async fn the_report_view_reads_the_same_on_both_backends(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let mut job = hash_job(&"a".repeat(64));
    job.source = Some(("list.txt".into(), 7));
    s.enqueue(&[job], T0, DAY, 5).await.unwrap();
    let claimed = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    s.complete(&claimed, &clean(T0 + 1234), T0 + 1234)
        .await
        .unwrap();
    const SQL: &str = "SELECT kind, verdict, sha256, sources, vt_link, first_seen, checked_at
                       FROM v_report";
    type Row = (String, String, String, String, String, String, String);
    let row: Row = match &db.kind {
        backends::Concrete::Sqlite(st) => sqlx::query_as(SQL).fetch_one(st.read_pool()).await,
        backends::Concrete::Postgres(st) => sqlx::query_as(SQL).fetch_one(st.pool()).await,
    }
    .unwrap();
    assert_eq!(row.0, "hash");
    assert_eq!(row.1, "clean");
    assert_eq!(row.2, "a".repeat(64));
    assert_eq!(row.3, "list.txt:7");
    assert_eq!(
        row.4,
        format!("https://www.virustotal.com/gui/file/{}", "a".repeat(64))
    );
    // T0 is 2026-09-21T14:13:20Z.
    assert_eq!(row.5, "2026-09-21T14:13:20.000Z");
    assert_eq!(row.6, "2026-09-21T14:13:21.234Z");
}

on_both_backends!(the_report_view_reads_the_same_on_both_backends);

/// `status` paces an unlimited key's backlog by the verdicts written since a moment.
async fn finished_since_counts_the_verdicts_written_from_then_on(db: Backend) {
    let s = db.store.clone();
    register(&*s, "w", T0).await;
    let jobs: Vec<_> = (0..3).map(|i| hash_job(&format!("{i:064x}"))).collect();
    s.enqueue(&jobs, T0, DAY, 5).await.unwrap();
    for (i, job) in s.claim("w", 3, T0, 1000).await.unwrap().iter().enumerate() {
        let at = T0 + 1000 * i as i64;
        s.complete(job, &clean(at), at).await.unwrap();
    }
    assert_eq!(s.finished_since(T0).await.unwrap(), 3);
    assert_eq!(s.finished_since(T0 + 1000).await.unwrap(), 2);
    assert_eq!(s.finished_since(T0 + 2001).await.unwrap(), 0);
}

on_both_backends!(finished_since_counts_the_verdicts_written_from_then_on);

/// Processes started together (two daemons, a daemon and a `status`) open a new database at
/// the same moment: switching it to WAL cannot wait on `busy_timeout`, and only one can create
/// the schema. Every opener must still get a working store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opening_a_new_database_at_once_all_succeed() {
    use vtriage::store::sqlite::SqliteStore;
    for round in 0..10 {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("vtriage.db");
        let opens: Vec<_> = (0..8)
            .map(|_| {
                let db = db.clone();
                tokio::spawn(async move { SqliteStore::open(&db).await })
            })
            .collect();
        for open in opens {
            let store = open
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"));
            assert!(store.counts().await.unwrap().by_state.is_empty());
            store.close().await;
        }
    }
}

/// PostgreSQL over TLS: `sslmode=require` in the URL encrypts the connection, and
/// `verify-full` checks the server's certificate too (the test server's comes from a CA of
/// `scripts/postgres`, `VTRIAGE_TEST_PG_CA`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_connections_can_be_encrypted_and_the_server_verified() {
    use vtriage::store::postgres::PgStore;
    let Some(db) = backends::PgDatabase::create().await else {
        return;
    };
    let Ok(ca) = std::env::var("VTRIAGE_TEST_PG_CA") else {
        eprintln!("skipped: VTRIAGE_TEST_PG_CA not set (scripts/postgres sets it)");
        return;
    };
    let separator = if db.url.contains('?') { '&' } else { '?' };
    for tls in [
        "sslmode=require".to_string(),
        format!("sslmode=verify-full&sslrootcert={ca}"),
    ] {
        let store = PgStore::open(&format!("{}{separator}{tls}", db.url))
            .await
            .unwrap_or_else(|e| panic!("{tls}: {e}"));
        let encrypted: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(store.pool())
                .await
                .unwrap();
        assert!(encrypted, "{tls}");
    }
    // Against another CA, the server's certificate is refused (openssl, as scripts/postgres).
    let dir = tempfile::tempdir().unwrap();
    let other_ca = dir.path().join("other-ca.pem");
    let made = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=another-ca", "-keyout"])
        .arg(dir.path().join("other-ca.key"))
        .arg("-out")
        .arg(&other_ca)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let url = format!(
        "{}{separator}sslmode=verify-full&sslrootcert={}",
        db.url,
        other_ca.display()
    );
    let Err(refused) = PgStore::open(&url).await else {
        panic!("verified against another CA");
    };
    assert!(refused.to_string().contains("certificate"), "{refused}");
}

/// With one PostgreSQL database for several hosts, a file job goes to a daemon on a host that saw
/// the file, since only there can it be read for an upload; an indicator goes to any daemon. When
/// no daemon runs on a host that saw it, any daemon may look it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_job_is_claimed_on_a_host_that_saw_the_file() {
    use vtriage::store::postgres::PgStore;
    let Some(db) = backends::PgDatabase::create().await else {
        return;
    };
    let on = |host: &'static str| {
        let url = db.url.clone();
        async move { PgStore::open(&url).await.unwrap().on_host(host) }
    };
    let (a, b) = (on("a").await, on("b").await);
    let file = |content: char, path: &str| NewJob {
        kind: Kind::File,
        path: Some(FileSeen {
            unchanged_if: Some((1, 1)),
            ..FileSeen::at(path, 10)
        }),
        ..hash_job(&content.to_string().repeat(64))
    };
    a.enqueue(&[file('a', "/drop/only-on-a.exe")], T0, DAY, 5)
        .await
        .unwrap();
    b.enqueue(&[hash_job(&"b".repeat(64))], T0, DAY, 5)
        .await
        .unwrap();
    a.enqueue(&[file('c', "/drop/on-both.exe")], T0, DAY, 5)
        .await
        .unwrap();
    b.enqueue(&[file('c', "/drop/on-both.exe")], T0, DAY, 5)
        .await
        .unwrap();
    for (s, owner, host) in [(&a, "w-a", "a"), (&b, "w-b", "b")] {
        s.heartbeat(owner, host, 1, T0, 60_000, &[]).await.unwrap();
    }
    let claimed = |jobs: Vec<vtriage::store::Job>| -> Vec<char> {
        jobs.iter()
            .map(|j| j.indicator.chars().next().unwrap())
            .collect()
    };
    // b takes what it can (the hash, the file it saw too) and leaves a's own file.
    assert_eq!(
        claimed(b.claim("w-b", 10, T0, 1000).await.unwrap()),
        ['b', 'c']
    );
    assert_eq!(claimed(a.claim("w-a", 10, T0, 1000).await.unwrap()), ['a']);
    // Once a's daemon is gone, b may look a's next file up.
    a.enqueue(&[file('d', "/drop/also-only-on-a.exe")], T0, DAY, 5)
        .await
        .unwrap();
    assert!(b.claim("w-b", 10, T0, 1000).await.unwrap().is_empty());
    a.unregister("w-a").await.unwrap();
    assert_eq!(claimed(b.claim("w-b", 10, T0, 1000).await.unwrap()), ['d']);
    // Each host's copies, for the upload; and its own sightings, for a restart.
    let paths = |s: &PgStore, id| {
        let s = s.clone();
        async move { s.file_paths(id).await.unwrap() }
    };
    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM jobs WHERE kind = 'file' ORDER BY id")
        .fetch_all(a.pool())
        .await
        .unwrap();
    assert_eq!(paths(&a, ids[0]).await, ["/drop/only-on-a.exe"]);
    assert!(paths(&b, ids[0]).await.is_empty());
    // b cannot upload a's file: it waits for a (`seen_on_other_hosts`), rather than failing.
    assert!(b.seen_on_other_hosts(ids[0]).await.unwrap());
    assert!(!a.seen_on_other_hosts(ids[0]).await.unwrap());
    assert_eq!(paths(&b, ids[1]).await, ["/drop/on-both.exe"]);
    let results = b.results(&ids[..2]).await.unwrap();
    assert!(results[0].paths.is_empty());
    assert_eq!(results[1].paths, ["/drop/on-both.exe"]);
    let seen = b.files_seen_under("/drop/", false).await.unwrap();
    assert_eq!(
        seen.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
        ["/drop/on-both.exe"]
    );
}
