//! A cached HTTP response: what the proxy keeps in a record of kind
//! [`Kind::Http`] and how it turns back into a response.
//!
//! Its byte layout, the record's metadata section for kind HTTP response,
//! is specified in docs/format.md ("Stored HTTP responses"). The record's
//! created-at is when the response was stored (for `Age`), its expires-at
//! when it stops being useful even stale (the store deletes it then), and
//! its body the response body.

use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};

use super::compress::Coding;
use super::policy::Storable;
use crate::store::record::Tags;
use crate::store::{Kind, Record};

/// Version 2 adds the body's coding and identity length; version 1 (an
/// identity body) is still read.
const META_VERSION: u8 = 2;
const FLAG_MUST_REVALIDATE: u8 = 1;
const FLAG_SYNTHETIC_ETAG: u8 = 2;
const FLAG_NO_CACHE: u8 = 4;
const FLAG_TTL_HEADER: u8 = 8;
const NONE_SECS: u32 = u32::MAX;

#[derive(Debug)]
pub struct Entry {
    pub status: StatusCode,
    pub headers: HeaderMap,
    /// The body as stored, in `coding`.
    pub body: Bytes,
    /// bigcache's own coding of the body (`proxy::compress`).
    pub coding: Coding,
    /// The brotli quality the body was encoded at; 0 for an identity body.
    pub quality: u8,
    /// The body's length decoded: `body.len()` for an identity body.
    pub identity_len: u64,
    /// Unix ms.
    pub stored_at: u64,
    /// Unix ms.
    pub fresh_until: u64,
    /// Unix ms; `None` would never expire (not produced by the proxy).
    pub keep_until: Option<u64>,
    pub initial_age: u64,
    pub must_revalidate: bool,
    /// Revalidate before every reuse, never serve stale without asking.
    pub no_cache: bool,
    /// The ETag was computed by bigcache, so the upstream cannot match it.
    pub synthetic_etag: bool,
    /// The lifetime came from `X-Bigcache-TTL`: `--grace` and the default
    /// stale-if-error apply. Otherwise RFC 9111 rules: stale only where
    /// the response allows it, or when the upstream cannot be reached.
    pub ttl_header: bool,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    /// The tags the page is purged by (`proxy::tags`).
    pub tags: Tags,
    /// When a soft purge marked it stale (unix ms); `fresh_until` is no
    /// later than this.
    pub soft_purged_at: Option<u64>,
    /// What every whole-body answer from the entry shares, built at the
    /// first (`answer::from_entry`), for each representation
    /// (`answer::Rep`); the entry is shared by every hit.
    pub served: [std::sync::OnceLock<super::served::Served>; 2],
    /// Whether the page opted into ESI (`proxy::esi`), read at the first
    /// question: every hit asks, and a page read from disk is a new entry.
    pub shell: std::sync::OnceLock<bool>,
}

#[derive(Debug, thiserror::Error)]
#[error("cached response metadata is unreadable")]
pub struct MetaError;

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], MetaError> {
        if self.buf.len() < n {
            return Err(MetaError);
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, MetaError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, MetaError> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, MetaError> {
        let mut a = [0u8; 4];
        a.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(a))
    }
    fn u64(&mut self) -> Result<u64, MetaError> {
        let mut a = [0u8; 8];
        a.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(a))
    }
}

fn secs_opt(v: u32) -> Option<Duration> {
    (v != NONE_SECS).then(|| Duration::from_secs(u64::from(v)))
}

fn secs_raw(d: Option<Duration>) -> u32 {
    d.map_or(NONE_SECS, |d| {
        d.as_secs().min(u64::from(NONE_SECS - 1)) as u32
    })
}

/// How long past its stale windows a copy with a validator of Django's is
/// kept for revalidation: its lifetime, within these bounds (nginx keeps
/// an expired copy for `inactive`, 10 minutes by default).
const REVALIDATE_KEEP_MIN: Duration = Duration::from_secs(600);
const REVALIDATE_KEEP_MAX: Duration = Duration::from_secs(86_400);

/// The stale windows applied to entries whose response names none
/// (`--grace`, `--stale-if-error`).
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub grace: Duration,
    pub stale_if_error: Duration,
}

