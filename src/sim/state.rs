//! The simulator's memory and rules: objects (files, URLs, domains, IP addresses), analyses
//! and their progress, comments and votes, single-use upload tokens, the per-key quota and
//! the counters of [`SimStats`]. Everything sits behind one `std::sync::Mutex`, held for
//! short, synchronous steps only (never across an await).
//!
//! API keys are never stored: keys are compared and quota is kept by their SHA-256.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::StatusCode;
use base64::Engine as _;
use bytes::Bytes;
use rand::rngs::SmallRng;
use rand::{RngExt as _, SeedableRng as _};
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

use super::json::{self, Reply, StatsShape};
use super::known::{EngineStats, Known};
use super::upload::Received;
use super::{Faults, SimConfig, SimQuota, SimStats};

/// The label VirusTotal engines give the EICAR test file.
const EICAR_LABEL: &str = "virus.eicar/test";

/// The object collections of the API (`/files`, `/urls`, `/domains`, `/ip_addresses`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Collection {
    /// `/files`
    Files,
    /// `/urls`
    Urls,
    /// `/domains`
    Domains,
    /// `/ip_addresses`
    Ips,
}

impl Collection {
    /// Parses a path segment.
    pub fn parse(s: &str) -> Option<Collection> {
        Some(match s {
            "files" => Collection::Files,
            "urls" => Collection::Urls,
            "domains" => Collection::Domains,
            "ip_addresses" => Collection::Ips,
            _ => return None,
        })
    }

    /// The path segment.
    pub fn path(self) -> &'static str {
        match self {
            Collection::Files => "files",
            Collection::Urls => "urls",
            Collection::Domains => "domains",
            Collection::Ips => "ip_addresses",
        }
    }

    /// Prefix of comment and vote ids (`d-google.com-038d84f2`).
    fn note_prefix(self) -> char {
        match self {
            Collection::Files => 'f',
            Collection::Urls => 'u',
            Collection::Domains => 'd',
            Collection::Ips => 'i',
        }
    }

    /// Human name for error messages, as VirusTotal words them (`File "x" not found`).
    fn noun(self) -> &'static str {
        match self {
            Collection::Files => "File",
            Collection::Urls => "URL",
            Collection::Domains => "Domain",
            Collection::Ips => "IP address",
        }
    }
}

/// What the `x-apikey` header amounts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// No header, or an empty one.
    Missing,
    /// A key that is not valid here.
    Wrong,
    /// A valid key: `id` names it for the quota (a SHA-256 prefix), `premium` allows downloads.
    Valid {
        /// First 8 bytes of the key's SHA-256.
        id: u64,
        /// May use premium-only endpoints.
        premium: bool,
    },
}

/// A fault to inject into one API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// 503 `TransientError`, before the request takes effect.
    Transient,
    /// 504 `DeadlineExceededError`, before the request takes effect.
    Deadline,
    /// 500 with an HTML body, before the request takes effect.
    Html500,
    /// The connection is closed without a reply, after the request took effect.
    Drop,
    /// A 200 whose JSON is cut short, after the request took effect.
    Truncate,
    /// The reply comes late (but normally).
    Latency,
}

impl Fault {
    const ALL: [Fault; 6] = [
        Fault::Transient,
        Fault::Deadline,
        Fault::Html500,
        Fault::Drop,
        Fault::Truncate,
        Fault::Latency,
    ];

    /// The key in [`SimStats::faults_by_kind`].
    pub fn name(self) -> &'static str {
        match self {
            Fault::Transient => "transient_503",
            Fault::Deadline => "deadline_504",
            Fault::Html500 => "html_500",
            Fault::Drop => "dropped_connection",
            Fault::Truncate => "truncated_json",
            Fault::Latency => "latency",
        }
    }
}

/// The outcome of admission control for one API request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// Go ahead (with a fault to inject, maybe).
    Accepted(Option<Fault>),
    /// Over the quota: 429.
    OverQuota,
}

/// One analysis result, once in.
#[derive(Debug, Clone, Copy)]
struct Analysed {
    date: i64,
    stats: EngineStats,
}

/// The analysis in flight for an object.
#[derive(Debug, Clone)]
struct Pending {
    analysis_id: String,
    done: Instant,
    done_date: i64,
}

/// State shared by files and URLs: submissions, verdict, analysis progress, cached reply.
#[derive(Debug)]
struct Subject {
    last: Option<Analysed>,
    pending: Option<Pending>,
    /// What an analysis of this object finds.
    verdict: EngineStats,
    label: Option<String>,
    first_submission: Option<i64>,
    last_submission: Option<i64>,
    times_submitted: u32,
    votes_harmless: u32,
    votes_malicious: u32,
    /// The serialised `GET` reply, rebuilt only when the object changes: lookups are the
    /// hot path of every benchmark.
    cache: Option<Cached>,
}

#[derive(Debug, Clone)]
struct Cached {
    plain: Bytes,
    gzipped: Option<Bytes>,
}

impl Subject {
    fn new(verdict: EngineStats, label: Option<String>) -> Subject {
        Subject {
            last: None,
            pending: None,
            verdict,
            label,
            first_submission: None,
            last_submission: None,
            times_submitted: 0,
            votes_harmless: 0,
            votes_malicious: 0,
            cache: None,
        }
    }

    fn preloaded(verdict: EngineStats, label: Option<String>, date: i64) -> Subject {
        let mut s = Subject::new(verdict, label);
        s.last = Some(Analysed {
            date,
            stats: verdict,
        });
        s.first_submission = Some(date);
        s.last_submission = Some(date);
        s.times_submitted = 1;
        s
    }

