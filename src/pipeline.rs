//! Assembles the pipeline from a configuration: the store, the quota gate of the key, the
//! VirusTotal client and a pool of workers, plus the housekeeping every process does (register
//! itself, heartbeat, rescue the jobs of dead workers).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, VtConfig, secs};
use crate::quota::{Gate, Limiter, Unlimited};
use crate::recurring::Recurring;
use crate::store::postgres::PgStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{MaySubmit, Millis, Store, WorkerInfo, now_millis};
use crate::vt;
use crate::worker::{PollClock, SharedClaims, Worker};

/// How often a process says it is alive and looks for abandoned jobs.
const HEARTBEAT: Duration = Duration::from_secs(2);
/// A worker silent this long is presumed dead and its jobs are rescued.
pub(crate) const STALE_MS: i64 = 30_000;

/// A running pipeline.
pub struct Pipeline {
    /// The queue.
    pub store: Arc<dyn Store>,
    /// The concrete SQLite store, when the database is SQLite (reports read it directly).
    pub sqlite: Option<Arc<SqliteStore>>,
    /// VirusTotal behind the quota gate.
    pub client: Arc<vt::Client>,
    /// The configuration in force.
    pub config: Arc<Config>,
    /// The worker template (identity, fatal-error channel).
    pub worker: Worker,
    /// Cancelled to stop claiming (shutdown); in-flight work gets the grace period.
    pub stop: CancellationToken,
    /// The key's fingerprint, under which its quota is kept.
    pub key_id: String,
    tasks: Mutex<JoinSet<()>>,
}

/// Why working the queue ended early.
#[derive(Debug, thiserror::Error)]
pub enum Interrupted {
    /// A fatal error (the key was refused) stopped every worker.
    #[error("{0}")]
    Fatal(String),
    /// Shutdown was requested (SIGINT/SIGTERM).
    #[error("interrupted")]
    Shutdown,
}

/// This process's name in leases: host, pid and start time.
pub fn owner_name() -> (String, String, u32) {
    let host = crate::store::this_host();
    let pid = std::process::id();
    (format!("{host}:{pid}:{}", now_millis()), host, pid)
}

/// An opened database: the queue behind the trait, and the concrete SQLite store when it is one.
pub struct OpenedStore {
    /// The queue.
    pub store: Arc<dyn Store>,
    /// The same store as SQLite, for the reports that read it directly.
    pub sqlite: Option<Arc<SqliteStore>>,
}

