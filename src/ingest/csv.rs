//! CSV and TSV lists, one record per line.
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

#[derive(Default)]
pub(crate) struct CsvState {
    started: bool,
    delim: u8,
    /// Which columns to read; empty means all (no header).
    read: Vec<bool>,
    type_col: Option<usize>,
    /// Columns whose header names URLs.
    url_col: Vec<bool>,
}

impl CsvState {
    pub fn line(&mut self, line: &str, n: usize, sink: &mut Sink<'_>) {
        if line.trim().is_empty() {
            return;
        }
        if !self.started {
            self.started = true;
            self.delim = if line.contains('\t') && !line.contains(',') {
                b'\t'
            } else {
                b','
            };
            let cells = split(line, self.delim);
            if cells.iter().all(|c| !is_indicator_cell(c, sink)) {
                self.header(&cells);
                return;
            }
        }
        let cells = split(line, self.delim);
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
            sink.reject(n, format!("row of type {t:?} holds no indicator"), line);
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

/// Splits one CSV line: quoted fields may hold the delimiter and `""` for a quote; an
/// unterminated quote runs to the end of the line.
pub fn split(line: &str, delim: u8) -> Vec<String> {
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
    cells
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_their_commas_and_trailing_commas_make_empty_cells() {
        let cells = split(r#"a,"b, c",,"d ""q""","#, b',');
        assert_eq!(cells, vec!["a", "b, c", "", r#"d "q""#, ""]);
    }
}
