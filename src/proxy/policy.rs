//! What may be cached, and for how long: the proxy's cacheability policy.
//!
//! Request side ([`request_bypass`]): a request carrying `Authorization` or
//! a session cookie (configurable names, default `sessionid`) bypasses the
//! cache both ways: it is never answered from the
//! cache and its response is never stored. A logged-in user never gets an
//! anonymous page and never leaves theirs behind.
//!
//! Response side ([`response_policy`]): a response is stored only when the
//! upstream opted in and it is safe to share:
//! - lifetime from `X-Bigcache-TTL` (humantime), else RFC 9111 shared-cache
//!   freshness from the first targeted field present (`Bigcache-Cache-
//!   Control`, `CDN-Cache-Control`) or `Cache-Control`: `s-maxage`, then
//!   `max-age`, then (only without a targeted field) `Expires` − `Date`,
//!   less any `Age` already reported (an unreadable `Age` makes it stale).
//!   No lifetime, no caching: bigcache applies no heuristic freshness;
//! - never with `Set-Cookie`, `private` or `no-store` (in `Cache-Control`
//!   or the governing targeted field), or `Vary: *`;
//! - any final status with a lifetime, but 206 and 304, client errors other
//!   than 404/405/410/414, and 5xx without `X-Bigcache-TTL`;
//! - `no-cache` is stored but revalidated before every reuse;
//!   `must-revalidate`/`proxy-revalidate`/`s-maxage` forbid serving it
//!   stale. Directives are read by [`super::directives`].
//!
//! Every function here is pure: the request's or response's head and the
//! time in, a decision out. Written here rather than with
//! `http-cache-semantics` because bigcache's rules are narrower than a
//! general cache's (explicit opt-in, no heuristic freshness, the TTL header,
//! status rules) and the decisions must feed the one [`Reason`] that drives
//! `X-Cache`, logs and metrics alike.

use std::borrow::Cow;
use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header};

use super::decision::Reason;
use super::directives::Directives;
use super::fields::{Fields, Known};
use super::tags;
use crate::store::record::Tags;
use crate::ttl;

pub const TTL_HEADER: &str = "x-bigcache-ttl";

/// The request's one `Host` in the site's own form (`key::host_name`:
/// `Example.ORG.` is `example.org`), when it is one of `hosts` (`--host`,
/// in that form, port included). `None` for another host, for several, or
/// for none bigcache can read: such a request bypasses the cache (a
/// forged host must not get pages rendered with its links stored).
pub fn known_host<'h, F: Fields + ?Sized>(
    headers: &'h F,
    hosts: &'h [String],
) -> Option<Cow<'h, str>> {
    let mut all = headers.known(Known::Host);
    let (Some(host), None) = (all.next(), all.next()) else {
        return None;
    };
    // The usual request names a host as listed: `hosts` are in the site's
    // form already (`host_name` of a listed host is itself).
    if let Some(listed) = hosts.iter().find(|l| l.as_bytes() == host) {
        return Some(Cow::Borrowed(listed));
    }
    // `from_utf8`, not `fields::text`: `host_name` takes only the bytes a
    // host name may hold, all of them visible ASCII.
    let name = super::key::host_name(std::str::from_utf8(host).ok()?)?;
    hosts.iter().any(|listed| *listed == *name).then_some(name)
}

/// Whether a GET/HEAD request must skip the cache entirely; `known_host`:
/// whether [`known_host`] found its host.
pub fn request_bypass<F: Fields + ?Sized>(
    headers: &F,
    known_host: bool,
    session_cookies: &[String],
) -> Option<Reason> {
    if !known_host {
        return Some(Reason::UnknownHost);
    }
    if headers.known(Known::Authorization).next().is_some() {
        return Some(Reason::Authorization);
    }
    let has_session = headers
        .known(Known::Cookie)
        .any(|v| names_a_session(v, session_cookies));
    has_session.then_some(Reason::SessionCookie)
}

/// Whether one `Cookie` value carries one of `session_cookies`. Bytes, not
/// `to_str`: a cookie header with one non-ASCII value must still be
/// searched, or its session would go unnoticed.
pub fn names_a_session(cookie: &[u8], session_cookies: &[String]) -> bool {
    // A name that is nowhere in the header is in no pair of it: most
    // requests (analytics cookies, none) are settled by this search.
    // (A plain search: building a `memmem::Finder` per call costs more
    // than it saves on a header this short.)
    let contains = |name: &[u8]| {
        name.first().is_some_and(|&first| {
            memchr::memchr_iter(first, cookie).any(|i| cookie[i..].starts_with(name))
        })
    };
    let candidates = session_cookies.iter().any(|s| contains(s.as_bytes()));
    candidates
        && cookie
            .split(|&b| b == b';')
            .map(cookie_name)
            .any(|name| session_cookies.iter().any(|s| s.as_bytes() == name))
}

