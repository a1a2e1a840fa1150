//! `vtriage scan PATH...`: hash files and folders, queue them, work the queue until each has a
//! verdict, and summarise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use futures_util::StreamExt;
use serde::Serialize;

use crate::indicator::Kind;
use crate::pipeline::{Interrupted, Pipeline};
use crate::store::{FileSeen, JobResult, NewJob};
use crate::terminal::escape_control;
use crate::verdict::Verdict;

/// A file that could not be triaged before it reached the queue.
#[derive(Debug, Clone, Serialize)]
pub struct InputError {
    /// The file.
    pub path: String,
    /// Why.
    pub error: String,
}

/// What a scan found.
#[derive(Debug, Default, Serialize)]
pub struct ScanOutcome {
    /// One result per distinct content.
    pub results: Vec<JobResult>,
    /// Files that could not be read.
    pub errors: Vec<InputError>,
    /// Why the run stopped early, if it did.
    pub interrupted: Option<String>,
}

impl ScanOutcome {
    /// Exit status like clamscan's: 2 when something was left without a verdict (the run was
    /// interrupted, a file could not be read, a verdict `failed`), else 1 when something is
    /// malicious, else 0. So 0 means every file was triaged and none is malicious.
    pub fn exit_code(&self) -> i32 {
        let verdicts = || self.results.iter().filter_map(|r| r.verdict.as_ref());
        if self.interrupted.is_some()
            || !self.errors.is_empty()
            || verdicts().any(|v| v.verdict == Verdict::Failed)
        {
            2
        } else if verdicts().any(|v| v.verdict == Verdict::Malicious) {
            1
        } else {
            0
        }
    }
}

/// The regular files under `paths` (folders recursively; symbolic links inside folders are
/// not followed), with the paths that could not be walked.
pub fn collect_files(paths: &[PathBuf]) -> (Vec<PathBuf>, Vec<InputError>) {
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for root in paths {
        for entry in walkdir::WalkDir::new(root).follow_links(false) {
            match entry {
                Ok(e) if e.file_type().is_file() => files.push(e.into_path()),
                Ok(e) if e.path_is_symlink() && e.depth() == 0 => {
                    // A link named on the command line is what the user meant: follow it.
                    if std::fs::metadata(e.path()).is_ok_and(|m| m.is_file()) {
                        files.push(e.into_path());
                    }
                }
                Ok(_) => {}
                Err(err) => errors.push(InputError {
                    path: err
                        .path()
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|| root.display().to_string()),
                    error: err.to_string(),
                }),
            }
        }
    }
    (files, errors)
}

/// Scans `paths`: hash, enqueue, work until done. `allow_upload` is `scan --upload`.
pub async fn scan(
    pipeline: &Pipeline,
    paths: &[PathBuf],
    allow_upload: bool,
) -> anyhow::Result<ScanOutcome> {
    let (files, mut errors) = collect_files(paths);
    let bar = progress_bar(files.len() as u64, "hashing");
    let parallel = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let mut hashed = futures_util::stream::iter(files)
        .map(|path| async move {
            let digest = crate::hashing::sha256_file(&path).await;
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            (path, size, digest)
        })
        .buffered(parallel);
    let allow_submit =
        allow_upload || pipeline.config.upload.files == crate::config::UploadPolicy::Unknown;
    let mut jobs = Vec::new();
    while let Some((path, size, digest)) = hashed.next().await {
        bar.inc(1);
        match digest {
            Ok(sha256) => jobs.push(NewJob {
                kind: Kind::File,
                indicator: sha256,
                allow_submit,
                path: Some(FileSeen::at(path.display().to_string(), size)),
                source: None,
            }),
            Err(e) => errors.push(InputError {
                path: path.display().to_string(),
                error: e.to_string(),
            }),
        }
    }
    bar.finish_and_clear();

    let (mut ids, _) = crate::lists::enqueue(&*pipeline.store, &jobs, &pipeline.config).await?;
    ids.sort_unstable();
    ids.dedup();

    pipeline.spawn_workers();
    let bar = progress_bar(ids.len() as u64, "triaging");
    let drained = pipeline.drain(&ids, |done, _| bar.set_position(done)).await;
    bar.finish_and_clear();
    pipeline.shutdown().await;
    let interrupted = match drained {
        Ok(()) => None,
        Err(Interrupted::Shutdown) => {
            Some("interrupted; unfinished files stay queued for the next run".into())
        }
        Err(e) => Some(e.to_string()),
    };
    Ok(ScanOutcome {
        results: pipeline.store.results(&ids).await?,
        errors,
        interrupted,
    })
}

