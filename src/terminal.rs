//! Text bound for a terminal. File names, VirusTotal's labels and notes, and the contents of IOC
//! lists come from outside: a dropped file can be named so that its line rewrites the verdict
//! table (ESC sequences move the cursor, CR returns to the line's start). Human-readable output
//! escapes them with [`escape_control`]; JSON, CSV and STIX output stays exact (their own
//! quoting makes it well-formed).

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with its control characters (C0, DEL and C1) escaped, as `ls` shows such names:
/// `\t`, `\n`, `\r`, and `\x1b` for the others (a C1 character such as U+009B as `\x9b`).
/// Bidirectional formatting characters are escaped too, as `\u{202e}`: a right-to-left override
/// shows `invoice\u{202e}fdp.exe` as `invoiceexe.pdf`, a trick as old as malware mail.
/// Everything else, backslashes included, is left as it is.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(|c| c.is_control() || is_bidi_format(c)) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if is_bidi_format(c) => {
                let _ = write!(out, "\\u{{{:04x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// The characters that change the direction of the text around them (marks, embeddings,
/// overrides, isolates).
fn is_bidi_format(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            escape_control("invoice.pdf\x1b[1A\x1b[2K\rclean      benign.txt"),
            "invoice.pdf\\x1b[1A\\x1b[2K\\rclean      benign.txt"
        );
        assert_eq!(escape_control("a\tb\nc\0d\x7fe"), "a\\tb\\nc\\x00d\\x7fe");
        assert_eq!(escape_control("csi\u{9b}2J"), "csi\\x9b2J", "C1 too");
        assert_eq!(escape_control("bücher\\name …"), "bücher\\name …");
        assert_eq!(
            escape_control("invoice\u{202e}fdp.exe"),
            "invoice\\u{202e}fdp.exe",
            "a right-to-left override"
        );
        assert!(matches!(escape_control("plain"), Cow::Borrowed("plain")));
    }
}
