//! `vtriage status`: how much is left, what the quota allows, and when the backlog will be done.
//! Reads only; works while a daemon runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::config::{Config, QuotaConfig};
use crate::indicator::Kind;
use crate::store::sqlite::periods;
use crate::store::{MaySubmit, Millis, QueueCounts, QuotaUsage, Store, WorkerInfo, now_millis};
use crate::terminal::escape_control;

/// Everything `status` shows.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Jobs by state, kind, verdict and remaining step.
    pub queue: QueueCounts,
    /// Jobs not finished yet.
    pub remaining: u64,
    /// Of those, jobs unknown to VirusTotal that no running process may submit (with none
    /// running, that this command's configuration may not): they wait for one that may, and
    /// are left out of the ETA.
    pub waiting_to_submit: u64,
    /// Jobs finished.
    pub finished: u64,
    /// Quota use of the key, when one is known.
    pub quota: Option<QuotaUsage>,
    /// The limits in force.
    pub limits: Limits,
    /// Worker processes: host, pid, last heartbeat, jobs in flight, whether they stopped.
    pub workers: Vec<WorkerStatus>,
    /// Lower bound of the requests the backlog needs.
    pub requests_needed: u64,
    /// Estimated seconds until the backlog is done: at the configured quota, or for a key without
    /// limits at the last minute's pace (none when nothing finished in that minute).
    pub eta_secs: Option<u64>,
    /// For a key without limits: the verdicts written in the last minute, by every process.
    pub verdicts_last_minute: Option<u64>,
    /// When the workers poll an analysis, as they learned it (none before they learned any).
    pub poll_delays: Option<PollDelays>,
}

/// A worker process, as `status` shows it.
#[derive(Debug, Serialize)]
pub struct WorkerStatus {
    /// What it registered.
    #[serde(flatten)]
    pub info: WorkerInfo,
    /// It stopped without unregistering (killed, crashed, its host down): no heartbeat for longer
    /// than a live process lets pass, or, on this host, its process is gone. Its row and its
    /// jobs are cleared by the next vtriage process to run on the database.
    pub stopped: bool,
}

/// When an analysis is polled, in seconds after its submission.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PollDelays {
    /// The first poll.
    pub first_secs: f64,
    /// The second.
    pub second_secs: f64,
}

/// The quota limits in force: those the running daemons registered, or else this command's
/// configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// The key has no limits (`quota.unlimited`); the others below are not enforced.
    pub unlimited: bool,
    /// Requests per window.
    pub requests: u32,
    /// Window in seconds.
    pub window_secs: f64,
    /// Requests per UTC day.
    pub daily: u32,
    /// Requests per UTC calendar month, when capped. Absent from what daemons older than it
    /// registered: read as none.
    #[serde(default)]
    pub monthly: Option<u32>,
    /// Whether they are the running daemons' (not this command's configuration).
    #[serde(default)]
    pub from_daemons: bool,
}

impl Limits {
    /// The limits of a quota configuration.
    pub fn of(quota: &QuotaConfig) -> Limits {
        Limits {
            unlimited: quota.unlimited,
            requests: quota.requests,
            window_secs: quota.window_secs,
            daily: quota.daily,
            monthly: quota.monthly,
            from_daemons: false,
        }
    }
}

/// What a worker process registers about itself ([`Store::describe_worker`]), for `status`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Registration {
    /// Its quota limits.
    #[serde(flatten)]
    pub limits: Limits,
    /// What its upload policy lets it submit. Absent from what older processes registered:
    /// read as anything.
    #[serde(default)]
    pub may_submit: Option<MaySubmit>,
}

impl Registration {
    /// The registration of a process of this configuration.
    pub fn of(config: &Config) -> Registration {
        Registration {
            limits: Limits::of(&config.quota),
            may_submit: Some(MaySubmit::of(&config.upload)),
        }
    }

    /// As JSON, for [`Store::describe_worker`].
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain numbers")
    }
}

