//! What may be cached, and for how long: the proxy's cacheability policy.
//!
//! Request side ([`request_bypass`]): a request carrying `Authorization`, a
//! session cookie (configurable names, default `sessionid`) or a `Range`
//! header bypasses the cache both ways: it is never answered from the
//! cache and its response is never stored. A logged-in user never gets an
//! anonymous page and never leaves theirs behind.
//!
//! Response side ([`response_policy`]): a response is stored only when the
//! upstream opted in and it is safe to share:
//! - lifetime from `X-Bigcache-TTL` (humantime), else RFC 9111 shared-cache
//!   freshness: `s-maxage`, then `max-age`, then `Expires` − `Date`, less
//!   any `Age` already reported. No lifetime, no caching: bigcache applies no
//!   heuristic freshness;
//! - never with `Set-Cookie`, `Cache-Control: private` or `no-store`, or
//!   `Vary: *`;
//! - status 200 by default; 301, 404 and other statuses only when
//!   `X-Bigcache-TTL` names a lifetime explicitly;
//! - `no-cache` is stored but revalidated before every reuse;
//!   `must-revalidate`/`proxy-revalidate` forbid serving it stale.
//!
//! Every function here is pure: the request's or response's head and the
//! time in, a decision out. Written here rather than with
//! `http-cache-semantics` because bigcache's rules are narrower than a
//! general cache's (explicit opt-in, no heuristic freshness, the TTL header,
//! status rules) and the decisions must feed the one [`Reason`] that drives
//! `X-Cache`, logs and metrics alike.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

use super::decision::Reason;
use crate::ttl;

pub const TTL_HEADER: &str = "x-bigcache-ttl";

/// Whether a GET/HEAD request must skip the cache entirely. `hosts` is the
/// site's hosts (`--host`, in `key::host_name` form, port included): a
/// request for another `Host`, for several, or for none bigcache can read,
/// bypasses, since the key holds no host.
pub fn request_bypass(
    headers: &HeaderMap,
    session_cookies: &[String],
    hosts: &[String],
) -> Option<Reason> {
    let known = headers.get_all(header::HOST).iter().count() == 1
        && headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .and_then(super::key::host_name)
            .is_some_and(|h| hosts.iter().any(|listed| *listed == *h));
    if !known {
        return Some(Reason::UnknownHost);
    }
    if headers.contains_key(header::AUTHORIZATION) {
        return Some(Reason::Authorization);
    }
    if headers.contains_key(header::RANGE) {
        return Some(Reason::Range);
    }
    // Bytes, not `to_str`: a cookie header with one non-ASCII value must
    // still be searched, or its session would go unnoticed.
    let has_session = headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .map(|pair| django_strip(pair.split(|&b| b == b'=').next().unwrap_or(pair)))
        .any(|name| session_cookies.iter().any(|s| s.as_bytes() == name));
    has_session.then_some(Reason::SessionCookie)
}

/// What Django's cookie parser strips around a name: Python's
/// `str.strip()` on the header decoded as Latin-1, so besides ASCII
/// whitespace also the separators 0x1C-0x1F, NEL (0x85) and NBSP (0xA0).
/// Trimming less would let `Cookie: \xA0sessionid=...` reach Django as a
/// session while bigcache saw none.
fn django_strip(b: &[u8]) -> &[u8] {
    let space = |c: &u8| {
        matches!(
            c,
            b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1c..=0x1f | b' ' | 0x85 | 0xa0
        )
    };
    let start = b.iter().position(|c| !space(c)).unwrap_or(b.len());
    let end = b.iter().rposition(|c| !space(c)).map_or(start, |i| i + 1);
    &b[start..end]
}

/// The `Cache-Control` directives bigcache acts on.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CacheControl {
    pub s_maxage: Option<u64>,
    pub max_age: Option<u64>,
    pub private: bool,
    pub no_store: bool,
    pub no_cache: bool,
    pub must_revalidate: bool,
    pub stale_while_revalidate: Option<u64>,
    pub stale_if_error: Option<u64>,
}

