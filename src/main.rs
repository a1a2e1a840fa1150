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
    match vtriage::cli::run(cli).await {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("vtriage: {e:#}");
            ExitCode::from(2)
        }
    }
}
