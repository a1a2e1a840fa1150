//! The shapes of VirusTotal's replies, parsed leniently.
//!
//! Only what a triage tool branches on is typed; everything else stays in the raw JSON kept
//! beside it. Types drift between records (a date as a string, a count as a string, an old
//! pairs format), so no accessor fails a whole object on one odd field: it answers `None`.

use serde::de::{self, IgnoredAny, Visitor};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::Value;

use super::Error;

/// A VirusTotal object: a file, URL, domain or IP address report.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `data.id`: for files always the SHA-256, whatever hash was asked for.
    pub id: String,
    /// `data.type`: `file`, `url`, `domain`, `ip_address` ...
    pub kind: String,
    /// The attributes read here; the others stay in `body`.
    attributes: Attributes,
    /// The body exactly as VirusTotal sent it (what the store keeps, without re-encoding).
    pub body: Vec<u8>,
}

impl Object {
    /// Parses a reply `{"data": {...}}`, or a bare data object as some recorders keep it.
    ///
    /// Only the attributes below are decoded; the rest of the body (most of it: seventy engine
    /// results, names, signatures) is checked and skipped without building a value for it,
    /// which made parsing several times cheaper than decoding the whole tree.
    pub fn parse(body: &[u8]) -> Result<Object, Error> {
        let reply: Fields = parse_json(body)?;
        let data = match reply.data {
            Data::Object(data) => *data,
            Data::Absent | Data::Null if reply.names_an_object => reply,
            _ => return Err(unexpected("the reply has no data object")),
        };
        Ok(Object {
            id: lenient_id(&data.id).unwrap_or_default(),
            kind: data.kind.as_str().unwrap_or_default().to_owned(),
            attributes: data.attributes,
            body: body.to_vec(),
        })
    }

    /// The whole reply as JSON, for showing it.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("the body was parsed as JSON once already")
    }

    /// `last_analysis_stats`, `None` when absent (older domain and IP objects lack it).
    pub fn last_analysis_stats(&self) -> Option<Stats> {
        Stats::from_value(&self.attributes.last_analysis_stats)
    }

    /// `last_analysis_date` as unix seconds (accepts an integer, a float or a date string).
    pub fn last_analysis_date(&self) -> Option<i64> {
        lenient_timestamp(&self.attributes.last_analysis_date)
    }

    /// A file (or URL) that VirusTotal knows but has not analysed yet: no analysis date or no
    /// engine results. Such an object must be polled again, never read as "clean". Domains
    /// and IP addresses are never pending: old ones simply lack these fields.
    pub fn analysis_pending(&self) -> bool {
        if !matches!(self.kind.as_str(), "file" | "url") {
            return false;
        }
        self.last_analysis_date().is_none() || self.attributes.engine_results.0 == 0
    }

    /// The threat label: `popular_threat_classification.suggested_threat_label`, or, for old
    /// objects without one, the most counted category and name (`[["trojan", 19], ...]` pairs or
    /// `{"value", "count"}` entries) joined as VirusTotal does (`trojan.hill`).
    pub fn threat_label(&self) -> Option<String> {
        let ptc = &self.attributes.popular_threat_classification;
        if let Some(label) = ptc["suggested_threat_label"].as_str() {
            // Seen live: "trojan." when no family name was agreed on.
            let label = label.trim().trim_end_matches(['.', '/']);
            if !label.is_empty() {
                return Some(label.to_owned());
            }
        }
        let category = most_counted(&ptc["popular_threat_category"]);
        let name = most_counted(&ptc["popular_threat_name"]);
        match (category, name) {
            (Some(c), Some(n)) => Some(format!("{c}.{n}")),
            (Some(one), None) | (None, Some(one)) => Some(one),
            (None, None) => None,
        }
    }

    /// The SHA-256 of a file object (`attributes.sha256`, else the id of a file object).
    pub fn sha256(&self) -> Option<&str> {
        non_empty(&self.attributes.sha256).or_else(|| {
            (self.kind == "file"
                && self.id.len() == 64
                && self.id.bytes().all(|b| b.is_ascii_hexdigit()))
            .then_some(self.id.as_str())
        })
    }

    /// The MD5 of a file object.
    pub fn md5(&self) -> Option<&str> {
        non_empty(&self.attributes.md5)
    }

    /// The SHA-1 of a file object.
    pub fn sha1(&self) -> Option<&str> {
        non_empty(&self.attributes.sha1)
    }

    /// The size in bytes of a file object.
    pub fn size(&self) -> Option<u64> {
        lenient_u64(&self.attributes.size)
    }

    /// The name VirusTotal thinks most meaningful among those the file was submitted under.
    pub fn meaningful_name(&self) -> Option<&str> {
        non_empty(&self.attributes.meaningful_name)
    }
}