impl CacheControl {
    pub fn parse(headers: &HeaderMap) -> CacheControl {
        let mut cc = CacheControl::default();
        let directives = headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','));
        for d in directives {
            let (name, arg) = match d.split_once('=') {
                Some((n, a)) => (n.trim(), Some(a.trim().trim_matches('"'))),
                None => (d.trim(), None),
            };
            let secs = || arg.and_then(|a| a.parse::<u64>().ok());
            match name.to_ascii_lowercase().as_str() {
                "s-maxage" => cc.s_maxage = secs().or(Some(0)),
                "max-age" => cc.max_age = secs().or(Some(0)),
                // `private="Set-Cookie"` (field-limited) is treated as fully
                // private: a shared cache must not guess which part is safe.
                "private" => cc.private = true,
                "no-store" => cc.no_store = true,
                "no-cache" => cc.no_cache = true,
                "must-revalidate" | "proxy-revalidate" => cc.must_revalidate = true,
                "stale-while-revalidate" => cc.stale_while_revalidate = secs(),
                "stale-if-error" => cc.stale_if_error = secs(),
                _ => {}
            }
        }
        cc
    }
}

/// The decision for a storable response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Storable {
    /// How long the response is fresh from now (after subtracting `Age`);
    /// zero for `no-cache`, which must be revalidated before every reuse.
    pub fresh_for: Duration,
    /// How long the response is worth keeping for revalidation: the
    /// lifetime even when `no-cache` makes it stale at once.
    pub keep_for: Duration,
    /// `Age` the upstream reported, carried into the `Age` we send.
    pub initial_age: u64,
    /// Revalidate before every reuse (`no-cache`).
    pub no_cache: bool,
    /// Never serve stale (`must-revalidate`, `proxy-revalidate`).
    pub must_revalidate: bool,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
}

fn capped(secs: u64) -> Duration {
    Duration::from_secs(secs).min(ttl::MAX_TTL)
}

