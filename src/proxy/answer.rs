//! Building the client's response from a stored page: the page itself, a
//! 304 when the client's validators match, or the byte range it asked for
//! (`proxy::range`); `Age` from the page's residence.

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};

use super::body::{self, Body};
use super::compress::{self, Accepts, Coding};
use super::decision::{CACHE_STATUS, CacheStatus, Decision, X_CACHE, set_own_status};
use super::entry::Entry;
use super::fields::{Fields, Known};
use super::range::{self, Ranged};
use super::revalidate::{NOT_MODIFIED_HEADERS, not_modified};
use super::served::Served;
use super::{esi, policy};

/// Which representation of a stored page a request gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rep {
    /// The body as stored: in bigcache's coding, if it has one.
    Stored,
    /// The body decoded from bigcache's coding.
    Decoded,
}

impl Rep {
    fn slot(self) -> usize {
        match self {
            Rep::Stored => 0,
            Rep::Decoded => 1,
        }
    }
}

/// The representation `e` is answered in to a request with fields `req`
/// from a client that `accepts`: as stored to a client that accepts the
/// coding, decoded for one that does not and for a `Range` (ranges are of
/// the identity body, as nginx never ranges a gzipped answer). The one
/// place this is decided.
pub fn representation<F: Fields + ?Sized>(e: &Entry, accepts: Accepts, req: &F) -> Rep {
    let accepted = match e.coding {
        Coding::Identity => return Rep::Stored,
        Coding::Br => accepts.br,
    };
    // A shell is assembled from its text (one stored in brotli by an
    // earlier release included).
    if !accepted || req.known(Known::Range).next().is_some() || is_shell(e) {
        return Rep::Decoded;
    }
    Rep::Stored
}

/// The stored headers as a client gets them in `rep`, for a body of
/// `length` bytes: bigcache's own fields out, the length, and (for a
/// 200) range support in. A page in bigcache's coding varies on
/// `Accept-Encoding` in either representation, and its coded one has the
/// coding's own `ETag`.
fn served_headers(e: &Entry, rep: Rep, length: u64) -> http::HeaderMap {
    // Made with room for the fields added here and by `template`: a
    // clone of the stored map grew (rehashed) on the first of them.
    let mut h = http::HeaderMap::with_capacity(e.headers.len() + 8);
    for (name, value) in &e.headers {
        h.append(name, value.clone());
    }
    policy::strip_own(&mut h);
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    let coded = e.coding != Coding::Identity && rep == Rep::Stored;
    if e.coding != Coding::Identity {
        vary_on_accept_encoding(&mut h);
    }
    if coded {
        // Ranges are of the identity body only.
        h.remove(header::ACCEPT_RANGES);
        h.insert(
            header::CONTENT_ENCODING,
            HeaderValue::from_static(e.coding.token()),
        );
        if let Some(tag) = h.get(header::ETAG) {
            match compress::coded_etag(tag, e.coding) {
                Some(tag) => h.insert(header::ETAG, tag),
                None => h.remove(header::ETAG),
            };
        }
    } else if e.status == StatusCode::OK {
        h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    }
    h
}

/// Adds `Accept-Encoding` to `Vary` unless it is there (or `*` is).
fn vary_on_accept_encoding(h: &mut http::HeaderMap) {
    let named = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|v| {
            v.split(',')
                .map(str::trim)
                .any(|n| n == "*" || n.eq_ignore_ascii_case("accept-encoding"))
        })
    });
    if !named {
        h.append(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    }
}

/// [`served_headers`] for the whole body, with the fields every response
/// sets anew (`Age`, `X-Cache`, bigcache's own `Cache-Status` member)
/// already in place. Built once per entry; a hit copies it and replaces
/// values, where adding fields to the copy would grow it.
fn template(e: &Entry, rep: Rep) -> http::HeaderMap {
    let length = match rep {
        Rep::Stored => e.body.len() as u64,
        Rep::Decoded => e.identity_len,
    };
    let mut h = served_headers(e, rep, length);
    h.insert(header::AGE, HeaderValue::from_static("0"));
    h.insert(X_CACHE, Decision::new(CacheStatus::Hit).header());
    h.append(CACHE_STATUS, HeaderValue::from_static("bigcache"));
    h
}

