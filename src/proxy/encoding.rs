//! `Accept-Encoding` normalisation: browsers send dozens of spellings of
//! the same wish (`gzip, deflate, br`, `br, gzip, deflate, zstd`, `gzip,
//! deflate, sdch`, ...), and a page that varies on the header would be
//! stored once per spelling. Before the cache is asked, the header is
//! replaced by the one content coding, of those the upstream can produce
//! (`--accept-encoding`, in order of preference), that the client accepts,
//! or removed when it accepts none of them. The upstream sees that value
//! and the variant is keyed on it, so a page has at most one copy per
//! coding. Varnish's documented normalisation does the same.

use http::HeaderMap;
use http::header::{self, HeaderValue};

use super::fields::{Fields, Known};

/// Whether the client accepts `coding` (RFC 9110 §12.5.3): listed with a
/// q-value above zero, or covered by `*` and not listed. `x-gzip` is gzip.
/// Read as bytes: every hit asks, for each coding it could serve.
pub fn accepts<F: Fields + ?Sized>(headers: &F, coding: &str) -> bool {
    let coding = coding.as_bytes();
    let mut star = None;
    let lists = headers
        .known(Known::AcceptEncoding)
        .filter(|v| super::fields::is_text(v));
    for list in lists {
        for item in list.split(|&b| b == b',') {
            let mut parts = item.split(|&b| b == b';');
            let name = parts.next().unwrap_or_default().trim_ascii();
            let q = parts
                .map(<[u8]>::trim_ascii)
                .find(|p| p.len() > 1 && p[..2].eq_ignore_ascii_case(b"q="))
                .map_or(Some(1.0), |q| {
                    std::str::from_utf8(q[2..].trim_ascii())
                        .ok()
                        .and_then(|q| q.parse::<f32>().ok())
                });
            // An unreadable q-value: not accepted (the conservative side
            // is the identity coding, which every client takes).
            let accepted = q.is_some_and(|q| q > 0.0);
            let name = if name.eq_ignore_ascii_case(b"x-gzip") {
                b"gzip"
            } else {
                name
            };
            if name.eq_ignore_ascii_case(coding) {
                return accepted;
            }
            if name == b"*" {
                star = Some(accepted);
            }
        }
    }
    star.unwrap_or(false)
}

/// The first of `codings` the client accepts: what [`normalise`] makes
/// its `Accept-Encoding`.
pub fn chosen<'c, F: Fields + ?Sized>(headers: &F, codings: &'c [String]) -> Option<&'c String> {
    codings.iter().find(|c| accepts(headers, c))
}

