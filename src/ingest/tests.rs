//! One test per quirk listed in `tests/fixtures/ioc-lists/SOURCES.md`, on small excerpts of the
//! real files, plus hostile input.

use super::*;

/// Parses `input` as `name`, returning the summary and `(type, value, line)` of what was found.
fn run(name: &str, input: &[u8]) -> (Summary, Vec<(&'static str, String, usize)>) {
    run_with(name, input, None, &Options::default())
}

fn run_with(
    name: &str,
    input: &[u8],
    format: Option<Format>,
    opts: &Options,
) -> (Summary, Vec<(&'static str, String, usize)>) {
    let mut found = Vec::new();
    let summary = parse_reader(name, input, format, opts, |f| {
        found.push((f.indicator.type_name(), f.indicator.value(), f.line))
    })
    .unwrap();
    (summary, found)
}

fn values(found: &[(&'static str, String, usize)]) -> Vec<String> {
    found.iter().map(|(_, v, _)| v.clone()).collect()
}

const SHA256: &str = "d3b0fbd6ff688034471e4400717742ffa21dcb1c909b0c1a1b2e82b34ae91d03";

// ------------------------------------------------------------------------------ format detection

#[test]
fn formats_are_detected_from_name_and_content() {
    assert_eq!(detect_format("x.csv", b"a,b\n"), Format::Csv);
    assert_eq!(detect_format("x.md", b"# t\n"), Format::Markdown);
    assert_eq!(detect_format("x.adoc", b"= t\n"), Format::AsciiDoc);
    assert_eq!(
        detect_format("x.json", b"{\"type\": \"bundle\", \"objects\": []}"),
        Format::Stix
    );
    assert_eq!(
        detect_format("x.json", b"{\"response\":[{\"Event\":{}}]}"),
        Format::Misp
    );
    assert_eq!(
        detect_format("x.json", b"{\"duvelDetails\": {}}"),
        Format::Json
    );
    assert_eq!(
        detect_format("x.ioc", b"<?xml version=\"1.0\"?><ioc>"),
        Format::OpenIoc
    );
    let loki = format!("# comment\n{SHA256};Some tool; with semicolons\n");
    assert_eq!(
        detect_format("hash-iocs.txt", loki.as_bytes()),
        Format::Loki
    );
    assert_eq!(
        detect_format("c2-iocs.txt", b"evil.com\n176.123.5.126;65\n"),
        Format::Text
    );
    assert_eq!(
        detect_format("noname", b"\xEF\xBB\xBF{\"Event\": {}}"),
        Format::Misp
    );
}

#[test]
fn format_names_round_trip_and_aliases_are_accepted() {
    for f in Format::ALL {
        assert_eq!(f.to_string().parse::<Format>().unwrap(), f);
    }
    assert_eq!("TSV".parse::<Format>().unwrap(), Format::Csv);
    assert_eq!("ioc".parse::<Format>().unwrap(), Format::OpenIoc);
    assert!("yaml".parse::<Format>().is_err());
}

// ----------------------------------------------------------------------------- plain and prose

#[test]
fn bom_and_crlf_are_stripped_and_lines_are_counted_from_one() {
    // Advanced_URL_Filtering_blog_IOCs.txt starts with a BOM and uses CRLF.
    let (_, found) = run("a.txt", b"\xEF\xBB\xBFpaypal-account-mal234[.]com\r\n\r\nPhishing\r\nfbookcom-238137249[.]haroldsworld[.]org\r\n");
    assert_eq!(
        found,
        vec![
            ("domain", "paypal-account-mal234.com".into(), 1),
            ("domain", "fbookcom-238137249.haroldsworld.org".into(), 4)
        ]
    );
}

#[test]
fn half_defanged_host_with_a_path_becomes_an_http_url() {
    let (_, found) = run(
        "a.txt",
        b"facebook[.]com-------mobile---read---new--terms--56165419.peraltek.com/sign_in.htm\r\n",
    );
    assert_eq!(
        values(&found),
        vec![
            "http://facebook.com-------mobile---read---new--terms--56165419.peraltek.com/sign_in.htm"
        ]
    );
}

#[test]
fn question_marks_left_by_lost_characters_stay_in_the_url_path() {
    let (_, found) = run(
        "a.txt",
        b"25697[.]xc[.]wenpie[.]com/down/matlab%202017a%20???????????????@1166_3054.exe\r\n",
    );
    assert_eq!(
        values(&found),
        vec!["http://25697.xc.wenpie.com/down/matlab%202017a%20???????????????@1166_3054.exe"]
    );
}

#[test]
fn hex_runs_inside_urls_are_not_hashes() {
    // 4457_of_4633_scam_js_urls_in_pandb.txt: the query strings hold 32- and 40-hex runs.
    let line = b"www.example-scam.icu/%3fcid=d41d8cd98f00b204e9800998ecf8427e%26sid=da39a3ee5e6b4b0d3255bfef95601890afd80709\n\
govole[.]info/d23c1cda8c7736f9842243148d5eaf5b/getfp.exe\n";
    let (summary, found) = run("scam.txt", line);
    assert!(found.iter().all(|(t, _, _)| *t == "url"), "{found:?}");
    assert_eq!(found.len(), 2);
    assert_eq!(summary.found.get("md5"), None);
}

#[test]
fn sha256_followed_by_nbsp_and_a_windows_path() {
    // BazarCall-Appendix-D.txt: hash, U+00A0, two spaces, path.
    let input = format!(
        "{SHA256}\u{a0}  C:\\Users\\Public\\18482.xoq\nrundll32.exe [filename],DF1\nhxxp://about2[.]xyz/campo/a/a1\n"
    );
    let (summary, found) = run("bazar.txt", input.as_bytes());
    assert_eq!(
        found,
        vec![
            ("sha256", SHA256.into(), 1),
            ("url", "http://about2.xyz/campo/a/a1".into(), 3)
        ]
    );
    assert!(summary.rejected.is_empty(), "{:?}", summary.rejected);
}

#[test]
fn file_names_are_rejected_emails_skipped_and_a_leading_empty_line_counts() {
    // DearCry.txt: starts with an empty line, holds e-mails and `readme.txt`.
    let input =
        format!("\r\n{SHA256}\r\nuenwonken@memail.com\r\nkonedieyp@airmail.cc\r\nreadme.txt\r\n");
    let (summary, found) = run("DearCry.txt", input.as_bytes());
    assert_eq!(found, vec![("sha256", SHA256.into(), 2)]);
    assert_eq!(summary.skipped.get("email"), Some(&2));
    assert_eq!(summary.rejected.len(), 1);
    assert_eq!(summary.rejected[0].line, 5);
    assert_eq!(summary.rejected[0].excerpt, "readme.txt");
}

#[test]
fn mixed_line_endings_and_whitespace_only_lines_in_a_prose_report() {
    // TA551: mixed LF/CRLF, whitespace-only lines, `- <sha256>  <name, with commas>.doc`.
    let input = format!(
        "CHAIN OF EVENTS:\n   \r\n- {SHA256}  documento, 07.09.2020.doc\r\n- 9ygw2[.]com - 185.183.162[.]169\n- 208.67.222[.]222 port 53 - DNS query for myip.opendns.com\r\n- GET /iz5/yaca.php?l=kpt1.cab\n"
    );
    let (_, found) = run("ta551.txt", input.as_bytes());
    assert_eq!(
        found,
        vec![
            ("sha256", SHA256.into(), 3),
            ("domain", "9ygw2.com".into(), 4),
            ("ipv4", "185.183.162.169".into(), 4),
            ("ipv4", "208.67.222.222".into(), 5),
            ("domain", "myip.opendns.com".into(), 5),
        ]
    );
}

#[test]
fn cyrillic_file_names_after_a_hash_are_harmless() {
    let input = format!("{SHA256} - Акт сверки.rar\r\n");
    let (summary, found) = run("redaman.txt", input.as_bytes());
    assert_eq!(values(&found), vec![SHA256]);
    assert!(summary.warnings.is_empty());
}

#[test]
fn partly_defanged_hosts_and_live_schemes_with_defanged_hosts() {
    // Shade: `hxxp://3faddi.000webhostapp[.]com/...`; Skimmer: `http://1051portola[.]com`.
    let (_, found) =
        run("shade.txt", b"hxxp://3faddi.000webhostapp[.]com/x.jpg\r\nhttp://1051portola[.]com\r\nhttp://1051portola[.]com/");
    assert_eq!(
        values(&found),
        vec![
            "http://3faddi.000webhostapp.com/x.jpg",
            "http://1051portola.com/"
        ],
        "with and without its empty path, one URL"
    );
}

#[test]
fn duplicates_are_emitted_once_and_counted() {
    let (summary, found) = run("d.txt", b"evil.com\nEVIL.com\nevil.com.\n");
    assert_eq!(found.len(), 1);
    assert_eq!(summary.duplicates, 2);
}

#[test]
fn prose_punctuation_and_typographic_quotes_are_stripped() {
    let (_, found) = run(
        "p.txt",
        "Contact “evil.com”, then (1.2.3.4). See 'http://x.com/a'.\n".as_bytes(),
    );
    assert_eq!(
        values(&found),
        vec!["evil.com", "1.2.3.4", "http://x.com/a"]
    );
}

#[test]
fn words_cut_by_bytes_that_are_not_utf8_are_rejected_not_split() {
    // Latin-1: ü, é and ï are single bytes that are not UTF-8. Windows-1252 curly quotes
    // (0x93, 0x94) around a URL still separate it from the prose.
    let input = b"b\xfccher.de\nm\xfcnchen-bank.com and http://st\xe9phane.example.org/x\n\
                  caf\xe9.com\nsee \x93http://evil.com/a\x94 now\n";
    let (summary, found) = run("latin1.txt", input);
    assert_eq!(values(&found), vec!["http://evil.com/a"]);
    let rejected: Vec<(usize, &str)> = summary
        .rejected
        .iter()
        .map(|r| (r.line, r.excerpt.as_str()))
        .collect();
    assert_eq!(
        rejected,
        vec![
            (1, "b\u{FFFD}cher.de"),
            (2, "http://st\u{FFFD}phane.example.org/x"),
            (2, "m\u{FFFD}nchen-bank.com"),
            (3, "caf\u{FFFD}.com"),
        ]
    );
    assert!(
        summary.rejected[0].reason.contains("not UTF-8"),
        "{summary:?}"
    );
}

#[test]
fn hex_runs_of_no_hash_length_are_rejected_with_their_line() {
    let cut_short = &SHA256[..63];
    let run_together = format!("{SHA256}ab");
    let input =
        format!("{cut_short}\nsha256,comment\n{run_together},x\nsee {cut_short} here\n{SHA256}\n");
    let (summary, found) = run("hashes.txt", input.as_bytes());
    assert_eq!(values(&found), vec![SHA256]);
    let rejected: Vec<(usize, &str)> = summary
        .rejected
        .iter()
        .map(|r| (r.line, r.reason.as_str()))
        .collect();
    let why = |n| {
        format!(
            "{n} hex digits: not an MD5 (32), SHA-1 (40) or SHA-256 (64); cut short, or run together?"
        )
    };
    assert_eq!(
        rejected,
        vec![
            (1, why(63).as_str()),
            (3, why(66).as_str()),
            (4, why(63).as_str())
        ]
    );
    let csv = format!("sha256,comment\n{cut_short},t\n{SHA256},ok\n");
    let (summary, found) = run("hashes.csv", csv.as_bytes());
    assert_eq!(values(&found), vec![SHA256]);
    assert_eq!(summary.rejected.len(), 1, "{:?}", summary.rejected);
    assert_eq!(summary.rejected[0].line, 2);
}

#[test]
fn zero_width_and_direction_marks_are_removed() {
    let (_, found) = run("z.txt", "ev\u{200b}il[.]com\u{200e}\n".as_bytes());
    assert_eq!(values(&found), vec!["evil.com"]);
}

#[test]
fn private_addresses_are_kept_when_the_option_says_so() {
    let opts = Options {
        skip_private_ips: false,
    };
    let (summary, found) = run_with("p.txt", b"10.1.2.3\n", None, &opts);
    assert_eq!(values(&found), vec!["10.1.2.3"]);
    assert!(summary.skipped.is_empty());
    let (summary, found) = run("p.txt", b"10.1.2.3\n");
    assert!(found.is_empty());
    assert_eq!(summary.skipped.get("private_ip"), Some(&1));
}

/// Unit 42's list of scam URLs: 2,453 of its URLs end in `.` and 7 in `*`, both part of the URL.
#[test]
fn a_url_alone_on_its_line_keeps_its_last_character_and_one_in_a_sentence_does_not() {
    let (_, found) = run(
        "urls.txt",
        b"http://evil-a.com/dl.php?v_id=abc.\nevil-b.com/x?lpp=*-*-*\nhttp://evil-c.com/a?b=c!\n\
          'http://evil-d.com/q'\nSee http://evil-e.com/a. Then http://evil-f.com/b!\n",
    );
    assert_eq!(
        values(&found),
        [
            "http://evil-a.com/dl.php?v_id=abc.",
            "http://evil-b.com/x?lpp=*-*-*",
            "http://evil-c.com/a?b=c!",
            "http://evil-d.com/q",
            "http://evil-e.com/a",
            "http://evil-f.com/b",
        ]
    );
    let (_, found) = run(
        "urls.txt",
        b"hxxp://evil[.]example[.]com/x?a=1,2\nhttp://evil.example.com/y?a=1;b=2|c\n\
          http://evil-g.com/,http://evil-h.com/\n",
    );
    assert_eq!(
        values(&found),
        [
            "http://evil.example.com/x?a=1,2",
            "http://evil.example.com/y?a=1;b=2|c",
            "http://evil-g.com/",
            "http://evil-h.com/",
        ],
        "a line that is one URL is not cut at its commas"
    );
    let (_, found) = run(
        "urls.txt",
        b"http://evil-i.com/a,1.2.3.4\nhttp://evil-j.com,evil-k.com\n- http://evil-l.com/x?a=1,2\n",
    );
    assert_eq!(
        values(&found),
        [
            "http://evil-i.com/a",
            "1.2.3.4",
            "http://evil-j.com/",
            "evil-k.com",
            "http://evil-l.com/x?a=1,2"
        ],
        "before a query, a comma separates two values"
    );
}

/// ESET's Q3 2020 report: `http://barbatulus[.]xyz/<MAC address>/home/log/HjwLX.dot` is a
/// template no request ever used; its host is what to look up.
/// ESET's Turla README wraps a sentence before its link: the dot after the URL ends the
/// sentence. A list's lines stand alone, after a colon, a value with a comment or a heading.
#[test]
fn a_url_that_goes_on_with_the_sentence_before_loses_its_full_stop() {
    let (_, found) = run(
        "turla.adoc",
        b"The white paper about Gazer is available on WeLiveSecurity at\n\
          https://www.welivesecurity.com/wp-content/uploads/2017/08/eset-gazer.pdf.\n\
          \n\
          Its C&C servers are:\n\
          http://evil.com/?v_id=abc.\n\
          http://evil.com/a.\n\
          185.220.101.5 Cobalt Strike team server\n\
          http://evil.com/gate.php?id=1,2\n\
          Payload URLs seen in the campaign\n\
          http://evil.com/?v_id=def.\n",
    );
    assert_eq!(
        values(&found),
        [
            "https://www.welivesecurity.com/wp-content/uploads/2017/08/eset-gazer.pdf",
            "http://evil.com/?v_id=abc.",
            "http://evil.com/a.",
            "185.220.101.5",
            "http://evil.com/gate.php?id=1,2",
            "http://evil.com/?v_id=def."
        ]
    );
}

#[test]
fn a_url_template_gives_its_host() {
    let (_, found) = run(
        "q.adoc",
        b"- `++hxxp://barbatulus[.]xyz/<MAC address>/home/log/HjwLX.dot++`\n\
          - `++hxxp://185.153.196.94:8080/<id>/x++`\n",
    );
    assert_eq!(values(&found), ["barbatulus.xyz", "185.153.196.94"]);
    let (_, found) = run(
        "xss.txt",
        b"`https://www.paypal.com/search?q=<script>alert(1)`\n",
    );
    assert_eq!(
        values(&found),
        ["https://www.paypal.com/search?q=%3Cscript%3Ealert(1)"],
        "a tag in a query is part of a real URL"
    );
    let (_, found) = run(
        "c2.json",
        br#"{"c2": ["http://evil.example.com/<bot id>/gate"]}"#,
    );
    assert_eq!(values(&found), ["evil.example.com"], "JSON values too");
}

#[test]
fn an_ipv6_address_with_its_port_is_the_address() {
    let (_, found) = run(
        "v6.txt",
        b"[2a03:2880:f10e:83:face:b00c:0:25de]:443\nC2 at [2a03:2880:f10e:83:face:b00c:0:25df]:8080.\n\
          (C2: ([2a03:2880:f10e:83:face:b00c:0:25e0]:443))\n",
    );
    assert_eq!(
        values(&found),
        [
            "2a03:2880:f10e:83:face:b00c:0:25de",
            "2a03:2880:f10e:83:face:b00c:0:25df",
            "2a03:2880:f10e:83:face:b00c:0:25e0"
        ]
    );
}

// ---------------------------------------------------------------------------------------- LOKI

#[test]
fn loki_three_field_lines_and_semicolons_in_comments() {
    let input = format!(
        "# Comment with {SHA256}\n\n{};55;Vulnerable Log4j – see; evil.com\nDA39A3EE5E6B4B0D3255BFEF95601890AFD80709;Tool; with ; semicolons\nnot-a-hash;comment\n",
        "d41d8cd98f00b204e9800998ecf8427e"
    );
    let (summary, found) = run("hash-iocs.txt", input.as_bytes());
    assert_eq!(summary.format, Some(Format::Loki));
    assert_eq!(
        found,
        vec![
            ("md5", "d41d8cd98f00b204e9800998ecf8427e".into(), 3),
            ("sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709".into(), 4)
        ]
    );
    assert_eq!(summary.rejected.len(), 1);
    assert_eq!(summary.rejected[0].line, 5);
}

#[test]
fn c2_list_with_ip_score_lines_and_no_final_newline() {
    let (summary, found) = run(
        "c2-iocs.txt",
        b"# Report https://report.example.com/x\nsuroot.com\n176.123.5.126;65\n# Last Line",
    );
    assert_eq!(summary.format, Some(Format::Text));
    assert_eq!(values(&found), vec!["suroot.com", "176.123.5.126"]);
}

// ------------------------------------------------------------------------------------ AsciiDoc

#[test]
fn asciidoc_wrappers_placeholders_ports_and_path_defangs() {
    let input = b"- `++http://barbatulus[.]xyz/<MAC addres>/home/log/HjwLX.dot++`\n\
- `++http://175.197.40[.]61:3445/vLFnUf4++`\n\
- `++http://www.maxscript.cc/update/upscript[.]mse++`\n\
- `++175.197.40[.]61++`\n";
    let (_, found) = run("q.adoc", input);
    assert_eq!(
        values(&found),
        vec![
            "barbatulus.xyz",
            "http://175.197.40.61:3445/vLFnUf4",
            "http://www.maxscript.cc/update/upscript.mse",
            "175.197.40.61"
        ]
    );
}

#[test]
fn nested_defanged_url_stays_in_the_outer_url_path() {
    let (_, found) = run("q.adoc", b"- `++https://dwnfls[.]online/--/hXXps:/www[.]mit.gov.it/mit/sitephp=vclm=3id_cat=150++`\n");
    assert_eq!(
        values(&found),
        vec!["https://dwnfls.online/--/https:/www.mit.gov.it/mit/sitephp=vclm=3id_cat=150"]
    );
}

#[test]
fn asciidoc_link_macros_are_references_not_indicators() {
    let (_, found) = run(
        "q.adoc",
        b"The full report is on https://www.welivesecurity.com[WeLiveSecurity] and\nhttps://www.welivesecurity.com/2019/11/26/x/[_Stantinko\n// https://comment.example.com/x\n",
    );
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn asciidoc_table_cells_with_plus_wrappers_na_and_legit_services() {
    let input = b"|===\n|SHA-1 |Detection |Description\n|`+DF1C0A70E7A02B839AB3AAC3FC410E61EEFB58EB+` |VBS/Pterodo.AEV |PteroX - a downloader.\n\
|`+N/A+` |`+t[.]me+` |N/A |2022-09-12\n|`+N/A+` |`+telegra[.]ph+` |N/A |2023-06-20\n|`+209.97.165[.]187+` |`+N/A+` |DigitalOcean, LLC |2023-08-18\n|===\n";
    let (_, found) = run("g.adoc", input);
    assert_eq!(
        found,
        vec![
            ("sha1", "df1c0a70e7a02b839ab3aac3fc410e61eefb58eb".into(), 3),
            ("domain", "t.me".into(), 4),
            ("domain", "telegra.ph".into(), 5),
            ("ipv4", "209.97.165.187".into(), 6)
        ]
    );
}

#[test]
fn stray_double_backtick_and_escaped_urls_and_carbon_host_port_paths() {
    let input = b" * `hxxp://weandcats.com/wp-content/http-module.php``\n- `\\https://www.youtube.com/watch?v=kS1jXg99WiM`\n- `www.shoppingexpert.it:80:/wp-content/gallery/`\n";
    let (_, found) = run("t.adoc", input);
    assert_eq!(
        values(&found),
        vec![
            "http://weandcats.com/wp-content/http-module.php",
            "https://www.youtube.com/watch?v=kS1jXg99WiM",
            "http://www.shoppingexpert.it:80/wp-content/gallery/"
        ]
    );
}

#[test]
fn defang_typed_after_a_real_dot_and_dash_bullets() {
    let (_, found) = run(
        "s.adoc",
        b"|Linux Trojan Proxy | / | 195.226.218.[.]234:80\n- 3.16.150[.]123\n",
    );
    assert_eq!(values(&found), vec!["195.226.218.234", "3.16.150.123"]);
}

// ------------------------------------------------------------------------------------ Markdown

#[test]
fn markdown_pipe_tables_with_padding_and_network_address() {
    let input = format!(
        "# PTI-249\r\n```\r\n168.119.182.0\r\nfinikomoneyback.ru\r\n```\r\n| MD5 | SHA256 |\r\n| :--- | --- |\r\n| d41d8cd98f00b204e9800998ecf8427e | {SHA256} | \r\n"
    );
    let (_, found) = run("README.md", input.as_bytes());
    assert_eq!(
        found,
        vec![
            ("ipv4", "168.119.182.0".into(), 3),
            ("domain", "finikomoneyback.ru".into(), 4),
            ("md5", "d41d8cd98f00b204e9800998ecf8427e".into(), 8),
            ("sha256", SHA256.into(), 8)
        ]
    );
}

#[test]
fn a_markdown_link_target_is_a_reference_and_a_bracketed_url_loses_its_bracket() {
    let (summary, found) = run(
        "report.md",
        b"Read [our blog](https://blog.example.com/2024/x/) first.\n\
          ![diagram](https://cdn.example.com/i.png)\n\
          The C2 (see:hxxps://evil[.]com/gate) answered.\n",
    );
    assert_eq!(values(&found), ["https://evil.com/gate"]);
    assert_eq!(summary.skipped.get("reference"), Some(&2));
    let (summary, found) = run("report.md", b"[1]: https://blog.example.com/report\n");
    assert!(found.is_empty(), "{found:?}");
    assert_eq!(
        summary.skipped.get("reference"),
        Some(&1),
        "a link definition"
    );
}

// ----------------------------------------------------------------------------------------- CSV

/// abuse.ch's dumps: a banner of comments (with its own URL and domain), the header as the last
/// comment, a link back to abuse.ch and an import hash on every row.
#[test]
fn an_abuse_ch_dump_is_read_by_its_commented_header() {
    let md5 = "8d42c01180be7588a2a68ad96dd0cf85";
    let imphash = "f34d5f2d4577ed6d9ceec516c1f5a744";
    let input = "################################################################\n\
         # abuse.ch URLhaus Database Dump (CSV - recent URLs only)      #\n\
         # Terms Of Use: https://urlhaus.abuse.ch/api/                  #\n\
         #\n\
         # id,dateadded,url,url_status,threat,tags,urlhaus_link,reporter\n\
         \"2820001\",\"2024-04-08 10:36:06\",\"http://115.55.237.101:36853/i\",\"online\",\
         \"malware_download\",\"elf\",\"https://urlhaus.abuse.ch/url/2820001/\",\"geenensp\"\n";
    let (_, found) = run("urlhaus.csv", input.as_bytes());
    assert_eq!(values(&found), ["http://115.55.237.101:36853/i"]);
    let input = format!(
        "# MalwareBazaar\n\
         # \"first_seen_utc\",\"md5_hash\",\"file_name\",\"imphash\"\n\
         \"2024-05-01\",\"{md5}\",\"setup.py\",\"{imphash}\"\n"
    );
    let (_, found) = run("bazaar.csv", input.as_bytes());
    assert_eq!(values(&found), [md5]);
    let (_, found) = run(
        "numbered.csv",
        b"id,domain\n#1,evil-a.com\n# a comment: not a record\n#2,evil-b.com\n",
    );
    assert_eq!(
        values(&found),
        ["evil-a.com", "evil-b.com"],
        "after the header, a line with a record's cells is a record"
    );
}

/// A column is skipped for a descriptive word in its header only when the header does not also
/// name an indicator.
#[test]
fn csv_headers_that_name_an_indicator_are_read_whatever_else_they_say() {
    let input = format!(
        "malware_sha256,Stage2 URL,update_domain,c2_hostname,Domain Name,file_name,user_agent,\
         nameserver\n\
         {SHA256},http://evil-o.com/stage2.bin,upd.evil-p.com,c2.evil-q.com,evil-s.com,setup.py,\
         Mozilla/5.0 (compatible; evil.com),ns1.evil-r.com\n"
    );
    let (_, found) = run("cols.csv", input.as_bytes());
    assert_eq!(
        values(&found),
        [
            SHA256,
            "http://evil-o.com/stage2.bin",
            "upd.evil-p.com",
            "c2.evil-q.com",
            "evil-s.com",
            "ns1.evil-r.com"
        ]
    );
}

/// A hand-edited list's stray quote makes the next record part of a cell: its indicator is not
/// read, and the summary says which lines went together.
#[test]
fn a_stray_quote_that_swallows_a_record_is_named() {
    let (summary, found) = run(
        "stray.csv",
        b"indicator,description\nevil-ab.com,\"C2 server\nevil-ac.com,C2 for \"stage 2\"\nevil-ad.com,C2\n",
    );
    assert_eq!(values(&found), ["evil-ab.com", "evil-ad.com"]);
    assert_eq!(summary.warnings.len(), 1, "{:?}", summary.warnings);
    assert!(
        summary.warnings[0].contains("lines 2-3"),
        "{:?}",
        summary.warnings
    );
}

#[test]
fn packed_hash_cells_work_in_either_order() {
    let md5 = "52992eb3a59d7acb736cf9b607337d62";
    let sha1 = "1c8cfa8f36897b6b1179dc4bce49b0e2f86e1a4e";
    let input = format!(
        "value,entity_type,description\n\"{SHA256},{sha1},{md5}\",file,UTA0137 related indicators\n\"{sha1},{SHA256},{md5}\",file,again\n"
    );
    let (summary, found) = run("iocs.csv", input.as_bytes());
    assert_eq!(values(&found), vec![SHA256, sha1, md5]);
    assert_eq!(summary.duplicates, 3);
}

#[test]
fn a_quoted_csv_cell_may_span_lines_and_its_words_stay_in_their_column() {
    // MISP's CSV export: a comment with line breaks, naming a domain that is not an indicator.
    let input = format!(
        "uuid,event_id,category,type,value,comment,to_ids\n\
         5f1a,1,Network activity,domain,evil.example.net,\"Seen in the phish.\n\
         Not to be confused with good.example.org, the real site\",1\n\
         5f1b,1,Payload delivery,sha256,{SHA256},,1\n"
    );
    let (summary, found) = run("misp.csv", input.as_bytes());
    assert_eq!(
        found,
        vec![
            ("domain", "evil.example.net".to_string(), 2),
            ("sha256", SHA256.to_string(), 4),
        ]
    );
    assert!(summary.rejected.is_empty(), "{:?}", summary.rejected);
}

#[test]
fn a_stray_csv_quote_does_not_swallow_the_rest_of_the_list() {
    // An unbalanced quote on line 2: the record never closes, so after 100 lines (and at the end
    // of the list) every line is read on its own, with its own number.
    let mut input = String::from("sha256,note\n");
    input += &format!("{SHA256},\"unbalanced\n");
    let hashes: Vec<String> = (0..120u32).map(|i| format!("{i:064x}")).collect();
    for h in &hashes {
        input += &format!("{h},fine\n");
    }
    let (_, found) = run("stray.csv", input.as_bytes());
    assert_eq!(found.len(), 121);
    assert_eq!(found[0], ("sha256", SHA256.to_string(), 2));
    assert_eq!(found[120], ("sha256", hashes[119].clone(), 122));

    // Nor does it hold more than a line's worth of bytes: two lines of 600 KiB are read one by
    // one, so the quote on line 4 cannot close a note that would swallow line 3's hash.
    let padding = "x".repeat(600 * 1024);
    let input = format!(
        "sha256,note\n{SHA256},\"{padding}\n{},{padding}\n\",{}\n",
        hashes[0], hashes[1]
    );
    let (_, found) = run("stray.csv", input.as_bytes());
    assert_eq!(
        found,
        vec![
            ("sha256", SHA256.to_string(), 2),
            ("sha256", hashes[0].clone(), 3),
            ("sha256", hashes[1].clone(), 4),
        ]
    );
}

#[test]
fn csv_without_header_reads_every_column() {
    let (_, found) = run("p.csv", b"107.189.27.41,ipaddress,Resolution for known UTA0304 indicator\nafpi-sec.com,hostname,Suspected UTA0304 domain");
    assert_eq!(values(&found), vec!["107.189.27.41", "afpi-sec.com"]);
}

#[test]
fn csv_with_bom_crlf_quoted_commas_and_descriptive_columns() {
    let input = format!(
        "\u{feff}SHA256,File Type,PDB String,C2 Server\r\n{SHA256},\"PE32 executable (GUI) Intel 80386, for MS Windows\",c:\\Users\\Asterix\\x.pdb,frameworksupport[.]net\r\n"
    );
    let (_, found) = run("bitter.csv", input.as_bytes());
    assert_eq!(values(&found), vec![SHA256, "frameworksupport.net"]);
}

#[test]
fn every_dot_defanged_and_file_names_are_not_domains() {
    // macro_loader-iocs.csv: `chrome99[.]exe`, IPs defanged at every dot, a stray `'`, spaces.
    let input = format!(
        "Timestamp,SHA256,Download URL,Dropped Filename,Using BITSAdmin?\r\n2/10/17 3:46,{SHA256},http://www[.]pfirsterer[.]com/chrome/chrome99[.]exe,msword4.exe,FALSE\r\n\
2/10/17 1:11,{SHA256},182[.]255[.]5[.]201/~bemkmund/creditadvice[.]exe,creditadvice.exe,FALSE\r\n\
1/1/17 5:40,{SHA256},https://dl[.]dropboxusercontent[.]com/content_link/63TU/filedl=1',x.exe,TRUE\r\n\
1/1/17 5:41,{SHA256},http://149[.]56[.]65[.]124/~packingm/mr t/Host[.]exe,Host.exe,TRUE\r\n"
    );
    let (summary, found) = run("macro.csv", input.as_bytes());
    assert_eq!(
        values(&found),
        vec![
            SHA256,
            "http://www.pfirsterer.com/chrome/chrome99.exe",
            "http://182.255.5.201/~bemkmund/creditadvice.exe",
            "https://dl.dropboxusercontent.com/content_link/63TU/filedl=1",
            "http://149.56.65.124/~packingm/mr%20t/Host.exe"
        ]
    );
    assert!(!summary.found.contains_key("domain"));
}

#[test]
fn typed_rows_skip_file_names_and_reject_empty_indicator_rows() {
    let input = b"Type,Indicator,Name\r\nFilename,%SystemDrive%\\ProgramData\\update.com,\r\nIP,163[.]172[.]147[.]222:4555,x\r\nURL,not a url at all,\r\n";
    let (summary, found) = run("MuddyWater.csv", input);
    assert_eq!(values(&found), vec!["163.172.147.222"]);
    assert_eq!(summary.rejected.len(), 1);
    assert_eq!(summary.rejected[0].line, 4);
}

#[test]
fn header_cells_with_trailing_spaces_and_empty_ip_cells() {
    let input = b"Associated Malware,DNS Record Type ,FQDN,IP,Target,First Seen,Last Seen\r\nSUNBURST,CNAME,6a57jk2ba1d9keg15cbg.appsync-api.eu-west-1.avsvmcloud[.]com,,freescanonline[.]com,2020-06-13 09:20:41,2020-06-13 09:20:41\r\n,A,zupertech[.]com,167.114.213.199,,2016-08-18 13:06:00,2017-11-12 16:23:00";
    let (_, found) = run("nbi.csv", input);
    assert_eq!(
        values(&found),
        vec![
            "6a57jk2ba1d9keg15cbg.appsync-api.eu-west-1.avsvmcloud.com",
            "freescanonline.com",
            "zupertech.com",
            "167.114.213.199"
        ]
    );
}

#[test]
fn package_names_in_descriptive_columns_are_not_domains() {
    let input = format!(
        "sha256,file_size,first_seen,apk_package_name,apk_app_name\n{SHA256},970799,26/11/2015 16:17,com.android.henbox,备份"
    );
    let (_, found) = run("henbox.csv", input.as_bytes());
    assert_eq!(values(&found), vec![SHA256]);
}

#[test]
fn stray_mac_roman_byte_is_decoded_lossily_with_a_warning_naming_the_line() {
    let (summary, found) = run("domains.csv", b"Domain,Domain Use\r\n012-il.net,Malware\r\nabastostelano.com\xCA,Associated w/ Malware Actor\r\n");
    assert_eq!(values(&found), vec!["012-il.net", "abastostelano.com"]);
    assert_eq!(
        summary.warnings,
        vec!["line 3: invalid UTF-8 decoded lossily".to_string()]
    );
}

// ---------------------------------------------------------------------------------------- JSON

#[test]
fn misp_response_wrapper_composite_types_and_emails() {
    let input = br#"{"response":[{"Event":{"Attribute":[{"type":"filename|sha256","value":"a.exe|D3B0FBD6FF688034471E4400717742FFA21DCB1C909B0C1A1B2E82B34AE91D03"},{"type":"email-src","value":"kevin30@ambcomission.com"},{"type":"url","value":"http://45.124.132.127/x.php"},{"type":"text","value":"evil.com"}]}}]}"#;
    let (summary, found) = run("z.misp.json", input);
    assert_eq!(summary.format, Some(Format::Misp));
    assert_eq!(values(&found), vec![SHA256, "http://45.124.132.127/x.php"]);
    assert_eq!(summary.skipped.get("email"), Some(&1));
}

#[test]
fn misp_event_without_wrapper_and_object_attributes_carry_their_line() {
    let input = b"{\n\"Event\": {\n\"Object\": [\n{\"Attribute\": [\n{\"type\": \"md5\",\n \"value\": \"d41d8cd98f00b204e9800998ecf8427e\"}]}]}}";
    let (_, found) = run("c.json", input);
    assert_eq!(
        found,
        vec![("md5", "d41d8cd98f00b204e9800998ecf8427e".into(), 6)]
    );
}

#[test]
fn misp_with_a_trailing_comma_is_read_by_its_types() {
    // Text extraction would take the `filename` as a domain (`.py` is Paraguay's suffix).
    let input = format!(
        "{{\"Event\": {{\"Attribute\": [\n{{\"type\": \"sha256\", \"value\": \"{SHA256}\"}},\n{{\"type\": \"filename\", \"value\": \"cache.py\"}},\n]}}}}\n"
    );
    let (summary, found) = run("x.misp-event.json", input.as_bytes());
    assert_eq!(summary.format, Some(Format::Misp));
    assert_eq!(found, vec![("sha256", SHA256.to_string(), 2)]);
    assert_eq!(
        summary.warnings,
        vec!["line 3: a trailing comma, which JSON does not allow, was ignored".to_string()]
    );
}

#[test]
fn json_lines_are_read_document_by_document() {
    // The note's link is prose, not under an indicator key: not taken.
    let input = b"{\"url\": \"hxxp://evil[.]com/a\", \"note\": \"see https://blog.example/post\"}\n{\"dest_ip\": \"45.33.1.10\"}\n";
    let (summary, found) = run("events.jsonl", input);
    assert_eq!(summary.format, Some(Format::Json));
    assert_eq!(
        found,
        vec![
            ("url", "http://evil.com/a".to_string(), 1),
            ("ipv4", "45.33.1.10".to_string(), 2)
        ]
    );
    assert!(summary.warnings.is_empty(), "{:?}", summary.warnings);
}

#[test]
fn malformed_misp_falls_back_to_text() {
    let input = format!(
        "{{\"Event\": {{\"Attribute\": [\n{{\"type\": \"sha256\", \"value\": \"{SHA256}\"}}\n{{\"type\": \"url\"}}]}}}}\n"
    );
    let (summary, found) = run("x.misp-event.json", input.as_bytes());
    assert_eq!(summary.format, Some(Format::Text));
    assert_eq!(values(&found), vec![SHA256]);
    assert_eq!(found[0].2, 2);
    assert_eq!(
        summary.warnings,
        vec![
            "malformed MISP JSON (line 3: expected ',' or ']'): fell back to text extraction"
                .to_string()
        ]
    );
}

#[test]
fn generic_json_takes_indicator_keys_only() {
    let input = b"{\n  \"duvelDetails\": {\n    \"token\": \"be17.smoke\",\n    \"dnsServer\": \"176.31.106.50\",\n    \"blockList\": [\"redirect.viglink.com\", \"akz.imgfarm.com\"],\n    \"c2\": [\"evil.com\"]\n  }\n}";
    let (summary, found) = run("blocklist.json", input);
    assert_eq!(summary.format, Some(Format::Json));
    assert_eq!(
        found,
        vec![
            ("ipv4", "176.31.106.50".into(), 4),
            ("domain", "evil.com".into(), 6)
        ]
    );
}

#[test]
fn generic_json_reads_addresses_gates_and_exfiltration_servers() {
    let input = br#"{"exfil": {"address": "exfil.evil.com", "port": 25},
 "backup.address": "backup.evil.com", "gate": "http://gate.evil.com/g.php",
 "mac_address": "00:11:22:33:44:55", "btc_addresses": ["1BoatSLRHtKNngkdXEeobR76b53LETtpyT"]}"#;
    let (summary, found) = run("config.json", input);
    assert_eq!(
        values(&found),
        [
            "exfil.evil.com",
            "backup.evil.com",
            "http://gate.evil.com/g.php"
        ]
    );
    assert!(summary.rejected.is_empty(), "{:?}", summary.rejected);
}

#[test]
fn stix_patterns_hash_key_spellings_or_chains_and_cidrs() {
    let input = br#"{"type": "bundle", "objects": [
 {"type": "indicator", "pattern": "[file:hashes.'SHA-256' = 'D3B0FBD6FF688034471E4400717742FFA21DCB1C909B0C1A1B2E82B34AE91D03']"},
 {"type": "indicator", "pattern": "[file:hashes.md5 = 'd41d8cd98f00b204e9800998ecf8427e' OR file:hashes.SHA256 = 'ab']"},
 {"type": "indicator", "pattern": "[domain-name:value = 'x.com' OR ipv4-addr:value = '223.166.0.0/15' OR ipv4-addr:value = '1.2.3.4']"},
 {"type": "indicator", "pattern": "[url:value = 'outrankdigital.com/qt/btteuaea'] AND [email-addr:value = 'a@b.com']"},
 {"type": "indicator", "pattern": "[x509-certificate:serial_number = '4c:0b:1d']"},
 {"type": "indicator", "pattern": "[network-traffic:dst_ref.value = '5.6.7.8']"},
 {"type": "malware", "name": "evil.com"}
]}"#;
    let (summary, found) = run("b.json", input);
    assert_eq!(summary.format, Some(Format::Stix));
    assert_eq!(
        values(&found),
        vec![
            SHA256,
            "d41d8cd98f00b204e9800998ecf8427e",
            "x.com",
            "1.2.3.4",
            "http://outrankdigital.com/qt/btteuaea",
            "5.6.7.8"
        ]
    );
    assert_eq!(found[0].2, 2);
    assert_eq!(summary.skipped.get("cidr"), Some(&1));
    assert_eq!(summary.skipped.get("email"), Some(&1));
    assert_eq!(
        summary.rejected.len(),
        1,
        "the 2-digit 'SHA256' value: {:?}",
        summary.rejected
    );
}

// ------------------------------------------------------------------------------------- OpenIOC

#[test]
fn openioc_items_with_mixed_line_endings_and_snort_rules() {
    let input = b"<?xml version=\"1.0\" encoding=\"us-ascii\"?>\r\n<!-- licence -->\r\n<ioc>\r\n<IndicatorItem id=\"a\">\r\n<Context document=\"FileItem\" search=\"FileItem/Sha1sum\" type=\"mir\" />\r\n<Content type=\"string\">DA39A3EE5E6B4B0D3255BFEF95601890AFD80709</Content>\r\n</IndicatorItem>\n<IndicatorItem id=\"b\">\n<Context document=\"Snort\" search=\"Snort/Snort\" type=\"mir\" />\n<Content type=\"string\">alert tcp any any -&gt; 1.2.3.4 (msg:\"evil.com\")</Content>\n</IndicatorItem>\n<IndicatorItem id=\"c\">\n<Context document=\"Network\" search=\"Network/DNS\" type=\"mir\" />\n<Content type=\"string\">k2l8z1yeodm.info</Content>\n</IndicatorItem>\n</ioc>";
    let (summary, found) = run("windigo.ioc", input);
    assert_eq!(summary.format, Some(Format::OpenIoc));
    assert_eq!(
        found,
        vec![
            ("sha1", "da39a3ee5e6b4b0d3255bfef95601890afd80709".into(), 6),
            ("domain", "k2l8z1yeodm.info".into(), 14)
        ]
    );
}

// ------------------------------------------------------------------------------------- hostile

#[test]
fn nul_bytes_reject_the_line_and_parsing_goes_on() {
    let (summary, found) = run("n.txt", b"evil.com\nab\0cd.com\nother.com\n");
    assert_eq!(values(&found), vec!["evil.com", "other.com"]);
    assert_eq!(summary.rejected.len(), 1);
    assert_eq!(summary.rejected[0].line, 2);
    assert!(summary.rejected[0].reason.contains("NUL"));
    assert!(summary.rejected[0].excerpt.contains("\\x00"));
}

#[test]
fn a_five_megabyte_line_is_rejected_without_stopping_the_list() {
    let mut input = b"first.com\n".to_vec();
    input.extend(std::iter::repeat_n(b'a', 5 * 1024 * 1024));
    input.extend_from_slice(b"\nlast.com\n");
    let (summary, found) = run("big.txt", &input);
    assert_eq!(
        found,
        vec![
            ("domain", "first.com".into(), 1),
            ("domain", "last.com".into(), 3)
        ]
    );
    assert_eq!(summary.rejected.len(), 1);
    assert_eq!(summary.rejected[0].line, 2);
    assert_eq!(summary.rejected[0].reason, "line too long");
}

#[test]
fn random_binary_garbage_never_panics_in_any_format() {
    // A fixed xorshift stream: reproducible garbage with every byte value.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let garbage: Vec<u8> = (0..200_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // No NUL: a binary file is refused before any parser sees it (below).
            ((x >> 24) as u8).max(1)
        })
        .collect();
    for format in Format::ALL {
        let (summary, _) = run_with("g.bin", &garbage, Some(format), &Options::default());
        assert!(
            !summary.rejected.is_empty() || !summary.warnings.is_empty(),
            "{format}: garbage must be reported"
        );
        assert!(summary.rejected.len() <= sink::MAX_NOTES);
        assert!(
            summary
                .rejected
                .iter()
                .all(|r| r.excerpt.chars().count() <= 80)
        );
    }
}

