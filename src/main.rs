//! The `vtriage` binary: parse the command line, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

/// mimalloc instead of glibc's malloc: the workers free many short-lived buffers of very
/// different sizes (VT objects, SQL arguments), and glibc spent a sixth of the pipeline's CPU
/// coalescing them (`unlink_chunk`, `malloc_consolidate`); see BENCHMARKS.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = vtriage::cli::Cli::parse();
    let json_logs = matches!(cli.global.log_format, vtriage::cli::LogFormat::Json);
    match vtriage::cli::run(cli).await {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) if json_logs => {
            // A log shipper parses every line: the one that says why it stopped most of all.
            tracing::error!(error = format!("{e:#}"), "vtriage stopped");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("vtriage: {e:#}");
            ExitCode::from(2)
        }
    }
}
