//! JSON documents: STIX 2.0/2.1 bundles, MISP events and any other JSON.
//!
//! A small parser keeps key order and the line of every string, so each indicator carries the
//! line of its value. It is strict but for one defect that real exports have (ESET's MISP event
//! of the PyPI backdoors): a trailing comma is ignored, with a warning naming its line, so the
//! document is still read by its structure. One that does not parse otherwise is re-read as
//! text, with a warning saying so; text extraction takes every URL and name in the prose
//! (references, file names such as `cache.py`), which the structure would have left alone.
//!
//! - STIX: the `pattern` of every `indicator` object; comparisons `path = 'value'` joined by
//!   `OR`/`AND` are read one by one, and `path IN ('a', 'b')` as one comparison per value. File
//!   hashes (`file:hashes.'SHA-256'`, `file:hashes.SHA256`, `file:hashes.md5`...), `url:value`,
//!   `domain-name:value`, `ipv4-addr:value`, `ipv6-addr:value`, `email-addr:value` (skipped) and
//!   `network-traffic` references are taken; other object paths (x509 certificates,
//!   processes...) are not indicators. Observables are read the same way: `file` objects by
//!   their `hashes`, `url`, `domain-name`, `ipv4-addr`, `ipv6-addr` and `email-addr` objects by
//!   their `value`, at the top of a 2.1 bundle or in an `observed-data`'s `objects` (2.0). An
//!   object marked `"revoked": true` has been withdrawn by its producer: it is not read.
//! - MISP: events (`{"response":[{"Event":..}]}`, `{"Event":..}` or a list of those), their
//!   `Attribute` list and every `Object`'s `Attribute` list; attribute searches
//!   (`{"response":{"Attribute":[..]}}` from `/attributes/restSearch`, `{"Attribute":[..]}` as
//!   PyMISP returns it) alike. Composite types (`filename|sha256`, `domain|ip`, `ip-dst|port`)
//!   are split and each part read according to its own type. A `url` or `link` filed under
//!   "External analysis" is the report that describes the event, not an indicator: it is
//!   counted as a `reference` skip.
//! - JSON Lines (one document per line, as log and feed exports write them) is read as the array
//!   of its documents.
//! - Generic JSON: only string values under a key that names an indicator are taken. A key is
//!   split into words (camelCase, `_`, `-`, `.`, spaces) and counts when one word is in
//!   [`INDICATOR_KEY_WORDS`] (`dnsServer`, `c2`, `url`, `domain`, `ip`, `hash`...) and none is
//!   in [`BENIGN_KEY_WORDS`]: those name what a malware configuration leaves alone (its
//!   `excluded_domains`, a sandbox check's `whitelisted_ips`,
//!   `connectivity_check_hosts`) or a link to what describes an indicator (`report_url`,
//!   `reference`), and nothing under them is taken, whatever the keys below. A list under an
//!   indicator key counts whole. An object under one is read by its own keys, as a
//!   configuration (`{"c2_config": {"servers": [..], "dns_idle": "8.8.8.8"}}` takes the servers
//!   only), unless none of them names anything: then it is the record of one indicator
//!   (`{"c2": {"address": "evil.com", "port": 443}}`), whose strings and lists are taken, one
//!   level down only. A key naming a collection of indicators ([`COLLECTION_KEY_WORDS`]:
//!   `iocs`, `indicator`...) is the exception: every string under it is taken, however its
//!   neutral keys group them (`{"iocs": {"network": {"dns": ["evil.com"]}}}`). So a whole
//!   configuration is never taken because its key names a C2.

use std::io::Read;

use super::sink::Sink;
use super::{Classified, Format, MAX_DOCUMENT, SkipReason, classify, refang};
use crate::indicator::{FileHash, Indicator};

/// Words that make a generic JSON key an indicator key.
pub const INDICATOR_KEY_WORDS: [&str; 36] = [
    "c2",
    "cnc",
    "c&c",
    "url",
    "urls",
    "uri",
    "domain",
    "domains",
    "host",
    "hosts",
    "hostname",
    "hostnames",
    "ip",
    "ips",
    "ipv4",
    "ipv6",
    "addr",
    "address",
    "addresses",
    "exfil",
    "gate",
    "server",
    "servers",
    "hash",
    "hashes",
    "md5",
    "sha1",
    "sha256",
    "ioc",
    "iocs",
    "indicator",
    "indicators",
    "fqdn",
    "panel",
    "nameserver",
    "nameservers",
];

/// Words that make a generic JSON key name a collection of indicators (all in
/// [`INDICATOR_KEY_WORDS`]): everything under it is one.
pub const COLLECTION_KEY_WORDS: [&str; 4] = ["ioc", "iocs", "indicator", "indicators"];