fn header_str(headers: &HeaderMap, name: impl header::AsHeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn http_date(headers: &HeaderMap, name: header::HeaderName) -> Option<SystemTime> {
    header_str(headers, name).and_then(|v| httpdate::parse_http_date(v.trim()).ok())
}

/// Decides whether a response to a cacheable GET may be stored, and for how
/// long. `now` is the time the response arrived.
pub fn response_policy(
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Storable, Reason> {
    // A directive bigcache cannot read might be `private` or `no-store`.
    let unreadable = |name| headers.get_all(name).iter().any(|v| v.to_str().is_err());
    if unreadable(header::CACHE_CONTROL) || unreadable(header::VARY) {
        return Err(Reason::Unparsable);
    }
    let cc = CacheControl::parse(headers);
    if cc.no_store {
        return Err(Reason::NoStore);
    }
    if cc.private {
        return Err(Reason::Private);
    }
    if headers.contains_key(header::SET_COOKIE) {
        return Err(Reason::SetCookie);
    }
    let vary_star = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.trim() == "*");
    if vary_star {
        return Err(Reason::VaryStar);
    }
    let age = header_str(headers, header::AGE)
        .and_then(|a| a.trim().parse::<u64>().ok())
        .unwrap_or(0);

    let explicit = match header_str(headers, TTL_HEADER) {
        Some(text) => Some(ttl::parse(text).map_err(|_| Reason::BadTtl)?),
        None if headers.contains_key(TTL_HEADER) => return Err(Reason::BadTtl),
        None => None,
    };
    if explicit.is_none() && status != StatusCode::OK {
        return Err(Reason::Status);
    }
    let lifetime = match explicit {
        // The TTL header is bigcache's own instruction: `Age` is not
        // subtracted from it.
        Some(d) => d,
        None => {
            let secs = if let Some(s) = cc.s_maxage.or(cc.max_age) {
                s
            } else if let Some(expires) = headers.get(header::EXPIRES) {
                // An invalid Expires (e.g. "0") means already expired.
                let expires = expires
                    .to_str()
                    .ok()
                    .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
                let date = http_date(headers, header::DATE).unwrap_or(now);
                expires
                    .and_then(|e| e.duration_since(date).ok())
                    .map_or(0, |d| d.as_secs())
            } else {
                return Err(Reason::NoLifetime);
            };
            Duration::from_secs(secs.saturating_sub(age))
        }
    };
    // `no-cache` alone is no opt-in: without a lifetime there is nothing
    // to keep.
    if lifetime.is_zero() {
        return Err(Reason::NoLifetime);
    }
    let lifetime = lifetime.min(ttl::MAX_TTL);
    Ok(Storable {
        fresh_for: if cc.no_cache {
            Duration::ZERO
        } else {
            lifetime
        },
        keep_for: lifetime,
        initial_age: if explicit.is_some() { 0 } else { age },
        no_cache: cc.no_cache,
        // s-maxage implies proxy-revalidate for a shared cache (RFC 9111
        // §5.2.2.10), unless bigcache's own TTL header set the lifetime.
        must_revalidate: cc.must_revalidate || (explicit.is_none() && cc.s_maxage.is_some()),
        stale_while_revalidate: cc.stale_while_revalidate.map(capped),
        stale_if_error: cc.stale_if_error.map(capped),
    })
}

/// Whether a response to a cacheable GET may be stored: [`response_policy`],
/// and a body no larger than `max_entry` when its length is announced
/// (one that grows past it while being read is caught there).
pub fn storable(
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
    announced_len: Option<u64>,
    max_entry: usize,
) -> Result<Storable, Reason> {
    let p = response_policy(status, headers, now)?;
    if announced_len.is_some_and(|n| n > max_entry as u64) {
        return Err(Reason::TooLarge);
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        m
    }

    fn fresh(status: u16, pairs: &[(&str, &str)]) -> Result<u64, Reason> {
        let now = httpdate::parse_http_date("Tue, 24 Nov 2026 12:00:00 GMT").unwrap();
        response_policy(StatusCode::from_u16(status).unwrap(), &h(pairs), now)
            .map(|s| s.fresh_for.as_secs())
    }

    #[test]
    fn lifetime_sources_in_order() {
        assert_eq!(fresh(200, &[("x-bigcache-ttl", "28d")]), Ok(28 * 86400));
        assert_eq!(
            fresh(
                200,
                &[("x-bigcache-ttl", "1h"), ("cache-control", "max-age=5")]
            ),
            Ok(3600)
        );
        assert_eq!(
            fresh(
                200,
                &[("cache-control", "public, max-age=60, s-maxage=600")]
            ),
            Ok(600)
        );
        assert_eq!(fresh(200, &[("cache-control", "max-age=60")]), Ok(60));
        assert_eq!(
            fresh(200, &[("cache-control", "max-age=60"), ("age", "15")]),
            Ok(45)
        );
        assert_eq!(
            fresh(
                200,
                &[
                    ("date", "Tue, 24 Nov 2026 12:00:00 GMT"),
                    ("expires", "Tue, 24 Nov 2026 13:00:00 GMT"),
                ]
            ),
            Ok(3600)
        );
        assert_eq!(
            fresh(
                200,
                &[
                    ("date", "Tue, 24 Nov 2026 12:00:00 GMT"),
                    ("expires", "Tue, 24 Nov 2026 13:00:00 GMT"),
                    ("age", "600"),
                ]
            ),
            Ok(3000)
        );
        assert_eq!(fresh(200, &[("expires", "0")]), Err(Reason::NoLifetime));
        assert_eq!(
            fresh(200, &[("cache-control", "max-age=10"), ("age", "20")]),
            Err(Reason::NoLifetime)
        );
    }

    #[test]
    fn no_heuristic_freshness() {
        assert_eq!(fresh(200, &[]), Err(Reason::NoLifetime));
        assert_eq!(
            fresh(200, &[("last-modified", "Tue, 24 Nov 2020 12:00:00 GMT")]),
            Err(Reason::NoLifetime)
        );
    }

    #[test]
    fn never_cached() {
        let ttl = ("x-bigcache-ttl", "1h");
        assert_eq!(
            fresh(200, &[ttl, ("set-cookie", "a=b")]),
            Err(Reason::SetCookie)
        );
        assert_eq!(
            fresh(200, &[ttl, ("cache-control", "private")]),
            Err(Reason::Private)
        );
        assert_eq!(
            fresh(200, &[ttl, ("cache-control", "no-store")]),
            Err(Reason::NoStore)
        );
        assert_eq!(
            fresh(200, &[ttl, ("vary", "Accept, *")]),
            Err(Reason::VaryStar)
        );
        assert_eq!(
            fresh(200, &[("x-bigcache-ttl", "soonish")]),
            Err(Reason::BadTtl)
        );
    }

    #[test]
    fn statuses_other_than_200_need_the_ttl_header() {
        assert_eq!(
            fresh(404, &[("cache-control", "max-age=60")]),
            Err(Reason::Status)
        );
        assert_eq!(
            fresh(301, &[("cache-control", "max-age=60")]),
            Err(Reason::Status)
        );
        assert_eq!(fresh(404, &[("x-bigcache-ttl", "5m")]), Ok(300));
        assert_eq!(fresh(301, &[("x-bigcache-ttl", "1d")]), Ok(86400));
    }

    #[test]
    fn revalidation_flags() {
        let now = SystemTime::now();
        let s = response_policy(
            StatusCode::OK,
            &h(&[(
                "cache-control",
                "no-cache, max-age=60, stale-while-revalidate=30, stale-if-error=600",
            )]),
            now,
        )
        .unwrap();
        assert!(s.no_cache && !s.must_revalidate);
        assert_eq!((s.fresh_for.as_secs(), s.keep_for.as_secs()), (0, 60));
        assert_eq!(s.stale_while_revalidate, Some(Duration::from_secs(30)));
        assert_eq!(s.stale_if_error, Some(Duration::from_secs(600)));
        let s = response_policy(
            StatusCode::OK,
            &h(&[("cache-control", "max-age=60, must-revalidate")]),
            now,
        )
        .unwrap();
        assert!(s.must_revalidate);
        // no-cache without a lifetime is no opt-in.
        assert_eq!(
            response_policy(StatusCode::OK, &h(&[("cache-control", "no-cache")]), now),
            Err(Reason::NoLifetime)
        );
    }

    #[test]
    fn storable_needs_the_policy_and_an_announced_size_within_the_limit() {
        let now = SystemTime::now();
        let ttl = h(&[("x-bigcache-ttl", "1h")]);
        assert!(storable(StatusCode::OK, &ttl, now, Some(100), 100).is_ok());
        assert!(storable(StatusCode::OK, &ttl, now, None, 100).is_ok());
        assert_eq!(
            storable(StatusCode::OK, &ttl, now, Some(101), 100),
            Err(Reason::TooLarge)
        );
        assert_eq!(
            storable(StatusCode::OK, &h(&[]), now, Some(1), 100),
            Err(Reason::NoLifetime)
        );
    }

    /// [`request_bypass`] for a request to a known host.
    fn bypass(headers: &HeaderMap, names: &[String]) -> Option<Reason> {
        let mut headers = headers.clone();
        headers.insert("host", HeaderValue::from_static("example.org"));
        request_bypass(&headers, names, &["example.org".to_string()])
    }

    #[test]
    fn requests_for_other_hosts_bypass() {
        let hosts = vec!["example.org".to_string()];
        let names = vec!["sessionid".to_string()];
        for (host, known) in [
            (&b"example.org"[..], true),
            (b"EXAMPLE.org.", true),
            (b"example.org:8080", false),
            (b"evil.example", false),
            (b"example.org.evil", false),
            (b"\xe9xample.org", false),
        ] {
            let mut m = HeaderMap::new();
            m.insert("host", HeaderValue::from_bytes(host).unwrap());
            let expect = if known {
                None
            } else {
                Some(Reason::UnknownHost)
            };
            assert_eq!(request_bypass(&m, &names, &hosts), expect, "{host:?}");
        }
        assert_eq!(
            request_bypass(&HeaderMap::new(), &names, &hosts),
            Some(Reason::UnknownHost)
        );
    }

    #[test]
    fn request_bypass_rules() {
        let names = vec!["sessionid".to_string()];
        assert_eq!(
            bypass(&h(&[("authorization", "Basic x")]), &names),
            Some(Reason::Authorization)
        );
        assert_eq!(
            bypass(&h(&[("cookie", "_ga=1; sessionid=abc")]), &names),
            Some(Reason::SessionCookie)
        );
        assert_eq!(bypass(&h(&[("cookie", "notsessionid=abc")]), &names), None);
        assert_eq!(bypass(&h(&[("cookie", "csrftoken=abc")]), &names), None);
        assert_eq!(
            bypass(&h(&[("range", "bytes=0-10")]), &names),
            Some(Reason::Range)
        );
        assert_eq!(bypass(&h(&[]), &names), None);
        let mut m = HeaderMap::new();
        m.insert(
            "cookie",
            HeaderValue::from_bytes("city=Zürich; sessionid=abc".as_bytes()).unwrap(),
        );
        assert_eq!(bypass(&m, &names), Some(Reason::SessionCookie));
        for padded in [
            &b"\xa0sessionid=abc"[..],
            b"a=1;\x85sessionid =x",
            b"\tsessionid\xa0=x",
        ] {
            let mut m = HeaderMap::new();
            m.insert("cookie", HeaderValue::from_bytes(padded).unwrap());
            assert_eq!(
                bypass(&m, &names),
                Some(Reason::SessionCookie),
                "{padded:?} is a session to Django"
            );
        }
    }

    #[test]
    fn unreadable_cache_control_or_vary_is_never_stored() {
        let ttl = ("x-bigcache-ttl", "1h");
        for name in ["cache-control", "vary"] {
            let mut m = h(&[ttl]);
            m.insert(
                http::HeaderName::from_static(name),
                HeaderValue::from_bytes("private, \u{e9}".as_bytes()).unwrap(),
            );
            assert_eq!(
                response_policy(StatusCode::OK, &m, SystemTime::now()),
                Err(Reason::Unparsable),
                "{name}"
            );
        }
    }
}
