//! `vtriage report`: the verdicts in the database, filtered, sorted and written as a table,
//! JSON, JSON lines, CSV or a STIX 2.1 bundle.
//!
//! This module owns the report record (the field list every format shares), the parsing of the
//! report filters (`--since 7d`, `--verdict malicious,suspicious`, ...) and the writers. It reads
//! the store only through [`Store::report`] and [`Store::raw_object`] and never writes to it.
//!
//! Reports stream: each row is turned into a [`Record`] and written as soon as the database
//! yields it, so a database of a million verdicts reports in constant memory (SQLite itself
//! sorts on disk when it has to).

mod command;
pub mod stix;

pub use command::{ReportArgs, finish_output, run};

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::io::{self, IsTerminal, Write};
use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, SecondsFormat, TimeZone, Utc};
use clap::ValueEnum;
use futures_util::stream::{BoxStream, Stream, StreamExt};
use serde::Serialize;

use crate::indicator::{FileHash, HashAlgo, Kind};
use crate::store::{self, Millis, ReportQuery, ReportRow, ReportSort, Store};
use crate::terminal::escape_control;
use crate::verdict::{Verdict, VerdictRecord};

/// Why a report could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database could not be read.
    #[error("cannot read the database: {0}")]
    Store(#[from] store::Error),
    /// The output could not be written (a closed pipe, a full disk).
    #[error("cannot write the report: {0}")]
    Io(#[from] io::Error),
    /// A CSV record could not be written.
    #[error("cannot write CSV: {0}")]
    Csv(#[from] csv::Error),
    /// A filter was given in a form that cannot be understood.
    #[error("{0}")]
    BadFilter(String),
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text, readable at 80 columns but for long indicators, which are never cut (the
    /// default on a terminal).
    Table,
    /// One JSON array.
    Json,
    /// One JSON object per line (the default when the output is not a terminal).
    Jsonl,
    /// RFC 4180 CSV with a header row (a cell that starts like a formula gets a `'` in front)
    Csv,
    /// A STIX 2.1 bundle of `indicator` objects, for MISP, OpenCTI and other sharing platforms
    /// (only malicious and suspicious verdicts, unless report's --verdict says otherwise)
    Stix,
}

impl Format {
    /// The verdicts a report in this format holds when no `--verdict` says: every one, but for
    /// STIX. A threat-intel platform takes every STIX indicator for something to detect: a clean
    /// address would be flagged, and a local file VirusTotal never saw revealed.
    pub fn default_verdicts(self) -> Vec<Verdict> {
        match self {
            Format::Stix => vec![Verdict::Malicious, Verdict::Suspicious],
            _ => Vec::new(),
        }
    }

    /// A table for people, JSON lines for programs.
    pub fn default_for_stdout() -> Format {
        if io::stdout().is_terminal() {
            Format::Table
        } else {
            Format::Jsonl
        }
    }
}

/// A `--sort` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SortKey {
    /// In the order vtriage first saw the indicators (the default).
    #[value(name = "first_seen", alias = "first-seen")]
    FirstSeen,
    /// Most recently checked first.
    #[value(name = "checked_at", alias = "checked-at")]
    CheckedAt,
    /// Most alarming verdict first, then most detections.
    Verdict,
    /// Alphabetically by indicator.
    Indicator,
    /// Most engines flagging it malicious first.
    Malicious,
    /// By kind: file, hash, url, domain, ip.
    Kind,
}

impl From<SortKey> for ReportSort {
    fn from(key: SortKey) -> ReportSort {
        match key {
            SortKey::FirstSeen => ReportSort::FirstSeen,
            SortKey::CheckedAt => ReportSort::CheckedAt,
            SortKey::Verdict => ReportSort::Verdict,
            SortKey::Indicator => ReportSort::Indicator,
            SortKey::Malicious => ReportSort::Malicious,
            SortKey::Kind => ReportSort::Kind,
        }
    }
}

/// What to report: the database query plus the filters the database cannot evaluate.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Evaluated by the database.
    pub query: ReportQuery,
    /// `--path GLOB`: only files with a path matching it (matched here: SQLite's `GLOB` does not
    /// know `**` or `{a,b}`).
    pub path: Option<globset::GlobMatcher>,
}

impl Filter {
    /// Sets `--path`: only files seen at a path matching `glob`.
    pub fn with_path_glob(mut self, glob: &str) -> Result<Filter, Error> {
        // `*` stops at a `/`, as in a shell; `**` crosses them. A glob without a `/` matches
        // the file's name, wherever it is (as in `.gitignore`).
        let anywhere;
        let glob = if glob.contains('/') {
            glob
        } else {
            anywhere = format!("**/{glob}");
            &anywhere
        };
        let glob = globset::GlobBuilder::new(glob)
            .literal_separator(true)
            .build()
            .map_err(|e| Error::BadFilter(format!("bad --path glob {glob:?}: {e}")))?;
        self.path = Some(glob.compile_matcher());
        self.query.only_with_paths = true;
        Ok(self)
    }
}

/// Parses a comma-separated list (`malicious,suspicious`); repeated flags simply add values.
pub fn parse_list<T: std::str::FromStr<Err = String>>(values: &[String]) -> Result<Vec<T>, Error> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| v.parse().map_err(Error::BadFilter))
        .collect()
}

