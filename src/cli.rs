//! The command line: argument definitions and the dispatch to the library. Exit codes follow
//! clamscan: 0 nothing malicious, 1 something malicious, 2 an error kept the run from finishing;
//! 130 or 143 when a second SIGINT or SIGTERM ended the process at once ([`shutdown_signal`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, UploadPolicy};
use crate::lists;
use crate::pipeline::Pipeline;
use crate::scan;

/// Triage files, hashes, URLs, domains and IP addresses against VirusTotal, frugally.
///
/// Nothing is ever uploaded to VirusTotal unless you allow it (`--upload`, or `[upload] files =
/// "unknown"`): an upload is irreversible and makes the file visible to VirusTotal's customers.
/// The API key comes from VT_API_KEY. Try `vtriage demo` to see everything work offline.
#[derive(Debug, Parser)]
#[command(name = "vtriage", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes (before or after the command name).
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Configuration file [default: $XDG_CONFIG_HOME/vtriage/vtriage.toml, that is
    /// ~/.config/vtriage/vtriage.toml, when present; never one in the working directory]
    #[arg(long, global = true, value_name = "FILE", env = "VTRIAGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// The database: a SQLite file, or a postgres:// URL [env: VTRIAGE_DB] [default: the
    /// configuration file's `db` (relative to the working directory, not to the file), else
    /// ~/.local/share/vtriage/vtriage.db ($XDG_DATA_HOME/vtriage/vtriage.db); never one in the
    /// working directory unless named]
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<String>,
    /// Log format on standard error
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// More log output (-v: debug, -vv: trace); RUST_LOG overrides
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// Log line format.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The commands.
// clap makes `--help` of these doc comments, where `[upload]` is a configuration section.
#[allow(rustdoc::broken_intra_doc_links)]
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Triage files and folders (recursively) and print a verdict for each distinct content.
    ///
    /// Each file is hashed (SHA-256) and looked up first; a stored fresh verdict costs no
    /// request at all. Unknown files are uploaded only with --upload (or [upload] files =
    /// "unknown"). Exit status: 0 every file triaged and nothing malicious, 1 something
    /// malicious, 2 something left without a verdict (an error, an unreadable file, a failed
    /// verdict, a pending analysis).
    Scan(ScanArgs),
    /// Parse IOC lists (files, or - for standard input) and queue every indicator in them once.
    ///
    /// Formats are detected (plain, LOKI, CSV/TSV, Markdown, AsciiDoc, STIX 2.x, MISP, JSON and
    /// JSON Lines, OpenIOC); defanged indicators are refanged. Per file it says what was taken,
    /// skipped and rejected (with file:line). --dry-run prints what would be queued and touches
    /// nothing.
    Ingest(IngestArgs),
    /// Run the daemon: triage every file dropped into --drop and every indicator in the IOC lists
    /// dropped into --lists, until SIGINT/SIGTERM.
    ///
    /// Files are triaged once they have finished being written (size and mtime unchanged for
    /// [watch] settle_ms). Temporary names (*.part, *.tmp, *.crdownload, ~$*, dot-files) are
    /// skipped; symbolic links are not followed unless [watch] follow_symlinks. The drop
    /// directory is never modified. A restart resumes exactly where the daemon stopped: files and
    /// lists it queued are not read again while unchanged, unless a job of theirs failed or an
    /// unknown one may now be submitted ([upload] changed).
    Run(RunArgs),
    /// Show the queue, the quota, the workers and when the backlog will be done (read-only;
    /// safe while a daemon runs).
    Status {
        /// Print JSON instead of text
        #[arg(long)]
        json: bool,
    },
    /// Run the built-in VirusTotal simulator (for offline use and tests; it ignores --db and
    /// --config).
    ///
    /// It keeps what it knows in memory (preload objects with --known) and reads no
    /// configuration file: --db and --config are listed below only because every command takes
    /// them. --log-format and -v do apply.
    ///
    /// Besides the API under /api/v3, GET /_sim/stats returns what it saw, as JSON (no key
    /// needed; not counted against any quota): "requests", the accepted requests by endpoint
    /// ("GET /files/{id}", "POST /files", "GET /analyses/{id}"...); "api_requests", those that
    /// count against the quota; "uploads", the times each content (by SHA-256) was received;
    /// "url_submissions", by URL; "quota_rejections" (429s) and "auth_failures" (401s) sent;
    /// "faults_injected" and "faults_by_kind"; "max_in_window", the most requests of one key
    /// in any quota window.
    Sim(crate::sim::SimArgs),
    /// Show the whole pipeline working offline: start the simulator, scan generated samples
    /// (the EICAR test file among them), print the verdicts.
    Demo,
    /// Print the verdicts in the database: a table, JSON, JSON lines, CSV or a STIX 2.1 bundle,
    /// filtered and sorted (read-only; safe while a daemon runs).
    ///
    /// The database can also be queried directly: `sqlite3 ~/.local/share/vtriage/vtriage.db
    /// "select * from v_report"` (see docs/schema.md).
    Report(crate::report::ReportArgs),
    /// Triage the given hashes, URLs, domains and IP addresses now and print them like `report`.
    ///
    /// A stored fresh verdict costs no request. Exit status as scan's: 0 everything triaged and
    /// nothing malicious, 1 something malicious, 2 something left without a verdict.
    Lookup(crate::lookup::LookupArgs),
    /// Queue finished verdicts for another look at VirusTotal (an `unknown` hash may be known a
    /// week later, a `pending` analysis may have finished).
    Recheck(crate::lookup::RecheckArgs),
    /// Ask VirusTotal directly: objects, relationships, comments, votes, analyses, downloads.
    /// Prints VirusTotal's JSON; every request counts against the shared quota.
    Vt(crate::vtcmd::VtArgs),
}

