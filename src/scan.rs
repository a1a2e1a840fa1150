//! `vtriage scan PATH...`: hash files and folders, queue them, work the queue until each has a
//! verdict, and summarise.

use std::collections::BTreeMap;
use std::path::PathBuf;

use futures_util::{StreamExt, TryStreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::indicator::Kind;
use crate::pipeline::{Interrupted, Pipeline};
use crate::report::{self, Format, Record};
use crate::store::{FileSeen, JobResult, NewJob, Store};
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
#[derive(Debug, Default)]
pub struct ScanOutcome {
    /// One result per distinct content: what the table and the exit status are made of. JSON
    /// and CSV print `report`'s record of each instead ([`print_outcome`]).
    pub results: Vec<JobResult>,
    /// Files that could not be read, and paths given that are not regular files.
    pub errors: Vec<InputError>,
    /// FIFOs, sockets and devices found in folders: not triaged, not an error.
    pub skipped: Vec<InputError>,
    /// Why the run stopped early, if it did.
    pub interrupted: Option<String>,
}

impl ScanOutcome {
    /// Exit status like clamscan's: 2 when something was left without a verdict (the run was
    /// interrupted, a file could not be read, a verdict `failed`, or `pending`: an analysis that
    /// may yet find it malicious), else 1 when something is malicious, else 0. So 0 means every
    /// file was triaged and none is malicious.
    pub fn exit_code(&self) -> i32 {
        let verdicts = || self.results.iter().filter_map(|r| r.verdict.as_ref());
        if self.interrupted.is_some()
            || !self.errors.is_empty()
            || verdicts().any(|v| matches!(v.verdict, Verdict::Failed | Verdict::Pending))
        {
            2
        } else if verdicts().any(|v| v.verdict == Verdict::Malicious) {
            1
        } else {
            0
        }
    }
}

/// How `scan` and `ingest --wait` print what they found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// The summary table ([`summary_table`]): the verdicts, the files that could not be read,
    /// those skipped, and why the run stopped early.
    Table,
    /// `--json`: one document, `{"results", "errors", "skipped", "interrupted"}`, whose results
    /// are `report`'s records.
    Document,
    /// `report`'s records in this format, alone as `report` prints them; the files that could
    /// not be read, those skipped and why the run stopped early go to standard error.
    Records(Format),
}

impl Output {
    /// The output `--json` or `--format` ask for: the summary table unless told otherwise (it
    /// lists what could not be read; `report` and `lookup` have nothing of the kind to list).
    pub fn chosen(json: bool, format: Option<Format>) -> Output {
        match (json, format) {
            (true, _) => Output::Document,
            (false, None | Some(Format::Table)) => Output::Table,
            (false, Some(format)) => Output::Records(format),
        }
    }
}

/// The `--json` document.
#[derive(Serialize)]
struct Document<'a> {
    /// One `report` record per distinct content (or indicator), in job order.
    results: Vec<Record>,
    /// Files that could not be read, and paths given that are not regular files.
    errors: &'a [InputError],
    /// FIFOs, sockets and devices found in folders.
    skipped: &'a [InputError],
    /// Why the run stopped early, if it did.
    interrupted: Option<&'a str>,
}

/// Prints `outcome` on standard output as `output` says (`noun`: what the results are, for the
/// table). The records are read from `store`, as `report` reads them.
pub async fn print_outcome(
    store: &dyn Store,
    outcome: &ScanOutcome,
    output: Output,
    noun: &str,
) -> Result<(), report::Error> {
    let ids: Vec<i64> = outcome.results.iter().map(|r| r.id).collect();
    match output {
        Output::Table => print!("{}", summary_table(outcome, noun)),
        Output::Document => {
            let document = Document {
                results: report::records_of_jobs(store, &ids, Format::Json)
                    .try_collect()
                    .await?,
                errors: &outcome.errors,
                skipped: &outcome.skipped,
                interrupted: outcome.interrupted.as_deref(),
            };
            let text = serde_json::to_string_pretty(&document).map_err(std::io::Error::from)?;
            println!("{text}");
        }
        Output::Records(format) => {
            let out = std::io::BufWriter::new(std::io::stdout());
            let records = report::records_of_jobs(store, &ids, format);
            report::finish_output(report::write(records, format, out).await.map(|_| ()))?;
            let listed = outcome.errors.iter().map(|e| ("", e));
            for (what, e) in listed.chain(outcome.skipped.iter().map(|e| ("skipped ", e))) {
                eprintln!(
                    "vtriage: {what}{}: {}",
                    escape_control(&e.path),
                    escape_control(&e.error)
                );
            }
            if let Some(why) = &outcome.interrupted {
                eprintln!("vtriage: stopped early: {}", escape_control(why));
            }
        }
    }
    Ok(())
}