/// Parses a duration such as `90s`, `30m`, `24h`, `7d` or `2w` (a bare number is seconds), in
/// milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, Error> {
    let bad = || {
        Error::BadFilter(format!(
            "not a duration: {text:?} (expected a number with s, m, h, d or w, like 24h or 7d)"
        ))
    };
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let unit_ms = match unit.trim() {
        "" | "s" => 1_000.0,
        "m" | "min" => 60_000.0,
        "h" => 3_600_000.0,
        "d" => 86_400_000.0,
        "w" => 7.0 * 86_400_000.0,
        _ => return Err(bad()),
    };
    if !number.is_finite() || number < 0.0 {
        return Err(bad());
    }
    Ok((number * unit_ms) as i64)
}

/// Parses a point in time: an RFC 3339 time, a date (midnight UTC), or a duration meaning that
/// long before `now` (`24h`: a day ago).
pub fn parse_time(text: &str, now: Millis) -> Result<Millis, Error> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text.trim()) {
        return Ok(t.timestamp_millis());
    }
    if let Ok(d) = NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") {
        return Ok(d
            .and_hms_opt(0, 0, 0)
            .expect("midnight exists")
            .and_utc()
            .timestamp_millis());
    }
    parse_duration(text).map(|d| now - d).map_err(|_| {
        Error::BadFilter(format!(
            "not a time: {text:?} (expected an RFC 3339 time, a date like 2026-11-01, or a duration like 24h or 7d)"
        ))
    })
}

/// Engine counts as VirusTotal names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Counts {
    /// Engines that flag it malicious.
    pub malicious: u32,
    /// Engines that flag it suspicious.
    pub suspicious: u32,
    /// Engines that call it harmless.
    pub harmless: u32,
    /// Engines that found nothing.
    pub undetected: u32,
    /// Engines that timed out.
    pub timeout: u32,
    /// Engines that cannot analyse this type.
    #[serde(rename = "type-unsupported")]
    pub type_unsupported: u32,
    /// Engines that failed.
    pub failure: u32,
}

/// Where an indicator came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct SourceRef {
    /// The IOC list (as named when ingested), or `command line`.
    pub source: String,
    /// The line in it (0 when not from a list).
    pub line: u32,
}

