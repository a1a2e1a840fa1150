//! The quota ledger, driven by a virtual clock: whatever the arrival pattern, no window of `W`
//! milliseconds ever holds more than `N` granted requests, and a waiting caller is told the
//! earliest moment it may go (so the limiter is exact, not merely safe).

use proptest::prelude::*;
use vtriage::store::sqlite::SqliteStore;
use vtriage::store::{QuotaDecision, QuotaLimits, Store};

const T0: i64 = 1_790_000_000_000;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn no_window_ever_holds_more_than_the_limit(
        requests in 1u32..6,
        window_ms in 50i64..2000,
        gaps in proptest::collection::vec(0i64..400, 1..80),
    ) {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let (arrivals, granted): (Vec<i64>, Vec<i64>) = rt.block_on(async {
            let store = SqliteStore::open(&dir.path().join("q.db")).await.unwrap();
            let limits = QuotaLimits { requests, window_ms, daily: 1_000_000, monthly: None };
            let mut now = T0;
            let mut out = Vec::new();
            // Each caller arrives after a random gap and waits, as the gate does, until the
            // ledger admits it.
            for gap in gaps {
                now += gap;
                let arrival = now;
                loop {
                    match store.take_quota("k", &limits, now).await.unwrap() {
                        QuotaDecision::Granted => { out.push((arrival, now)); break; }
                        QuotaDecision::WaitUntil(t) => { assert!(t > now); now = t; }
                        QuotaDecision::Exhausted(_) => unreachable!("no daily cap here"),
                    }
                }
            }
            out.into_iter().unzip()
        });
        let n = requests as usize;
        for (i, &start) in granted.iter().enumerate() {
            let in_window = granted[i..].iter().take_while(|&&t| t < start + window_ms).count();
            prop_assert!(in_window <= n, "{in_window} requests in a window starting at {start}");
        }
        // Exact: every request went at the earliest moment the window allowed, not later.
        for i in 0..granted.len() {
            let earliest = if i < n { arrivals[i] } else { arrivals[i].max(granted[i - n] + window_ms) };
            prop_assert_eq!(granted[i], earliest, "request {} waited longer than necessary", i);
        }
    }
}

#[tokio::test]
async fn the_days_count_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.db");
    let limits = QuotaLimits {
        requests: 100,
        window_ms: 1000,
        daily: 3,
        monthly: None,
    };
    {
        let store = SqliteStore::open(&path).await.unwrap();
        for i in 0..3 {
            assert_eq!(
                store.take_quota("k", &limits, T0 + i).await.unwrap(),
                QuotaDecision::Granted
            );
        }
        store.close().await;
    }
    let store = SqliteStore::open(&path).await.unwrap();
    assert!(matches!(
        store.take_quota("k", &limits, T0 + 10).await.unwrap(),
        QuotaDecision::Exhausted(_)
    ));
    assert_eq!(
        store.quota_usage("k", 1000, T0 + 10).await.unwrap().today,
        3
    );
}

#[tokio::test]
async fn a_monthly_cap_is_honoured_across_days() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("q.db")).await.unwrap();
    let limits = QuotaLimits {
        requests: 100,
        window_ms: 1000,
        daily: 100,
        monthly: Some(2),
    };
    let day = 86_400_000;
    assert_eq!(
        store.take_quota("k", &limits, T0).await.unwrap(),
        QuotaDecision::Granted
    );
    assert_eq!(
        store.take_quota("k", &limits, T0 + day).await.unwrap(),
        QuotaDecision::Granted
    );
    assert!(matches!(
        store.take_quota("k", &limits, T0 + 2 * day).await.unwrap(),
        QuotaDecision::Exhausted(_)
    ));
}
