//! Building the client's response from a stored page: the page itself, or a
//! 304 when the client's validators match; `Age` from the page's residence.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::body::{self, Body};
use super::entry::Entry;
use super::policy::{OWN_FIELD, TTL_HEADER};
use super::revalidate::{NOT_MODIFIED_HEADERS, not_modified};

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
        let body = if req.method == Method::HEAD {
            body::empty()
        } else {
            body::stored(e.body.clone())
        };
        let mut res = Response::new(body);
        *res.status_mut() = e.status;
        *res.headers_mut() = e.headers.clone();
        res.headers_mut().remove(TTL_HEADER);
        res.headers_mut().remove(OWN_FIELD);
        res.headers_mut()
            .insert(header::CONTENT_LENGTH, HeaderValue::from(e.body.len()));
        res
    };
    res.headers_mut()
        .insert(header::AGE, HeaderValue::from(e.age(now)));
    res
}