/// One report record: the fields every format shares (JSON shows them all, by these names).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    /// file, hash, url, domain or ip.
    pub kind: Kind,
    /// The normalised indicator (a file's SHA-256).
    pub indicator: String,
    /// The verdict; `null` while the indicator has not been triaged yet.
    pub verdict: Option<Verdict>,
    /// The queue state of the job (available, running, completed, discarded).
    pub state: String,
    /// Engine counts, when VirusTotal gave them.
    pub stats: Option<Counts>,
    /// Engines that answered.
    pub engines: Option<u32>,
    /// VirusTotal's suggested threat label.
    pub threat_label: Option<String>,
    /// SHA-256 of a file or hash, when known.
    pub sha256: Option<String>,
    /// MD5 of a file or hash, when known.
    pub md5: Option<String>,
    /// SHA-1 of a file or hash, when known.
    pub sha1: Option<String>,
    /// Where a file was seen.
    pub paths: Vec<String>,
    /// The lists (and lines) an indicator came from.
    pub sources: Vec<SourceRef>,
    /// The object on VirusTotal's web site.
    pub vt_link: String,
    /// When vtriage first saw the indicator (RFC 3339).
    pub first_seen: String,
    /// When vtriage got the verdict (RFC 3339).
    pub checked_at: Option<String>,
    /// When VirusTotal last analysed it (RFC 3339).
    pub vt_analysis_date: Option<String>,
    /// Why it failed (or why the last attempt failed, while it is retried).
    pub error: Option<String>,
    /// Why it is unknown or pending, or how the verdict was obtained.
    pub note: Option<String>,
    /// The job's row id.
    #[serde(skip)]
    pub job_id: i64,
    /// `first_seen` in Unix milliseconds (for STIX versioning).
    #[serde(skip)]
    pub first_seen_ms: Millis,
    /// `checked_at` in Unix milliseconds.
    #[serde(skip)]
    pub checked_at_ms: Option<Millis>,
}

/// RFC 3339 UTC with milliseconds, the form STIX requires too.
pub fn rfc3339_millis(at: Millis) -> String {
    Utc.timestamp_millis_opt(at)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn rfc3339_secs(at: i64) -> String {
    Utc.timestamp_opt(at, 0)
        .single()
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The VirusTotal web page of an indicator.
pub fn vt_link(kind: Kind, indicator: &str, sha256: Option<&str>, vt_id: Option<&str>) -> String {
    const GUI: &str = "https://www.virustotal.com/gui";
    match kind {
        Kind::File | Kind::Hash => format!("{GUI}/file/{}", sha256.unwrap_or(indicator)),
        Kind::Url => {
            // VirusTotal's own id (the SHA-256 of its canonical form of the URL) is exact; the
            // SHA-256 of our normalised URL is the same for every URL VT does not rewrite.
            let id = vt_id
                .filter(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    use sha2::Digest;
                    crate::hashing::hex(&sha2::Sha256::digest(indicator.as_bytes()))
                });
            format!("{GUI}/url/{id}")
        }
        Kind::Domain => format!("{GUI}/domain/{indicator}"),
        Kind::Ip => format!("{GUI}/ip-address/{indicator}"),
    }
}

impl Record {
    /// The record of one report row.
    pub fn from_row(row: ReportRow) -> Record {
        let ReportRow {
            job,
            sources,
            created_at,
            last_error,
        } = row;
        // Without a verdict yet every verdict field stays empty (the fields are moved, not cloned).
        let has_verdict = job.verdict.is_some();
        let v = job
            .verdict
            .unwrap_or_else(|| VerdictRecord::bare(Verdict::Unknown, 0));
        let (mut sha256, mut md5, mut sha1) = (v.sha256, v.md5, v.sha1);
        // The indicator of a file or hash is itself one of its hashes.
        if matches!(job.kind, Kind::File | Kind::Hash)
            && let Some(h) = FileHash::parse(&job.indicator)
        {
            let slot = match h.algo() {
                HashAlgo::Sha256 => &mut sha256,
                HashAlgo::Md5 => &mut md5,
                HashAlgo::Sha1 => &mut sha1,
            };
            slot.get_or_insert_with(|| h.as_str().to_owned());
        }
        let link = vt_link(
            job.kind,
            &job.indicator,
            sha256.as_deref(),
            v.vt_id.as_deref(),
        );
        Record {
            job_id: job.id,
            kind: job.kind,
            verdict: has_verdict.then_some(v.verdict),
            state: job.state,
            stats: v.stats.map(|s| Counts {
                malicious: s.malicious,
                suspicious: s.suspicious,
                harmless: s.harmless,
                undetected: s.undetected,
                timeout: s.timeout,
                type_unsupported: s.type_unsupported,
                failure: s.failure,
            }),
            engines: v.stats.map(|s| s.engines()),
            threat_label: v.threat_label,
            sha256,
            md5,
            sha1,
            paths: job.paths,
            sources: sources
                .into_iter()
                .map(|(source, line)| SourceRef { source, line })
                .collect(),
            vt_link: link,
            first_seen: rfc3339_millis(created_at),
            checked_at: has_verdict.then(|| rfc3339_millis(v.checked_at)),
            vt_analysis_date: v.vt_analysis_date.map(rfc3339_secs),
            error: v.error.or(last_error),
            note: v.note,
            first_seen_ms: created_at,
            checked_at_ms: has_verdict.then_some(v.checked_at),
            indicator: job.indicator,
        }
    }

    /// "53/70" when there are counts.
    fn detections(&self) -> String {
        match (&self.stats, self.engines) {
            (Some(s), Some(n)) => format!("{}/{n}", s.malicious),
            _ => String::new(),
        }
    }
}

/// The records `filter` selects, in its order, as the database yields them.
pub fn records<'a>(
    store: &'a dyn Store,
    filter: &'a Filter,
) -> BoxStream<'a, Result<Record, Error>> {
    let mut query = filter.query.clone();
    // With a path glob the database cannot count what passes it: the limit is applied here.
    let limit = query.limit;
    if filter.path.is_some() {
        query.limit = None;
    }
    let records = store
        .report(&query)
        .map(|row| row.map(Record::from_row).map_err(Error::from))
        .filter(move |r| {
            let keep = match (r, &filter.path) {
                (Ok(rec), Some(glob)) => rec.paths.iter().any(|p| glob.is_match(p)),
                _ => true,
            };
            std::future::ready(keep)
        });
    match (limit, filter.path.is_some()) {
        (Some(n), true) => records
            .take(usize::try_from(n).unwrap_or(usize::MAX))
            .boxed(),
        _ => records.boxed(),
    }
}

