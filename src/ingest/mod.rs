//! IOC-list parsing: bytes in, normalised [`Indicator`]s out, each with the line it came from,
//! plus a [`Summary`] of what was taken, what was skipped on purpose and what was rejected.
//!
//! This module owns the formats analysts hand us (plain lists, LOKI, CSV/TSV, Markdown,
//! AsciiDoc, STIX 2.x, MISP, OpenIOC and generic JSON), refanging, and the rules that decide
//! whether a token is an indicator at all. It is pure: no I/O beyond the reader it is given,
//! no database, no network. Wiring parsed indicators to the job queue belongs to the caller.
//!
//! Memory stays bounded on hostile input: line-oriented formats are streamed one line at a
//! time and a line longer than [`MAX_LINE`] is rejected without being buffered whole; the JSON
//! and XML formats are read whole but capped at [`MAX_DOCUMENT`].
//!
//! Generic JSON (neither STIX nor MISP) is treated as data, not prose: only string values under
//! keys that name an indicator (a key word such as `c2`, `url`, `domain`, `host`, `ip`,
//! `server`, `hash`, `md5`, `ioc`...; see [`json`]) are taken. Malware configurations carry
//! lists of benign domains (ad blockers, connectivity checks) that must not become verdicts.

mod classify;
mod csv;
pub mod json;
mod lines;
mod openioc;
mod refang;
pub(crate) mod sink;
mod text;

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::Path;
use std::str::FromStr;

use crate::indicator::Indicator;

pub use classify::{Classified, classify};
pub use refang::{defang, refang};

use sink::Sink;

/// Lines longer than this are rejected (`line N: line too long`) without being buffered.
pub const MAX_LINE: usize = 1024 * 1024;
/// JSON and XML documents larger than this are rejected whole.
pub const MAX_DOCUMENT: u64 = 256 * 1024 * 1024;
/// How many bytes of the start of a list [`detect_format`] looks at.
pub const DETECT_HEAD: usize = 64 * 1024;

/// The layout of an IOC list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// Anything line-oriented: one value per line, prose, report text. `#` lines are comments.
    Text,
    /// LOKI IOC files: `value;comment` or `value;score;comment`; only the first field counts.
    Loki,
    /// CSV or TSV, with or without a header; typed columns are honoured.
    Csv,
    /// Markdown: pipe tables, fenced blocks, prose.
    Markdown,
    /// AsciiDoc: `|===` tables, `` `+...+` `` literals, `----` blocks.
    AsciiDoc,
    /// A STIX 2.0 or 2.1 bundle: indicator patterns.
    Stix,
    /// A MISP event export: attributes and object attributes.
    Misp,
    /// OpenIOC 1.x XML.
    OpenIoc,
    /// Any other JSON document: only values under indicator-like keys are taken.
    Json,
}

impl Format {
    /// Every format, in the order `--help` lists them.
    pub const ALL: [Format; 9] = [
        Format::Text,
        Format::Loki,
        Format::Csv,
        Format::Markdown,
        Format::AsciiDoc,
        Format::Stix,
        Format::Misp,
        Format::OpenIoc,
        Format::Json,
    ];

    /// The name accepted by `--format`.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Text => "text",
            Format::Loki => "loki",
            Format::Csv => "csv",
            Format::Markdown => "markdown",
            Format::AsciiDoc => "asciidoc",
            Format::Stix => "stix",
            Format::Misp => "misp",
            Format::OpenIoc => "openioc",
            Format::Json => "json",
        }
    }

    /// Other names `--format` takes for it.
    pub fn aliases(self) -> &'static [&'static str] {
        match self {
            Format::Text => &["txt", "plain"],
            Format::Csv => &["tsv"],
            Format::Markdown => &["md"],
            Format::AsciiDoc => &["adoc"],
            Format::Stix => &["stix2"],
            Format::OpenIoc => &["ioc", "xml"],
            Format::Loki | Format::Misp | Format::Json => &[],
        }
    }

    /// What it is, for `--help`.
    fn about(self) -> &'static str {
        match self {
            Format::Text => "one value per line, prose, report text",
            Format::Loki => "LOKI IOC files: value;comment lines",
            Format::Csv => "CSV or TSV, with or without a header",
            Format::Markdown => "pipe tables, code blocks, prose",
            Format::AsciiDoc => "|=== tables, literals, ---- blocks",
            Format::Stix => "STIX 2.0 or 2.1 bundles",
            Format::Misp => "MISP events and attribute searches",
            Format::OpenIoc => "OpenIOC 1.x XML",
            Format::Json => "other JSON and JSON Lines, by the keys that name an indicator",
        }
    }
}

