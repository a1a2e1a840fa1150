//! Properties of refanging and classification over generated URLs, domains and IP addresses.

use proptest::prelude::*;
use vtriage::ingest::{Options, classify, defang, refang};

/// A DNS label: starts and ends alphanumeric, hyphens inside.
fn label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?"
}

fn domain() -> impl Strategy<Value = String> {
    let tld = prop::sample::select(vec![
        "com", "net", "org", "ru", "co.uk", "info", "xyz", "de", "io",
    ]);
    (prop::collection::vec(label(), 1..4), tld)
        .prop_map(|(labels, tld)| format!("{}.{tld}", labels.join(".")))
}

fn ipv4() -> impl Strategy<Value = String> {
    any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]))
}

fn ipv6() -> impl Strategy<Value = String> {
    any::<[u16; 8]>().prop_map(|s| std::net::Ipv6Addr::from(s).to_string())
}

fn url() -> impl Strategy<Value = String> {
    let scheme = prop::sample::select(vec!["http", "https", "HTTP", "Https", "ftp"]);
    let host = prop_oneof![domain(), ipv4()];
    let port = prop::option::of(1u16..);
    let path = "(/[A-Za-z0-9_.~%-]{0,12}){0,4}(\\?[a-z0-9=&]{0,12})?";
    (scheme, host, port, path).prop_map(|(s, h, p, path)| match p {
        Some(p) => format!("{s}://{h}:{p}{path}"),
        None => format!("{s}://{h}{path}"),
    })
}

fn any_indicator() -> impl Strategy<Value = String> {
    prop_oneof![url(), domain(), ipv4(), ipv6()]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn refang_undoes_defang(x in any_indicator()) {
        prop_assert_eq!(refang(&defang(&x)), x);
    }

    #[test]
    fn defanged_indicators_classify_like_the_originals(x in any_indicator()) {
        for opts in [Options::default(), Options { skip_private_ips: false }] {
            prop_assert_eq!(classify(&refang(&defang(&x)), &opts), classify(&x, &opts));
        }
    }

    #[test]
    fn defanged_text_has_no_live_dots_or_scheme(x in url()) {
        let d = defang(&x);
        prop_assert!(!d.contains('.') || d.matches('.').count() == d.matches("[.]").count());
        prop_assert!(!d.to_ascii_lowercase().starts_with("http"));
    }

    #[test]
    fn generated_urls_and_domains_are_indicators(x in prop_oneof![url(), domain()]) {
        let c = classify(&x, &Options::default());
        prop_assert!(matches!(c, vtriage::ingest::Classified::Indicator(_)), "{x}: {c:?}");
    }

    #[test]
    fn classify_never_panics_on_arbitrary_text(s in "\\PC{0,64}") {
        let _ = classify(&s, &Options::default());
        let _ = refang(&s);
    }
}
