//! `vtriage demo`: the whole pipeline, offline. Starts the built-in simulator on loopback,
//! generates a few samples (the EICAR test file, clean files, a duplicate, one the simulator
//! already "knows"), scans them with uploads allowed (nothing leaves this machine), and prints
//! the verdicts and what each step cost in requests.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::cli::GlobalArgs;
use crate::config::{ApiKey, UploadPolicy};
use crate::pipeline::Pipeline;
use crate::scan;
use crate::sim::{self, Known, KnownFile, SimConfig};

/// The EICAR anti-virus test string: harmless, and flagged by every engine by convention.
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// Runs the demo; returns the scan's exit code (1: the EICAR file is malicious). With an API
/// key configured (`VT_API_KEY`), the samples are looked up at the real VirusTotal instead, under
/// the configured policy (by default nothing is uploaded).
pub async fn run(global: &GlobalArgs) -> anyhow::Result<i32> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    let samples = dir.path().join("samples");
    std::fs::create_dir(&samples)?;
    let known = b"a file VirusTotal has seen before\n";
    let notes = b"meeting notes: nothing to see here\n";
    let files: [(&str, &[u8]); 5] = [
        ("eicar.com", EICAR),
        ("notes.txt", notes),
        ("notes-copy.txt", notes),
        ("report.csv", b"host,verdict\nexample.test,clean\n"),
        ("known.bin", known),
    ];
    for (name, content) in files {
        std::fs::write(samples.join(name), content)?;
    }
    let mut config = crate::cli::load_config(global)?;
    config.db = global
        .db
        .clone()
        .unwrap_or_else(|| dir.path().join("demo.db").display().to_string());

    if config.virustotal.api_key.is_some() {
        println!(
            "vtriage demo: looking the samples in {} up at {} (uploads: {:?})\n",
            samples.display(),
            config.virustotal.api_url,
            config.upload.files
        );
        let pipeline = Pipeline::open(config, crate::cli::shutdown_signal()).await?;
        let outcome = scan::scan(&pipeline, &[samples]).await?;
        print!("{}", scan::summary_table(&outcome, "file contents"));
        return Ok(outcome.exit_code());
    }

    let simulator = sim::spawn(SimConfig {
        api_keys: vec!["demo-key".into()],
        analysis_delay: (Duration::from_millis(800), Duration::from_millis(1500)),
        known: Known {
            files: vec![KnownFile::clean_content(known)],
            ..Known::default()
        },
        ..SimConfig::default()
    })
    .await
    .context("cannot start the simulator")?;
    config.virustotal.api_url = simulator.base_url();
    config.virustotal.api_key = Some(ApiKey::new("demo-key"));
    config.upload.files = UploadPolicy::Unknown;
    config.quota.requests = 4;
    config.quota.window_secs = 1.0;
    config.poll.first_delay_secs = 1.0;
    config.poll.max_interval_secs = 2.0;

    println!(
        "vtriage demo: simulator on {}, samples in {}\n",
        simulator.base_url(),
        samples.display()
    );
    let pipeline = Pipeline::open(config, CancellationToken::new()).await?;
    let outcome = scan::scan(&pipeline, &[samples]).await?;
    print!("{}", scan::summary_table(&outcome, "file contents"));
    let stats = simulator.stats();
    println!("\nrequests the simulator answered (quota: 4 per second in this demo):");
    for (endpoint, n) in &stats.requests {
        println!("  {n:>4}  {endpoint}");
    }
    println!(
        "  uploads received: {} (one per unknown content; the duplicate cost nothing)",
        stats.uploads.values().sum::<u64>()
    );
    simulator.shutdown().await;
    Ok(outcome.exit_code())
}
