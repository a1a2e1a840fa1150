//! The schema experiments of BENCHMARKS.md ("Ingest, ninth session"): queues the unique
//! indicators of a list into a new database the way `src/store/enqueue.rs` does (a prepared
//! statement per job, then its source), with variants of the schema and the order, and prints
//! where the time went. Parsing is done first and not timed.
//!
//! ```sh
//! cargo run --release --example ingest_schema -- LIST [VARIANT[,VARIANT...]] [JOBS_PER_TRANSACTION]
//! ```
//!
//! Variants: `base` (the schema as it is), `trigger` (the per-row count trigger of migration 3
//! back), `fp` (a 64-bit fingerprint with `UNIQUE (fp)` in place of `UNIQUE (kind, indicator)`),
//! `sorted` (each transaction's jobs sorted by key; ids then follow that order), `sortedid`
//! (sorted, but each job given the id of its place in the list), `nostate` (without the
//! `jobs_by_state` index).

use std::time::Instant;

use rusqlite::{Connection, params};
use sha2::{Digest, Sha256};
use vtriage::config::Config;
use vtriage::store::sqlite::SqliteStore;

/// The jobs table of migration 5 with a fingerprint key in place of `UNIQUE (kind, indicator)`.
const FP_JOBS: &str = "
DROP TABLE jobs;
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    fp               INTEGER NOT NULL,
    kind             TEXT    NOT NULL CHECK (kind = 'file' OR kind = 'hash' OR kind = 'url' OR kind = 'domain' OR kind = 'ip'),
    indicator        TEXT    NOT NULL,
    state            TEXT    NOT NULL DEFAULT 'available'
                     CHECK (state = 'available' OR state = 'running' OR state = 'completed' OR state = 'discarded'),
    step             TEXT    NOT NULL DEFAULT 'lookup' CHECK (step = 'lookup' OR step = 'poll'),
    priority         INTEGER NOT NULL DEFAULT 1,
    attempt          INTEGER NOT NULL DEFAULT 0,
    max_attempts     INTEGER NOT NULL,
    scheduled_at     INTEGER NOT NULL,
    lease_owner      TEXT,
    lease_expires_at INTEGER,
    allow_submit     INTEGER NOT NULL DEFAULT 0,
    submitted_at     INTEGER,
    analysis_id      TEXT,
    polls            INTEGER NOT NULL DEFAULT 0,
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    finished_at      INTEGER,
    UNIQUE (fp)
);
CREATE INDEX jobs_claimable ON jobs (state, priority DESC, scheduled_at);
CREATE INDEX jobs_by_state ON jobs (state);
CREATE INDEX jobs_last_errors ON jobs (updated_at) WHERE last_error IS NOT NULL;
CREATE TRIGGER job_counts_update AFTER UPDATE OF state, step ON jobs
WHEN OLD.state IS NOT NEW.state OR OLD.step IS NOT NEW.step BEGIN
    UPDATE job_counts SET n = n - 1 WHERE state = OLD.state AND kind = OLD.kind AND step = OLD.step;
    UPDATE job_counts SET n = n + 1 WHERE state = NEW.state AND kind = NEW.kind AND step = NEW.step;
END;";

/// The insert trigger that migration 7 dropped.
const INSERT_TRIGGER: &str = "
CREATE TRIGGER job_counts_insert AFTER INSERT ON jobs BEGIN
    UPDATE job_counts SET n = n + 1 WHERE state = NEW.state AND kind = NEW.kind AND step = NEW.step;
END;";

struct Row {
    kind: &'static str,
    indicator: String,
    line: u32,
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(list) = args.first() else {
        eprintln!("usage: ingest_schema LIST [VARIANT[,VARIANT...]] [JOBS_PER_TRANSACTION]");
        std::process::exit(2);
    };
    let variants = args.get(1).map_or("base", String::as_str);
    let has = |v: &str| variants.split(',').any(|x| x == v);
    let per_transaction: usize = args
        .get(2)
        .map_or(200_000, |n| n.parse().expect("a number"));