/// The parser of `--format`: a [`Format`]'s name or alias, in any case. Unlike clap's default
/// for a `FromStr` type, it lists the names for `--help`.
#[derive(Debug, Clone, Copy)]
pub struct FormatParser;

impl clap::builder::TypedValueParser for FormatParser {
    type Value = Format;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Format, clap::Error> {
        // Clap's own error for a `FromStr` type, naming the expected formats.
        clap::builder::StringValueParser::new()
            .try_map(|s| s.parse::<Format>())
            .parse_ref(cmd, arg, value)
    }

    fn possible_values(
        &self,
    ) -> Option<Box<dyn Iterator<Item = clap::builder::PossibleValue> + '_>> {
        Some(Box::new(Format::ALL.into_iter().map(|f| {
            let help = match f.aliases() {
                [] => f.about().to_owned(),
                aliases => format!("{} (also: {})", f.about(), aliases.join(", ")),
            };
            clap::builder::PossibleValue::new(f.as_str())
                .aliases(f.aliases())
                .help(help)
        })))
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim().to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.as_str() == s || f.aliases().contains(&s.as_str()))
            .ok_or_else(|| {
                let names: Vec<_> = Format::ALL.iter().map(|f| f.as_str()).collect();
                format!(
                    "unknown format {s:?} (expected one of {})",
                    names.join(", ")
                )
            })
    }
}

/// Parsing settings (from the `[ingest]` section of the configuration).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// Private, loopback, link-local, reserved, multicast and documentation addresses are
    /// skipped: VirusTotal knows nothing useful about them and asking costs quota.
    pub skip_private_ips: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            skip_private_ips: true,
        }
    }
}

impl From<&crate::config::IngestConfig> for Options {
    fn from(c: &crate::config::IngestConfig) -> Self {
        Options {
            skip_private_ips: c.skip_private_ips,
        }
    }
}

/// One indicator taken from a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// The normalised indicator.
    pub indicator: Indicator,
    /// The 1-based line of the source where it appears (for JSON, the line of the value).
    pub line: usize,
}

/// Why a value that looks like an indicator was deliberately not taken. Counted, not errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SkipReason {
    /// A private, loopback or otherwise non-routable address (when `skip_private_ips`).
    PrivateIp,
    /// An e-mail address: VirusTotal has no e-mail lookup.
    Email,
    /// An address range: VirusTotal looks up single addresses only.
    Cidr,
    /// Already taken earlier in the same list.
    Duplicate,
    /// A link to a report or a blog post (an AsciiDoc link macro, a Markdown link, a MISP
    /// attribute filed under External analysis): where the indicators are described, not one.
    Reference,
}

impl SkipReason {
    /// The key used in [`Summary::skipped`].
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::PrivateIp => "private_ip",
            SkipReason::Email => "email",
            SkipReason::Cidr => "cidr",
            SkipReason::Duplicate => "duplicate",
            SkipReason::Reference => "reference",
        }
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Something the parser could not take, so that the analyst can fix the list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// The 1-based line (0 for the whole document).
    pub line: usize,
    /// What was wrong, in words.
    pub reason: String,
    /// The start of the offending text, at most 80 characters, control characters escaped.
    pub excerpt: String,
}