/// Gathers the status.
pub async fn gather(store: &dyn Store, config: &Config) -> anyhow::Result<Status> {
    let now = now_millis();
    let queue = store.counts().await?;
    let total = |states: &[&str]| -> u64 {
        states
            .iter()
            .filter_map(|s| queue.by_state.get(*s))
            .flat_map(|k| k.values())
            .sum()
    };
    let remaining = total(&["available", "running"]);
    let finished = total(&["completed", "discarded"]);
    let host = crate::store::this_host();
    let workers: Vec<WorkerStatus> = store
        .workers()
        .await?
        .into_iter()
        .map(|info| WorkerStatus {
            stopped: now - info.heartbeat_at > crate::pipeline::STALE_MS
                || crate::pipeline::process_gone(&info, &host),
            info,
        })
        .collect();
    // The daemons' limits decide the pace, whatever this command was configured with (run
    // elsewhere, or without the daemons' configuration file).
    let running: Vec<Registration> = workers
        .iter()
        .filter(|w| !w.stopped)
        .filter_map(|w| serde_json::from_str(w.info.limits.as_deref()?).ok())
        .collect();
    let limits = running
        .first()
        .map(|r| Limits {
            from_daemons: true,
            ..r.limits.clone()
        })
        .unwrap_or_else(|| Limits::of(&config.quota));
    let may_submit = match &running[..] {
        [] => MaySubmit::of(&config.upload),
        running => running
            .iter()
            .map(|r| r.may_submit.unwrap_or(MaySubmit::ANY))
            .fold(MaySubmit::NONE, MaySubmit::or),
    };
    let waiting_to_submit = queue
        .to_submit_by_kind
        .iter()
        .filter(|(kind, _)| !kind.parse::<Kind>().is_ok_and(|k| may_submit.allows(k)))
        .map(|(_, n)| n)
        .sum::<u64>();
    let window_ms = (limits.window_secs * 1000.0) as i64;
    let key_id = match &config.virustotal.api_key {
        Some(key) => Some(key.fingerprint()),
        None => store.quota_keys().await?.into_iter().next(),
    };
    let quota = match key_id {
        Some(k) => Some(store.quota_usage(&k, window_ms, now).await?),
        None => None,
    };
    let poll_delays = store
        .poll_estimates()
        .await?
        .map(|(first_ms, second_ms)| PollDelays {
            first_secs: first_ms / 1000.0,
            second_secs: second_ms / 1000.0,
        });
    // Every unfinished job needs at least one more request (a lookup or a poll); one at step
    // `upload` that will be worked, two (the upload, then a poll).
    let backlog = remaining - waiting_to_submit;
    let to_submit = queue.to_submit_by_kind.values().sum::<u64>() - waiting_to_submit;
    let requests_needed = backlog + to_submit;
    // A key without limits goes as fast as VirusTotal and the machines answer: the last
    // minute's pace is the best guess of the next.
    let verdicts_last_minute = if limits.unlimited {
        Some(store.finished_since(now - 60_000).await?)
    } else {
        None
    };
    let eta_secs = match verdicts_last_minute {
        Some(0) => (backlog == 0).then_some(0),
        Some(per_min) => Some((backlog * 60).div_ceil(per_min)),
        None => Some(eta(
            requests_needed,
            &limits,
            &quota.unwrap_or_default(),
            now,
        )),
    };
    Ok(Status {
        queue,
        remaining,
        waiting_to_submit,
        finished,
        quota,
        limits,
        workers,
        requests_needed,
        eta_secs,
        verdicts_last_minute,
        poll_delays,
    })
}

/// Seconds to spend `requests` at the pace `q` allows, counting the days the daily cap adds and
/// the months the monthly cap adds (UTC days and calendar months, as the quota gate counts them).
/// `used` is what the key spent already today and this month.
pub fn eta(requests: u64, q: &Limits, used: &QuotaUsage, now: Millis) -> u64 {
    if requests == 0 {
        return 0;
    }
    let pace = Pace::of(q);
    let ((_, day_end), (_, month_end)) = periods(now);
    let left_today = pace.daily.saturating_sub(used.today);
    let Some(monthly) = q.monthly.map(|m| u64::from(m.max(1))) else {
        return pace.secs_within_days(requests, left_today, now, day_end);
    };
    let left_this_month = monthly.saturating_sub(used.this_month);
    let left_today = left_today.min(left_this_month);
    let whole_days_left = ((month_end - day_end) / DAY_MS) as u64;
    let this_month = left_this_month.min(left_today + pace.daily * whole_days_left);
    if requests <= this_month {
        return pace.secs_within_days(requests, left_today, now, day_end);
    }
    // What does not fit this month waits for the next ones.
    let rest = pace.secs_over_months(requests - this_month, monthly, month_end);
    (((month_end - now) / 1000) as u64).saturating_add(rest)
}

/// Milliseconds in a UTC day.
const DAY_MS: Millis = 86_400_000;

