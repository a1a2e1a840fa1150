//! vtriage: triage files, hashes, URLs, domains and IP addresses against VirusTotal v3,
//! frugally and crash-safely.
//!
//! The pipeline, in the order work flows through it:
//! - [`watch`] and [`scan`] find files, [`ingest`] parses IOC lists into [`indicator`]s;
//! - [`store`] keeps the durable job queue and the verdicts;
//! - [`worker`] claims jobs and asks VirusTotal through [`vt`], within the [`quota`];
//! - [`verdict`] turns VirusTotal's counts into a verdict; `report` gets them out.
//!
//! [`sim`] is a VirusTotal simulator, so that everything runs offline.
//!
//! These docs are for the people who work on vtriage (`cargo doc --document-private-items`, which
//! `scripts/test` checks), so they link private items too.
#![allow(rustdoc::private_intra_doc_links)]

pub mod cli;
pub mod config;
pub mod daemon;
pub mod demo;
pub mod hashing;
pub mod indicator;
pub mod ingest;
pub mod lists;
pub mod lookup;
pub mod pipeline;
pub mod progress;
pub mod quota;
pub mod recurring;
pub mod report;
pub mod scan;
pub mod sim;
pub mod status;
pub mod stopping;
pub mod store;
pub mod terminal;
pub mod verdict;
pub mod vt;
pub mod vtcmd;
pub mod watch;
pub mod worker;