impl Entry {
    /// The entry for a storable response received at `now` (unix ms).
    pub fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        p: &Storable,
        now: u64,
        defaults: Windows,
    ) -> Entry {
        // X-Bigcache-TTL stays stored (a 304 that omits it renews the page
        // with it) and is removed when the page is served.
        headers.remove(http::header::AGE);
        headers.remove(http::header::CONTENT_LENGTH);
        let synthetic_etag = !headers.contains_key(http::header::ETAG)
            && !headers.contains_key(http::header::LAST_MODIFIED);
        if synthetic_etag {
            // Strong and unique per stored version: crc of the body plus
            // the store time, so a changed page can never match.
            let tag = format!("\"bc-{now:x}-{:08x}\"", crc32fast::hash(&body));
            if let Ok(v) = HeaderValue::from_str(&tag) {
                headers.insert(http::header::ETAG, v);
            }
        }
        // Kept as long as any stale use of it may still come.
        let grace = if p.ttl_header {
            defaults.grace
        } else {
            Duration::ZERO
        };
        let stale_windows = if p.must_revalidate {
            Duration::ZERO
        } else {
            p.stale_while_revalidate
                .unwrap_or(grace)
                .max(p.stale_if_error.unwrap_or(defaults.stale_if_error))
        };
        // A copy Django can validate is kept a while past any stale use,
        // never served from then on, so that its refresh is a conditional
        // request a 304 can answer (RFC 9111 §4.3.1), must-revalidate
        // pages included.
        let revalidation = if synthetic_etag {
            Duration::ZERO
        } else {
            p.keep_for.clamp(REVALIDATE_KEEP_MIN, REVALIDATE_KEEP_MAX)
        };
        let windows = stale_windows.max(revalidation);
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Entry {
            status,
            headers,
            identity_len: body.len() as u64,
            body,
            coding: Coding::Identity,
            quality: 0,
            stored_at: now,
            fresh_until: now.saturating_add(ms(p.fresh_for)),
            keep_until: Some(
                now.saturating_add(ms(p.keep_for))
                    .saturating_add(ms(windows)),
            ),
            initial_age: p.initial_age,
            must_revalidate: p.must_revalidate,
            no_cache: p.no_cache,
            synthetic_etag,
            ttl_header: p.ttl_header,
            stale_while_revalidate: p.stale_while_revalidate,
            stale_if_error: p.stale_if_error,
            tags: p.tags.clone(),
            soft_purged_at: None,
            served: Default::default(),
            shell: Default::default(),
        }
    }

    /// The same page with its body in `coding` at `quality` (`packed`).
    pub fn packed(&self, coding: Coding, quality: u8, packed: Bytes) -> Entry {
        Entry {
            status: self.status,
            headers: self.headers.clone(),
            body: packed,
            coding,
            quality,
            identity_len: self.identity_len,
            stored_at: self.stored_at,
            fresh_until: self.fresh_until,
            keep_until: self.keep_until,
            initial_age: self.initial_age,
            must_revalidate: self.must_revalidate,
            no_cache: self.no_cache,
            synthetic_etag: self.synthetic_etag,
            ttl_header: self.ttl_header,
            stale_while_revalidate: self.stale_while_revalidate,
            stale_if_error: self.stale_if_error,
            tags: self.tags.clone(),
            soft_purged_at: self.soft_purged_at,
            served: Default::default(),
            shell: Default::default(),
        }
    }

    /// The body decoded from its coding.
    pub fn identity_body(&self) -> Result<Bytes, super::compress::Undecodable> {
        match self.coding {
            Coding::Identity => Ok(self.body.clone()),
            Coding::Br => {
                let len =
                    usize::try_from(self.identity_len).map_err(|_| super::compress::Undecodable)?;
                super::compress::decode(&self.body, len).map(Bytes::from)
            }
        }
    }

    pub fn to_record(&self) -> Record {
        let mut m = BytesMut::with_capacity(64 + self.headers.len() * 48);
        m.put_u8(META_VERSION);
        m.put_u16_le(self.status.as_u16());
        m.put_u64_le(self.fresh_until);
        m.put_u64_le(self.initial_age);
        let mut flags = 0;
        if self.must_revalidate {
            flags |= FLAG_MUST_REVALIDATE;
        }
        if self.synthetic_etag {
            flags |= FLAG_SYNTHETIC_ETAG;
        }
        if self.no_cache {
            flags |= FLAG_NO_CACHE;
        }
        if self.ttl_header {
            flags |= FLAG_TTL_HEADER;
        }
        m.put_u8(flags);
        m.put_u32_le(secs_raw(self.stale_while_revalidate));
        m.put_u32_le(secs_raw(self.stale_if_error));
        m.put_u8(self.coding.byte());
        m.put_u8(self.quality);
        m.put_u64_le(self.identity_len);
        let headers: Vec<_> = self
            .headers
            .iter()
            .filter(|(n, v)| {
                n.as_str().len() <= usize::from(u16::MAX) && v.len() < u32::MAX as usize
            })
            .take(usize::from(u16::MAX))
            .collect();
        m.put_u16_le(headers.len() as u16);
        for (name, value) in headers {
            m.put_u16_le(name.as_str().len() as u16);
            m.put_slice(name.as_str().as_bytes());
            m.put_u32_le(value.len() as u32);
            m.put_slice(value.as_bytes());
        }
        Record {
            kind: Kind::Http,
            created_at: self.stored_at,
            expires_at: self.keep_until,
            meta: m.freeze(),
            body: self.body.clone(),
            tags: self.tags.clone(),
            stale_since: self.soft_purged_at,
            memo: Default::default(),
        }
    }

    pub fn from_record(rec: &Record) -> Result<Entry, MetaError> {
        if rec.kind != Kind::Http {
            return Err(MetaError);
        }
        let mut r = Reader { buf: &rec.meta };
        let version = r.u8()?;
        if version != 1 && version != META_VERSION {
            return Err(MetaError);
        }
        let status = StatusCode::from_u16(r.u16()?).map_err(|_| MetaError)?;
        let fresh_until = r.u64()?;
        let initial_age = r.u64()?;
        let flags = r.u8()?;
        let swr = secs_opt(r.u32()?);
        let sie = secs_opt(r.u32()?);
        let (coding, quality, identity_len) = if version == 1 {
            (Coding::Identity, 0, rec.body.len() as u64)
        } else {
            let coding = Coding::from_byte(r.u8()?).ok_or(MetaError)?;
            let quality = r.u8()?;
            let len = r.u64()?;
            // An identity body is its own length; a coded one's is only
            // checked when decoded (`compress::decode`).
            let identity = coding == Coding::Identity;
            let too_long = !identity && len > super::compress::LARGE as u64;
            if identity && (len != rec.body.len() as u64 || quality != 0)
                || quality > 11
                || too_long
            {
                return Err(MetaError);
            }
            (coding, quality, len)
        };
        let n = r.u16()?;
        let mut headers = HeaderMap::with_capacity(usize::from(n));
        for _ in 0..n {
            let len = usize::from(r.u16()?);
            let name = HeaderName::from_bytes(r.take(len)?).map_err(|_| MetaError)?;
            let len = r.u32()? as usize;
            // A slice of the record's bytes, not a copy: a page read from
            // disk is parsed for one answer, and a copy per field was a
            // third of that parse.
            let value = HeaderValue::from_maybe_shared(rec.meta.slice_ref(r.take(len)?))
                .map_err(|_| MetaError)?;
            headers.append(name, value);
        }
        if !r.buf.is_empty() {
            return Err(MetaError);
        }
        Ok(Entry {
            status,
            headers,
            body: rec.body.clone(),
            coding,
            quality,
            identity_len,
            stored_at: rec.created_at,
            // Soft-purged: stale from that moment, whatever the lifetime.
            fresh_until: rec
                .stale_since
                .map_or(fresh_until, |at| at.min(fresh_until)),
            keep_until: rec.expires_at,
            initial_age,
            must_revalidate: flags & FLAG_MUST_REVALIDATE != 0,
            synthetic_etag: flags & FLAG_SYNTHETIC_ETAG != 0,
            no_cache: flags & FLAG_NO_CACHE != 0,
            ttl_header: flags & FLAG_TTL_HEADER != 0,
            stale_while_revalidate: swr,
            stale_if_error: sie,
            tags: rec.tags.clone(),
            soft_purged_at: rec.stale_since,
            served: Default::default(),
            shell: Default::default(),
        })
    }

    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.fresh_until
    }

    /// Seconds for the `Age` header.
    pub fn age(&self, now_ms: u64) -> u64 {
        self.initial_age
            .saturating_add(now_ms.saturating_sub(self.stored_at) / 1000)
    }

    /// Whether the entry has a validator the upstream can check.
    pub fn has_upstream_validator(&self) -> bool {
        (!self.synthetic_etag && self.headers.contains_key(http::header::ETAG))
            || self.headers.contains_key(http::header::LAST_MODIFIED)
    }
}