/// How fast requests may be made: the sliding window's pace, and the daily cap.
struct Pace {
    per_sec: f64,
    daily: u64,
}

impl Pace {
    fn of(q: &Limits) -> Pace {
        Pace {
            per_sec: f64::from(q.requests) / q.window_secs,
            daily: u64::from(q.daily.max(1)),
        }
    }

    /// Seconds to make `requests` at the window's pace, with no cap in the way.
    fn secs(&self, requests: u64) -> u64 {
        (requests as f64 / self.per_sec).ceil() as u64
    }

    /// Seconds from `now` to make `requests`, `left_today` of them allowed before `day_end` (the
    /// next UTC midnight) and `daily` on each day after.
    fn secs_within_days(
        &self,
        requests: u64,
        left_today: u64,
        now: Millis,
        day_end: Millis,
    ) -> u64 {
        if requests <= left_today {
            return self.secs(requests);
        }
        // What does not fit today waits for the next UTC midnights.
        let rest = requests - left_today;
        let full_days = (rest - 1) / self.daily;
        let last_day = rest - full_days * self.daily;
        ((day_end - now) / 1000) as u64 + full_days * 86_400 + self.secs(last_day)
    }

    /// Seconds from `start`, the start of a UTC month, to make `requests`, `monthly` of them in
    /// each month at most.
    fn secs_over_months(&self, mut requests: u64, monthly: u64, start: Millis) -> u64 {
        let mut month_start = start;
        if monthly <= self.daily * 28 {
            // Every month allows `monthly`: skip to the last one at once.
            let whole_months = (requests - 1) / monthly;
            requests -= whole_months * monthly;
            let Some(last) = months_later(month_start, whole_months) else {
                return u64::MAX; // past what a calendar names: never, as good as
            };
            month_start = last;
        }
        loop {
            let ((_, first_day_end), (_, next_month)) = periods(month_start);
            let days = ((next_month - month_start) / DAY_MS) as u64;
            let allowed = monthly.min(self.daily * days);
            if requests <= allowed {
                let wait = ((month_start - start) / 1000) as u64;
                return wait
                    + self.secs_within_days(requests, self.daily, month_start, first_day_end);
            }
            requests -= allowed;
            month_start = next_month;
        }
    }
}

/// The start of the UTC month `months` after the one starting at `month_start`.
fn months_later(month_start: Millis, months: u64) -> Option<Millis> {
    use chrono::{Months, TimeZone, Utc};
    let start = Utc.timestamp_millis_opt(month_start).single()?;
    let later = start.checked_add_months(Months::new(u32::try_from(months).ok()?))?;
    Some(later.timestamp_millis())
}

/// "1 h 43 min", "12 s", "3 d 2 h": minutes to the nearest (67 s is "1 min", 119 s "2 min"),
/// larger units with the rest dropped.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", ((secs + 30) / 60).min(59)),
        3600..86_400 => format!("{} h {} min", secs / 3600, (secs % 3600) / 60),
        _ => format!("{} d {} h", secs / 86_400, (secs % 86_400) / 3600),
    }
}

/// "1 job", "2 jobs".
fn jobs(n: u64) -> String {
    match n {
        1 => "1 job".into(),
        n => format!("{n} jobs"),
    }
}