    /// Applies a finished analysis.
    fn refresh(&mut self, now: Instant) {
        if let Some(p) = &self.pending
            && p.done <= now
        {
            self.last = Some(Analysed {
                date: p.done_date,
                stats: self.verdict,
            });
            self.pending = None;
            self.cache = None;
        }
    }

    fn submitted(&mut self, date: i64) {
        self.first_submission.get_or_insert(date);
        self.last_submission = Some(date);
        self.times_submitted += 1;
        self.cache = None;
    }

    fn common_attributes(&self, a: &mut Map<String, Value>, shape: StatsShape) {
        if let Some(last) = &self.last {
            a.insert("last_analysis_date".into(), last.date.into());
            a.insert(
                "last_analysis_stats".into(),
                json::stats(&last.stats, shape),
            );
            a.insert(
                "last_analysis_results".into(),
                json::results(&last.stats, shape, self.label.as_deref()),
            );
            a.insert("last_modification_date".into(), last.date.into());
        }
        if let Some(d) = self.first_submission {
            a.insert("first_submission_date".into(), d.into());
        }
        if let Some(d) = self.last_submission {
            a.insert("last_submission_date".into(), d.into());
        }
        a.insert("times_submitted".into(), self.times_submitted.into());
        a.insert("reputation".into(), 0.into());
        a.insert("tags".into(), json!([]));
        a.insert(
            "total_votes".into(),
            json!({ "harmless": self.votes_harmless, "malicious": self.votes_malicious }),
        );
    }
}

#[derive(Debug)]
struct FileObj {
    sha256: String,
    sha1: Option<String>,
    md5: Option<String>,
    size: u64,
    names: Vec<String>,
    type_description: &'static str,
    content: Option<Bytes>,
    subject: Subject,
}

#[derive(Debug)]
struct UrlObj {
    url: String,
    subject: Subject,
}

#[derive(Debug)]
struct HostObj {
    stats: Option<EngineStats>,
    votes_harmless: u32,
    votes_malicious: u32,
}

#[derive(Debug, Clone)]
enum Target {
    File(String),
    Url(String),
}

#[derive(Debug)]
struct Analysis {
    target: Target,
    created: Instant,
    duration: Duration,
    date: i64,
    /// The reply once completed (it no longer changes).
    cache: Option<Bytes>,
}

/// A comment or vote, as listed under an object.
#[derive(Debug, Clone)]
struct Note {
    id: String,
    kind: &'static str,
    attributes: Value,
}

#[derive(Debug, Default)]
struct KeyQuota {
    /// When each accepted request of the current window arrived, oldest first.
    window: VecDeque<Instant>,
    day: u64,
    day_count: u32,
    /// The UTC month (months since year 0) and its count.
    month: i64,
    month_count: u32,
}

/// The key policy, by key hash.
#[derive(Debug)]
struct Keys {
    any: bool,
    valid: HashSet<[u8; 32]>,
    premium: HashSet<[u8; 32]>,
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

/// Seconds since the Unix epoch.
/// The UTC calendar month of a Unix time, as months since year 0.
fn utc_month(unix_secs: i64) -> i64 {
    use chrono::Datelike;
    chrono::DateTime::from_timestamp(unix_secs, 0)
        .map_or(0, |t| i64::from(t.year()) * 12 + i64::from(t.month0()))
}

pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A canonical form of a URL, so that submissions and lookups agree (scheme and host lower
/// case, an empty path becomes `/`); text that does not parse is kept as given.
pub(crate) fn canonical_url(raw: &str) -> String {
    let trimmed = raw.trim();
    match url::Url::parse(trimmed) {
        Ok(u) => u.to_string(),
        Err(_) => trimmed.to_string(),
    }
}

/// The object id of a URL: SHA-256 of its canonical form, in hex.
pub(crate) fn url_id(raw: &str) -> String {
    json::hex(&Sha256::digest(canonical_url(raw).as_bytes()))
}

/// Resolves a `/urls/{id}` id: a SHA-256, or the unpadded (or padded) base64url of the URL.
fn resolve_url_id(id: &str) -> Option<String> {
    if id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Some(id.to_ascii_lowercase());
    }
    let trimmed = id.trim_end_matches('=');
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(trimmed)
        .ok()?;
    let url = String::from_utf8(bytes).ok()?;
    Some(url_id(&url))
}

#[derive(Debug)]
struct Inner {
    rng: SmallRng,
    files: HashMap<String, FileObj>,
    /// MD5 and SHA-1 to SHA-256.
    aliases: HashMap<String, String>,
    urls: HashMap<String, UrlObj>,
    domains: HashMap<String, HostObj>,
    ips: HashMap<String, HostObj>,
    analyses: HashMap<String, Analysis>,
    notes: HashMap<(Collection, String, &'static str), Vec<Note>>,
    upload_tokens: HashSet<String>,
    download_tokens: HashMap<String, String>,
    quotas: HashMap<u64, KeyQuota>,
    stats: SimStats,
}

impl Inner {
    fn token(&mut self) -> String {
        let mut raw = [0u8; 24];
        self.rng.fill(&mut raw[..]);
        json::hex(&raw)
    }

    fn resolve_file(&self, id: &str) -> Option<String> {
        let id = id.to_ascii_lowercase();
        if self.files.contains_key(&id) {
            return Some(id);
        }
        self.aliases.get(&id).cloned()
    }