/// Job ids per report query of [`records_of_jobs`]: each id is written into the query's SQL.
const JOBS_PER_QUERY: usize = 1000;

/// The records of the jobs `ids` (those a `scan`, `lookup` or `ingest --wait` just worked), in
/// job order, with the verdicts `format` shows by default (a STIX bundle holds only the flagged
/// ones): what `report` prints of them, so that every command prints one record schema.
pub fn records_of_jobs<'a>(
    store: &'a dyn Store,
    ids: &[i64],
    format: Format,
) -> BoxStream<'a, Result<Record, Error>> {
    let mut ids = ids.to_vec();
    ids.sort_unstable();
    ids.dedup();
    // Queried a slice at a time: a list of a million indicators must not become one statement.
    // No ids, no query: an empty job filter would select every job.
    let queries: Vec<ReportQuery> = ids
        .chunks(JOBS_PER_QUERY)
        .map(|jobs| ReportQuery {
            jobs: jobs.to_vec(),
            verdicts: format.default_verdicts(),
            ..ReportQuery::default()
        })
        .collect();
    futures_util::stream::iter(queries)
        .flat_map(move |query| store.report(&query))
        .map(|row| row.map(Record::from_row).map_err(Error::from))
        .boxed()
}

/// What a written report contained.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Records written.
    pub records: u64,
    /// Records by verdict (`queued` for those without one yet).
    pub by_verdict: BTreeMap<String, u64>,
}

impl Written {
    /// How many records had this verdict.
    pub fn count(&self, verdict: Verdict) -> u64 {
        self.by_verdict.get(verdict.as_str()).copied().unwrap_or(0)
    }
}

/// Writes `records` to `out` in `format`, each as soon as it arrives. `out` should be buffered
/// (a locked stdout is line-buffered, a `BufWriter` for files).
pub async fn write<W: Write>(
    records: impl Stream<Item = Result<Record, Error>>,
    format: Format,
    out: W,
) -> Result<Written, Error> {
    let mut records = std::pin::pin!(records);
    let mut written = Written::default();
    let mut sink = Sink::new(format, out)?;
    while let Some(record) = records.next().await {
        let record = record?;
        sink.push(&record)?;
        written.records += 1;
        let name = record.verdict.map_or("queued", |v| v.as_str());
        *written.by_verdict.entry(name.to_owned()).or_default() += 1;
    }
    sink.finish(&written)?;
    Ok(written)
}

