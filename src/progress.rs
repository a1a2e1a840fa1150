//! Progress on a terminal (hidden otherwise, so that logs and pipes stay clean): the spinner of
//! a list being queued, the bar of files being hashed, and the bar of a command waiting for its
//! verdicts, whose time left follows the quota ([`TimeLeft`]).

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use crate::pipeline::{Interrupted, Pipeline};
use crate::status::{Limits, eta, human_duration};
use crate::store::{Millis, QuotaUsage, now_millis};

/// A spinner for work of unknown length; its message says how far the work got.
pub fn spinner() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(100));
    spinner
}

/// A progress bar of work at a steady pace (hashing), with indicatif's estimate of the time left.
pub fn progress_bar(len: u64, what: &'static str) -> indicatif::ProgressBar {
    bar(
        len,
        what,
        "{prefix:>10} [{bar:30}] {pos}/{len} ({eta} left)",
    )
}

/// A bar of `len` steps named `what`, drawn by `template`.
fn bar(len: u64, what: &'static str, template: &str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style = indicatif::ProgressStyle::with_template(template)
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(what);
    bar
}

/// Works the queue until none of `ids` is unfinished ([`Pipeline::drain`]), with a bar on a
/// terminal that says how long is left as [`TimeLeft`] reckons it.
pub async fn drain_showing_progress(pipeline: &Pipeline, ids: &[i64]) -> Result<(), Interrupted> {
    // A shorter bar than the hashing one: the message is longer, and the line must fit 80
    // columns.
    let bar = bar(
        ids.len() as u64,
        "triaging",
        "{prefix:>10} [{bar:20}] {pos}/{len} ({msg})",
    );
    if bar.is_hidden() {
        return pipeline.drain(ids, |_, _| {}).await;
    }
    let mut time_left = TimeLeft::new(quota_limits(pipeline), quota_used(pipeline).await);
    let drained = pipeline
        .drain(ids, |done, total| {
            bar.set_message(time_left.describe(done, total, Instant::now(), now_millis()));
            bar.set_position(done);
        })
        .await;
    bar.finish_and_clear();
    drained
}

/// The limits the quota holds this command to; none for a key without limits.
fn quota_limits(pipeline: &Pipeline) -> Option<Limits> {
    let limits = Limits::of(&pipeline.config.quota);
    (!limits.unlimited).then_some(limits)
}

/// The requests of the key spent so far today and this month (none when the ledger cannot be
/// read: the estimate then only misses the daily and monthly caps).
async fn quota_used(pipeline: &Pipeline) -> QuotaUsage {
    let window_ms = (pipeline.config.quota.window_secs * 1000.0) as i64;
    pipeline
        .store
        .quota_usage(&pipeline.key_id, window_ms, now_millis())
        .await
        .unwrap_or_default()
}

/// What the bar of a command waiting for its verdicts says of the time left. Each unfinished
/// job needs one more request at least, and the quota grants them at its pace (the estimate of
/// `vtriage status`). The rate seen so far is no guide while the quota holds the workers: a
/// run's first requests go at once, then the rest wait for the window, so that rate says "0 s"
/// and then grows while the real time left shrinks. It is the better guide when the quota is
/// not what holds them (a large quota, a key without limits: VirusTotal's analyses are), so the
/// longer of the two is shown, counting down until the next job finishes.
#[derive(Debug)]
pub struct TimeLeft {
    /// The quota's limits; none for a key without limits.
    limits: Option<Limits>,
    /// Requests of the key spent today and this month when the command started.
    used: QuotaUsage,
    /// When the command started waiting.
    started: Instant,
    /// Jobs already done when first described: answered by stored verdicts, at no request.
    done_at_start: Option<u64>,
    /// The estimate made when the count of jobs done last changed: that count, when, and the
    /// estimate.
    last: Option<(u64, Instant, Estimate)>,
}

/// One estimate of the time left.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    /// How long.
    left: Duration,
    /// Whether the quota's pace set it (rather than the rate seen so far).
    by_quota: bool,
}

impl TimeLeft {
    /// Starts now, with `used` requests already spent today and this month.
    pub fn new(limits: Option<Limits>, used: QuotaUsage) -> TimeLeft {
        TimeLeft {
            limits,
            used,
            started: Instant::now(),
            done_at_start: None,
            last: None,
        }
    }

    /// What to show when `done` of `total` jobs are finished, at `now` (`now_ms` on the clock
    /// of the daily cap).
    pub fn describe(&mut self, done: u64, total: u64, now: Instant, now_ms: Millis) -> String {
        if done >= total {
            return "done".into();
        }
        let done_at_start = *self.done_at_start.get_or_insert(done);
        let (at, estimate) = match self.last {
            Some((counted, at, estimate)) if counted == done => (at, estimate),
            _ => {
                let estimate = self.estimate(done, done_at_start, total, now, now_ms);
                self.last = estimate.map(|e| (done, now, e));
                match estimate {
                    Some(estimate) => (now, estimate),
                    None => return "estimating the time left".into(),
                }
            }
        };
        let left = estimate.left.saturating_sub(now - at);
        match (left.as_secs(), estimate.by_quota) {
            (0, true) => "waiting for the quota".into(),
            (0, false) => "waiting for VirusTotal".into(),
            (secs, true) => format!(
                "about {} left at {} requests/min",
                human_duration(secs),
                self.per_minute()
            ),
            (secs, false) => format!("about {} left", human_duration(secs)),
        }
    }