    /// The canonical id of an object that exists, or `None`.
    fn existing(&mut self, c: Collection, id: &str, now: Instant) -> Option<String> {
        match c {
            Collection::Files => self.resolve_file(id),
            Collection::Urls => {
                let key = resolve_url_id(id)?;
                let u = self.urls.get_mut(&key)?;
                u.subject.refresh(now);
                u.subject.last.is_some().then_some(key)
            }
            Collection::Domains => {
                let d = id.trim_end_matches('.').to_ascii_lowercase();
                self.domains.contains_key(&d).then_some(d)
            }
            Collection::Ips => self.ips.contains_key(id).then(|| id.to_string()),
        }
    }
}

/// The whole simulator state; shared by every connection.
#[derive(Debug)]
pub(crate) struct Sim {
    /// `http://127.0.0.1:PORT`: absolute upload and download URLs start with it.
    pub origin: String,
    /// `http://127.0.0.1:PORT/api/v3`: `links.self` start with it.
    pub api: String,
    keys: Keys,
    /// Hashes of keys revoked while running (`SimHandle::revoke_key`): refused with 401 even
    /// when listed in `keys`, as VirusTotal refuses a key an administrator revoked.
    revoked: Mutex<HashSet<[u8; 32]>>,
    quota: Option<SimQuota>,
    analysis_delay: (Duration, Duration),
    /// Fault injection settings.
    pub faults: Faults,
    inner: Mutex<Inner>,
}

/// Body limit of `POST /files`.
pub(crate) const DIRECT_UPLOAD_MAX: u64 = 32 * 1024 * 1024;
/// Body limit of a single-use upload URL.
pub(crate) const UPLOAD_URL_MAX: u64 = 650 * 1024 * 1024;

impl Sim {
    /// Builds the state for a server reachable at `origin` (`http://127.0.0.1:PORT`).
    pub fn new(config: SimConfig, origin: String) -> Sim {
        let SimConfig {
            api_keys,
            premium_keys,
            quota,
            analysis_delay,
            known,
            faults,
            seed,
        } = config;
        let premium: HashSet<[u8; 32]> = premium_keys.iter().map(|k| key_hash(k)).collect();
        let mut valid: HashSet<[u8; 32]> = api_keys.iter().map(|k| key_hash(k)).collect();
        valid.extend(premium.iter().copied());
        let keys = Keys {
            any: api_keys.is_empty(),
            valid,
            premium,
        };
        let (lo, hi) = analysis_delay;
        let analysis_delay = (lo.min(hi), lo.max(hi));
        let inner = Inner {
            rng: SmallRng::seed_from_u64(seed),
            files: HashMap::new(),
            aliases: HashMap::new(),
            urls: HashMap::new(),
            domains: HashMap::new(),
            ips: HashMap::new(),
            analyses: HashMap::new(),
            notes: HashMap::new(),
            upload_tokens: HashSet::new(),
            download_tokens: HashMap::new(),
            quotas: HashMap::new(),
            stats: SimStats::default(),
        };
        let sim = Sim {
            api: format!("{origin}/api/v3"),
            origin,
            keys,
            revoked: Mutex::new(HashSet::new()),
            quota,
            analysis_delay,
            faults,
            inner: Mutex::new(inner),
        };
        sim.preload(known);
        sim
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent-enough data for a simulator.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn preload(&self, known: Known) {
        // Preloaded objects were analysed a day before the simulator started.
        let date = unix_now() - 86_400;
        let mut g = self.lock();
        for f in known.files {
            let sha256 = f.sha256.to_ascii_lowercase();
            let md5 = f.md5.map(|m| m.to_ascii_lowercase());
            let sha1 = f.sha1.map(|s| s.to_ascii_lowercase());
            for alias in md5.iter().chain(sha1.iter()) {
                g.aliases.insert(alias.clone(), sha256.clone());
            }
            let obj = FileObj {
                sha256: sha256.clone(),
                sha1,
                md5,
                size: f.size.unwrap_or(0),
                names: f.name.into_iter().collect(),
                type_description: "unknown",
                content: None,
                subject: Subject::preloaded(f.stats, f.label, date),
            };
            g.files.insert(sha256, obj);
        }
        for u in known.urls {
            let url = canonical_url(&u.url);
            let id = url_id(&url);
            g.urls.insert(
                id,
                UrlObj {
                    url,
                    subject: Subject::preloaded(u.stats, u.label, date),
                },
            );
        }
        for d in known.domains {
            let id = d.id.trim_end_matches('.').to_ascii_lowercase();
            g.domains.insert(
                id,
                HostObj {
                    stats: d.stats,
                    votes_harmless: 0,
                    votes_malicious: 0,
                },
            );
        }
        for ip in known.ips {
            g.ips.insert(
                ip.id,
                HostObj {
                    stats: ip.stats,
                    votes_harmless: 0,
                    votes_malicious: 0,
                },
            );
        }
    }

    /// Checks an `x-apikey` value (without storing it).
    pub fn authenticate(&self, key: Option<&[u8]>) -> Auth {
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return Auth::Missing;
        };
        let hash: [u8; 32] = Sha256::digest(key).into();
        let revoked = self
            .revoked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&hash);
        if revoked || (!self.keys.any && !self.keys.valid.contains(&hash)) {
            return Auth::Wrong;
        }
        let id = u64::from_be_bytes(hash[..8].try_into().expect("8 bytes"));
        Auth::Valid {
            id,
            premium: self.keys.premium.contains(&hash),
        }
    }

    /// Refuses `key` from now on (`revoked = true`) or accepts it again (`false`).
    pub fn set_revoked(&self, key: &str, revoked: bool) {
        let mut set = self.revoked.lock().unwrap_or_else(|e| e.into_inner());
        match revoked {
            true => set.insert(key_hash(key)),
            false => set.remove(&key_hash(key)),
        };
    }

    /// Counts a 401.
    pub fn auth_failed(&self) {
        self.lock().stats.auth_failures += 1;
    }