/// Words that make a generic JSON key name what is not an indicator, whatever its other words
/// (`excluded_domains`, `report_url`): benign, allow and exclusion lists, a malware's checks of
/// the network, links to reports. Not `block` or `deny`: a defender's `blocklist_domains` is
/// what to look up, however a malware's `blockList` of ad domains (no indicator word: not taken
/// anyway) uses the word.
pub const BENIGN_KEY_WORDS: [&str; 30] = [
    "allow",
    "allowed",
    "allowlist",
    "allowlisted",
    "white",
    "whitelist",
    "whitelisted",
    "exclude",
    "excluded",
    "excludes",
    "exclusion",
    "exclusions",
    "except",
    "exception",
    "exceptions",
    "skip",
    "skipped",
    "ignore",
    "ignored",
    "benign",
    "legit",
    "legitimate",
    "trusted",
    "decoy",
    "decoys",
    "connectivity",
    "report",
    "reports",
    "reference",
    "references",
];

const MAX_DEPTH: usize = 256;

/// The warning of a STIX document that yields no indicator: what is read.
const NO_STIX_INDICATOR: &str = "no indicator in this STIX document: only indicator patterns \
     and file, url, domain-name, ipv4-addr and ipv6-addr objects are read";
/// The warning of a MISP document that yields no indicator: what is read.
const NO_MISP_INDICATOR: &str = "no indicator in this MISP document: only attributes typed \
     md5, sha1, sha256, url, domain, hostname, ip, ip-src or ip-dst (alone or in a composite) \
     are read";

/// A parsed JSON value that remembers where its strings were.
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `true` or `false` (STIX's `revoked`).
    Bool(bool),
    /// `null` or a number: never an indicator.
    Scalar,
    /// A string and its 1-based line.
    Str(String, usize),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in document order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Obj(kv) => kv.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }
    fn str(&self) -> Option<(&str, usize)> {
        match self {
            Json::Str(s, l) => Some((s, *l)),
            _ => None,
        }
    }
    fn items(&self) -> &[Json] {
        match self {
            Json::Arr(a) => a,
            _ => &[],
        }
    }
    fn entries(&self) -> &[(String, Json)] {
        match self {
            Json::Obj(kv) => kv,
            _ => &[],
        }
    }
}

pub(crate) fn parse(reader: impl Read, format: Format, sink: &mut Sink<'_>) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    reader.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        sink.reject(
            0,
            format!("document larger than {} MiB, not read", MAX_DOCUMENT >> 20),
            "",
        );
        return Ok(());
    }
    let body = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let text = match std::str::from_utf8(body) {
        Ok(t) => std::borrow::Cow::Borrowed(t),
        Err(e) => {
            let line = 1 + body[..e.valid_up_to()]
                .iter()
                .filter(|&&b| b == b'\n')
                .count();
            sink.lossy(line);
            String::from_utf8_lossy(body)
        }
    };
    let doc = match parse_json(&text) {
        Ok((doc, trailing_commas)) => {
            if let Some(first) = trailing_commas.first() {
                let more = match trailing_commas.len() - 1 {
                    0 => String::new(),
                    n => format!(" (and {n} more)"),
                };
                sink.warn(format!(
                    "line {first}: a trailing comma, which JSON does not allow, was ignored{more}"
                ));
            }
            doc
        }
        Err((line, msg)) => {
            let what = match format {
                Format::Misp => "MISP JSON",
                Format::Stix => "STIX JSON",
                _ => "JSON",
            };
            sink.warn(format!(
                "malformed {what} (line {line}: {msg}): fell back to text extraction"
            ));
            sink.summary.format = Some(Format::Text);
            return super::text::parse_bytes_as_text(body, sink);
        }
    };
    // The content decides: a forced `--format misp` on a STIX bundle would find nothing.
    let kind = if is_stix(&doc) {
        Format::Stix
    } else if !misp_holders(&doc).is_empty() {
        Format::Misp
    } else {
        Format::Json
    };
    sink.summary.format = Some(kind);
    match kind {
        Format::Stix => stix(&doc, sink),
        Format::Misp => {
            for holder in misp_holders(&doc) {
                misp_holder(holder, sink);
            }
        }
        _ => generic(&doc, Under::Neutral, sink),
    }
    // A bundle or an event that yields nothing is more often a shape this reader does not know
    // than an empty one: an empty summary alone would look like a clean list.
    if kind != Format::Json && sink.summary.total_found() == 0 {
        let warning = match kind {
            Format::Stix => NO_STIX_INDICATOR,
            _ => NO_MISP_INDICATOR,
        };
        sink.warn(warning.to_string());
    }
    Ok(())
}

fn is_stix(doc: &Json) -> bool {
    doc.get("type")
        .and_then(Json::str)
        .is_some_and(|(t, _)| t == "bundle")
        || doc
            .get("objects")
            .is_some_and(|o| o.items().iter().any(|x| x.get("pattern").is_some()))
}

// ---------------------------------------------------------------------------------------- STIX

fn stix(doc: &Json, sink: &mut Sink<'_>) {
    for obj in doc.get("objects").map(Json::items).unwrap_or_default() {
        stix_object(obj, sink);
    }
}

