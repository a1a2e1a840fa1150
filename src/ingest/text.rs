//! The line-oriented formats (plain text and prose, LOKI, Markdown, AsciiDoc, and CSV through
//! [`super::csv`]) and the free-text extractor they all share.
//!
//! Extraction of one fragment: refang it whole (so that defanged dots in paths and nested
//! defanged URLs are undone too), drop invisible characters, split it on separators
//! (whitespace including NBSP, `,` `;` `|` quotes and angle brackets), strip wrappers and
//! trailing prose punctuation from each token, classify it, and look for bounded hash-length hex
//! runs in tokens that are neither indicators nor paths. A value alone on its line (or in its
//! cell) keeps its last character, unless the line goes on with a sentence of the line before.
//! A backtick span holding a URL is one token, spaces and all (`` `++http://host/<MAC address>/x++` ``), which classifying then reads as a
//! URL template.

use std::io::{BufReader, Read};

use super::classify::{classify, hex_runs, is_invisible};
use super::lines::{Line, Lines, decode};
use super::sink::Sink;
use super::{Classified, Format, SkipReason, refang};
use crate::indicator::Indicator;

/// How a fragment is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// Plain text and everything else.
    Plain,
    /// AsciiDoc: a URL directly followed by `[text]` is a link macro to a reference (a blog
    /// post, a report), not an indicator.
    AsciiDoc,
}

pub(crate) fn parse(reader: impl Read, format: Format, sink: &mut Sink<'_>) -> std::io::Result<()> {
    let mut lines = Lines::new(BufReader::with_capacity(64 * 1024, reader));
    let mut csv = super::csv::CsvState::default();
    // Whether the line before ended mid-sentence, so that this one goes on with it.
    let mut in_sentence = false;
    while let Some((n, line)) = lines.next_line()? {
        let bytes = match line {
            Line::TooLong => {
                sink.reject(n, "line too long", "");
                continue;
            }
            Line::Bytes(b) => b,
        };
        if bytes.contains(&0) {
            sink.reject(n, "binary data (NUL byte)", &String::from_utf8_lossy(bytes));
            continue;
        }
        let (text, lossy) = decode(bytes);
        if lossy {
            sink.lossy(n);
        }
        match format {
            Format::Loki => loki_line(&text, n, sink),
            Format::Csv => csv.line(&text, n, sink),
            _ => {
                let continues = std::mem::replace(&mut in_sentence, ends_mid_sentence(&text));
                if format == Format::AsciiDoc {
                    asciidoc_line(&text, n, continues, sink);
                } else {
                    text_line(&text, n, continues, sink);
                }
            }
        }
    }
    csv.finish(sink);
    Ok(())
}

/// Re-reads a document as text (the fallback for malformed JSON).
pub(crate) fn parse_bytes_as_text(bytes: &[u8], sink: &mut Sink<'_>) -> std::io::Result<()> {
    let mut lines = Lines::new(bytes);
    while let Some((n, line)) = lines.next_line()? {
        if let Line::Bytes(b) = line {
            let (text, _) = decode(b);
            // JSON string escapes would glue words together (`...html\n\nAdversaries`).
            let text = if text.contains('\\') {
                text.replace("\\n", " ")
                    .replace("\\r", " ")
                    .replace("\\t", " ")
                    .replace("\\/", "/")
                    .replace("\\\"", "\"")
            } else {
                text.into_owned()
            };
            extract(&text, n, sink, Flavor::Plain, false);
        } else {
            sink.reject(n, "line too long", "");
        }
    }
    Ok(())
}

/// Words after which a sentence wrapped before its link goes on, on the next line, with what it
/// names: `The white paper is available at` (ESET's READMEs).
const LEADING_ON: [&str; 11] = [
    "at", "by", "from", "here", "in", "into", "of", "on", "see", "to", "via",
];

/// Whether a line of prose stops mid-sentence, its next line going on with it: words that end
/// with one of [`LEADING_ON`] (not a list of values with a comment, nor a heading), not a list
/// item or table row.
fn ends_mid_sentence(line: &str) -> bool {
    let t = line.trim();
    let mut words = t.split_whitespace().rev();
    words
        .next()
        .is_some_and(|last| LEADING_ON.iter().any(|w| last.eq_ignore_ascii_case(w)))
        && words.nth(1).is_some()
        && !t.starts_with(['#', '|', '-', '*', '+', '=', '.', '['])
        && !t.contains("://")
}

