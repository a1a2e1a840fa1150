//! The quota ledger, driven by a virtual clock: whatever the arrival pattern, no window of `W`
//! milliseconds ever holds more than `N` granted requests, and a waiting caller is told the
//! earliest moment it may go (so the limiter is exact, not merely safe). Every test runs against
//! both backends; the last ones race several processes on one key.

mod backends;

use std::sync::Arc;

use tokio::sync::Barrier;

use backends::Backend;
use proptest::prop_assert;
use proptest::prop_assert_eq;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use vtriage::store::{Clock, QuotaDecision, QuotaLimits, Store};

const T0: i64 = 1_790_000_000_000;

/// `requests` per `window_ms`, `daily` per day, `monthly` per month.
fn limits(requests: u32, window_ms: i64, daily: u32, monthly: Option<u32>) -> QuotaLimits {
    QuotaLimits {
        requests,
        window_ms,
        daily,
        monthly,
    }
}

/// A clock stopped at `t`, for the quota ledger.
fn at(t: i64) -> Clock {
    Arc::new(move || t)
}

/// One random arrival pattern: each caller arrives after a gap and waits, as the gate does,
/// until the ledger admits it; then the grants are checked against the window.
async fn check_arrivals(
    store: &dyn Store,
    key: &str,
    requests: u32,
    window_ms: i64,
    gaps: Vec<i64>,
) -> Result<(), TestCaseError> {
    let limits = QuotaLimits {
        requests,
        window_ms,
        daily: 1_000_000,
        monthly: None,
    };
    let mut now = T0;
    let mut arrivals = Vec::new();
    let mut granted = Vec::new();
    for gap in gaps {
        now += gap;
        let arrival = now;
        loop {
            match store.take_quota(key, &limits, at(now)).await.unwrap() {
                QuotaDecision::Granted(t) => {
                    prop_assert_eq!(t, now, "recorded at the clock's time");
                    arrivals.push(arrival);
                    granted.push(now);
                    break;
                }
                QuotaDecision::WaitUntil(t) => {
                    prop_assert!(t > now);
                    now = t;
                }
                QuotaDecision::Exhausted(_) => unreachable!("no daily cap here"),
            }
        }
    }
    let n = requests as usize;
    for (i, &start) in granted.iter().enumerate() {
        let in_window = granted[i..]
            .iter()
            .take_while(|&&t| t < start + window_ms)
            .count();
        prop_assert!(
            in_window <= n,
            "{in_window} requests in a window starting at {start}"
        );
    }
    // Exact: every request went at the earliest moment the window allowed, not later.
    for i in 0..granted.len() {
        let earliest = if i < n {
            arrivals[i]
        } else {
            arrivals[i].max(granted[i - n] + window_ms)
        };
        prop_assert_eq!(
            granted[i],
            earliest,
            "request {} waited longer than necessary",
            i
        );
    }
    Ok(())
}

/// Runs 48 random arrival patterns against one store, each under a key of its own (keys do
/// not share anything, so each case starts from an empty ledger).
fn no_window_ever_holds_more_than_the_limit(postgres: bool) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let backend = rt.block_on(async {
        if postgres {
            Backend::postgres().await
        } else {
            Some(Backend::sqlite().await)
        }
    });
    let Some(b) = backend else { return };
    let store = b.store.clone();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });
    let case = std::cell::Cell::new(0u32);
    let strategy = (
        1u32..6,
        50i64..2000,
        proptest::collection::vec(0i64..400, 1..80),
    );
    runner
        .run(&strategy, |(requests, window_ms, gaps)| {
            case.set(case.get() + 1);
            let key = format!("k{}", case.get());
            rt.block_on(check_arrivals(&*store, &key, requests, window_ms, gaps))
        })
        .unwrap();
    rt.block_on(b.close());
}

#[test]
fn no_window_ever_holds_more_than_the_limit_sqlite() {
    no_window_ever_holds_more_than_the_limit(false);
}

#[test]
fn no_window_ever_holds_more_than_the_limit_postgres() {
    no_window_ever_holds_more_than_the_limit(true);
}