    let mut rows = Vec::new();
    vtriage::lists::parse(list.as_ref(), None, &Config::default(), |job| {
        let line = job.source.map_or(0, |(_, line)| line);
        rows.push(Row {
            kind: job.kind.as_str(),
            indicator: job.indicator,
            line,
        });
    })
    .expect("a readable list");

    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("x.db");
    drop(SqliteStore::open(&db).await.expect("a new database"));
    let mut conn = Connection::open(&db).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; PRAGMA cache_size = -32768;
         PRAGMA foreign_keys = ON;",
    )
    .unwrap();
    if has("fp") {
        conn.execute_batch(&format!("PRAGMA foreign_keys = OFF; {FP_JOBS}"))
            .unwrap();
        conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    }
    if has("trigger") {
        conn.execute_batch(INSERT_TRIGGER).unwrap();
    }
    if has("nostate") {
        conn.execute_batch("DROP INDEX jobs_by_state").unwrap();
    }

    let started = Instant::now();
    let (mut jobs_secs, mut sources_secs, mut commit_secs) = (0.0, 0.0, 0.0);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    for chunk in order.chunks_mut(per_transaction) {
        let key = |&i: &usize| (rows[i].kind, rows[i].indicator.as_str());
        // The chunk is in list order until sorted: its first row is its first place.
        let start = chunk[0];
        if has("sorted") || has("sortedid") {
            chunk.sort_by(|a, b| key(a).cmp(&key(b)));
        }
        let t = Instant::now();
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .unwrap();
        let first_id: i64 = tx
            .query_row("SELECT COALESCE(MAX(id), 0) + 1 FROM jobs", [], |r| {
                r.get(0)
            })
            .unwrap();
        let mut ids = vec![None; chunk.len()];
        {
            let columns = if has("fp") { "fp, " } else { "" };
            let mut insert = tx
                .prepare(&format!(
                    "INSERT OR IGNORE INTO jobs (id, {columns}kind, indicator, max_attempts,
                         scheduled_at, created_at, updated_at)
                     VALUES (?1, {}?2, ?3, 5, 1000, 1000, 1000)",
                    if has("fp") { "?4, " } else { "" }
                ))
                .unwrap();
            for (k, &i) in chunk.iter().enumerate() {
                let row = &rows[i];
                let id = has("sortedid").then(|| first_id + (i - start) as i64);
                let inserted = if has("fp") {
                    let digest = Sha256::digest(format!("{}\0{}", row.kind, row.indicator));
                    let fp = i64::from_le_bytes(digest[..8].try_into().unwrap());
                    insert.execute(params![id, row.kind, row.indicator, fp])
                } else {
                    insert.execute(params![id, row.kind, row.indicator])
                }
                .unwrap();
                if inserted == 1 {
                    ids[k] = Some((row.kind, tx.last_insert_rowid()));
                }
            }
        }
        let t2 = Instant::now();
        {
            let mut source = tx
                .prepare(
                    "INSERT OR IGNORE INTO sources (job_id, source, line, seen_at)
                     VALUES (?1, 'list.txt', ?2, 1000)",
                )
                .unwrap();
            for (k, &i) in chunk.iter().enumerate() {
                if let Some((_, id)) = ids[k] {
                    source.execute(params![id, rows[i].line]).unwrap();
                }
            }
        }
        let t3 = Instant::now();
        if !has("trigger") {
            // As the enqueuer counts: one statement per kind.
            let mut new = std::collections::BTreeMap::new();
            for (kind, _) in ids.iter().flatten() {
                *new.entry(*kind).or_insert(0i64) += 1;
            }
            for (kind, n) in new {
                tx.execute(
                    "UPDATE job_counts SET n = n + ?2
                     WHERE state = 'available' AND kind = ?1 AND step = 'lookup'",
                    params![kind, n],
                )
                .unwrap();
            }
        }
        tx.commit().unwrap();
        let t4 = Instant::now();
        jobs_secs += (t2 - t).as_secs_f64();
        sources_secs += (t3 - t2).as_secs_f64();
        commit_secs += (t4 - t3).as_secs_f64();
    }
    println!(
        "{variants} {per_transaction}: total {:.2} s, jobs {jobs_secs:.2}, sources {sources_secs:.2}, \
         commits {commit_secs:.2} ({} jobs)",
        started.elapsed().as_secs_f64(),
        rows.len()
    );
}