fn stix_object(obj: &Json, sink: &mut Sink<'_>) {
    if obj.get("revoked") == Some(&Json::Bool(true)) {
        return;
    }
    let Some((kind, _)) = obj.get("type").and_then(Json::str) else {
        return;
    };
    match kind {
        "indicator" => {
            let stix_pattern = obj
                .get("pattern_type")
                .and_then(Json::str)
                .is_none_or(|(t, _)| t == "stix");
            if let (true, Some((pattern, line))) =
                (stix_pattern, obj.get("pattern").and_then(Json::str))
            {
                for (path, value) in stix_comparisons(pattern) {
                    stix_value(&path, &value, line, sink);
                }
            }
        }
        // STIX 2.0 has observables only here, keyed "0", "1"...
        "observed-data" => {
            for (_, embedded) in obj.get("objects").map(Json::entries).unwrap_or_default() {
                stix_object(embedded, sink);
            }
        }
        "file" => {
            for (algo, hash) in obj.get("hashes").map(Json::entries).unwrap_or_default() {
                if let Some((hash, line)) = hash.str() {
                    stix_value(&format!("file:hashes.{algo}"), hash, line, sink);
                }
            }
        }
        "url" | "domain-name" | "ipv4-addr" | "ipv6-addr" | "email-addr" => {
            if let Some((value, line)) = obj.get("value").and_then(Json::str) {
                stix_value(&format!("{kind}:value"), value, line, sink);
            }
        }
        _ => {}
    }
}

/// The comparisons of a STIX pattern, in order: `path = 'value'`, and `path IN ('a', 'b')` as
/// one per value.
pub fn stix_comparisons(pattern: &str) -> Vec<(String, String)> {
    let b: Vec<char> = pattern.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut path_start = 0;
    while i < b.len() {
        match b[i] {
            '\'' => {
                // A literal that is not a comparison value (a quoted hash name in a path).
                i = skip_literal(&b, i).1;
            }
            '(' => {
                if let Some(path) = set_path(&b[path_start..i]) {
                    let (values, end) = set_literals(&b, i + 1);
                    // `NOT IN` names what the object is not: no indicator.
                    if path != "NOT" {
                        out.extend(values.into_iter().map(|v| (path.clone(), v)));
                    }
                    i = end;
                } else {
                    i += 1;
                }
                path_start = i;
            }
            '[' | ')' | ']' => {
                i += 1;
                path_start = i;
            }
            '=' if i > 0 && !matches!(b[i - 1], '!' | '<' | '>') => {
                let path: String = b[path_start..i]
                    .iter()
                    .collect::<String>()
                    .trim()
                    .to_owned();
                let mut j = i + 1;
                while j < b.len() && b[j].is_whitespace() {
                    j += 1;
                }
                if j < b.len() && b[j] == '\'' {
                    let (value, end) = skip_literal(&b, j);
                    out.push((
                        path.rsplit(char::is_whitespace)
                            .next()
                            .unwrap_or("")
                            .to_owned(),
                        value,
                    ));
                    i = end;
                } else {
                    i = j;
                }
                path_start = i;
            }
            c if c.is_whitespace() && i > path_start && path_is_keyword(&b[path_start..i]) => {
                i += 1;
                path_start = i;
            }
            _ => i += 1,
        }
    }
    out
}

/// The path of `path IN` (or `NOT` for `path NOT IN`), when `before` (what precedes a `(`) ends
/// with the `IN` operator.
fn set_path(before: &[char]) -> Option<String> {
    let before: String = before.iter().collect();
    let mut words = before.split_whitespace().rev();
    match (words.next(), words.next()) {
        (Some("IN"), Some(path)) => Some(path.to_owned()),
        _ => None,
    }
}

/// The quoted values of a `('a', 'b')` set whose content starts at `start`, and the index after
/// its `)`; unquoted members (numbers: `dst_port IN (80, 443)`) are passed over.
fn set_literals(b: &[char], start: usize) -> (Vec<String>, usize) {
    let mut values = Vec::new();
    let mut i = start;
    while i < b.len() {
        match b[i] {
            '\'' => {
                let (value, end) = skip_literal(b, i);
                values.push(value);
                i = end;
            }
            ')' => return (values, i + 1),
            _ => i += 1,
        }
    }
    (values, i)
}

fn path_is_keyword(word: &[char]) -> bool {
    let w: String = word.iter().collect::<String>().trim().to_ascii_uppercase();
    matches!(w.as_str(), "AND" | "OR" | "NOT" | "FOLLOWEDBY")
}

/// Reads a `'...'` literal at `start` (backslash escapes); returns its value and the index after it.
fn skip_literal(b: &[char], start: usize) -> (String, usize) {
    let mut value = String::new();
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            '\\' if i + 1 < b.len() => {
                value.push(b[i + 1]);
                i += 2;
            }
            '\'' => return (value, i + 1),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    (value, i)
}

