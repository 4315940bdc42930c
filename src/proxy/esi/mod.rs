//! Edge Side Includes: a page Django marked with `Surrogate-Control:
//! content="ESI/1.0"` is a shell, stored once and served to every visitor,
//! logged in or not; each visitor's copy is assembled from it here, its
//! `<esi:include>`s fetched through the proxy with that visitor's request
//! (cookies, `Authorization`): a per-user fragment goes to Django, a
//! cacheable one is a hit. `parse` reads the markup.
//!
//! Only responses from the upstream opt in (the header is read from what
//! Django sent, and removed before anything leaves); a request's own
//! content never is ESI. An include names a path of the page's own site
//! (`parse::target`) and is asked of the one upstream, through every rule
//! a visitor's request meets.
//!
//! The assembled page is not streamed: its head waits for the fragments,
//! so that a fragment's `Set-Cookie` (Django's CSRF cookie for a form on
//! a cached page) reaches the browser. The fragments are fetched in
//! parallel, each within [`FRAGMENT_TIMEOUT`].

pub mod parse;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;

use super::Proxy;
use super::body::{self, Body};
use super::compress::{self, Accepts};
use super::error::ProxyError;
use super::fields::{Fields, Known};
use crate::store::PageStore;
use parse::{Include, Piece};

pub const SURROGATE_CONTROL: HeaderName = HeaderName::from_static("surrogate-control");

/// Includes a page may write, and fetches (each distinct include once,
/// and each `alt` tried) one visitor's page may make, every level together.
pub const MAX_INCLUDES: usize = 32;
/// Levels of fragments within fragments.
pub const MAX_DEPTH: u8 = 3;
/// Largest fragment body taken.
pub const MAX_FRAGMENT: usize = 1 << 20;
/// Longest a fragment (its response and body) is waited for.
pub const FRAGMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// The brotli quality an assembled page is sent at to a client that
/// takes it: made for one visitor, so the quickest.
const CLIENT_QUALITY: u32 = 1;

/// Marks a response whose body is a shell to assemble: set by the paths
/// that answer (a stored page's, or one streaming from the upstream), read
/// by `Proxy::handle`.
#[derive(Debug, Clone, Copy)]
pub struct Shell;

/// Whether `headers` opt in: a `Surrogate-Control` directive
/// `content="ESI/1.0"`, for every surrogate or targeted at bigcache
/// (`;bigcache`).
pub fn opted_in(headers: &HeaderMap) -> bool {
    headers.get_all(&SURROGATE_CONTROL).iter().any(|v| {
        v.as_bytes().split(|b| *b == b',').any(|d| {
            let d = d.trim_ascii();
            let (d, target) = match memchr::memchr(b';', d) {
                Some(i) => (d[..i].trim_ascii(), Some(d[i + 1..].trim_ascii())),
                None => (d, None),
            };
            let value = d
                .strip_prefix(b"content=")
                .map(|v| v.strip_prefix(b"\"").unwrap_or(v))
                .map(|v| v.strip_suffix(b"\"").unwrap_or(v));
            value.is_some_and(|v| {
                v.split(|b| *b == b' ')
                    .any(|c| c.eq_ignore_ascii_case(b"ESI/1.0"))
            }) && target.is_none_or(|t| t.eq_ignore_ascii_case(b"bigcache"))
        })
    })
}

/// Where a request stands in an assembly: a fragment's request carries
/// its level and the includes its page has left.
#[derive(Debug, Clone)]
struct Nesting {
    depth: u8,
    left: Arc<AtomicUsize>,
}

/// The visitor's request as its fragments are asked with it, kept from
/// before the proxy rewrote it.
pub struct Visitor {
    uri: Uri,
    version: Version,
    headers: HeaderMap,
    nesting: Option<Nesting>,
}

impl Visitor {
    /// Kept for a GET only: a HEAD's answer has no body to assemble.
    pub fn of<B>(req: &Request<B>) -> Option<Visitor> {
        (req.method() == Method::GET).then(|| Visitor {
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
            nesting: req.extensions().get::<Nesting>().cloned(),
        })
    }
}

/// Request fields a fragment's request does not take from the visitor's:
/// it is a plain GET of its own, in identity (the page is encoded once
/// assembled), never conditional, never partial.
const NOT_PASSED: [HeaderName; 9] = [
    header::ACCEPT_ENCODING,
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::CONTENT_LENGTH,
    header::TRANSFER_ENCODING,
];