/// Is `db` a PostgreSQL URL (rather than a SQLite path)?
pub fn is_postgres_url(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

/// Opens the database named by the configuration: a `postgres://` or `postgresql://` URL
/// selects PostgreSQL (several daemons sharing one queue and quota), anything else is the path
/// of a SQLite file.
pub async fn open_store(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    Ok(open_database(config).await?.store)
}

/// For commands that only read or change what is queued (`status`, `report`, `recheck`): a
/// SQLite file that does not exist is an error (a mistyped `--db`), not a new empty database.
pub fn require_database(config: &Config) -> anyhow::Result<()> {
    if !is_postgres_url(&config.db) && !Path::new(&config.db).exists() {
        bail!(
            "no database at {}: nothing was queued there (--db or VTRIAGE_DB names the database)",
            config.db
        );
    }
    Ok(())
}

/// For commands that only read (`status`, `report`): [`open_store`] after
/// [`require_database`], or, when the
/// SQLite file cannot be written (a copy on read-only media, another user's file), the file
/// opened for reading only.
pub async fn open_for_reading(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    require_database(config)?;
    if is_postgres_url(&config.db) {
        return open_store(config).await;
    }
    let path = Path::new(&config.db);
    let store = match SqliteStore::open(path).await {
        Err(e) if crate::store::sqlite::cannot_write(&e) => SqliteStore::open_read_only(path)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read the database {}: {e}", config.db))?,
        opened => {
            opened.map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", config.db))?
        }
    };
    Ok(Arc::new(store))
}

/// [`open_store`], keeping the concrete SQLite store when the database is SQLite.
pub async fn open_database(config: &Config) -> anyhow::Result<OpenedStore> {
    if is_postgres_url(&config.db) {
        let store = PgStore::open(&config.db)
            .await
            // The URL may hold a password: name only where it points.
            .with_context(|| {
                format!("cannot open the PostgreSQL database {}", redact(&config.db))
            })?;
        return Ok(OpenedStore {
            store: Arc::new(store),
            sqlite: None,
        });
    }
    let path = Path::new(&config.db);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.is_dir()
    {
        if !crate::config::is_default_database(&config.db) {
            bail!(
                "cannot open the database {}: there is no directory {}",
                config.db,
                dir.display()
            );
        }
        make_private_dir(dir)
            .with_context(|| format!("cannot make the directory {}", dir.display()))?;
    }
    // sqlx's message already holds its source's: the chain would say it twice.
    let store = SqliteStore::open(path)
        .await
        .map_err(|e| anyhow::anyhow!("cannot open the database {}: {e}", config.db))?;
    let sqlite = Arc::new(store);
    Ok(OpenedStore {
        store: sqlite.clone(),
        sqlite: Some(sqlite),
    })
}

/// Whether this process may take other workers for dead. After a silence of its own longer
/// than a worker may keep ([`STALE_MS`]: the database was down, or out of reach), the others
/// most likely were silenced too: they get as long again to come back before they are dropped
/// and their jobs rescued (a file only their host holds handed to a host that cannot read it).
#[derive(Debug)]
struct Silence {
    /// The last heartbeat the database took.
    last_heard: Millis,
    /// When the database took one again after a long silence.
    back_since: Millis,
}

impl Silence {
    fn new(now: Millis) -> Silence {
        Silence {
            last_heard: now,
            back_since: now - STALE_MS,
        }
    }

    /// Whether, at `now`, silent workers may be taken for dead.
    fn settled(&mut self, now: Millis) -> bool {
        if now - self.last_heard > STALE_MS {
            self.back_since = now;
        }
        now - self.back_since >= STALE_MS
    }

    /// The database took a heartbeat at `now`.
    fn heard(&mut self, now: Millis) {
        self.last_heard = now;
    }
}

/// Makes `dir` and its missing parents, readable by its owner only (the XDG rule for a data
/// directory; it will hold what was triaged).
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The database as messages name it: the SQLite path, or the PostgreSQL URL without its
/// password.
pub fn database_shown(config: &Config) -> String {
    match is_postgres_url(&config.db) {
        true => redact(&config.db),
        false => config.db.clone(),
    }
}

/// A database URL without its password, whether in its user part (`user:secret@`) or in a
/// parameter (`?password=secret`, which PostgreSQL's clients accept too).
fn redact(url: &str) -> String {
    let Ok(mut u) = url::Url::parse(url) else {
        return "(unparsable URL)".into();
    };
    if u.password().is_some() {
        let _ = u.set_password(Some("***"));
    }
    let secret = |name: &str| name.eq_ignore_ascii_case("password") || name == "sslpassword";
    if u.query_pairs().any(|(name, _)| secret(&name)) {
        let pairs: Vec<(String, String)> = u
            .query_pairs()
            .map(|(name, value)| {
                let value = if secret(&name) {
                    "***".into()
                } else {
                    value.into_owned()
                };
                (name.into_owned(), value)
            })
            .collect();
        u.query_pairs_mut().clear().extend_pairs(pairs);
    }
    u.to_string()
}

impl Pipeline {
    /// Builds the pipeline; needs the API key. `stop` is the shutdown signal.
    pub async fn open(config: Config, stop: CancellationToken) -> anyhow::Result<Pipeline> {
        let Some(key) = config.virustotal.api_key.clone() else {
            bail!(
                "no VirusTotal API key: set VT_API_KEY (or [virustotal] api_key in the config file)"
            );
        };
        let OpenedStore { store, sqlite } = open_database(&config).await?;
        let key_id = key.fingerprint();
        let gate = quota_gate(&store, key_id.clone(), &config, stop.clone());
        let client = vt::Client::new(
            &config.virustotal.api_url,
            key,
            gate,
            secs(config.virustotal.timeout_secs),
        )
        .context("cannot set up the VirusTotal client")?
        .with_retry(retry_policy(&config.virustotal))
        .with_requests_in_flight(config.virustotal.requests_in_flight);
        let (owner, host, pid) = owner_name();
        let in_database = || {
            format!(
                "cannot register in the database {}",
                database_shown(&config)
            )
        };
        store
            .heartbeat(
                &owner,
                &host,
                pid,
                now_millis(),
                STALE_MS,
                &dead_local_workers(&*store, &host).await,
            )
            .await
            .with_context(in_database)?;
        let registration = crate::status::Registration::of(&config).to_json();
        store
            .describe_worker(&owner, &registration)
            .await
            .with_context(in_database)?;
        let rescued = store.rescue(now_millis()).await.with_context(in_database)?;
        if rescued > 0 {
            tracing::info!(rescued, "returned jobs of stopped workers to the queue");
        }
        // What the process before learned of analysis times, so that its first polls are not
        // spent learning it again.
        let poll_estimates = store.poll_estimates().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the poll delays learned before");
            None
        });
        let config = Arc::new(config);
        let worker = Worker {
            store: store.clone(),
            client: Arc::new(client),
            config: config.clone(),
            owner: owner.clone(),
            fatal: CancellationToken::new(),
            fatal_reason: Arc::new(Mutex::new(None)),
            poll_clock: Arc::new(PollClock::resume(&config.poll, poll_estimates)),
            claims: Arc::new(SharedClaims::new(MaySubmit::of(&config.upload))),
        };
        let pipeline = Pipeline {
            store,
            sqlite,
            client: worker.client.clone(),
            config,
            worker,
            stop,
            key_id,
            tasks: Mutex::new(JoinSet::new()),
        };
        pipeline.spawn_housekeeping(host, pid);
        Ok(pipeline)
    }

    fn spawn_housekeeping(&self, host: String, pid: u32) {
        let store = self.store.clone();
        let owner = self.worker.owner.clone();
        let stop = self.stop.clone();
        let clock = self.worker.poll_clock.clone();
        self.tasks.lock().expect("task set").spawn(async move {
            let mut silence = Silence::new(now_millis());
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(HEARTBEAT) => {}
                    _ = stop.cancelled() => return,
                }
                let now = now_millis();
                let settled = silence.settled(now);
                let stale_ms = if settled { STALE_MS } else { i64::MAX };
                let dead = dead_local_workers(&*store, &host).await;
                let beat = store
                    .heartbeat(&owner, &host, pid, now, stale_ms, &dead)
                    .await;
                if beat.is_ok() {
                    silence.heard(now);
                }
                let rescued = match settled {
                    true => store.rescue(now_millis()).await,
                    false => Ok(0),
                };
                let saved = match clock.take_learned() {
                    Some(learned) => store.save_poll_estimates(learned, now_millis()).await,
                    None => Ok(()),
                };
                if let Err(e) = beat.and(rescued.map(|_| ())).and(saved) {
                    static SAID: Recurring = Recurring::every(crate::recurring::EVERY);
                    if let Some(recurred) = SAID.say(&e.to_string()) {
                        tracing::warn!(error = %e, recurred, "housekeeping failed; will retry");
                    }
                }
            }
        });
    }

    /// Starts the configured number of workers.
    pub fn spawn_workers(&self) {
        let idle = Duration::from_millis(200);
        let mut tasks = self.tasks.lock().expect("task set");
        for _ in 0..self.config.daemon.workers {
            tasks.spawn(self.worker.clone().run(self.stop.clone(), idle));
        }
    }

    /// Starts the workers for a command waiting for `ids`: those jobs first, then the rest of
    /// the queue (a daemon's backlog would otherwise keep the command waiting for hours at a
    /// public key's pace).
    pub async fn spawn_workers_for(&self, ids: &[i64]) {
        let may = MaySubmit::of(&self.config.upload);
        if let Err(e) = self.store.put_first(ids, may).await {
            tracing::warn!(error = %e, "cannot put the awaited jobs first; they keep their turn");
        }
        self.spawn_workers();
    }

    /// Works until none of `ids` is left unfinished, calling `progress(done, total)` as it goes.
    pub async fn drain(
        &self,
        ids: &[i64],
        mut progress: impl FnMut(u64, u64),
    ) -> Result<(), Interrupted> {
        let total = ids.len() as u64;
        // Finished jobs stay finished: each look asks only about those still unfinished.
        let mut left = ids.to_vec();
        loop {
            match self.store.unfinished(&left).await {
                Ok(still) if still.is_empty() => {
                    progress(total, total);
                    return Ok(());
                }
                Ok(still) => {
                    left = still;
                    progress(total - left.len() as u64, total);
                }
                Err(e) => tracing::warn!(error = %e, "cannot read progress"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = self.worker.fatal.cancelled() => return Err(Interrupted::Fatal(self.fatal_reason())),
                _ = self.stop.cancelled() => return Err(Interrupted::Shutdown),
            }
        }
    }

    /// The error that stopped the workers, if any.
    pub fn fatal_reason(&self) -> String {
        self.worker
            .fatal_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default()
    }

    /// Stops claiming, lets in-flight work finish or be released, and unregisters.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        let mut tasks = std::mem::take(&mut *self.tasks.lock().expect("task set"));
        let grace = secs(self.config.daemon.shutdown_grace_secs) + Duration::from_secs(5);
        if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
            .await
            .is_err()
        {
            tracing::warn!(
                "workers did not stop within the grace period; their leases will expire"
            );
        }
        self.client.save_quota_counts().await;
        if let Some(learned) = self.worker.poll_clock.take_learned()
            && let Err(e) = self.store.save_poll_estimates(learned, now_millis()).await
        {
            tracing::warn!(error = %e, "could not save the poll delays learned");
        }
        if let Err(e) = self.store.unregister(&self.worker.owner).await {
            tracing::warn!(error = %e, "could not unregister this worker");
        }
    }
}