fn stix_value(path: &str, value: &str, line: usize, sink: &mut Sink<'_>) {
    let p = path.to_ascii_lowercase();
    if let Some(algo) = p.strip_prefix("file:hashes.") {
        let algo: String = algo.chars().filter(|c| c.is_ascii_alphanumeric()).collect();
        if matches!(algo.as_str(), "md5" | "sha1" | "sha256") {
            match FileHash::parse(value.trim()) {
                Some(h) => sink.indicator(Indicator::Hash(h), line),
                None => sink.reject(line, format!("{path} is not a valid {algo}"), value),
            }
        }
        return;
    }
    let object = p.split(':').next().unwrap_or_default();
    let wanted = matches!(
        object,
        "url" | "domain-name" | "ipv4-addr" | "ipv6-addr" | "email-addr"
    ) || (object == "network-traffic" && p.ends_with("_ref.value"))
        || (object == "email-message" && p.ends_with("_ref.value"));
    if !wanted {
        return;
    }
    let c = classify(&refang(value.trim()), sink.opts);
    if !sink.offer(c, line) {
        sink.reject(line, format!("{path} is not a valid indicator"), value);
    }
}

// ---------------------------------------------------------------------------------------- MISP

/// What holds MISP attributes: events, and the single `Attribute` list of an attribute search,
/// at the top or under `response` (see the module documentation).
fn misp_holders(doc: &Json) -> Vec<&Json> {
    let mut holders = Vec::new();
    let response = doc.get("response");
    for single in [Some(doc), response].into_iter().flatten() {
        if let Some(event) = single.get("Event") {
            holders.push(event);
        } else if let Some(Json::Arr(_)) = single.get("Attribute") {
            holders.push(single);
        }
    }
    let lists = [response.map(Json::items).unwrap_or_default(), doc.items()];
    for list in lists {
        for item in list {
            if let Some(e) = item.get("Event") {
                holders.push(e);
            }
        }
    }
    holders
}

fn misp_holder(holder: &Json, sink: &mut Sink<'_>) {
    for attr in holder.get("Attribute").map(Json::items).unwrap_or_default() {
        misp_attribute(attr, sink);
    }
    for obj in holder.get("Object").map(Json::items).unwrap_or_default() {
        for attr in obj.get("Attribute").map(Json::items).unwrap_or_default() {
            misp_attribute(attr, sink);
        }
    }
}

fn misp_attribute(attr: &Json, sink: &mut Sink<'_>) {
    let (Some((types, _)), Some((value, line))) = (
        attr.get("type").and_then(Json::str),
        attr.get("value").and_then(Json::str),
    ) else {
        return;
    };
    let category = attr.get("category").and_then(Json::str).map(|(c, _)| c);
    if matches!(types, "url" | "link") && category == Some("External analysis") {
        sink.skip(SkipReason::Reference);
        return;
    }
    let parts: Vec<&str> = types.split('|').collect();
    let values: Vec<&str> = value.splitn(parts.len(), '|').collect();
    for (t, v) in parts.iter().zip(values) {
        let want = match *t {
            "md5" | "sha1" | "sha256" => "hash",
            "url" => "url",
            "domain" | "hostname" => "domain",
            "ip-src" | "ip-dst" | "ip" => "ip",
            t if t.starts_with("email")
                && !matches!(t, "email-subject" | "email-body" | "email-attachment") =>
            {
                "email"
            }
            _ => continue,
        };
        let c = if want == "hash" {
            FileHash::parse(v.trim()).map_or(Classified::NotAnIndicator, |h| {
                Classified::Indicator(Indicator::Hash(h))
            })
        } else {
            classify(&refang(v.trim()), sink.opts)
        };
        if !sink.offer(c, line) {
            sink.reject(
                line,
                format!("MISP attribute of type {t} is not a valid {want}"),
                v,
            );
        }
    }
}

// ------------------------------------------------------------------------------------- generic

/// What the keys above a generic JSON value make of it (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Under {
    /// Nothing: only keys further down can make a value an indicator.
    Neutral,
    /// A key naming one kind of indicator (`c2`, `url`...).
    Indicator,
    /// A neutral key of the record of one indicator (`address` in `{"c2": {"address": ..}}`):
    /// taken like [`Under::Indicator`], but an object under it is read by its own keys.
    RecordField,
    /// A key naming a collection of indicators (`iocs`): every string below is one.
    Collection,
    /// A key naming what is not an indicator (`excluded_domains`): nothing below is one.
    Benign,
}

fn generic(v: &Json, under: Under, sink: &mut Sink<'_>) {
    match v {
        Json::Str(s, line)
            if matches!(
                under,
                Under::Indicator | Under::RecordField | Under::Collection
            ) =>
        {
            let c = classify(&refang(s.trim()), sink.opts);
            sink.offer(c, *line);
        }
        Json::Arr(items) => items.iter().for_each(|i| generic(i, under, sink)),
        Json::Obj(kv) if under != Under::Benign => {
            // What a neutral key of this object passes down to its value.
            let inherited = match under {
                Under::Collection => Under::Collection,
                Under::Indicator if kv.iter().all(|(k, _)| key_meaning(k) == Under::Neutral) => {
                    Under::RecordField
                }
                _ => Under::Neutral,
            };
            for (k, v) in kv {
                let child = match (key_meaning(k), under) {
                    (Under::Neutral, _) => inherited,
                    (Under::Benign, _) => Under::Benign,
                    (_, Under::Collection) => Under::Collection,
                    (own, _) => own,
                };
                generic(v, child, sink);
            }
        }
        _ => {}
    }
}