/// The human-readable form.
pub fn render(s: &Status) -> String {
    let mut out = String::new();
    let steps: Vec<String> = s
        .queue
        .remaining_by_step
        .iter()
        .map(|(k, n)| format!("{n} {k}"))
        .collect();
    out += &format!(
        "queue: {} left ({}), {} finished\n",
        s.remaining,
        if steps.is_empty() {
            "nothing".into()
        } else {
            steps.join(", ")
        },
        s.finished
    );
    for (state, kinds) in &s.queue.by_state {
        let parts: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        out += &format!("  {state:<10} {}\n", parts.join(", "));
    }
    let verdicts: BTreeMap<_, _> = s.queue.by_verdict.iter().collect();
    let parts: Vec<String> = verdicts.iter().map(|(v, n)| format!("{n} {v}")).collect();
    out += &format!(
        "verdicts: {}\n",
        if parts.is_empty() {
            "none yet".into()
        } else {
            parts.join(", ")
        }
    );
    match &s.quota {
        Some(q) if s.limits.unlimited => {
            out += &format!(
                "quota: no limits, {} today, {} this month\n",
                q.today, q.this_month
            );
        }
        Some(q) => {
            out += &format!(
                "quota: {}/{} in this {} s window, {}/{} today",
                q.in_window, s.limits.requests, s.limits.window_secs, q.today, s.limits.daily
            );
            if let Some(monthly) = s.limits.monthly {
                out += &format!(", {}/{monthly} this month", q.this_month);
            }
            if let Some(until) = q.paused_until {
                out += &format!(
                    ", paused for {} s after a 429",
                    (until - now_millis()).max(0) / 1000
                );
            }
            out += "\n";
        }
        None => out += "quota: no requests recorded yet\n",
    }
    let per_min = f64::from(s.limits.requests) * 60.0 / s.limits.window_secs;
    let backlog = s.remaining - s.waiting_to_submit;
    match (s.eta_secs, s.verdicts_last_minute) {
        _ if backlog == 0 => out += "backlog: none\n",
        (Some(eta), Some(pace)) => {
            out += &format!(
                "backlog: {}, about {} at the last minute's pace ({pace} verdicts/min)\n",
                jobs(backlog),
                human_duration(eta)
            )
        }
        (None, _) => {
            out += &format!(
                "backlog: {}, none finished in the last minute (no quota limits)\n",
                jobs(backlog)
            )
        }
        (Some(eta), None) => {
            out += &format!(
                "backlog: {}, about {} at {} requests/min\n",
                jobs(backlog),
                human_duration(eta),
                (per_min * 10.0).round() / 10.0
            )
        }
    }
    if s.waiting_to_submit > 0 {
        out += &format!(
            "waiting: {} unknown to VirusTotal, for a process that may submit them \
             ([upload] files or urls = \"unknown\", or scan --upload)\n",
            jobs(s.waiting_to_submit)
        );
    }
    if let Some(p) = s.poll_delays {
        out += &format!(
            "polls: the first about {:.0} s after an upload, the second about {:.0} s (learned)\n",
            p.first_secs, p.second_secs
        );
    }
    if let Some((indicator, created)) = &s.queue.oldest_pending {
        out += &format!(
            "oldest unfinished: {} (queued {} ago)\n",
            escape_control(indicator),
            human_duration(((now_millis() - created) / 1000).max(0) as u64)
        );
    }
    for w in &s.workers {
        let ago = (now_millis() - w.info.heartbeat_at).max(0) / 1000;
        let (owner, in_flight) = (&w.info.owner, w.info.in_flight);
        out += &match w.stopped {
            false => format!("worker: {owner} ({in_flight} in flight, heartbeat {ago} s ago)\n"),
            true => format!(
                "worker: {owner} (stopped: last heartbeat {ago} s ago; its {} back to the \
                 queue when vtriage next runs on this database)\n",
                match in_flight {
                    1 => "1 job goes".to_owned(),
                    n => format!("{n} jobs go"),
                }
            ),
        };
    }
    for (indicator, error, _) in &s.queue.last_errors {
        // VirusTotal's words may be in the error: escaped for the terminal.
        out += &format!(
            "recent error: {}: {}\n",
            escape_control(indicator),
            escape_control(error)
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::SqliteStore;

    /// An empty database in a directory of its own (kept while the directory is).
    async fn new_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("s.db")).await.unwrap();
        (dir, store)
    }

    /// A worker killed without unregistering is shown as stopped: on another host once its
    /// heartbeat is stale, on this one as soon as its process is gone.
    #[tokio::test]
    async fn workers_that_stopped_without_a_word_are_shown_as_stopped() {
        let (_dir, store) = new_store().await;
        let (now, keep) = (now_millis(), i64::MAX / 2);
        let host = crate::store::this_host();
        let me = std::process::id();
        let workers = [
            ("alive", host.as_str(), me, now),
            ("silent", "elsewhere", 7, now - 60_000),
            ("busy", "elsewhere", 8, now - 1_000),
            // No process has this pid: /proc/sys/kernel/pid_max is at most 2^22.
            ("killed", host.as_str(), 4_000_000_000, now - 1_000),
        ];
        for (owner, host, pid, at) in workers {
            store
                .heartbeat(owner, host, pid, at, keep, &[])
                .await
                .unwrap();
        }
        let status = gather(&store, &Config::default()).await.unwrap();
        let mut stopped: Vec<(&str, bool)> = status
            .workers
            .iter()
            .map(|w| (w.info.owner.as_str(), w.stopped))
            .collect();
        stopped.sort();
        assert_eq!(
            stopped,
            [
                ("alive", false),
                ("busy", false),
                ("killed", true),
                ("silent", true)
            ]
        );
        let text = render(&status);
        assert!(
            text.contains("worker: silent (stopped: last heartbeat 60 s ago"),
            "{text}"
        );
        assert!(
            text.contains("worker: busy (0 in flight, heartbeat 1 s ago)"),
            "{text}"
        );
        let json = serde_json::to_value(&status).unwrap();
        let alive = json["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["owner"] == "alive")
            .unwrap();
        assert_eq!(alive["stopped"], false);
        assert_eq!(alive["pid"], me, "the worker's fields, flat: {json}");
    }

    #[test]
    fn eta_follows_the_quota_and_the_daily_cap() {
        let mut limits = Limits::of(&Config::default().quota);
        let none = QuotaUsage::default();
        // 412 requests at 4/min: 103 minutes.
        assert_eq!(eta(412, &limits, &none, 0), 412 * 15);
        assert_eq!(human_duration(412 * 15), "1 h 43 min");
        assert_eq!(human_duration(67), "1 min", "not 2 when 67 s have passed");
        assert_eq!(human_duration(119), "2 min");
        assert_eq!(human_duration(3599), "59 min");
        // 600 requests with 500/day, starting at midnight: the last 100 wait for tomorrow.
        limits.daily = 500;
        assert_eq!(eta(600, &limits, &none, 0), 86_400 + 100 * 15);
    }

    /// Milliseconds at a UTC date and time.
    fn at(y: i32, m: u32, d: u32, h: u32) -> Millis {
        use chrono::TimeZone;
        chrono::Utc
            .with_ymd_and_hms(y, m, d, h, 0, 0)
            .unwrap()
            .timestamp_millis()
    }

    /// Requests past what is left of the month wait for the next calendar month (UTC).
    #[test]
    fn eta_follows_the_monthly_cap() {
        let mut limits = Limits::of(&Config::default().quota);
        (limits.daily, limits.monthly) = (500, Some(600));
        let none = QuotaUsage::default();
        // 24 November, 07:00: 500 today, 100 more this month; the other 600 from 1 December,
        // 500 of them that day and 100 the next.
        let now = at(2026, 11, 24, 7);
        let december = (at(2026, 12, 1, 0) - now) as u64 / 1000;
        assert_eq!(eta(1200, &limits, &none, now), december + 86_400 + 100 * 15);
        assert_eq!(human_duration(eta(1200, &limits, &none, now)), "7 d 17 h");
        // What fits this month is paced by the daily cap alone.
        assert_eq!(eta(550, &limits, &none, now), 17 * 3600 + 50 * 15);
        // Spent this month already: everything waits for December.
        let spent = QuotaUsage {
            this_month: 600,
            ..QuotaUsage::default()
        };
        assert_eq!(eta(1, &limits, &spent, now), december + 15);
        // Months of backlog: 6000 requests from December on, 600 a month, take to 1 September
        // (and a request more, to 1 October).
        let september = (at(2027, 9, 1, 0) - now) as u64 / 1000;
        assert_eq!(
            eta(600 + 6000, &limits, &none, now),
            september + 86_400 + 100 * 15
        );
        let october = (at(2027, 10, 1, 0) - now) as u64 / 1000;
        assert_eq!(eta(600 + 6001, &limits, &none, now), october + 15);
        // A monthly cap above what the days allow: December holds 31 * 500 requests.
        limits.monthly = Some(20_000);
        let (left_in_november, in_december) = (500 * 7, 500 * 31);
        assert_eq!(
            eta(left_in_november + in_december + 1, &limits, &none, now),
            (at(2027, 1, 1, 0) - now) as u64 / 1000 + 15
        );
    }

    /// Daemons that registered their limits before `monthly` and `may_submit` existed are still
    /// read.
    #[test]
    fn registrations_without_a_monthly_cap_or_an_upload_policy_are_read() {
        let old = r#"{"unlimited":false,"requests":4,"window_secs":60.0,"daily":500,"from_daemons":false}"#;
        let old: Registration = serde_json::from_str(old).unwrap();
        assert_eq!(old.limits, Limits::of(&Config::default().quota));
        assert_eq!(old.may_submit, None);
        let mut config = Config::default();
        config.quota.monthly = Some(15_500);
        let json = Registration::of(&config).to_json();
        assert!(json.contains(r#""monthly":15500"#), "{json}");
        let new: Registration = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (new.limits.monthly, new.may_submit),
            (Some(15_500), Some(MaySubmit::NONE))
        );
    }

    /// A file left at step `upload` waits for a process that may upload it: while none runs
    /// (or, with none running, this configuration may not), `status` says so and leaves it out
    /// of the backlog and its ETA.
    #[tokio::test]
    async fn jobs_no_process_may_submit_are_shown_waiting_and_left_out_of_the_eta() {
        let (_dir, store) = new_store().await;
        let now = now_millis();
        let job = crate::store::NewJob {
            kind: Kind::File,
            indicator: "a".repeat(64),
            allow_submit: true,
            path: None,
            source: None,
        };
        store.enqueue(&[job], now, 0, 8).await.unwrap();
        let claimed = store.claim("w", 1, now, 60_000).await.unwrap();
        assert!(store.mark_unknown(&claimed[0], now).await.unwrap());
        assert!(store.release(&claimed[0], now).await.unwrap());
        let mut config = Config::default();
        let status = gather(&store, &config).await.unwrap();
        assert_eq!((status.waiting_to_submit, status.eta_secs), (1, Some(0)));
        let text = render(&status);
        assert!(text.contains("backlog: none\n"), "{text}");
        assert!(
            text.contains("waiting: 1 job unknown to VirusTotal, for a process that may submit"),
            "{text}"
        );
        // A process of this configuration may upload it: two requests, the upload and a poll.
        config.upload.files = crate::config::UploadPolicy::Unknown;
        let status = gather(&store, &config).await.unwrap();
        assert_eq!((status.waiting_to_submit, status.requests_needed), (0, 2));
        assert_eq!(status.eta_secs, Some(30));
        // So may a running one, whatever this command's configuration.
        let (me, host) = (std::process::id(), crate::store::this_host());
        store
            .heartbeat("d", &host, me, now, 30_000, &[])
            .await
            .unwrap();
        store
            .describe_worker("d", &Registration::of(&config).to_json())
            .await
            .unwrap();
        let status = gather(&store, &Config::default()).await.unwrap();
        assert_eq!(status.waiting_to_submit, 0);
    }

    /// The quota line names the monthly cap when there is one; one job is one job.
    #[tokio::test]
    async fn the_monthly_cap_and_a_single_job_are_shown() {
        let (_dir, store) = new_store().await;
        let now = now_millis();
        store.count_requests("key", 3, now).await.unwrap();
        let job = crate::store::NewJob {
            kind: crate::indicator::Kind::Domain,
            indicator: "evil.example.com".into(),
            allow_submit: false,
            path: None,
            source: None,
        };
        store.enqueue(&[job], now, 0, 8).await.unwrap();
        let mut config = Config::default();
        let text = render(&gather(&store, &config).await.unwrap());
        assert!(text.contains("3/500 today\n"), "no monthly cap: {text}");
        assert!(text.contains("backlog: 1 job, about 15 s"), "{text}");
        config.quota.monthly = Some(600);
        let status = gather(&store, &config).await.unwrap();
        let text = render(&status);
        assert!(text.contains("3/500 today, 3/600 this month\n"), "{text}");
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(json["limits"]["monthly"], 600, "{json}");
    }

    /// `status` run with another configuration (or none) than the daemons' judges by theirs.
    #[tokio::test]
    async fn the_running_daemons_limits_are_the_ones_shown() {
        let (_dir, store) = new_store().await;
        let mut daemons = Config::default();
        let quota = &mut daemons.quota;
        (quota.requests, quota.daily, quota.monthly) = (1000, 1_000_000, Some(20_000_000));
        let now = now_millis();
        let me = std::process::id();
        let host = crate::store::this_host();
        store
            .heartbeat("d", &host, me, now, 30_000, &[])
            .await
            .unwrap();
        store
            .describe_worker("d", &Registration::of(&daemons).to_json())
            .await
            .unwrap();
        let status = gather(&store, &Config::default()).await.unwrap();
        assert_eq!(
            (
                status.limits.requests,
                status.limits.daily,
                status.limits.monthly,
                status.limits.from_daemons
            ),
            (1000, 1_000_000, Some(20_000_000), true)
        );
        // Without a live daemon, this command's own.
        store.unregister("d").await.unwrap();
        let status = gather(&store, &Config::default()).await.unwrap();
        assert_eq!(status.limits, Limits::of(&Config::default().quota));
    }
}