fn not_passed(name: &str) -> bool {
    NOT_PASSED
        .iter()
        .any(|n| n.as_str().eq_ignore_ascii_case(name))
}

/// A visitor's parsed fields as a fragment's request carries them (the
/// general path's [`FragmentHead`] on the fast path): [`NOT_PASSED`] hidden.
pub struct AsFragment<'a, F: ?Sized>(pub &'a F);

impl<F: Fields + ?Sized> Fields for AsFragment<'_, F> {
    fn each(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.each().filter(|(n, _)| !not_passed(n))
    }

    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> {
        let hidden = not_passed(name);
        self.0.all(name).filter(move |_| !hidden)
    }

    fn known(&self, name: Known) -> impl Iterator<Item = &[u8]> {
        let hidden = not_passed(name.as_str());
        self.0.known(name).filter(move |_| !hidden)
    }
}

/// What a fetched fragment brings: its body and the cookies it sets.
struct Fragment {
    body: Bytes,
    cookies: Vec<HeaderValue>,
}

impl<S: PageStore> Proxy<S> {
    /// The visitor's page from the shell `res`: its includes fetched and
    /// put in place, or an error answer. A HEAD (no `visitor`) gets the
    /// shell's head as the page's.
    ///
    /// Boxed, and `Send` said here: a fragment's answer may be a shell's,
    /// so this future holds another `Proxy::handle`'s, which holds this.
    pub(super) fn assemble(
        self: Arc<Self>,
        res: Response<Body>,
        visitor: Option<Visitor>,
        peer: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> {
        Box::pin(async move { self.assemble_now(res, visitor, peer).await })
    }

    async fn assemble_now(
        self: Arc<Self>,
        res: Response<Body>,
        visitor: Option<Visitor>,
        peer: SocketAddr,
    ) -> Response<Body> {
        let (parts, body) = res.into_parts();
        let Some(visitor) = visitor else {
            let mut parts = parts;
            page_fields(&mut parts.headers);
            parts.headers.remove(header::CONTENT_LENGTH);
            return Response::from_parts(parts, body::empty());
        };
        match self.assembled(&parts.headers, body, &visitor, peer).await {
            Ok((pieces, cookies)) => page(parts, pieces, cookies, Accepts::of(&visitor.headers)),
            Err(e) => {
                tracing::warn!(error = %e, target = %visitor.uri, "ESI page not assembled");
                e.to_response()
            }
        }
    }

    async fn assembled(
        self: &Arc<Self>,
        headers: &HeaderMap,
        body: Body,
        visitor: &Visitor,
        peer: SocketAddr,
    ) -> Result<(Vec<Bytes>, Vec<HeaderValue>), ProxyError> {
        // bigcache asks for none, but an upstream may send one anyway
        // (Django's `GZipMiddleware`): ESI is read and spliced as text.
        if compress::content_coded(headers) {
            return Err(esi_error(
                "the shell came in a content coding; ESI needs it as text".into(),
            ));
        }
        let shell = match tokio::time::timeout(
            self.upstream.timeout,
            http_body_util::Limited::new(body, self.cfg.max_entry_size).collect(),
        )
        .await
        {
            Ok(Ok(c)) => c.to_bytes(),
            Ok(Err(e)) => return Err(esi_error(format!("shell: {e}"))),
            Err(_) => return Err(ProxyError::UpstreamTimeout),
        };
        if !parse::has_markup(&shell) {
            return Ok((vec![shell], Vec::new()));
        }
        let pieces = parse::parse(&shell).map_err(|e| esi_error(e.to_string()))?;
        let includes: Vec<Include> = pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Include(i) => Some(i.clone()),
                Piece::Text(_) => None,
            })
            .collect();
        let nesting = match &visitor.nesting {
            Some(n) if n.depth >= MAX_DEPTH => {
                return Err(esi_error("fragments nested too deep".into()));
            }
            Some(n) => Nesting {
                depth: n.depth + 1,
                left: n.left.clone(),
            },
            None => Nesting {
                depth: 1,
                left: Arc::new(AtomicUsize::new(MAX_INCLUDES)),
            },
        };
        // An include written twice is fetched once: one request per
        // fragment and visitor (two CSRF fields of one page would each
        // set a new token otherwise, and one form would fail).
        let mut distinct: Vec<&Include> = Vec::new();
        let slots: Vec<usize> = includes
            .iter()
            .map(|inc| match distinct.iter().position(|d| *d == inc) {
                Some(i) => i,
                None => {
                    distinct.push(inc);
                    distinct.len() - 1
                }
            })
            .collect();
        if includes.len() > MAX_INCLUDES {
            return Err(esi_error(format!("more than {MAX_INCLUDES} includes")));
        }
        take(&nesting.left, distinct.len())?;
        // Made once for the page's fragments. All at once; dropped (the
        // visitor gone) aborts every one.
        let head = Arc::new(FragmentHead::of(visitor, nesting));
        let mut set = tokio::task::JoinSet::new();
        for (i, inc) in distinct.iter().enumerate() {
            let (this, inc, head) = (self.clone(), (*inc).clone(), head.clone());
            set.spawn(async move { (i, this.include(inc, &head, peer).await) });
        }
        let mut got: Vec<Option<Fragment>> = (0..distinct.len()).map(|_| None).collect();
        while let Some(joined) = set.join_next().await {
            let (i, fragment) = joined.map_err(|e| esi_error(format!("fragment task: {e}")))?;
            got[i] = Some(fragment?);
        }
        let got: Vec<Fragment> = got.into_iter().flatten().collect();
        let cookies = got.iter().flat_map(|f| f.cookies.iter().cloned()).collect();
        let bodies = slots
            .iter()
            .filter_map(|&i| got.get(i).map(|f| f.body.clone()));
        let spliced = splice(&shell, &pieces, bodies);
        Ok((spliced, cookies))
    }

    /// One include: its `src`, else its `alt`, else nothing when it may
    /// fail (`onerror="continue"`), else the page's failure.
    async fn include(
        self: Arc<Self>,
        inc: Include,
        head: &FragmentHead,
        peer: SocketAddr,
    ) -> Result<Fragment, ProxyError> {
        let mut why = String::new();
        for (n, src) in std::iter::once(&inc.src)
            .chain(inc.alt.as_ref())
            .enumerate()
        {
            // An `alt` is one more fetch of the page's.
            if n > 0
                && let Err(e) = take(&head.nesting.left, 1)
            {
                why = e.to_string();
                break;
            }
            match self.clone().fragment(src, head, peer).await {
                Ok(f) => return Ok(f),
                Err(e) => {
                    tracing::info!(src = %src, error = %e, "ESI include failed");
                    why = format!("{src}: {e}");
                }
            }
        }
        match inc.continue_on_error {
            true => Ok(Fragment {
                body: Bytes::new(),
                cookies: Vec::new(),
            }),
            false => Err(esi_error(why)),
        }
    }

    async fn fragment(
        self: Arc<Self>,
        src: &str,
        head: &FragmentHead,
        peer: SocketAddr,
    ) -> Result<Fragment, String> {
        let uri: Uri = src.parse().map_err(|e| format!("{e}"))?;
        let mut r = Request::new(http_body_util::Empty::<Bytes>::new());
        *r.uri_mut() = uri;
        *r.version_mut() = head.version;
        *r.headers_mut() = head.headers.clone();
        r.extensions_mut().insert(head.nesting.clone());
        let fetched = tokio::time::timeout(FRAGMENT_TIMEOUT, async {
            let res = self.handle(r, peer).await;
            if !res.status().is_success() {
                return Err(format!("status {}", res.status().as_u16()));
            }
            if compress::content_coded(res.headers()) {
                return Err("a content coding bigcache did not ask for".into());
            }
            let cookies = res
                .headers()
                .get_all(header::SET_COOKIE)
                .iter()
                .cloned()
                .collect();
            let body = http_body_util::Limited::new(res.into_body(), MAX_FRAGMENT)
                .collect()
                .await
                .map_err(|e| format!("body: {e}"))?
                .to_bytes();
            Ok(Fragment { body, cookies })
        })
        .await;
        fetched.unwrap_or_else(|_| Err(format!("no answer in {FRAGMENT_TIMEOUT:?}")))
    }
}