/// The headers of a whole-body answer from `e` in `rep` at `now`,
/// `decision` shown.
fn whole(e: &Entry, rep: Rep, now: u64, decision: Decision) -> http::HeaderMap {
    let served = served(e, rep);
    let mut h = served.headers.clone();
    h.insert(header::AGE, served.age(e.age(now)));
    if decision.status != CacheStatus::Hit {
        h.insert(X_CACHE, decision.header());
    }
    let status = e.status.as_u16();
    let own = match decision.plain_hit_ttl() {
        Some(ttl) => served.for_ttl(ttl, || decision.cache_status(status)),
        None => decision.cache_status(status),
    };
    set_own_status(&mut h, own);
    h
}

fn served(e: &Entry, rep: Rep) -> &Served {
    e.served[rep.slot()].get_or_init(|| Served::new(e.status, template(e, rep)))
}

/// Whether `e` is an ESI shell: answered whole, and assembled.
#[inline]
pub fn is_shell(e: &Entry) -> bool {
    *e.shell.get_or_init(|| esi::opted_in(&e.headers))
}

/// The head of the page assembled from shell `e` as a plain hit sends it,
/// for a body of `len` bytes in identity, as bytes on the wire.
pub fn page_wire_head(e: &Entry, now: u64, decision: Decision, len: u64) -> Option<bytes::Bytes> {
    let ttl = decision.plain_hit_ttl()?;
    served(e, Rep::Stored).page_wire(e.age(now), ttl, now / 1000, len, esi::page_fields)
}

/// A shell's pieces, parsed once per stored copy: for one kept as sent
/// (every shell this release stores), else `None`.
pub fn shell_pieces(e: &Entry) -> Option<&Result<Vec<esi::parse::Piece>, esi::parse::ParseError>> {
    (is_shell(e) && e.coding == Coding::Identity).then(|| {
        served(e, Rep::Stored)
            .pieces
            .get_or_init(|| esi::parse::parse(&e.body))
    })
}

/// The body of `e` in `rep`.
pub fn body_of(e: &Entry, rep: Rep) -> Result<bytes::Bytes, compress::Undecodable> {
    match rep {
        Rep::Stored => Ok(e.body.clone()),
        Rep::Decoded => e.identity_body(),
    }
}

/// The head of a whole-body HTTP/1.1 answer from `e` in `rep` at `now`,
/// as bytes on the wire: what hyper would write for [`from_entry`]'s
/// response to a plain GET (the same fields, and `Date` when the page has
/// none). Made once per entry for each second's `Age`, TTL and `Date`,
/// and shared by every hit in that second. `None` for a status that has
/// no reason phrase or no body, and for any decision but a plain hit's.
pub fn wire_head(e: &Entry, rep: Rep, now: u64, decision: Decision) -> Option<bytes::Bytes> {
    let ttl = decision.plain_hit_ttl()?;
    served(e, rep).wire(e.age(now), ttl, now / 1000)
}

/// What a stored page answers a request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// The client's validators match: a 304.
    NotModified,
    /// The whole page (to a HEAD, its head alone).
    Whole,
    /// Bytes `start..=end` of the page: a 206.
    Part { start: u64, end: u64 },
    /// No byte of the range asked for exists: a 416.
    Unsatisfiable,
}

/// The shape of the answer from `e` in `rep` to a GET (or, `head`, a
/// HEAD) with request fields `req`. The one place that reads a request's
/// validators and ranges against a stored page, for both paths: the
/// validators are the representation's own, ranges are only of the
/// identity body ([`representation`]).
pub fn shape<F: Fields + ?Sized>(e: &Entry, rep: Rep, head: bool, req: &F) -> Shape {
    // A shell's validators and bytes are not those of any visitor's page.
    if e.status != StatusCode::OK || is_shell(e) {
        return Shape::Whole;
    }
    if not_modified(&served(e, rep).headers, req) {
        return Shape::NotModified;
    }
    if head || (e.coding != Coding::Identity && rep == Rep::Stored) {
        return Shape::Whole;
    }
    // A date in If-Range validates both codings alike: a client resuming
    // a brotli download with one must get the whole page, not identity
    // bytes to splice into it. An entity tag names its coding.
    let dated = |v: &[u8]| !v.trim_ascii().starts_with(b"\"") && !v.trim_ascii().starts_with(b"W/");
    if e.coding != Coding::Identity && req.known(Known::IfRange).any(dated) {
        return Shape::Whole;
    }
    match range::select(req, &e.headers, e.identity_len) {
        Ranged::Full => Shape::Whole,
        Ranged::Part { start, end } => Shape::Part { start, end },
        Ranged::Unsatisfiable => Shape::Unsatisfiable,
    }
}

