//! Building the client's response from a stored page: the page itself, a
//! 304 when the client's validators match, or the byte range it asked for
//! (`proxy::range`); `Age` from the page's residence.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::body::{self, Body};
use super::decision::{CACHE_STATUS, CacheStatus, Decision, X_CACHE, set_own_status};
use super::entry::{Entry, Served};
use super::policy::{OWN_FIELD, TTL_HEADER};
use super::range::{self, Ranged};
use super::revalidate::{NOT_MODIFIED_HEADERS, not_modified};

/// The stored headers as a client gets them for a body of `length` bytes:
/// bigcache's own fields out, the length and (for a 200) range support in.
fn served_headers(e: &Entry, length: u64) -> http::HeaderMap {
    let mut h = e.headers.clone();
    h.remove(TTL_HEADER);
    h.remove(OWN_FIELD);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    if e.status == StatusCode::OK {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    h
}

/// [`served_headers`] for the whole body, with the fields every response
/// sets anew (`Age`, `X-Cache`, bigcache's own `Cache-Status` member)
/// already in place. Built once per entry; a hit copies it and replaces
/// values, where adding fields to the copy would grow it.
fn template(e: &Entry, length: u64) -> http::HeaderMap {
    let mut h = served_headers(e, length);
    h.insert(header::AGE, HeaderValue::from_static("0"));
    h.insert(X_CACHE, Decision::new(CacheStatus::Hit).header());
    h.append(CACHE_STATUS, HeaderValue::from_static("bigcache"));
    h
}

/// The response for request `req` from entry `e` at `now` (unix ms), with
/// `decision` shown in it.
pub fn from_entry(
    e: &Entry,
    req: &Parts,
    now: u64,
    decision: Decision,
) -> (Response<Body>, Decision) {
    let decision = Decision {
        shown: true,
        ..decision
    };
    let mut res = if e.status == StatusCode::OK && not_modified(&e.headers, &req.headers) {
        let mut res = Response::new(body::empty());
        *res.status_mut() = StatusCode::NOT_MODIFIED;
        for name in NOT_MODIFIED_HEADERS {
            for v in e.headers.get_all(&name) {
                res.headers_mut().append(name.clone(), v.clone());
            }
        }
        res
    } else {
        let len = e.body.len() as u64;
        let ranged = if req.method == Method::GET && e.status == StatusCode::OK {
            range::select(&req.headers, &e.headers, len)
        } else {
            Ranged::Full
        };
        let (status, body, length) = match ranged {
            Ranged::Full => (e.status, e.body.clone(), len),
            Ranged::Part { start, end } => {
                let part = e.body.slice(start as usize..=end as usize);
                (StatusCode::PARTIAL_CONTENT, part, end - start + 1)
            }
            Ranged::Unsatisfiable => {
                let mut res = Response::new(body::empty());
                *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
                let h = res.headers_mut();
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    h.insert(header::CONTENT_RANGE, v);
                }
                h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
                h.insert(header::AGE, HeaderValue::from(e.age(now)));
                decision.show(h, StatusCode::RANGE_NOT_SATISFIABLE.as_u16());
                return (res, decision);
            }
        };
        let body = if req.method == Method::HEAD {
            body::empty()
        } else {
            body::stored(body)
        };
        let mut res = Response::new(body);
        *res.status_mut() = status;
        if let Ranged::Part { start, end } = ranged {
            let h = res.headers_mut();
            *h = served_headers(e, length);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
        } else {
            let served = e.served.get_or_init(|| Served::new(template(e, len)));
            let h = res.headers_mut();
            *h = served.headers.clone();
            h.insert(header::AGE, served.age(e.age(now)));
            if decision.status != CacheStatus::Hit {
                h.insert(X_CACHE, decision.header());
            }
            let status = status.as_u16();
            let own = match decision.plain_hit_ttl() {
                Some(ttl) => served.for_ttl(ttl, || decision.cache_status(status)),
                None => decision.cache_status(status),
            };
            set_own_status(h, own);
            return (res, decision);
        }
        res
    };
    let status = res.status().as_u16();
    let h = res.headers_mut();
    h.insert(header::AGE, HeaderValue::from(e.age(now)));
    decision.show(h, status);
    (res, decision)
}
