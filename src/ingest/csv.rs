//! CSV and TSV lists, one record per line, or several when a quoted cell holds line breaks (as
//! the comments of MISP's CSV export do).
//!
//! Lines starting with `#` are comments, as in text lists; abuse.ch's dumps (URLhaus, ThreatFox,
//! MalwareBazaar) open with a banner of them and write their header as the last one
//! (`# id,dateadded,url,...`): the last comment before the data that reads as a header (cells
//! without spaces, none an indicator) is taken as the header.
//!
//! The first record is a header when none of its cells is an indicator. With a header, columns
//! that describe rather than identify (names, descriptions, notes, types, sizes, dates, PDB
//! paths, package names, links, fuzzy hashes...) are not read: they hold file names such as
//! `update.com` and package names such as `com.android.henbox` that would otherwise pass for
//! domains, and an import hash is not a file's MD5. A header that names an indicator (`hostname`,
//! `Domain Name`, `malware_sha256`, `Stage2 URL`: see [`super::json::is_indicator_key`]) is read
//! whatever else it says. A type column
//! (`type`, `entity_type`...) marks rows of non-indicator types (file names, paths, mutexes) to
//! skip, and rows of indicator types that yield nothing are rejected. Every other cell goes
//! through free-text extraction, so cells packing several hashes work in any order.

use super::sink::Sink;
use super::text::{Flavor, extract, trim_lone, trim_wrappers};
use super::{Classified, classify, refang};

/// Header words of columns that describe an indicator rather than hold one (found anywhere in
/// the header, unless it names an indicator).
const DESCRIPTIVE: [&str; 26] = [
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
    "link",
    "agent",
    "imphash",
    "ssdeep",
    "tlsh",
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

/// A record whose quoted cell is still open after this many lines (or [`super::MAX_LINE`]
/// bytes) is taken to have a stray quote instead: its lines are then read one by one, as records
/// of their own.
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
    /// A record whose quoted cell is still open at the end of its last line.
    held: Option<Held>,
    /// The cells of the last comment before the first record that could be a header.
    commented_header: Option<Vec<String>>,
    /// How many cells the first record has (its header's, or its first row's).
    columns: usize,
}

/// The lines read so far of a record that spans lines.
struct Held {
    /// Its cells so far.
    cells: Cells,
    /// Its lines, with their numbers.
    lines: Vec<(usize, String)>,
    /// Their bytes.
    bytes: usize,
}

impl CsvState {
    pub fn line(&mut self, line: &str, n: usize, sink: &mut Sink<'_>) {
        if self.held.is_none() {
            let trimmed = line.trim();
            if trimmed.is_empty() {
                return;
            }
            if let Some(comment) = trimmed.strip_prefix('#') {
                if !self.started {
                    self.maybe_header(comment, sink);
                    return;
                }
                // After the first record, a line with as many cells as a record is one
                // (`#2,evil.com` in a numbered list), not a comment.
                if self.cell_count(line) != self.columns || self.columns < 2 {
                    return;
                }
            }
        }
        if self.delim == 0 {
            self.delim = delimiter(line);
        }
        let mut held = match self.held.take() {
            None => {
                let mut cells = Cells::default();
                cells.feed(line, self.delim);
                if !cells.in_quotes {
                    return self.record(cells.finish(), line, n, sink);
                }
                Held {
                    cells,
                    lines: Vec::new(),
                    bytes: 0,
                }
            }
            Some(mut held) => {
                held.cells.feed("\n", self.delim);
                held.cells.feed(line, self.delim);
                held
            }
        };
        held.lines.push((n, line.to_owned()));
        held.bytes += line.len() + 1;
        if !held.cells.in_quotes {
            self.warn_of_swallowed_records(&held, sink);
            // The record is named by its first line.
            let text: Vec<&str> = held.lines.iter().map(|(_, l)| l.as_str()).collect();
            self.record(held.cells.finish(), &text.join("\n"), held.lines[0].0, sink);
        } else if held.lines.len() >= MAX_RECORD_LINES || held.bytes > super::MAX_LINE {
            self.read_one_by_one(held, sink);
        } else {
            self.held = Some(held);
        }
    }

    /// How many cells `line` has on its own (0 when a quote in it stays open).
    fn cell_count(&self, line: &str) -> usize {
        let mut cells = Cells::default();
        cells.feed(line, self.delim);
        if cells.in_quotes {
            0
        } else {
            cells.finish().len()
        }
    }

    /// A quoted cell spanning lines is a comment with line breaks (MISP's export), or a stray
    /// quote that made the records after it one cell, their indicators unread. A line inside it
    /// with as many cells as a record has is likely such a record: say so, naming the lines.
    fn warn_of_swallowed_records(&self, held: &Held, sink: &mut Sink<'_>) {
        if self.columns < 2 {
            return;
        }
        let looks_like_a_record = held
            .lines
            .iter()
            .skip(1)
            .any(|(_, line)| self.cell_count(line) == self.columns);
        if let (true, Some((first, _)), Some((last, _))) =
            (looks_like_a_record, held.lines.first(), held.lines.last())
        {
            sink.warn(format!(
                "lines {first}-{last} were read as one record: a quote opened on line {first} \
                 closes on line {last}; if it is a stray quote, the records in between were not \
                 read"
            ));
        }
    }