/// [`from_entry`] for a request the general path holds as `Parts`.
pub fn for_request(
    e: &Entry,
    req: &Parts,
    now: u64,
    decision: Decision,
    body: impl FnOnce(Rep) -> Result<bytes::Bytes, compress::Undecodable>,
) -> (Response<Body>, Decision) {
    let accepts = Accepts::kept(req);
    let head = req.method == Method::HEAD;
    from_entry(e, head, accepts, &req.headers, now, decision, body)
}

/// The response to a GET (or, `head`, a HEAD) with request fields `req`,
/// from a client that `accepts`, from entry `e` at `now` (unix ms), with
/// `decision` shown in it; `body` gives the body in a representation
/// ([`body_of`], or a decoded copy kept, `proxy::decoded`).
pub fn from_entry<F: Fields + ?Sized>(
    e: &Entry,
    head: bool,
    accepts: Accepts,
    req: &F,
    now: u64,
    decision: Decision,
    body: impl FnOnce(Rep) -> Result<bytes::Bytes, compress::Undecodable>,
) -> (Response<Body>, Decision) {
    let decision = Decision {
        shown: true,
        ..decision
    };
    let len = e.identity_len;
    let rep = representation(e, accepts, req);
    let shape = shape(e, rep, head, req);
    let mut res = match shape {
        Shape::NotModified => {
            let mut res = Response::new(body::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            let served = &served(e, rep).headers;
            for name in NOT_MODIFIED_HEADERS {
                for v in served.get_all(&name) {
                    res.headers_mut().append(name.clone(), v.clone());
                }
            }
            res
        }
        Shape::Unsatisfiable => {
            let mut res = Response::new(body::empty());
            *res.status_mut() = StatusCode::RANGE_NOT_SATISFIABLE;
            let h = res.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            h.insert(header::CONTENT_LENGTH, HeaderValue::from(0));
            h.insert(header::AGE, HeaderValue::from(e.age(now)));
            if e.coding != Coding::Identity {
                vary_on_accept_encoding(h);
            }
            decision.show(h, StatusCode::RANGE_NOT_SATISFIABLE.as_u16());
            return (res, decision);
        }
        Shape::Whole => {
            let sent = if head {
                body::empty()
            } else {
                match body(rep) {
                    Ok(b) => body::stored(b),
                    Err(err) => return unreadable(err, decision),
                }
            };
            let mut res = Response::new(sent);
            *res.status_mut() = e.status;
            *res.headers_mut() = whole(e, rep, now, decision);
            if is_shell(e) {
                res.extensions_mut().insert(esi::Shell);
            }
            return (res, decision);
        }
        Shape::Part { start, end } => {
            let whole = match body(rep) {
                Ok(b) => b,
                Err(err) => return unreadable(err, decision),
            };
            let part = whole.slice(start as usize..=end as usize);
            let mut res = Response::new(body::stored(part));
            *res.status_mut() = StatusCode::PARTIAL_CONTENT;
            let h = res.headers_mut();
            *h = served_headers(e, rep, end - start + 1);
            if let Ok(v) = HeaderValue::from_str(&format!("bytes {start}-{end}/{len}")) {
                h.insert(header::CONTENT_RANGE, v);
            }
            res
        }
    };
    let status = res.status().as_u16();
    let h = res.headers_mut();
    h.insert(header::AGE, HeaderValue::from(e.age(now)));
    decision.show(h, status);
    (res, decision)
}

/// The answer when a stored body does not decode: checked when it was
/// encoded and by its CRC on disk, so only damage in RAM gets here; an
/// error, never another body.
fn unreadable(err: compress::Undecodable, decision: Decision) -> (Response<Body>, Decision) {
    tracing::error!(error = %err, "a stored page does not decode");
    let mut res = Response::new(body::empty());
    *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(0));
    (res, decision)
}
