//! A request's header fields, whichever parser read them: hyper's
//! `HeaderMap` on the general path, `httparse`'s borrowed slice on the
//! fast path (`server::h1`). Every rule that reads a request's fields
//! (the classifier, the variant, conditionals, ranges) is written once,
//! against [`Fields`], so both paths run the same code.

use either::Either;
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

/// The fields every request's rules read (the classifier's, conditionals,
/// ranges, the usual `Vary`): a hit pays for looking each up, several
/// times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Known {
    Host,
    Authorization,
    Cookie,
    ForwardedHost,
    ForwardedProto,
    ForwardedScheme,
    ForwardedPort,
    IfNoneMatch,
    IfModifiedSince,
    Range,
    IfRange,
    AcceptEncoding,
}

impl Known {
    pub const ALL: [Known; 12] = [
        Known::Host,
        Known::Authorization,
        Known::Cookie,
        Known::ForwardedHost,
        Known::ForwardedProto,
        Known::ForwardedScheme,
        Known::ForwardedPort,
        Known::IfNoneMatch,
        Known::IfModifiedSince,
        Known::Range,
        Known::IfRange,
        Known::AcceptEncoding,
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
            Known::IfNoneMatch => "if-none-match",
            Known::IfModifiedSince => "if-modified-since",
            Known::Range => "range",
            Known::IfRange => "if-range",
            Known::AcceptEncoding => "accept-encoding",
        }
    }

    /// The field `name` (in any case) is, if one of these: told apart by
    /// length and one byte first, so most names cost one comparison or
    /// none.
    pub fn of(name: &str) -> Option<Known> {
        let b = name.as_bytes();
        let known = match b.len() {
            4 => Known::Host,
            5 => Known::Range,
            6 => Known::Cookie,
            8 => Known::IfRange,
            13 if b[0] | 0x20 == b'i' => Known::IfNoneMatch,
            13 => Known::Authorization,
            15 => Known::AcceptEncoding,
            16 if b[12] | 0x20 == b'h' => Known::ForwardedHost,
            16 => Known::ForwardedPort,
            17 if b[0] | 0x20 == b'i' => Known::IfModifiedSince,
            17 => Known::ForwardedProto,
            18 => Known::ForwardedScheme,
            _ => return None,
        };
        same_name(b, known.as_str().as_bytes()).then_some(known)
    }
}

/// Whether `name` is `lower` (lower-case letters and `-`, four bytes or
/// more) in any case, compared a word at a time: each letter's case bit
/// is ignored, every other byte must be equal. A browser's head has a
/// dozen fields, and byte-wise comparison was most of `Known::of`.
fn same_name(name: &[u8], lower: &[u8]) -> bool {
    /// `n` is `l` but for the case bit (0x20) of the bytes that are
    /// letters in `l` (bit 0x40 set: `-` and digits have it clear).
    fn fits(n: u64, l: u64) -> bool {
        n | ((l & 0x4040_4040_4040_4040) >> 1) == l
    }
    // Fixed-size reads, each one load; a slice too short reads as zero
    // (not reached: the lengths are checked first).
    fn word8(b: &[u8], at: usize) -> u64 {
        b.get(at..at + 8)
            .and_then(|w| <[u8; 8]>::try_from(w).ok())
            .map_or(0, u64::from_le_bytes)
    }
    fn word4(b: &[u8], at: usize) -> u64 {
        b.get(at..at + 4)
            .and_then(|w| <[u8; 4]>::try_from(w).ok())
            .map_or(0, |w| u64::from(u32::from_le_bytes(w)))
    }
    let len = lower.len();
    if name.len() != len {
        return false;
    }
    match len {
        0..4 => name.eq_ignore_ascii_case(lower),
        // The first four bytes and the last four (overlapping below 8).
        4..8 => {
            fits(word4(name, 0), word4(lower, 0))
                && fits(word4(name, len - 4), word4(lower, len - 4))
        }
        // Whole words from the front, then one ending at the last byte.
        _ => {
            let mut at = 0;
            while at + 8 < len {
                if !fits(word8(name, at), word8(lower, at)) {
                    return false;
                }
                at += 8;
            }
            fits(word8(name, len - 8), word8(lower, len - 8))
        }
    }
}

/// A parsed head's fields with the [`Known`] ones gathered in one pass:
/// the rules ask for each several times, and a browser's request carries
/// a dozen others. Each known name has a slot: its first value and how
/// many came, so a lookup is an index, not a scan. A name sent more than
/// once (rare: a split `Cookie`, or a request the rules refuse) is read
/// from the fields as sent, in order; so is every name not known.
pub struct Gathered<'a, F: Fields + ?Sized> {
    raw: &'a F,
    first: [&'a [u8]; Known::ALL.len()],
    count: [u8; Known::ALL.len()],
}

