//! Configuration: built-in defaults < config file < environment < command-line flags.
//!
//! Every key is documented with its default in `config/vtriage.example.toml`. The environment
//! overrides any key as `VTRIAGE_<SECTION>_<KEY>` (for example `VTRIAGE_QUOTA_REQUESTS=20`),
//! plus the short names `VTRIAGE_DB`, `VTRIAGE_API_URL` and `VT_API_KEY`. Durations are seconds
//! and accept fractions, so tests and benchmarks can scale time down.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

/// The VirusTotal API key. Its `Debug` and `Display` print `[redacted]`, so it cannot leak
/// through logs or error messages by accident.
#[derive(Clone)]
pub struct ApiKey(SecretString);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> ApiKey {
        ApiKey(SecretString::from(key.into()))
    }

    /// The key itself, for the `x-apikey` header and nowhere else.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    /// A short, non-reversible name for the key: the first 16 hex digits of its SHA-256.
    /// The shared quota is kept per key under this name, so the key itself is never stored.
    pub fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.expose().as_bytes());
        digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Whether something VirusTotal does not know may be sent to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum UploadPolicy {
    /// Never upload or submit: the default, because a submission is irreversible and makes the
    /// content visible to VirusTotal's customers.
    #[default]
    Never,
    /// Upload (or submit) what VirusTotal does not know yet.
    Unknown,
}

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The database: a SQLite path (default [`default_database`]) or a PostgreSQL URL.
    pub db: String,
    /// How to reach VirusTotal.
    pub virustotal: VtConfig,
    /// The request budget of the key.
    pub quota: QuotaConfig,
    /// What may be sent to VirusTotal.
    pub upload: UploadConfig,
    /// How analyses are polled.
    pub poll: PollConfig,
    /// How verdicts are derived and how long they stay fresh.
    pub verdict: VerdictConfig,
    /// Drop-directory rules.
    pub watch: WatchConfig,
    /// Worker and shutdown settings.
    pub daemon: DaemonConfig,
    /// IOC-list parsing settings.
    pub ingest: IngestConfig,
}

/// `[virustotal]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VtConfig {
    /// Base URL of the v3 API.
    pub api_url: String,
    /// The key; prefer the `VT_API_KEY` environment variable.
    #[serde(deserialize_with = "deserialize_key")]
    pub api_key: Option<ApiKey>,
    /// Timeout of one API request (uploads get more: see `vt::Client`).
    pub timeout_secs: f64,
    /// At most this many API requests under way at once; 0: one per worker. With more workers
    /// than this, workers do their database work while others wait for VirusTotal.
    pub requests_in_flight: usize,
    /// A request that failed on a transient error (a 5xx, a timeout, a dropped connection) is
    /// tried again up to this many times, ...
    pub retries: u32,
    /// ... first after this many seconds, then after exponentially longer delays (with jitter) ...
    pub retry_min_delay_secs: f64,
    /// ... of at most this many seconds. (Then the job itself is retried later: `[daemon]`.)
    pub retry_max_delay_secs: f64,
}

/// `[quota]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QuotaConfig {
    /// At most this many API requests ...
    pub requests: u32,
    /// ... in any window of this many seconds.
    pub window_secs: f64,
    /// At most this many per UTC day.
    pub daily: u32,
    /// At most this many per UTC calendar month, when set.
    pub monthly: Option<u32>,
    /// The key has no request limit (a premium key without a contracted quota): the limits
    /// above are not enforced, and requests are only counted per day and month, for `status`.
    pub unlimited: bool,
}

/// `[upload]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadConfig {
    /// Upload files VirusTotal does not know?
    pub files: UploadPolicy,
    /// Submit URLs VirusTotal does not know?
    pub urls: UploadPolicy,
    /// Larger files are refused locally (VirusTotal's limit is 650 MiB).
    pub max_file_size: u64,
}

