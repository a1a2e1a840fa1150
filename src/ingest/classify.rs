//! Deciding what one token is: a hash, URL, domain or IP address (normalised), something
//! skipped on purpose (private address, e-mail, CIDR), or not an indicator at all.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Options, SkipReason};
use crate::indicator::{FileHash, Indicator};

/// What a token is.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Classified {
    /// A normalised indicator.
    Indicator(Indicator),
    /// An indicator-like value not taken on purpose.
    Skip(SkipReason),
    /// Anything else (words, file names, paths...).
    NotAnIndicator,
}

/// Longest token considered: longer ones are not plausible indicators.
const MAX_TOKEN: usize = 64 * 1024;

/// Classifies one already-refanged token (surrounding whitespace and invisible marks are
/// ignored; wrappers such as quotes are not: strip them first).
///
/// Rules, in order: `scheme://` (only http, https and ftp are URLs; a template with a
/// `<placeholder>` in its path gives its host); CIDR ranges; IPv4/IPv6
/// (with an optional port, `[v6]:port` too); MD5/SHA-1/SHA-256 hex; e-mail addresses;
/// `host/path` without a scheme becomes an `http://` URL; finally a domain, whose last label
/// must be a known public suffix (so `chrome99.exe` and `readme.txt` are not domains).
pub fn classify(token: &str, opts: &Options) -> Classified {
    let t = if token.is_ascii() {
        token.trim_ascii()
    } else {
        token.trim_matches(|c: char| c.is_whitespace() || is_invisible(c))
    };
    if t.is_empty() || t.len() > MAX_TOKEN {
        return Classified::NotAnIndicator;
    }
    if let Some(idx) = t.find("://") {
        // `http://c2.example/<MAC address>/log`: a URL template, which VirusTotal cannot know;
        // its host is the indicator. Only a `<words>` placeholder in the path: `?q=<script>` in
        // a query is a real URL (an XSS attempt).
        if has_placeholder(t[idx + 3..].split(['?', '#']).next().unwrap_or_default()) {
            let url = url::Url::parse(t).ok();
            let host = url
                .as_ref()
                .and_then(url::Url::host_str)
                .unwrap_or_default();
            return classify(host.trim_start_matches('[').trim_end_matches(']'), opts);
        }
        return match normalize_url(&t[..idx], &t[idx + 3..]) {
            Some(u) => Classified::Indicator(Indicator::Url(u)),
            None => Classified::NotAnIndicator,
        };
    }
    if let Some((addr, prefix)) = t.split_once('/')
        && parse_ip(addr).is_some()
        && !prefix.is_empty()
        && prefix.len() <= 3
        && prefix.bytes().all(|b| b.is_ascii_digit())
    {
        let max = if addr.contains(':') { 128 } else { 32 };
        if prefix.parse::<u32>().is_ok_and(|p| p <= max) {
            return Classified::Skip(SkipReason::Cidr);
        }
    }
    if let Some(ip) = parse_ip_port(t) {
        return ip_indicator(ip, opts);
    }
    if let Some(h) = FileHash::parse(t) {
        return Classified::Indicator(Indicator::Hash(h));
    }
    if t.contains('@') && !t.contains('/') {
        let (local, domain) = t.rsplit_once('@').unwrap_or_default();
        let local_ok = !local.is_empty() && !local.contains(char::is_whitespace);
        if local_ok && normalize_domain(domain).is_some() {
            return Classified::Skip(SkipReason::Email);
        }
        return Classified::NotAnIndicator;
    }
    if let Some(cut) = t.find(['/', '?', '#']) {
        let (host, rest) = t.split_at(cut);
        // Carbon's C&C configuration writes `host:80:/path`.
        let host = host.strip_suffix(':').unwrap_or(host);
        return match normalize_authority(host) {
            Some(auth) => Classified::Indicator(Indicator::Url(format!(
                "http://{auth}{}",
                encode_unsafe(rest)
            ))),
            _ => Classified::NotAnIndicator,
        };
    }
    let host = strip_port(t).unwrap_or(t);
    match normalize_domain(host) {
        Some(d) => Classified::Indicator(Indicator::Domain(d)),
        None => Classified::NotAnIndicator,
    }
}

/// Whether `path` holds a `<placeholder>`: words (letters, digits, spaces, `_`, `-`) between
/// angle brackets.
fn has_placeholder(path: &str) -> bool {
    path.split('<').skip(1).any(|after| {
        after.split_once('>').is_some_and(|(inside, _)| {
            !inside.is_empty()
                && inside
                    .chars()
                    .all(|c| c.is_alphanumeric() || matches!(c, ' ' | '_' | '-'))
        })
    })
}

