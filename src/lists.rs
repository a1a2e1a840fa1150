//! IOC lists to jobs: parse a list (see [`crate::ingest`]), say per file what was taken and
//! what was not, and queue every indicator once with its provenance (list and line). Used by
//! `vtriage ingest` and by the daemon's lists directory.

use std::io::Write;
use std::path::Path;

use serde::Serialize;

use crate::config::{Config, UploadPolicy};
use crate::indicator::Kind;
use crate::ingest::{self, Format, Summary};
use crate::store::{Enqueued, NewJob, Store, now_millis};

/// Indicators queued per transaction. Large: each commit writes every index page it touched to
/// the WAL, and indicators land all over the indexes (2,000 per transaction made a
/// 200,000-line ingest take twice as long). The price: workers wait to write while a batch
/// commits, about a second here.
const BATCH: usize = 25_000;

/// One parsed list: its jobs and what the parser said.
pub struct ParsedList {
    /// The name used in provenance (the path, or "stdin").
    pub source: String,
    /// One job per unique indicator.
    pub jobs: Vec<NewJob>,
    /// Counts, duplicates, skips, rejections, warnings.
    pub summary: Summary,
}

/// The `ingest --dry-run --json` line of one indicator.
#[derive(Debug, Serialize)]
pub struct DryRunLine<'a> {
    /// md5, sha1, sha256, url, domain, ipv4 or ipv6.
    #[serde(rename = "type")]
    pub kind: &'a str,
    /// The normalised value.
    pub value: String,
    /// `file:line`.
    pub source: String,
}

/// Parses the list at `path` ("-" is standard input).
pub fn parse(path: &Path, format: Option<Format>, config: &Config) -> std::io::Result<ParsedList> {
    let options = ingest::Options {
        skip_private_ips: config.ingest.skip_private_ips,
    };
    let allow_urls = config.upload.urls == UploadPolicy::Unknown;
    let is_stdin = path == Path::new("-");
    let source = if is_stdin {
        "stdin".to_string()
    } else {
        path.display().to_string()
    };
    let mut jobs = Vec::new();
    let emit = |found: ingest::Found| {
        let kind = found.indicator.kind();
        jobs.push(NewJob {
            kind,
            indicator: found.indicator.value(),
            allow_submit: allow_urls && kind == Kind::Url,
            path: None,
            source: Some((source.clone(), found.line as u32)),
        });
    };
    let summary = if is_stdin {
        ingest::parse_reader(&source, std::io::stdin().lock(), format, &options, emit)?
    } else {
        ingest::parse_path(path, format, &options, emit)?
    };
    Ok(ParsedList {
        source,
        jobs,
        summary,
    })
}

/// The per-file summary: counts by type, duplicates, skipped, rejected (the first few, or all
/// with `verbose`), and warnings.
pub fn describe(list: &ParsedList, verbose: bool) -> String {
    let s = &list.summary;
    let found: Vec<String> = s.found.iter().map(|(t, n)| format!("{n} {t}")).collect();
    let skipped: Vec<String> = s
        .skipped
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    let mut out = format!(
        "{}: {}{}; {} duplicates; {} skipped{}; {} rejected\n",
        list.source,
        if found.is_empty() {
            "no indicators".to_string()
        } else {
            found.join(", ")
        },
        s.format.map(|f| format!(" (as {f})")).unwrap_or_default(),
        s.duplicates,
        s.skipped.values().sum::<usize>(),
        if skipped.is_empty() {
            String::new()
        } else {
            format!(" ({})", skipped.join(", "))
        },
        s.rejected.len(),
    );
    for w in &s.warnings {
        out += &format!("  warning: {}: {w}\n", list.source);
    }
    let shown = if verbose {
        s.rejected.len()
    } else {
        s.rejected.len().min(5)
    };
    for r in &s.rejected[..shown] {
        out += &format!(
            "  rejected {}:{}: {} ({})\n",
            list.source, r.line, r.reason, r.excerpt
        );
    }
    if shown < s.rejected.len() {
        out += &format!(
            "  ... {} more rejected lines (--verbose lists them all)\n",
            s.rejected.len() - shown
        );
    }
    out
}

/// Writes one dry-run line per indicator.
pub fn print_dry_run(list: &ParsedList, json: bool, out: &mut impl Write) -> std::io::Result<()> {
    for job in &list.jobs {
        let Some(indicator) = crate::indicator::Indicator::from_stored(job.kind, &job.indicator)
        else {
            continue;
        };
        let (source, line) = job.source.clone().unwrap_or_default();
        let line = DryRunLine {
            kind: indicator.type_name(),
            value: job.indicator.clone(),
            source: format!("{source}:{line}"),
        };
        if json {
            serde_json::to_writer(&mut *out, &line)?;
            writeln!(out)?;
        } else {
            writeln!(out, "{:<7} {} {}", line.kind, line.value, line.source)?;
        }
    }
    Ok(())
}

/// What queueing a list did.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Queued {
    /// New jobs.
    pub new: usize,
    /// Already queued or running.
    pub queued: usize,
    /// Answered by a fresh stored verdict: no request needed.
    pub fresh: usize,
    /// Finished before but stale: queued again.
    pub reopened: usize,
}

/// Queues the jobs of a list in batches; returns the job ids and the counts.
pub async fn enqueue(
    store: &dyn Store,
    jobs: &[NewJob],
    config: &Config,
) -> Result<(Vec<i64>, Queued), crate::store::Error> {
    let max_age = (config.verdict.max_age_days * 86_400_000.0) as i64;
    let mut ids = Vec::with_capacity(jobs.len());
    let mut counts = Queued::default();
    for chunk in jobs.chunks(BATCH) {
        for (id, outcome) in store
            .enqueue(chunk, now_millis(), max_age, config.daemon.max_attempts)
            .await?
        {
            ids.push(id);
            match outcome {
                Enqueued::New => counts.new += 1,
                Enqueued::Queued => counts.queued += 1,
                Enqueued::Fresh => counts.fresh += 1,
                Enqueued::Reopened => counts.reopened += 1,
            }
        }
    }
    Ok((ids, counts))
}