/// One line of text; `continues` when it goes on with the sentence of the line before.
fn text_line(line: &str, n: usize, continues: bool, sink: &mut Sink<'_>) {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return;
    }
    // A Markdown link definition, `[1]: https://blog.example.com/report`: a reference.
    if let Some((label, target)) = trimmed.split_once("]: ")
        && label.starts_with('[')
        && !label.contains(char::is_whitespace)
        && target.contains("://")
    {
        sink.skip(SkipReason::Reference);
        return;
    }
    let taken = extract(line, n, sink, Flavor::Plain, continues);
    // A lone value on its own line that is nothing we know deserves a word to the analyst
    // (`readme.txt` in a list of hashes); a lone plain word is a section title.
    if taken == 0
        && !trimmed.contains(char::is_whitespace)
        && trimmed.contains(['.', ':', '/', '@'])
    {
        sink.reject(n, "not an indicator", trimmed);
    }
}

fn asciidoc_line(line: &str, n: usize, continues: bool, sink: &mut Sink<'_>) {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with("//") {
        return;
    }
    if trimmed.starts_with(':') && trimmed[1..].contains(": ") {
        return; // document attribute
    }
    extract(line, n, sink, Flavor::AsciiDoc, continues);
}

/// LOKI: `value;comment` or `value;score;comment`; comments may contain `;` and indicators
/// that are not meant (report links), so only the first field counts.
fn loki_line(line: &str, n: usize, sink: &mut Sink<'_>) {
    let trimmed = line.trim();
    if trimmed.is_empty() || trimmed.starts_with('#') {
        return;
    }
    let first = trimmed.split(';').next().unwrap_or_default();
    let value = refang(first.trim());
    let value = trim_wrappers(&value);
    let c = classify(value, sink.opts);
    if !sink.offer(c, n) {
        sink.reject(n, "not an indicator", first);
    }
}

/// Separators between tokens in free text.
pub fn is_separator(c: char) -> bool {
    if c.is_ascii() {
        return matches!(c, ',' | ';' | '|' | '"' | '<' | '>')
            || c.is_ascii_whitespace()
            || c.is_ascii_control();
    }
    c.is_whitespace()
        || matches!(
            c,
            ',' | ';'
                | '|'
                | '"'
                | '<'
                | '>'
                | '\u{FFFD}'
                | '\u{201C}'
                | '\u{201D}'
                | '\u{201E}'
                | '\u{2018}'
                | '\u{2019}'
                | '\u{00AB}'
                | '\u{00BB}'
        )
        || c.is_control()
}

/// What a lossy decoding put in place of bytes that are not UTF-8.
const REPLACEMENT: char = '\u{FFFD}';

/// Rejects, and blanks, the words of `s` that bytes lost to the decoding cut in two:
/// `b\xfccher.de` in a Latin-1 list reads `b\u{FFFD}cher.de`, and with the replacement taken as a
/// separator its pieces would be other, real names (`cher.de`). A replacement at a word's edge
/// (a Windows-1252 curly quote around a URL) still separates. Returns how many were rejected.
fn reject_cut_words(s: &mut String, n: usize, sink: &mut Sink<'_>) -> usize {
    let cut = |word: &str| {
        let chars: Vec<char> = word.chars().collect();
        chars.iter().enumerate().any(|(i, &c)| {
            let run_end = chars[i..].iter().position(|&c| c != REPLACEMENT);
            c == REPLACEMENT
                && i > 0
                && !is_separator(chars[i - 1])
                && run_end.is_some_and(|end| !is_separator(chars[i + end]))
        })
    };
    let words: Vec<(usize, usize)> = s
        .split_whitespace()
        .filter(|word| cut(word))
        .map(|word| {
            let start = word.as_ptr() as usize - s.as_ptr() as usize;
            (start, start + word.len())
        })
        .collect();
    for &(start, end) in words.iter().rev() {
        sink.reject(
            n,
            "bytes that are not UTF-8 inside a word: the list is in another encoding \
             (save it as UTF-8)",
            &s[start..end],
        );
        s.replace_range(start..end, " ");
    }
    words.len()
}

