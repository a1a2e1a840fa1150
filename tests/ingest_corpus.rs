//! Every real IOC list of `tests/fixtures/ioc-lists/` parses, and yields the indicators a
//! careful reader finds in it.
//!
//! The expected counts were derived by hand, before running the parser on the file: reading the
//! file, `grep`/`cut`/`sort -u` over the relevant columns or lines (after replacing `[.]` with
//! `.` and `hxxp` with `http`), Python's `csv` module to split CSV columns, and Python's `json`
//! module to list MISP attribute types and STIX pattern terms. Counts are of UNIQUE normalised
//! values (hashes lower-cased, hosts lower-cased), as the parser deduplicates within a list.
//! The comment above each expectation says how it was derived and where SOURCES.md's rough
//! counts differ.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vtriage::ingest::{Format, Options, Summary, parse_path};

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ioc-lists")
        .join(rel)
}

/// Expected unique indicators by type for one file; zero counts are left out.
struct Expect {
    file: &'static str,
    md5: usize,
    sha1: usize,
    sha256: usize,
    url: usize,
    domain: usize,
    ipv4: usize,
    /// Deliberate skips (occurrences) by reason.
    skipped: &'static [(&'static str, usize)],
}

const NONE: Expect = Expect {
    file: "",
    md5: 0,
    sha1: 0,
    sha256: 0,
    url: 0,
    domain: 0,
    ipv4: 0,
    skipped: &[],
};

fn parse(rel: &str) -> (Summary, Vec<vtriage::ingest::Found>) {
    let mut found = Vec::new();
    let summary = parse_path(&fixture(rel), None, &Options::default(), |f| found.push(f))
        .unwrap_or_else(|e| panic!("{rel}: {e}"));
    (summary, found)
}

fn check(e: &Expect) {
    let (summary, found) = parse(e.file);
    let mut want: BTreeMap<&str, usize> = BTreeMap::new();
    for (k, v) in [
        ("md5", e.md5),
        ("sha1", e.sha1),
        ("sha256", e.sha256),
        ("url", e.url),
        ("domain", e.domain),
        ("ipv4", e.ipv4),
    ] {
        if v > 0 {
            want.insert(k, v);
        }
    }
    let got: BTreeMap<&str, usize> = summary.found.iter().map(|(k, v)| (*k, *v)).collect();
    assert_eq!(
        got, want,
        "{}: found by type (rejected: {:?})",
        e.file, summary.rejected
    );
    assert_eq!(
        found.len(),
        want.values().sum::<usize>(),
        "{}: one emit per unique indicator",
        e.file
    );
    let skipped: BTreeMap<String, usize> =
        e.skipped.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    assert_eq!(summary.skipped, skipped, "{}: skipped", e.file);
    assert!(
        found.iter().all(|f| f.line >= 1),
        "{}: every indicator has a line",
        e.file
    );
}

// ------------------------------------------------------------------------------- neo23x0 (LOKI)

#[test]
fn loki_hash_list_takes_only_the_first_field() {
    // grep -vE '^\s*(#|$)' | cut -d';' -f1 | tr A-F a-f | sort -u, then lengths:
    // 986 x 32, 893 x 40, 1174 x 64 (SOURCES says ~989/1175: it also counted hex runs in
    // comments and duplicates).
    check(&Expect {
        file: "neo23x0-signature-base/hash-iocs.txt",
        md5: 986,
        sha1: 893,
        sha256: 1174,
        ..NONE
    });
}

#[test]
fn c2_list_with_comment_headers_and_ip_score_lines() {
    // Non-comment lines, first `;` field, sort -u: 118 dotted quads and 1 655 names, every
    // last label a known suffix (com 1179, org 135, ...). SOURCES' ~1 715/~129 count repeats.
    check(&Expect {
        file: "neo23x0-signature-base/c2-iocs.txt",
        domain: 1655,
        ipv4: 118,
        ..NONE
    });
}

// --------------------------------------------------------------------------------------- ESET

#[test]
fn eset_bare_hash_lists() {
    // wc -l, every line one hex run of the stated length, sort -u: all unique.
    check(&Expect {
        file: "eset-malware-ioc/nukesped_lazarus-samples.sha256",
        sha256: 555,
        ..NONE
    });
    check(&Expect {
        file: "eset-malware-ioc/stantinko_cryptominer-samples.sha1",
        sha1: 1053,
        ..NONE
    });
    // UPPER-case MD5s, 122 lines, all unique once lower-cased.
    check(&Expect {
        file: "eset-malware-ioc/evilnum-samples.md5",
        md5: 122,
        ..NONE
    });
}