    /// Admission of one API request from key `key`: quota, counters, fault draw.
    pub fn admit(&self, key: u64, label: &str) -> Admission {
        let now = Instant::now();
        let mut g = self.lock();
        let g = &mut *g;
        if let Some(q) = &self.quota {
            let kq = g.quotas.entry(key).or_default();
            while kq
                .window
                .front()
                .is_some_and(|&t| now.duration_since(t) >= q.window)
            {
                kq.window.pop_front();
            }
            let unix = unix_now();
            let day = (unix / 86_400) as u64;
            if kq.day != day {
                kq.day = day;
                kq.day_count = 0;
            }
            let month = utc_month(unix);
            if kq.month != month {
                kq.month = month;
                kq.month_count = 0;
            }
            let over_window = kq.window.len() >= q.requests as usize;
            let over_day = q.daily.is_some_and(|d| kq.day_count >= d);
            let over_month = q.monthly.is_some_and(|m| kq.month_count >= m);
            if over_window || over_day || over_month {
                g.stats.quota_rejections += 1;
                return Admission::OverQuota;
            }
            kq.window.push_back(now);
            kq.day_count += 1;
            kq.month_count += 1;
            g.stats.max_in_window = g.stats.max_in_window.max(kq.window.len() as u64);
        }
        g.stats.api_requests += 1;
        bump(&mut g.stats.requests, label);
        let fault = (self.faults.rate > 0.0 && g.rng.random_bool(self.faults.rate.min(1.0)))
            .then(|| Fault::ALL[g.rng.random_range(0..Fault::ALL.len())]);
        if let Some(f) = fault {
            g.stats.faults_injected += 1;
            bump(&mut g.stats.faults_by_kind, f.name());
        }
        Admission::Accepted(fault)
    }

    /// Counts a request outside the API (upload URL posts, downloads).
    pub fn count(&self, label: &str) {
        bump(&mut self.lock().stats.requests, label);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.lock().stats.clone()
    }

    /// `GET /files/{id}`.
    pub fn file(&self, id: &str, gzip: bool) -> Reply {
        let now = Instant::now();
        let mut g = self.lock();
        let Some(key) = g.resolve_file(id) else {
            return Reply::not_found(format!("File \"{id}\" not found"));
        };
        let f = g.files.get_mut(&key).expect("resolved ids exist");
        f.subject.refresh(now);
        if f.subject.cache.is_none() {
            f.subject.cache = Some(Cached {
                plain: self.render_file(f),
                gzipped: None,
            });
        }
        cached_reply(f.subject.cache.as_mut().expect("just filled"), gzip)
    }

    fn render_file(&self, f: &FileObj) -> Bytes {
        let mut a = Map::new();
        a.insert("sha256".into(), f.sha256.clone().into());
        if let Some(s) = &f.sha1 {
            a.insert("sha1".into(), s.clone().into());
        }
        if let Some(m) = &f.md5 {
            a.insert("md5".into(), m.clone().into());
        }
        a.insert("size".into(), f.size.into());
        a.insert("names".into(), json!(f.names));
        if let Some(n) = f.names.first() {
            a.insert("meaningful_name".into(), n.clone().into());
        }
        a.insert("type_description".into(), f.type_description.into());
        f.subject.common_attributes(&mut a, StatsShape::File);
        if let (Some(label), Some(last)) = (&f.subject.label, &f.subject.last)
            && last.stats.malicious > 0
        {
            a.insert(
                "popular_threat_classification".into(),
                json::threat_classification(label, last.stats.malicious),
            );
        }
        let v = json::object(
            "file",
            &f.sha256,
            format!("{}/files/{}", self.api, f.sha256),
            a,
        );
        Bytes::from(serde_json::to_vec(&v).expect("a Value always serialises"))
    }

    /// `GET /files/upload_url`: a fresh single-use upload URL.
    pub fn upload_url(&self) -> Reply {
        let mut g = self.lock();
        let token = g.token();
        g.upload_tokens.insert(token.clone());
        Reply::json(
            StatusCode::OK,
            &json!({ "data": format!("{}/_upload/{token}", self.origin) }),
        )
    }

    /// Uses up an upload token; false when it is unknown or already used.
    pub fn take_upload_token(&self, token: &str) -> bool {
        self.lock().upload_tokens.remove(token)
    }

    /// A file arrived (directly or through an upload URL): it exists from now on, without
    /// analysis results until its analysis completes.
    pub fn uploaded(&self, r: Received) -> Reply {
        let now = Instant::now();
        let date = unix_now();
        let mut g = self.lock();
        bump(&mut g.stats.uploads, &r.sha256);
        g.aliases.insert(r.md5.clone(), r.sha256.clone());
        g.aliases.insert(r.sha1.clone(), r.sha256.clone());
        let f = g.files.entry(r.sha256.clone()).or_insert_with(|| {
            let (verdict, label) = if r.eicar {
                (EngineStats::EICAR, Some(EICAR_LABEL.to_string()))
            } else {
                (EngineStats::CLEAN_FILE, None)
            };
            FileObj {
                sha256: r.sha256.clone(),
                sha1: None,
                md5: None,
                size: r.size,
                names: Vec::new(),
                type_description: r.type_description,
                content: None,
                subject: Subject::new(verdict, label),
            }
        });
        f.sha1.get_or_insert(r.sha1);
        f.md5.get_or_insert(r.md5);
        f.size = r.size;
        if f.type_description == "unknown" {
            f.type_description = r.type_description;
        }
        if let Some(name) = r.name.filter(|n| !n.is_empty())
            && !f.names.contains(&name)
        {
            f.names.push(name);
        }
        if f.content.is_none() {
            f.content = r.content;
        }
        f.subject.submitted(date);
        let id = self.start_analysis(&mut g, Target::File(r.sha256), now);
        Reply::json(StatusCode::OK, &json::analysis_descriptor(&self.api, &id))
    }