/// Why a FIFO, socket or device is not triaged. It is never opened: reading a FIFO would wait
/// for a writer, and a device may never end.
const NOT_REGULAR: &str = "not a regular file (FIFO, socket or device)";

/// What [`collect_files`] found under the paths given.
#[derive(Debug, Default)]
pub struct Collected {
    /// The regular files, to hash.
    pub files: Vec<PathBuf>,
    /// Paths that could not be walked, and paths given that are not regular files or folders.
    pub errors: Vec<InputError>,
    /// FIFOs, sockets and devices met inside a folder: listed, not triaged.
    pub skipped: Vec<InputError>,
    /// The walk stopped part way (shutdown).
    pub stopped: bool,
}

/// The regular files under `paths` (folders recursively; symbolic links inside folders are
/// not followed), with the paths that could not be walked. A path given that is not a regular
/// file (a FIFO, a device) is an error, as a missing one is: the user asked for it; inside a
/// folder it is only skipped. Stops part way once `stop` is cancelled.
pub fn collect_files(paths: &[PathBuf], stop: &CancellationToken) -> Collected {
    let mut found = Collected::default();
    for root in paths {
        for entry in walkdir::WalkDir::new(root).follow_links(false) {
            if stop.is_cancelled() {
                found.stopped = true;
                return found;
            }
            let e = match entry {
                Ok(e) => e,
                Err(err) => {
                    found.errors.push(InputError {
                        path: err
                            .path()
                            .map(|p| p.display().to_string())
                            .unwrap_or_else(|| root.display().to_string()),
                        error: err.to_string(),
                    });
                    continue;
                }
            };
            // A link given on the command line is what the user meant: it is judged by what it
            // points to (walkdir walks a folder it points to, but reports the link as a link).
            let kind = if e.depth() == 0 && e.path_is_symlink() {
                match std::fs::metadata(e.path()) {
                    Ok(m) => m.file_type(),
                    Err(err) => {
                        found.errors.push(InputError {
                            path: e.path().display().to_string(),
                            error: err.to_string(),
                        });
                        continue;
                    }
                }
            } else {
                e.file_type()
            };
            if kind.is_file() {
                found.files.push(e.into_path());
            } else if kind.is_dir() || kind.is_symlink() {
                // Folders are walked; links inside them are not followed.
            } else {
                let special = InputError {
                    path: e.path().display().to_string(),
                    error: NOT_REGULAR.into(),
                };
                if e.depth() == 0 {
                    found.errors.push(special);
                } else {
                    found.skipped.push(special);
                }
            }
        }
    }
    found
}

/// Scans `paths`: hash, enqueue, work until done. Unknown files are uploaded when the
/// pipeline's `[upload] files` allows it (`scan --upload` sets it for its run): the jobs' own
/// permission and the process's policy are then one.
pub async fn scan(pipeline: &Pipeline, paths: &[PathBuf]) -> anyhow::Result<ScanOutcome> {
    // Stored as absolute paths, as the daemon's are: where a file was seen must not depend on
    // where `scan` ran, and one file scanned by two spellings is one sighting. A path that does
    // not resolve stays as given, to be named in its error.
    let roots: Vec<PathBuf> = paths
        .iter()
        .map(|p| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone()))
        .collect();
    let Collected {
        files,
        mut errors,
        skipped,
        stopped: walk_stopped,
    } = collect_files(&roots, &pipeline.stop);
    let allow_submit = pipeline.config.upload.files == crate::config::UploadPolicy::Unknown;
    let Hashed {
        jobs,
        errors: unreadable,
        stopped: hashing_stopped,
    } = hash_files(files, allow_submit, &pipeline.stop).await;
    errors.extend(unreadable);
    let stopped = walk_stopped || hashing_stopped;

    let (mut ids, _) = crate::lists::enqueue(&*pipeline.store, &jobs, &pipeline.config)
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot queue the files in the database {}: {e}; nothing was triaged",
                crate::pipeline::database_shown(&pipeline.config)
            )
        })?;
    ids.sort_unstable();
    ids.dedup();

    // Stopped before every file was hashed: what was hashed stays queued, and no worker starts.
    let drained = if stopped {
        Err(Interrupted::Shutdown)
    } else {
        pipeline.spawn_workers_for(&ids).await;
        crate::progress::drain_showing_progress(pipeline, &ids).await
    };
    pipeline.shutdown().await;
    let interrupted = match drained {
        Ok(()) => None,
        Err(Interrupted::Shutdown) => {
            let mut said = if stopped {
                "interrupted before every file was hashed; those not hashed were not queued (scan \
                 them again), the others stay queued for the next run"
                    .to_owned()
            } else {
                "interrupted; unfinished files stay queued for the next run".to_owned()
            };
            if allow_submit {
                said +=
                    ", allowed to be uploaded (scan them again without --upload to withdraw that)";
            }
            Some(said)
        }
        Err(e) => Some(e.to_string()),
    };
    Ok(ScanOutcome {
        results: pipeline.store.results(&ids).await?,
        errors,
        skipped,
        interrupted,
    })
}

