//! OpenIOC 1.x XML: each `IndicatorItem` pairs a `Context search="..."` with a `Content`.
//!
//! Hash items (`FileItem/Md5sum`, `Sha1sum`, `Sha256sum`) and network items (`Network/DNS`,
//! `Network/URI`, `DnsEntryItem/Host`, `UrlHistoryItem/URL`, `PortItem/remoteIP`...) are taken;
//! Snort rules, free strings and file names are not indicators. The document is read whole
//! (capped at [`MAX_DOCUMENT`]); a light scanner is enough for this regular format and line
//! numbers come from counting `\n`, which copes with mixed line endings.

use std::io::Read;

use super::sink::Sink;
use super::{Classified, MAX_DOCUMENT, classify, refang};
use crate::indicator::{FileHash, Indicator};

pub(crate) fn parse(reader: impl Read, sink: &mut Sink<'_>) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    reader.take(MAX_DOCUMENT + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_DOCUMENT {
        sink.reject(
            0,
            format!("document larger than {} MiB, not read", MAX_DOCUMENT >> 20),
            "",
        );
        return Ok(());
    }
    if bytes.contains(&0) {
        sink.reject(0, "binary data (NUL byte): not an OpenIOC document", "");
        return Ok(());
    }
    let text = String::from_utf8_lossy(&bytes);
    if matches!(text, std::borrow::Cow::Owned(_)) {
        sink.warn("invalid UTF-8 in the OpenIOC document decoded lossily".to_owned());
    }
    let mut found_items = 0;
    for (search, content, offset) in items(&text) {
        found_items += 1;
        let line = 1 + text.as_bytes()[..offset]
            .iter()
            .filter(|&&b| b == b'\n')
            .count();
        item(&search, &unescape(content.trim()), line, sink);
    }
    if found_items == 0 {
        sink.warn("no OpenIOC IndicatorItem found".to_owned());
    }
    Ok(())
}

/// Every `(search, content, byte offset of the content)` of the document.
fn items(text: &str) -> Vec<(String, &str, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while let Some(rel) = text[pos..].find("IndicatorItem") {
        let start = pos + rel;
        let end = text[start + 13..]
            .find("IndicatorItem")
            .map_or(text.len(), |e| start + 13 + e);
        let item = &text[start..end];
        pos = end;
        let Some(search) = attr(item, "Context", "search") else {
            continue;
        };
        let Some(open) = item.find("<Content").or_else(|| item.find(":Content")) else {
            continue;
        };
        let Some(gt) = item[open..].find('>') else {
            continue;
        };
        let body_start = open + gt + 1;
        let Some(close) = item[body_start..].find("</") else {
            continue;
        };
        out.push((
            search,
            &item[body_start..body_start + close],
            start + body_start,
        ));
    }
    out
}

/// The value of `name="..."` in the first `<tag ...>` of `s`.
fn attr(s: &str, tag: &str, name: &str) -> Option<String> {
    let t = s.find(&format!("{tag} "))?;
    let end = s[t..].find('>')? + t;
    let tag_text = &s[t..end];
    let k = tag_text.find(&format!("{name}="))? + name.len() + 1;
    let quote = tag_text[k..].chars().next()?;
    let rest = &tag_text[k + 1..];
    Some(rest[..rest.find(quote)?].to_owned())
}

fn unescape(s: &str) -> String {
    let s = s
        .strip_prefix("<![CDATA[")
        .and_then(|x| x.strip_suffix("]]>"))
        .unwrap_or(s);
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn item(search: &str, value: &str, line: usize, sink: &mut Sink<'_>) {
    let s = search.to_ascii_lowercase();
    if s.ends_with("md5sum") || s.ends_with("sha1sum") || s.ends_with("sha256sum") {
        match FileHash::parse(value) {
            Some(h) => sink.indicator(Indicator::Hash(h), line),
            None => sink.reject(line, format!("{search} is not a valid hash"), value),
        }
        return;
    }
    let network = matches!(
        s.as_str(),
        "network/dns"
            | "network/uri"
            | "dnsentryitem/host"
            | "dnsentryitem/recordname"
            | "urlhistoryitem/url"
            | "urlhistoryitem/hostname"
            | "portitem/remoteip"
            | "network/url"
            | "network/ip"
            | "routeentryitem/destination"
    );
    if !network {
        return;
    }
    let c = classify(&refang(value), sink.opts);
    // A `Network/URI` may be a bare path (`/index.php`): not a lookup-able indicator.
    if !sink.offer(c.clone(), line) && c == Classified::NotAnIndicator && !value.starts_with('/') {
        sink.reject(line, format!("{search} is not a valid indicator"), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_pair_context_and_content() {
        let xml = "<Indicator>\r\n<IndicatorItem id=\"1\" condition=\"is\">\r\n<Context document=\"Network\" search=\"Network/DNS\" type=\"mir\" />\n<Content type=\"string\">evil.info</Content>\n</IndicatorItem></Indicator>";
        let got = items(xml);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "Network/DNS");
        assert_eq!(got[0].1, "evil.info");
        assert_eq!(
            1 + xml.as_bytes()[..got[0].2]
                .iter()
                .filter(|&&b| b == b'\n')
                .count(),
            4
        );
    }
}