/// Extracts every indicator of a free-text fragment; returns how many values were taken or
/// deliberately skipped. `in_sentence` when the fragment goes on with a sentence begun before
/// it: then no value in it stands alone, and a full stop after one is the sentence's.
pub(crate) fn extract(
    fragment: &str,
    n: usize,
    sink: &mut Sink<'_>,
    flavor: Flavor,
    in_sentence: bool,
) -> usize {
    let mut s = super::refang::refang_cow(fragment);
    if !s.is_ascii() && s.contains(is_invisible) {
        s.to_mut().retain(|c| !is_invisible(c));
    }
    let cut = match s.contains(REPLACEMENT) {
        true => reject_cut_words(s.to_mut(), n, sink),
        false => 0,
    };
    // A line (or cell, or list item) that is one URL with `,` `;` or `|` in its query
    // (`?a=1,2`) is taken whole: there they belong to the URL. Before a `?` they separate values
    // (`http://evil.com/a,1.2.3.4`, LOKI's `url;75`).
    let item = s.trim();
    let item = ["- ", "* ", "+ "]
        .iter()
        .find_map(|marker| item.strip_prefix(marker))
        .unwrap_or(item);
    let lone = trim_lone(item);
    if let Some((scheme, _)) = lone.split_once("://")
        && !scheme.is_empty()
        && scheme.bytes().all(|b| b.is_ascii_alphabetic())
        && !lone.contains(char::is_whitespace)
        && lone.matches("://").count() == 1
        && let Some(query) = lone.find('?')
        && lone.find([',', ';', '|']).is_some_and(|sep| sep > query)
    {
        return cut + take(lone, true, n, sink, flavor) as usize;
    }
    let mut taken = cut;
    // A value standing alone (a line of a list, a cell) keeps its last character: prose
    // punctuation only follows a value inside a sentence.
    let whole = s.trim().len();
    let alone = |raw: &str| !in_sentence && raw.len() == whole;
    if !s.contains('`') {
        for_each_token(&s, |raw| {
            taken += take(raw, alone(raw), n, sink, flavor) as usize
        });
        return taken;
    }
    let segments: Vec<&str> = s.split('`').collect();
    for (i, seg) in segments.iter().enumerate() {
        // Odd segments are inside backticks when a closing backtick follows.
        let quoted = i % 2 == 1 && i + 1 < segments.len();
        if quoted && seg.contains("://") {
            let token = seg.trim_matches(|c: char| c == '+' || c.is_whitespace());
            taken += take(token, true, n, sink, flavor) as usize;
        } else {
            for_each_token(seg, |raw| {
                taken += take(raw, alone(raw), n, sink, flavor) as usize
            });
        }
    }
    taken
}

/// Takes one raw token, `alone` when it is all its line or cell holds; returns whether it was
/// an indicator (or a deliberate skip).
fn take(raw: &str, alone: bool, n: usize, sink: &mut Sink<'_>, flavor: Flavor) -> bool {
    let trim = |t| {
        let prose = trim_wrappers(t);
        // `...?v_id=abc.` and `...lpp=*-*-*` on a line of their own are the URLs VirusTotal
        // knows; a hostname's trailing dot is the root's, which classifying drops anyway.
        if alone && prose.contains('/') {
            trim_lone(t)
        } else {
            prose
        }
    };
    // `[2a03:2880::25de]:443`: an IPv6 address and its port (the brackets would be trimmed as
    // wrappers, leaving `...]:443`).
    if let Some((address, port)) = raw
        .trim_start_matches(['(', '"', '\'', '`'])
        .strip_prefix('[')
        .and_then(|r| r.split_once("]:"))
        && let port = trim_wrappers(port)
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && address.parse::<std::net::Ipv6Addr>().is_ok()
    {
        return sink.offer(classify(address, sink.opts), n);
    }
    let mut t = trim(raw);
    // Most tokens of prose are plain words: no dot, colon, slash or @, too short for a hash.
    if t.len() < 3 || (t.len() < 32 && !t.bytes().any(|b| matches!(b, b'.' | b':' | b'/' | b'@'))) {
        return false;
    }
    if let Some(idx) = t.find("://") {
        // `url=http://...`, `(see:https://...`: the URL starts at its scheme.
        // After the last character that is not a letter, which may be several bytes long
        // (found by fuzzing: `\u{fffd}://a` panicked when cut one byte after its start).
        let start = t[..idx]
            .char_indices()
            .rev()
            .find(|(_, c)| !c.is_ascii_alphabetic())
            .map_or(0, |(i, c)| i + c.len_utf8());
        // A Markdown link's target, `[text](https://...)`, is a reference (a blog post, a
        // report), not an indicator, as an AsciiDoc link macro's is.
        if t[..start].ends_with("](") {
            sink.skip(SkipReason::Reference);
            return true;
        }
        // What was cut off may have opened a bracket that closes the token: `(see:https://x)`.
        t = trim(&t[start..]);
        // Refanging removed every defang bracket, so a `[` left after an AsciiDoc URL opens a
        // link macro's text: a reference (blog post, report), not an indicator. Elsewhere `[`
        // can be part of a URL (`...-dr-[duplicate]-(quick-send)&...`).
        if flavor == Flavor::AsciiDoc && t.contains('[') {
            sink.skip(SkipReason::Reference);
            return true;
        }
    }
    let c = classify(t, sink.opts);
    if sink.offer(c, n) {
        return true;
    }
    if t.contains('/') || t.len() < 32 {
        return false;
    }
    // A run of hex digits of no hash's length is a hash cut short, or two run together: said,
    // not dropped without a word (its cell or line may hold nothing else).
    if t.bytes().all(|b| b.is_ascii_hexdigit()) {
        sink.reject(
            n,
            format!(
                "{} hex digits: not an MD5 (32), SHA-1 (40) or SHA-256 (64); cut short, or run \
                 together?",
                t.len()
            ),
            t,
        );
        return true;
    }
    let mut any = false;
    for h in hex_runs(t) {
        sink.offer(Classified::Indicator(Indicator::Hash(h)), n);
        any = true;
    }
    any
}

