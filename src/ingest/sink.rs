//! Where every parser delivers what it finds: deduplication, counting, capped notes.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use sha2::{Digest, Sha256};

use super::{Classified, Found, Options, Rejected, SkipReason, Summary};
use crate::indicator::Indicator;

/// At most this many rejections and as many warnings are kept; the rest are only counted, so
/// that a hostile list cannot grow the summary without bound.
pub const MAX_NOTES: usize = 1000;

/// How many lines of each kind (rejected, decoded lossily) a list's summary names; the rest are
/// counted (a damaged file would give one a line).
pub const LINES_NAMED: usize = 5;

pub(crate) struct Sink<'a> {
    pub opts: &'a Options,
    emit: &'a mut dyn FnMut(Found),
    /// Fingerprints of the indicators taken so far (a million-line list would otherwise hold a
    /// second copy of every indicator).
    seen: HashSet<Fingerprint, BuildHasherDefault<FxHasher>>,
    pub summary: Summary,
    dropped_rejections: usize,
    dropped_warnings: usize,
    /// Lines decoded lossily so far.
    lossy_lines: usize,
}

impl<'a> Sink<'a> {
    pub fn new(opts: &'a Options, emit: &'a mut dyn FnMut(Found)) -> Sink<'a> {
        Sink {
            opts,
            emit,
            seen: HashSet::default(),
            summary: Summary::default(),
            dropped_rejections: 0,
            dropped_warnings: 0,
            lossy_lines: 0,
        }
    }

    /// Takes a classified value; returns whether it was an indicator or a deliberate skip.
    pub fn offer(&mut self, c: Classified, line: usize) -> bool {
        match c {
            Classified::Indicator(i) => {
                self.indicator(i, line);
                true
            }
            Classified::Skip(reason) => {
                self.skip(reason);
                true
            }
            Classified::NotAnIndicator => false,
        }
    }

    pub fn indicator(&mut self, indicator: Indicator, line: usize) {
        if !self.seen.insert(Fingerprint::of(&indicator)) {
            self.summary.duplicates += 1;
            return;
        }
        *self.summary.found.entry(indicator.type_name()).or_default() += 1;
        (self.emit)(Found { indicator, line });
    }

    pub fn skip(&mut self, reason: SkipReason) {
        if reason == SkipReason::Duplicate {
            self.summary.duplicates += 1;
        } else {
            *self
                .summary
                .skipped
                .entry(reason.as_str().to_owned())
                .or_default() += 1;
        }
    }

    pub fn reject(&mut self, line: usize, reason: impl Into<String>, text: &str) {
        if self.summary.rejected.len() >= MAX_NOTES {
            self.dropped_rejections += 1;
            return;
        }
        self.summary.rejected.push(Rejected {
            line,
            reason: reason.into(),
            excerpt: excerpt(text),
        });
    }

    pub fn warn(&mut self, msg: String) {
        if self.summary.warnings.len() >= MAX_NOTES {
            self.dropped_warnings += 1;
            return;
        }
        self.summary.warnings.push(msg);
    }

    /// Notes that `line` held invalid UTF-8, decoded lossily (named for the first few lines).
    pub fn lossy(&mut self, line: usize) {
        self.lossy_lines += 1;
        if self.lossy_lines <= LINES_NAMED {
            self.warn(format!("line {line}: invalid UTF-8 decoded lossily"));
        }
    }

    pub fn finish(mut self) -> Summary {
        if self.lossy_lines > LINES_NAMED {
            let n = self.lossy_lines - LINES_NAMED;
            self.warn(format!("{n} more lines with invalid UTF-8 decoded lossily"));
        }
        if self.dropped_rejections > 0 {
            let n = self.dropped_rejections;
            self.summary
                .warnings
                .push(format!("{n} more rejections not listed"));
        }
        if self.dropped_warnings > 0 {
            let n = self.dropped_warnings;
            self.summary
                .warnings
                .push(format!("{n} more warnings not listed"));
        }
        self.summary
    }
}

/// The first 128 bits of the SHA-256 of an indicator: two different indicators share one by
/// chance with odds far below a disk error, and no list can be crafted to make them collide
/// (a list that could would hide an indicator as a duplicate of another).
#[derive(PartialEq, Eq, Hash)]
struct Fingerprint([u8; 16]);

impl Fingerprint {
    fn of(indicator: &Indicator) -> Fingerprint {
        let mut digest = DigestWriter(Sha256::new());
        indicator.hash(&mut digest);
        let full = digest.0.finalize();
        let mut head = [0; 16];
        head.copy_from_slice(&full[..16]);
        Fingerprint(head)
    }
}

/// Feeds what [`Hash`] writes (the variant, then the value) into a digest.
struct DigestWriter(Sha256);

impl Hasher for DigestWriter {
    fn write(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    fn finish(&self) -> u64 {
        unreachable!("only the digest is read")
    }
}

/// The first 80 characters of `text`, control characters escaped so that a terminal is safe.
pub fn excerpt(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let piece = crate::terminal::escape_control(c.encode_utf8(&mut [0; 4])).into_owned();
        if out.chars().count() + piece.chars().count() > 80 {
            break;
        }
        out.push_str(&piece);
    }
    out
}

/// The multiply-rotate hash of rustc (`FxHash`), enough for keys that are already digests
/// (SipHash was a tenth of the parse time).
#[derive(Default)]
pub struct FxHasher {
    hash: u64,
}

const FX_SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(FX_SEED);
    }
}

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            self.add(u64::from_le_bytes(c.try_into().unwrap_or_default()));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut buf = [0u8; 8];
            buf[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(buf));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.add(i.into());
    }
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    fn finish(&self) -> u64 {
        // The multiply leaves the low bits weak and the table indexes by them: mix them in.
        let mut h = self.hash;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^ (h >> 33)
    }
}
