//! Failures that recur in a loop, said once a while rather than on every turn: a full disk fails
//! every turn of every worker, and a log line each time would flood the log (perhaps onto that
//! same disk).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A failure said again only when its message changes or `every` has passed, with how many times
/// it recurred unsaid meanwhile.
#[derive(Debug)]
pub struct Recurring {
    every: Duration,
    last: Mutex<Option<Said>>,
}

#[derive(Debug)]
struct Said {
    message: String,
    at: Instant,
    unsaid: u64,
}

impl Recurring {
    /// Says a recurring failure at most once per `every` (while its message stays the same).
    pub const fn every(every: Duration) -> Recurring {
        Recurring {
            every,
            last: Mutex::new(None),
        }
    }

    /// Whether to say `message` now: `Some(n)` with the `n` times it recurred unsaid since it
    /// was last said, `None` to keep quiet.
    pub fn say(&self, message: &str) -> Option<u64> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        match &mut *last {
            Some(said) if said.message == message && said.at.elapsed() < self.every => {
                said.unsaid += 1;
                None
            }
            _ => {
                let unsaid = last
                    .take()
                    .filter(|said| said.message == message)
                    .map_or(0, |said| said.unsaid);
                *last = Some(Said {
                    message: message.to_owned(),
                    at: Instant::now(),
                    unsaid: 0,
                });
                Some(unsaid)
            }
        }
    }
}

/// How often the failures of the loops (the quota ledger, housekeeping, recording outcomes) are
/// said while they last.
pub const EVERY: Duration = Duration::from_secs(60);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_is_said_once_per_interval_and_again_when_it_changes() {
        let full = "database or disk is full";
        let quiet = Recurring::every(Duration::from_secs(3600));
        assert_eq!(quiet.say(full), Some(0));
        assert_eq!(quiet.say(full), None);
        assert_eq!(quiet.say(full), None);
        assert_eq!(quiet.say("database is locked"), Some(0));
        assert_eq!(quiet.say(full), Some(0), "changed again");
        let often = Recurring::every(Duration::ZERO);
        assert_eq!(often.say(full), Some(0));
        assert_eq!(often.say(full), Some(0));
        let minute = Recurring::every(Duration::from_millis(50));
        assert_eq!(minute.say(full), Some(0));
        assert_eq!(minute.say(full), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(minute.say(full), Some(1), "with the one held back");
    }
}