#[test]
fn binary_and_compressed_files_are_refused_whole() {
    // The strings of an executable hold names that look like domains.
    let mut elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0>\0".to_vec();
    elf.extend_from_slice(b"\njobs.id\nw.pid\n");
    let gzip = b"\x1f\x8b\x08\x08iocs.txt evil.com".to_vec();
    for (file, says) in [
        (elf, "a binary file"),
        (gzip, "a gzip file (unpack it first)"),
    ] {
        let err = parse_reader("x", &file[..], None, &Options::default(), |_| {
            panic!("nothing is taken from a binary file")
        })
        .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidData);
        assert!(err.to_string().starts_with(says), "{err}");
    }
}

#[test]
fn utf16_lists_are_read_in_either_byte_order() {
    let text = "# from PowerShell\r\nevil.com\r\n44d88612fea8a8f36de82e1278abb02f\r\n";
    let le: Vec<u8> = [0xFF, 0xFE]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_le_bytes))
        .collect();
    let be: Vec<u8> = [0xFE, 0xFF]
        .into_iter()
        .chain(text.encode_utf16().flat_map(u16::to_be_bytes))
        .collect();
    for bytes in [le, be] {
        let (summary, found) = run("iocs.txt", &bytes);
        assert_eq!(
            values(&found),
            ["evil.com", "44d88612fea8a8f36de82e1278abb02f"]
        );
        assert!(summary.rejected.is_empty(), "{:?}", summary.rejected);
        assert_eq!(found[1].2, 3, "lines are counted as in the file");
    }
    // A UTF-8 list whose first bytes are damaged into a byte order mark is still UTF-8.
    let (_, found) = run("damaged.txt", b"\xff\xfe\xc3\x28 broken\nevil.com\n");
    assert_eq!(values(&found), ["evil.com"]);
}