    /// The longer of the quota's estimate and the rate seen so far; none before either says.
    /// Jobs done since `done_at_start` each spent one request at least.
    fn estimate(
        &self,
        done: u64,
        done_at_start: u64,
        total: u64,
        now: Instant,
        now_ms: Millis,
    ) -> Option<Estimate> {
        let left = total.saturating_sub(done);
        let worked = done.saturating_sub(done_at_start);
        let used = QuotaUsage {
            today: self.used.today + worked,
            this_month: self.used.this_month + worked,
            ..self.used
        };
        let by_quota = self
            .limits
            .as_ref()
            .map(|limits| Duration::from_secs(eta(left, limits, &used, now_ms)));
        let seen = (worked > 0).then(|| (now - self.started).mul_f64(left as f64 / worked as f64));
        match (by_quota, seen) {
            (Some(quota), Some(seen)) if seen > quota => Some(Estimate {
                left: seen,
                by_quota: false,
            }),
            (Some(quota), _) => Some(Estimate {
                left: quota,
                by_quota: true,
            }),
            (None, Some(seen)) => Some(Estimate {
                left: seen,
                by_quota: false,
            }),
            (None, None) => None,
        }
    }

    /// The quota's pace, in requests a minute, as `status` shows it.
    fn per_minute(&self) -> f64 {
        self.limits.as_ref().map_or(0.0, |l| {
            (f64::from(l.requests) * 600.0 / l.window_secs).round() / 10.0
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn public_key() -> Limits {
        Limits::of(&crate::config::Config::default().quota)
    }

    /// Six lookups at a public key's 4 a minute: the first four go at once, then the last two
    /// wait for the quota. The bar says so and counts down, where indicatif's rate said "0 s"
    /// and counted up.
    #[test]
    fn the_time_left_follows_the_quota_not_the_first_burst() {
        let mut time_left = TimeLeft::new(Some(public_key()), QuotaUsage::default());
        let start = time_left.started;
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        assert_eq!(
            time_left.describe(0, 6, at(0.0), 0),
            "about 2 min left at 4 requests/min"
        );
        // Four answered in half a second: at that rate the last two would take 0.25 s.
        assert_eq!(
            time_left.describe(4, 6, at(0.5), 500),
            "about 30 s left at 4 requests/min"
        );
        assert_eq!(
            time_left.describe(4, 6, at(10.5), 10_500),
            "about 20 s left at 4 requests/min",
            "it counts down while nothing finishes"
        );
        assert_eq!(
            time_left.describe(4, 6, at(40.0), 40_000),
            "waiting for the quota"
        );
        assert_eq!(
            time_left.describe(5, 6, at(60.2), 60_200),
            "about 15 s left at 4 requests/min"
        );
        assert_eq!(time_left.describe(6, 6, at(60.3), 60_300), "done");
    }

    /// Jobs answered by stored verdicts before the first look spent no request: 450 of 500
    /// spent today and 90 of 100 jobs answered at once leave 10 requests, which fit today (not
    /// "about 12 h", the next day's).
    #[test]
    fn jobs_answered_at_once_spent_no_quota() {
        let limits = Limits {
            daily: 500,
            ..public_key()
        };
        let used = QuotaUsage {
            today: 450,
            this_month: 450,
            ..QuotaUsage::default()
        };
        let mut time_left = TimeLeft::new(Some(limits), used);
        let noon = 12 * 3600 * 1000;
        assert_eq!(
            time_left.describe(90, 100, time_left.started, noon),
            "about 3 min left at 4 requests/min"
        );
    }

    /// The daily cap counts too: with 498 of 500 requests spent today, the third of three jobs
    /// waits for the next UTC day.
    #[test]
    fn the_daily_cap_adds_its_wait() {
        let limits = Limits {
            daily: 500,
            ..public_key()
        };
        let used = QuotaUsage {
            today: 498,
            this_month: 498,
            ..QuotaUsage::default()
        };
        let mut time_left = TimeLeft::new(Some(limits), used);
        let noon = 12 * 3600 * 1000;
        assert_eq!(
            time_left.describe(0, 3, time_left.started, noon),
            "about 12 h 0 min left at 4 requests/min"
        );
    }

    /// With a quota that holds nobody back (or none), the rate seen so far decides: here
    /// VirusTotal's analyses take 10 s a job.
    #[test]
    fn without_a_tight_quota_the_rate_seen_decides() {
        let large = Limits {
            requests: 1000,
            window_secs: 1.0,
            ..public_key()
        };
        for limits in [Some(large), None] {
            let mut time_left = TimeLeft::new(limits.clone(), QuotaUsage::default());
            let start = time_left.started;
            let at = |secs: u64| start + Duration::from_secs(secs);
            let first = time_left.describe(0, 4, at(0), 0);
            if limits.is_none() {
                assert_eq!(first, "estimating the time left");
            }
            assert_eq!(time_left.describe(2, 4, at(20), 0), "about 20 s left");
            assert_eq!(
                time_left.describe(2, 4, at(45), 0),
                "waiting for VirusTotal"
            );
        }
    }
}