    /// `POST /files/{id}/analyse`.
    pub fn analyse_file(&self, id: &str) -> Reply {
        let now = Instant::now();
        let mut g = self.lock();
        let Some(key) = g.resolve_file(id) else {
            return Reply::not_found(format!("File \"{id}\" not found"));
        };
        let aid = self.start_analysis(&mut g, Target::File(key), now);
        Reply::json(StatusCode::OK, &json::analysis_descriptor(&self.api, &aid))
    }

    /// Starts an analysis of an object, or returns the one already in flight (VirusTotal
    /// does not analyse the same object twice at once).
    fn start_analysis(&self, g: &mut Inner, target: Target, now: Instant) -> String {
        let (lo, hi) = self.analysis_delay;
        let Inner {
            rng,
            files,
            urls,
            analyses,
            ..
        } = g;
        let (subject, md5) = match &target {
            Target::File(sha) => {
                let f = files.get_mut(sha).expect("analysed files exist");
                (
                    &mut f.subject,
                    f.md5.clone().unwrap_or_else(|| sha[..32].to_string()),
                )
            }
            Target::Url(id) => (
                &mut urls.get_mut(id).expect("analysed URLs exist").subject,
                String::new(),
            ),
        };
        subject.refresh(now);
        if let Some(p) = &subject.pending {
            return p.analysis_id.clone();
        }
        let duration = if hi > lo {
            rng.random_range(lo..=hi)
        } else {
            lo
        };
        let mut date = unix_now();
        let make_id = |date: i64| match &target {
            Target::File(_) => {
                base64::engine::general_purpose::STANDARD.encode(format!("{md5}:{date}"))
            }
            Target::Url(id) => format!("u-{id}-{date}"),
        };
        let mut id = make_id(date);
        while analyses.contains_key(&id) {
            date += 1;
            id = make_id(date);
        }
        subject.pending = Some(Pending {
            analysis_id: id.clone(),
            done: now + duration,
            done_date: date + duration.as_secs() as i64,
        });
        analyses.insert(
            id.clone(),
            Analysis {
                target,
                created: now,
                duration,
                date,
                cache: None,
            },
        );
        id
    }

    /// `GET /analyses/{id}`.
    pub fn analysis(&self, id: &str) -> Reply {
        let now = Instant::now();
        let mut g = self.lock();
        let g = &mut *g;
        let Some(a) = g.analyses.get_mut(id) else {
            return Reply::not_found(format!("Analysis \"{id}\" not found"));
        };
        if let Some(body) = &a.cache {
            return Reply::json_bytes(StatusCode::OK, body.clone());
        }
        let elapsed = now.saturating_duration_since(a.created);
        let status = if elapsed < a.duration / 3 {
            "queued"
        } else if elapsed < a.duration {
            "in-progress"
        } else {
            "completed"
        };
        let (subject, shape, meta) = match &a.target {
            Target::File(sha) => {
                let f = g.files.get_mut(sha).expect("analysed files exist");
                let meta = json!({ "file_info": {
                    "sha256": f.sha256, "sha1": f.sha1, "md5": f.md5, "size": f.size } });
                (&mut f.subject, StatsShape::File, meta)
            }
            Target::Url(uid) => {
                let u = g.urls.get_mut(uid).expect("analysed URLs exist");
                (
                    &mut u.subject,
                    StatsShape::Web,
                    json!({ "url_info": { "id": uid, "url": u.url } }),
                )
            }
        };
        subject.refresh(now);
        let item = match &a.target {
            Target::File(sha) => format!("{}/files/{sha}", self.api),
            Target::Url(uid) => format!("{}/urls/{uid}", self.api),
        };
        let completed = status == "completed";
        let (stats, results) = if completed {
            (
                json::stats(&subject.verdict, shape),
                json::results(&subject.verdict, shape, subject.label.as_deref()),
            )
        } else {
            (json::stats(&EngineStats::default(), shape), json!({}))
        };
        let v = json!({
            "data": {
                "type": "analysis",
                "id": id,
                "links": { "self": format!("{}/analyses/{id}", self.api), "item": item },
                "attributes": { "date": a.date, "status": status, "stats": stats, "results": results },
            },
            "meta": meta,
        });
        let body = Bytes::from(serde_json::to_vec(&v).expect("a Value always serialises"));
        if completed {
            a.cache = Some(body.clone());
        }
        Reply::json_bytes(StatusCode::OK, body)
    }

    /// `POST /urls`: `raw` as submitted.
    pub fn submit_url(&self, raw: &str) -> Reply {
        if raw.trim().is_empty() {
            return Reply::bad_request("the url form field is missing or empty");
        }
        let now = Instant::now();
        let date = unix_now();
        let url = canonical_url(raw);
        let id = url_id(&url);
        let mut g = self.lock();
        bump(&mut g.stats.url_submissions, raw);
        let u = g.urls.entry(id.clone()).or_insert_with(|| UrlObj {
            url,
            subject: Subject::new(EngineStats::CLEAN_URL, None),
        });
        u.subject.submitted(date);
        let aid = self.start_analysis(&mut g, Target::Url(id), now);
        Reply::json(StatusCode::OK, &json::analysis_descriptor(&self.api, &aid))
    }