/// `[poll]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PollConfig {
    /// Delay before the first `GET /analyses/{id}` after a submission.
    pub first_delay_secs: f64,
    /// The longest interval between two polls of one analysis.
    pub max_interval_secs: f64,
    /// After this long an analysis stays `pending` (id kept) and is picked up again later.
    pub give_up_after_secs: f64,
}

/// `[verdict]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VerdictConfig {
    /// Engines flagging malicious for `malicious`.
    pub malicious_min: u32,
    /// Malicious plus suspicious engines for `suspicious`.
    pub suspicious_min: u32,
    /// A stored verdict younger than this is reused without a request.
    pub max_age_days: f64,
}

impl VerdictConfig {
    /// [`VerdictConfig::max_age_days`] in milliseconds.
    pub fn max_age_ms(&self) -> i64 {
        (self.max_age_days * 86_400_000.0) as i64
    }
}

/// `[watch]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WatchConfig {
    /// A file is complete once its size and mtime were unchanged for this long.
    pub settle_ms: u64,
    /// Extra glob patterns of names to skip (temporary names are always skipped).
    pub ignore: Vec<String>,
    /// Follow symbolic links?
    pub follow_symlinks: bool,
}

/// `[daemon]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonConfig {
    /// Concurrent workers (each holds at most one job).
    pub workers: usize,
    /// On SIGTERM, in-flight work gets this long before it is released.
    pub shutdown_grace_secs: f64,
    /// A claimed job is presumed abandoned after this long without its owner finishing it.
    pub lease_secs: f64,
    /// Attempts (not counting snoozes) before a job is marked failed.
    pub max_attempts: u32,
    /// The first retry after a failed attempt waits this long; each further one twice as long.
    pub retry_delay_secs: f64,
}

/// `[ingest]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Skip private, loopback and reserved IP addresses.
    pub skip_private_ips: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            db: "vtriage.db".into(),
            virustotal: VtConfig::default(),
            quota: QuotaConfig::default(),
            upload: UploadConfig::default(),
            poll: PollConfig::default(),
            verdict: VerdictConfig::default(),
            watch: WatchConfig::default(),
            daemon: DaemonConfig::default(),
            ingest: IngestConfig::default(),
        }
    }
}

impl Default for VtConfig {
    fn default() -> Self {
        VtConfig {
            api_url: "https://www.virustotal.com/api/v3".into(),
            api_key: None,
            timeout_secs: 60.0,
            requests_in_flight: 0,
            retries: 4,
            retry_min_delay_secs: 1.0,
            retry_max_delay_secs: 30.0,
        }
    }
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig {
            requests: 4,
            window_secs: 60.0,
            daily: 500,
            monthly: None,
            unlimited: false,
        }
    }
}

impl Default for UploadConfig {
    fn default() -> Self {
        UploadConfig {
            files: UploadPolicy::Never,
            urls: UploadPolicy::Never,
            max_file_size: 650 * 1024 * 1024,
        }
    }
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig {
            first_delay_secs: 30.0,
            max_interval_secs: 300.0,
            give_up_after_secs: 3600.0,
        }
    }
}

impl Default for VerdictConfig {
    fn default() -> Self {
        VerdictConfig {
            malicious_min: 3,
            suspicious_min: 1,
            max_age_days: 7.0,
        }
    }
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            settle_ms: 2000,
            ignore: Vec::new(),
            follow_symlinks: false,
        }
    }
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            workers: 4,
            shutdown_grace_secs: 10.0,
            lease_secs: 300.0,
            max_attempts: 8,
            retry_delay_secs: 5.0,
        }
    }
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            skip_private_ips: true,
        }
    }
}

fn deserialize_key<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<ApiKey>, D::Error> {
    Ok(Option::<String>::deserialize(d)?
        .filter(|k| !k.is_empty())
        .map(ApiKey::new))
}

/// Converts a number of seconds (fractions allowed) to a `Duration`, treating nonsense as zero.
pub fn secs(s: f64) -> Duration {
    Duration::try_from_secs_f64(s).unwrap_or_default()
}