fn ip_indicator(ip: IpAddr, opts: &Options) -> Classified {
    if opts.skip_private_ips && !is_global(ip) {
        Classified::Skip(SkipReason::PrivateIp)
    } else {
        Classified::Indicator(Indicator::Ip(ip))
    }
}

/// Characters that carry no meaning and only break matching: BOM, zero-width and direction marks.
pub fn is_invisible(c: char) -> bool {
    matches!(c, '\u{feff}' | '\u{200b}'..='\u{200f}' | '\u{2060}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{00ad}')
}

/// Parses an IP address; IPv4 with leading zeros (`010.1.1.1`, octal to some parsers) is not one.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    if !s.bytes().any(|b| b.is_ascii_hexdigit()) {
        // A bare `::` in prose is punctuation, not the unspecified address.
        return None;
    }
    if s.contains(':') {
        let inner = s
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(s);
        inner.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
    } else {
        // std rejects leading zeros and anything but four decimal octets.
        s.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
    }
}

/// An IP address, optionally with a port (`1.2.3.4:80`, `[2001:db8::1]:443`).
pub fn parse_ip_port(s: &str) -> Option<IpAddr> {
    if let Some(ip) = parse_ip(s) {
        return Some(ip);
    }
    if let Some(rest) = s.strip_prefix('[') {
        let (addr, port) = rest.split_once("]:")?;
        return valid_port(port)
            .then(|| addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6))
            .flatten();
    }
    let (addr, port) = s.rsplit_once(':')?;
    if addr.contains(':') || !valid_port(port) {
        return None;
    }
    addr.parse::<Ipv4Addr>().ok().map(IpAddr::V4)
}

fn valid_port(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 5
        && p.bytes().all(|b| b.is_ascii_digit())
        && p.parse::<u32>().is_ok_and(|n| n <= 65535)
}

/// `host:port` -> `host` when the port is numeric.
fn strip_port(s: &str) -> Option<&str> {
    let (h, p) = s.rsplit_once(':')?;
    valid_port(p).then_some(h)
}

/// Whether an address is worth asking VirusTotal about: not private, loopback, link-local,
/// shared, reserved, multicast, broadcast, benchmarking or documentation space.
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_unspecified()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (18..20).contains(&o[1]))
                || (o[0] == 192 && o[1] == 0 && o[2] == 0))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_global(IpAddr::V4(v4));
            }
            let s = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
                || (s[0] == 0x2001 && s[1] == 0x0db8)
                || (s[0] == 0x0100 && s[1] == 0 && s[2] == 0 && s[3] == 0)
                || (s[0] & 0xe000) != 0x2000)
        }
    }
}

/// Lower-cases a domain and checks it: at least two labels of letters, digits, `-` and `_`
/// (not at a label's edge for `-`), at most 253 bytes, and a last label that is a known public
/// suffix. One trailing dot is dropped. An internationalised name (`bücher.de`) becomes its
/// ASCII form (`xn--bcher-kva.de`), the one DNS and VirusTotal know.
pub fn normalize_domain(s: &str) -> Option<String> {
    let s = s.strip_suffix('.').unwrap_or(s);
    if !s.is_ascii() {
        return normalize_domain(&idn_to_ascii(s)?);
    }
    if s.len() < 3 || s.len() > 253 || !s.contains('.') {
        return None;
    }
    for label in s.split('.') {
        let b = label.as_bytes();
        if b.is_empty() || b.len() > 63 || b[0] == b'-' || b[b.len() - 1] == b'-' {
            return None;
        }
        if !b
            .iter()
            .all(|&c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        {
            return None;
        }
    }
    let tld = s.rsplit('.').next()?;
    if tld.bytes().all(|b| b.is_ascii_digit()) || tld.contains('_') {
        return None;
    }
    let lower = s.to_ascii_lowercase();
    // The name must end in a suffix of the public suffix list: `exe` and `txt` are not
    // (some ccTLDs are listed only below their second level, as `co.za`).
    psl::suffix(lower.as_bytes())?.is_known().then_some(lower)
}

/// The ASCII (punycode) form of an internationalised domain name, by UTS #46 as browsers map
/// hosts (the `url` crate's mapping). Only ASCII dots may separate its labels: mapped to dots,
/// the ideographic full stops of CJK prose would make `…。中国` a name under `.中国`.
fn idn_to_ascii(s: &str) -> Option<String> {
    let ascii = idna::domain_to_ascii_cow(s.as_bytes(), idna::AsciiDenyList::URL).ok()?;
    (ascii.split('.').count() == s.split('.').count()).then(|| ascii.into_owned())
}

/// `[user@]host[:port]` -> the same with the host lower-cased, or `None` when the host is
/// neither a domain nor an IP address.
fn normalize_authority(auth: &str) -> Option<String> {
    let (userinfo, hostport) = match auth.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, auth),
    };
    let (host, port) = if hostport.starts_with('[') {
        let end = hostport.find(']')?;
        let port = hostport[end + 1..].strip_prefix(':');
        (&hostport[..=end], port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        }
    };
    if let Some(p) = port
        && !valid_port(p)
    {
        return None;
    }
    let host = if let Some(ip) = parse_ip(host) {
        match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("[{v6}]"),
        }
    } else {
        normalize_domain(host)?
    };
    let mut out = String::with_capacity(auth.len());
    if let Some(u) = userinfo {
        out.push_str(u);
        out.push('@');
    }
    out.push_str(&host);
    if let Some(p) = port {
        out.push(':');
        out.push_str(p);
    }
    Some(out)
}

