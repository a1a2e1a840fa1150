//! The `vtriage` binary: parse the command line, run, map the outcome to an exit code.

use std::process::ExitCode;

use clap::Parser;

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