/// What one list yielded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// The format used (detected or forced).
    pub format: Option<Format>,
    /// Unique indicators taken, by [`Indicator::type_name`].
    pub found: BTreeMap<&'static str, usize>,
    /// Indicators seen again after their first appearance in the list.
    pub duplicates: usize,
    /// Values not taken on purpose, by [`SkipReason::as_str`] (every occurrence counts).
    pub skipped: BTreeMap<String, usize>,
    /// Values or lines that could not be taken (capped at [`sink::MAX_NOTES`] entries).
    pub rejected: Vec<Rejected>,
    /// Things the analyst should know about: lossy decoding, format fallbacks.
    pub warnings: Vec<String>,
}

impl Summary {
    /// Unique indicators taken, all types together.
    pub fn total_found(&self) -> usize {
        self.found.values().sum()
    }
}

/// Parses one list, calling `emit` once per unique indicator (deduplicated within the list), in
/// order. `source_name` (a file name) helps detect the format when `format` is `None`.
///
/// Only I/O errors of `reader` are errors; everything wrong with the content ends up in the
/// [`Summary`].
pub fn parse_reader(
    source_name: &str,
    reader: impl Read,
    format: Option<Format>,
    opts: &Options,
    mut emit: impl FnMut(Found),
) -> std::io::Result<Summary> {
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, reader);
    let mut head = fill_head(&mut reader)?;
    // Windows PowerShell 5 writes `>` redirections as UTF-16 with a byte order mark. Such a
    // list is read whole to be decoded: they are written by hand-run scripts, not by feeds.
    if let Some(big_endian) = utf16_bom(&head) {
        reader.read_to_end(&mut head)?;
        let text = decode_utf16(&head[2..], big_endian);
        return parse_reader(source_name, text.as_bytes(), format, opts, emit);
    }
    // Read as text, the strings of an executable or an archive would be taken for domains
    // (`jobs.id`, `w.pid`).
    if let Some(what) = binary(&head) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{what}, not an IOC list"),
        ));
    }
    let format = format.unwrap_or_else(|| detect_format(source_name, &head));
    let mut sink = Sink::new(opts, &mut emit);
    sink.summary.format = Some(format);
    let chained = std::io::Cursor::new(head).chain(reader);
    match format {
        Format::Stix | Format::Misp | Format::Json => json::parse(chained, format, &mut sink)?,
        Format::OpenIoc => openioc::parse(chained, &mut sink)?,
        Format::Text | Format::Loki | Format::Csv | Format::Markdown | Format::AsciiDoc => {
            text::parse(chained, format, &mut sink)?
        }
    }
    Ok(sink.finish())
}

/// Opens and parses one list; see [`parse_reader`].
pub fn parse_path(
    path: &Path,
    format: Option<Format>,
    opts: &Options,
    emit: impl FnMut(Found),
) -> std::io::Result<Summary> {
    let file = std::fs::File::open(path)?;
    parse_reader(&list_name(path), file, format, opts, emit)
}

/// The name [`parse_path`] gives the list at `path` (its extension helps detect the format).
pub fn list_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// How much of its start a list is checked for NUL bytes, like git's 8000.
const BINARY_SNIFF: usize = 8192;