    /// `POST /urls/{id}/analyse`.
    pub fn analyse_url(&self, id: &str) -> Reply {
        let now = Instant::now();
        let mut g = self.lock();
        let Some(key) = g.existing(Collection::Urls, id, now) else {
            return Reply::not_found(format!("URL \"{id}\" not found"));
        };
        let aid = self.start_analysis(&mut g, Target::Url(key), now);
        Reply::json(StatusCode::OK, &json::analysis_descriptor(&self.api, &aid))
    }

    /// `GET /urls/{id}`: 404 until the URL's first analysis completed.
    pub fn url(&self, id: &str, gzip: bool) -> Reply {
        let now = Instant::now();
        let mut g = self.lock();
        let Some(key) = g.existing(Collection::Urls, id, now) else {
            return Reply::not_found(format!("URL \"{id}\" not found"));
        };
        let u = g.urls.get_mut(&key).expect("existing URLs exist");
        if u.subject.cache.is_none() {
            let mut a = Map::new();
            a.insert("url".into(), u.url.clone().into());
            a.insert("last_final_url".into(), u.url.clone().into());
            if let Some(tld) = url::Url::parse(&u.url)
                .ok()
                .and_then(|p| p.domain().and_then(tld).map(str::to_owned))
            {
                a.insert("tld".into(), tld.into());
            }
            a.insert("categories".into(), json!({}));
            a.insert(
                "threat_names".into(),
                json!(u.subject.label.iter().collect::<Vec<_>>()),
            );
            u.subject.common_attributes(&mut a, StatsShape::Web);
            let v = json::object("url", &key, format!("{}/urls/{key}", self.api), a);
            let plain = Bytes::from(serde_json::to_vec(&v).expect("a Value always serialises"));
            u.subject.cache = Some(Cached {
                plain,
                gzipped: None,
            });
        }
        cached_reply(u.subject.cache.as_mut().expect("just filled"), gzip)
    }

    /// `GET /urls/{id}/network_location`: the domain or IP address of the URL's host.
    pub fn network_location(&self, id: &str) -> Reply {
        let now = Instant::now();
        let mut g = self.lock();
        let Some(key) = g.existing(Collection::Urls, id, now) else {
            return Reply::not_found(format!("URL \"{id}\" not found"));
        };
        let url = g.urls[&key].url.clone();
        let host = url::Url::parse(&url)
            .ok()
            .and_then(|u| u.host().map(|h| h.to_owned()));
        let (c, host) = match host {
            Some(url::Host::Domain(d)) => (Collection::Domains, d),
            Some(url::Host::Ipv4(ip)) => (Collection::Ips, ip.to_string()),
            Some(url::Host::Ipv6(ip)) => (Collection::Ips, ip.to_string()),
            None => {
                return Reply::json(
                    StatusCode::OK,
                    &json!({ "data": null, "links": { "self": format!("{}/urls/{key}/network_location", self.api) } }),
                );
            }
        };
        Reply::json(StatusCode::OK, &self.host_value(&g, c, &host))
    }

    fn host_value(&self, g: &Inner, c: Collection, id: &str) -> Value {
        let (kind, obj) = match c {
            Collection::Domains => ("domain", g.domains.get(id)),
            _ => ("ip_address", g.ips.get(id)),
        };
        let mut a = Map::new();
        if let Some(h) = obj {
            if let Some(s) = &h.stats {
                let date = unix_now() - 86_400;
                a.insert("last_analysis_date".into(), date.into());
                a.insert(
                    "last_analysis_stats".into(),
                    json::stats(s, StatsShape::Web),
                );
                a.insert(
                    "last_analysis_results".into(),
                    json::results(s, StatsShape::Web, None),
                );
            }
            a.insert("reputation".into(), 0.into());
            a.insert("tags".into(), json!([]));
            a.insert(
                "total_votes".into(),
                json!({ "harmless": h.votes_harmless, "malicious": h.votes_malicious }),
            );
        }
        if c == Collection::Domains {
            if let Some(t) = tld(id) {
                a.insert("tld".into(), t.into());
            }
            a.insert("categories".into(), json!({}));
        }
        json::object(kind, id, format!("{}/{}/{id}", self.api, c.path()), a)
    }

    /// `GET /domains/{id}`, `GET /ip_addresses/{id}`.
    pub fn host(&self, c: Collection, id: &str) -> Reply {
        let now = Instant::now();
        let mut g = self.lock();
        match g.existing(c, id, now) {
            Some(key) => Reply::json(StatusCode::OK, &self.host_value(&g, c, &key)),
            None => Reply::not_found(format!("{} \"{id}\" not found", c.noun())),
        }
    }

    /// `GET /files/{id}/download_url` (`as_url`) and `GET /files/{id}/download`.
    pub fn download(&self, id: &str, premium: bool, as_url: bool) -> Reply {
        if !premium {
            return Reply::error(
                StatusCode::FORBIDDEN,
                "ForbiddenError",
                "You are not allowed to perform the requested operation",
            );
        }
        let mut g = self.lock();
        let Some(key) = g.resolve_file(id) else {
            return Reply::not_found(format!("File \"{id}\" not found"));
        };
        let Some(content) = g.files[&key].content.clone() else {
            return Reply::not_found(format!("File \"{id}\" content is not available"));
        };
        if !as_url {
            return Reply::binary(content);
        }
        let token = g.token();
        g.download_tokens.insert(token.clone(), key);
        Reply::json(
            StatusCode::OK,
            &json!({ "data": format!("{}/_download/{token}", self.origin) }),
        )
    }

    /// The content behind a download URL.
    pub fn download_by_token(&self, token: &str) -> Reply {
        let g = self.lock();
        match g
            .download_tokens
            .get(token)
            .and_then(|k| g.files.get(k))
            .and_then(|f| f.content.clone())
        {
            Some(content) => Reply::binary(content),
            None => Reply::not_found("Download URL not found"),
        }
    }