/// `scheme` and what follows `://` -> a normalised URL: lower-case scheme and host, no default
/// port, `/` for an empty path, path and query kept as given (only spaces, quotes and angle
/// brackets percent-encoded). So `http://x`, `http://x/` and `http://X:80/` are one indicator, as
/// they are one URL to VirusTotal.
fn normalize_url(scheme: &str, rest: &str) -> Option<String> {
    let scheme = scheme.to_ascii_lowercase();
    let default_port = match scheme.as_str() {
        "http" => ":80",
        "https" => ":443",
        "ftp" => ":21",
        _ => return None,
    };
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, tail) = rest.split_at(cut);
    let mut auth = normalize_authority(auth)?;
    if auth.ends_with(default_port) {
        auth.truncate(auth.len() - default_port.len());
    }
    let slash = if tail.starts_with('/') { "" } else { "/" };
    Some(format!("{scheme}://{auth}{slash}{}", encode_unsafe(tail)))
}

/// Percent-encodes the few characters a URL cannot hold literally but that lists do contain
/// (`<MAC address>` placeholders, stray spaces).
fn encode_unsafe(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.contains([' ', '<', '>', '"']) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            ' ' => out.push_str("%20"),
            '<' => out.push_str("%3C"),
            '>' => out.push_str("%3E"),
            '"' => out.push_str("%22"),
            c => out.push(c),
        }
    }
    out.into()
}

