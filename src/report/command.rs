//! The `vtriage report` command line: its arguments, and running it against the configured
//! database.

use std::io::{self, Write};

use clap::Args;

use super::{Error, Filter, Format, SortKey, parse_list, parse_time, records, write};
use crate::config::Config;
use crate::store::{Millis, ReportQuery, now_millis};

/// `vtriage report`
#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Output format [default: table on a terminal, else jsonl]
    #[arg(long, short = 'f', value_enum)]
    pub format: Option<Format>,
    /// Only these verdicts (comma-separated): malicious, suspicious, clean, unknown, failed,
    /// pending [default: all; for --format stix, malicious,suspicious]
    #[arg(long, value_name = "LIST")]
    pub verdict: Vec<String>,
    /// Only these kinds (comma-separated): file, hash, url, domain, ip
    #[arg(long, value_name = "LIST")]
    pub kind: Vec<String>,
    /// Only indicators from this IOC list (its path or file name, or "command line"), or files
    /// seen at or under this path (repeatable)
    #[arg(long, value_name = "PATH-OR-LIST")]
    pub source: Vec<String>,
    /// Only verdicts checked since this time: RFC 3339, a date (2026-11-01) or a duration ago (24h, 7d)
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// Only verdicts checked before this time (same forms as --since)
    #[arg(long, value_name = "TIME")]
    pub until: Option<String>,
    /// Only files seen at a path matching this glob: `*` and `?` within a folder's name, `**`
    /// across folders, `{a,b}`; a glob without `/` matches the file's name (`*.exe`)
    #[arg(long, value_name = "GLOB")]
    pub path: Option<String>,
    /// Order of the records
    #[arg(long, value_enum, default_value_t = SortKey::FirstSeen)]
    pub sort: SortKey,
    /// At most this many records
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// Print the full VirusTotal object stored for this indicator (pretty JSON) instead
    #[arg(long, value_name = "INDICATOR")]
    pub raw: Option<String>,
}

impl ReportArgs {
    /// The filter these arguments describe (`now` anchors durations such as `--since 24h`).
    pub fn filter(&self, now: Millis) -> Result<Filter, Error> {
        let time = |t: &Option<String>| t.as_deref().map(|t| parse_time(t, now)).transpose();
        let mut verdicts = parse_list(&self.verdict)?;
        if verdicts.is_empty()
            && let Some(format) = self.format
        {
            verdicts = format.default_verdicts();
        }
        let filter = Filter {
            query: ReportQuery {
                verdicts,
                kinds: parse_list(&self.kind)?,
                sources: self.source.iter().flat_map(|s| with_absolute(s)).collect(),
                since: time(&self.since)?,
                until: time(&self.until)?,
                sort: self.sort.into(),
                limit: self.limit,
                ..ReportQuery::default()
            },
            path: None,
        };
        match &self.path {
            Some(glob) => filter.with_path_glob(&absolute_glob(glob)),
            None => Ok(filter),
        }
    }
}

/// A `--source` as given (a list's name is stored as it was given) and, when it names a file or
/// folder here, as the absolute path `scan` and the daemon store.
fn with_absolute(source: &str) -> Vec<String> {
    let mut forms = vec![source.to_owned()];
    if let Ok(absolute) = std::fs::canonicalize(source) {
        let absolute = crate::store::path_text(&absolute);
        if absolute != source {
            forms.push(absolute);
        }
    }
    forms
}

/// A `--path` glob with folders (`incoming/*.exe`) made absolute from the working directory, as
/// stored paths are; one without `/` matches a file's name anywhere, and stays as it is.
fn absolute_glob(glob: &str) -> String {
    if !glob.contains('/') || glob.starts_with(['/', '*']) {
        return glob.to_owned();
    }
    let relative = glob.strip_prefix("./").unwrap_or(glob);
    match std::env::current_dir().and_then(std::fs::canonicalize) {
        Ok(here) => format!("{}/{relative}", crate::store::path_text(&here)),
        Err(_) => glob.to_owned(),
    }
}

/// Runs `vtriage report`; returns the exit code.
pub async fn run(args: &ReportArgs, config: &Config) -> anyhow::Result<i32> {
    let filter = args.filter(now_millis())?;
    let store = crate::pipeline::open_for_reading(config).await?;
    if let Some(indicator) = &args.raw {
        let text = super::raw(&*store, indicator).await?;
        store.close().await;
        println!("{text}");
        return Ok(0);
    }
    let format = args.format.unwrap_or_else(Format::default_for_stdout);
    let out = io::BufWriter::with_capacity(1 << 16, io::stdout());
    let written = write(records(&*store, &filter), format, out).await;
    store.close().await;
    finish_output(written.map(|_| ()))?;
    Ok(0)
}

/// A closed pipe (`vtriage report | head`) is the reader's choice, not an error.
pub fn finish_output(result: Result<(), Error>) -> Result<(), Error> {
    match result {
        Err(Error::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        other => {
            let _ = io::stdout().flush();
            other
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::verdict::Verdict;

    #[derive(Parser)]
    struct Report {
        #[command(flatten)]
        args: ReportArgs,
    }

    fn verdicts(args: &[&str]) -> Vec<Verdict> {
        let report = Report::parse_from(std::iter::once("report").chain(args.iter().copied()));
        report.args.filter(0).unwrap().query.verdicts
    }

    /// `scan incoming` stores absolute paths: `--source incoming` and `--path 'incoming/*'`
    /// given from the same folder find them.
    #[test]
    fn relative_sources_and_globs_match_the_absolute_paths_stored() {
        let here = crate::store::path_text(&std::fs::canonicalize(".").unwrap());
        assert_eq!(
            with_absolute("src"),
            ["src".to_string(), format!("{here}/src")]
        );
        assert_eq!(with_absolute("no such list.txt"), ["no such list.txt"]);
        assert_eq!(absolute_glob("./src/*.rs"), format!("{here}/src/*.rs"));
        assert_eq!(absolute_glob("*.exe"), "*.exe");
        assert_eq!(absolute_glob("/drop/*.exe"), "/drop/*.exe");
        assert_eq!(absolute_glob("**/x/*.exe"), "**/x/*.exe");
    }

    /// A STIX bundle is read as indicators to detect: only what VirusTotal flagged goes in,
    /// unless `--verdict` asks for more.
    #[test]
    fn a_stix_bundle_holds_the_flagged_verdicts_unless_told_otherwise() {
        assert!(verdicts(&["--format", "csv"]).is_empty(), "every verdict");
        assert_eq!(
            verdicts(&["--format", "stix"]),
            [Verdict::Malicious, Verdict::Suspicious]
        );
        assert_eq!(
            verdicts(&["--format", "stix", "--verdict", "clean"]),
            [Verdict::Clean]
        );
    }
}
