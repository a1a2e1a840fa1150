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
            tracing::error!(error = because(&e), "vtriage stopped");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("vtriage: {}", because(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes, each said once: sqlx's errors (and others) repeat their source's
/// text in their own ("database or disk is full: database or disk is full").
fn because(e: &anyhow::Error) -> String {
    let mut said = String::new();
    for cause in e.chain().map(ToString::to_string) {
        if !said.contains(&cause) {
            if !said.is_empty() {
                said.push_str(": ");
            }
            said.push_str(&cause);
        }
    }
    said
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_cause_is_said_once() {
        let inner = std::io::Error::other("database or disk is full");
        let e = anyhow::Error::new(inner)
            .context("error returned from database: database or disk is full");
        assert_eq!(
            because(&e),
            "error returned from database: database or disk is full"
        );
        let e = anyhow::anyhow!("disk full").context("cannot queue the files");
        assert_eq!(because(&e), "cannot queue the files: disk full");
    }
}