#[test]
fn invalid_utf8_of_every_kind_is_decoded_lossily_and_named() {
    let cases: [&[u8]; 7] = [
        b"\x80evil.com",             // lone continuation byte
        b"evil.com\xC3",             // truncated 2-byte sequence
        b"\xE2\x82evil.com",         // truncated 3-byte sequence
        b"\xF0\x9F\x98evil.com",     // truncated 4-byte sequence
        b"\xC0\xAFevil.com",         // overlong encoding
        b"\xED\xA0\x80evil.com",     // UTF-16 surrogate
        b"\xF5\x80\x80\x80evil.com", // beyond U+10FFFF
    ];
    for case in cases {
        let mut input = b"ok.com\n".to_vec();
        input.extend_from_slice(case);
        let (summary, found) = run("u.txt", &input);
        assert_eq!(values(&found), vec!["ok.com", "evil.com"], "{case:?}");
        assert_eq!(
            summary.warnings,
            vec!["line 2: invalid UTF-8 decoded lossily".to_string()],
            "{case:?}"
        );
    }
}

#[test]
fn lossy_lines_are_named_a_few_times_then_counted() {
    // A binary file read as text: 81 lines of invalid UTF-8 once gave 81 warnings.
    let input = b"\xFFnot text\n".repeat(81);
    let (summary, _) = run("rand.bin", &input);
    let named: Vec<String> = (1..=5)
        .map(|n| format!("line {n}: invalid UTF-8 decoded lossily"))
        .collect();
    assert_eq!(summary.warnings[..5], named[..]);
    assert_eq!(
        summary.warnings[5..],
        ["76 more lines with invalid UTF-8 decoded lossily".to_string()]
    );
}