fn non_empty(v: &Value) -> Option<&str> {
    v.as_str().filter(|s| !s.is_empty())
}

/// The keys of a reply, or of its data object, that [`Object::parse`] reads. Kept as JSON
/// values, not typed, so that an odd type costs that one field, not the object.
#[derive(Default)]
struct Fields {
    /// `data`, read at the top level only.
    data: Data,
    id: Value,
    kind: Value,
    attributes: Attributes,
    /// Whether `id` or `attributes` was present: a bare data object.
    names_an_object: bool,
}

/// What a reply's `data` was.
#[derive(Default)]
enum Data {
    #[default]
    Absent,
    Null,
    Object(Box<Fields>),
    /// A string, number, list ...
    Other,
}

/// The attributes [`Object`] reads. A key seen twice keeps its last value, as a JSON value
/// would.
#[derive(Debug, Clone, Default, PartialEq)]
struct Attributes {
    last_analysis_stats: Value,
    last_analysis_date: Value,
    engine_results: EntryCount,
    popular_threat_classification: Value,
    sha256: Value,
    md5: Value,
    sha1: Value,
    size: Value,
    meaningful_name: Value,
}

/// How many entries an object has (`last_analysis_results`: one per engine); 0 for anything
/// that is not an object.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct EntryCount(usize);

/// Visitor methods that take any value but an object (and null, where a visitor says so) as
/// `$value`, skipping lists whole.
macro_rules! anything_else_is {
    ($value:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            while seq.next_element::<IgnoredAny>()?.is_some() {}
            Ok($value)
        }
    };
}

/// [`anything_else_is`] the default, null too.
macro_rules! anything_else_is_default {
    () => {
        anything_else_is!(Default::default());
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Default::default())
        }
    };
}

/// Reads [`Fields`]; `top` is whether this is the reply itself (whose `data` is read).
struct FieldsVisitor {
    top: bool,
}

impl<'de> Visitor<'de> for FieldsVisitor {
    type Value = Fields;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a VirusTotal reply")
    }

    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Key {
            Data,
            Id,
            Type,
            Attributes,
            #[serde(other)]
            Other,
        }
        let mut fields = Fields::default();
        while let Some(key) = map.next_key()? {
            match key {
                Key::Data if self.top => fields.data = map.next_value::<Data>()?,
                Key::Id => {
                    fields.id = map.next_value()?;
                    fields.names_an_object = true;
                }
                Key::Type => fields.kind = map.next_value()?,
                Key::Attributes => {
                    fields.attributes = map.next_value()?;
                    fields.names_an_object = true;
                }
                Key::Data | Key::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(fields)
    }

    anything_else_is_default!();
}

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Fields, D::Error> {
        d.deserialize_any(FieldsVisitor { top: true })
    }
}

impl<'de> Deserialize<'de> for Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Data, D::Error> {
        struct DataVisitor;
        impl<'de> Visitor<'de> for DataVisitor {
            type Value = Data;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a data object")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Data, A::Error> {
                let fields = FieldsVisitor { top: false }.visit_map(map)?;
                Ok(Data::Object(Box::new(fields)))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Data, E> {
                Ok(Data::Null)
            }