/// The CSV columns, in order.
pub const CSV_HEADER: [&str; 24] = [
    "kind",
    "indicator",
    "verdict",
    "state",
    "malicious",
    "suspicious",
    "harmless",
    "undetected",
    "timeout",
    "type-unsupported",
    "failure",
    "engines",
    "threat_label",
    "sha256",
    "md5",
    "sha1",
    "paths",
    "sources",
    "vt_link",
    "first_seen",
    "checked_at",
    "vt_analysis_date",
    "error",
    "note",
];

/// Separates the paths (and sources) inside one CSV field.
pub const CSV_LIST_SEPARATOR: &str = "; ";

/// A format's writer.
enum Sink<W: Write> {
    Table(W),
    Json { out: W, first: bool },
    Jsonl(W),
    Csv(Box<csv::Writer<W>>),
    Stix(stix::BundleWriter<W>),
}

impl<W: Write> Sink<W> {
    fn new(format: Format, mut out: W) -> Result<Sink<W>, Error> {
        Ok(match format {
            Format::Table => {
                writeln!(out, "{}", table_header())?;
                Sink::Table(out)
            }
            Format::Json => {
                out.write_all(b"[")?;
                Sink::Json { out, first: true }
            }
            Format::Jsonl => Sink::Jsonl(out),
            Format::Csv => {
                let mut csv = csv::WriterBuilder::new()
                    .terminator(csv::Terminator::CRLF)
                    .from_writer(out);
                csv.write_record(CSV_HEADER)?;
                Sink::Csv(Box::new(csv))
            }
            Format::Stix => Sink::Stix(stix::BundleWriter::new(out)?),
        })
    }

    fn push(&mut self, r: &Record) -> Result<(), Error> {
        match self {
            Sink::Table(out) => out.write_all(table_rows(r).as_bytes())?,
            Sink::Json { out, first } => {
                out.write_all(if *first { b"\n" } else { b",\n" })?;
                *first = false;
                serde_json::to_writer(&mut *out, r).map_err(io::Error::from)?;
            }
            Sink::Jsonl(out) => {
                serde_json::to_writer(&mut *out, r).map_err(io::Error::from)?;
                out.write_all(b"\n")?;
            }
            Sink::Csv(csv) => csv.write_record(
                csv_fields(r)
                    .map(not_a_formula)
                    .iter()
                    .map(|f| f.as_bytes()),
            )?,
            Sink::Stix(bundle) => bundle.push(r)?,
        }
        Ok(())
    }

    fn finish(self, written: &Written) -> Result<(), Error> {
        match self {
            Sink::Table(mut out) => {
                out.write_all(table_footer(written).as_bytes())?;
                out.flush()?;
            }
            Sink::Json { mut out, first } => {
                out.write_all(if first { b"]\n" } else { b"\n]\n" })?;
                out.flush()?;
            }
            Sink::Jsonl(mut out) => out.flush()?,
            Sink::Csv(mut csv) => csv.flush()?,
            Sink::Stix(bundle) => bundle.finish()?.flush()?,
        }
        Ok(())
    }
}

/// A CSV cell as a spreadsheet will show it rather than run it: one that starts like a formula
/// (`=`, `+`, `-`, `@`, a tab or a carriage return, as a dropped file's name or a label may) gets
/// a `'` in front, as OWASP advises against CSV injection. No other cell of a report starts so.
fn not_a_formula(cell: Cow<'_, str>) -> Cow<'_, str> {
    if cell.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{cell}"))
    } else {
        cell
    }
}