impl<'a, F: Fields + ?Sized> Gathered<'a, F> {
    pub fn of(raw: &'a F) -> Gathered<'a, F> {
        let mut first = [&[][..]; Known::ALL.len()];
        let mut count = [0u8; Known::ALL.len()];
        for (name, value) in raw.each() {
            let Some(known) = Known::of(name) else {
                continue;
            };
            let i = known as usize;
            if count[i] == 0 {
                first[i] = value;
            }
            count[i] = count[i].saturating_add(1);
        }
        Gathered { raw, first, count }
    }
}

impl<F: Fields + ?Sized> Fields for Gathered<'_, F> {
    fn each(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.raw.each()
    }

    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> {
        match Known::of(name) {
            Some(known) => Either::Left(self.known(known)),
            None => Either::Right(self.raw.all(name)),
        }
    }

    fn known(&self, name: Known) -> impl Iterator<Item = &[u8]> {
        let i = name as usize;
        match self.count[i] {
            0 => Either::Left(None.into_iter()),
            1 => Either::Left(Some(self.first[i]).into_iter()),
            _ => Either::Right(self.raw.all(name.as_str())),
        }
    }
}

/// `bytes` as `HeaderValue::to_str` reads them: visible ASCII, space and
/// tab, or nothing.
pub fn text(bytes: &[u8]) -> Option<&str> {
    if is_text(bytes) {
        std::str::from_utf8(bytes).ok()
    } else {
        None
    }
}

/// Whether [`text`] reads `bytes`.
pub fn is_text(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .all(|&b| b == b'\t' || (b' '..=b'~').contains(&b))
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
        check(&Gathered::of(&raw[..]));
        check(&Gathered::of(&map));
    }

    #[test]
    fn a_known_name_is_told_in_any_case_and_no_other_is() {
        for (i, k) in Known::ALL.into_iter().enumerate() {
            assert_eq!(k as usize, i, "a slot of Gathered per name");
            assert_eq!(Known::of(k.as_str()), Some(k));
            assert_eq!(Known::of(&k.as_str().to_ascii_uppercase()), Some(k));
            let mut near = k.as_str().to_string();
            near.pop();
            near.push('_');
            assert_eq!(Known::of(&near), None, "{near}");
        }
        // Word-wise comparison agrees with byte-wise for every byte at
        // every place of every known name (a `\r` for a `-` differs only
        // in the case bit, and is not a `-`).
        for k in Known::ALL {
            let name = k.as_str().as_bytes();
            for at in 0..name.len() {
                for b in 0..=255u8 {
                    let mut n = name.to_vec();
                    n[at] = b;
                    let want = n.eq_ignore_ascii_case(name);
                    assert_eq!(same_name(&n, name), want, "{:?} at {at}", b as char);
                }
            }
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

    /// Every known name is gathered, in any case; other names are read
    /// from the fields as sent, and so is everything once the room is out.
    #[test]
    fn the_one_pass_gathers_every_known_name() {
        let upper: Vec<String> = Known::ALL
            .iter()
            .map(|n| n.as_str().to_ascii_uppercase())
            .collect();
        let mut raw: Vec<httparse::Header<'_>> = upper
            .iter()
            .map(|n| httparse::Header {
                name: n,
                value: b"v",
            })
            .collect();
        for other in ["accept", "x-forwarded-for", "hosts", "cookie2", "x-real-ip"] {
            raw.push(httparse::Header {
                name: other,
                value: b"w",
            });
        }
        let g = Gathered::of(&raw[..]);
        for name in Known::ALL {
            assert_eq!(g.known(name).collect::<Vec<_>>(), [b"v"], "{name:?}");
            assert_eq!(g.all(name.as_str()).collect::<Vec<_>>(), [b"v"], "{name:?}");
        }
        assert_eq!(g.all("x-real-ip").collect::<Vec<_>>(), [b"w"]);
        assert_eq!(g.each().count(), raw.len());
    }

    /// A name sent more than once is every value, in the order sent.
    #[test]
    fn a_repeated_name_is_every_value_in_order() {
        let values: Vec<String> = (0..300).map(|i| format!("a={i}")).collect();
        let mut many: Vec<httparse::Header<'_>> = values
            .iter()
            .map(|v| httparse::Header {
                name: "Cookie",
                value: v.as_bytes(),
            })
            .collect();
        many.insert(
            1,
            httparse::Header {
                name: "Host",
                value: b"h",
            },
        );
        let g = Gathered::of(&many[..]);
        let got: Vec<&[u8]> = g.known(Known::Cookie).collect();
        let want: Vec<&[u8]> = values.iter().map(|v| v.as_bytes()).collect();
        assert_eq!(got, want);
        assert_eq!(g.all("host").collect::<Vec<_>>(), [b"h"]);
        assert_eq!(g.known(Known::Range).count(), 0);
    }

    fn check<F: Fields + ?Sized>(f: &F) {
        let values: Vec<&[u8]> = f.all("accept").collect();
        assert_eq!(values, [b"a", b"b"]);
        assert_eq!(f.text("accept"), Some("a"));
        assert_eq!(f.text("x-odd"), None, "not visible ASCII");
        assert!(!f.has("x-missing"));
    }
}