/// A spinner for work of unknown length, on a terminal only (hidden otherwise); its message says
/// how far the work got.
pub fn spinner() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(std::time::Duration::from_millis(100));
    spinner
}

/// A progress bar on a terminal; hidden otherwise (logs and pipes stay clean).
pub fn progress_bar(len: u64, what: &'static str) -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(len);
    let style =
        indicatif::ProgressStyle::with_template("{msg:>10} [{bar:30}] {pos}/{len} ({eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what);
    bar
}

/// The summary table printed at the end of a scan (`noun`: what the results are). Names and
/// VirusTotal's words in it are escaped for the terminal.
pub fn summary_table(outcome: &ScanOutcome, noun: &str) -> String {
    let mut out = String::new();
    let mut counts: BTreeMap<Verdict, usize> = BTreeMap::new();
    // A job without a verdict (the run stopped first) is `queued`, as `report` calls it:
    // `pending` means submitted to VirusTotal and still being analysed.
    let mut queued = 0;
    for r in &outcome.results {
        let verdict = match &r.verdict {
            Some(v) => {
                *counts.entry(v.verdict).or_default() += 1;
                v.verdict.as_str()
            }
            None => {
                queued += 1;
                "queued"
            }
        };
        let detail = r
            .verdict
            .as_ref()
            .map(|v| match (&v.stats, &v.error, &v.note) {
                (_, Some(e), _) => e.clone(),
                (Some(s), _, _) => {
                    let label = v
                        .threat_label
                        .as_deref()
                        .map(|l| format!(" {l}"))
                        .unwrap_or_default();
                    format!("{}/{} engines{label}", s.malicious, s.engines())
                }
                (None, None, Some(n)) => n.clone(),
                _ => String::new(),
            })
            .unwrap_or_else(|| "no verdict yet".into());
        let path = r
            .paths
            .first()
            .cloned()
            .unwrap_or_else(|| r.indicator.clone());
        let more = if r.paths.len() > 1 {
            format!(" (+{} copies)", r.paths.len() - 1)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "{verdict:<10} {}{more}\n           {}\n",
            escape_control(&path),
            escape_control(&detail)
        ));
    }
    for e in &outcome.errors {
        out.push_str(&format!(
            "{:<10} {}\n           {}\n",
            "error",
            escape_control(&e.path),
            escape_control(&e.error)
        ));
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(v, n)| format!("{n} {v}"))
        .chain((queued > 0).then(|| format!("{queued} queued")))
        .collect();
    out.push_str(&format!(
        "\n{} {noun}: {}{}\n",
        outcome.results.len(),
        if parts.is_empty() {
            "none".to_string()
        } else {
            parts.join(", ")
        },
        if outcome.errors.is_empty() {
            String::new()
        } else {
            format!("; {} unreadable", outcome.errors.len())
        },
    ));
    if let Some(why) = &outcome.interrupted {
        out.push_str(&format!("stopped early: {}\n", escape_control(why)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::VerdictRecord;

    fn result(id: i64, verdict: Option<VerdictRecord>) -> JobResult {
        JobResult {
            id,
            kind: Kind::File,
            indicator: format!("{id:064x}"),
            state: if verdict.is_some() {
                "completed"
            } else {
                "available"
            }
            .into(),
            verdict,
            paths: vec![format!("big/f{id}")],
        }
    }

    #[test]
    fn files_an_interrupted_scan_never_finished_are_queued_not_pending() {
        let outcome = ScanOutcome {
            results: vec![
                result(1, Some(VerdictRecord::bare(Verdict::Clean, 0))),
                result(2, None),
                result(3, None),
            ],
            interrupted: Some("interrupted".into()),
            ..ScanOutcome::default()
        };
        let table = summary_table(&outcome, "file contents");
        assert!(!table.contains("pending"), "{table}");
        assert!(table.contains("queued     big/f2\n"), "{table}");
        assert!(
            table.contains("3 file contents: 1 clean, 2 queued\n"),
            "{table}"
        );
    }
}