    /// `GET /{c}/{id}/comments|votes` and any other relationship (empty unless comments or
    /// votes), with `limit` and `cursor` paging, newest first.
    pub fn collection(
        &self,
        c: Collection,
        id: &str,
        rel: &str,
        limit: Option<usize>,
        cursor: Option<&str>,
    ) -> Reply {
        let now = Instant::now();
        let limit = limit.unwrap_or(10).clamp(1, 40);
        let start = match cursor.filter(|c| !c.is_empty()) {
            None => 0,
            Some(c) => match decode_cursor(c) {
                Some(n) => n,
                None => {
                    return Reply::error(
                        StatusCode::BAD_REQUEST,
                        "InvalidArgumentError",
                        "Invalid cursor",
                    );
                }
            },
        };
        let mut g = self.lock();
        let Some(key) = g.existing(c, id, now) else {
            return Reply::not_found(format!("{} \"{id}\" not found", c.noun()));
        };
        let base = format!("{}/{}/{key}/{rel}", self.api, c.path());
        let empty = Vec::new();
        let notes = match rel {
            "comments" | "votes" => g.notes.get(&(c, key, note_rel(rel))).unwrap_or(&empty),
            _ => &empty,
        };
        let total = notes.len();
        let page: Vec<Value> = notes
            .iter()
            .rev()
            .skip(start)
            .take(limit)
            .map(|n| {
                json!({ "type": n.kind, "id": n.id, "links": { "self": format!("{}/{}s/{}", self.api, n.kind, n.id) },
                        "attributes": n.attributes })
            })
            .collect();
        let mut meta = json!({ "count": total });
        let mut links = json!({ "self": match cursor {
            Some(cur) => format!("{base}?limit={limit}&cursor={cur}"),
            None => format!("{base}?limit={limit}"),
        }});
        if start + page.len() < total {
            let next = encode_cursor(start + page.len());
            links["next"] = format!("{base}?limit={limit}&cursor={next}").into();
            meta["cursor"] = next.into();
        }
        drop(g);
        Reply::json(
            StatusCode::OK,
            &json!({ "data": page, "meta": meta, "links": links }),
        )
    }

    /// `POST /{c}/{id}/comments` and `POST /{c}/{id}/votes`: `body` is the request JSON.
    pub fn add_note(&self, c: Collection, id: &str, rel: &str, body: &[u8]) -> Reply {
        let now = Instant::now();
        let Ok(req) = serde_json::from_slice::<Value>(body) else {
            return Reply::bad_request("the request body is not JSON");
        };
        let attrs = &req["data"]["attributes"];
        let date = unix_now();
        let (kind, attributes, verdict) = if rel == "comments" {
            let Some(text) = attrs["text"].as_str() else {
                return Reply::bad_request("data.attributes.text is required");
            };
            let tags: Vec<String> = text
                .split_whitespace()
                .filter_map(|w| w.strip_prefix('#'))
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
                .collect();
            let a = json!({ "date": date, "text": text, "html": text, "tags": tags,
                            "votes": { "positive": 0, "negative": 0, "abuse": 0 } });
            ("comment", a, None)
        } else {
            let value = match attrs["verdict"].as_str() {
                Some("harmless") => 1,
                Some("malicious") => -1,
                _ => {
                    return Reply::bad_request(
                        "data.attributes.verdict must be \"harmless\" or \"malicious\"",
                    );
                }
            };
            let verdict = if value > 0 { "harmless" } else { "malicious" };
            (
                "vote",
                json!({ "date": date, "value": value, "verdict": verdict }),
                Some(value > 0),
            )
        };
        let mut g = self.lock();
        let Some(key) = g.existing(c, id, now) else {
            return Reply::not_found(format!("{} \"{id}\" not found", c.noun()));
        };
        let mut suffix = [0u8; 4];
        g.rng.fill(&mut suffix[..]);
        let note_id = format!("{}-{key}-{}", c.note_prefix(), json::hex(&suffix));
        if let Some(harmless) = verdict {
            count_vote(&mut g, c, &key, harmless);
        }
        let note = Note {
            id: note_id.clone(),
            kind,
            attributes: attributes.clone(),
        };
        g.notes
            .entry((c, key, note_rel(rel)))
            .or_default()
            .push(note);
        drop(g);
        let v = json!({ "data": { "type": kind, "id": note_id,
                         "links": { "self": format!("{}/{kind}s/{note_id}", self.api) },
                         "attributes": attributes } });
        Reply::json(StatusCode::OK, &v)
    }
}

fn note_rel(rel: &str) -> &'static str {
    if rel == "comments" {
        "comments"
    } else {
        "votes"
    }
}

fn count_vote(g: &mut Inner, c: Collection, key: &str, harmless: bool) {
    let bump_pair = |h: &mut u32, m: &mut u32| if harmless { *h += 1 } else { *m += 1 };
    match c {
        Collection::Files => {
            if let Some(f) = g.files.get_mut(key) {
                bump_pair(
                    &mut f.subject.votes_harmless,
                    &mut f.subject.votes_malicious,
                );
                f.subject.cache = None;
            }
        }
        Collection::Urls => {
            if let Some(u) = g.urls.get_mut(key) {
                bump_pair(
                    &mut u.subject.votes_harmless,
                    &mut u.subject.votes_malicious,
                );
                u.subject.cache = None;
            }
        }
        Collection::Domains | Collection::Ips => {
            let map = if c == Collection::Domains {
                &mut g.domains
            } else {
                &mut g.ips
            };
            if let Some(h) = map.get_mut(key) {
                bump_pair(&mut h.votes_harmless, &mut h.votes_malicious);
            }
        }
    }
}

