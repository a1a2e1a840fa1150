//! CSV and TSV lists, one record per line, or several when a quoted cell holds line breaks (as
//! the comments of MISP's CSV export do).
//!
//! The first record is a header when none of its cells is an indicator. With a header, columns
//! that describe rather than identify (names, descriptions, notes, types, sizes, dates, PDB
//! paths, package names...) are not read: they hold file names such as `update.com` and package
//! names such as `com.android.henbox` that would otherwise pass for domains. A type column
//! (`type`, `entity_type`...) marks rows of non-indicator types (file names, paths, mutexes) to
//! skip, and rows of indicator types that yield nothing are rejected. Every other cell goes
//! through free-text extraction, so cells packing several hashes work in any order.

use super::sink::Sink;
use super::text::{Flavor, extract, trim_wrappers};
use super::{Classified, classify, refang};

/// Header words of columns that describe an indicator rather than hold one.
const DESCRIPTIVE: [&str; 21] = [
    "desc",
    "comment",
    "note",
    "name",
    "type",
    "size",
    "time",
    "date",
    "seen",
    "use",
    "pdb",
    "mime",
    "version",
    "family",
    "role",
    "malware",
    "bitsadmin",
    "score",
    "title",
    "tag",
    "reference",
];
/// Names of the column that says what each row holds.
const TYPE_COLUMNS: [&str; 6] = [
    "type",
    "entity_type",
    "indicator_type",
    "ioc_type",
    "kind",
    "category",
];
/// Row types that are not indicators VirusTotal can look up.
const NON_INDICATOR_ROWS: [&str; 10] = [
    "filename",
    "file name",
    "filepath",
    "file path",
    "path",
    "mutex",
    "registry",
    "regkey",
    "yara",
    "user-agent",
];

/// A record whose quoted cell is still open after this many lines is taken to have a stray
/// quote instead: its lines are then read one by one, as records of their own.
const MAX_RECORD_LINES: usize = 100;

#[derive(Default)]
pub(crate) struct CsvState {
    started: bool,
    /// `,` or a tab, chosen by the first line (0 before it).
    delim: u8,
    /// Which columns to read; empty means all (no header).
    read: Vec<bool>,
    type_col: Option<usize>,
    /// Columns whose header names URLs.
    url_col: Vec<bool>,
    /// The lines (and their numbers) of a record whose quoted cell is still open.
    held: Vec<(usize, String)>,
}

impl CsvState {
    pub fn line(&mut self, line: &str, n: usize, sink: &mut Sink<'_>) {
        if self.held.is_empty() && line.trim().is_empty() {
            return;
        }
        if self.delim == 0 {
            self.delim = if line.contains('\t') && !line.contains(',') {
                b'\t'
            } else {
                b','
            };
        }
        if self.held.is_empty() {
            let (cells, open) = scan(line, self.delim);
            if !open {
                return self.record(cells, line, n, sink);
            }
        }
        self.held.push((n, line.to_owned()));
        let joined = self
            .held
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        let (cells, open) = scan(&joined, self.delim);
        if !open {
            // The record is named by its first line.
            let first = self.held[0].0;
            self.held.clear();
            self.record(cells, &joined, first, sink);
        } else if self.held.len() >= MAX_RECORD_LINES {
            self.finish(sink);
        }
    }

    /// The end of the list: a record still open had a stray quote; its lines count one by one.
    pub fn finish(&mut self, sink: &mut Sink<'_>) {
        for (n, line) in std::mem::take(&mut self.held) {
            if !line.trim().is_empty() {
                let (cells, _) = scan(&line, self.delim);
                self.record(cells, &line, n, sink);
            }
        }
    }

    /// One record, `cells` of `text`, starting at line `n`.
    fn record(&mut self, cells: Vec<String>, text: &str, n: usize, sink: &mut Sink<'_>) {
        if !self.started {
            self.started = true;
            if cells.iter().all(|c| !is_indicator_cell(c, sink)) {
                self.header(&cells);
                return;
            }
        }
        let row_type = self
            .type_col
            .and_then(|i| cells.get(i))
            .map(|t| t.trim().to_ascii_lowercase());
        if let Some(t) = &row_type
            && NON_INDICATOR_ROWS.contains(&t.as_str())
        {
            return;
        }
        let mut taken = 0;
        for (i, cell) in cells.iter().enumerate() {
            if Some(i) == self.type_col || self.read.get(i) == Some(&false) {
                continue;
            }
            if self.url_col.get(i) == Some(&true) {
                // A URL column holds one URL per cell, spaces and all (`/mr t/x.exe`).
                let whole = refang(cell.trim());
                let c = classify(trim_wrappers(&whole), sink.opts);
                if sink.offer(c, n) {
                    taken += 1;
                    continue;
                }
            }
            taken += extract(cell, n, sink, Flavor::Plain);
        }
        if taken == 0
            && let Some(t) = row_type
            && !t.is_empty()
        {
            sink.reject(n, format!("row of type {t:?} holds no indicator"), text);
        }
    }

    fn header(&mut self, cells: &[String]) {
        let names: Vec<String> = cells
            .iter()
            .map(|c| c.trim().trim_start_matches('\u{feff}').to_ascii_lowercase())
            .collect();
        self.type_col = names
            .iter()
            .position(|n| TYPE_COLUMNS.contains(&n.as_str()));
        self.url_col = names
            .iter()
            .map(|n| n.contains("url") || n.contains("uri"))
            .collect();
        self.read = names
            .iter()
            .map(|n| !DESCRIPTIVE.iter().any(|d| n.contains(d)))
            .collect();
    }
}

fn is_indicator_cell(cell: &str, sink: &Sink<'_>) -> bool {
    let value = refang(cell);
    value.split(',').any(|v| {
        !matches!(
            classify(trim_wrappers(v.trim()), sink.opts),
            Classified::NotAnIndicator
        )
    })
}

/// Splits a CSV record into its cells, and says whether a quoted cell is still open at its end
/// (it runs to the end). Quoted cells may hold the delimiter, line breaks and `""` for a quote.
fn scan(line: &str, delim: u8) -> (Vec<String>, bool) {
    let mut cells = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut chars = line.chars().peekable();
    let delim = delim as char;
    while let Some(c) = chars.next() {
        match c {
            '"' if in_quotes && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' if in_quotes => in_quotes = false,
            '"' if cur.trim().is_empty() => {
                cur.clear();
                in_quotes = true;
            }
            c if c == delim && !in_quotes => cells.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    cells.push(cur);
    (cells, in_quotes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_their_commas_and_say_when_they_are_still_open() {
        let (cells, open) = scan(r#"a,"b, c",,"d ""q""","#, b',');
        assert_eq!(cells, vec!["a", "b, c", "", r#"d "q""#, ""]);
        assert!(!open);
        let (cells, open) = scan("a,\"b\nc", b',');
        assert_eq!(cells, vec!["a", "b\nc"]);
        assert!(open);
    }
}