impl Config {
    /// Loads the configuration: defaults, then `file` (or [`default_file`] when present), then
    /// the environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        Self::load_with_env(file, std::env::vars())
    }

    /// Like [`Config::load`], with the environment given explicitly (for tests).
    pub fn load_with_env(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> anyhow::Result<Config> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let var = |name: &str| {
            env.iter()
                .find(|(n, v)| n == name && !v.is_empty())
                .map(|(_, v)| v.as_str())
        };
        let path = match file {
            Some(p) => Some(p.to_path_buf()),
            None => {
                warn_of_working_directory_file();
                default_file(var("XDG_CONFIG_HOME"), var("HOME")).filter(|f| f.exists())
            }
        };
        let text = match &path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read config file {}", p.display()))?;
                Some((p, text))
            }
            None => None,
        };
        let file_table = match &text {
            Some((p, text)) => {
                let table = text
                    .parse::<toml::Table>()
                    .with_context(|| format!("config file {} is not valid TOML", p.display()))?;
                if holds_api_key(&table) {
                    warn_if_readable_by_others(p);
                }
                table
            }
            None => toml::Table::new(),
        };
        let mut table = file_table.clone();
        if !table.contains_key("db")
            && let Some(db) = default_database(var("XDG_DATA_HOME"), var("HOME"))
        {
            // Its directory is made when the database is first written (`pipeline`), not by
            // commands that only read.
            warn_of_working_directory_database(&db);
            table.insert("db".into(), db.display().to_string().into());
        }
        let mut applied = Vec::new();
        for (name, value) in env {
            if apply_env(&mut table, &name, &value)? {
                applied.push((name, value));
            }
        }
        let config: Config = toml::Value::Table(table).try_into().map_err(|e| {
            // Read alone from its text, the file names the line at fault.
            if let Some((p, text)) = &text
                && let Err(e) = toml::from_str::<Config>(text)
            {
                return anyhow::Error::new(e)
                    .context(format!("invalid config file {}", p.display()));
            }
            // The file is fine: name the variable at fault, the first that breaks it alone.
            let culprit = applied.iter().find(|(name, value)| {
                let mut alone = file_table.clone();
                apply_env(&mut alone, name, value).is_ok()
                    && toml::Value::Table(alone).try_into::<Config>().is_err()
            });
            let what = match culprit {
                Some((name, _)) => format!("invalid value of {name}"),
                None => "invalid configuration (VTRIAGE_ variables)".to_string(),
            };
            anyhow::Error::new(e).context(what)
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.quota.requests == 0 || self.quota.window_secs <= 0.0 {
            bail!(
                "[quota] requests and window_secs (VTRIAGE_QUOTA_REQUESTS, \
                 VTRIAGE_QUOTA_WINDOW_SECS) must be positive"
            );
        }
        if self.quota.unlimited && self.quota.monthly.is_some() {
            // A monthly limit needs the ledger that `unlimited` does without.
            bail!(
                "[quota] unlimited and monthly (VTRIAGE_QUOTA_UNLIMITED, VTRIAGE_QUOTA_MONTHLY) \
                 contradict each other: remove one"
            );
        }
        if self.daemon.workers == 0 {
            bail!("[daemon] workers (VTRIAGE_DAEMON_WORKERS) must be at least 1");
        }
        if self.verdict.malicious_min == 0 {
            bail!("[verdict] malicious_min (VTRIAGE_VERDICT_MALICIOUS_MIN) must be at least 1");
        }
        Ok(())
    }
}

/// `VTRIAGE_` variables that are not settings: the configuration file's name, and those of the
/// test scripts (`scripts/postgres`, `scripts/test`).
const NOT_SETTINGS: [&str; 4] = ["CONFIG", "TEST_", "PG_", "SKIP_PG"];