/// Whether a generic JSON key names an indicator (see the module documentation).
pub fn is_indicator_key(key: &str) -> bool {
    matches!(key_meaning(key), Under::Indicator | Under::Collection)
}

/// What a generic JSON key names, by its words; a benign word wins.
fn key_meaning(key: &str) -> Under {
    let words = key_words(key);
    let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
    if has(&BENIGN_KEY_WORDS) {
        Under::Benign
    } else if has(&COLLECTION_KEY_WORDS) {
        Under::Collection
    } else if has(&INDICATOR_KEY_WORDS) {
        Under::Indicator
    } else {
        Under::Neutral
    }
}

/// The lower-cased words of a key: split at camelCase humps, `_`, `-`, `.` and spaces.
fn key_words(key: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut prev_lower = false;
    for c in key.chars() {
        if c == '_' || c == '-' || c == '.' || c == ' ' {
            words.push(std::mem::take(&mut cur));
            prev_lower = false;
            continue;
        }
        if c.is_uppercase() && prev_lower {
            words.push(std::mem::take(&mut cur));
        }
        prev_lower = c.is_lowercase() || c.is_ascii_digit();
        cur.extend(c.to_lowercase());
    }
    words.push(cur);
    words
}

// -------------------------------------------------------------------------------------- parser

struct Parser<'a> {
    s: &'a [u8],
    text: &'a str,
    i: usize,
    line: usize,
    depth: usize,
    /// The lines of the trailing commas ignored.
    trailing_commas: Vec<usize>,
}

type PResult<T> = Result<T, (usize, String)>;

impl<'a> Parser<'a> {
    fn new(text: &'a str) -> Self {
        Parser {
            s: text.as_bytes(),
            text,
            i: 0,
            line: 1,
            depth: 0,
            trailing_commas: Vec::new(),
        }
    }

    fn err<T>(&self, msg: impl Into<String>) -> PResult<T> {
        Err((self.line, msg.into()))
    }

    /// One document, or several one after the other (JSON Lines: one object per line), read
    /// as the array of them.
    fn document(mut self) -> PResult<(Json, Vec<usize>)> {
        let mut docs = vec![self.value()?];
        self.ws();
        while self.i < self.s.len() {
            if !matches!(self.s[self.i], b'{' | b'[') {
                return self.err("trailing characters after the document");
            }
            docs.push(self.value()?);
            self.ws();
        }
        let doc = match docs.len() {
            1 => docs.pop().expect("one"),
            _ => Json::Arr(docs),
        };
        Ok((doc, self.trailing_commas))
    }

    /// Whether a comma just read is followed by `close`: then it is a trailing comma, noted and
    /// passed over.
    fn trailing_comma(&mut self, close: u8) -> bool {
        let line = self.line;
        self.ws();
        let trailing = self.s.get(self.i) == Some(&close);
        if trailing {
            self.trailing_commas.push(line);
        }
        trailing
    }

    fn ws(&mut self) {
        while let Some(&c) = self.s.get(self.i) {
            match c {
                b'\n' => self.line += 1,
                b' ' | b'\t' | b'\r' => {}
                _ => return,
            }
            self.i += 1;
        }
    }

    fn value(&mut self) -> PResult<Json> {
        self.ws();
        match self.s.get(self.i) {
            None => self.err("unexpected end of document"),
            Some(b'{') => self.nested(Self::object),
            Some(b'[') => self.nested(Self::array),
            Some(b'"') => {
                let line = self.line;
                Ok(Json::Str(self.string()?, line))
            }
            Some(_) => self.scalar(),
        }
    }

