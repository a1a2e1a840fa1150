//! VirusTotal reply parsers on arbitrary bytes: objects, analyses and error replies must never
//! panic, whatever a server or a proxy sends.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vtriage::vt::{self, Analysis, Object};

fuzz_target!(|data: &[u8]| {
    if let Ok(object) = Object::parse(data) {
        // Every accessor the worker and the reports use.
        let _ = object.last_analysis_stats();
        let _ = object.last_analysis_date();
        let _ = object.analysis_pending();
        let _ = object.threat_label();
        let _ = (object.sha256(), object.md5(), object.sha1(), object.size());
        let _ = object.meaningful_name();
    }
    if let Ok(analysis) = Analysis::parse(data) {
        let _ = (analysis.status, analysis.stats, analysis.date);
    }
    let _ = vt::AnalysisRef::parse(data);
    let _ = vt::Page::parse(data);
    let _ = vt::parse_data_string(data);
    // The status comes from the first two bytes, the body is the rest.
    if let [a, b, body @ ..] = data {
        let status = 100 + (u16::from_le_bytes([*a, *b]) % 500);
        let error = vt::Error::from_response(status, body);
        let _ = (error.to_string(), error.is_retryable(), error.is_auth());
    }
});