            anything_else_is!(Data::Other);
        }
        d.deserialize_any(DataVisitor)
    }
}

impl<'de> Deserialize<'de> for Attributes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Attributes, D::Error> {
        struct AttributesVisitor;
        impl<'de> Visitor<'de> for AttributesVisitor {
            type Value = Attributes;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an attributes object")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Attributes, A::Error> {
                #[derive(Deserialize)]
                #[serde(field_identifier, rename_all = "snake_case")]
                enum Key {
                    LastAnalysisStats,
                    LastAnalysisDate,
                    LastAnalysisResults,
                    PopularThreatClassification,
                    Sha256,
                    Md5,
                    Sha1,
                    Size,
                    MeaningfulName,
                    #[serde(other)]
                    Other,
                }
                let mut a = Attributes::default();
                while let Some(key) = map.next_key()? {
                    match key {
                        Key::LastAnalysisStats => a.last_analysis_stats = map.next_value()?,
                        Key::LastAnalysisDate => a.last_analysis_date = map.next_value()?,
                        Key::LastAnalysisResults => a.engine_results = map.next_value()?,
                        Key::PopularThreatClassification => {
                            a.popular_threat_classification = map.next_value()?;
                        }
                        Key::Sha256 => a.sha256 = map.next_value()?,
                        Key::Md5 => a.md5 = map.next_value()?,
                        Key::Sha1 => a.sha1 = map.next_value()?,
                        Key::Size => a.size = map.next_value()?,
                        Key::MeaningfulName => a.meaningful_name = map.next_value()?,
                        Key::Other => {
                            map.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(a)
            }

            anything_else_is_default!();
        }
        d.deserialize_any(AttributesVisitor)
    }
}

impl<'de> Deserialize<'de> for EntryCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<EntryCount, D::Error> {
        struct CountVisitor;
        impl<'de> Visitor<'de> for CountVisitor {
            type Value = EntryCount;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object")
            }

            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<EntryCount, A::Error> {
                let mut n = 0;
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(EntryCount(n))
            }

            anything_else_is_default!();
        }
        d.deserialize_any(CountVisitor)
    }
}

/// Engine counts of one analysis. Missing keys count 0; numbers sent as strings are accepted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    /// Engines that flagged the item malicious.
    #[serde(default, deserialize_with = "lenient_count")]
    pub malicious: u32,
    /// Engines that flagged it suspicious.
    #[serde(default, deserialize_with = "lenient_count")]
    pub suspicious: u32,
    /// Engines that found nothing.
    #[serde(default, deserialize_with = "lenient_count")]
    pub undetected: u32,
    /// Engines that vouched it harmless (URL, domain and IP scanners).
    #[serde(default, deserialize_with = "lenient_count")]
    pub harmless: u32,
    /// Engines that timed out.
    #[serde(default, deserialize_with = "lenient_count")]
    pub timeout: u32,
    /// Engines that timed out for good.
    #[serde(
        rename = "confirmed-timeout",
        default,
        deserialize_with = "lenient_count"
    )]
    pub confirmed_timeout: u32,
    /// Engines that cannot scan this file type.
    #[serde(
        rename = "type-unsupported",
        default,
        deserialize_with = "lenient_count"
    )]
    pub type_unsupported: u32,
    /// Engines that failed.
    #[serde(default, deserialize_with = "lenient_count")]
    pub failure: u32,
}

impl Stats {
    /// The engines that gave a verdict (malicious, suspicious, undetected or harmless): the
    /// denominator VirusTotal shows as "53/62". Timeouts, failures and unsupported types did
    /// not answer.
    pub fn engines(&self) -> u32 {
        self.malicious
            .saturating_add(self.suspicious)
            .saturating_add(self.undetected)
            .saturating_add(self.harmless)
    }

