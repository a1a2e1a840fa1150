//! On-demand triage: `vtriage lookup IOC...` (triage these indicators now and print them like
//! `report`) and `vtriage recheck` (queue finished verdicts for another look).
//!
//! Both go through the queue like everything else, so a stored fresh verdict costs no request,
//! duplicates are asked once, and the quota is shared with any daemon using the same database.
//! This module parses command-line indicators and drives the pipeline; it does not talk to
//! VirusTotal itself (the workers do).

use std::collections::HashMap;
use std::io;

use clap::Args;
use futures_util::TryStreamExt;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::indicator::{Indicator, Kind};
use crate::ingest::{self, Classified, SkipReason};
use crate::pipeline::{Interrupted, Pipeline};
use crate::report::{self, Filter, Format, Written};
use crate::store::{Enqueued, NewJob, ReportQuery, Store, now_millis};
use crate::terminal::escape_control;
use crate::verdict::Verdict;

/// The source recorded for indicators given on the command line.
pub const COMMAND_LINE: &str = "command line";

/// `vtriage lookup`
#[derive(Debug, Clone, Args)]
pub struct LookupArgs {
    /// Indicators: MD5/SHA-1/SHA-256 hashes, URLs, domains, IP addresses (defanged forms such
    /// as hxxp://evil[.]example are accepted)
    #[arg(required = true, value_name = "IOC")]
    pub iocs: Vec<String>,
    /// Output format [default: table on a terminal, else jsonl]
    #[arg(long, short = 'f', value_enum)]
    pub format: Option<Format>,
}

/// An argument that is not an indicator vtriage can look up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{arg:?} {why}")]
pub struct Rejected {
    /// The argument as given.
    pub arg: String,
    /// Why it cannot be looked up.
    pub why: String,
}

/// Parses command-line indicators (refanged first). Every argument must be one: a typo is
/// reported before anything is spent, instead of silently dropped.
pub fn parse_iocs(
    args: &[String],
    opts: &ingest::Options,
) -> Result<Vec<Indicator>, Vec<Rejected>> {
    let mut found = Vec::new();
    let mut rejected = Vec::new();
    for arg in args {
        let token = ingest::refang(arg.trim());
        match ingest::classify(&token, opts) {
            Classified::Indicator(i) => {
                if !found.contains(&i) {
                    found.push(i);
                }
            }
            Classified::Skip(reason) => rejected.push(Rejected {
                arg: arg.clone(),
                why: not_looked_up(reason).into(),
            }),
            Classified::NotAnIndicator => rejected.push(Rejected {
                arg: arg.clone(),
                why: "is not a hash, URL, domain or IP address".into(),
            }),
        }
    }
    if rejected.is_empty() {
        Ok(found)
    } else {
        Err(rejected)
    }
}

/// Why an indicator the parser skips is not looked up, naming the setting when one decides it.
fn not_looked_up(reason: SkipReason) -> &'static str {
    match reason {
        SkipReason::PrivateIp => {
            "is a private, loopback or reserved address: not looked up while [ingest] \
             skip_private_ips = true (set it to false, or VTRIAGE_INGEST_SKIP_PRIVATE_IPS=false, \
             to look it up)"
        }
        SkipReason::Email => "is an e-mail address: VirusTotal has no e-mail lookup",
        SkipReason::Cidr => "is an address range: VirusTotal looks up single addresses only",
        SkipReason::Duplicate => "is given twice",
        SkipReason::Reference => "is a link to a report, not an indicator",
    }
}

/// What a lookup did.
#[derive(Debug)]
pub struct LookupOutcome {
    /// The jobs of the indicators, in the order given.
    pub ids: Vec<i64>,
    /// How each was queued (`Fresh`: a stored verdict was reused without a request).
    pub enqueued: Vec<Enqueued>,
    /// Why the run stopped early, if it did.
    pub interrupted: Option<String>,
}

/// Triages `indicators` now: queue them (source `command line`), work the queue until each has
/// a verdict, shut the pipeline's workers down.
pub async fn lookup(
    pipeline: &Pipeline,
    indicators: &[Indicator],
) -> anyhow::Result<LookupOutcome> {
    let submit_urls = pipeline.config.upload.urls == crate::config::UploadPolicy::Unknown;
    let jobs: Vec<NewJob> = indicators
        .iter()
        .map(|i| NewJob {
            kind: i.kind(),
            indicator: i.value(),
            allow_submit: submit_urls && i.kind() == crate::indicator::Kind::Url,
            path: None,
            source: Some((COMMAND_LINE.into(), 0)),
        })
        .collect();
    let max_age = pipeline.config.verdict.max_age_ms();
    let queued = pipeline
        .store
        .enqueue(
            &jobs,
            now_millis(),
            max_age,
            pipeline.config.daemon.max_attempts,
        )
        .await?;
    let ids: Vec<i64> = queued.iter().map(|(id, _)| *id).collect();
    let enqueued = queued.iter().map(|(_, e)| *e).collect();
    let interrupted = work(pipeline, &ids).await;
    Ok(LookupOutcome {
        ids,
        enqueued,
        interrupted,
    })
}