#[test]
fn eset_quarterly_asciidoc() {
    // 17 SHA-1 (listing blocks and a table). URLs, read line by line: the report PDF bullet (1),
    // virginiana/ridibunda/barbatulus/arvensis (4, less the two templates with `<MAC address>`
    // in the path, which give their hosts as domains instead), the three nested-hXXps URLs (3),
    // 185.153.196.94/UpdateServices/CF (1), five 175.197.40.61:3445 lines of which two are
    // identical (4), maxscript upscript.mse (1), 31.7.62.103/tleaw.php (1) = 13. The
    // `https://www.welivesecurity.com[WeLiveSecurity]` link macro is a reference, not taken.
    // Domains: newshealthsport.com, utdtimes.com, www.maxscript.cc and the two templates' hosts
    // = 5. IPv4 on its own: 175.197.40.61 only (SOURCES' 3 counts IPs inside URLs; its 16 URLs
    // counts the duplicate).
    check(&Expect {
        file: "eset-malware-ioc/quarterly_reports_2020_Q3-README.adoc",
        sha1: 17,
        url: 13,
        domain: 5,
        ipv4: 1,
        skipped: &[("reference", 1)],
        ..NONE
    });
}

#[test]
fn eset_gamaredon_asciidoc_tables() {
    // 73 unique 40-hex runs. After `[.]` -> `.`: 28 unique dotted quads in `+...+` cells, 676
    // unique names in cells and the bare domain list (TLDs: space 304, website 78, org 70, net
    // 53, site 50, ru 42, xyz 26, fun 19, com 9, biz 9, host 8, ch 4, ph/me/io/info 1 each; t.me
    // and telegra.ph included on purpose). Three prose links to the white paper and blog posts
    // are bare URLs, so taken. SOURCES' "~600 domains" is a rough figure.
    check(&Expect {
        file: "eset-malware-ioc/gamaredon-README.adoc",
        sha1: 73,
        url: 3,
        domain: 676,
        ipv4: 28,
        ..NONE
    });
}

#[test]
fn eset_turla_asciidoc() {
    // 128 unique SHA-1 (132 occurrences). URLs: 52 unique `https?://` strings after refanging
    // (prose report links, hxxp bullets, the `?q=<base64-encoded data>` one once), without the
    // `https://www.misp-project.org[MISP]` link macro, plus 7 Carbon `host:80:/path` entries =
    // 59. Domains: 47 bullet/table names plus `ASP.NET` in a table description (a real domain
    // in prose) = 48. IPv4 on their own: 12 LunarWeb table cells (IPs inside URLs are not
    // counted, hence SOURCES' 17). `grep -c '@'`: 22 table rows name a certificate subject
    // `admin@solidloop.org` / `admin@ultimatecomsup.biz`: e-mails, skipped (missed at first,
    // found when the parser reported them; each row was checked).
    check(&Expect {
        file: "eset-malware-ioc/turla-README.adoc",
        sha1: 128,
        url: 59,
        domain: 48,
        ipv4: 12,
        // Six AsciiDoc link macros (`https://...[WeLiveSecurity]`): references.
        skipped: &[("email", 22), ("reference", 6)],
        ..NONE
    });
}

#[test]
fn eset_stantinko_asciidoc() {
    // 127 unique UPPER-case SHA-1. URLs: 205 unique after refanging (github/bitly hxxps, the
    // `\https://www.youtube.com/...` escaped ones, the dated hxxp list, report links; minus
    // `hxxp://localhost/...` which has no real host and the link macros). Domains: 42 (table
    // cells plus forum.calorizator.ru in the embedded JavaScript). IPv4: 97 unique, including
    // `195.226.218.[.]234:80` (a defang typed after a real dot) and ports stripped. The JS also
    // holds 10.150.0.104: skipped as private.
    check(&Expect {
        file: "eset-malware-ioc/stantinko-README.adoc",
        sha1: 127,
        url: 205,
        domain: 42,
        ipv4: 97,
        skipped: &[("private_ip", 1), ("reference", 2)],
        ..NONE
    });
}