    /// Reads stats from a JSON value; `None` unless it is an object.
    pub fn from_value(v: &Value) -> Option<Stats> {
        // Deserialising from an object cannot fail: every field is lenient and defaulted.
        v.is_object().then(|| Stats::deserialize(v).ok()).flatten()
    }
}

/// The reference to an analysis returned by an upload, a submission or a re-analysis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalysisRef {
    /// The opaque analysis id (an integer in some old replies, stringified here).
    pub id: String,
}

impl AnalysisRef {
    /// Parses `{"data": {"type": "analysis", "id": ...}}`.
    pub fn parse(body: &[u8]) -> Result<AnalysisRef, Error> {
        let raw: Value = parse_json(body)?;
        let data = data_object(&raw)?;
        let id = lenient_id(&data["id"])
            .filter(|id| !id.is_empty())
            .ok_or_else(|| unexpected("the reply names no analysis id"))?;
        Ok(AnalysisRef { id })
    }
}

/// Where an analysis stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnalysisStatus {
    /// Waiting for the engines.
    Queued,
    /// Engines are scanning.
    InProgress,
    /// Done: `stats` are final.
    Completed,
    /// A status this client does not know (kept verbatim; empty when absent).
    Other(String),
}

impl AnalysisStatus {
    fn parse(s: &str) -> AnalysisStatus {
        match s {
            "queued" => AnalysisStatus::Queued,
            "in-progress" | "in_progress" => AnalysisStatus::InProgress,
            "completed" => AnalysisStatus::Completed,
            other => AnalysisStatus::Other(other.to_owned()),
        }
    }
}

/// An analysis (`GET /analyses/{id}`).
#[derive(Debug, Clone, PartialEq)]
pub struct Analysis {
    /// The analysis id.
    pub id: String,
    /// Where it stands.
    pub status: AnalysisStatus,
    /// Engine counts, only once completed: a queued analysis carries all-zero stats that must
    /// not be mistaken for "clean".
    pub stats: Option<Stats>,
    /// When the analysis was made (unix seconds).
    pub date: Option<i64>,
    /// `meta.file_info.sha256`: the file analysed.
    pub file_sha256: Option<String>,
    /// `meta.url_info.id`: the URL analysed.
    pub url_id: Option<String>,
    /// The whole body.
    pub raw: Value,
}

impl Analysis {
    /// Parses an analysis reply.
    pub fn parse(body: &[u8]) -> Result<Analysis, Error> {
        let raw: Value = parse_json(body)?;
        let data = data_object(&raw)?;
        let attributes = &data["attributes"];
        let status = AnalysisStatus::parse(attributes["status"].as_str().unwrap_or_default());
        let stats = match status {
            AnalysisStatus::Completed => Stats::from_value(&attributes["stats"]),
            _ => None,
        };
        let meta_str = |info: &str, key: &str| {
            raw["meta"][info][key]
                .as_str()
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        Ok(Analysis {
            id: lenient_id(&data["id"]).unwrap_or_default(),
            status,
            stats,
            date: lenient_timestamp(&attributes["date"]),
            file_sha256: meta_str("file_info", "sha256"),
            url_id: meta_str("url_info", "id"),
            raw,
        })
    }
}

/// One page of a collection (comments, votes, relationships).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The items of this page, as VirusTotal sent them.
    pub items: Vec<Value>,
    /// The cursor for the next page (`meta.cursor`, else taken from `links.next`); `None` on
    /// the last page.
    pub cursor: Option<String>,
    /// The whole body.
    pub raw: Value,
}

impl Page {
    /// Parses `{"data": [...], "meta": {"cursor"}, "links": {"next"}}`.
    pub fn parse(body: &[u8]) -> Result<Page, Error> {
        let raw: Value = parse_json(body)?;
        let items = match &raw["data"] {
            Value::Array(items) => items.clone(),
            Value::Null => Vec::new(),
            _ => return Err(unexpected("the reply's data is not a list")),
        };
        let cursor = raw["meta"]["cursor"]
            .as_str()
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .or_else(|| cursor_from_next(raw["links"]["next"].as_str()?));
        Ok(Page { items, cursor, raw })
    }
}

