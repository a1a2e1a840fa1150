//! Reading a list line by line with a hard cap on line length, so that a hostile file with one
//! huge line (or no newline at all) cannot make us buffer it whole.

use std::borrow::Cow;
use std::io::BufRead;

use super::MAX_LINE;

/// One physical line.
pub enum Line<'a> {
    /// The bytes of the line, without its end (`\n`, `\r\n` or `\r`).
    Bytes(&'a [u8]),
    /// The line was longer than [`MAX_LINE`]; its bytes were discarded.
    TooLong,
}

/// Splits a reader into lines (`\n`, `\r\n`, the old Macintosh's lone `\r`, or a mix), skipping
/// over any line longer than [`MAX_LINE`] without keeping it.
pub struct Lines<R> {
    reader: R,
    buf: Vec<u8>,
    number: usize,
    done: bool,
    /// The line before ended with a `\r` that ended a buffer too: a `\n` next is its `\r\n`.
    after_cr: bool,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Self {
        Lines {
            reader,
            buf: Vec::new(),
            number: 0,
            done: false,
            after_cr: false,
        }
    }

    /// The next line and its 1-based number, or `None` at the end.
    pub fn next_line(&mut self) -> std::io::Result<Option<(usize, Line<'_>)>> {
        if self.done {
            return Ok(None);
        }
        self.buf.clear();
        let mut too_long = false;
        let mut saw_any = false;
        loop {
            let chunk = self.reader.fill_buf()?;
            if chunk.is_empty() {
                self.done = true;
                if !saw_any {
                    return Ok(None);
                }
                break;
            }
            if std::mem::take(&mut self.after_cr) && chunk[0] == b'\n' {
                self.reader.consume(1);
                continue;
            }
            saw_any = true;
            // The line's bytes, whether it ends here, and the bytes of its end.
            let (take, end, ending) = match chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
                Some(i) if chunk[i] == b'\n' => (i, true, 1),
                Some(i) => match chunk.get(i + 1) {
                    Some(b'\n') => (i, true, 2),
                    Some(_) => (i, true, 1),
                    None => {
                        self.after_cr = true;
                        (i, true, 1)
                    }
                },
                None => (chunk.len(), false, 0),
            };
            if !too_long {
                if self.buf.len() + take > MAX_LINE {
                    too_long = true;
                    self.buf = Vec::new();
                } else {
                    self.buf.extend_from_slice(&chunk[..take]);
                }
            }
            self.reader.consume(take + ending);
            if end {
                break;
            }
        }
        self.number += 1;
        if too_long {
            return Ok(Some((self.number, Line::TooLong)));
        }
        let mut bytes = self.buf.as_slice();
        if self.number == 1 {
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        Ok(Some((self.number, Line::Bytes(bytes))))
    }
}

/// Decodes a line; invalid UTF-8 is replaced (U+FFFD) and reported through `lossy`.
pub fn decode(bytes: &[u8]) -> (Cow<'_, str>, bool) {
    match std::str::from_utf8(bytes) {
        Ok(s) => (Cow::Borrowed(s), false),
        Err(_) => (String::from_utf8_lossy(bytes), true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(input: &[u8]) -> Vec<Option<Vec<u8>>> {
        let mut lines = Lines::new(std::io::BufReader::with_capacity(16, input));
        let mut out = Vec::new();
        while let Some((_, l)) = lines.next_line().unwrap() {
            out.push(match l {
                Line::Bytes(b) => Some(b.to_vec()),
                Line::TooLong => None,
            });
        }
        out
    }

    #[test]
    fn bom_and_mixed_line_endings_are_stripped() {
        let got = collect(b"\xEF\xBB\xBFa\r\nb\nc");
        assert_eq!(
            got,
            vec![
                Some(b"a".to_vec()),
                Some(b"b".to_vec()),
                Some(b"c".to_vec())
            ]
        );
    }

    #[test]
    fn old_macintosh_line_ends_are_line_ends_even_across_buffers() {
        // The reader's buffer holds 16 bytes: the `\r\n` after the second line is split.
        let got = collect(b"a\rb\rccccccccccc\r\nd\r\re");
        let lines: Vec<&[u8]> = vec![b"a", b"b", b"ccccccccccc", b"d", b"", b"e"];
        assert_eq!(
            got,
            lines
                .into_iter()
                .map(|l| Some(l.to_vec()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_overlong_line_is_reported_and_the_next_one_still_read() {
        let mut input = vec![b'x'; MAX_LINE + 10];
        input.extend_from_slice(b"\nok\n");
        let got = collect(&input);
        assert_eq!(got, vec![None, Some(b"ok".to_vec())]);
    }
}