async fn the_days_count_survives_a_restart(b: Backend) {
    let limits = limits(100, 1000, 3, None);
    for i in 0..3 {
        assert_eq!(
            b.store.take_quota("k", &limits, at(T0 + i)).await.unwrap(),
            QuotaDecision::Granted(T0 + i)
        );
    }
    b.close().await;
    let store = b.open_again().await;
    assert!(matches!(
        store.take_quota("k", &limits, at(T0 + 10)).await.unwrap(),
        QuotaDecision::Exhausted(_)
    ));
    assert_eq!(
        store.quota_usage("k", 1000, T0 + 10).await.unwrap().today,
        3
    );
}

async fn a_monthly_cap_is_honoured_across_days(b: Backend) {
    let store = b.store.clone();
    let limits = limits(100, 1000, 100, Some(2));
    let day = 86_400_000;
    assert_eq!(
        store.take_quota("k", &limits, at(T0)).await.unwrap(),
        QuotaDecision::Granted(T0)
    );
    assert_eq!(
        store.take_quota("k", &limits, at(T0 + day)).await.unwrap(),
        QuotaDecision::Granted(T0 + day)
    );
    assert!(matches!(
        store
            .take_quota("k", &limits, at(T0 + 2 * day))
            .await
            .unwrap(),
        QuotaDecision::Exhausted(_)
    ));
}