/// What every fragment request of one visitor's page is made from: the
/// visitor's request, a GET of its own ([`NOT_PASSED`] left out).
struct FragmentHead {
    version: Version,
    headers: HeaderMap,
    nesting: Nesting,
}

impl FragmentHead {
    fn of(visitor: &Visitor, nesting: Nesting) -> FragmentHead {
        let mut headers = visitor.headers.clone();
        for name in &NOT_PASSED {
            headers.remove(name);
        }
        // A fragment is one more request on the visitor's site: HTTP/1.1
        // with the `Host` an HTTP/2 visitor named in `:authority`.
        if !headers.contains_key(header::HOST)
            && let Some(a) = visitor.uri.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            headers.insert(header::HOST, v);
        }
        let version = match visitor.version {
            Version::HTTP_2 | Version::HTTP_3 => Version::HTTP_11,
            v => v,
        };
        FragmentHead {
            version,
            headers,
            nesting,
        }
    }
}

/// The page: the shell's text as slices of it, each include's body in its
/// place (`bodies` in the order of the includes).
pub fn splice(
    shell: &Bytes,
    pieces: &[Piece],
    mut bodies: impl Iterator<Item = Bytes>,
) -> Vec<Bytes> {
    pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Text(r) => shell.get(r.clone()).map(|_| shell.slice(r.clone())),
            Piece::Include(_) => bodies.next(),
        })
        .collect()
}