/// Compressed formats, by their first bytes (their data has few NUL bytes).
const COMPRESSED: [(&[u8], &str); 6] = [
    (b"\x1f\x8b", "gzip"),
    (b"PK\x03\x04", "zip"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (b"Rar!\x1a\x07", "RAR"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
];

/// What a list's first bytes say it is when it is not text: compressed (by its magic), or
/// binary (NUL bytes are an eighth of its start, and more than three: an executable, a disk
/// image). A few NUL bytes are damaged lines, rejected one by one while the rest of the list is
/// read.
fn binary(head: &[u8]) -> Option<String> {
    if let Some((_, name)) = COMPRESSED.iter().find(|(magic, _)| head.starts_with(magic)) {
        return Some(format!("a {name} file (unpack it first)"));
    }
    let start = &head[..head.len().min(BINARY_SNIFF)];
    let nuls = start.iter().filter(|&&b| b == 0).count();
    (nuls >= 4 && nuls >= start.len() / 8).then(|| "a binary file (many NUL bytes)".to_string())
}

/// Whether `head` is UTF-16 with a byte order mark, and which (true: big-endian). Indicators
/// are ASCII, so most of what follows the mark must read as ASCII: a UTF-8 list whose first
/// bytes are damaged may start with the same two bytes.
fn utf16_bom(head: &[u8]) -> Option<bool> {
    let big_endian = match head {
        [0xFF, 0xFE, ..] => false,
        [0xFE, 0xFF, ..] => true,
        _ => return None,
    };
    let sample = &head[2..head.len().min(1026)];
    let decoded = decode_utf16(sample, big_endian);
    let ascii = decoded.chars().filter(char::is_ascii).count();
    (ascii * 2 >= decoded.chars().count()).then_some(big_endian)
}

/// UTF-16 text as UTF-8; unpaired surrogates (and an odd last byte) become U+FFFD.
fn decode_utf16(bytes: &[u8], big_endian: bool) -> String {
    let units = bytes.chunks(2).map(|pair| match (pair, big_endian) {
        ([hi, lo], true) | ([lo, hi], false) => u16::from_be_bytes([*hi, *lo]),
        _ => 0xFFFD,
    });
    char::decode_utf16(units)
        .map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
        .collect()
}

/// Reads up to [`DETECT_HEAD`] bytes for format detection.
fn fill_head(reader: &mut impl Read) -> std::io::Result<Vec<u8>> {
    let mut head = Vec::with_capacity(DETECT_HEAD);
    reader.take(DETECT_HEAD as u64).read_to_end(&mut head)?;
    Ok(head)
}

/// Guesses the format of a list from its file name and its first bytes. Content wins over the
/// name where they disagree about JSON and XML; otherwise the extension decides, then a look at
/// the lines (LOKI), then plain text.
pub fn detect_format(name: &str, head: &[u8]) -> Format {
    let lower = name.to_ascii_lowercase();
    let ext = lower.rsplit_once('.').map(|(_, e)| e).unwrap_or("");
    let body = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = body
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|i| &body[i..])
        .unwrap_or(&[]);
    let looks_json =
        start.first() == Some(&b'{') || (start.first() == Some(&b'[') && ext == "json");
    if looks_json || ext == "json" {
        let text = String::from_utf8_lossy(start);
        let squeezed: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        if squeezed.contains("\"Event\":") || squeezed.contains("\"Attribute\":[") {
            return Format::Misp;
        }
        if squeezed.contains("\"type\":\"bundle\"")
            || squeezed.contains("\"spec_version\":\"2.")
            || squeezed.contains("\"pattern\":\"[")
        {
            return Format::Stix;
        }
        if looks_json {
            return Format::Json;
        }
    }
    let text = String::from_utf8_lossy(&start[..start.len().min(4096)]);
    if matches!(ext, "ioc" | "xml" | "openioc")
        || text.contains("<ioc ")
        || text.contains("<ioc>")
        || text.contains("OpenIOC")
        || text.contains("schemas.mandiant.com")
    {
        return Format::OpenIoc;
    }
    match ext {
        "csv" | "tsv" => return Format::Csv,
        "md" | "markdown" => return Format::Markdown,
        "adoc" | "asciidoc" | "asc" => return Format::AsciiDoc,
        _ => {}
    }
    if looks_like_loki(body) {
        Format::Loki
    } else {
        Format::Text
    }
}

/// Most non-comment lines are `hash;...`.
fn looks_like_loki(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let mut data = 0;
    let mut loki = 0;
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .take(50)
    {
        data += 1;
        if let Some((first, _)) = line.split_once(';')
            && crate::indicator::FileHash::parse(first.trim()).is_some()
        {
            loki += 1;
        }
    }
    data > 0 && loki * 2 >= data
}

#[cfg(test)]
mod tests;
