//! The IOC list parser on arbitrary bytes: it must never panic, and every indicator it emits
//! must be usable by the later stages (a non-empty value, a 1-based line).
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtriage::ingest::{self, Format, Options};

/// Formats tried on each input: detection from the content, plus every forced format.
const FORMATS: [Option<Format>; 9] = [
    None,
    Some(Format::Text),
    Some(Format::Loki),
    Some(Format::Csv),
    Some(Format::Markdown),
    Some(Format::AsciiDoc),
    Some(Format::Stix),
    Some(Format::Misp),
    Some(Format::OpenIoc),
];

fuzz_target!(|data: &[u8]| {
    // The first byte picks the format and the name used for detection.
    let Some((&pick, body)) = data.split_first() else {
        return;
    };
    let format = FORMATS[pick as usize % FORMATS.len()];
    let name = ["list.txt", "iocs.csv", "x.json", "a.ioc", "n.md"][pick as usize % 5];
    let opts = Options {
        skip_private_ips: pick & 0x80 != 0,
    };
    ingest::parse_reader(name, body, format, &opts, |found| {
        assert!(!found.indicator.to_string().is_empty());
        assert!(found.line >= 1, "lines are 1-based");
    })
    .expect("reading from memory cannot fail");
});
