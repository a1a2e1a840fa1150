//! Refanging (undoing the ways analysts make indicators unclickable) and defanging.

/// Undoes every common defang style in `s`: `hxxp`/`hXXps` schemes (also when the `:` is
/// bracketed), `[.]`, `(.)`, `{.}`, `[dot]`, `(dot)`, `{dot}` (also with a space on both sides,
/// `evil [.] com`), the half-bracketed `.]` and `[.`, `[:]`, `[://]`, `[/]`, `[@]`, `[at]`, and
/// the full-width and ideographic full stops (`．` `。` `｡`) between letters or digits, one of
/// them ASCII, which IDNA reads as dots (between two CJK characters, one ends a sentence). Works on whole lines as well as single tokens: defanged dots in paths and
/// nested defanged URLs are refanged wherever they are.
pub fn refang(s: &str) -> String {
    refang_cow(s).into_owned()
}

/// [`refang`] without an allocation when there is nothing to undo.
pub(crate) fn refang_cow(s: &str) -> std::borrow::Cow<'_, str> {
    if !needs_refang(s) {
        return s.into();
    }
    let b = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    // Copies verbatim up to `i` lazily: `last` is the start of the pending verbatim run.
    let mut last = 0;
    let alnum_at = |j: usize| b.get(j).is_some_and(u8::is_ascii_alphanumeric);
    while i < b.len() {
        let c = b[i];
        if matches!(c, b'[' | b'(' | b'{')
            && let Some((len, repl)) = bracketed(&b[i..])
        {
            out.push_str(&s[last..i]);
            let mut end = i + len;
            // `218.[.]234`: a defang typed after a real dot stands for that same dot.
            if !(repl == "." && i > 0 && b[i - 1] == b'.') {
                // `evil [.] com`: the spaces around a defanged dot are part of the defang.
                if repl == "."
                    && i >= 2
                    && b[i - 1] == b' '
                    && alnum_at(i - 2)
                    && b.get(end) == Some(&b' ')
                    && alnum_at(end + 1)
                {
                    out.pop();
                    end += 1;
                }
                out.push_str(repl);
            }
            i = end;
            last = i;
            continue;
        }
        // `evil.]ru`, `evil[.com`: half of a bracketed dot.
        if ((c == b'.' && b.get(i + 1) == Some(&b']'))
            || (c == b'[' && b.get(i + 1) == Some(&b'.')))
            && i > 0
            && alnum_at(i - 1)
            && alnum_at(i + 2)
        {
            out.push_str(&s[last..i]);
            out.push('.');
            i += 2;
            last = i;
            continue;
        }
        if c >= 0x80
            && s.is_char_boundary(i)
            && let Some(dot) = s[i..].chars().next().filter(|c| WIDE_DOTS.contains(c))
            && let Some(before) = s[..i].chars().next_back()
            && let Some(after) = s[i + dot.len_utf8()..].chars().next()
            && before.is_alphanumeric()
            && after.is_alphanumeric()
            // Between two CJK characters it ends a sentence (`恶意域名。公司`), not a label.
            && (before.is_ascii() || after.is_ascii())
        {
            out.push_str(&s[last..i]);
            out.push('.');
            i += dot.len_utf8();
            last = i;
            continue;
        }
        if (c == b'h' || c == b'H')
            && (i == 0 || !b[i - 1].is_ascii_alphanumeric())
            && is_hxxp_scheme(&b[i..])
        {
            out.push_str(&s[last..i]);
            // `hxxp`, `hXXp`: the defang's x's stand for a lower-case scheme's t's; only an
            // upper-case `H` keeps their case (`HXXP` is `HTTP`), so refang(defang(x)) == x.
            let upper = |x: u8| c == b'H' && x == b'X';
            out.push(c as char);
            out.push(if upper(b[i + 1]) { 'T' } else { 't' });
            out.push(if upper(b[i + 2]) { 'T' } else { 't' });
            i += 3;
            last = i;
            continue;
        }
        i += 1;
    }
    out.push_str(&s[last..]);
    out.into()
}

/// The full-width, ideographic and half-width ideographic full stops.
const WIDE_DOTS: [char; 3] = ['\u{FF0E}', '\u{3002}', '\u{FF61}'];

/// Cheap pre-check so that the common, clean line costs one scan and no allocation of work.
fn needs_refang(s: &str) -> bool {
    s.bytes()
        .any(|b| matches!(b, b'[' | b'(' | b'{' | b']' | b'x' | b'X'))
        || (!s.is_ascii() && s.contains(WIDE_DOTS))
}

