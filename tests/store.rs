//! The job state machine, one transition per test, on a fresh SQLite database each.

use std::sync::Arc;

use vtriage::indicator::Kind;
use vtriage::store::sqlite::SqliteStore;
use vtriage::store::{Enqueued, NewJob, QuotaDecision, QuotaLimits, Retried, Snooze, Step, Store};
use vtriage::verdict::{Stats, Verdict, VerdictRecord};

const DAY: i64 = 86_400_000;
const T0: i64 = 1_790_000_000_000; // a fixed "now" (Nov 2026), so tests do not depend on the clock

async fn store() -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("q.db")).await.unwrap();
    (dir, Arc::new(store))
}

fn hash_job(indicator: &str) -> NewJob {
    NewJob {
        kind: Kind::Hash,
        indicator: indicator.into(),
        allow_submit: false,
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

async fn register(store: &SqliteStore, owner: &str, now: i64) {
    store
        .heartbeat(owner, "host", 1, now, 60_000, &[])
        .await
        .unwrap();
}

#[tokio::test]
async fn duplicate_indicators_become_one_job_with_every_source() {
    let (_d, s) = store().await;
    let mut a = hash_job(&"a".repeat(64));
    a.source = Some(("list1.txt".into(), 3));
    let mut b = a.clone();
    b.source = Some(("list2.txt".into(), 9));
    let out = s.enqueue(&[a, b], T0, DAY, 5).await.unwrap();
    assert_eq!(out[0].1, Enqueued::New);
    assert_eq!(out[1], (out[0].0, Enqueued::Queued));
    let sources: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sources")
        .fetch_one(s.read_pool())
        .await
        .unwrap();
    assert_eq!(sources, 2);
}

#[tokio::test]
async fn claim_takes_due_jobs_once_and_polls_first() {
    let (_d, s) = store().await;
    register(&s, "w1", T0).await;
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

#[tokio::test]
async fn snooze_gives_the_attempt_back_and_retry_keeps_it() {
    let (_d, s) = store().await;
    register(&s, "w", T0).await;
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

#[tokio::test]
async fn completion_is_fenced_by_the_lease() {
    let (_d, s) = store().await;
    register(&s, "w1", T0).await;
    s.enqueue(&[hash_job(&"d".repeat(64))], T0, DAY, 5)
        .await
        .unwrap();
    let job = s.claim("w1", 1, T0, 1000).await.unwrap().pop().unwrap();
    // The lease expires; the rescuer gives the job back and w2 takes it.
    assert_eq!(s.rescue(T0 + 2000).await.unwrap(), 1);
    register(&s, "w2", T0 + 2000).await;
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
    assert!(s.complete(&stolen, &clean(T0), T0 + 2002).await.unwrap());
    let r = s.results(&[job.id]).await.unwrap();
    assert_eq!(r[0].state, "completed");
    assert_eq!(r[0].verdict.as_ref().unwrap().verdict, Verdict::Clean);
}

#[tokio::test]
async fn jobs_of_a_worker_that_died_are_rescued_at_once() {
    let (_d, s) = store().await;
    register(&s, "dead", T0).await;
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

#[tokio::test]
async fn a_job_abandoned_too_often_is_discarded_as_failed() {
    let (_d, s) = store().await;
    s.enqueue(&[hash_job(&"f".repeat(64))], T0, DAY, 1)
        .await
        .unwrap();
    register(&s, "w", T0).await;
    let job = s.claim("w", 1, T0, 10).await.unwrap().pop().unwrap();
    assert_eq!(s.rescue(T0 + 100).await.unwrap(), 1);
    let r = s.results(&[job.id]).await.unwrap();
    assert_eq!(r[0].state, "discarded");
    assert_eq!(r[0].verdict.as_ref().unwrap().verdict, Verdict::Failed);
}

#[tokio::test]
async fn fresh_verdicts_are_reused_and_stale_ones_reopened() {
    let (_d, s) = store().await;
    register(&s, "w", T0).await;
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
        .fresh_verdict_for_hash(&"b".repeat(32), T0 - 1)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.verdict, Verdict::Clean);
    assert_eq!(found.stats.unwrap().undetected, 70);
}

#[tokio::test]
async fn an_unknown_file_is_reopened_when_uploads_become_allowed() {
    let (_d, s) = store().await;
    register(&s, "w", T0).await;
    let file = |allow| NewJob {
        kind: Kind::File,
        indicator: "9".repeat(64),
        allow_submit: allow,
        path: Some(("/drop/x.exe".into(), 10)),
        source: None,
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

#[tokio::test]
async fn a_failed_recheck_keeps_the_earlier_verdict() {
    let (_d, s) = store().await;
    register(&s, "w", T0).await;
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

#[tokio::test]
async fn submission_intent_survives_a_restart() {
    let (dir, s) = store().await;
    register(&s, "w", T0).await;
    let mut job = NewJob {
        kind: Kind::Url,
        indicator: "http://x.test/".into(),
        allow_submit: true,
        path: None,
        source: None,
    };
    job.source = Some(("cli".into(), 0));
    s.enqueue(&[job], T0, DAY, 5).await.unwrap();
    let job = s.claim("w", 1, T0, 1000).await.unwrap().pop().unwrap();
    assert!(s.mark_submitting(&job, T0 + 1).await.unwrap());
    s.close().await;
    // "Crash": reopen the database; the rescuer returns the job with its intent record.
    let s = SqliteStore::open(&dir.path().join("q.db")).await.unwrap();
    s.heartbeat("w2", "host", 2, T0 + 2, 60_000, &["w".to_string()])
        .await
        .unwrap();
    s.rescue(T0 + 2).await.unwrap();
    let job = s.claim("w2", 1, T0 + 2, 1000).await.unwrap().pop().unwrap();
    assert_eq!(job.submitted_at, Some(T0 + 1));
    assert_eq!(job.analysis_id, None);
}

#[tokio::test]
async fn the_quota_ledger_never_grants_more_than_the_window_allows() {
    let (_d, s) = store().await;
    let limits = QuotaLimits {
        requests: 3,
        window_ms: 1000,
        daily: 5,
        monthly: None,
    };
    for i in 0..3 {
        assert_eq!(
            s.take_quota("k", &limits, T0 + i).await.unwrap(),
            QuotaDecision::Granted
        );
    }
    assert_eq!(
        s.take_quota("k", &limits, T0 + 10).await.unwrap(),
        QuotaDecision::WaitUntil(T0 + 1000)
    );
    assert_eq!(
        s.take_quota("k", &limits, T0 + 1000).await.unwrap(),
        QuotaDecision::Granted
    );
    assert_eq!(
        s.take_quota("k", &limits, T0 + 2500).await.unwrap(),
        QuotaDecision::Granted
    );
    // Five today: the daily cap holds until midnight UTC.
    match s.take_quota("k", &limits, T0 + 5000).await.unwrap() {
        QuotaDecision::Exhausted(until) => assert_eq!(until % DAY, 0, "resets at midnight UTC"),
        other => panic!("expected exhaustion, got {other:?}"),
    }
    assert_eq!(s.quota_usage("k", 1000, T0 + 5000).await.unwrap().today, 5);
    // Another key has its own budget.
    assert_eq!(
        s.take_quota("other", &limits, T0 + 5000).await.unwrap(),
        QuotaDecision::Granted
    );
}

#[tokio::test]
async fn a_pause_holds_every_request_of_the_key() {
    let (_d, s) = store().await;
    let limits = QuotaLimits {
        requests: 100,
        window_ms: 1000,
        daily: 1000,
        monthly: None,
    };
    s.pause_quota("k", T0 + 500).await.unwrap();
    assert_eq!(
        s.take_quota("k", &limits, T0).await.unwrap(),
        QuotaDecision::WaitUntil(T0 + 500)
    );
    assert_eq!(
        s.take_quota("k", &limits, T0 + 500).await.unwrap(),
        QuotaDecision::Granted
    );
}