/// Works the queue until none of `ids` is unfinished, then shuts the pipeline down (it cannot
/// be used again). Returns why it stopped early, if it did.
pub async fn work(pipeline: &Pipeline, ids: &[i64]) -> Option<String> {
    pipeline.spawn_workers_for(ids).await;
    let drained = crate::progress::drain_showing_progress(pipeline, ids).await;
    pipeline.shutdown().await;
    match drained {
        Ok(()) => None,
        Err(Interrupted::Shutdown) => {
            Some("interrupted; unfinished indicators stay queued for the next run".into())
        }
        Err(e) => Some(e.to_string()),
    }
}

/// Exit status like `scan`'s: 2 when something was left without a verdict (the run was
/// interrupted, a verdict `failed` or `pending`), else 1 when something is malicious, else 0.
pub fn exit_code(interrupted: bool, written: &Written) -> i32 {
    if interrupted || written.count(Verdict::Failed) + written.count(Verdict::Pending) > 0 {
        2
    } else if written.count(Verdict::Malicious) > 0 {
        1
    } else {
        0
    }
}

/// Runs `vtriage lookup`; returns the exit code. `stop` is the shutdown signal.
pub async fn run(
    args: &LookupArgs,
    config: Config,
    stop: CancellationToken,
) -> anyhow::Result<i32> {
    let opts = ingest::Options::from(&config.ingest);
    let indicators = parse_iocs(&args.iocs, &opts).map_err(|rejected| {
        let lines: Vec<String> = rejected.iter().map(|r| r.to_string()).collect();
        anyhow::anyhow!("nothing was looked up:\n  {}", lines.join("\n  "))
    })?;
    let pipeline = Pipeline::open(config, stop).await?;
    let outcome = lookup(&pipeline, &indicators).await?;
    let format = args.format.unwrap_or_else(Format::default_for_stdout);
    let out = io::BufWriter::new(io::stdout());
    // In the order given (the store gives them in job order): a few indicators, held at once.
    let mut records: Vec<report::Record> =
        report::records_of_jobs(&*pipeline.store, &outcome.ids, format)
            .try_collect()
            .await?;
    let mut given = HashMap::new();
    for (i, id) in outcome.ids.iter().enumerate() {
        given.entry(*id).or_insert(i);
    }
    records.sort_by_key(|r| given.get(&r.job_id).copied());
    let written = report::write(
        futures_util::stream::iter(records.into_iter().map(Ok)),
        format,
        out,
    )
    .await;
    let written = match written {
        Ok(w) => w,
        Err(report::Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Written::default(),
        Err(e) => return Err(e.into()),
    };
    if let Some(why) = &outcome.interrupted {
        eprintln!("vtriage: stopped early: {}", escape_control(why));
    }
    Ok(exit_code(outcome.interrupted.is_some(), &written))
}

/// `vtriage recheck`
// clap makes `--help` of these doc comments, where `[verdict]` is a configuration section.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Clone, Args)]
pub struct RecheckArgs {
    /// Only verdicts older than this (a duration: 12h, 7d, 2w) [default: [verdict] max_age_days]
    #[arg(long, value_name = "DURATION")]
    pub older_than: Option<String>,
    /// Only these verdicts (comma-separated), e.g. unknown,pending,suspicious [default: all]
    #[arg(long, value_name = "LIST")]
    pub verdict: Vec<String>,
    /// Only these kinds (comma-separated): file, hash, url, domain, ip [default: all]
    #[arg(long, value_name = "LIST")]
    pub kind: Vec<String>,
    /// Work the queue until the re-checks are done, those an earlier recheck queued included
    /// (otherwise a running daemon, or the next scan or lookup, does them)
    #[arg(long)]
    pub wait: bool,
}

/// What `recheck` selects.
#[derive(Debug, Clone)]
pub struct Recheck {
    /// Only these verdicts (all when empty).
    pub verdicts: Vec<Verdict>,
    /// Only these kinds (all when empty).
    pub kinds: Vec<Kind>,
    /// Only verdicts checked before this time.
    pub older_than: crate::store::Millis,
}

impl RecheckArgs {
    /// The selection these arguments describe, at `now`.
    pub fn selection(
        &self,
        config: &Config,
        now: crate::store::Millis,
    ) -> Result<Recheck, report::Error> {
        let age = match &self.older_than {
            Some(d) => report::parse_duration(d)?,
            None => config.verdict.max_age_ms(),
        };
        Ok(Recheck {
            verdicts: report::parse_list(&self.verdict)?,
            kinds: report::parse_list(&self.kind)?,
            older_than: now - age,
        })
    }
}

/// What [`reopen`] queued.
#[derive(Debug, Default)]
pub struct Rechecks {
    /// Finished verdicts queued for a re-check now.
    pub reopened: u64,
    /// Verdicts of the selection queued for a re-check before (by a `recheck` without `--wait`)
    /// and not re-checked yet. Counted only when the jobs are listed.
    pub queued_before: u64,
    /// When listed: the jobs of both, to wait for.
    pub ids: Vec<i64>,
}

impl Rechecks {
    /// What `recheck` says it queued (and, with `--wait`, what else it waits for).
    pub fn message(&self) -> String {
        let n = self.reopened;
        let s = if n == 1 { "" } else { "s" };
        let mut said = format!("{n} verdict{s} queued for a re-check");
        if self.queued_before > 0 {
            said += &format!(
                "; {} queued before and not re-checked yet: waiting for {} too",
                self.queued_before,
                if self.queued_before == 1 {
                    "it"
                } else {
                    "them"
                }
            );
        }
        said
    }
}

/// Queues the selected finished jobs again. When `list` is set, also lists their ids and those
/// of the selection already queued again, to wait for them all.
pub async fn reopen(
    store: &dyn Store,
    selection: &Recheck,
    list: bool,
) -> Result<Rechecks, report::Error> {
    use futures_util::TryStreamExt;
    // Read before reopening: afterwards the jobs reopened now cannot be told from those
    // reopened before. A verdict checked before the cutoff whose job is unfinished was queued
    // for another look already, and is not redone yet.
    let listed: Vec<(i64, bool)> = if list {
        let filter = Filter {
            query: ReportQuery {
                verdicts: selection.verdicts.clone(),
                kinds: selection.kinds.clone(),
                until: Some(selection.older_than),
                ..ReportQuery::default()
            },
            path: None,
        };
        report::records(store, &filter)
            .map_ok(|r| {
                let finished = matches!(r.state.as_str(), "completed" | "discarded");
                (r.job_id, !finished)
            })
            .try_collect()
            .await?
    } else {
        Vec::new()
    };
    let reopened = store
        .recheck(
            &selection.verdicts,
            &selection.kinds,
            selection.older_than,
            now_millis(),
        )
        .await?;
    Ok(Rechecks {
        reopened,
        queued_before: listed.iter().filter(|(_, queued)| *queued).count() as u64,
        ids: listed.into_iter().map(|(id, _)| id).collect(),
    })
}

/// Runs `vtriage recheck`; returns the exit code. Without `--wait` it needs no API key: it only
/// changes the queue.
pub async fn run_recheck(
    args: &RecheckArgs,
    config: Config,
    stop: CancellationToken,
) -> anyhow::Result<i32> {
    let selection = args.selection(&config, now_millis())?;
    crate::pipeline::require_database(&config)?;
    if !args.wait {
        let store = crate::pipeline::open_store(&config).await?;
        let queued = reopen(&*store, &selection, false).await?;
        println!("{}", queued.message());
        return Ok(0);
    }
    let pipeline = Pipeline::open(config, stop).await?;
    let queued = reopen(&*pipeline.store, &selection, true).await?;
    println!("{}", queued.message());
    if queued.ids.is_empty() {
        pipeline.shutdown().await;
        return Ok(0);
    }
    match work(&pipeline, &queued.ids).await {
        None => {
            let n = queued.ids.len();
            println!("re-checked {n}; see `vtriage report --sort checked_at`");
            Ok(0)
        }
        Some(why) => {
            eprintln!("vtriage: stopped early: {}", escape_control(&why));
            Ok(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skipped_indicator_is_told_why_and_by_which_setting() {
        let args = vec!["10.0.0.1".to_string(), "8.8.8.8".to_string()];
        let rejected = parse_iocs(&args, &ingest::Options::default()).unwrap_err();
        let said: Vec<String> = rejected.iter().map(|r| r.to_string()).collect();
        assert_eq!(
            said,
            [
                "\"10.0.0.1\" is a private, loopback or reserved address: not looked up while \
                 [ingest] skip_private_ips = true (set it to false, or \
                 VTRIAGE_INGEST_SKIP_PRIVATE_IPS=false, to look it up)"
            ]
        );
        let rejected = parse_iocs(&["a@evil.example.com".into()], &ingest::Options::default());
        assert_eq!(
            rejected.unwrap_err()[0].why,
            "is an e-mail address: VirusTotal has no e-mail lookup"
        );
    }

    #[test]
    fn recheck_says_what_it_queued_and_what_it_waits_for_besides() {
        let said = |reopened, queued_before| {
            Rechecks {
                reopened,
                queued_before,
                ids: Vec::new(),
            }
            .message()
        };
        assert_eq!(said(1, 0), "1 verdict queued for a re-check");
        assert_eq!(said(12, 0), "12 verdicts queued for a re-check");
        assert_eq!(
            said(0, 12),
            "0 verdicts queued for a re-check; 12 queued before and not re-checked yet: \
             waiting for them too"
        );
        assert_eq!(
            said(2, 1),
            "2 verdicts queued for a re-check; 1 queued before and not re-checked yet: \
             waiting for it too"
        );
    }
}
