//! What every whole-body answer from one stored page shares: the headers a
//! client gets, with slots for the fields each answer sets anew (`Age`,
//! bigcache's own `Cache-Status` member), and the plain hit's head as
//! written on the wire with holes for those values and `Date`.
//!
//! A stored page is read rarely on the sites bigcache serves, so most hits
//! land in a second whose head was never made: the head is made from the
//! holed text ([`WireHead::render`]), not by copying and serializing a
//! header map.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};

use super::decision::{CACHE_STATUS, HIT_TTL_PREFIX};

#[derive(Debug)]
pub struct Served {
    status: StatusCode,
    /// A shell's pieces (`answer::shell_pieces`).
    pub pieces: OnceLock<Result<Vec<super::esi::parse::Piece>, super::esi::parse::ParseError>>,
    /// The fields of a whole-body answer, `Age` and the own `Cache-Status`
    /// member holding placeholders (`answer::template`).
    pub headers: HeaderMap,
    /// Made at the first plain hit served on the fast path.
    wire: OnceLock<Option<WireHead>>,
    /// A shell's: the head of its assembled page, with a hole for its
    /// length (`proxy::esi`).
    page_wire: OnceLock<Option<WireHead>>,
    /// `Age` and the hit's `Cache-Status` change once a second, and a hot
    /// page is served thousands of times in between: formatting them anew
    /// cost two allocations per hit. Only tried, never waited for: a hit
    /// that finds it held formats its own.
    last: Mutex<Last>,
}

#[derive(Debug, Default)]
struct Last {
    age: Option<(u64, HeaderValue)>,
    ttl: Option<(i64, HeaderValue)>,
    /// The head of a plain hit as written on the wire, for its `Age`,
    /// TTL and `Date` second (`answer::wire_head`).
    wire: Option<((u64, i64, u64), Bytes)>,
}

impl Served {
    pub fn new(status: StatusCode, headers: HeaderMap) -> Served {
        Served {
            status,
            pieces: OnceLock::new(),
            headers,
            wire: OnceLock::new(),
            page_wire: OnceLock::new(),
            last: Mutex::default(),
        }
    }

    /// The `Age` value for `age` seconds.
    pub fn age(&self, age: u64) -> HeaderValue {
        self.reuse(|l| &mut l.age, age, || HeaderValue::from(age))
    }

    /// `make()`, the value for a hit with `ttl` seconds left, reused while
    /// `ttl` stays the same.
    pub fn for_ttl(&self, ttl: i64, make: impl FnOnce() -> HeaderValue) -> HeaderValue {
        self.reuse(|l| &mut l.ttl, ttl, make)
    }

    /// A plain hit's head on the wire, `age` seconds old with `ttl` left,
    /// answered now; reused while the three stay the same. `None` for a
    /// status that has no reason phrase or no body.
    ///
    /// `date`: unix seconds by the proxy's clock, the one `age` was
    /// computed by (read once per hit).
    pub fn wire(&self, age: u64, ttl: i64, date: u64) -> Option<Bytes> {
        let head = self
            .wire
            .get_or_init(|| WireHead::new(self.status, &self.headers, false))
            .as_ref()?;
        Some(self.reuse(
            |l| &mut l.wire,
            (age, ttl, date),
            || head.render(age, ttl, date, 0),
        ))
    }

    /// A shell's assembled page's head on the wire (a plain hit's, with
    /// `page` applied to its fields), for a body of `len` bytes.
    pub fn page_wire(
        &self,
        age: u64,
        ttl: i64,
        date: u64,
        len: u64,
        page: impl FnOnce(&mut HeaderMap),
    ) -> Option<Bytes> {
        let head = self
            .page_wire
            .get_or_init(|| {
                let mut h = self.headers.clone();
                page(&mut h);
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                WireHead::new(self.status, &h, true)
            })
            .as_ref()?;
        Some(head.render(age, ttl, date, len))
    }