#[test]
fn oversized_json_nesting_is_a_clear_fallback_not_a_stack_overflow() {
    let input = "[".repeat(100_000);
    let (summary, found) = run("deep.json", input.as_bytes());
    assert!(found.is_empty());
    assert!(
        summary
            .warnings
            .iter()
            .any(|w| w.contains("malformed JSON")),
        "{:?}",
        summary.warnings
    );
}

#[test]
fn a_large_mixed_list_parses_completely() {
    // Speed is measured by the benchmarks (BENCHMARKS.md), not here; this checks that a big
    // mixed list streams through with every kind found. `INGEST_PERF_LINES` sets the size.
    let lines = std::env::var("INGEST_PERF_LINES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(if cfg!(debug_assertions) {
            100_000
        } else {
            1_000_000
        });
    let mut input = String::with_capacity(lines * 60);
    for i in 0..lines {
        match i % 5 {
            0 => input.push_str(&format!("{:064x}\n", i)),
            1 => input.push_str(&format!("hxxp://host{i}[.]example[.]com/path/{i}.php\n")),
            2 => input.push_str(&format!("sub{i}.evil-domain.net\n")),
            3 => input.push_str(&format!(
                "{}.{}.{}.{}\n",
                1 + i % 200,
                i % 250,
                (i / 250) % 250,
                i % 199
            )),
            _ => input.push_str(&format!("some prose about sample {i}, see report.\n")),
        }
    }
    let (summary, _) = run("big.txt", input.as_bytes());
    let with_residue = |r: usize| (lines + 4 - r) / 5;
    assert_eq!(summary.found.get("sha256"), Some(&with_residue(0)));
    assert_eq!(summary.found.get("url"), Some(&with_residue(1)));
    assert_eq!(summary.found.get("domain"), Some(&with_residue(2)));
    // Some generated addresses are private (10/8, 127/8, ...) and skipped.
    let ips = summary.found.get("ipv4").copied().unwrap_or(0);
    assert!(ips > with_residue(3) / 2 && ips <= with_residue(3), "{ips}");
}
