//! A real HTTP upstream for proxy tests, driven by its request URL:
//!
//! - `h=Name:Value` (repeatable): response headers (`%3D` for `=` in values);
//! - `status=404`, `delay=200` (ms before answering), `size=N` (body bytes);
//! - `stall=1`: sends the head and a first chunk, then nothing, forever;
//! - `stream=N`: a body of N bytes sent in 64 KiB chunks, as fast as the
//!   connection takes them ([`Counts::cut`] counts those dropped unfinished);
//! - `fixed=1`: a body that is the same on every request for the target
//!   (no counts, no echo), so a refetch can be checked byte for byte;
//! - `tagn=v`: sends `Surrogate-Key: v-<n>`, n being how many times the
//!   origin saw the target (tags that change when the page is replaced);
//! - `etag=v1`: sends `ETag: "v1"` and answers a matching `If-None-Match`
//!   with 304 (plus the `h` headers, and `h304=Name:Value` ones only there).
//!
//! The body names the request target, how many times the origin saw it, the
//! request headers a test may check (`accept-language`, `x-forwarded-*`),
//! and the names of all it received. A request header `x-test-status: 400`
//! sets the status (a header outside the cache key changing the answer);
//! a `csrftoken=bad` cookie gets a `Set-Cookie` back, as from Django.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

#[derive(Default)]
pub struct Counts {
    by_target: Mutex<HashMap<String, u64>>,
    pub not_modified: AtomicU64,
    in_flight: AtomicU64,
    pub max_in_flight: AtomicU64,
    /// Answer 500 to everything while set.
    pub fail: AtomicBool,
    /// `stream=` bodies dropped before their last byte was taken.
    pub cut: AtomicU64,
}

pub struct Origin {
    pub addr: SocketAddr,
    pub counts: Arc<Counts>,
    task: tokio::task::JoinHandle<()>,
}

impl Origin {
    pub async fn start() -> Origin {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, Arc::new(Counts::default()))
    }

    /// Serves again on the same port after [`Origin::kill`].
    pub async fn restart(addr: SocketAddr, counts: Arc<Counts>) -> Origin {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        Self::serve(listener, counts)
    }

    fn serve(listener: tokio::net::TcpListener, counts: Arc<Counts>) -> Origin {
        let addr = listener.local_addr().unwrap();
        let c = counts.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let c = c.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let c = c.clone();
                        async move {
                            let query = req.uri().query().unwrap_or("");
                            let stall = query.contains("stall=1");
                            let stream = query
                                .split('&')
                                .find_map(|p| p.strip_prefix("stream="))
                                .and_then(|n| n.parse::<u64>().ok());
                            let res = respond(req, &c).await;
                            Ok::<_, Infallible>(if stall {
                                res.map(|_| Stalling { sent: false }.boxed_unsync())
                            } else if let Some(left) = stream {
                                let counts = c.clone();
                                res.map(|_| Streaming { left, counts }.boxed_unsync())
                            } else {
                                res.map(|b| b.boxed_unsync())
                            })
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Origin { addr, counts, task }
    }

    /// Stops listening and drops every open connection.
    pub fn kill(self) -> (SocketAddr, Arc<Counts>) {
        self.task.abort();
        (self.addr, self.counts.clone())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests the origin saw for a target (path and query as sent).
    pub fn count(&self, target: &str) -> u64 {
        *self
            .counts
            .by_target
            .lock()
            .unwrap()
            .get(target)
            .unwrap_or(&0)
    }

    /// Waits (at most 10 s) until the origin has been asked for `target`
    /// `n` times: a test that needs a fetch under way waits for it rather
    /// than sleeping.
    pub async fn reached(&self, target: &str, n: u64) {
        for _ in 0..2000 {
            if self.count(target) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("{target} asked {} times, not {n}", self.count(target));
    }

    /// Requests the origin is answering now.
    pub fn in_flight(&self) -> u64 {
        self.counts.in_flight.load(SeqCst)
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A body that yields one chunk and then never another.
struct Stalling {
    sent: bool,
}

impl hyper::body::Body for Stalling {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.sent {
            return std::task::Poll::Pending;
        }
        self.sent = true;
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(Bytes::from_static(
            b"start",
        )))))
    }
}

/// A body of `left` bytes in 64 KiB chunks, counting itself in
/// [`Counts::cut`] if dropped before its end.
struct Streaming {
    left: u64,
    counts: Arc<Counts>,
}