    /// The value kept in `slot` if it was made for `key`, else `make()`,
    /// kept for the next caller.
    fn reuse<K: PartialEq + Copy, V: Clone>(
        &self,
        slot: impl FnOnce(&mut Last) -> &mut Option<(K, V)>,
        key: K,
        make: impl FnOnce() -> V,
    ) -> V {
        let Ok(mut last) = self.last.try_lock() else {
            return make();
        };
        let slot = slot(&mut last);
        match slot {
            Some((k, v)) if *k == key => v.clone(),
            _ => {
                let v = make();
                *slot = Some((key, v.clone()));
                v
            }
        }
    }
}

/// A value [`WireHead::render`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hole {
    /// `Content-Length`, for a head made with `length` holed.
    Length,
    Age,
    /// The seconds of the own `Cache-Status` member.
    Ttl,
    /// The whole `Date` value, for a page stored without one.
    Date,
}

/// The bytes hyper would write for a plain hit's head (the same status
/// line and fields, in the same order, and `Date` last when the page has
/// none), with holes where the values of [`Hole`] go.
#[derive(Debug)]
struct WireHead {
    text: Vec<u8>,
    /// Offsets into `text`, ascending.
    holes: Vec<(usize, Hole)>,
}

impl WireHead {
    fn new(status: StatusCode, headers: &HeaderMap, length: bool) -> Option<WireHead> {
        let reason = status.canonical_reason()?;
        if status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return None;
        }
        let mut head = WireHead {
            text: Vec::with_capacity(64 + headers.len() * 48),
            holes: Vec::with_capacity(3),
        };
        let text = &mut head.text;
        text.extend_from_slice(b"HTTP/1.1 ");
        text.extend_from_slice(status.as_str().as_bytes());
        text.push(b' ');
        text.extend_from_slice(reason.as_bytes());
        text.extend_from_slice(b"\r\n");
        // bigcache's member is the last `Cache-Status` value
        // (`decision::set_own_status`).
        let own = headers.get_all(CACHE_STATUS).iter().count();
        let mut statuses = 0;
        for (name, value) in headers {
            text.extend_from_slice(name.as_str().as_bytes());
            text.extend_from_slice(b": ");
            if name == header::AGE {
                head.holes.push((text.len(), Hole::Age));
            } else if length && name == header::CONTENT_LENGTH {
                head.holes.push((text.len(), Hole::Length));
            } else if name == CACHE_STATUS && {
                statuses += 1;
                statuses == own
            } {
                text.extend_from_slice(HIT_TTL_PREFIX);
                head.holes.push((text.len(), Hole::Ttl));
            } else {
                text.extend_from_slice(value.as_bytes());
            }
            text.extend_from_slice(b"\r\n");
        }
        if !headers.contains_key(header::DATE) {
            text.extend_from_slice(b"date: ");
            head.holes.push((text.len(), Hole::Date));
            text.extend_from_slice(b"\r\n");
        }
        text.extend_from_slice(b"\r\n");
        Some(head)
    }

    /// The head for a page `age` seconds old with `ttl` left, sent in unix
    /// second `date`.
    fn render(&self, age: u64, ttl: i64, date: u64, len: u64) -> Bytes {
        let mut out = Vec::with_capacity(self.text.len() + 48);
        let mut digits = itoa::Buffer::new();
        let mut from = 0;
        for &(at, hole) in &self.holes {
            out.extend_from_slice(&self.text[from..at]);
            from = at;
            match hole {
                Hole::Age => out.extend_from_slice(digits.format(age).as_bytes()),
                Hole::Length => out.extend_from_slice(digits.format(len).as_bytes()),
                Hole::Ttl => out.extend_from_slice(digits.format(ttl).as_bytes()),
                Hole::Date => out.extend_from_slice(
                    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(date)).as_bytes(),
                ),
            }
        }
        out.extend_from_slice(&self.text[from..]);
        Bytes::from(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::decision::{CacheStatus, Decision, set_own_status};

    #[test]
    fn served_values_follow_the_second_they_are_asked_for() {
        let served = Served::new(StatusCode::OK, HeaderMap::new());
        assert_eq!(served.age(7), "7");
        assert_eq!(served.age(7), "7");
        assert_eq!(served.age(8), "8");
        assert_eq!(served.age(7), "7");
        let made = std::cell::Cell::new(0);
        let make = |t: i64| {
            made.set(made.get() + 1);
            HeaderValue::from(t)
        };
        assert_eq!(served.for_ttl(5, || make(5)), "5");
        assert_eq!(served.for_ttl(5, || make(5)), "5");
        assert_eq!(made.get(), 1, "the same second reuses the value");
        assert_eq!(served.for_ttl(-1, || make(-1)), "-1");
        assert_eq!(made.get(), 2);
    }

    /// The head as it was made before the holed text: the fields copied,
    /// the values set, then serialized.
    fn serialized(
        status: StatusCode,
        template: &HeaderMap,
        age: u64,
        ttl: i64,
        date: u64,
    ) -> Vec<u8> {
        let mut h = template.clone();
        h.insert(header::AGE, HeaderValue::from(age));
        let hit = Decision {
            ttl: Some(ttl),
            ..Decision::new(CacheStatus::Hit)
        };
        set_own_status(&mut h, hit.cache_status(status.as_u16()));
        let mut out = format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_str(),
            status.canonical_reason().unwrap_or_default()
        )
        .into_bytes();
        for (name, value) in &h {
            out.extend_from_slice(name.as_str().as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        if !h.contains_key(header::DATE) {
            let at = UNIX_EPOCH + Duration::from_secs(date);
            out.extend_from_slice(format!("date: {}\r\n", httpdate::fmt_http_date(at)).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    #[test]
    fn the_holed_head_is_the_serialized_one() {
        let mut plain = HeaderMap::new();
        plain.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html"));
        plain.insert(header::ETAG, HeaderValue::from_static("\"v1\""));
        plain.insert(header::CONTENT_LENGTH, HeaderValue::from(20480));
        plain.insert(header::AGE, HeaderValue::from_static("0"));
        plain.insert("x-cache", HeaderValue::from_static("HIT"));
        plain.append(CACHE_STATUS, HeaderValue::from_static("bigcache"));
        // An upstream's own Cache-Status members come first, and a stored
        // Date is kept.
        let mut layered = plain.clone();
        layered.remove(CACHE_STATUS);
        layered.append(CACHE_STATUS, HeaderValue::from_static("django; hit"));
        layered.append(CACHE_STATUS, HeaderValue::from_static("ttl=9"));
        layered.append(CACHE_STATUS, HeaderValue::from_static("bigcache"));
        layered.insert(
            header::DATE,
            HeaderValue::from_static("Mon, 07 Dec 2026 07:00:00 GMT"),
        );
        layered.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
        for (status, h) in [
            (StatusCode::OK, &plain),
            (StatusCode::OK, &layered),
            (StatusCode::NOT_FOUND, &plain),
            (StatusCode::MOVED_PERMANENTLY, &layered),
        ] {
            let head = WireHead::new(status, h, false).expect("a status with a body");
            for (age, ttl, date) in [
                (0, 0, 0),
                (7, 3599, 1_796_626_800),
                (u64::MAX, i64::MAX, 253_402_300_799),
                (12, -3, 1_796_626_801),
                (1, i64::MIN + 1, 1),
            ] {
                assert_eq!(
                    String::from_utf8_lossy(&head.render(age, ttl, date, 0)),
                    String::from_utf8_lossy(&serialized(status, h, age, ttl, date)),
                    "{status} age={age} ttl={ttl}"
                );
            }
        }
        for bodiless in [
            StatusCode::NO_CONTENT,
            StatusCode::NOT_MODIFIED,
            StatusCode::CONTINUE,
        ] {
            assert!(
                WireHead::new(bodiless, &plain, false).is_none(),
                "{bodiless}"
            );
        }
        let unnamed = StatusCode::from_u16(599).expect("a valid code");
        assert!(
            WireHead::new(unnamed, &plain, false).is_none(),
            "no reason phrase"
        );
    }

    #[test]
    fn each_age_gets_its_own_head() {
        let mut h = HeaderMap::new();
        h.insert(header::AGE, HeaderValue::from_static("0"));
        let served = Served::new(StatusCode::OK, h);
        for age in [3, 4, 3] {
            let head = served.wire(age, 10, 1_700_000_000).expect("a head");
            let head = String::from_utf8_lossy(&head);
            assert!(head.contains(&format!("\r\nage: {age}\r\n")), "{head}");
        }
    }
}