/// What a request may do with the entry it found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve it.
    Fresh,
    /// Serve it stale while one background request refreshes it.
    Updating,
    /// Fetch (or revalidate) before anything is served.
    Refetch,
}

/// Decides [`Reuse`] for `e` at `now` (unix ms); `grace` is the stale-
/// while-revalidate window for `X-Bigcache-TTL` entries that name none.
/// RFC 9111 §4.2: a stored entry is served while fresh; past that, only
/// within the stale-while-revalidate window the response grants (or the
/// operator's `--grace`, for pages whose lifetime is the operator's own
/// header), while one request refreshes it, and never where `no-cache` or
/// `must-revalidate` forbid. Pure: the entry and the time in, a decision
/// out.
///
/// A soft-purged entry is the operator's word that the copy is outdated
/// but may stand in while it is refreshed: it is served stale (one
/// background refresh) for as long as an upstream error could serve it
/// (its stale-if-error, or `--stale-if-error`), and its own
/// stale-while-revalidate if that is longer.
pub fn reuse(e: &Entry, now: u64, w: &Windows) -> Reuse {
    if e.no_cache {
        return Reuse::Refetch;
    }
    if e.is_fresh(now) {
        return Reuse::Fresh;
    }
    let default = if e.ttl_header {
        w.grace
    } else {
        Duration::ZERO
    };
    let mut window = e.stale_while_revalidate.unwrap_or(default);
    if e.soft_purged_at.is_some() {
        window = window.max(e.stale_if_error.unwrap_or(w.stale_if_error));
    }
    if within(e, window, now) {
        Reuse::Updating
    } else {
        Reuse::Refetch
    }
}