/// ASCII bytes that separate tokens (see [`is_separator`]).
const ASCII_SEPARATORS: [bool; 128] = {
    let mut t = [false; 128];
    let mut i = 0;
    while i < 128 {
        let c = i as u8;
        t[i] = c.is_ascii_whitespace()
            || c.is_ascii_control()
            || matches!(c, b',' | b';' | b'|' | b'"' | b'<' | b'>');
        i += 1;
    }
    t
};

/// Calls `f` with every non-empty token of `s`, in one pass over the bytes (splitting with a
/// `char` predicate was a tenth of the parse time).
fn for_each_token(s: &str, mut f: impl FnMut(&str)) {
    let b = s.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i < b.len() {
        let (sep, width) = if b[i] < 0x80 {
            (ASCII_SEPARATORS[b[i] as usize], 1)
        } else {
            let c = s[i..].chars().next().unwrap_or('\u{FFFD}');
            (is_separator(c), c.len_utf8())
        };
        if sep {
            if i > start {
                f(&s[start..i]);
            }
            start = i + width;
        }
        i += width;
    }
    if start < b.len() {
        f(&s[start..]);
    }
}

/// Strips wrapper characters (backticks, `+`, quotes, brackets, `*`) and trailing prose
/// punctuation. A closing bracket is kept when the token also holds its opening one.
pub fn trim_wrappers(s: &str) -> &str {
    trim_ends(s, b"`+\"'*~.,;:!?<>")
}

/// [`trim_wrappers`] for a value standing alone (a line of a list, a cell): only quotes, angle
/// brackets and unmatched closing brackets are stripped from its end, as no sentence goes on
/// after it.
pub fn trim_lone(s: &str) -> &str {
    trim_ends(s, b"`\"'<>")
}

/// Strips wrappers from the start of `s`, and the bytes of `trail` and unmatched closing
/// brackets from its end.
fn trim_ends<'a>(s: &'a str, trail: &[u8]) -> &'a str {
    const LEAD: &[u8] = b"`+\"'([{*~.,;:!?=-<>";
    let b = s.as_bytes();
    let (mut lo, mut hi) = (0, b.len());
    loop {
        let before = (lo, hi);
        while lo < hi && LEAD.contains(&b[lo]) {
            lo += 1;
        }
        while hi > lo && trail.contains(&b[hi - 1]) {
            hi -= 1;
        }
        for (open, close) in [(b'(', b')'), (b'[', b']'), (b'{', b'}')] {
            if hi > lo && b[hi - 1] == close && !b[lo..hi].contains(&open) {
                hi -= 1;
            }
        }
        if (lo, hi) == before {
            // Only ASCII bytes were skipped, so both ends are on character boundaries.
            return &s[lo..hi];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrappers_and_prose_punctuation_are_trimmed() {
        assert_eq!(trim_wrappers("`+evil.com+`"), "evil.com");
        assert_eq!(trim_wrappers("(evil.com),"), "evil.com");
        assert_eq!(trim_wrappers("'http://x.com/a'"), "http://x.com/a");
        assert_eq!(
            trim_wrappers("http://x.com/wiki/A_(b)"),
            "http://x.com/wiki/A_(b)"
        );
        assert_eq!(trim_wrappers("**1.2.3.4**."), "1.2.3.4");
    }
}