/// Four processes (each its own connection pool) ask for one key's quota as fast as they can,
/// on a clock they share: together they are granted exactly the window's worth at any moment
/// and exactly the day's worth in all.
async fn processes_sharing_a_key_never_exceed_its_window_or_day(b: Backend) {
    let limits = limits(5, 100, 60, None);
    let mut tasks = Vec::new();
    // A virtual clock stepping 10 ms per round, shared as real clocks are: every process asks
    // at every step, all at the same moment.
    let round_done = Arc::new(Barrier::new(4));
    for _ in 0..4 {
        let store: Arc<dyn Store> = b.open_again().await;
        let round_done = round_done.clone();
        tasks.push(tokio::spawn(async move {
            let mut granted = Vec::new();
            for round in 0..200i64 {
                let now = T0 + round * 10;
                match store.take_quota("shared", &limits, at(now)).await.unwrap() {
                    QuotaDecision::Granted(t) => granted.push(t),
                    QuotaDecision::WaitUntil(t) => assert!(t > now),
                    QuotaDecision::Exhausted(_) => {}
                }
                round_done.wait().await;
            }
            granted
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort();
    assert_eq!(all.len(), 60, "the day's budget is spent, and not exceeded");
    for (i, &start) in all.iter().enumerate() {
        let in_window = all[i..].iter().take_while(|&&t| t < start + 100).count();
        assert!(
            in_window <= 5,
            "{in_window} grants in the window at {start}"
        );
    }
    let usage = b
        .store
        .quota_usage("shared", 100, T0 + 10_000)
        .await
        .unwrap();
    assert_eq!(usage.today, 60);
}

/// A 429 seen by one process pauses the key for all of them.
async fn a_pause_by_one_process_holds_the_others(b: Backend) {
    let limits = limits(100, 1000, 1000, None);
    let other = b.open_again().await;
    b.store.pause_quota("k", T0 + 60_000).await.unwrap();
    // A shorter pause reported later does not shorten it.
    other.pause_quota("k", T0 + 1_000).await.unwrap();
    assert_eq!(
        other
            .take_quota("k", &limits, at(T0 + 2_000))
            .await
            .unwrap(),
        QuotaDecision::WaitUntil(T0 + 60_000)
    );
    assert_eq!(
        other
            .quota_usage("k", 1000, T0 + 2_000)
            .await
            .unwrap()
            .paused_until,
        Some(T0 + 60_000)
    );
}

/// A window that spans midnight holds the requests of both days: two granted before midnight
/// still count after it.
async fn a_window_across_midnight_counts_the_day_before(b: Backend) {
    let store = b.store.clone();
    let limits = limits(3, 3_600_000, 100, None);
    let day = 86_400_000;
    let midnight = (T0 / day + 1) * day;
    for t in [midnight - 600_000, midnight - 300_000, midnight + 60_000] {
        assert_eq!(
            store.take_quota("k", &limits, at(t)).await.unwrap(),
            QuotaDecision::Granted(t)
        );
    }
    assert_eq!(
        store
            .take_quota("k", &limits, at(midnight + 120_000))
            .await
            .unwrap(),
        QuotaDecision::WaitUntil(midnight - 600_000 + 3_600_000)
    );
}

/// A request answered after its grant is counted from its answer, as VirusTotal may have
/// counted it any time until then; one whose grant already left the ledger is recorded again.
async fn a_slow_request_is_counted_from_its_answer(b: Backend) {
    let store = b.store.clone();
    let limits = limits(1, 1000, 100, None);
    assert_eq!(
        store.take_quota("k", &limits, at(T0)).await.unwrap(),
        QuotaDecision::Granted(T0)
    );
    store.move_quota_grant("k", T0, T0 + 700).await.unwrap();
    assert_eq!(
        store.take_quota("k", &limits, at(T0 + 1000)).await.unwrap(),
        QuotaDecision::WaitUntil(T0 + 1700)
    );
    assert_eq!(
        store.take_quota("k", &limits, at(T0 + 1700)).await.unwrap(),
        QuotaDecision::Granted(T0 + 1700)
    );
    // That grant cleared the window's older rows; the next answer of the first request finds
    // no row to move and records one.
    store.move_quota_grant("k", T0, T0 + 2000).await.unwrap();
    store
        .move_quota_grant("k", T0 + 1700, T0 + 1800)
        .await
        .unwrap();
    assert_eq!(
        store.take_quota("k", &limits, at(T0 + 2900)).await.unwrap(),
        QuotaDecision::WaitUntil(T0 + 3000)
    );
}

/// A request that never left (no connection) is taken back: out of the window, the day and the
/// month, so that an outage does not spend the budget. Only one of two grants at the same time
/// is.
async fn a_request_never_sent_is_not_counted(b: Backend) {
    let store = b.store.clone();
    let limits = limits(2, 1000, 2, None);
    for _ in 0..2 {
        assert_eq!(
            store.take_quota("k", &limits, at(T0)).await.unwrap(),
            QuotaDecision::Granted(T0)
        );
    }
    assert!(matches!(
        store.take_quota("k", &limits, at(T0 + 1)).await.unwrap(),
        QuotaDecision::Exhausted(_)
    ));
    store.return_quota_grant("k", T0).await.unwrap();
    let usage = store.quota_usage("k", 1000, T0 + 1).await.unwrap();
    assert_eq!((usage.in_window, usage.today, usage.this_month), (1, 1, 1));
    assert_eq!(
        store.take_quota("k", &limits, at(T0 + 1)).await.unwrap(),
        QuotaDecision::Granted(T0 + 1)
    );
}

on_both_backends!(
    a_request_never_sent_is_not_counted,
    a_slow_request_is_counted_from_its_answer,
    the_days_count_survives_a_restart,
    a_window_across_midnight_counts_the_day_before,
    a_monthly_cap_is_honoured_across_days,
    processes_sharing_a_key_never_exceed_its_window_or_day,
    a_pause_by_one_process_holds_the_others,
    an_unlimited_key_is_counted_not_limited,
    an_unlimited_key_takes_up_a_pause_from_another_process,
);

/// The gate of a key without limits (`quota.unlimited`), with a window of 300 ms for pauses.
fn unlimited_gate(
    store: Arc<dyn Store>,
    shutdown: &tokio_util::sync::CancellationToken,
) -> vtriage::quota::Unlimited {
    let quota = vtriage::config::QuotaConfig {
        window_secs: 0.3,
        unlimited: true,
        ..Default::default()
    };
    vtriage::quota::Unlimited::start(store, "k".into(), &quota, shutdown.clone())
}

/// Far more requests than the configured limits (4 per window, 500 a day) are admitted, and
/// every one of them sent reaches the day's and month's counts, with none left in the window's
/// log.
async fn an_unlimited_key_is_counted_not_limited(b: Backend) {
    use vtriage::quota::Gate;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gate = unlimited_gate(b.store.clone(), &shutdown);
    for _ in 0..1000 {
        let grant = gate.acquire().await.expect("admitted");
        gate.answered(grant).await;
    }
    // Requests that never left are not counted.
    for _ in 0..10 {
        let grant = gate.acquire().await.expect("admitted");
        gate.unsent(grant).await;
    }
    shutdown.cancel();
    gate.save_counts().await;
    let usage = b
        .store
        .quota_usage("k", 300, vtriage::store::now_millis())
        .await
        .unwrap();
    assert_eq!((usage.today, usage.this_month), (1000, 1000));
    assert_eq!(
        usage.in_window, 0,
        "no request went through the window's ledger"
    );
    assert_eq!(b.rows("quota_log").await, 0);
}

/// A 429 seen by another process pauses an unlimited key here from its next count on; one seen
/// here pauses it at once and is recorded for the others. Shutting down ends the wait.
async fn an_unlimited_key_takes_up_a_pause_from_another_process(b: Backend) {
    use std::time::{Duration, Instant};
    use vtriage::quota::{Denied, Gate};
    use vtriage::store::now_millis;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let gate = unlimited_gate(b.store.clone(), &shutdown);
    let other = b.open_again().await;
    other.pause_quota("k", now_millis() + 400).await.unwrap();
    // What the counting task does every second.
    gate.save_counts().await;
    let asked = Instant::now();
    let grant = gate.acquire().await.expect("admitted after the pause");
    assert!(
        asked.elapsed() >= Duration::from_millis(300),
        "admitted {:?} into another process's 400 ms pause",
        asked.elapsed()
    );
    gate.answered(grant).await;

    gate.pause();
    let paused = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let usage = other.quota_usage("k", 300, now_millis()).await.unwrap();
            if let Some(until) = usage.paused_until {
                return until;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the pause reaches the other process");
    assert!(paused > now_millis() + 100, "paused for a window of 300 ms");
    let waiting = tokio::spawn(async move { gate.acquire().await.map(|_| ()) });
    shutdown.cancel();
    assert_eq!(waiting.await.unwrap(), Err(Denied::ShuttingDown));
}

/// SQLite has one writer: a grant that waited for it (here another process's transaction holds
/// the database for 300 ms) is recorded at the moment it was made, not when it was asked for,
/// so the requests after it are not counted from too early a start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_that_waited_for_the_ledger_is_recorded_when_made() {
    use sqlx::Connection;
    use vtriage::store::sqlite::SqliteStore;

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("q.db");
    let store = Arc::new(SqliteStore::open(&db).await.unwrap());
    let mut other = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .unwrap();
    sqlx::query("BEGIN IMMEDIATE")
        .execute(&mut other)
        .await
        .unwrap();
    let limits = limits(4, 1000, 1000, None);
    let asked = std::time::Instant::now();
    let grant = tokio::spawn({
        let store = store.clone();
        async move {
            let clock = move || T0 + asked.elapsed().as_millis() as i64;
            store
                .take_quota("k", &limits, Arc::new(clock))
                .await
                .unwrap()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let QuotaDecision::Granted(granted_at) = grant.await.unwrap() else {
        panic!("no grant");
    };
    let (at,): (i64,) = sqlx::query_as("SELECT at FROM quota_log WHERE key_id = 'k'")
        .fetch_one(store.read_pool())
        .await
        .unwrap();
    assert_eq!(granted_at, at);
    assert!(at >= T0 + 300, "recorded {} ms after asking", at - T0);
}

/// The limiter's side of the above: a request slower than the limiter's margin holds the next
/// grant until a whole window after its answer. (Without it, the next request would be granted
/// at once, and reach the server within one window of the slow one's arrival.)
#[tokio::test]
async fn the_next_grant_after_a_slow_request_waits_a_window_from_its_answer() {
    use std::time::{Duration, Instant};
    use tokio_util::sync::CancellationToken;
    use vtriage::config::QuotaConfig;
    use vtriage::quota::{Gate, Limiter};

    let b = Backend::sqlite().await;
    let quota = QuotaConfig {
        requests: 1,
        window_secs: 0.2,
        daily: 100,
        monthly: None,
        unlimited: false,
    };
    let limiter = Limiter::new(
        b.store.clone(),
        "k".into(),
        &quota,
        CancellationToken::new(),
    );
    let grant = limiter.acquire().await.unwrap();
    // The request takes 400 ms: longer than the widened window (250 ms).
    tokio::time::sleep(Duration::from_millis(400)).await;
    let answering = Instant::now();
    limiter.answered(grant).await;
    let next = limiter.acquire().await.unwrap();
    let waited = answering.elapsed();
    assert!(
        waited >= Duration::from_millis(200),
        "granted {waited:?} after the slow answer"
    );
    limiter.answered(next).await;
}