/// The visitor's page, from the shell's response head `parts`, the
/// spliced `pieces` and the fragments' `cookies`: the one place both paths
/// finish an assembled page.
pub fn page(
    mut parts: http::response::Parts,
    pieces: Vec<Bytes>,
    cookies: Vec<HeaderValue>,
    accepts: Accepts,
) -> Response<Body> {
    page_fields(&mut parts.headers);
    for c in cookies {
        parts.headers.append(header::SET_COOKIE, c);
    }
    let len: usize = pieces.iter().map(Bytes::len).sum();
    let coded = accepts.br && len >= compress::MIN_LEN;
    let coded = coded
        .then(|| compress::for_client(&parts.headers, &pieces.concat(), CLIENT_QUALITY))
        .flatten();
    let body = match coded {
        Some(br) => {
            parts
                .headers
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("br"));
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(br.len()));
            body::full(br)
        }
        None => {
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(len));
            body::chunks(pieces)
        }
    };
    Response::from_parts(parts, body)
}

/// The shell's fields made the visitor's page's: made for one visitor
/// (`private`, asked again each time: `no-cache`), so without the shell's
/// validators, ranges or length.
pub fn page_fields(h: &mut HeaderMap) {
    for name in [
        header::ETAG,
        header::LAST_MODIFIED,
        header::ACCEPT_RANGES,
        header::CONTENT_ENCODING,
        header::EXPIRES,
        SURROGATE_CONTROL,
    ] {
        h.remove(name);
    }
    // A CDN after bigcache obeys a field targeted at it over
    // `Cache-Control` (RFC 9213): it would keep one visitor's page for all.
    for name in super::policy::TARGETED.iter().chain(&[
        "cloudflare-cdn-cache-control",
        "surrogate-key",
        "xkey",
    ]) {
        h.remove(*name);
    }
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, no-cache"),
    );
    h.append(
        header::VARY,
        HeaderValue::from_static("Accept-Encoding, Cookie"),
    );
}

/// Takes `n` fetches from a page's allowance.
fn take(left: &AtomicUsize, n: usize) -> Result<(), ProxyError> {
    left.fetch_update(Relaxed, Relaxed, |l| l.checked_sub(n))
        .map(|_| ())
        .map_err(|_| esi_error(format!("more than {MAX_INCLUDES} includes")))
}

fn esi_error(why: String) -> ProxyError {
    ProxyError::Esi(why)
}

/// Whether the answer to a `method` request with `status` is a page to
/// assemble (a HEAD's: its head); any other answer goes as it is.
pub fn assembles(method: &Method, status: StatusCode) -> bool {
    (method == Method::GET || method == Method::HEAD)
        && !(status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::PARTIAL_CONTENT
            || status == StatusCode::NOT_MODIFIED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_opt_in_is_read_as_the_edge_architecture_writes_it() {
        for yes in [
            "content=\"ESI/1.0\"",
            "max-age=60, content=\"ESI/1.0\"",
            "content=\"ESI/1.0 ESI-Inline/1.0\"",
            "content=ESI/1.0",
            "content=\"ESI/1.0\";bigcache",
        ] {
            let h = crate::proxy::test_headers(&[("surrogate-control", yes)]);
            assert!(opted_in(&h), "{yes}");
        }
        for no in [
            "max-age=60",
            "content=\"ESI/1.0\";akamai",
            "no-store",
            "content=\"ESI/2.0\"",
        ] {
            let h = crate::proxy::test_headers(&[("surrogate-control", no)]);
            assert!(!opted_in(&h), "{no}");
        }
        assert!(!opted_in(&HeaderMap::new()));
    }
}