#[test]
fn eset_misp_events() {
    // python json: Attribute types of the one event. Zebrocy: filename|md5/sha1/sha256 x5 each,
    // url x2 (one is the report link, filed under External analysis: a reference, skipped),
    // 4 email-src + 7 email-dst skipped.
    check(&Expect {
        file: "eset-malware-ioc/sednit-2018-11-20_Zebrocy.misp.json",
        md5: 5,
        sha1: 5,
        sha256: 5,
        url: 1,
        skipped: &[("email", 11), ("reference", 1)],
        ..NONE
    });
    // endor: 11 sha1, 1 email-dst, the rest text/filename.
    check(&Expect {
        file: "eset-malware-ioc/sshdoor-endor.misp.json",
        sha1: 11,
        skipped: &[("email", 1)],
        ..NONE
    });
    // cloudmensis: only Object attributes, 3 files x (md5, sha1, sha256).
    check(&Expect {
        file: "eset-malware-ioc/cloudmensis.misp.json",
        md5: 3,
        sha1: 3,
        sha256: 3,
        ..NONE
    });
}

#[test]
fn eset_misp_with_a_trailing_comma_is_read_as_misp() {
    // The export has one trailing comma (`},` on line 37,373, then `]`). Read by its structure,
    // it gives its typed attributes only: 119 of each hash type, the 112 `url` attributes and the
    // 2 `domain` ones. Text extraction took 42 reference links of the galaxy descriptions
    // (attack.mitre.org, docs.microsoft.com...) and 4 `filename` attributes as domains
    // (`cache.py`, `coloramma-4.5-py3-none-any.zip`...) besides: 46 lookups for nothing.
    let rel = "eset-malware-ioc/pypi_backdoor-malicious_pypi_packages.misp-event.MALFORMED.json";
    check(&Expect {
        file: rel,
        md5: 119,
        sha1: 119,
        sha256: 119,
        url: 112,
        domain: 2,
        ..NONE
    });
    let (summary, found) = parse(rel);
    assert_eq!(summary.format, Some(Format::Misp));
    assert_eq!(
        summary.warnings,
        vec!["line 37373: a trailing comma, which JSON does not allow, was ignored".to_string()]
    );
    let pythonhosted = found
        .iter()
        .filter(|f| {
            f.indicator
                .value()
                .starts_with("https://files.pythonhosted.org/")
        })
        .count();
    assert_eq!(pythonhosted, 112);
    let mut domains: Vec<String> = found
        .iter()
        .filter(|f| f.indicator.type_name() == "domain")
        .map(|f| f.indicator.value())
        .collect();
    domains.sort();
    assert_eq!(
        domains,
        ["blazywound.ignorelist.com", "files.pythonhosted.org"]
    );
}

#[test]
fn eset_generic_json_takes_only_indicator_keys() {
    // `dnsServer` 176.31.106.50 only; the 503 `blockList` ad domains and the `token` are not
    // indicators.
    check(&Expect {
        file: "eset-malware-ioc/dnsbirthday-rqz-dnsduvel_blocklist.json",
        ipv4: 1,
        ..NONE
    });
}

#[test]
fn eset_openioc() {
    // Python re over IndicatorItems: 68 FileItem/Sha1sum (unique), Network/DNS 61 = 58 names
    // + 3 IPs, Network/URI 58 = the same names again; Snort and Network/String not taken.
    check(&Expect {
        file: "eset-malware-ioc/windigo.openioc.xml",
        sha1: 68,
        domain: 58,
        ipv4: 3,
        ..NONE
    });
}

// ------------------------------------------------------------------------------------ Unit 42

#[test]
fn unit42_advanced_url_filtering_prose_list() {
    // Read line by line: 4 bare SHA-256; 3 host-only lines (paypal-account-mal234.com,
    // fbookcom-...haroldsworld.org, coursera-...pageinternetinfo.pw); 38 lines with a path
    // (37 without spaces minus `C2/Sality-A`, plus the style.css line ending in a space), among
    // them `matlab%202017a%20???...@1166_3054.exe` and the hex runs inside paths, which are not
    // hashes. SOURCES' "27 domains, 8 URLs" counted hosts of scheme-less URLs as domains.
    check(&Expect {
        file: "pan-unit42-iocs/Advanced_URL_Filtering_blog_IOCs.txt",
        sha256: 4,
        url: 38,
        domain: 3,
        ..NONE
    });
}

#[test]
fn unit42_plain_lists() {
    // 108 lines, all `http://host[.]tld...`, unique after lower-casing hosts.
    check(&Expect {
        file: "pan-unit42-iocs/Skimmer_IOC.txt",
        url: 108,
        ..NONE
    });
    // 203 hxxp lines, unique.
    check(&Expect {
        file: "pan-unit42-iocs/Shade-ransomware-URLs-2019.txt",
        url: 203,
        ..NONE
    });
    // 11 SHA-256 before NBSP-separated paths; 12 hxxp URLs (SOURCES says 11: the heading does,
    // but the list has 12 lines).
    check(&Expect {
        file: "pan-unit42-iocs/BazarCall-Appendix-D.txt",
        sha256: 11,
        url: 12,
        ..NONE
    });
    // 62 unique SHA-256 (93 occurrences across the three parts).
    check(&Expect {
        file: "pan-unit42-iocs/Redaman-2018-11-file-hashes.txt",
        sha256: 62,
        ..NONE
    });
    // 3 SHA-256 and 2 e-mail addresses (skipped); readme.txt is rejected.
    check(&Expect {
        file: "pan-unit42-iocs/DearCry.txt",
        sha256: 3,
        skipped: &[("email", 2)],
        ..NONE
    });
}