/// Parses a reply whose data is a single string: `GET /files/upload_url` and
/// `GET /files/{id}/download_url` return a URL this way.
pub fn parse_data_string(body: &[u8]) -> Result<String, Error> {
    let raw: Value = parse_json(body)?;
    raw["data"]
        .as_str()
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| unexpected("the reply's data is not a string"))
}

fn cursor_from_next(next: &str) -> Option<String> {
    let url = url::Url::parse(next).ok()?;
    url.query_pairs()
        .find(|(k, v)| k == "cursor" && !v.is_empty())
        .map(|(_, v)| v.into_owned())
}

/// A 2xx body that is not JSON was cut short or mangled on the way: worth another try.
fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Transient {
        status: None,
        detail: format!("the reply is not valid JSON ({e}; {} bytes)", body.len()),
    })
}

fn data_object(raw: &Value) -> Result<&Value, Error> {
    match &raw["data"] {
        Value::Object(_) => Ok(&raw["data"]),
        Value::Null if raw.get("id").is_some() || raw.get("attributes").is_some() => Ok(raw),
        _ => Err(unexpected("the reply has no data object")),
    }
}

fn unexpected(what: &str) -> Error {
    Error::Transient {
        status: None,
        detail: format!("unexpected reply from VirusTotal: {what}"),
    }
}

/// An id sent as a string or, in old replies, as a number.
fn lenient_id(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A non-negative integer sent as a number (possibly a float) or a numeric string.
fn lenient_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => {
            let s = s.trim();
            s.parse::<u64>().ok().or_else(|| {
                s.parse::<f64>()
                    .ok()
                    .filter(|f| f.is_finite() && *f >= 0.0)
                    .map(|f| f as u64)
            })
        }
        _ => None,
    }
}

fn lenient_count<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(lenient_u64(&v)
        .map(|n| u32::try_from(n).unwrap_or(u32::MAX))
        .unwrap_or(0))
}

/// Unix seconds from an integer, a float, a numeric string, an RFC 3339 date or
/// `YYYY-MM-DD HH:MM:SS` (taken as UTC).
pub(crate) fn lenient_timestamp(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        Value::String(s) => {
            let s = s.trim();
            if let Ok(n) = s.parse::<i64>() {
                return Some(n);
            }
            if let Ok(f) = s.parse::<f64>() {
                return f.is_finite().then_some(f as i64);
            }
            if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(s) {
                return Some(dt.timestamp());
            }
            ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S"]
                .iter()
                .find_map(|fmt| chrono::NaiveDateTime::parse_from_str(s, fmt).ok())
                .map(|dt| dt.and_utc().timestamp())
        }
        _ => None,
    }
}