/// Applies one environment variable to the TOML table, if it is one of ours (returns whether it
/// was; an unknown `VTRIAGE_` variable is an error). An empty one is taken as unset, as
/// `VTRIAGE_DB= vtriage status` means.
fn apply_env(table: &mut toml::Table, name: &str, value: &str) -> anyhow::Result<bool> {
    if value.is_empty() {
        return Ok(false);
    }
    let (section, key) = match name {
        "VT_API_KEY" => (Some("virustotal"), "api_key".to_string()),
        "VTRIAGE_DB" => (None, "db".to_string()),
        "VTRIAGE_API_URL" => (Some("virustotal"), "api_url".to_string()),
        _ => {
            let Some(rest) = name.strip_prefix("VTRIAGE_") else {
                return Ok(false);
            };
            if NOT_SETTINGS.iter().any(|p| rest.starts_with(p)) {
                return Ok(false);
            }
            let unknown = || anyhow::anyhow!("{name} is not a setting of vtriage (see README)");
            let Some((section, key)) = rest.split_once('_') else {
                return Err(unknown());
            };
            let section = section.to_ascii_lowercase();
            const SECTIONS: [&str; 8] = [
                "virustotal",
                "quota",
                "upload",
                "poll",
                "verdict",
                "watch",
                "daemon",
                "ingest",
            ];
            // A misspelt section (`VTRIAGE_UPLOADS_FILES=never`) must not leave uploads on.
            let Some(section) = SECTIONS.into_iter().find(|s| *s == section) else {
                return Err(unknown());
            };
            (Some(section), key.to_ascii_lowercase())
        }
    };
    // Numbers and booleans keep their type; anything else is a string. The key is always a
    // string, even one that happens to look like a number.
    let parsed = match value.parse::<toml::Value>() {
        Ok(v) if key != "api_key" && !matches!(v, toml::Value::Table(_)) => v,
        _ if key == "ignore" => toml::Value::Array(
            value
                .split(',')
                .map(|s| toml::Value::String(s.trim().into()))
                .collect(),
        ),
        _ => toml::Value::String(value.to_string()),
    };
    let target = match section {
        Some(s) => table
            .entry(s)
            .or_insert_with(|| toml::Value::Table(toml::Table::new()))
            .as_table_mut()
            .with_context(|| format!("config key [{s}] must be a table"))?,
        None => table,
    };
    target.insert(key, parsed);
    Ok(true)
}

/// Whether a configuration file sets `[virustotal] api_key`, however TOML spells it (a
/// section, a dotted key, an inline table, a quoted key).
fn holds_api_key(file: &toml::Table) -> bool {
    file.get("virustotal")
        .and_then(|section| section.get("api_key"))
        .is_some()
}

/// The configuration file read when none is named: `$XDG_CONFIG_HOME/vtriage/vtriage.toml`
/// (`~/.config/vtriage/vtriage.toml`). Never one in the working directory: the folder a
/// command is pointed at (`cd downloads && vtriage scan .`) must not be able to turn uploads
/// on or send the API key to another server.
pub fn default_file(xdg_config_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    users_own(xdg_config_home, home, ".config", "vtriage.toml")
}

/// The database used when none is named: `$XDG_DATA_HOME/vtriage/vtriage.db`
/// (`~/.local/share/vtriage/vtriage.db`). Not one in the working directory: a folder being
/// triaged could hold a database whose stored verdicts call its malware clean, with no request
/// made. `vtriage.db` in the working directory when there is no home.
pub fn default_database(xdg_data_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    users_own(xdg_data_home, home, ".local/share", "vtriage.db")
}

/// Whether `db` is the [`default_database`] of this process's environment: its directory is
/// made when missing, where a database named elsewhere needs its directory (a typo is not made
/// into one).
pub fn is_default_database(db: &str) -> bool {
    let var = |name| std::env::var(name).ok().filter(|v| !v.is_empty());
    default_database(var("XDG_DATA_HOME").as_deref(), var("HOME").as_deref())
        .is_some_and(|default| Path::new(db) == default)
}

/// `name` in vtriage's folder of an XDG base directory: `$XDG_..._HOME`, else `under_home` in
/// the home directory; none without either.
fn users_own(
    xdg: Option<&str>,
    home: Option<&str>,
    under_home: &str,
    name: &str,
) -> Option<PathBuf> {
    let base = match (xdg, home) {
        (Some(xdg), _) => PathBuf::from(xdg),
        (None, Some(home)) => Path::new(home).join(under_home),
        (None, None) => return None,
    };
    Some(base.join("vtriage").join(name))
}