    /// The end of the list: a record still open had a stray quote.
    pub fn finish(&mut self, sink: &mut Sink<'_>) {
        if let Some(held) = self.held.take() {
            self.read_one_by_one(held, sink);
        }
    }

    /// The lines of a record that never closed, each as a record of its own.
    fn read_one_by_one(&mut self, held: Held, sink: &mut Sink<'_>) {
        for (n, line) in held.lines {
            if !line.trim().is_empty() {
                let mut cells = Cells::default();
                cells.feed(&line, self.delim);
                self.record(cells.finish(), &line, n, sink);
            }
        }
    }

    /// A comment before the first record: kept when it could be the header (`# id,url,...`).
    fn maybe_header(&mut self, comment: &str, sink: &Sink<'_>) {
        let comment = comment.trim();
        let mut cells = Cells::default();
        cells.feed(comment, delimiter(comment));
        let cells = cells.finish();
        if cells.len() > 1
            && cells.iter().all(|c| {
                let c = c.trim();
                !c.is_empty() && !c.contains(' ') && !is_indicator_cell(c, sink)
            })
        {
            self.commented_header = Some(cells);
        }
    }

    /// One record, `cells` of `text`, starting at line `n`.
    fn record(&mut self, cells: Vec<String>, text: &str, n: usize, sink: &mut Sink<'_>) {
        if !self.started {
            self.started = true;
            self.columns = cells.len();
            if cells.iter().all(|c| !is_indicator_cell(c, sink)) {
                self.header(&cells);
                return;
            }
            if let Some(header) = self.commented_header.take() {
                self.header(&header);
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
                let c = classify(trim_lone(&whole), sink.opts);
                if sink.offer(c, n) {
                    taken += 1;
                    continue;
                }
            }
            taken += extract(cell, n, sink, Flavor::Plain, false);
        }
        if taken == 0
            && let Some(t) = row_type
            && !t.is_empty()
        {
            sink.reject(n, format!("row of type {t:?} holds no indicator"), text);
        }
    }

    fn header(&mut self, cells: &[String]) {
        let names: Vec<&str> = cells
            .iter()
            .map(|c| c.trim().trim_start_matches('\u{feff}'))
            .collect();
        let names_an_indicator: Vec<bool> = names
            .iter()
            .map(|n| super::json::is_indicator_key(n))
            .collect();
        let names: Vec<String> = names.iter().map(|n| n.to_ascii_lowercase()).collect();
        self.type_col = names
            .iter()
            .position(|n| TYPE_COLUMNS.contains(&n.as_str()));
        self.url_col = names
            .iter()
            .map(|n| n.contains("url") || n.contains("uri"))
            .collect();
        self.read = names
            .iter()
            .zip(names_an_indicator)
            .map(|(n, indicator)| indicator || !DESCRIPTIVE.iter().any(|d| n.contains(d)))
            .collect();
    }
}

/// A tab when the line has tabs and no comma, else a comma.
fn delimiter(line: &str) -> u8 {
    if line.contains('\t') && !line.contains(',') {
        b'\t'
    } else {
        b','
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

/// The cells of a CSV record, split as its text is fed, a line at a time. Quoted cells may hold
/// the delimiter, line breaks and `""` for a quote; one still open at the end runs to the end.
#[derive(Default)]
struct Cells {
    done: Vec<String>,
    cur: String,
    in_quotes: bool,
}

impl Cells {
    fn feed(&mut self, text: &str, delim: u8) {
        let mut chars = text.chars().peekable();
        let delim = delim as char;
        while let Some(c) = chars.next() {
            match c {
                '"' if self.in_quotes && chars.peek() == Some(&'"') => {
                    self.cur.push('"');
                    chars.next();
                }
                '"' if self.in_quotes => self.in_quotes = false,
                '"' if self.cur.trim().is_empty() => {
                    self.cur.clear();
                    self.in_quotes = true;
                }
                c if c == delim && !self.in_quotes => {
                    self.done.push(std::mem::take(&mut self.cur));
                }
                c => self.cur.push(c),
            }
        }
    }

    fn finish(mut self) -> Vec<String> {
        self.done.push(self.cur);
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoted_fields_keep_their_commas_and_say_when_they_are_still_open() {
        let mut cells = Cells::default();
        cells.feed(r#"a,"b, c",,"d ""q""","#, b',');
        assert!(!cells.in_quotes);
        assert_eq!(cells.finish(), vec!["a", "b, c", "", r#"d "q""#, ""]);
        let mut cells = Cells::default();
        cells.feed("a,\"b", b',');
        assert!(cells.in_quotes);
        cells.feed("\n", b',');
        cells.feed("c\",d", b',');
        assert!(!cells.in_quotes);
        assert_eq!(cells.finish(), vec!["a", "b\nc", "d"]);
    }
}