/// Rewrites `Accept-Encoding` to the first of `codings` the client
/// accepts, or removes it. `codings` empty leaves the header alone.
pub fn normalise(headers: &mut HeaderMap, codings: &[String]) {
    if codings.is_empty() {
        return;
    }
    match chosen(headers, codings) {
        Some(c) => {
            let mut lines = headers.get_all(header::ACCEPT_ENCODING).iter();
            let already = lines.next().is_some_and(|v| v.as_bytes() == c.as_bytes())
                && lines.next().is_none();
            if !already && let Ok(v) = HeaderValue::from_str(c) {
                headers.insert(header::ACCEPT_ENCODING, v);
            }
        }
        None => {
            headers.remove(header::ACCEPT_ENCODING);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `Accept-Encoding` values real clients send (browsers of the last
    /// years, crawlers, HTTP libraries, curl without `--compressed`).
    const SEEN: [&str; 20] = [
        "gzip, deflate, br, zstd",
        "gzip, deflate, br",
        "br, gzip, deflate",
        "gzip, deflate",
        "gzip,deflate,br",
        "gzip, deflate, sdch, br",
        "gzip, deflate, sdch",
        "deflate, gzip",
        "gzip",
        "identity",
        "*",
        "br;q=1.0, gzip;q=0.8, *;q=0.1",
        "gzip;q=1.0, deflate;q=0.6, identity;q=0.3",
        "gzip, deflate, br;q=1.0",
        "x-gzip, gzip, deflate",
        "gzip, compress",
        "deflate",
        "br",
        "gzip;q=0, deflate",
        "",
    ];

    fn normalised(ae: &str, codings: &[&str]) -> Option<String> {
        let mut h = HeaderMap::new();
        if !ae.is_empty() {
            h.insert(header::ACCEPT_ENCODING, ae.parse().unwrap());
        }
        let codings: Vec<String> = codings.iter().map(|c| c.to_string()).collect();
        normalise(&mut h, &codings);
        h.get(header::ACCEPT_ENCODING)
            .map(|v| v.to_str().unwrap().to_string())
    }

    #[test]
    fn twenty_spellings_become_at_most_one_copy_per_coding() {
        let raw: std::collections::BTreeSet<_> = SEEN.iter().collect();
        assert_eq!(raw.len(), 20);
        let gzip: std::collections::BTreeSet<_> =
            SEEN.iter().map(|ae| normalised(ae, &["gzip"])).collect();
        assert_eq!(gzip.len(), 2, "{gzip:?}");
        let both: std::collections::BTreeSet<_> = SEEN
            .iter()
            .map(|ae| normalised(ae, &["br", "gzip"]))
            .collect();
        assert_eq!(both.len(), 3, "{both:?}");
    }

    #[test]
    fn q_values_and_wildcards() {
        assert_eq!(
            normalised("gzip, deflate, br", &["br", "gzip"]).as_deref(),
            Some("br")
        );
        assert_eq!(normalised("gzip;q=0, deflate", &["gzip"]), None);
        assert_eq!(normalised("*", &["gzip"]).as_deref(), Some("gzip"));
        assert_eq!(normalised("*;q=0", &["gzip"]), None);
        assert_eq!(normalised("br, *;q=0", &["gzip"]), None);
        assert_eq!(normalised("x-gzip", &["gzip"]).as_deref(), Some("gzip"));
        assert_eq!(normalised("gzip;q=abc", &["gzip"]), None);
        assert_eq!(normalised("GZIP", &["gzip"]).as_deref(), Some("gzip"));
        assert_eq!(normalised("identity", &[]).as_deref(), Some("identity"));
    }

    /// The reading of `Accept-Encoding` as text, before it was read as
    /// bytes: the two must agree on every value.
    fn read_as_text(values: &[&[u8]], coding: &str) -> bool {
        let mut star = None;
        let lines = values
            .iter()
            .filter_map(|v| HeaderValue::from_bytes(v).ok());
        for list in lines.filter_map(|v| v.to_str().ok().map(str::to_owned)) {
            for item in list.split(',') {
                let mut parts = item.split(';');
                let name = parts.next().unwrap_or("").trim();
                let q = parts
                    .map(str::trim)
                    .find(|p| p.len() > 1 && p[..2].eq_ignore_ascii_case("q="))
                    .map_or(Some(1.0), |q| q[2..].trim().parse::<f32>().ok());
                let accepted = q.is_some_and(|q| q > 0.0);
                let name = if name.eq_ignore_ascii_case("x-gzip") {
                    "gzip"
                } else {
                    name
                };
                if name.eq_ignore_ascii_case(coding) {
                    return accepted;
                }
                if name == "*" {
                    star = Some(accepted);
                }
            }
        }
        star.unwrap_or(false)
    }

    proptest::proptest! {
        #[test]
        fn read_as_bytes_as_it_was_read_as_text(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "br", "BR", "gzip", "x-gzip", "zstd", "deflate", "*", "identity", "",
                    ",", ", ", " ,", ";", "; ", ";q=0", ";q=0.0", "; Q=1", ";q=0.5", ";q=abc",
                    ";q=", ";q= 1 ", ";level=1", "\t", " ", "q=1", "\u{e9}", "\u{7f}", "\r",
                    ";q=0.000", ";q=1.0", ";q=1e0", ";q=-0", ";q=nan", ";q=inf", ";q=0.001", ";q=+1",
                ]),
                0..10,
            ),
            second in proptest::option::of(proptest::sample::select(vec!["br", "*;q=0", "gzip;q=1", "BR;q=0", "\u{e9}br"])),
        ) {
            let first = pieces.concat();
            let mut values: Vec<&[u8]> = vec![first.as_bytes()];
            if let Some(v) = &second {
                values.push(v.as_bytes());
            }
            let mut h = HeaderMap::new();
            for v in &values {
                // Values a client could not send are not headers at all.
                if let Ok(v) = HeaderValue::from_bytes(v) {
                    h.append(header::ACCEPT_ENCODING, v);
                }
            }
            let sent: Vec<&[u8]> = h.get_all(header::ACCEPT_ENCODING).iter().map(HeaderValue::as_bytes).collect();
            // The fast path reads the same values from the parsed head.
            let raw: Vec<httparse::Header> = sent
                .iter()
                .map(|v| httparse::Header { name: "Accept-Encoding", value: v })
                .collect();
            let gathered = crate::proxy::fields::Gathered::of(&raw[..]);
            for coding in ["br", "gzip", "zstd", "identity"] {
                let expected = read_as_text(&sent, coding);
                proptest::prop_assert_eq!(accepts(&h, coding), expected, "{:?} {}", sent, coding);
                proptest::prop_assert_eq!(accepts(&gathered, coding), expected, "{:?} {}", sent, coding);
            }
        }
    }
}
