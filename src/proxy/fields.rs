//! A request's header fields, whichever parser read them: hyper's
//! `HeaderMap` on the general path, `httparse`'s borrowed slice on the
//! fast path (`server::h1`). Every rule that reads a request's fields
//! (the classifier, the variant, conditionals, ranges) is written once,
//! against [`Fields`], so both paths run the same code.

use http::HeaderMap;

/// Read access to a request's fields. Names are compared without regard
/// to case; `name` arguments are lower-case.
pub trait Fields {
    /// Every field as sent: its name in any case, its value.
    fn each(&self) -> impl Iterator<Item = (&str, &[u8])>;

    /// Every value of `name`, in the order sent.
    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> {
        self.each()
            .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }

    /// The first value of `name`.
    fn first<'s>(&'s self, name: &'s str) -> Option<&'s [u8]> {
        self.all(name).next()
    }

    /// The first value of `name`, when it is visible ASCII (what
    /// `HeaderValue::to_str` accepts).
    fn text<'s>(&'s self, name: &'s str) -> Option<&'s str> {
        self.first(name).and_then(text)
    }

    fn has(&self, name: &str) -> bool {
        self.all(name).next().is_some()
    }

    /// Every value of `name`, one the classifier reads. A view that
    /// gathered those fields beforehand answers without comparing names.
    fn known(&self, name: Known) -> impl Iterator<Item = &[u8]> {
        self.all(name.as_str())
    }
}

/// The fields the classifier reads (`proxy::classify`): every request
/// pays for looking each up, several times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    Host,
    Authorization,
    Cookie,
    ForwardedHost,
    ForwardedProto,
    ForwardedScheme,
    ForwardedPort,
}

impl Known {
    pub const ALL: [Known; 7] = [
        Known::Host,
        Known::Authorization,
        Known::Cookie,
        Known::ForwardedHost,
        Known::ForwardedProto,
        Known::ForwardedScheme,
        Known::ForwardedPort,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Known::Host => "host",
            Known::Authorization => "authorization",
            Known::Cookie => "cookie",
            Known::ForwardedHost => "x-forwarded-host",
            Known::ForwardedProto => "x-forwarded-proto",
            Known::ForwardedScheme => "x-forwarded-scheme",
            Known::ForwardedPort => "x-forwarded-port",
        }
    }

    /// The field `name` (in any case) is, if one of these: told apart by
    /// length first, so most names cost one comparison or none.
    pub fn of(name: &str) -> Option<Known> {
        let known = match name.len() {
            4 => Known::Host,
            6 => Known::Cookie,
            13 => Known::Authorization,
            16 => match name.as_bytes()[12] | 0x20 {
                b'h' => Known::ForwardedHost,
                _ => Known::ForwardedPort,
            },
            17 => Known::ForwardedProto,
            18 => Known::ForwardedScheme,
            _ => return None,
        };
        known.as_str().eq_ignore_ascii_case(name).then_some(known)
    }
}

/// `bytes` as `HeaderValue::to_str` reads them: visible ASCII, space and
/// tab, or nothing.
pub fn text(bytes: &[u8]) -> Option<&str> {
    if bytes
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
    {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

impl Fields for HeaderMap {
    fn each(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.iter().map(|(n, v)| (n.as_str(), v.as_bytes()))
    }

    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> {
        self.get_all(name).iter().map(|v| v.as_bytes())
    }
}

impl Fields for [httparse::Header<'_>] {
    fn each(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.iter().map(|h| (h.name, h.value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_parsers_read_alike() {
        let raw = [
            httparse::Header {
                name: "Accept",
                value: b"a",
            },
            httparse::Header {
                name: "ACCEPT",
                value: b"b",
            },
            httparse::Header {
                name: "X-Odd",
                value: b"caf\xc3\xa9",
            },
        ];
        let mut map = crate::proxy::test_headers(&[("accept", "a"), ("accept", "b")]);
        map.insert(
            "x-odd",
            http::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        );
        check(&raw[..]);
        check(&map);
    }

    #[test]
    fn a_known_name_is_told_in_any_case_and_no_other_is() {
        for k in Known::ALL {
            assert_eq!(Known::of(k.as_str()), Some(k));
            assert_eq!(Known::of(&k.as_str().to_ascii_uppercase()), Some(k));
            let mut near = k.as_str().to_string();
            near.pop();
            near.push('_');
            assert_eq!(Known::of(&near), None, "{near}");
        }
        for other in [
            "x-forwarded-for",
            "x-forwarded-xxxx",
            "hosts",
            "cookie2",
            "",
            "x",
        ] {
            assert_eq!(Known::of(other), None, "{other}");
        }
    }

    fn check<F: Fields + ?Sized>(f: &F) {
        let values: Vec<&[u8]> = f.all("accept").collect();
        assert_eq!(values, [b"a", b"b"]);
        assert_eq!(f.text("accept"), Some("a"));
        assert_eq!(f.text("x-odd"), None, "not visible ASCII");
        assert!(!f.has("x-missing"));
    }
}