/// A bracketed defang at the start of `b`: its length and what it stands for.
fn bracketed(b: &[u8]) -> Option<(usize, &'static str)> {
    let close = match b[0] {
        b'[' => b']',
        b'(' => b')',
        _ => b'}',
    };
    let end = b.iter().take(8).position(|&c| c == close)?;
    let inner = &b[1..end];
    let repl = match inner.to_ascii_lowercase().as_slice() {
        b"." | b"dot" => ".",
        b":" => ":",
        b"://" => "://",
        b"/" => "/",
        b"@" | b"at" if b[0] == b'[' => "@",
        _ => return None,
    };
    Some((end + 1, repl))
}

/// `hxxp`/`hxxps` (any case of the x's) followed by `:` or `[:`.
fn is_hxxp_scheme(b: &[u8]) -> bool {
    if b.len() < 5 || !matches!(b[1], b'x' | b'X') || !matches!(b[2], b'x' | b'X') {
        return false;
    }
    if !matches!(b[3], b'p' | b'P') {
        return false;
    }
    let mut j = 4;
    if matches!(b.get(j), Some(b's' | b'S')) {
        j += 1;
    }
    match b.get(j) {
        Some(b':') => true,
        Some(b'[') => b.get(j + 1) == Some(&b':'),
        _ => false,
    }
}

/// Defangs in the most common style: an `http`/`https` scheme becomes `hxxp`/`hxxps` (letter
/// case kept) and every `.` becomes `[.]`. For tests and for showing indicators safely.
pub fn defang(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 8);
    let b = s.as_bytes();
    let rest = if b.len() >= 5
        && b[..4].eq_ignore_ascii_case(b"http")
        && (b[4] == b':' || (b.len() > 5 && (b[4] | 0x20) == b's' && b[5] == b':'))
    {
        out.push(b[0] as char);
        out.push(if b[1] == b'T' { 'X' } else { 'x' });
        out.push(if b[2] == b'T' { 'X' } else { 'x' });
        &s[3..]
    } else {
        s
    };
    for c in rest.chars() {
        if c == '.' {
            out.push_str("[.]");
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_common_defang_style_is_undone() {
        let cases = [
            ("hxxp://evil[.]com/a", "http://evil.com/a"),
            ("hXXps://evil[.]com", "https://evil.com"),
            ("HXXPS://evil[.]com", "HTTPS://evil.com"),
            ("evil [.] com", "evil.com"),
            ("evil [dot] co [.] uk", "evil.co.uk"),
            (
                "http://x[.]com/ce28e899a8d3d00a.]dat",
                "http://x.com/ce28e899a8d3d00a.dat",
            ),
            ("evil.]ru", "evil.ru"),
            ("evil[.com", "evil.com"),
            (
                "evil\u{FF0E}jp evil\u{3002}cn evil\u{FF61}io",
                "evil.jp evil.cn evil.io",
            ),
            ("例子\u{3002}中国", "例子\u{3002}中国"),
            ("bücher\u{FF0E}de", "bücher.de"),
            ("done\u{3002} Next", "done\u{3002} Next"),
            ("hxxp[:]//evil[.]com", "http://evil.com"),
            ("evil(.)com", "evil.com"),
            ("evil[dot]com", "evil.com"),
            ("evil{.}com", "evil.com"),
            ("evil(DOT)com", "evil.com"),
            ("http[://]evil.com", "http://evil.com"),
            ("user[@]evil.com", "user@evil.com"),
            ("1.2.3[.]4", "1.2.3.4"),
            ("195.226.218.[.]234:80", "195.226.218.234:80"),
            (
                "http://www.maxscript.cc/update/upscript[.]mse",
                "http://www.maxscript.cc/update/upscript.mse",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(refang(input), want, "{input}");
        }
    }

    #[test]
    fn nested_defanged_url_in_a_path_is_refanged_too() {
        assert_eq!(
            refang("https://dwnfls[.]online/--/hXXps:/www[.]mit.gov.it/mit/x"),
            "https://dwnfls.online/--/https:/www.mit.gov.it/mit/x"
        );
    }

    #[test]
    fn words_that_merely_contain_hxxp_or_brackets_are_left_alone() {
        assert_eq!(refang("hxxpfoo.com"), "hxxpfoo.com");
        assert_eq!(refang("shxxp://x"), "shxxp://x");
        assert_eq!(refang("[filename],DF1"), "[filename],DF1");
        assert_eq!(refang("array[0]"), "array[0]");
    }

    #[test]
    fn defang_uses_the_common_style_and_refang_undoes_it() {
        assert_eq!(
            defang("https://a.b.com/x.php"),
            "hxxps://a[.]b[.]com/x[.]php"
        );
        assert_eq!(defang("HTTP://A.COM"), "HXXP://A[.]COM");
        for s in [
            "https://a.b.com/x.php",
            "HTTP://A.COM",
            "1.2.3.4",
            "evil.co.uk",
        ] {
            assert_eq!(refang(&defang(s)), s);
        }
    }
}