#[test]
fn unit42_ta551_prose_report() {
    // 64 unique SHA-256. IPv4: 8 in the domain/IP list + 6 in the traffic list = 14. Domains:
    // 8 + 7 (traffic, incl. myip.opendns.com) + 9 (DNS queries) + 2 (tenutasanpaolo, www.) =
    // 26. File names end in .doc/.lnk/.ps1: none is a suffix.
    check(&Expect {
        file: "pan-unit42-iocs/TA551-2020-07-09-IOCs-for-Ursnif.txt",
        sha256: 64,
        domain: 26,
        ipv4: 14,
        ..NONE
    });
}

#[test]
fn unit42_scam_urls_are_urls_and_hosts_not_hashes() {
    // 4 457 lines: 3 132 with a path (URLs; their 32/40-hex query runs are not hashes) and
    // 1 325 bare host names (domains), all unique. SOURCES calls them all URLs.
    check(&Expect {
        file: "pan-unit42-iocs/4457_of_4633_scam_js_urls_in_pandb.txt",
        url: 3132,
        domain: 1325,
        ..NONE
    });
}

#[test]
fn unit42_csv_files() {
    // csv module: 85 rows x (SHA256, SHA1, MD5), all unique. C2 column: 36 distinct cells minus
    // `Unknown`, `[CORRUPT]` and 192.168.137.102 (private, 3 rows), one cell packing two names
    // of which one is new = 33 domains. PDB paths and file types are descriptive columns.
    check(&Expect {
        file: "pan-unit42-iocs/bitter-iocs.csv",
        md5: 85,
        sha1: 85,
        sha256: 85,
        domain: 33,
        skipped: &[("private_ip", 3)],
        ..NONE
    });
    // sha256 column: 215 unique; package names (com.android.henbox) are not read.
    check(&Expect {
        file: "pan-unit42-iocs/henbox_samples.csv",
        sha256: 215,
        ..NONE
    });
    // 654 SHA-256; Download URL column: 533 unique after refanging, adding http:// and
    // stripping one stray `'` (7 URLs hold a space, kept as %20).
    check(&Expect {
        file: "pan-unit42-iocs/macro_loader-iocs.csv",
        sha256: 654,
        url: 533,
        ..NONE
    });
    // Typed rows: MD5 63, SHA256 155 unique (SOURCES' 157/163 count rows), URL 104 distinct
    // cells -> 99 URLs after normalising (hxxp/http twins) + 3 host-only rows (domains), IP 15
    // of which 192.168.1.104:54863 is private. Filename rows skipped.
    check(&Expect {
        file: "pan-unit42-iocs/MuddyWater.csv",
        md5: 63,
        sha256: 155,
        url: 99,
        domain: 3,
        ipv4: 14,
        skipped: &[("private_ip", 1)],
        ..NONE
    });
}

#[test]
fn unit42_invalid_utf8_csv_is_decoded_lossily_line_by_line() {
    // First column without the 0xCA byte, lower-cased, sort -u: 18 596 values, 6 of them IPv4.
    let e = Expect {
        file: "pan-unit42-iocs/silverterrier-domains18.INVALID-UTF8.csv",
        domain: 18590,
        ipv4: 6,
        ..NONE
    };
    check(&e);
    let (summary, _) = parse(e.file);
    // `LC_ALL=C grep -c $'\xca'`: 79 lines; the first 5 are named, the rest counted.
    let lossy: Vec<_> = summary
        .warnings
        .iter()
        .filter(|w| w.contains("invalid UTF-8 decoded lossily"))
        .collect();
    assert_eq!(lossy.len(), 6);
    assert_eq!(lossy[0], "line 182: invalid UTF-8 decoded lossily");
    assert_eq!(lossy[5], "74 more lines with invalid UTF-8 decoded lossily");
}