/// The quota gate of the key `key_id`: its limits, or a count when it has none.
fn quota_gate(
    store: &Arc<dyn Store>,
    key_id: String,
    config: &Config,
    stop: CancellationToken,
) -> Arc<dyn Gate> {
    if config.quota.unlimited {
        tracing::info!("the key has no limits ([quota] unlimited): requests are counted, not held");
        Arc::new(Unlimited::start(store.clone(), key_id, &config.quota, stop))
    } else {
        Arc::new(Limiter::new(store.clone(), key_id, &config.quota, stop))
    }
}

/// Registered workers on this host whose process no longer exists (so their jobs can be
/// rescued at once instead of after their leases expire).
async fn dead_local_workers(store: &dyn Store, host: &str) -> Vec<String> {
    let Ok(workers) = store.workers().await else {
        return Vec::new();
    };
    workers
        .into_iter()
        .filter(|w| process_gone(w, host))
        .map(|w| w.owner)
        .collect()
}

/// Whether `w` runs on `host` (this one) and its process is gone (killed, crashed). Only
/// where `/proc` tells.
pub(crate) fn process_gone(w: &WorkerInfo, host: &str) -> bool {
    w.host == host
        && w.pid != i64::from(std::process::id())
        && Path::new("/proc/self").exists()
        && !Path::new(&format!("/proc/{}", w.pid)).exists()
}