    fn nested(&mut self, f: fn(&mut Self) -> PResult<Json>) -> PResult<Json> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        let v = f(self);
        self.depth -= 1;
        v
    }

    fn object(&mut self) -> PResult<Json> {
        self.i += 1;
        let mut kv = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b'}') {
            self.i += 1;
            return Ok(Json::Obj(kv));
        }
        loop {
            self.ws();
            if self.s.get(self.i) != Some(&b'"') {
                return self.err("expected a key");
            }
            let k = self.string()?;
            self.ws();
            if self.s.get(self.i) != Some(&b':') {
                return self.err("expected ':'");
            }
            self.i += 1;
            let v = self.value()?;
            kv.push((k, v));
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    if self.trailing_comma(b'}') {
                        self.i += 1;
                        return Ok(Json::Obj(kv));
                    }
                }
                Some(b'}') => {
                    self.i += 1;
                    return Ok(Json::Obj(kv));
                }
                _ => return self.err("expected ',' or '}'"),
            }
        }
    }

    fn array(&mut self) -> PResult<Json> {
        self.i += 1;
        let mut items = Vec::new();
        self.ws();
        if self.s.get(self.i) == Some(&b']') {
            self.i += 1;
            return Ok(Json::Arr(items));
        }
        loop {
            items.push(self.value()?);
            self.ws();
            match self.s.get(self.i) {
                Some(b',') => {
                    self.i += 1;
                    if self.trailing_comma(b']') {
                        self.i += 1;
                        return Ok(Json::Arr(items));
                    }
                }
                Some(b']') => {
                    self.i += 1;
                    return Ok(Json::Arr(items));
                }
                _ => return self.err("expected ',' or ']'"),
            }
        }
    }

    fn scalar(&mut self) -> PResult<Json> {
        let start = self.i;
        while let Some(&c) = self.s.get(self.i) {
            if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'+' | b'.') {
                self.i += 1;
            } else {
                break;
            }
        }
        let word = &self.text[start..self.i];
        if let Ok(b) = word.parse::<bool>() {
            Ok(Json::Bool(b))
        } else if word == "null" || (!word.is_empty() && word.parse::<f64>().is_ok()) {
            Ok(Json::Scalar)
        } else {
            // The first character, not byte: the text may hold multi-byte characters here
            // (found by fuzzing: a replacement character after a decoding error panicked).
            let next = self.text[start..].chars().next();
            self.err(format!(
                "unexpected {:?}",
                next.map(String::from).unwrap_or_default()
            ))
        }
    }

    fn string(&mut self) -> PResult<String> {
        self.i += 1;
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&c) = self.s.get(self.i) {
                if c == b'"' || c == b'\\' || c < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(&self.text[start..self.i]);
            match self.s.get(self.i) {
                None => return self.err("unterminated string"),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    let esc = self.s.get(self.i + 1).copied();
                    self.i += 2;
                    match esc {
                        Some(b'"') => out.push('"'),
                        Some(b'\\') => out.push('\\'),
                        Some(b'/') => out.push('/'),
                        Some(b'b') => out.push('\u{8}'),
                        Some(b'f') => out.push('\u{c}'),
                        Some(b'n') => out.push('\n'),
                        Some(b'r') => out.push('\r'),
                        Some(b't') => out.push('\t'),
                        Some(b'u') => {
                            let c = self.unicode_escape()?;
                            out.push(c);
                        }
                        _ => return self.err("invalid escape"),
                    }
                }
                Some(_) => return self.err("control character in a string"),
            }
        }
    }

    fn hex4(&mut self) -> PResult<u32> {
        let h = self
            .text
            .get(self.i..self.i + 4)
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match h {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("invalid \\u escape"),
        }
    }

    fn unicode_escape(&mut self) -> PResult<char> {
        let hi = self.hex4()?;
        if (0xD800..0xDC00).contains(&hi)
            && self.s.get(self.i) == Some(&b'\\')
            && self.s.get(self.i + 1) == Some(&b'u')
        {
            self.i += 2;
            let lo = self.hex4()?;
            if (0xDC00..0xE000).contains(&lo) {
                let c = 0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00);
                return Ok(char::from_u32(c).unwrap_or('\u{FFFD}'));
            }
            return Ok('\u{FFFD}');
        }
        Ok(char::from_u32(hi).unwrap_or('\u{FFFD}'))
    }
}