/// `vtriage scan`
#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Files or folders
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    /// Upload files VirusTotal does not know (irreversible: they become visible to VirusTotal's customers)
    #[arg(long)]
    pub upload: bool,
    /// Print one JSON document instead of a table: {"results", "errors", "skipped",
    /// "interrupted"}, the results being `report`'s records
    #[arg(long, conflicts_with = "format")]
    pub json: bool,
    /// Output format: table (a verdict per content, then the files that could not be read or
    /// were skipped), or json, jsonl, csv or stix (`report`'s records, as `report --format`
    /// prints them; unreadable and skipped files and an interruption then go to standard error)
    /// [default: table]
    #[arg(long, short = 'f', value_enum, hide_possible_values = true)]
    pub format: Option<crate::report::Format>,
}

/// `vtriage ingest`
#[derive(Debug, Args)]
pub struct IngestArgs {
    /// IOC lists; - reads standard input
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Force a format instead of detecting it
    #[arg(long, value_name = "FORMAT", value_parser = crate::ingest::FormatParser)]
    pub format: Option<crate::ingest::Format>,
    /// Print what would be queued (one line per indicator) and queue nothing
    #[arg(long)]
    pub dry_run: bool,
    /// With --dry-run: JSON lines {"type","value","source"}; with --wait: one JSON document
    /// {"results", "errors", "skipped", "interrupted"}, the results being `report`'s records
    #[arg(long)]
    pub json: bool,
    /// Work the queue until every ingested indicator has a verdict, then print them
    #[arg(long)]
    pub wait: bool,
    /// List every rejected line (not only the first few per file)
    #[arg(long)]
    pub verbose_rejects: bool,
}

/// `vtriage run`
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Drop directory: files landing here are triaged
    #[arg(long, value_name = "DIR")]
    pub drop: Option<PathBuf>,
    /// Lists directory: IOC lists landing here are ingested
    #[arg(long, value_name = "DIR")]
    pub lists: Option<PathBuf>,
}

/// Sets up logging on standard error. The API key cannot reach a log line: it is only ever
/// held as `ApiKey`, whose `Debug`/`Display` print `[redacted]`.
pub fn init_logging(format: LogFormat, verbose: u8, daemon: bool) {
    // sqlx warns of every statement over a second, and streaming a large report is one long
    // statement: that is expected, not worth a warning (-v shows it).
    let default = match verbose {
        // A daemon logs each verdict; one-shot commands print their results instead.
        0 if daemon => "vtriage=info,sqlx::query=error,warn",
        0 => "sqlx::query=error,warn",
        1 => "vtriage=debug,info",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only for a person at a terminal: not in a journal or a file (nor with NO_COLOR).
    let colours = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colours)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Loads the configuration for these global options.
pub fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    let mut config = Config::load(global.config.as_deref())?;
    if let Some(db) = &global.db {
        config.db = db.clone();
    }
    Ok(config)
}

/// A token cancelled on SIGINT or SIGTERM, for a shutdown that lets work in flight finish (or
/// go back to the queue). A second signal ends the process at once, with the exit status of a
/// process that signal killed (130 for SIGINT, 143 for SIGTERM): the user who presses Ctrl-C
/// again does not want to wait, and what was in flight is returned to the queue by the next
/// process on the database (the rescuer), as after a crash.
pub fn shutdown_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    let mut signals = StopSignals::new();
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!("shutting down (signal received; another one stops at once)");
        cancel.cancel();
        let status = signals.next().await;
        tracing::warn!("stopping at once (second signal); unfinished work stays queued");
        std::process::exit(status);
    });
    token
}