/// The CSV fields of a record, borrowed from it where they are stored as written.
fn csv_fields(r: &Record) -> [Cow<'_, str>; CSV_HEADER.len()] {
    let number = |n: Option<u32>| n.map_or(Cow::Borrowed(""), |n| Cow::Owned(n.to_string()));
    let count = |f: fn(&Counts) -> u32| number(r.stats.as_ref().map(f));
    fn text(s: &Option<String>) -> Cow<'_, str> {
        Cow::Borrowed(s.as_deref().unwrap_or(""))
    }
    let sources: Vec<String> = r
        .sources
        .iter()
        .map(|s| format!("{}:{}", s.source, s.line))
        .collect();
    [
        Cow::Borrowed(r.kind.as_str()),
        Cow::Borrowed(r.indicator.as_str()),
        Cow::Borrowed(r.verdict.map_or("", Verdict::as_str)),
        Cow::Borrowed(r.state.as_str()),
        count(|s| s.malicious),
        count(|s| s.suspicious),
        count(|s| s.harmless),
        count(|s| s.undetected),
        count(|s| s.timeout),
        count(|s| s.type_unsupported),
        count(|s| s.failure),
        number(r.engines),
        text(&r.threat_label),
        text(&r.sha256),
        text(&r.md5),
        text(&r.sha1),
        Cow::Owned(r.paths.join(CSV_LIST_SEPARATOR)),
        Cow::Owned(sources.join(CSV_LIST_SEPARATOR)),
        Cow::Borrowed(r.vt_link.as_str()),
        Cow::Borrowed(r.first_seen.as_str()),
        text(&r.checked_at),
        text(&r.vt_analysis_date),
        text(&r.error),
        text(&r.note),
    ]
}

/// The table's total width.
pub const TABLE_WIDTH: usize = 80;
const VERDICT_W: usize = 10;
const KIND_W: usize = 6;
const DETECTED_W: usize = 8;
/// Where the indicator column starts.
const INDENT: usize = VERDICT_W + 1 + KIND_W + 1 + DETECTED_W + 1;

fn table_header() -> String {
    format!(
        "{:<VERDICT_W$} {:<KIND_W$} {:>DETECTED_W$} {}",
        "VERDICT", "KIND", "DETECTED", "INDICATOR"
    )
}

/// Cuts prose to `width` characters at its end (the start of a sentence says what it is about).
pub fn shorten(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

/// One or two lines: the verdict line (a file shows its first path, others their indicator),
/// and, when there is one, a detail line of at most [`TABLE_WIDTH`] characters. The indicator or
/// path is never cut, so that it can be copied whole; it may make its line longer. Text from
/// outside (paths, VirusTotal's labels and notes) is escaped for the terminal before it is cut.
fn table_rows(r: &Record) -> String {
    let room = TABLE_WIDTH - INDENT;
    let verdict = r.verdict.map_or("queued", |v| v.as_str());
    let shown = r.paths.first().unwrap_or(&r.indicator);
    let mut out = format!(
        "{verdict:<VERDICT_W$} {:<KIND_W$} {:>DETECTED_W$} {}\n",
        r.kind.as_str(),
        r.detections(),
        escape_control(shown)
    );
    let mut details = Vec::new();
    if r.paths.len() > 1 {
        details.push(format!("+{} copies", r.paths.len() - 1));
    }
    details.extend(r.threat_label.iter().cloned());
    details.extend(r.error.iter().cloned());
    if r.error.is_none() {
        details.extend(r.note.iter().cloned());
    }
    if !details.is_empty() {
        let detail = details.join("; ");
        out += &format!(
            "{:INDENT$}{}\n",
            "",
            shorten(&escape_control(&detail), room)
        );
    }
    out
}

fn table_footer(written: &Written) -> String {
    let order = Verdict::ALL
        .iter()
        .map(|v| v.as_str())
        .chain(std::iter::once("queued"));
    let parts: Vec<String> = order
        .filter_map(|name| written.by_verdict.get(name).map(|n| format!("{n} {name}")))
        .collect();
    let parts = if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    };
    format!("\n{} indicators: {parts}\n", written.records)
}

/// The stored VirusTotal object of `indicator`, pretty-printed. Errors name what is missing.
pub async fn raw(store: &dyn Store, indicator: &str) -> Result<String, RawError> {
    // Accept the indicator in any form `lookup` accepts (defanged, upper-case host...): the
    // stored value is the normalised one.
    let opts = crate::ingest::Options {
        skip_private_ips: false,
    };
    let normalised = match crate::ingest::classify(&crate::ingest::refang(indicator.trim()), &opts)
    {
        crate::ingest::Classified::Indicator(i) => i.value(),
        _ => indicator.trim().to_owned(),
    };
    let found = store
        .raw_object(&normalised)
        .await
        .map_err(|e| RawError::Store(e.into()))?;
    let Some(object) = found else {
        return Err(RawError::NotInDatabase(indicator.to_owned()));
    };
    let Some(json) = object.json else {
        return Err(RawError::NoObject(object.kind, object.indicator));
    };
    let value: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| RawError::Damaged(object.indicator.clone()))?;
    Ok(serde_json::to_string_pretty(&value).expect("a JSON value prints"))
}

