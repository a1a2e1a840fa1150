//! `vtriage sim`: the simulator's command-line arguments and the runner `main` calls.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;

use super::{Faults, Known, SimConfig, SimQuota};
use crate::config::{ApiKey, secs};

/// An analysis duration range in seconds: `MIN` or `MIN,MAX` (fractions allowed).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SecsRange(pub Duration, pub Duration);

impl FromStr for SecsRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let parse = |t: &str| {
            t.trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v >= 0.0)
                .ok_or_else(|| format!("{t:?} is not a number of seconds"))
        };
        let (lo, hi) = match s.split_once(',') {
            Some((a, b)) => (parse(a)?, parse(b)?),
            None => (parse(s)?, parse(s)?),
        };
        if lo > hi {
            return Err(format!("MIN ({lo}) is larger than MAX ({hi})"));
        }
        Ok(SecsRange(secs(lo), secs(hi)))
    }
}

fn parse_key(s: &str) -> Result<ApiKey, String> {
    if s.is_empty() {
        Err("a key cannot be empty".into())
    } else {
        Ok(ApiKey::new(s))
    }
}

/// `vtriage sim`: serve a VirusTotal v3 simulator.
#[derive(clap::Args, Debug)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8765")]
    pub listen: SocketAddr,
    /// A valid API key (repeatable); without any, every non-empty key is valid.
    #[arg(long = "key", value_parser = parse_key)]
    pub keys: Vec<ApiKey>,
    /// A key that may also use premium endpoints such as downloads (repeatable).
    #[arg(long = "premium-key", value_parser = parse_key)]
    pub premium_keys: Vec<ApiKey>,
    /// Per key: at most this many API requests per window (default: unlimited).
    #[arg(long)]
    pub quota_requests: Option<u32>,
    /// The sliding quota window, in seconds (fractions allowed).
    #[arg(long, default_value_t = 60.0)]
    pub quota_window_secs: f64,
    /// Per key: at most this many API requests per UTC day.
    #[arg(long)]
    pub quota_daily: Option<u32>,
    /// Per key: at most this many API requests per UTC calendar month.
    #[arg(long)]
    pub quota_monthly: Option<u32>,
    /// How long an analysis takes: MIN or MIN,MAX seconds (fractions allowed).
    #[arg(long, default_value = "0.2,0.5")]
    pub analysis_secs: SecsRange,
    /// Preloaded objects: a JSON file (format in the `sim::known` documentation).
    #[arg(long)]
    pub known: Option<PathBuf>,
    /// Fraction (0 to 1) of API requests that fail in one of the simulated ways.
    #[arg(long, default_value_t = 0.0)]
    pub fault_rate: f64,
    /// Delay of a "latency" fault, in seconds.
    #[arg(long, default_value_t = 1.0)]
    pub fault_latency_secs: f64,
    /// Seed of every random choice.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl SimArgs {
    /// The simulator configuration these arguments describe.
    pub fn to_config(&self) -> anyhow::Result<SimConfig> {
        if !(0.0..=1.0).contains(&self.fault_rate) {
            anyhow::bail!("--fault-rate must be between 0 and 1");
        }
        if self.quota_window_secs <= 0.0 {
            anyhow::bail!("--quota-window-secs must be positive");
        }
        let quota = match (self.quota_requests, self.quota_daily, self.quota_monthly) {
            (None, None, None) => None,
            (requests, daily, monthly) => Some(SimQuota {
                requests: requests.unwrap_or(u32::MAX),
                window: secs(self.quota_window_secs),
                daily,
                monthly,
            }),
        };
        let known = match &self.known {
            Some(path) => Known::load(path)?,
            None => Known::default(),
        };
        Ok(SimConfig {
            api_keys: self.keys.iter().map(|k| k.expose().to_owned()).collect(),
            premium_keys: self
                .premium_keys
                .iter()
                .map(|k| k.expose().to_owned())
                .collect(),
            quota,
            analysis_delay: (self.analysis_secs.0, self.analysis_secs.1),
            known,
            faults: Faults {
                rate: self.fault_rate,
                latency: secs(self.fault_latency_secs),
            },
            seed: self.seed,
        })
    }
}

/// Runs `vtriage sim`: prints `listening on http://ADDR/api/v3`, then serves until `shutdown`.
pub async fn run(
    args: SimArgs,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let config = args.to_config()?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let addr = listener.local_addr()?;
    println!("listening on {}/api/v3", super::http::origin(addr));
    super::serve(listener, config, shutdown)
        .await
        .context("simulator failed")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[derive(clap::Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn arguments_build_a_config_with_fractional_seconds() {
        let cli = Cli::try_parse_from([
            "sim",
            "--key",
            "k1",
            "--key",
            "k2",
            "--premium-key",
            "p",
            "--quota-requests",
            "4",
            "--quota-window-secs",
            "0.5",
            "--analysis-secs",
            "0.1,0.3",
            "--fault-rate",
            "0.25",
        ])
        .unwrap();
        let c = cli.sim.to_config().unwrap();
        assert_eq!(c.api_keys, ["k1", "k2"]);
        assert_eq!(c.premium_keys, ["p"]);
        let q = c.quota.unwrap();
        assert_eq!(
            (q.requests, q.window, q.daily),
            (4, Duration::from_millis(500), None)
        );
        assert_eq!(
            c.analysis_delay,
            (Duration::from_millis(100), Duration::from_millis(300))
        );
        assert_eq!(c.faults.rate, 0.25);
        // Keys never show in debug output.
        assert!(!format!("{cli:?}").contains("k1"));
        assert!(!format!("{c:?}").contains("k1"));
    }

    #[test]
    fn a_single_analysis_duration_is_both_bounds_and_inverted_ranges_are_refused() {
        assert_eq!(
            "2".parse::<SecsRange>().unwrap(),
            SecsRange(Duration::from_secs(2), Duration::from_secs(2))
        );
        assert!("3,1".parse::<SecsRange>().is_err());
        assert!("x".parse::<SecsRange>().is_err());
    }

    #[test]
    fn a_daily_or_monthly_cap_alone_still_makes_a_quota() {
        let cli = Cli::try_parse_from(["sim", "--quota-daily", "500"]).unwrap();
        let q = cli.sim.to_config().unwrap().quota.unwrap();
        assert_eq!((q.daily, q.monthly), (Some(500), None));
        assert_eq!(q.requests, u32::MAX);
        let cli = Cli::try_parse_from(["sim", "--quota-monthly", "15500"]).unwrap();
        let q = cli.sim.to_config().unwrap().quota.unwrap();
        assert_eq!((q.daily, q.monthly), (None, Some(15_500)));
    }
}