/// SIGINT and SIGTERM as they arrive: listened to from the start, so that none is missed
/// between two waits.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> StopSignals {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            StopSignals {
                interrupt: signal(SignalKind::interrupt()).expect("SIGINT handler"),
                terminate: signal(SignalKind::terminate()).expect("SIGTERM handler"),
            }
        }
        #[cfg(not(unix))]
        StopSignals {}
    }

    /// Waits for the next signal; returns the exit status of a process it kills.
    async fn next(&mut self) -> i32 {
        #[cfg(unix)]
        {
            tokio::select! {
                _ = self.interrupt.recv() => 130,
                _ = self.terminate.recv() => 143,
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
            130
        }
    }
}

/// Runs a parsed command line; returns the exit code.
pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    init_logging(
        cli.global.log_format,
        cli.global.verbose,
        matches!(cli.command, Command::Run(_) | Command::Sim(_)),
    );
    match cli.command {
        Command::Scan(args) => {
            let mut config = load_config(&cli.global)?;
            if args.upload {
                config.upload.files = UploadPolicy::Unknown;
            }
            let pipeline = Pipeline::open(config, shutdown_signal()).await?;
            let outcome = scan::scan(&pipeline, &args.paths).await?;
            let output = scan::Output::chosen(args.json, args.format);
            scan::print_outcome(&*pipeline.store, &outcome, output, "file contents").await?;
            Ok(outcome.exit_code())
        }
        Command::Ingest(args) => ingest(args, &cli.global).await,
        Command::Run(args) => {
            if args.drop.is_none() && args.lists.is_none() {
                anyhow::bail!("nothing to watch: give --drop DIR and/or --lists DIR");
            }
            // Absolute, so that the paths stored (read again for uploads, and after a restart)
            // do not depend on the directory the daemon was started from.
            let absolute = |dir: Option<PathBuf>, option| -> anyhow::Result<Option<PathBuf>> {
                let Some(dir) = dir else { return Ok(None) };
                match std::fs::canonicalize(&dir) {
                    Ok(abs) if abs.is_dir() => Ok(Some(abs)),
                    Ok(_) => anyhow::bail!("{option} {} is not a directory", dir.display()),
                    Err(e) => anyhow::bail!("{option} {}: {e}", dir.display()),
                }
            };
            let watched = crate::daemon::Watched {
                drop: absolute(args.drop, "--drop")?,
                lists: absolute(args.lists, "--lists")?,
            };
            let config = load_config(&cli.global)?;
            let pipeline = Pipeline::open(config, shutdown_signal()).await?;
            crate::daemon::run(&pipeline, &watched).await?;
            Ok(0)
        }
        Command::Status { json } => {
            let config = load_config(&cli.global)?;
            let store = crate::pipeline::open_for_reading(&config).await?;
            let status = crate::status::gather(&*store, &config).await?;
            store.close().await;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print!("{}", crate::status::render(&status));
            }
            Ok(0)
        }
        Command::Sim(args) => {
            let stop = shutdown_signal();
            crate::sim::run(args, async move { stop.cancelled().await }).await?;
            Ok(0)
        }
        Command::Demo => crate::demo::run(&cli.global).await,
        Command::Report(args) => {
            let config = load_config(&cli.global)?;
            crate::report::run(&args, &config).await
        }
        Command::Lookup(args) => {
            let config = load_config(&cli.global)?;
            crate::lookup::run(&args, config, shutdown_signal()).await
        }
        Command::Recheck(args) => {
            let config = load_config(&cli.global)?;
            crate::lookup::run_recheck(&args, config, shutdown_signal()).await
        }
        Command::Vt(args) => {
            let mut out = std::io::stdout();
            if crate::vtcmd::is_offline(&args.command) {
                crate::vtcmd::run_offline(&args.command, &mut out).await?;
                return Ok(0);
            }
            crate::vtcmd::check_ids(&args.command)?;
            let config = load_config(&cli.global)?;
            let client = crate::pipeline::client(&config, shutdown_signal()).await?;
            let ran = crate::vtcmd::run(&client, &args.command, &mut out).await;
            client.save_quota_counts().await;
            ran?;
            Ok(0)
        }
    }
}

