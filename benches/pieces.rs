//! Criterion benchmarks of the pieces that bound the pipeline on one machine: hashing, IOC-list
//! parsing and the compression of stored VirusTotal objects. The end-to-end runs (quota economy,
//! throughput against the simulator, ingest into SQLite, memory) are in `benches/e2e.rs`, driven
//! by `scripts/bench`.

use std::hint::black_box;
use std::io::Write;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use sha2::{Digest, Sha256};

/// Bytes hashed per iteration: large enough that per-call overhead is invisible.
const HASH_BYTES: usize = 64 << 20;
/// Lines of the synthetic IOC list parsed per iteration.
const LIST_LINES: usize = 100_000;

fn hashing(c: &mut Criterion) {
    let data = vec![0x5au8; HASH_BYTES];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("blob");
    std::fs::write(&path, &data).unwrap();
    let mut group = c.benchmark_group("sha256");
    group.throughput(Throughput::Bytes(HASH_BYTES as u64));
    group.sample_size(10);
    group.bench_function("in_memory", |b| {
        b.iter(|| black_box(Sha256::digest(black_box(&data))))
    });
    group.bench_function("file_streamed", |b| {
        b.iter(|| black_box(vtriage::hashing::sha256_file_blocking(&path).unwrap()))
    });
    group.finish();
}

fn ingest_parse(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("iocs.txt");
    let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for line in vtriage_bench_list(LIST_LINES) {
        writeln!(out, "{line}").unwrap();
    }
    out.flush().unwrap();
    drop(out);
    let mut group = c.benchmark_group("ingest");
    group.throughput(Throughput::Elements(LIST_LINES as u64));
    group.sample_size(10);
    let opts = vtriage::ingest::Options::default();
    group.bench_function("parse_normalise_dedup_100k_lines", |b| {
        b.iter(|| {
            let mut n = 0usize;
            vtriage::ingest::parse_path(&path, None, &opts, |_| n += 1).unwrap();
            black_box(n)
        })
    });
    group.finish();
}

fn storage(c: &mut Criterion) {
    let objects = fixture_objects();
    let raw: usize = objects.iter().map(Vec::len).sum();
    let mut group = c.benchmark_group("storage");
    group.throughput(Throughput::Bytes(raw as u64));
    group.bench_function("compress_fixture_objects", |b| {
        b.iter(|| {
            objects
                .iter()
                .map(|o| vtriage::store::sqlite::compress(o).len())
                .sum::<usize>()
        })
    });
    group.finish();
}

/// Every JSON reply under `tests/fixtures/vt-responses/`, as bytes.
fn fixture_objects() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/vt-responses");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "json") {
            out.push(std::fs::read(path).unwrap());
        }
    }
    out
}

#[path = "support/workload.rs"]
mod workload;
use workload::ioc_lines as vtriage_bench_list;

criterion_group!(benches, hashing, ingest_parse, storage);
criterion_main!(benches);