#[test]
fn unit42_stix_bundles() {
    // python json, indicator patterns: 8 url + 4 domain-name terms, all unique.
    check(&Expect {
        file: "pan-unit42-iocs/stix2.0-2025-04-04-KongTuke-activity.json",
        url: 8,
        domain: 4,
        ..NONE
    });
    // 17 SHA-256 terms (16 unique), 12 IPv4, 8 url terms (7 unique), 1 email (skipped).
    check(&Expect {
        file: "pan-unit42-iocs/stix2.0-qakbotmalware.json",
        sha256: 16,
        url: 7,
        ipv4: 12,
        skipped: &[("email", 1)],
        ..NONE
    });
}

#[test]
fn oasis_stix21_bundles() {
    // 3 file:hashes.md5, 3 domain-name, 4 ipv4-addr terms that are all /15 CIDRs (skipped);
    // x509 terms are not indicators.
    check(&Expect {
        file: "oasis-cti-documentation/stix2.1-apt1.json",
        md5: 3,
        domain: 3,
        skipped: &[("cidr", 4)],
        ..NONE
    });
    // OR chains: 40 ipv4 terms (18 unique), 25 domain-name terms of which one is
    // "domain autuo.xicp.net" (a space inside: rejected) = 24.
    let e = Expect {
        file: "oasis-cti-documentation/stix2.1-poisonivy.json",
        domain: 24,
        ipv4: 18,
        ..NONE
    };
    check(&e);
    let (summary, _) = parse(e.file);
    assert_eq!(summary.rejected.len(), 1, "{:?}", summary.rejected);
    assert!(summary.rejected[0].excerpt.contains("autuo.xicp.net"));
}

// ----------------------------------------------------------------------------------- Volexity

#[test]
fn volexity_csv_files() {
    // csv module, splitting the packed value cells on `,`: files x 3 hashes, hostname and
    // ipaddress rows.
    check(&Expect {
        file: "volexity-threat-intel/2024-06-13_DISGOMOJI-iocs.csv",
        md5: 45,
        sha1: 45,
        sha256: 45,
        domain: 103,
        ipv4: 5,
        ..NONE
    });
    // Packed in the order sha1,sha256,md5; header column `type`.
    check(&Expect {
        file: "volexity-threat-intel/2021-12-06_XEGroup-indicators.csv",
        md5: 52,
        sha1: 52,
        sha256: 52,
        domain: 84,
        ipv4: 8,
        ..NONE
    });
    // No header row.
    check(&Expect {
        file: "volexity-threat-intel/2025-02-13_Device_Code_Phishing-iocs.csv",
        domain: 8,
        ipv4: 4,
        ..NONE
    });
    check(&Expect {
        file: "volexity-threat-intel/2023-09-22_EvilBamboo-iocs.csv",
        sha256: 212,
        domain: 24,
        ipv4: 7,
        ..NONE
    });
    check(&Expect {
        file: "volexity-threat-intel/2024-01-10_Ivanti_Connect_Secure-iocs.csv",
        domain: 3,
        ipv4: 13,
        ..NONE
    });
}

// ----------------------------------------------------------------------------------- Mandiant

#[test]
fn mandiant_csv_files() {
    // 11 rows x 3 hash columns; the Notes column mentions a hash but is descriptive.
    check(&Expect {
        file: "mandiant-sunburst_countermeasures/Indicator_Release_Hashes.csv",
        md5: 11,
        sha1: 11,
        sha256: 11,
        ..NONE
    });
    // FQDN column 15 unique (Target values are among them), IP column 10.
    check(&Expect {
        file: "mandiant-sunburst_countermeasures/Indicator_Release_NBIs.csv",
        domain: 15,
        ipv4: 10,
        ..NONE
    });
}

// ------------------------------------------------------------------------------------ PRODAFT

#[test]
fn prodaft_markdown() {
    // 154 unique runs of each hash length in the pipe tables; 36 IPv4 lines (168.119.182.0
    // included) and 6 domains in fenced blocks.
    check(&Expect {
        file: "prodaft-malware-ioc/PTI-249-README.md",
        md5: 154,
        sha1: 154,
        sha256: 154,
        domain: 6,
        ipv4: 36,
        ..NONE
    });
}

#[test]
fn every_fixture_parses_and_every_data_file_is_covered() {
    let root = fixture("");
    let mut files = Vec::new();
    for dir in std::fs::read_dir(&root).unwrap() {
        let dir = dir.unwrap().path();
        if dir.is_dir() {
            for f in std::fs::read_dir(&dir).unwrap() {
                files.push(f.unwrap().path());
            }
        }
    }
    assert_eq!(files.len(), 40);
    for f in files {
        let summary = parse_path(&f, None, &Options::default(), |_| {}).unwrap();
        assert!(summary.format.is_some());
        assert!(summary.total_found() > 0, "{}", f.display());
    }
}