/// `vtriage ingest`: exit 0, or 2 when a list could not be read (the others are still queued);
/// with --wait, 1 when something is malicious.
async fn ingest(args: IngestArgs, global: &GlobalArgs) -> anyhow::Result<i32> {
    let config = load_config(global)?;
    // Lists that could not be read, or that the database refused (a full disk): the others
    // are still read and queued, and the exit status is 2.
    let mut failed = 0;
    if args.dry_run {
        let mut out = std::io::stdout().lock();
        for file in &args.files {
            let mut printed = Ok(());
            let parsed = lists::parse(file, args.format, &config, |job| {
                if printed.is_ok() {
                    printed = lists::print_dry_run(&job, args.json, &mut out);
                }
            });
            printed?;
            match parsed {
                Ok(list) => eprint!("{}", lists::describe(&list, args.verbose_rejects)),
                Err(e) => {
                    eprintln!("vtriage: {e}");
                    failed += 1;
                }
            }
        }
        return Ok(if failed > 0 { 2 } else { 0 });
    }
    let pipeline = match args.wait {
        true => Some(Pipeline::open(config.clone(), shutdown_signal()).await?),
        false => None,
    };
    let store: std::sync::Arc<dyn crate::store::Store> = match &pipeline {
        Some(p) => p.store.clone(),
        None => crate::pipeline::open_store(&config).await?,
    };
    // Without --wait no handler is installed: SIGINT ends the process as it always did.
    let stop = pipeline
        .as_ref()
        .map_or_else(CancellationToken::new, |p| p.stop.clone());
    let mut ids = Vec::new();
    let mut queued = lists::Queued::default();
    for file in &args.files {
        match queue_showing_progress(&*store, file, args.format, &config, &stop).await {
            Ok(list) => {
                eprint!("{}", lists::describe(&list.list, args.verbose_rejects));
                ids.extend(list.ids);
                queued.add(list.counts);
            }
            Err(e @ lists::ListError::Read { .. }) => {
                eprintln!("vtriage: {e}");
                failed += 1;
            }
            Err(e @ lists::ListError::Stopped { .. }) => {
                eprintln!("vtriage: {e}; what was queued before stays queued");
                break;
            }
            Err(lists::ListError::Store(e)) => {
                eprintln!(
                    "vtriage: {}: the database {} refused its indicators: {e}; what was queued \
                     before stays queued, and ingesting it again is safe",
                    crate::terminal::escape_control(&file.display().to_string()),
                    crate::pipeline::database_shown(&config),
                );
                failed += 1;
            }
        }
    }
    eprintln!(
        "queued {} new and {} stale indicators; {} already queued; {} answered by a fresh stored verdict",
        queued.new, queued.reopened, queued.queued, queued.fresh
    );
    let Some(pipeline) = pipeline else {
        return Ok(if failed > 0 { 2 } else { 0 });
    };
    ids.sort_unstable();
    ids.dedup();
    // Interrupted while the lists were read: no worker starts.
    let drained = if stop.is_cancelled() {
        Err(crate::pipeline::Interrupted::Shutdown)
    } else {
        pipeline.spawn_workers_for(&ids).await;
        crate::progress::drain_showing_progress(&pipeline, &ids).await
    };
    pipeline.shutdown().await;
    let outcome = scan::ScanOutcome {
        results: pipeline.store.results(&ids).await?,
        interrupted: drained.err().map(|e| e.to_string()),
        ..scan::ScanOutcome::default()
    };
    let output = scan::Output::chosen(args.json, None);
    scan::print_outcome(&*pipeline.store, &outcome, output, "indicators").await?;
    Ok(if failed > 0 { 2 } else { outcome.exit_code() })
}

/// [`lists::queue`], with a spinner on a terminal counting the indicators read (a million-line
/// list takes seconds).
async fn queue_showing_progress(
    store: &dyn crate::store::Store,
    file: &std::path::Path,
    format: Option<crate::ingest::Format>,
    config: &Config,
    stop: &CancellationToken,
) -> Result<lists::QueuedList, lists::ListError> {
    use std::sync::atomic::{AtomicU64, Ordering};
    let read = std::sync::Arc::new(AtomicU64::new(0));
    let spinner = crate::progress::spinner();
    let name = file.display().to_string();
    // Nothing to show off a terminal: no task waking to show it.
    let shown = (!spinner.is_hidden()).then(|| {
        let (read, spinner) = (read.clone(), spinner.clone());
        tokio::spawn(async move {
            loop {
                let n = read.load(Ordering::Relaxed);
                spinner.set_message(format!("queueing {name}: {n} indicators read"));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        })
    });
    let queued = lists::queue_counting(store, file, format, config, read, stop).await;
    if let Some(shown) = shown {
        shown.abort();
    }
    spinner.finish_and_clear();
    queued
}