/// Whether `e` may stand in for an upstream error at `now`;
/// `stale_if_error` is the window for entries that name none. It applies
/// to an `X-Bigcache-TTL` page on any error, and to other pages only when
/// the upstream could not be reached at all (`disconnected`): RFC 9111
/// §4.2.4 lets a disconnected cache serve stale, not one that got a 5xx.
pub fn serve_stale_on_error(
    e: &Entry,
    now: u64,
    stale_if_error: Duration,
    disconnected: bool,
) -> bool {
    let default = if e.ttl_header || disconnected || e.soft_purged_at.is_some() {
        stale_if_error
    } else {
        Duration::ZERO
    };
    within(e, e.stale_if_error.unwrap_or(default), now)
}

/// Whether `now` is within `window` past the end of `e`'s freshness, and
/// serving it stale is allowed at all (RFC 9111 §4.2.4: not where a
/// directive forbids it).
fn within(e: &Entry, window: Duration, now: u64) -> bool {
    if e.must_revalidate || e.no_cache {
        return false;
    }
    let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    now < e.fresh_until.saturating_add(window)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::policy::response_policy;
    use std::time::SystemTime;

    fn entry(cc: &str) -> Entry {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let p = response_policy(StatusCode::OK, &headers(cc), now).unwrap();
        let windows = Windows {
            grace: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(100),
        };
        Entry::new(
            StatusCode::OK,
            HeaderMap::new(),
            Default::default(),
            &p,
            1_000_000,
            windows,
        )
    }

    #[test]
    fn reuse_follows_freshness_then_the_stale_windows() {
        let sie = Duration::from_secs(100);
        let grace = &Windows {
            grace: Duration::from_secs(10),
            stale_if_error: sie,
        };
        // RFC 9111 freshness: no stale use the response does not grant...
        let e = entry("max-age=60");
        assert_eq!(reuse(&e, 1_000_000 + 59_999, grace), Reuse::Fresh);
        assert_eq!(reuse(&e, 1_000_000 + 60_000, grace), Reuse::Refetch);
        assert!(!serve_stale_on_error(&e, 1_000_000 + 60_000, sie, false));
        // ...but a disconnected cache may stand in for an unreachable
        // upstream (RFC 9111 §4.2.4).
        assert!(serve_stale_on_error(&e, 1_000_000 + 159_999, sie, true));
        assert!(!serve_stale_on_error(&e, 1_000_000 + 160_000, sie, true));
        // The response's own windows.
        let e = entry("max-age=60, stale-while-revalidate=600, stale-if-error=50");
        assert_eq!(reuse(&e, 1_000_000 + 500_000, grace), Reuse::Updating);
        assert!(serve_stale_on_error(&e, 1_000_000 + 109_999, sie, false));
        assert!(!serve_stale_on_error(&e, 1_000_000 + 110_000, sie, true));
        // Directives that forbid stale use.
        for cc in [
            "max-age=60, must-revalidate",
            "s-maxage=60",
            "max-age=60, proxy-revalidate",
        ] {
            let e = entry(cc);
            assert_eq!(reuse(&e, 1_000_000 + 60_000, grace), Reuse::Refetch, "{cc}");
            assert!(
                !serve_stale_on_error(&e, 1_000_000 + 60_000, sie, true),
                "{cc}"
            );
        }
        let e = entry("max-age=60, no-cache");
        assert_eq!(reuse(&e, 1_000_000, grace), Reuse::Refetch);
    }

    #[test]
    fn the_operators_ttl_header_gets_the_operators_windows() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let mut h = HeaderMap::new();
        h.insert("x-bigcache-ttl", "60s".parse().unwrap());
        let p = response_policy(StatusCode::OK, &h, now).unwrap();
        let windows = Windows {
            grace: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(100),
        };
        let e = Entry::new(StatusCode::OK, h, Bytes::new(), &p, 1_000_000, windows);
        let e = Entry::from_record(&e.to_record()).unwrap();
        assert!(e.ttl_header);
        let grace = &windows;
        assert_eq!(reuse(&e, 1_000_000 + 65_000, grace), Reuse::Updating);
        assert_eq!(reuse(&e, 1_000_000 + 70_000, grace), Reuse::Refetch);
        assert!(serve_stale_on_error(
            &e,
            1_000_000 + 150_000,
            windows.stale_if_error,
            false
        ));
    }

    fn headers(cc: &str) -> HeaderMap {
        let mut m = HeaderMap::new();
        m.insert("cache-control", cc.parse().unwrap());
        m
    }

    fn sample() -> Entry {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "text/html; charset=utf-8".parse().unwrap());
        headers.append("x-multi", "a".parse().unwrap());
        headers.append("x-multi", "b".parse().unwrap());
        Entry {
            status: StatusCode::NOT_FOUND,
            headers,
            body: Bytes::from_static(b"<h1>gone</h1>"),
            coding: Coding::Identity,
            quality: 0,
            identity_len: 13,
            stored_at: 1_000_000,
            fresh_until: 2_000_000,
            keep_until: Some(3_000_000),
            initial_age: 7,
            must_revalidate: true,
            no_cache: false,
            synthetic_etag: false,
            ttl_header: true,
            stale_while_revalidate: Some(Duration::from_secs(30)),
            stale_if_error: None,
            tags: Tags::new([&b"dataset-7"[..]]),
            soft_purged_at: None,
            served: Default::default(),
            shell: Default::default(),
        }
    }

    #[test]
    fn a_soft_purged_entry_is_stale_from_then_and_served_while_refreshed() {
        let windows = Windows {
            grace: Duration::from_secs(10),
            stale_if_error: Duration::from_secs(100),
        };
        // RFC 9111 freshness for a day, no stale window of its own.
        let e = entry("max-age=86400");
        let purged_at = 1_000_000 + 5_000;
        let rec = Record {
            stale_since: Some(purged_at),
            ..e.to_record()
        };
        let e = Entry::from_record(&rec).unwrap();
        assert!(!e.is_fresh(purged_at), "never fresh again");
        assert_eq!(e.fresh_until, purged_at);
        // Served stale while refreshed, and on errors, for the
        // stale-if-error window after the purge; then fetched.
        assert_eq!(reuse(&e, purged_at + 99_999, &windows), Reuse::Updating);
        assert_eq!(reuse(&e, purged_at + 100_000, &windows), Reuse::Refetch);
        assert!(serve_stale_on_error(
            &e,
            purged_at + 99_999,
            windows.stale_if_error,
            false
        ));
        assert!(!serve_stale_on_error(
            &e,
            purged_at + 100_000,
            windows.stale_if_error,
            true
        ));
        // must-revalidate still forbids any stale use.
        let e = entry("max-age=86400, must-revalidate");
        let rec = Record {
            stale_since: Some(purged_at),
            ..e.to_record()
        };
        let e = Entry::from_record(&rec).unwrap();
        assert_eq!(reuse(&e, purged_at, &windows), Reuse::Refetch);
    }

    #[test]
    fn round_trips_through_a_record() {
        let e = sample();
        let rec = Record::decode(&Bytes::from(e.to_record().encode()))
            .unwrap()
            .record;
        let back = Entry::from_record(&rec).unwrap();
        assert_eq!(back.status, e.status);
        assert_eq!(back.headers, e.headers);
        assert_eq!(back.body, e.body);
        assert_eq!(
            (
                back.stored_at,
                back.fresh_until,
                back.keep_until,
                back.initial_age
            ),
            (e.stored_at, e.fresh_until, e.keep_until, e.initial_age)
        );
        assert!(back.must_revalidate && !back.synthetic_etag);
        assert_eq!(back.stale_while_revalidate, Some(Duration::from_secs(30)));
        assert_eq!(back.stale_if_error, None);
    }

    #[test]
    fn a_coded_body_keeps_its_coding_and_length() {
        let page = Bytes::from("<li>a row of a table</li>\n".repeat(100));
        let mut plain = sample();
        plain.identity_len = page.len() as u64;
        plain.body = page.clone();
        let packed = crate::proxy::compress::pack_for_test(&page);
        let coded = plain.packed(Coding::Br, 5, packed.clone());
        let back = Entry::from_record(&coded.to_record()).unwrap();
        assert_eq!((back.coding, back.quality), (Coding::Br, 5));
        assert_eq!(back.identity_len, page.len() as u64);
        assert_eq!(back.body, packed);
        assert_eq!(back.identity_body().unwrap(), page);
        // A recorded length the body does not decode to is an error, not
        // another page.
        let mut wrong = back.packed(Coding::Br, 5, packed);
        wrong.identity_len -= 1;
        assert!(wrong.identity_body().is_err());
    }

    /// Metadata version 1 (every record before bigcache compressed) reads
    /// as an identity body; a version-2 identity body that is not its
    /// recorded length, and an unknown coding, are unreadable.
    #[test]
    fn earlier_and_damaged_codings() {
        let rec = sample().to_record();
        let meta = &rec.meta;
        // Version 1: the same fields without the coding, the quality and
        // the length.
        let fixed = 1 + 2 + 8 + 8 + 1 + 4 + 4;
        let mut v1 = vec![1u8];
        v1.extend_from_slice(&meta[1..fixed]);
        v1.extend_from_slice(&meta[fixed + 10..]);
        let old = Record {
            meta: Bytes::from(v1),
            ..rec.clone()
        };
        let e = Entry::from_record(&old).unwrap();
        assert_eq!((e.coding, e.identity_len), (Coding::Identity, 13));
        assert_eq!(e.headers, sample().headers);
        let with = |at: usize, b: u8| {
            let mut m = meta.to_vec();
            m[at] = b;
            Record {
                meta: Bytes::from(m),
                ..rec.clone()
            }
        };
        assert!(Entry::from_record(&with(fixed, 2)).is_err(), "no coding 2");
        assert!(
            Entry::from_record(&with(fixed + 1, 5)).is_err(),
            "identity at 5"
        );
        assert!(Entry::from_record(&with(fixed + 2, 14)).is_err(), "length");
        assert!(Entry::from_record(&with(0, 3)).is_err(), "version 3");
        assert!(
            Entry::from_record(&with(fixed, 1)).is_ok(),
            "br, checked when decoded"
        );
    }

    #[test]
    fn truncated_or_padded_meta_is_an_error() {
        let rec = sample().to_record();
        for n in 0..rec.meta.len() {
            let cut = Record {
                meta: rec.meta.slice(..n),
                ..rec.clone()
            };
            assert!(Entry::from_record(&cut).is_err(), "cut at {n}");
        }
        let mut padded = rec.meta.to_vec();
        padded.push(0);
        let padded = Record {
            meta: Bytes::from(padded),
            ..rec
        };
        assert!(Entry::from_record(&padded).is_err());
    }

    #[test]
    fn age_counts_residence() {
        let e = sample();
        assert_eq!(e.age(1_000_000), 7);
        assert_eq!(e.age(1_010_999), 17);
    }
}
