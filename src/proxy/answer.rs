//! Building the client's response from a stored page: the page itself, a
//! 304 when the client's validators match, or the byte range it asked for
//! (`proxy::range`); `Age` from the page's residence.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::body::{self, Body};
use super::entry::Entry;
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

/// The response for request `req` from entry `e` at `now` (unix ms).
pub fn from_entry(e: &Entry, req: &Parts, now: u64) -> Response<Body> {
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
                return res;
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
            // The same for every hit on the entry: built once.
            *res.headers_mut() = e.served.get_or_init(|| served_headers(e, len)).clone();
        }
        res
    };
    res.headers_mut()
        .insert(header::AGE, HeaderValue::from(e.age(now)));
    res
}