/// Parses a JSON document, keeping the line of each string; returns it with the lines of the
/// trailing commas it ignored (the one defect tolerated), or the line of the error and why.
pub fn parse_json(text: &str) -> Result<(Json, Vec<usize>), (usize, String)> {
    Parser::new(text).document()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::{Options, Summary, parse_reader};

    const SHA256: &str = "d3b0fbd6ff688034471e4400717742ffa21dcb1c909b0c1a1b2e82b34ae91d03";

    /// Reads `input` as a `.json` list: the summary and `(type, value, line)` of what was found.
    fn read(input: &str) -> (Summary, Vec<(&'static str, String, usize)>) {
        let mut found = Vec::new();
        let summary = parse_reader("x.json", input.as_bytes(), None, &Options::default(), |f| {
            found.push((f.indicator.type_name(), f.indicator.value(), f.line))
        })
        .unwrap();
        (summary, found)
    }

    fn values<'a>(found: &'a [(&'static str, String, usize)]) -> Vec<&'a str> {
        found.iter().map(|(_, v, _)| v.as_str()).collect()
    }

    #[test]
    fn parser_keeps_lines_and_notes_trailing_commas() {
        let (doc, trailing) = parse_json("{\n\"a\": [\n\"x\",\n\"y\"\n]\n}").unwrap();
        assert_eq!(doc.get("a").unwrap().items()[1], Json::Str("y".into(), 4));
        assert!(trailing.is_empty());
        let (doc, trailing) = parse_json("{\"a\": [1,\n2,\n],\n\"b\": \"z\",\n}").unwrap();
        assert_eq!(trailing, vec![2, 4]);
        assert_eq!(doc.get("a").unwrap().items().len(), 2);
        assert_eq!(doc.get("b"), Some(&Json::Str("z".into(), 4)));
        // Documents one after the other (JSON Lines) are the array of them.
        let (doc, _) = parse_json("{\"a\": \"x\"}\n{\"a\": \"y\"}\n").unwrap();
        assert_eq!(doc.items().len(), 2);
        assert_eq!(doc.items()[1].get("a"), Some(&Json::Str("y".into(), 2)));
        // Only a comma before the closing bracket is passed over; nothing but documents follows
        // a document.
        for bad in [
            "[,]",
            "{,}",
            "[1,,]",
            "{\"a\": 1,,}",
            "[1,\n",
            "{} x",
            "{} 1",
        ] {
            assert!(parse_json(bad).is_err(), "{bad}");
        }
        assert!(parse_json("[[[[").is_err());
        assert!(parse_json(&"[".repeat(10_000)).is_err());
    }

    #[test]
    fn stix_or_chains_and_quoted_hash_names_are_read() {
        let got = stix_comparisons(
            "[file:hashes.'SHA-256' = 'ab\\'c' OR domain-name:value = 'x.com'] AND [ipv4-addr:value = '1.2.3.4']",
        );
        assert_eq!(
            got,
            vec![
                ("file:hashes.'SHA-256'".to_string(), "ab'c".to_string()),
                ("domain-name:value".to_string(), "x.com".to_string()),
                ("ipv4-addr:value".to_string(), "1.2.3.4".to_string()),
            ]
        );
    }

    #[test]
    fn stix_in_sets_are_one_comparison_per_value() {
        let got = stix_comparisons(
            "[domain-name:value = 'a.com' OR ipv4-addr:value IN ('1.2.3.4', '5.6.7.8')] AND [network-traffic:dst_port IN (80, 443) AND url:value NOT IN ('http://b.com/')]",
        );
        let pair = |p: &str, v: &str| (p.to_string(), v.to_string());
        assert_eq!(
            got,
            vec![
                pair("domain-name:value", "a.com"),
                pair("ipv4-addr:value", "1.2.3.4"),
                pair("ipv4-addr:value", "5.6.7.8"),
            ]
        );
    }

    #[test]
    fn indicator_keys_are_recognised_by_word() {
        for k in [
            "dnsServer",
            "c2",
            "C2_servers",
            "url",
            "domain",
            "ip",
            "sha256",
            "hostName",
        ] {
            assert!(is_indicator_key(k), "{k}");
        }
        for k in ["blockList", "token", "description", "zip", "skipList"] {
            assert!(!is_indicator_key(k), "{k}");
        }
        // A defender's block list is what to look up.
        for k in ["blocklist_domains", "blacklistedIps", "deny_urls"] {
            assert!(is_indicator_key(k), "{k}");
        }
        // A benign word wins over an indicator word.
        for k in [
            "excluded_domains",
            "whitelisted_ips",
            "connectivity_check_hosts",
            "whitelistUrls",
            "allowlist_ip",
            "skip_hosts",
            "ignoreDomains",
            "report_url",
            "reference_url",
        ] {
            assert!(!is_indicator_key(k), "{k}");
        }
    }

    #[test]
    fn misp_domain_ip_keeps_both_parts_and_report_links_are_counted_skips() {
        let (summary, found) = read(
            r#"{"Event": {"Attribute": [
{"type": "domain|ip", "category": "Network activity", "value": "evil-a.com|45.77.10.20"},
{"type": "url", "category": "External analysis", "value": "https://www.welivesecurity.com/2018/11/20/x/"},
{"type": "link", "category": "External analysis", "value": "https://blog.vendor.example.com/report"},
{"type": "url", "category": "Network activity", "value": "http://45.124.132.127/x.php"}
]}}"#,
        );
        assert_eq!(summary.format, Some(Format::Misp));
        assert_eq!(
            found,
            vec![
                ("domain", "evil-a.com".into(), 2),
                ("ipv4", "45.77.10.20".into(), 2),
                ("url", "http://45.124.132.127/x.php".into(), 5),
            ]
        );
        assert_eq!(summary.skipped.get("reference"), Some(&2));
    }

    #[test]
    fn misp_attribute_searches_are_read_as_attributes() {
        // `/attributes/restSearch` wraps the list in `response`; PyMISP returns it bare.
        for input in [
            r#"{"response": {"Attribute": [
{"type": "ip-dst", "value": "45.77.10.30"},
{"type": "domain", "value": "evil-d.com"}]}}"#,
            r#"{"Attribute": [
{"type": "ip-dst", "value": "45.77.10.30"},
{"type": "domain", "value": "evil-d.com"}]}"#,
        ] {
            let (summary, found) = read(input);
            assert_eq!(summary.format, Some(Format::Misp), "{input}");
            assert_eq!(
                found,
                vec![
                    ("ipv4", "45.77.10.30".into(), 2),
                    ("domain", "evil-d.com".into(), 3),
                ],
                "{input}"
            );
        }
    }

    #[test]
    fn stix_observables_are_read_with_their_line_and_revoked_objects_are_not() {
        let (summary, found) = read(&format!(
            r#"{{"type": "bundle", "objects": [
{{"type": "file", "hashes": {{
  "SHA-256": "{SHA256}",
  "MD5": "8d42c01180be7588a2a68ad96dd0cf85", "SSDEEP": "3:a:b"}}, "name": "invoice.pdf.exe"}},
{{"type": "domain-name", "value": "evil-f.com"}},
{{"type": "ipv4-addr", "value": "45.77.10.40"}},
{{"type": "url", "value": "http://evil-f.com/gate.php"}},
{{"type": "observed-data", "objects": {{"0": {{"type": "ipv6-addr", "value": "2a03:2880:f10e:83:face:b00c:0:25de"}}}}}},
{{"type": "indicator", "pattern": "[domain-name:value = 'evil-h.com']", "revoked": true}},
{{"type": "observed-data", "revoked": true, "objects": {{"0": {{"type": "domain-name", "value": "evil-i.com"}}}}}},
{{"type": "indicator", "pattern": "[domain-name:value = 'evil-j.com']", "revoked": false}}
]}}"#
        ));
        assert_eq!(summary.format, Some(Format::Stix));
        assert_eq!(
            found,
            vec![
                ("sha256", SHA256.into(), 3),
                ("md5", "8d42c01180be7588a2a68ad96dd0cf85".into(), 4),
                ("domain", "evil-f.com".into(), 5),
                ("ipv4", "45.77.10.40".into(), 6),
                ("url", "http://evil-f.com/gate.php".into(), 7),
                ("ipv6", "2a03:2880:f10e:83:face:b00c:0:25de".into(), 8),
                ("domain", "evil-j.com".into(), 11),
            ]
        );
        assert!(summary.rejected.is_empty(), "{:?}", summary.rejected);
    }

    #[test]
    fn generic_json_lists_to_leave_alone_and_report_links_are_not_taken() {
        let (summary, found) = read(
            r#"{
  "report_url": "https://blog.vendor-research.com/agenttesla-analysis",
  "c2": ["evil-ca.com"],
  "connectivity_check_hosts": ["www.msftconnecttest.com"],
  "excluded_domains": ["microsoft.com"],
  "sandbox_evasion": {"whitelisted_ips": ["8.8.8.8"]},
  "whitelist": {"domains": ["windowsupdate.com"], "iocs": ["google.com"]}
}"#,
        );
        assert_eq!(summary.format, Some(Format::Json));
        assert_eq!(found, vec![("domain", "evil-ca.com".into(), 3)]);
    }

    #[test]
    fn generic_json_indicator_keys_pass_down_into_collections_and_records_only() {
        let (_, found) = read(
            r#"{
  "indicator": {"value": "evil-cg.com", "type": "domain"},
  "iocs": {"sha256": ["d3b0fbd6ff688034471e4400717742ffa21dcb1c909b0c1a1b2e82b34ae91d03"],
           "network": {"dns": ["evil-cd.com"]}, "reference": "https://blog.example.com/"},
  "c2": [{"address": "evil-r.com", "port": 443, "profile": {"dns_idle": "8.8.8.8"}}],
  "c2_config": {"servers": ["evil-s.com"], "dns_idle": "8.8.4.4", "sleep": "60"},
  "family": "evil-t.com"
}"#,
        );
        assert_eq!(
            values(&found),
            vec![
                "evil-cg.com",
                SHA256,
                "evil-cd.com",
                "evil-r.com",
                "evil-s.com"
            ]
        );
    }

    #[test]
    fn stix_or_misp_without_an_indicator_says_so() {
        for (input, format, warning) in [
            (
                r#"{"type": "bundle", "objects": [{"type": "malware", "name": "evil.com"},
{"type": "indicator", "pattern": "[x509-certificate:serial_number = '4c:0b:1d']"}]}"#,
                Format::Stix,
                NO_STIX_INDICATOR,
            ),
            (
                r#"{"Event": {"Attribute": [{"type": "text", "value": "evil.com"}]}}"#,
                Format::Misp,
                NO_MISP_INDICATOR,
            ),
            (
                r#"{"response": {"Attribute": []}}"#,
                Format::Misp,
                NO_MISP_INDICATOR,
            ),
        ] {
            let (summary, found) = read(input);
            assert_eq!(summary.format, Some(format), "{input}");
            assert!(found.is_empty(), "{input}");
            assert_eq!(summary.warnings, vec![warning.to_string()], "{input}");
        }
        // Generic JSON without an indicator key is not a shape gone unread.
        let (summary, _) = read(r#"{"family": "evil.com"}"#);
        assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
    }
}