/// The value with the highest count in `[{"value", "count"}]` or `[["value", count]]`.
fn most_counted(v: &Value) -> Option<String> {
    v.as_array()?
        .iter()
        .filter_map(|entry| match entry {
            Value::Array(pair) => Some((
                pair.first()?.as_str()?,
                lenient_u64(pair.get(1)?).unwrap_or(0),
            )),
            Value::Object(_) => Some((
                entry["value"].as_str()?,
                lenient_u64(&entry["count"]).unwrap_or(0),
            )),
            _ => None,
        })
        .filter(|(value, _)| !value.is_empty())
        // On equal counts keep the first listed, as VirusTotal orders them.
        .fold(
            None,
            |best: Option<(&str, u64)>, (value, count)| match best {
                Some((_, c)) if c >= count => best,
                _ => Some((value, count)),
            },
        )
        .map(|(value, _)| value.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(attributes: Value) -> Object {
        let body = json!({"data": {"id": "x", "type": "file", "attributes": attributes}});
        Object::parse(body.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn stats_tolerate_strings_floats_and_missing_keys() {
        let stats = Stats::from_value(&json!({
            "malicious": "5", "harmless": 2.0, "type-unsupported": 3, "confirmed-timeout": null,
            "undetected": "n/a", "some-new-category": 9
        }))
        .unwrap();
        assert_eq!(stats.malicious, 5);
        assert_eq!(stats.harmless, 2);
        assert_eq!(stats.type_unsupported, 3);
        assert_eq!(stats.confirmed_timeout, 0);
        assert_eq!(stats.undetected, 0);
        assert_eq!(stats.engines(), 7);
        assert_eq!(Stats::from_value(&Value::Null), None);
    }

    #[test]
    fn stats_serialise_with_vt_key_names() {
        let stats = Stats {
            confirmed_timeout: 1,
            type_unsupported: 2,
            ..Stats::default()
        };
        let v = serde_json::to_value(stats).unwrap();
        assert_eq!(v["confirmed-timeout"], 1);
        assert_eq!(v["type-unsupported"], 2);
    }

    #[test]
    fn dates_are_read_from_numbers_and_strings() {
        assert_eq!(lenient_timestamp(&json!(1570172855)), Some(1570172855));
        assert_eq!(lenient_timestamp(&json!(1570172855.7)), Some(1570172855));
        assert_eq!(lenient_timestamp(&json!("1570172855")), Some(1570172855));
        assert_eq!(
            lenient_timestamp(&json!("2019-10-04T07:07:35Z")),
            Some(1570172855)
        );
        assert_eq!(
            lenient_timestamp(&json!("2019-10-04 07:07:35")),
            Some(1570172855)
        );
        assert_eq!(lenient_timestamp(&json!("yesterday")), None);
    }

    #[test]
    fn old_pair_lists_yield_a_threat_label() {
        let o = object(json!({"popular_threat_classification": {
            "popular_threat_category": [["trojan", 19], ["dropper", 25]],
            "popular_threat_name": [["hill", 3]],
        }}));
        assert_eq!(o.threat_label().as_deref(), Some("dropper.hill"));
        let o = object(json!({"popular_threat_classification": [["trojan", 19]]}));
        assert_eq!(o.threat_label(), None);
    }

    #[test]
    fn a_file_without_results_is_pending_not_clean() {
        let o = object(json!({"last_analysis_stats": {"malicious": 0}, "size": 10}));
        assert!(o.analysis_pending());
        let o = object(json!({"last_analysis_date": 1, "last_analysis_results": {"A": {}}}));
        assert!(!o.analysis_pending());
    }

    #[test]
    fn one_odd_field_does_not_fail_the_object() {
        let o = object(json!({"size": "12", "last_analysis_date": {"weird": true}, "sha256": 5}));
        assert_eq!(o.size(), Some(12));
        assert_eq!(o.last_analysis_date(), None);
        assert_eq!(o.sha256(), None);
    }

    /// What the accessors of an object answer.
    #[derive(Debug, PartialEq)]
    struct Reading {
        id: String,
        kind: String,
        stats: Option<Stats>,
        date: Option<i64>,
        pending: bool,
        texts: [Option<String>; 4],
        size: Option<u64>,
    }

    fn reading(o: &Object) -> Reading {
        let text = |t: Option<&str>| t.map(str::to_owned);
        Reading {
            id: o.id.clone(),
            kind: o.kind.clone(),
            stats: o.last_analysis_stats(),
            date: o.last_analysis_date(),
            pending: o.analysis_pending(),
            texts: [
                text(o.md5()),
                text(o.sha1()),
                text(o.meaningful_name()),
                o.threat_label(),
            ],
            size: o.size(),
        }
    }

    /// What the accessors answered when the whole body was decoded into one JSON tree.
    fn read_from_the_tree(body: &[u8]) -> Reading {
        let v: Value = serde_json::from_slice(body).unwrap();
        let data = if v["data"].is_object() {
            &v["data"]
        } else {
            &v
        };
        let a = &data["attributes"];
        let kind = data["type"].as_str().unwrap_or_default().to_owned();
        let date = lenient_timestamp(&a["last_analysis_date"]);
        let no_results = a["last_analysis_results"]
            .as_object()
            .is_none_or(|m| m.is_empty());
        let text = |key: &str| a[key].as_str().filter(|s| !s.is_empty()).map(str::to_owned);
        let label = {
            let wrapped = json!({"data": {"attributes": {
                "popular_threat_classification": a["popular_threat_classification"]}}});
            Object::parse(wrapped.to_string().as_bytes())
                .unwrap()
                .threat_label()
        };
        Reading {
            id: lenient_id(&data["id"]).unwrap_or_default(),
            pending: matches!(kind.as_str(), "file" | "url") && (date.is_none() || no_results),
            kind,
            stats: Stats::from_value(&a["last_analysis_stats"]),
            date,
            texts: [text("md5"), text("sha1"), text("meaningful_name"), label],
            size: lenient_u64(&a["size"]),
        }
    }

    #[test]
    fn every_recorded_object_reads_as_the_whole_tree_does() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/vt-responses");
        let mut objects = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let body = std::fs::read(&path).unwrap();
            let Ok(o) = Object::parse(&body) else {
                continue;
            };
            if o.kind.is_empty() || o.kind == "analysis" {
                continue;
            }
            let read = reading(&o);
            assert_eq!(read, read_from_the_tree(&body), "{}", path.display());
            assert_eq!(o.json(), serde_json::from_slice::<Value>(&body).unwrap());
            objects += 1;
        }
        assert!(objects >= 15, "only {objects} recorded objects");
    }

    #[test]
    fn odd_shapes_read_as_the_whole_tree_does() {
        for body in [
            json!({"id": "x", "type": "file", "attributes": {"size": 3}}),
            json!({"data": null, "attributes": {"md5": "m"}, "type": "file"}),
            json!({"data": {"id": 5, "type": "file", "attributes": [1, {"size": 2}]}}),
            json!({"data": {"id": "a", "type": "url", "attributes": "none"}}),
            json!({"data": {"id": "a", "type": "file", "attributes": {
                "last_analysis_date": "2019-10-04T07:07:35Z",
                "last_analysis_results": [{"engine": "A"}],
                "last_analysis_stats": "n/a", "meaningful_name": "", "data": {"id": "b"}}}}),
            json!({"data": {"id": "a", "type": "file", "attributes": {
                "last_analysis_date": 1, "last_analysis_results": {"A": {"category": "malicious"}},
                "last_analysis_stats": {"malicious": "1"}, "size": 1.5}}}),
        ] {
            let body = body.to_string();
            let o = Object::parse(body.as_bytes()).unwrap_or_else(|e| panic!("{body}: {e}"));
            let read = reading(&o);
            assert_eq!(read, read_from_the_tree(body.as_bytes()), "{body}");
        }
        // A key given twice keeps its last value, as in a JSON tree.
        let o = Object::parse(br#"{"data": {"id": "a", "attributes": {"size": 1, "size": 2}}}"#)
            .unwrap();
        assert_eq!(o.size(), Some(2));
    }

    #[test]
    fn truncated_or_shapeless_bodies_are_transient() {
        for body in [
            &b"{\"data\": {\"id\": \"ab"[..],
            b"",
            b"[1,2]",
            b"{\"data\": 3}",
        ] {
            assert!(
                matches!(Object::parse(body), Err(Error::Transient { .. })),
                "{body:?}"
            );
        }
    }

    #[test]
    fn the_cursor_falls_back_to_the_next_link() {
        let body = json!({"data": [], "links": {"next": "https://x/api/v3/urls/a/votes?limit=2&cursor=ab%3D"}});
        let page = Page::parse(body.to_string().as_bytes()).unwrap();
        assert_eq!(page.cursor.as_deref(), Some("ab="));
    }
}