/// A VirusTotal client for one-off requests (`vtriage vt ...`): the same quota gate as the
/// workers (the ledger in the database), no workers, no registration. `stop` interrupts a wait
/// for the quota.
pub async fn client(config: &Config, stop: CancellationToken) -> anyhow::Result<vt::Client> {
    let Some(key) = config.virustotal.api_key.clone() else {
        bail!("no VirusTotal API key: set VT_API_KEY (or [virustotal] api_key in the config file)");
    };
    let store: Arc<dyn Store> = open_store(config).await?;
    let gate = quota_gate(&store, key.fingerprint(), config, stop);
    Ok(vt::Client::new(
        &config.virustotal.api_url,
        key,
        gate,
        secs(config.virustotal.timeout_secs),
    )
    .context("cannot set up the VirusTotal client")?
    .with_retry(retry_policy(&config.virustotal)))
}

/// The client's retries as configured.
fn retry_policy(c: &VtConfig) -> vt::RetryPolicy {
    vt::RetryPolicy {
        max_retries: c.retries,
        min_delay: secs(c.retry_min_delay_secs),
        max_delay: secs(c.retry_max_delay_secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After its own silence, a process waits as long again before it takes others for dead.
    #[test]
    fn after_a_silence_others_get_as_long_to_come_back() {
        let mut silence = Silence::new(0);
        assert!(silence.settled(2_000));
        silence.heard(2_000);
        // The database is down from 2 s to 40 s: no heartbeat is heard.
        assert!(silence.settled(20_000));
        let back = 40_000;
        assert!(!silence.settled(back));
        silence.heard(back);
        assert!(!silence.settled(back + STALE_MS - 1));
        silence.heard(back + STALE_MS - 1);
        assert!(silence.settled(back + STALE_MS));
    }

    /// A password is masked wherever the URL holds it.
    #[test]
    fn database_urls_are_shown_without_their_password() {
        for (url, shown) in [
            (
                "postgres://vt:s3cret@db.internal:5432/vtriage",
                "postgres://vt:***@db.internal:5432/vtriage",
            ),
            (
                "postgres://db.internal/vtriage?user=vt&password=s3cret&sslmode=require",
                "postgres://db.internal/vtriage?user=vt&password=***&sslmode=require",
            ),
            (
                "postgresql://db/v?sslpassword=s3cret",
                "postgresql://db/v?sslpassword=***",
            ),
            (
                "postgres://db.internal/vtriage",
                "postgres://db.internal/vtriage",
            ),
        ] {
            assert_eq!(redact(url), shown);
        }
    }
}
