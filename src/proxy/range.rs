//! Byte ranges (RFC 9110 §14) answered from a stored page: a `Range`
//! request never reaches the upstream for a page bigcache holds, and one
//! for a page it does not hold fetches the whole page (so it can be stored)
//! and answers the range from it.
//!
//! One range is served as a 206; several are answered with the whole page
//! (a 200), as RFC 9110 §14.2 allows, rather than as `multipart/
//! byteranges`. A `Range` that cannot be read, in another unit, or on a
//! response other than a 200 is ignored (the whole page). `If-Range` must
//! match the stored `ETag` strongly, or `Last-Modified` exactly, or the
//! whole page is sent.

use http::HeaderMap;
use http::header;

use super::fields::{Fields, Known};

/// What to send for a request's `Range`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ranged {
    /// The whole page.
    Full,
    /// Bytes `start..=end` of it.
    Part { start: u64, end: u64 },
    /// No byte of the range exists: a 416.
    Unsatisfiable,
}

/// The range of a `len`-byte stored page (with `stored` headers) that the
/// request with `req` headers asks for.
pub fn select<F: Fields + ?Sized>(req: &F, stored: &HeaderMap, len: u64) -> Ranged {
    let mut lines = req.known(Known::Range);
    let (Some(line), None) = (lines.next(), lines.next()) else {
        return Ranged::Full;
    };
    if !if_range_holds(req, stored) {
        return Ranged::Full;
    }
    let Some(spec) = super::fields::text(line).and_then(|v| {
        let (unit, set) = v.trim().split_once('=')?;
        unit.trim()
            .eq_ignore_ascii_case("bytes")
            .then_some(set.trim())
    }) else {
        return Ranged::Full;
    };
    if spec.contains(',') {
        return Ranged::Full;
    }
    let Some((first, last)) = spec.split_once('-') else {
        return Ranged::Full;
    };
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().unwrap_or(u64::MAX))
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        // `-n`: the last n bytes.
        (true, _, Some(n)) => {
            if n == 0 || len == 0 {
                Ranged::Unsatisfiable
            } else {
                Ranged::Part {
                    start: len - n.min(len),
                    end: len - 1,
                }
            }
        }
        // `a-` or `a-b`.
        (false, Some(start), last) if last.is_some() || last_is_empty(last, spec) => {
            if last.is_some_and(|l| l < start) {
                return Ranged::Full;
            }
            if start >= len {
                return Ranged::Unsatisfiable;
            }
            let end = last.map_or(len - 1, |l| l.min(len - 1));
            Ranged::Part { start, end }
        }
        _ => Ranged::Full,
    }
}

/// `a-` has an empty last-pos (as opposed to junk after the dash).
fn last_is_empty(last: Option<u64>, spec: &str) -> bool {
    last.is_none()
        && spec
            .split_once('-')
            .is_some_and(|(_, l)| l.trim().is_empty())
}

/// Whether `If-Range` (when present) names the stored page.
fn if_range_holds<F: Fields + ?Sized>(req: &F, stored: &HeaderMap) -> bool {
    let Some(cond) = req.known(Known::IfRange).next() else {
        return true;
    };
    let Some(cond) = super::fields::text(cond) else {
        return false;
    };
    let cond = cond.trim();
    if cond.starts_with('"') || cond.starts_with("W/") {
        // Strong comparison: weak tags never match.
        let etag = stored.get(header::ETAG).and_then(|v| v.to_str().ok());
        return !cond.starts_with("W/") && etag.is_some_and(|e| e.trim() == cond);
    }
    // A date validates only if it is strong (RFC 9110 §13.1.5, §8.8.2.2):
    // the page's Last-Modified, at least a second before its Date, so no
    // second version can share it.
    let date = |name| {
        stored
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    };
    let (Some(lm), Some(sent)) = (date(header::LAST_MODIFIED), date(header::DATE)) else {
        return false;
    };
    let strong = sent
        .duration_since(lm)
        .is_ok_and(|d| d >= std::time::Duration::from_secs(1));
    strong && httpdate::parse_http_date(cond).is_ok_and(|c| c == lm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::test_headers as h;

    fn range(r: &str, len: u64) -> Ranged {
        select(&h(&[("range", r)]), &HeaderMap::new(), len)
    }

    #[test]
    fn single_ranges() {
        assert_eq!(range("bytes=0-9", 100), Ranged::Part { start: 0, end: 9 });
        assert_eq!(range("bytes=90-", 100), Ranged::Part { start: 90, end: 99 });
        assert_eq!(
            range("bytes=90-500", 100),
            Ranged::Part { start: 90, end: 99 }
        );
        assert_eq!(range("bytes=-10", 100), Ranged::Part { start: 90, end: 99 });
        assert_eq!(range("bytes=-500", 100), Ranged::Part { start: 0, end: 99 });
        assert_eq!(range("Bytes = 5-5", 100), Ranged::Part { start: 5, end: 5 });
    }

    #[test]
    fn unsatisfiable_and_ignored() {
        assert_eq!(range("bytes=100-", 100), Ranged::Unsatisfiable);
        assert_eq!(range("bytes=-0", 100), Ranged::Unsatisfiable);
        assert_eq!(range("bytes=0-", 0), Ranged::Unsatisfiable);
        for ignored in [
            "bytes=0-1,5-6",
            "items=0-1",
            "bytes=5-1",
            "bytes=a-b",
            "bytes=1-2x",
            "bytes",
        ] {
            assert_eq!(range(ignored, 100), Ranged::Full, "{ignored}");
        }
        let mut two = h(&[("range", "bytes=0-1")]);
        two.append("range", "bytes=2-3".parse().unwrap());
        assert_eq!(select(&two, &HeaderMap::new(), 100), Ranged::Full);
    }

    #[test]
    fn if_range_must_name_the_stored_page() {
        let stored = h(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 01 Jan 2019 00:00:00 GMT"),
            ("date", "Tue, 01 Jan 2019 00:00:05 GMT"),
        ]);
        let part = Ranged::Part { start: 0, end: 0 };
        let ask = |cond: &str| {
            select(
                &h(&[("range", "bytes=0-0"), ("if-range", cond)]),
                &stored,
                10,
            )
        };
        assert_eq!(ask("\"v1\""), part);
        assert_eq!(ask("\"v2\""), Ranged::Full);
        assert_eq!(ask("W/\"v1\""), Ranged::Full, "weak tags never match");
        assert_eq!(ask("Tue, 01 Jan 2019 00:00:00 GMT"), part);
        assert_eq!(ask("Wed, 02 Jan 2019 00:00:00 GMT"), Ranged::Full);
        // A Last-Modified within a second of Date is weak: no date matches.
        let weak = h(&[
            ("last-modified", "Tue, 01 Jan 2019 00:00:00 GMT"),
            ("date", "Tue, 01 Jan 2019 00:00:00 GMT"),
        ]);
        let req = h(&[
            ("range", "bytes=0-0"),
            ("if-range", "Tue, 01 Jan 2019 00:00:00 GMT"),
        ]);
        assert_eq!(select(&req, &weak, 10), Ranged::Full);
    }
}
