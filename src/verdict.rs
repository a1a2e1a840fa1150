//! Verdicts: what VirusTotal's engine counts mean for the user, and the record kept for each job.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::VerdictConfig;
use crate::store::Millis;
pub use crate::vt::Stats;

/// The outcome of triaging one indicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// At least `malicious_min` engines flag it malicious.
    Malicious,
    /// At least `suspicious_min` engines flag it malicious or suspicious.
    Suspicious,
    /// Analysed, and below both thresholds.
    Clean,
    /// VirusTotal does not know it, and it was not submitted.
    Unknown,
    /// It could not be triaged (the reason is kept).
    Failed,
    /// Submitted, and the analysis has not finished yet.
    Pending,
}

impl Verdict {
    /// Every verdict, most alarming first.
    pub const ALL: [Verdict; 6] = [
        Verdict::Malicious,
        Verdict::Suspicious,
        Verdict::Clean,
        Verdict::Unknown,
        Verdict::Failed,
        Verdict::Pending,
    ];

    /// The stored and printed name.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Malicious => "malicious",
            Verdict::Suspicious => "suspicious",
            Verdict::Clean => "clean",
            Verdict::Unknown => "unknown",
            Verdict::Failed => "failed",
            Verdict::Pending => "pending",
        }
    }

    /// The verdict that engine counts give under the configured thresholds.
    pub fn from_stats(stats: &Stats, cfg: &VerdictConfig) -> Verdict {
        if stats.malicious >= cfg.malicious_min {
            Verdict::Malicious
        } else if stats.malicious + stats.suspicious >= cfg.suspicious_min.max(1) {
            Verdict::Suspicious
        } else {
            Verdict::Clean
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Verdict {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Verdict::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| {
            format!("unknown verdict {s:?} (expected malicious, suspicious, clean, unknown, failed or pending)")
        })
    }
}

/// Everything stored about one verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictRecord {
    /// The verdict.
    pub verdict: Verdict,
    /// Engine counts, when VirusTotal gave them.
    pub stats: Option<Stats>,
    /// VirusTotal's suggested threat label.
    pub threat_label: Option<String>,
    /// File hashes, when known.
    pub sha256: Option<String>,
    /// MD5, when known.
    pub md5: Option<String>,
    /// SHA-1, when known.
    pub sha1: Option<String>,
    /// VirusTotal's id of the object.
    pub vt_id: Option<String>,
    /// When VirusTotal last analysed it (Unix seconds).
    pub vt_analysis_date: Option<i64>,
    /// When vtriage got this verdict.
    pub checked_at: Millis,
    /// Why it is unknown or pending.
    pub note: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// The VirusTotal object (JSON), kept so that nothing needs to be fetched twice.
    #[serde(skip)]
    pub raw: Option<Vec<u8>>,
}

impl VerdictRecord {
    /// A verdict with nothing but its name and time.
    pub fn bare(verdict: Verdict, checked_at: Millis) -> VerdictRecord {
        VerdictRecord {
            verdict,
            stats: None,
            threat_label: None,
            sha256: None,
            md5: None,
            sha1: None,
            vt_id: None,
            vt_analysis_date: None,
            checked_at,
            note: None,
            error: None,
            raw: None,
        }
    }

    /// A `failed` verdict with its reason.
    pub fn failed(error: impl Into<String>, checked_at: Millis) -> VerdictRecord {
        VerdictRecord {
            error: Some(error.into()),
            ..VerdictRecord::bare(Verdict::Failed, checked_at)
        }
    }

    /// An `unknown` or `pending` verdict with the reason.
    pub fn noted(verdict: Verdict, note: impl Into<String>, checked_at: Millis) -> VerdictRecord {
        VerdictRecord {
            note: Some(note.into()),
            ..VerdictRecord::bare(verdict, checked_at)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(malicious: u32, suspicious: u32) -> Stats {
        Stats {
            malicious,
            suspicious,
            undetected: 60,
            ..Stats::default()
        }
    }

    #[test]
    fn thresholds_decide_the_verdict() {
        let cfg = VerdictConfig::default();
        assert_eq!(Verdict::from_stats(&stats(3, 0), &cfg), Verdict::Malicious);
        assert_eq!(Verdict::from_stats(&stats(2, 0), &cfg), Verdict::Suspicious);
        assert_eq!(Verdict::from_stats(&stats(0, 1), &cfg), Verdict::Suspicious);
        assert_eq!(Verdict::from_stats(&stats(0, 0), &cfg), Verdict::Clean);
    }

    #[test]
    fn verdict_names_round_trip() {
        for v in Verdict::ALL {
            assert_eq!(v.as_str().parse::<Verdict>().unwrap(), v);
        }
    }
}