/// A `Cookie` pair's name as Django's parser reads it: up to the first
/// `=`, stripped as [`django_strip`] strips.
pub fn cookie_name(pair: &[u8]) -> &[u8] {
    django_strip(pair.split(|&b| b == b'=').next().unwrap_or(pair))
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
    /// The lifetime came from `X-Bigcache-TTL`: the operator's windows
    /// (`--grace`) may serve it stale, which RFC 9111 forbids otherwise.
    pub ttl_header: bool,
    /// Never serve stale (`must-revalidate`, `proxy-revalidate`).
    pub must_revalidate: bool,
    pub stale_while_revalidate: Option<Duration>,
    pub stale_if_error: Option<Duration>,
    /// The surrogate keys it is indexed under (`proxy::tags`).
    pub tags: Tags,
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

/// The targeted fields, most specific first (RFC 9213): where one is
/// present it governs bigcache's decisions instead of `Cache-Control`.
pub const TARGETED: [&str; 2] = ["bigcache-cache-control", "cdn-cache-control"];
/// bigcache's own targeted field, removed before a response leaves, as
/// `X-Bigcache-TTL` is.
pub const OWN_FIELD: &str = "bigcache-cache-control";

/// The cookies a page's content was made from, as the site's developer
/// states them through Django's connector (`@bigcache_page(cookies=[])`):
/// with none named, `Vary: Cookie` (which Django adds whenever a view
/// touches the session, even to render an anonymous page) is not keyed on
/// (`key::vary_names`). Kept with the stored page, removed before a
/// response leaves.
pub const VARY_COOKIES: &str = "x-bigcache-vary-cookies";

/// Removes bigcache's own response fields from what a client is sent.
pub fn strip_own(headers: &mut HeaderMap) {
    // Names made once: removing by a `&str` parses the name on each call,
    // and every page read from disk is stripped for its first answer.
    const OWN: [http::HeaderName; 4] = [
        http::HeaderName::from_static(TTL_HEADER),
        http::HeaderName::from_static(OWN_FIELD),
        http::HeaderName::from_static(VARY_COOKIES),
        // Addressed to surrogates, bigcache the one here (`proxy::esi`).
        super::esi::SURROGATE_CONTROL,
    ];
    for name in &OWN {
        headers.remove(name);
    }
}

fn directives(headers: &HeaderMap, name: &str) -> Result<Option<Directives>, Reason> {
    Directives::parse(headers.get_all(name).iter().map(|v| v.as_bytes()))
        .map_err(|_| Reason::Unparsable)
}

/// Whether `status` may be stored: any final status but 206 (a part is
/// not the page) and 304 (no page at all), with these limits. 5xx only with
/// `X-Bigcache-TTL` (an outage must not be kept because a proxy on the way
/// added `max-age`); of the client errors only 404, 405, 410 and 414, the
/// ones RFC 9110 §15.1 calls heuristically cacheable: the others (a 400
/// for an odd header, a 403, a 429) may be the answer to one client's
/// headers, which are not in the key, and stored they would be everyone's
/// (cache-poisoned denial of service).
fn status_storable(status: StatusCode, ttl_header: bool) -> bool {
    match status.as_u16() {
        206 | 304 => false,
        200..=399 => true,
        404 | 405 | 410 | 414 => true,
        500..=599 => ttl_header,
        _ => false,
    }
}

/// `Age` in seconds, per RFC 9111 §5.1: of a list (several lines, or
/// commas), the first member counts; a value that is not a non-negative
/// integer is ignored (0). An age past `u64` is `u64::MAX`.
fn age(headers: &HeaderMap) -> u64 {
    let Some(first) = headers.get(header::AGE) else {
        return 0;
    };
    let member = first.as_bytes().split(|&b| b == b',').next().unwrap_or(b"");
    let member = member.trim_ascii();
    if member.is_empty() || !member.iter().all(u8::is_ascii_digit) {
        return 0;
    }
    // All digits: only too many of them fails to parse.
    std::str::from_utf8(member)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// Decides whether a response to a cacheable GET may be stored, and for how
/// long. `now` is the time the response arrived.
///
/// Precedence for the lifetime: `X-Bigcache-TTL`, then the first targeted
/// field present ([`TARGETED`]), then `Cache-Control`, then `Expires`
/// (only when no targeted field is present). A targeted field's `private`,
/// `no-store` and `no-cache` apply too; `Cache-Control: private` and
/// `no-store` are never overridden, whatever a targeted field says (RFC
/// 9213 lets it override them; a browser-private page shared by a header
/// mix-up is the one mistake a shared cache must not make).
pub fn response_policy(
    status: StatusCode,
    headers: &HeaderMap,
    now: SystemTime,
) -> Result<Storable, Reason> {
    // A directive bigcache cannot read might be `private` or `no-store`.
    if headers
        .get_all(header::VARY)
        .iter()
        .any(|v| v.to_str().is_err())
    {
        return Err(Reason::Unparsable);
    }
    let cc = directives(headers, header::CACHE_CONTROL.as_str())?.unwrap_or_default();
    if cc.no_store {
        return Err(Reason::NoStore);
    }
    if cc.private {
        return Err(Reason::Private);
    }
    let mut targeted = None;
    for name in TARGETED {
        // One with no directive bigcache knows is ignored (RFC 9213 §2.1).
        if let Some(d) = directives(headers, name)?.filter(|d| d.known) {
            targeted = Some(d);
            break;
        }
    }
    let d = targeted.as_ref().unwrap_or(&cc);
    if d.no_store {
        return Err(Reason::NoStore);
    }
    if d.private {
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

    let explicit = match header_str(headers, TTL_HEADER) {
        Some(text) => Some(ttl::parse(text).map_err(|_| Reason::BadTtl)?),
        None if headers.contains_key(TTL_HEADER) => return Err(Reason::BadTtl),
        None => None,
    };
    if !status_storable(status, explicit.is_some()) {
        return Err(Reason::Status);
    }
    let age = age(headers);
    let lifetime = match explicit {
        // The TTL header is bigcache's own instruction: `Age` is not
        // subtracted from it.
        Some(d) => d,
        None => {
            let secs = if let Some(s) = d.s_maxage.or(d.max_age) {
                s
            } else if targeted.is_none()
                && let Some(expires) = headers.get(header::EXPIRES)
            {
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
    let tags = tags::from_headers(headers).map_err(|e| {
        tracing::warn!(error = %e, "response tags break the limits; not stored");
        Reason::Tags
    })?;
    Ok(Storable {
        fresh_for: if d.no_cache { Duration::ZERO } else { lifetime },
        keep_for: lifetime,
        initial_age: if explicit.is_some() { 0 } else { age },
        no_cache: d.no_cache,
        ttl_header: explicit.is_some(),
        // s-maxage implies proxy-revalidate for a shared cache (RFC 9111
        // §5.2.2.10), unless bigcache's own TTL header set the lifetime.
        must_revalidate: d.must_revalidate
            || d.proxy_revalidate
            || (explicit.is_none() && d.s_maxage.is_some()),
        stale_while_revalidate: d.stale_while_revalidate.map(capped),
        stale_if_error: d.stale_if_error.map(capped),
        tags,
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
    use crate::proxy::test_headers as h;
    use http::HeaderValue;

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
    fn statuses_with_explicit_freshness() {
        let ma = ("cache-control", "max-age=60");
        for ok in [200, 203, 204, 300, 301, 302, 307, 308, 404, 405, 410, 414] {
            assert_eq!(fresh(ok, &[ma]), Ok(60), "{ok}");
        }
        // A part, no page, a client error one client's headers may have
        // caused, an outage: not without the operator's header.
        for no in [206, 304, 400, 403, 429, 500, 501, 503] {
            assert_eq!(fresh(no, &[ma]), Err(Reason::Status), "{no}");
        }
        assert_eq!(fresh(503, &[("x-bigcache-ttl", "5m")]), Ok(300));
        assert_eq!(fresh(206, &[("x-bigcache-ttl", "5m")]), Err(Reason::Status));
        assert_eq!(fresh(301, &[("x-bigcache-ttl", "1d")]), Ok(86400));
        // Still no heuristic freshness for any of them.
        assert_eq!(fresh(404, &[]), Err(Reason::NoLifetime));
    }

    /// RFC 9111 §5.1: a list's first member counts, an invalid value is
    /// ignored (these were all taken for "stale", never reused).
    #[test]
    fn age_is_its_first_member_and_an_invalid_one_is_ignored() {
        let ma = ("cache-control", "max-age=600");
        assert_eq!(fresh(200, &[ma, ("age", "100, 0")]), Ok(500));
        assert_eq!(fresh(200, &[ma, ("age", "0, old")]), Ok(600));
        for invalid in ["old, 0", "-5", "abc", "1.5", "", " "] {
            assert_eq!(fresh(200, &[ma, ("age", invalid)]), Ok(600), "{invalid:?}");
        }
        let mut two = h(&[ma, ("age", "100")]);
        two.append("age", "2".parse().unwrap());
        let now = SystemTime::now();
        let p = response_policy(StatusCode::OK, &two, now).unwrap();
        assert_eq!(p.fresh_for, Duration::from_secs(500));
        assert_eq!(p.initial_age, 100);
        assert_eq!(fresh(200, &[ma, ("age", " 100 ")]), Ok(500));
        assert_eq!(
            fresh(200, &[ma, ("age", "99999999999999999999999")]),
            Err(Reason::NoLifetime),
            "older than any lifetime"
        );
    }

    #[test]
    fn targeted_fields_take_precedence() {
        // CDN-Cache-Control governs the shared cache; browsers get none.
        assert_eq!(
            fresh(
                200,
                &[
                    ("cache-control", "no-cache, max-age=0"),
                    ("cdn-cache-control", "max-age=600")
                ]
            ),
            Ok(600)
        );
        // bigcache's own field over the CDNs'.
        assert_eq!(
            fresh(
                200,
                &[
                    ("cache-control", "max-age=5"),
                    ("cdn-cache-control", "max-age=600"),
                    ("bigcache-cache-control", "max-age=3600"),
                ]
            ),
            Ok(3600)
        );
        // Restrictions in a targeted field apply.
        assert_eq!(
            fresh(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "no-store")
                ]
            ),
            Err(Reason::NoStore)
        );
        assert_eq!(
            fresh(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "private")
                ]
            ),
            Err(Reason::Private)
        );
        // A targeted field without a lifetime: Expires is not consulted.
        assert_eq!(
            fresh(
                200,
                &[
                    ("cdn-cache-control", "must-revalidate"),
                    ("date", "Tue, 24 Nov 2026 12:00:00 GMT"),
                    ("expires", "Tue, 24 Nov 2026 13:00:00 GMT"),
                ]
            ),
            Err(Reason::NoLifetime)
        );
        // Cache-Control's private and no-store are never overridden.
        assert_eq!(
            fresh(
                200,
                &[
                    ("cache-control", "private"),
                    ("cdn-cache-control", "max-age=600")
                ]
            ),
            Err(Reason::Private)
        );
        assert_eq!(
            fresh(
                200,
                &[
                    ("cache-control", "no-store"),
                    ("bigcache-cache-control", "max-age=600")
                ]
            ),
            Err(Reason::NoStore)
        );
        // A targeted field with nothing bigcache can read is ignored.
        assert_eq!(
            fresh(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "garbage")
                ]
            ),
            Ok(60)
        );
        // A typo does not make a private page shared, whatever the TTL.
        assert_eq!(
            fresh(
                200,
                &[
                    ("x-bigcache-ttl", "1h"),
                    ("cache-control", "private max-age=0")
                ]
            ),
            Err(Reason::Private)
        );
        assert_eq!(
            fresh(
                200,
                &[
                    ("cache-control", "max-age=60"),
                    ("cdn-cache-control", "private;")
                ]
            ),
            Err(Reason::Private)
        );
        // The X-Bigcache-TTL header still sets the lifetime over all.
        assert_eq!(
            fresh(
                200,
                &[
                    ("x-bigcache-ttl", "1h"),
                    ("bigcache-cache-control", "max-age=60")
                ]
            ),
            Ok(3600)
        );
    }

    #[test]
    fn quoted_directives_are_not_read_as_lifetimes() {
        assert_eq!(
            fresh(200, &[("cache-control", r#"foo="max-age=8", max-age=60"#)]),
            Ok(60)
        );
        assert_eq!(
            fresh(200, &[("cache-control", r#"foo="max-age=600""#)]),
            Err(Reason::NoLifetime)
        );
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
        request_bypass(headers, true, names)
    }

    /// `known_host` takes a `Host` spelt exactly as a listed host without
    /// asking `host_name`: right only because every listed host (made by
    /// `host_name` from `--host`) is its own site form.
    #[test]
    fn a_listed_host_is_its_own_site_form() {
        for given in [
            "example.org",
            "Example.ORG.",
            "[::1]:8080",
            "LOCALHOST:31337",
            "a.b.c..",
            "127.0.0.1",
        ] {
            let listed = crate::proxy::key::host_name(given)
                .expect("a host")
                .into_owned();
            assert!(
                matches!(crate::proxy::key::host_name(&listed), Some(Cow::Borrowed(l)) if l == listed),
                "{given}"
            );
        }
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
            let found = known_host(&m, &hosts);
            assert_eq!(found.is_some(), known, "{host:?}");
            if known {
                assert_eq!(found.as_deref(), Some("example.org"));
            }
            let expect = (!known).then_some(Reason::UnknownHost);
            assert_eq!(
                request_bypass(&m, found.is_some(), &names),
                expect,
                "{host:?}"
            );
        }
        assert_eq!(known_host(&HeaderMap::new(), &hosts), None);
        let mut two = HeaderMap::new();
        two.append("host", HeaderValue::from_static("example.org"));
        two.append("host", HeaderValue::from_static("example.org"));
        assert_eq!(known_host(&two, &hosts), None, "two Hosts");
        assert_eq!(
            request_bypass(&HeaderMap::new(), false, &names),
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
        // Ranges are answered from the stored page (`proxy::range`).
        assert_eq!(bypass(&h(&[("range", "bytes=0-10")]), &names), None);
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
