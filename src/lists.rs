//! IOC lists to jobs: parse a list (see [`crate::ingest`]), say per file what was taken and
//! what was not, and queue every indicator once with its provenance (list and line). Used by
//! `vtriage ingest` and by the daemon's lists directory.
//!
//! A list is queued while it is read ([`queue`]): the parser runs on a blocking thread and hands
//! over a batch at a time, so a million-line list is never held whole and parsing overlaps the
//! database's writes.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, UploadPolicy};
use crate::indicator::Kind;
use crate::ingest::{self, Format, Summary};
use crate::stopping::{self, StopAt};
use crate::store::{Enqueued, NewJob, Store, now_millis};
use crate::terminal::escape_control;

/// Indicators handed to the store at a time: the parser fills a batch while the store writes
/// the ones before. How many share a transaction is the store's choice (SQLite: up to
/// `JOBS_PER_TRANSACTION` in `src/store/enqueue.rs`). Not larger: the parser holds a batch, and
/// two more may wait to be written (peak RSS, see BENCHMARKS.md).
const BATCH: usize = 50_000;

/// What one list yielded: its name and what the parser said.
pub struct ParsedList {
    /// The name used in provenance (the path, or "stdin").
    pub source: String,
    /// Counts, duplicates, skips, rejections, warnings.
    pub summary: Summary,
}

/// Why a list was not (wholly) queued.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// The list could not be read; what was read before the error is queued.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The list.
        path: String,
        /// What reading it said.
        source: std::io::Error,
    },
    /// The database refused a batch; queueing the list again is safe (it only adds provenance).
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// Reading stopped part way (shutdown); the batches queued before stay queued.
    #[error("stopped reading {path} part way")]
    Stopped {
        /// The list.
        path: String,
    },
}