/// Why `report --raw` has nothing to print.
#[derive(Debug, thiserror::Error)]
pub enum RawError {
    /// The database could not be read.
    #[error(transparent)]
    Store(#[from] Error),
    /// No job has this indicator.
    #[error("{0} is not in the database")]
    NotInDatabase(String),
    /// The job has no stored object (not triaged yet, unknown to VirusTotal, or failed).
    #[error(
        "no VirusTotal object is stored for the {0} {1} (not triaged yet, unknown to VirusTotal, or failed)"
    )]
    NoObject(Kind, String),
    /// The stored object cannot be read back.
    #[error("the stored VirusTotal object of {0} is damaged")]
    Damaged(String),
}

/// The kind of IP address, for STIX and the table.
pub(crate) fn ip_version(ip: &str) -> Option<u8> {
    match ip.parse::<IpAddr>().ok()? {
        IpAddr::V4(_) => Some(4),
        IpAddr::V6(_) => Some(6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_790_000_000_000;

    #[test]
    fn durations_accept_every_unit() {
        assert_eq!(parse_duration("90s").unwrap(), 90_000);
        assert_eq!(parse_duration("30m").unwrap(), 1_800_000);
        assert_eq!(parse_duration("24h").unwrap(), 86_400_000);
        assert_eq!(parse_duration("7d").unwrap(), 7 * 86_400_000);
        assert_eq!(parse_duration("2w").unwrap(), 14 * 86_400_000);
        assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000);
        assert_eq!(parse_duration("60").unwrap(), 60_000);
        assert!(parse_duration("7 days").is_err());
        assert!(parse_duration("h").is_err());
        assert!(parse_duration("-1d").is_err());
    }

    #[test]
    fn times_are_rfc3339_dates_or_durations_before_now() {
        assert_eq!(
            parse_time("2026-11-01T12:00:00Z", NOW).unwrap(),
            1_793_534_400_000
        );
        assert_eq!(
            parse_time("2026-11-01T13:00:00+01:00", NOW).unwrap(),
            1_793_534_400_000
        );
        assert_eq!(parse_time("2026-11-01", NOW).unwrap(), 1_793_491_200_000);
        assert_eq!(parse_time("24h", NOW).unwrap(), NOW - 86_400_000);
        assert!(parse_time("yesterday", NOW).is_err());
    }

    #[test]
    fn lists_split_on_commas_across_repeated_flags() {
        let v: Vec<Verdict> =
            parse_list(&["malicious,suspicious".into(), " clean ".into()]).unwrap();
        assert_eq!(
            v,
            vec![Verdict::Malicious, Verdict::Suspicious, Verdict::Clean]
        );
        assert!(parse_list::<Kind>(&["file,files".into()]).is_err());
    }

    #[test]
    fn prose_is_cut_at_its_end() {
        assert_eq!(shorten("VirusTotal does not know it", 14), "VirusTotal do…");
        assert_eq!(shorten("short", 14), "short");
    }

    #[test]
    fn vt_links_point_at_the_gui_page_of_each_kind() {
        let sha = "a".repeat(64);
        assert_eq!(
            vt_link(Kind::File, &sha, None, None),
            format!("https://www.virustotal.com/gui/file/{sha}")
        );
        assert_eq!(
            vt_link(Kind::Hash, &"b".repeat(32), Some(&sha), None),
            format!("https://www.virustotal.com/gui/file/{sha}")
        );
        // sha256("http://example.com/")
        assert_eq!(
            vt_link(Kind::Url, "http://example.com/", None, None),
            "https://www.virustotal.com/gui/url/2a1b402420ef46577471cdc7409b0fa2c6a204db316e59ade2d805435489a067"
        );
        assert_eq!(
            vt_link(Kind::Domain, "example.com", None, None),
            "https://www.virustotal.com/gui/domain/example.com"
        );
        assert_eq!(
            vt_link(Kind::Ip, "::1", None, None),
            "https://www.virustotal.com/gui/ip-address/::1"
        );
    }
}