fn tld(domain: &str) -> Option<&str> {
    domain
        .rsplit('.')
        .next()
        .filter(|t| !t.is_empty() && t.len() < domain.len())
}

fn cached_reply(c: &mut Cached, gzip: bool) -> Reply {
    if gzip && c.gzipped.is_none() {
        c.gzipped = Some(json::gzip(&c.plain));
    }
    Reply {
        gzipped: if gzip { c.gzipped.clone() } else { None },
        ..Reply::json_bytes(StatusCode::OK, c.plain.clone())
    }
}

fn bump(map: &mut std::collections::BTreeMap<String, u64>, key: &str) {
    match map.get_mut(key) {
        Some(n) => *n += 1,
        None => {
            map.insert(key.to_owned(), 1);
        }
    }
}

/// Cursors are opaque to clients; here, the base64url of the offset.
fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

fn decode_cursor(c: &str) -> Option<usize> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c.trim_end_matches('='))
        .ok()?;
    std::str::from_utf8(&raw)
        .ok()?
        .strip_prefix("o:")?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::known::{KnownFile, KnownHost};

    fn sim(config: SimConfig) -> Sim {
        Sim::new(config, "http://127.0.0.1:1".into())
    }

    fn body(r: &Reply) -> Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn url_ids_agree_between_base64_and_sha256_forms() {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode("http://Example.com");
        let sha = url_id("http://example.com/");
        assert_eq!(resolve_url_id(&b64).unwrap(), sha);
        assert_eq!(resolve_url_id(&sha.to_uppercase()).unwrap(), sha);
        assert_eq!(resolve_url_id(&format!("{b64}==")).unwrap(), sha);
    }

    #[test]
    fn cursors_round_trip_and_garbage_is_refused() {
        assert_eq!(decode_cursor(&encode_cursor(30)), Some(30));
        assert_eq!(decode_cursor("%%%"), None);
        assert_eq!(decode_cursor("aGVsbG8"), None);
    }

    #[test]
    fn the_sliding_window_admits_again_once_old_requests_age_out() {
        let quota = SimQuota {
            requests: 2,
            window: Duration::from_millis(60),
            daily: None,
            monthly: None,
        };
        let s = sim(SimConfig {
            quota: Some(quota),
            ..SimConfig::default()
        });
        assert_eq!(s.admit(1, "GET /files/{id}"), Admission::Accepted(None));
        assert_eq!(s.admit(1, "GET /files/{id}"), Admission::Accepted(None));
        assert_eq!(s.admit(1, "GET /files/{id}"), Admission::OverQuota);
        // Another key has its own budget.
        assert_eq!(s.admit(2, "GET /files/{id}"), Admission::Accepted(None));
        std::thread::sleep(Duration::from_millis(70));
        assert_eq!(s.admit(1, "GET /files/{id}"), Admission::Accepted(None));
        let st = s.stats();
        assert_eq!(st.quota_rejections, 1);
        assert_eq!(st.api_requests, 4);
        assert_eq!(st.max_in_window, 2);
    }

    #[test]
    fn keys_are_checked_by_hash_and_premium_keys_are_valid() {
        let s = sim(SimConfig {
            api_keys: vec!["good".into()],
            premium_keys: vec!["gold".into()],
            ..SimConfig::default()
        });
        assert_eq!(s.authenticate(None), Auth::Missing);
        assert_eq!(s.authenticate(Some(b"")), Auth::Missing);
        assert_eq!(s.authenticate(Some(b"bad")), Auth::Wrong);
        assert!(matches!(
            s.authenticate(Some(b"good")),
            Auth::Valid { premium: false, .. }
        ));
        assert!(matches!(
            s.authenticate(Some(b"gold")),
            Auth::Valid { premium: true, .. }
        ));
        assert!(
            !format!("{s:?}").contains("good"),
            "raw keys must not be kept"
        );
    }

    #[test]
    fn a_second_analysis_while_one_is_in_flight_reuses_it() {
        let sha = "a".repeat(64);
        let known = Known {
            files: vec![KnownFile {
                sha256: sha.clone(),
                md5: None,
                sha1: None,
                stats: EngineStats::CLEAN_FILE,
                label: None,
                size: None,
                name: None,
            }],
            ..Known::default()
        };
        let s = sim(SimConfig {
            known,
            analysis_delay: (Duration::from_secs(60), Duration::from_secs(60)),
            ..SimConfig::default()
        });
        let a = body(&s.analyse_file(&sha))["data"]["id"].clone();
        let b = body(&s.analyse_file(&sha.to_uppercase()))["data"]["id"].clone();
        assert_eq!(a, b);
        let status = body(&s.analysis(a.as_str().unwrap()))["data"]["attributes"]["status"].clone();
        assert_eq!(status, "queued");
        // The preloaded verdict stays visible while the re-analysis runs.
        assert_eq!(
            body(&s.file(&sha, false))["data"]["attributes"]["last_analysis_stats"]["undetected"],
            70
        );
    }

    #[test]
    fn hosts_without_stats_have_no_last_analysis_stats() {
        let known = Known {
            domains: vec![KnownHost {
                id: "Old.Example.".into(),
                stats: None,
            }],
            ..Known::default()
        };
        let s = sim(SimConfig {
            known,
            ..SimConfig::default()
        });
        let v = body(&s.host(Collection::Domains, "old.example"));
        assert_eq!(v["data"]["id"], "old.example");
        assert!(v["data"]["attributes"].get("last_analysis_stats").is_none());
        assert_eq!(
            s.host(Collection::Ips, "192.0.2.1").status,
            StatusCode::NOT_FOUND
        );
    }
}