/// Earlier versions kept the database in the working directory: say that one there is not used.
fn warn_of_working_directory_database(default: &Path) {
    let here = Path::new("vtriage.db");
    let same = |a: &Path, b: &Path| a.canonicalize().ok() == b.canonicalize().ok();
    if here.is_file() && !same(here, default) {
        tracing::warn!(
            "vtriage.db in the working directory is not used (the database is {}): pass \
             --db vtriage.db to use it",
            default.display()
        );
    }
}

/// Earlier versions read `vtriage.toml` in the working directory: say that it no longer is.
fn warn_of_working_directory_file() {
    if Path::new("vtriage.toml").is_file() {
        tracing::warn!(
            "vtriage.toml in the working directory is not read (a folder being triaged must not \
             configure its triage): pass --config vtriage.toml to use it"
        );
    }
}

/// A key in a file that others can read is a key others have.
fn warn_if_readable_by_others(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path)
            && meta.permissions().mode() & 0o044 != 0
        {
            tracing::warn!(
                "config file {} holds an API key and is readable by other users; chmod 600 it",
                path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_default_file_is_the_users_never_the_working_directorys() {
        assert_eq!(
            default_file(Some("/x/conf"), Some("/home/a")),
            Some(PathBuf::from("/x/conf/vtriage/vtriage.toml"))
        );
        assert_eq!(
            default_file(None, Some("/home/a")),
            Some(PathBuf::from("/home/a/.config/vtriage/vtriage.toml"))
        );
        assert_eq!(default_file(None, None), None);
    }

    #[test]
    fn the_default_database_is_the_users_never_the_working_directorys() {
        let home = tempfile::tempdir().unwrap();
        let home_dir = home.path().to_str().unwrap();
        let c = Config::load_with_env(None, env(&[("HOME", home_dir)])).unwrap();
        let expected = home.path().join(".local/share/vtriage/vtriage.db");
        assert_eq!(c.db, expected.display().to_string());
        // Made when the database is first written, not by commands that only read.
        assert!(!home.path().join(".local").exists());
        let named = env(&[("HOME", home_dir), ("VTRIAGE_DB", "/srv/v.db")]);
        assert_eq!(Config::load_with_env(None, named).unwrap().db, "/srv/v.db");
        assert_eq!(
            default_database(Some("/x/data"), Some("/home/a")),
            Some(PathBuf::from("/x/data/vtriage/vtriage.db"))
        );
        assert_eq!(default_database(None, None), None);
    }

    #[test]
    fn a_misspelt_variable_is_an_error_and_the_test_scripts_are_not_settings() {
        for name in ["VTRIAGE_UPLOADS_FILES", "VTRIAGE_NOSECTION"] {
            let err = Config::load_with_env(None, env(&[(name, "never")])).unwrap_err();
            assert!(err.to_string().contains(name), "{err}");
        }
        let scripts = [
            ("VTRIAGE_TEST_PG", "postgres://localhost/x"),
            ("VTRIAGE_SKIP_PG", "1"),
            ("VTRIAGE_PG_PORT", "5433"),
            ("VTRIAGE_CONFIG", "/etc/vtriage/vtriage.toml"),
        ];
        assert!(Config::load_with_env(None, env(&scripts)).is_ok());
    }

    #[test]
    fn an_api_key_is_found_however_toml_spells_it() {
        for text in [
            "[virustotal]\napi_key = \"k\"",
            "virustotal.api_key = \"k\"",
            "\"virustotal\".\"api_key\" = \"k\"",
            "virustotal = { api_key = \"k\" }",
        ] {
            assert!(holds_api_key(&text.parse().unwrap()), "{text}");
        }
        for text in [
            "[upload]\nfiles = \"never\"",
            "api_key = \"k\"",
            "# api_key = \"k\"",
        ] {
            assert!(!holds_api_key(&text.parse().unwrap()), "{text}");
        }
    }

    #[test]
    fn defaults_are_safe() {
        let c = Config::load_with_env(None, env(&[])).unwrap();
        assert_eq!(c.upload.files, UploadPolicy::Never);
        assert_eq!(c.upload.urls, UploadPolicy::Never);
        assert_eq!(c.quota.requests, 4);
        assert_eq!(c.quota.daily, 500);
    }

    #[test]
    fn environment_overrides_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[quota]\nrequests = 10\nwindow_secs = 2\n[poll]\nfirst_delay_secs = 5\n",
        )
        .unwrap();
        let c = Config::load_with_env(
            Some(&path),
            env(&[
                ("VTRIAGE_QUOTA_REQUESTS", "20"),
                ("VTRIAGE_POLL_FIRST_DELAY_SECS", "0.5"),
            ]),
        )
        .unwrap();
        assert_eq!(c.quota.requests, 20);
        assert_eq!(c.quota.window_secs, 2.0);
        assert_eq!(c.poll.first_delay_secs, 0.5);
    }

    #[test]
    fn an_empty_variable_is_taken_as_unset() {
        let c =
            Config::load_with_env(None, env(&[("VTRIAGE_DB", ""), ("VT_API_KEY", "")])).unwrap();
        assert_eq!(c.db, Config::default().db);
        assert!(c.virustotal.api_key.is_none());
    }

    #[test]
    fn an_invalid_value_is_traced_to_its_variable_or_its_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[quota]\nrequests = 10\n").unwrap();
        let err = Config::load_with_env(
            Some(&path),
            env(&[
                ("VTRIAGE_QUOTA_WINDOW_SECS", "2"),
                ("VTRIAGE_QUOTA_DAILY", "abc"),
            ]),
        )
        .unwrap_err();
        let err = format!("{err:#}");
        assert!(
            err.starts_with("invalid value of VTRIAGE_QUOTA_DAILY: "),
            "{err}"
        );
        std::fs::write(&path, "[quota]\nrequests = 10\ndaily = \"abc\"\n").unwrap();
        let err = Config::load_with_env(Some(&path), env(&[])).unwrap_err();
        let err = format!("{err:#}");
        assert!(err.contains("c.toml") && err.contains("line 3"), "{err}");
    }

    #[test]
    fn an_unlimited_key_is_named_by_the_environment_and_has_no_monthly_limit() {
        let c = Config::load_with_env(None, env(&[("VTRIAGE_QUOTA_UNLIMITED", "true")])).unwrap();
        assert!(c.quota.unlimited);
        let contradiction = Config::load_with_env(
            None,
            env(&[
                ("VTRIAGE_QUOTA_UNLIMITED", "true"),
                ("VTRIAGE_QUOTA_MONTHLY", "1000"),
            ]),
        )
        .unwrap_err();
        assert!(format!("{contradiction:#}").contains("unlimited and monthly"));
    }

    #[test]
    fn key_comes_from_env_and_never_prints() {
        let c = Config::load_with_env(None, env(&[("VT_API_KEY", "12345")])).unwrap();
        let key = c.virustotal.api_key.clone().unwrap();
        assert_eq!(key.expose(), "12345");
        assert!(!format!("{c:?}").contains("12345"));
        assert!(!key.fingerprint().contains("12345"));
    }

    #[test]
    fn unknown_keys_are_rejected_with_the_file_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[quota]\nrequsts = 10\n").unwrap();
        let err = Config::load_with_env(Some(&path), env(&[])).unwrap_err();
        assert!(format!("{err:#}").contains("bad.toml"), "{err:#}");
    }

    #[test]
    fn the_example_file_documents_the_defaults() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/vtriage.example.toml");
        let example = Config::load_with_env(Some(&path), env(&[])).unwrap();
        let default = Config::default();
        assert_eq!(format!("{example:?}"), format!("{default:?}"));
    }
}