impl ListError {
    /// The file is not an IOC list (a binary file): reading it again would not help.
    pub fn is_not_a_list(&self) -> bool {
        matches!(self, ListError::Read { source, .. } if source.kind() == std::io::ErrorKind::InvalidData)
    }
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

/// Parses the list at `path` ("-" is standard input), calling `emit` with the job of each unique
/// indicator in order.
pub fn parse(
    path: &Path,
    format: Option<Format>,
    config: &Config,
    emit: impl FnMut(NewJob),
) -> Result<ParsedList, ListError> {
    parse_until(path, format, config, &CancellationToken::new(), emit)
}

/// [`parse`], which stops reading once `stop` is cancelled ([`ListError::Stopped`]).
fn parse_until(
    path: &Path,
    format: Option<Format>,
    config: &Config,
    stop: &CancellationToken,
    mut emit: impl FnMut(NewJob),
) -> Result<ParsedList, ListError> {
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
    let shared: Arc<str> = source.as_str().into();
    let to_job = |found: ingest::Found| {
        let kind = found.indicator.kind();
        emit(NewJob {
            kind,
            indicator: found.indicator.value(),
            allow_submit: allow_urls && kind == Kind::Url,
            path: None,
            source: Some((shared.clone(), found.line as u32)),
        });
    };
    let summary = if is_stdin {
        let stdin = StopAt::new(std::io::stdin().lock(), stop.clone());
        ingest::parse_reader(&source, stdin, format, &options, to_job)
    } else {
        std::fs::File::open(path).and_then(|file| {
            let file = StopAt::new(file, stop.clone());
            ingest::parse_reader(&ingest::list_name(path), file, format, &options, to_job)
        })
    };
    match summary {
        Ok(summary) => Ok(ParsedList { source, summary }),
        Err(e) if stopping::is_stopped(&e) => Err(ListError::Stopped { path: source }),
        Err(e) => Err(ListError::Read {
            path: source,
            source: e,
        }),
    }
}

/// One list, parsed and queued.
pub struct QueuedList {
    /// Its name and what the parser said.
    pub list: ParsedList,
    /// The job of every indicator taken, in list order.
    pub ids: Vec<i64>,
    /// What queueing did.
    pub counts: Queued,
}

/// Parses the list at `path` and queues its indicators while it reads, [`BATCH`] at a time.
/// Once `stop` is cancelled, reading stops at the next block ([`ListError::Stopped`]): the
/// batches queued before stay queued, and the list should be read again whole later.
pub async fn queue(
    store: &dyn Store,
    path: &Path,
    format: Option<Format>,
    config: &Config,
    stop: &CancellationToken,
) -> Result<QueuedList, ListError> {
    queue_counting(store, path, format, config, Arc::default(), stop).await
}

/// [`queue`], counting in `read` the indicators read so far (for a progress display).
pub async fn queue_counting(
    store: &dyn Store,
    path: &Path,
    format: Option<Format>,
    config: &Config,
    read: Arc<AtomicU64>,
    stop: &CancellationToken,
) -> Result<QueuedList, ListError> {
    // The parser fills a batch while the store writes the one before (and one more may wait).
    let (tx, rx) = mpsc::channel::<Vec<NewJob>>(1);
    let parser = {
        let (path, config, stop) = (path.to_owned(), config.clone(), stop.clone());
        let read = read.clone();
        tokio::task::spawn_blocking(move || {
            let mut batch = Vec::with_capacity(BATCH);
            let hand_over = |full: Vec<NewJob>| {
                // Once stopped, the rest is only read to its end (a JSON document, read whole
                // before the stop, is parsed to its end), not queued. Sending fails once the
                // store gave up: the rest of the list is then only read, too.
                if !stop.is_cancelled() {
                    let _ = tx.blocking_send(full);
                }
            };
            let parsed = parse_until(&path, format, &config, &stop, |job| {
                read.fetch_add(1, Ordering::Relaxed);
                batch.push(job);
                if batch.len() == BATCH {
                    hand_over(std::mem::replace(&mut batch, Vec::with_capacity(BATCH)));
                }
            });
            if !batch.is_empty() {
                hand_over(batch);
            }
            parsed
        })
    };
    // Dropping the receiver (the store gave up) lets the parser finish.
    let (max_age, max_attempts) = (config.verdict.max_age_ms(), config.daemon.max_attempts);
    let stored = store
        .enqueue_batches(rx, now_millis(), max_age, max_attempts, stop)
        .await;
    let parsed = parser.await.map_err(|e| ListError::Read {
        path: path.display().to_string(),
        source: std::io::Error::other(e),
    })?;
    let mut ids = Vec::new();
    let mut counts = Queued::default();
    counts.add_all(stored?, &mut ids);
    // A stop cuts the list short in the parser or in the store: it is whole only if every
    // indicator read was queued.
    let whole = parsed.is_ok() && ids.len() as u64 == read.load(Ordering::Relaxed);
    if stop.is_cancelled() && !whole {
        return Err(ListError::Stopped {
            path: path.display().to_string(),
        });
    }
    Ok(QueuedList {
        list: parsed?,
        ids,
        counts,
    })
}

/// The per-file summary: counts by type, duplicates, skipped, rejected (the first few, or all
/// with `verbose`), and warnings.
pub fn describe(list: &ParsedList, verbose: bool) -> String {
    let s = &list.summary;
    // The list's name and what it contains come from outside: escaped for the terminal.
    let source = escape_control(&list.source);
    let found: Vec<String> = s.found.iter().map(|(t, n)| format!("{n} {t}")).collect();
    let skipped: Vec<String> = s
        .skipped
        .iter()
        .map(|(why, n)| format!("{n} {why}"))
        .collect();
    let mut out = format!(
        "{}: {}{}; {} duplicates; {} skipped{}; {} rejected\n",
        source,
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
        out += &format!("  warning: {source}: {}\n", escape_control(w));
    }
    let shown = if verbose {
        s.rejected.len()
    } else {
        s.rejected.len().min(crate::ingest::sink::LINES_NAMED)
    };
    for r in &s.rejected[..shown] {
        // A line too long to keep has no excerpt.
        let excerpt = match r.excerpt.is_empty() {
            true => String::new(),
            false => format!(" ({})", r.excerpt),
        };
        out += &format!(
            "  rejected {source}:{}: {}{excerpt}\n",
            r.line,
            escape_control(&r.reason),
        );
    }
    if shown < s.rejected.len() {
        out += &format!(
            "  ... {} more rejected lines (--verbose-rejects lists them all)\n",
            s.rejected.len() - shown
        );
    }
    out
}

/// Writes the dry-run line of one job.
pub fn print_dry_run(job: &NewJob, json: bool, out: &mut impl Write) -> std::io::Result<()> {
    let Some(indicator) = crate::indicator::Indicator::from_stored(job.kind, &job.indicator) else {
        return Ok(());
    };
    let (source, line) = job
        .source
        .as_ref()
        .map_or(("", 0), |(source, line)| (&**source, *line));
    let line = DryRunLine {
        kind: indicator.type_name(),
        value: job.indicator.clone(),
        source: format!("{source}:{line}"),
    };
    if json {
        serde_json::to_writer(&mut *out, &line)?;
        writeln!(out)
    } else {
        writeln!(
            out,
            "{:<7} {} {}",
            line.kind,
            escape_control(&line.value),
            escape_control(&line.source)
        )
    }
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

impl Queued {
    /// Counts what enqueueing each job did, and adds its id to `ids`.
    fn add_all(&mut self, queued: Vec<(i64, Enqueued)>, ids: &mut Vec<i64>) {
        ids.reserve(queued.len());
        for (id, outcome) in queued {
            ids.push(id);
            match outcome {
                Enqueued::New => self.new += 1,
                Enqueued::Queued => self.queued += 1,
                Enqueued::Fresh => self.fresh += 1,
                Enqueued::Reopened => self.reopened += 1,
            }
        }
    }

    /// Adds the counts of another list.
    pub fn add(&mut self, other: Queued) {
        self.new += other.new;
        self.queued += other.queued;
        self.fresh += other.fresh;
        self.reopened += other.reopened;
    }
}

/// Queues `jobs` in batches; returns the job ids and the counts.
pub async fn enqueue(
    store: &dyn Store,
    jobs: &[NewJob],
    config: &Config,
) -> Result<(Vec<i64>, Queued), crate::store::Error> {
    let mut ids = Vec::with_capacity(jobs.len());
    let mut counts = Queued::default();
    for chunk in jobs.chunks(BATCH) {
        let queued = store
            .enqueue(
                chunk,
                now_millis(),
                config.verdict.max_age_ms(),
                config.daemon.max_attempts,
            )
            .await?;
        counts.add_all(queued, &mut ids);
    }
    Ok((ids, counts))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counter a progress display reads ends at the number of indicators queued.
    #[tokio::test]
    async fn the_progress_counter_counts_every_indicator_taken() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("iocs.txt");
        std::fs::write(
            &list,
            "evil.example.com\n8.8.8.8\nevil[.]example[.]com\nnot an ioc\n",
        )
        .unwrap();
        let store = crate::store::sqlite::SqliteStore::open(&dir.path().join("q.db"))
            .await
            .unwrap();
        let read = Arc::new(AtomicU64::new(0));
        let stop = CancellationToken::new();
        let queued = queue_counting(&store, &list, None, &Config::default(), read.clone(), &stop)
            .await
            .unwrap();
        assert_eq!(queued.ids.len(), 2, "the repeated domain is one indicator");
        assert_eq!(read.load(Ordering::Relaxed), 2);
    }

    /// A rejected line is shown with its excerpt; one too long to keep, without empty brackets.
    #[test]
    fn rejected_lines_are_shown_with_their_excerpt_if_any() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("iocs.txt");
        let long = "x".repeat(crate::ingest::MAX_LINE + 1);
        std::fs::write(&list, format!("readme.txt\n{long}\n")).unwrap();
        let parsed = parse(&list, None, &Config::default(), |_| {}).unwrap();
        let text = describe(&parsed, false);
        let source = list.display();
        assert!(
            text.contains(&format!(
                "rejected {source}:1: not an indicator (readme.txt)\n"
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!("rejected {source}:2: line too long\n")),
            "{text}"
        );
    }
}
