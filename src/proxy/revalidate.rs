//! Conditional requests, both ways: a client's `If-None-Match` /
//! `If-Modified-Since` answered from a stored page, and a stale page
//! revalidated with the upstream, whose 304 refreshes the stored headers.

use http::HeaderMap;
use http::header::{self, HeaderName};

use super::entry::Entry;
use super::fields::{Fields, Known, text};

/// Conditional and range request headers: dropped when bigcache fetches
/// for the cache, since it needs the full response, not the client's 304
/// or part (the range is answered from the stored page).
const CONDITIONALS: [HeaderName; 6] = [
    header::RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// Headers a 304 answered from the cache carries over from the page.
pub const NOT_MODIFIED_HEADERS: [HeaderName; 7] = [
    header::ETAG,
    header::LAST_MODIFIED,
    header::CACHE_CONTROL,
    header::EXPIRES,
    header::VARY,
    header::DATE,
    header::CONTENT_LOCATION,
];

/// Prepares the headers of a fetch for the cache: the client's own
/// conditionals go, and a stale entry's validators (those the upstream
/// can check) are sent instead.
pub fn for_upstream(headers: &mut HeaderMap, stale: Option<&Entry>) {
    for h in &CONDITIONALS {
        headers.remove(h);
    }
    let Some(e) = stale else { return };
    if !e.synthetic_etag
        && let Some(etag) = e.headers.get(header::ETAG)
    {
        headers.insert(header::IF_NONE_MATCH, etag.clone());
    }
    if let Some(lm) = e.headers.get(header::LAST_MODIFIED) {
        headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
    }
}

/// The stored headers updated by a 304's: every field the 304 carries
/// replaces the stored one, but `Content-Length` (the 304 has no body).
pub fn refreshed_headers(stored: &HeaderMap, fresh: &HeaderMap) -> HeaderMap {
    let mut headers = stored.clone();
    for name in fresh.keys() {
        if name == header::CONTENT_LENGTH {
            continue;
        }
        headers.remove(name);
        for v in fresh.get_all(name) {
            headers.append(name.clone(), v.clone());
        }
    }
    headers
}

/// Whether a client's conditional GET matches the stored validators.
pub fn not_modified<F: Fields + ?Sized>(stored: &HeaderMap, req: &F) -> bool {
    if let Some(inm) = req.known(Known::IfNoneMatch).next().and_then(text) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
        let mine = opaque(etag);
        return inm.split(',').any(|t| t.trim() == "*" || opaque(t) == mine);
    }
    let Some(since) = req
        .known(Known::IfModifiedSince)
        .next()
        .and_then(text)
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok())
    else {
        return false;
    };
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    modified.is_some_and(|m| m <= since)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::test_headers as h;

    #[test]
    fn a_304_replaces_the_fields_it_carries_but_length() {
        let stored = h(&[
            ("content-length", "10"),
            ("x-version", "1"),
            ("x-keep", "k"),
        ]);
        let fresh = h(&[("content-length", "0"), ("x-version", "2"), ("x-new", "n")]);
        let merged = refreshed_headers(&stored, &fresh);
        assert_eq!(merged["content-length"], "10");
        assert_eq!(merged["x-version"], "2");
        assert_eq!(merged["x-keep"], "k");
        assert_eq!(merged["x-new"], "n");
    }

    #[test]
    fn client_validators() {
        let stored = h(&[
            ("etag", "\"v1\""),
            ("last-modified", "Tue, 01 Jan 2019 00:00:00 GMT"),
        ]);
        assert!(not_modified(
            &stored,
            &h(&[("if-none-match", "W/\"v1\", \"v0\"")])
        ));
        assert!(!not_modified(&stored, &h(&[("if-none-match", "\"v2\"")])));
        assert!(not_modified(
            &stored,
            &h(&[("if-modified-since", "Tue, 01 Jan 2019 00:00:00 GMT")])
        ));
        assert!(!not_modified(
            &stored,
            &h(&[("if-modified-since", "Mon, 31 Dec 2018 00:00:00 GMT")])
        ));
    }
}