/// Hex runs of exactly 32, 40 or 64 digits bounded by non-hex characters, as hashes
/// (`md5=ABC...`, `sha256:...`). Only for tokens that are not URLs or paths.
pub fn hex_runs(token: &str) -> impl Iterator<Item = FileHash> + '_ {
    let b = token.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if !b[i].is_ascii_hexdigit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
            if matches!(i - start, 32 | 40 | 64) {
                return FileHash::parse(&token[start..i]);
            }
        }
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Classified {
        classify(s, &Options::default())
    }
    fn ind(s: &str) -> Indicator {
        match c(s) {
            Classified::Indicator(i) => i,
            other => panic!("{s}: {other:?}"),
        }
    }

    #[test]
    fn one_url_written_several_ways_is_one_indicator() {
        for url in ["http://Evil.com", "http://evil.com/", "HTTP://evil.com:80/"] {
            assert_eq!(ind(url).value(), "http://evil.com/", "{url}");
        }
        assert_eq!(
            ind("https://evil.com:443?q=1").value(),
            "https://evil.com/?q=1"
        );
        assert_eq!(
            ind("https://evil.com:8443").value(),
            "https://evil.com:8443/"
        );
        assert_eq!(ind("http://evil.com:443/").value(), "http://evil.com:443/");
    }

    #[test]
    fn hashes_are_lowercased_and_typed() {
        assert_eq!(
            ind("513E7DB316B01A34403806EBB4A6F01B16D6714B").type_name(),
            "sha1"
        );
        assert_eq!(
            ind("513E7DB316B01A34403806EBB4A6F01B16D6714B").value(),
            "513e7db316b01a34403806ebb4a6f01b16d6714b"
        );
        assert_eq!(ind(&"a".repeat(32)).type_name(), "md5");
        assert_eq!(ind(&"A".repeat(64)).type_name(), "sha256");
    }

    #[test]
    fn file_names_with_non_suffix_extensions_are_not_domains() {
        for s in [
            "chrome99.exe",
            "file.dll",
            "readme.txt",
            "sign_in.htm",
            "Win32/Pterodo.ADH",
            "rundll32.exe",
        ] {
            assert_eq!(c(s), Classified::NotAnIndicator, "{s}");
        }
    }

    #[test]
    fn domains_need_a_known_suffix_and_are_lowercased() {
        assert_eq!(
            ind("Evil.Example.COM."),
            Indicator::Domain("evil.example.com".into())
        );
        assert_eq!(ind("t.me"), Indicator::Domain("t.me".into()));
        assert_eq!(ind("telegra.ph"), Indicator::Domain("telegra.ph".into()));
        assert_eq!(
            ind("evil.co.uk:8080"),
            Indicator::Domain("evil.co.uk".into())
        );
        assert_eq!(c("localhost"), Classified::NotAnIndicator);
        assert_eq!(c("-bad.com"), Classified::NotAnIndicator);
    }

    #[test]
    fn internationalised_names_take_their_ascii_form() {
        assert_eq!(
            ind("BÜCHER.de"),
            Indicator::Domain("xn--bcher-kva.de".into())
        );
        // A homograph: the second letter is a Cyrillic а.
        assert_eq!(
            ind("p\u{430}ypal.com"),
            Indicator::Domain("xn--pypal-4ve.com".into())
        );
        assert_eq!(
            ind("пример.рф"),
            Indicator::Domain("xn--e1afmkfd.xn--p1ai".into())
        );
        assert_eq!(
            ind("https://Пример.РФ/вход"),
            Indicator::Url("https://xn--e1afmkfd.xn--p1ai/вход".into())
        );
        // Ideographic full stops end sentences; they do not separate labels.
        assert_eq!(c("恶意软件。中国"), Classified::NotAnIndicator);
        assert_eq!(c("bücher.exe"), Classified::NotAnIndicator);
    }

    #[test]
    fn urls_get_lowercase_scheme_and_host_but_keep_their_path() {
        assert_eq!(
            ind("HTTP://Evil.COM/A/B?Q=1"),
            Indicator::Url("http://evil.com/A/B?Q=1".into())
        );
        assert_eq!(
            ind("evil.com/Path"),
            Indicator::Url("http://evil.com/Path".into())
        );
        assert_eq!(
            ind("1.2.3.4:8080/x"),
            Indicator::Url("http://1.2.3.4:8080/x".into())
        );
        assert_eq!(c("file:///etc/passwd"), Classified::NotAnIndicator);
        assert_eq!(
            ind("https://C2.Example.com:8443/<bot id>/gate"),
            Indicator::Domain("c2.example.com".into()),
            "a template's host"
        );
        assert_eq!(c("javascript://x"), Classified::NotAnIndicator);
        assert_eq!(c("http://"), Classified::NotAnIndicator);
    }

    #[test]
    fn ip_with_port_is_the_ip_and_leading_zeros_are_refused() {
        assert_eq!(ind("1.2.3.4:80"), Indicator::Ip("1.2.3.4".parse().unwrap()));
        assert_eq!(c("01.2.3.4"), Classified::NotAnIndicator);
        assert_eq!(c("1.2.3.256"), Classified::NotAnIndicator);
        assert_eq!(ind("2a00:1450::1").type_name(), "ipv6");
        assert_eq!(ind("[2a00:1450::1]:443").type_name(), "ipv6");
    }

    #[test]
    fn network_address_ending_in_zero_is_still_an_ip() {
        assert_eq!(
            ind("168.119.182.0"),
            Indicator::Ip("168.119.182.0".parse().unwrap())
        );
    }

    #[test]
    fn non_routable_addresses_are_skipped_unless_asked_for() {
        for s in [
            "10.0.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.1.1",
            "100.64.0.1",
            "192.0.2.1",
            "224.0.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "2001:db8::1",
        ] {
            assert_eq!(c(s), Classified::Skip(SkipReason::PrivateIp), "{s}");
        }
        let keep = Options {
            skip_private_ips: false,
        };
        assert!(matches!(
            classify("10.0.0.1", &keep),
            Classified::Indicator(_)
        ));
    }

    #[test]
    fn emails_and_cidrs_are_skipped() {
        assert_eq!(
            c("uenwonken@memail.com"),
            Classified::Skip(SkipReason::Email)
        );
        assert_eq!(c("223.166.0.0/15"), Classified::Skip(SkipReason::Cidr));
        assert_eq!(c("2001:4860::/32"), Classified::Skip(SkipReason::Cidr));
    }

    #[test]
    fn hex_runs_are_found_only_when_bounded_and_of_hash_length() {
        let runs: Vec<_> = hex_runs(&format!("md5={}", "ab".repeat(16))).collect();
        assert_eq!(runs.len(), 1);
        assert_eq!(hex_runs(&"a".repeat(33)).count(), 0);
    }
}