/// What [`hash_files`] made of the files.
struct Hashed {
    /// A job for each file hashed.
    jobs: Vec<NewJob>,
    /// The files that could not be read.
    errors: Vec<InputError>,
    /// Stopped before every file was hashed (shutdown).
    stopped: bool,
}

/// Hashes `files`, several at once, until `stop` is cancelled: then the hashes under way are
/// dropped, which stops them.
async fn hash_files(files: Vec<PathBuf>, allow_submit: bool, stop: &CancellationToken) -> Hashed {
    let bar = crate::progress::progress_bar(files.len() as u64, "hashing");
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
    let mut out = Hashed {
        jobs: Vec::new(),
        errors: Vec::new(),
        stopped: false,
    };
    loop {
        let next = tokio::select! {
            next = hashed.next() => next,
            _ = stop.cancelled() => {
                out.stopped = true;
                break;
            }
        };
        let Some((path, size, digest)) = next else {
            break;
        };
        bar.inc(1);
        match digest {
            Ok(sha256) => out.jobs.push(NewJob {
                kind: Kind::File,
                indicator: sha256,
                allow_submit,
                path: Some(FileSeen::at(crate::store::path_text(&path), size)),
                source: None,
            }),
            Err(e) => out.errors.push(InputError {
                path: path.display().to_string(),
                error: e.to_string(),
            }),
        }
    }
    bar.finish_and_clear();
    out
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
    let listed = outcome.errors.iter().map(|e| ("error", e));
    for (what, e) in listed.chain(outcome.skipped.iter().map(|e| ("skipped", e))) {
        out.push_str(&format!(
            "{what:<10} {}\n           {}\n",
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
        "\n{} {noun}: {}{}{}\n",
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
        if outcome.skipped.is_empty() {
            String::new()
        } else {
            format!("; {} skipped (not regular files)", outcome.skipped.len())
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

    fn mkfifo(path: &std::path::Path) {
        let made = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .is_ok_and(|s| s.success());
        assert!(made, "mkfifo {}", path.display());
    }

    #[test]
    fn special_files_given_are_errors_and_those_in_folders_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let given = dir.path().join("given.fifo");
        mkfifo(&given);
        let folder = dir.path().join("folder");
        std::fs::create_dir(&folder).unwrap();
        mkfifo(&folder.join("inside.fifo"));
        std::fs::write(folder.join("regular.txt"), b"text").unwrap();
        let link = dir.path().join("link.txt");
        std::os::unix::fs::symlink(folder.join("regular.txt"), &link).unwrap();
        std::os::unix::fs::symlink(folder.join("regular.txt"), folder.join("inner.lnk")).unwrap();

        let found = collect_files(
            &[given, "/dev/null".into(), folder.clone(), link.clone()],
            &CancellationToken::new(),
        );
        assert_eq!(
            found.files,
            [folder.join("regular.txt"), link],
            "links given are followed"
        );
        let paths = |list: &[InputError]| list.iter().map(|e| e.path.clone()).collect::<Vec<_>>();
        assert_eq!(
            paths(&found.errors),
            [
                dir.path().join("given.fifo").display().to_string(),
                "/dev/null".into()
            ]
        );
        assert!(found.errors.iter().all(|e| e.error == NOT_REGULAR));
        assert_eq!(
            paths(&found.skipped),
            [folder.join("inside.fifo").display().to_string()]
        );
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