impl hyper::body::Body for Streaming {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.left.min(64 << 10);
        self.left -= n;
        let chunk = Bytes::from(vec![b'.'; n as usize]);
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.left)
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        if self.left > 0 {
            self.counts.cut.fetch_add(1, SeqCst);
        }
    }
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(&s.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// `/sitemap.xml?pages=N&from=F`: a sitemap of the cacheable pages
/// `/p/F` .. `/p/F+N-1` on the request's host (with `https=1`, as https
/// URLs); `/sitemap-index.xml?parts=K&pages=N`: an index of K of them.
fn sitemap(req: &Request<Incoming>) -> Option<String> {
    let path = req.uri().path();
    if path != "/sitemap.xml" && path != "/sitemap-index.xml" {
        return None;
    }
    let q = |name: &str| -> usize {
        req.uri()
            .query()
            .unwrap_or("")
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let host = req
        .headers()
        .get("host")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost");
    let scheme = if q("https") == 1 { "https" } else { "http" };
    let (pages, from, parts) = (q("pages"), q("from"), q("parts"));
    if path == "/sitemap-index.xml" {
        let parts: String = (0..parts)
            .map(|i| format!("<sitemap><loc>http://{host}/sitemap.xml?pages={pages}&amp;from={}</loc></sitemap>", i * pages))
            .collect();
        return Some(format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{parts}</sitemapindex>"#
        ));
    }
    let urls: String = (from..from + pages)
        .map(|i| {
            format!(
                "<url><loc>{scheme}://{host}/p/{i}?h=X-Bigcache-TTL:1h&amp;delay=20</loc></url>"
            )
        })
        .collect();
    Some(format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>"#
    ))
}

async fn respond(req: Request<Incoming>, c: &Counts) -> Response<Full<Bytes>> {
    if let Some(xml) = sitemap(&req) {
        return Response::builder()
            .header("content-type", "application/xml")
            .body(Full::new(Bytes::from(xml)))
            .unwrap();
    }
    let target = req
        .uri()
        .path_and_query()
        .map_or("/".to_string(), |p| p.to_string());
    let n = {
        let mut m = c.by_target.lock().unwrap();
        let e = m.entry(target.clone()).or_default();
        *e += 1;
        *e
    };
    let now = c.in_flight.fetch_add(1, SeqCst) + 1;
    c.max_in_flight.fetch_max(now, SeqCst);

    let mut headers = Vec::new();
    let mut headers_304 = Vec::new();
    let (mut status, mut delay, mut size, mut etag) = (200u16, 0u64, 0usize, None);
    for pair in req.uri().query().unwrap_or("").split('&') {
        let Some((k, v)) = pair.split_once('=') else {
            continue;
        };
        let v = decode(v);
        match k {
            "h" => {
                if let Some((name, value)) = v.split_once(':') {
                    headers.push((name.to_string(), value.trim().to_string()));
                }
            }
            "h304" => {
                if let Some((name, value)) = v.split_once(':') {
                    headers_304.push((name.to_string(), value.trim().to_string()));
                }
            }
            "status" => status = v.parse().unwrap_or(200),
            "delay" => delay = v.parse().unwrap_or(0),
            "size" => size = v.parse().unwrap_or(0),
            "etag" => etag = Some(format!("\"{v}\"")),
            "tagn" => headers.push(("surrogate-key".into(), format!("{v}-{n}"))),
            _ => {}
        }
    }
    let seen = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let req_fixed = req
        .uri()
        .query()
        .is_some_and(|q| q.split('&').any(|p| p == "fixed=1"));
    let mut names: Vec<&str> = req.headers().keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    let echo = format!(
        "method={} accept-language={} xff={} xfproto={} xfhost={} host={} cookie={} names={}",
        req.method(),
        seen("accept-language"),
        seen("x-forwarded-for"),
        seen("x-forwarded-proto"),
        seen("x-forwarded-host"),
        seen("host"),
        seen("cookie"),
        names.join(","),
    );
    // A status chosen by a request header, which is not in the cache key:
    // what a page answers to a bad `Host` or an odd header.
    if let Some(s) = req
        .headers()
        .get("x-test-status")
        .and_then(|v| v.to_str().ok())
    {
        status = s.parse().unwrap_or(status);
    }
    // What Django's CSRF middleware does to a malformed csrftoken cookie.
    if seen("cookie").contains("csrftoken=bad") {
        headers.push(("set-cookie".into(), "csrftoken=fresh; Path=/".into()));
    }
    let conditional_match = etag.as_deref().is_some_and(|e| seen("if-none-match") == e);
    // Drain any request body so POSTs are well-formed.
    let _ = req.into_body().collect().await;
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    c.in_flight.fetch_sub(1, SeqCst);

    let mut builder = Response::builder();
    for (name, value) in &headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    if let Some(e) = &etag {
        builder = builder.header("etag", e.as_str());
    }
    if c.fail.load(SeqCst) {
        return builder
            .status(500)
            .body(Full::new(Bytes::from("origin failed")))
            .unwrap();
    }
    if conditional_match {
        c.not_modified.fetch_add(1, SeqCst);
        for (name, value) in &headers_304 {
            builder = builder.header(name.as_str(), value.as_str());
        }
        return builder.status(304).body(Full::new(Bytes::new())).unwrap();
    }
    let fixed = req_fixed;
    let mut body = if fixed {
        format!("target={target}\n").into_bytes()
    } else {
        format!("target={target} n={n} {echo}\n").into_bytes()
    };
    if fixed && size > body.len() {
        // Text that does not compress away, the same for every request.
        let mut x = target.bytes().fold(0x9E37_79B9_7F4A_7C15u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01B3)
        }) | 1;
        while body.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            body.push(b'a' + (x % 26) as u8);
        }
    } else if size > body.len() {
        body.resize(size, b'.');
    }
    builder
        .status(status)
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
