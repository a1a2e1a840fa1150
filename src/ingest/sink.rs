//! Where every parser delivers what it finds: deduplication, counting, capped notes.

use std::collections::HashSet;

use super::{Classified, Found, Options, Rejected, SkipReason, Summary};
use crate::indicator::Indicator;

/// At most this many rejections and as many warnings are kept; the rest are only counted, so
/// that a hostile list cannot grow the summary without bound.
pub const MAX_NOTES: usize = 1000;

pub(crate) struct Sink<'a> {
    pub opts: &'a Options,
    emit: &'a mut dyn FnMut(Found),
    seen: HashSet<Indicator>,
    pub summary: Summary,
    dropped_rejections: usize,
    dropped_warnings: usize,
}

impl<'a> Sink<'a> {
    pub fn new(opts: &'a Options, emit: &'a mut dyn FnMut(Found)) -> Sink<'a> {
        Sink {
            opts,
            emit,
            seen: HashSet::new(),
            summary: Summary::default(),
            dropped_rejections: 0,
            dropped_warnings: 0,
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
        if self.seen.contains(&indicator) {
            self.summary.duplicates += 1;
            return;
        }
        *self.summary.found.entry(indicator.type_name()).or_default() += 1;
        self.seen.insert(indicator.clone());
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

    pub fn finish(mut self) -> Summary {
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

/// The first 80 characters of `text`, control characters escaped so that a terminal is safe.
pub fn excerpt(text: &str) -> String {
    let mut out = String::new();
    for c in text.chars() {
        let piece: String = if c.is_control() {
            c.escape_default().collect()
        } else {
            c.to_string()
        };
        if out.chars().count() + piece.chars().count() > 80 {
            break;
        }
        out.push_str(&piece);
    }
    out
}
