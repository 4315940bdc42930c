//! HTTP/1.1 connections served without hyper: the proxy's fast path.
//!
//! Why: a hit through hyper cost ~24k instructions, ~10k of them hyper's
//! (parsing the head into a `HeaderMap`, dispatch, encoding the answer's
//! head field by field). Here a request head is parsed in place with
//! `httparse` (hyper's own parser) and handed to a [`Handler`] as borrowed
//! slices: a page in the store is answered from them at once (a stored
//! page's head is bytes the proxy made once per page and second, written
//! in one `writev` with the body), and any other request is turned into an
//! `http::Request` for the handler's general path, whose response
//! [`wire`](super::wire) writes as hyper would. So every request on a
//! keep-alive connection, after misses, 304s or bypassed ones, can be a
//! fast hit.
//!
//! Only requests whose framing is beyond doubt are taken: HTTP/1.1, no
//! body framing fields (`Content-Length`, `Transfer-Encoding`), no
//! `Expect`, `Upgrade` or `Connection` other than `keep-alive`, not
//! `CONNECT`, a head of at most [`MAX_HEAD`] bytes and [`MAX_FIELDS`]
//! fields. The first request that is not taken, and everything after it on
//! the connection, is hyper's: the connection goes to hyper with the bytes
//! already read in front ([`Prefixed`]), so hyper sees the stream exactly
//! as the client sent it. A parse error, or a target or field
//! `http::Request` would not hold, is handed over too, and hyper answers it
//! as it would have.
//!
//! The limits are the listener's: a request's head must arrive within the
//! client timeout of the wait for it (an idle connection is closed after
//! it, a trickling one too), a write that waits that long for the client
//! fails, and a server stop closes the connection between requests (one
//! in progress finishes first, within the server's drain time).

use std::future::Future;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use super::socket::Stream;
use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::Full;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;

use super::wire;

/// Longest request head taken here; a longer one goes to hyper, whose
/// limits answer it.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most header fields taken here; more go to hyper.
pub const MAX_FIELDS: usize = 48;

/// A request head as parsed, borrowed from the connection's buffer.
pub struct Head<'a> {
    pub method: &'a str,
    /// The request target as sent.
    pub target: &'a str,
    pub headers: &'a [httparse::Header<'a>],
}

/// A whole answer: its head as written on the wire (status line, fields,
/// the blank line) and its body.
pub struct Ready {
    pub head: Bytes,
    pub body: Bytes,
    /// More of the body after `body` (an ESI page's pieces).
    pub more: Vec<Bytes>,
}

/// An answer the handler has at hand.
pub enum Answer<B> {
    /// As bytes already.
    Ready(Ready),
    /// To be written by [`wire`].
    Response(Response<B>),
}

/// What answers the requests of a connection served here.
pub trait Handler: Send + Sync + 'static {
    type Body: hyper::body::Body<Data = Bytes, Error: Send> + Send + Unpin + 'static;

    /// The answer to a request from what is at hand (the store), read
    /// from the borrowed head; `None` sends it to [`Handler::respond`].
    fn quick(
        &self,
        req: &Head<'_>,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<Answer<Self::Body>>> + Send;

    /// The answer to any other request (it has no body).
    fn respond(
        self: Arc<Self>,
        req: Request<Full<Bytes>>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Self::Body>> + Send;
}

/// For listeners without a fast path.
pub enum Never {}

impl Handler for Never {
    type Body = Full<Bytes>;

    async fn quick(&self, _req: &Head<'_>, _peer: SocketAddr) -> Option<Answer<Full<Bytes>>> {
        match *self {}
    }

    async fn respond(
        self: Arc<Self>,
        _req: Request<Full<Bytes>>,
        _: SocketAddr,
    ) -> Response<Full<Bytes>> {
        match *self {}
    }
}

/// How a connection left the fast path.
pub enum Left {
    /// Closed: by the client, an error, a timeout or a stop.
    Closed,
    /// For hyper, with the bytes read but not answered, and whether some
    /// request was answered here before (then the connection is HTTP/1.1
    /// for good: bytes that look like HTTP/2's preface midway are not a
    /// switch of protocol, as they were not before this path existed).
    HandOver { read: Bytes, answered: bool },
}

/// Serves `stream`'s requests while they are taken here; the wait for the
/// first began at `waiting_since` (when the connection was accepted).
pub async fn serve<H: Handler>(
    stream: &mut Stream,
    handler: &Arc<H>,
    peer: SocketAddr,
    (waiting_since, timeout): (tokio::time::Instant, Duration),
    stop: &mut watch::Receiver<bool>,
) -> Left {
    let mut buf = BytesMut::with_capacity(4096);
    // The client timeout for each head, idle time before it included,
    // from when the wait for it began (for the first, the wait for its
    // first bytes too): set again only once a request was answered, so a
    // client trickling a byte at a time gets no more.
    let mut due = waiting_since + timeout;
    // Armed for `due` or earlier: moved only when it fires early (a timer
    // reset per request cost every keep-alive hit a trip to the timer
    // wheel).
    let deadline = tokio::time::sleep_until(due);
    let mut deadline = std::pin::pin!(deadline);
    // One wait for the stop for the whole connection, not one per idle
    // moment between requests.
    let mut stop_rx = stop.clone();
    let stopping = stop_rx.wait_for(|s| *s);
    let mut stopping = std::pin::pin!(stopping);
    let mut answered = false;
    loop {
        if !buf.is_empty() {
            let step = match answer(&buf, handler, peer).await {
                Parsed::Answered(used, head, reply) => Some((used, head, reply)),
                Parsed::Respond(used, head, req) => {
                    // The general path may wait on the upstream for long: a
                    // client that hangs up meanwhile frees its connection and
                    // the upstream's (as hyper does).
                    let res = tokio::select! {
                        res = handler.clone().respond(req, peer) => res,
                        () = hung_up(stream) => return Left::Closed,
                    };
                    Some((used, head, Answer::Response(res)))
                }
                Parsed::Partial if buf.len() < MAX_HEAD => None,
                Parsed::Partial | Parsed::Other => {
                    return Left::HandOver {
                        read: buf.freeze(),
                        answered,
                    };
                }
            };
            if let Some((used, head, reply)) = step {
                buf.advance(used);
                // Stopping: this answer is the connection's last, and says so.
                let last = *stop.borrow();
                if !send(stream, reply, head, last, timeout).await {
                    return Left::Closed;
                }
                answered = true;
                // Socket I/O that does not wait counts against no task
                // budget: a client pipelining hits would otherwise hold
                // its worker thread for all of them.
                tokio::task::consume_budget().await;
                if *stop.borrow() {
                    return Left::Closed;
                }
                due = tokio::time::Instant::now() + timeout;
                continue;
            }
        }
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        match stream.read_some(&mut buf) {
            Ok(0) => return Left::Closed,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => return Left::Closed,
        }
        // A stop closes the connection between requests, and in the middle
        // of a head too: no request has begun until its head is complete.
        tokio::select! {
            ready = stream.readable() => if ready.is_err() {
                return Left::Closed;
            },
            () = &mut deadline => {
                if tokio::time::Instant::now() >= due {
                    return Left::Closed;
                }
                deadline.as_mut().reset(due);
            }
            _ = &mut stopping => return Left::Closed,
        }
    }
}

/// Writes one answer; whether the connection may carry the next request.
async fn send<B>(
    stream: &mut Stream,
    reply: Answer<B>,
    head: bool,
    last: bool,
    timeout: Duration,
) -> bool
where
    B: hyper::body::Body<Data = Bytes> + Unpin,
{
    match reply {
        Answer::Ready(r) => {
            let sent = match r.more.is_empty() {
                true => wire::write_all(stream, [&r.head, &r.body], timeout).await,
                false => {
                    let mut parts: Vec<&[u8]> =
                        [&r.head, &r.body].into_iter().map(|b| &b[..]).collect();
                    parts.extend(r.more.iter().map(|b| &b[..]));
                    wire::write_slices(stream, &mut parts, timeout).await
                }
            };
            sent.is_ok() && !last
        }
        Answer::Response(res) => match wire::write_response(stream, res, head, last, timeout).await
        {
            Ok(keep) => keep,
            Err(e) => {
                tracing::debug!(error = %e, "response not written whole; closing");
                false
            }
        },
    }
}

enum Parsed<B> {
    /// Bytes the request took, whether it was a HEAD, and its answer.
    Answered(usize, bool, Answer<B>),
    /// The same, for [`Handler::respond`] to answer.
    Respond(usize, bool, Request<Full<Bytes>>),
    /// The head is not all there yet.
    Partial,
    /// For hyper.
    Other,
}

async fn answer<H: Handler>(buf: &[u8], handler: &Arc<H>, peer: SocketAddr) -> Parsed<H::Body> {
    // Left uninitialized: the parser writes the fields it finds, and a
    // head carries far fewer than the room for them.
    let mut fields = [const { std::mem::MaybeUninit::uninit() }; MAX_FIELDS];
    let mut req = httparse::Request::new(&mut []);
    let used = match req.parse_with_uninit_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Parsed::Other;
    };
    if method == "CONNECT" || !req.headers.iter().all(|h| framing_is_plain(h)) {
        return Parsed::Other;
    }
    let head = Head {
        method,
        target,
        headers: req.headers,
    };
    let is_head = method == "HEAD";
    if let Some(reply) = handler.quick(&head, peer).await {
        return Parsed::Answered(used, is_head, reply);
    }
    match to_request(&head) {
        Some(request) => Parsed::Respond(used, is_head, request),
        None => Parsed::Other,
    }
}

/// Resolves when the client has closed the connection (or it failed);
/// never, once the client has sent more (a pipelined request: read after
/// this one is answered).
async fn hung_up(stream: &Stream) {
    match stream.peek(&mut [0u8; 1]).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}

/// The head as hyper would have handed it to a service; `None` for what
/// it would have refused.
fn to_request(head: &Head<'_>) -> Option<Request<Full<Bytes>>> {
    let method = http::Method::from_bytes(head.method.as_bytes()).ok()?;
    let uri: http::Uri = head.target.parse().ok()?;
    let mut headers = HeaderMap::with_capacity(head.headers.len());
    for h in head.headers {
        headers.append(
            HeaderName::from_bytes(h.name.as_bytes()).ok()?,
            HeaderValue::from_bytes(h.value).ok()?,
        );
    }
    let mut req = Request::new(Full::new(Bytes::new()));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    Some(req)
}

/// Whether a field leaves the request's framing and the connection's fate
/// as a plain GET's: no body, no upgrade, kept alive.
fn framing_is_plain(h: &httparse::Header<'_>) -> bool {
    let is = |n: &str| h.name.eq_ignore_ascii_case(n);
    // By length first: most of a browser's fields are none of these.
    match h.name.len() {
        10 if is("connection") => h.value.eq_ignore_ascii_case(b"keep-alive"),
        14 => !(is("content-length") || is("http2-settings")),
        17 => !is("transfer-encoding"),
        6 => !is("expect"),
        7 => !is("upgrade"),
        _ => true,
    }
}

/// A stream that first yields bytes already read from it: how a connection
/// reaches hyper after the fast path read some of it.
pub struct Prefixed<T> {
    prefix: Bytes,
    io: T,
}

impl<T> Prefixed<T> {
    pub fn new(prefix: Bytes, io: T) -> Prefixed<T> {
        Prefixed { prefix, io }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Prefixed<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Prefixed<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    struct Always;

    fn hit(req: &Head<'_>) -> Option<Answer<Full<Bytes>>> {
        (req.target == "/hit").then(|| {
            Answer::Ready(Ready {
                head: Bytes::from_static(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"),
                body: Bytes::from_static(b"ok"),
                more: Vec::new(),
            })
        })
    }

    /// Anything but `/hit` is answered by `respond`, with a 404.
    async fn not_found() -> Response<Full<Bytes>> {
        let mut res = Response::new(Full::new(Bytes::new()));
        *res.status_mut() = http::StatusCode::NOT_FOUND;
        res
    }

    impl Handler for Always {
        type Body = Full<Bytes>;

        async fn quick(&self, req: &Head<'_>, _: SocketAddr) -> Option<Answer<Full<Bytes>>> {
            hit(req)
        }

        async fn respond(
            self: Arc<Self>,
            _: Request<Full<Bytes>>,
            _: SocketAddr,
        ) -> Response<Full<Bytes>> {
            not_found().await
        }
    }

    fn parsed(req: &[u8]) -> &'static str {
        let peer = "127.0.0.1:1".parse().unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        match runtime.block_on(answer(req, &Arc::new(Always), peer)) {
            Parsed::Respond(..) => "responded",
            Parsed::Answered(n, _, _) if n == req.len() => "answered",
            Parsed::Answered(..) => "answered short",
            Parsed::Partial => "partial",
            Parsed::Other => "other",
        }
    }

    #[test]
    fn only_plain_framing_is_answered() {
        assert_eq!(parsed(b"GET /hit HTTP/1.1\r\nHost: a\r\n\r\n"), "answered");
        assert_eq!(
            parsed(b"GET /hit HTTP/1.1\r\nHost: a\r\nConnection: Keep-Alive\r\n\r\n"),
            "answered"
        );
        assert_eq!(parsed(b"GET /hit HTTP/1.1\r\nHost: a\r\n"), "partial");
        for responded in [
            &b"GET /miss HTTP/1.1\r\nHost: a\r\n\r\n"[..],
            b"POST /form HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET http://a/hit HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /a|b HTTP/1.1\r\nHost: a\r\n\r\n",
        ] {
            let text = String::from_utf8_lossy(responded);
            assert_eq!(parsed(responded), "responded", "{text}");
        }
        for other in [
            &b"GET /hit HTTP/1.0\r\nHost: a\r\n\r\n"[..],
            b"CONNECT a:443 HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET /hit HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
            b"GET /hit HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET /hit HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            b"GET /hit HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Upgrade\r\n\r\n",
            b"GET /hit HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
            b"GET /hit HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
            b"GET /hit HTTP/1.1\r\nHost: a\r\n bad fold\r\n\r\n",
            b"GET /hit HTTP/1.1\r\nHo st: a\r\n\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        ] {
            assert_eq!(parsed(other), "other", "{}", String::from_utf8_lossy(other));
        }
    }

    #[test]
    fn a_pipelined_request_takes_only_its_own_bytes() {
        let two = b"GET /hit HTTP/1.1\r\nHost: a\r\n\r\nGET /hit HTTP/1.1\r\n";
        assert_eq!(parsed(two), "answered short");
    }

    /// Answers `/hit`, noting how far a ticking task had got at the first
    /// answer and at the last.
    struct Watched {
        ticks: Arc<AtomicUsize>,
        seen: std::sync::Mutex<Vec<usize>>,
    }

    impl Handler for Watched {
        type Body = Full<Bytes>;

        async fn quick(&self, req: &Head<'_>, _: SocketAddr) -> Option<Answer<Full<Bytes>>> {
            self.seen.lock().unwrap().push(self.ticks.load(Relaxed));
            hit(req)
        }

        async fn respond(
            self: Arc<Self>,
            _: Request<Full<Bytes>>,
            _: SocketAddr,
        ) -> Response<Full<Bytes>> {
            not_found().await
        }
    }

    /// Pipelined hits are answered with yields between them: another task
    /// on the same thread runs meanwhile.
    #[test]
    fn pipelined_hits_yield_to_other_tasks() {
        const N: usize = 2000;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let client = std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut c = std::net::TcpStream::connect(addr).unwrap();
                c.write_all(&b"GET /hit HTTP/1.1\r\nHost: a\r\n\r\n".repeat(N))
                    .unwrap();
                let want = N * b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".len();
                let mut got = vec![0; want];
                c.read_exact(&mut got).unwrap();
            });
            let (stream, peer) = listener.accept().await.unwrap();
            let ticks = Arc::new(AtomicUsize::new(0));
            let t = ticks.clone();
            let ticker = tokio::spawn(async move {
                loop {
                    t.fetch_add(1, Relaxed);
                    tokio::task::yield_now().await;
                }
            });
            // Every request is in the socket before the first is read.
            tokio::time::sleep(Duration::from_millis(200)).await;
            let hits = Arc::new(Watched {
                ticks: ticks.clone(),
                seen: Default::default(),
            });
            let (_tx, mut stop) = watch::channel(false);
            let since = tokio::time::Instant::now();
            let timeout = Duration::from_secs(1);
            let mut stream = Stream::Tcp(stream);
            let served = serve(&mut stream, &hits, peer, (since, timeout), &mut stop);
            let _ = tokio::time::timeout(Duration::from_secs(20), served).await;
            ticker.abort();
            client.join().unwrap();
            let seen = hits.seen.lock().unwrap();
            assert!(seen.len() >= N, "{} answered", seen.len());
            assert!(seen[N - 1] > seen[0], "no other task ran during {N} hits");
        });
    }

    /// A read that empties the socket marks it not readable without asking
    /// the kernel again (`Stream::read_some`): a request sent after the
    /// answer, and a hang-up sent with a request, must still be seen at
    /// once, on TCP and on a Unix socket.
    #[tokio::test]
    async fn an_emptied_socket_still_sees_the_next_request_and_a_hang_up() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        const REQ: &[u8] = b"GET /hit HTTP/1.1\r\nHost: a\r\n\r\n";
        const ANSWER: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
        async fn client<C: AsyncReadExt + AsyncWriteExt + Unpin>(mut c: C) -> Vec<u8> {
            let mut got = vec![0; ANSWER.len()];
            c.write_all(REQ).await.unwrap();
            c.read_exact(&mut got).await.unwrap();
            // The server has emptied the socket and waits.
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.write_all(REQ).await.unwrap();
            c.read_exact(&mut got).await.unwrap();
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.write_all(REQ).await.unwrap();
            c.shutdown().await.unwrap();
            let mut rest = Vec::new();
            c.read_to_end(&mut rest).await.unwrap();
            rest
        }
        let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = tcp.local_addr().unwrap();
        let (unix_client, unix_server) = tokio::net::UnixStream::pair().unwrap();
        let tcp_client = tokio::spawn(async move {
            client(tokio::net::TcpStream::connect(addr).await.unwrap()).await
        });
        let (tcp_server, peer) = tcp.accept().await.unwrap();
        let unix_client = tokio::spawn(client(unix_client));
        for (name, stream, client) in [
            ("tcp", Stream::Tcp(tcp_server), tcp_client),
            ("unix", Stream::Unix(unix_server), unix_client),
        ] {
            let (_tx, mut stop) = watch::channel(false);
            let mut stream = stream;
            let handler = Arc::new(Always);
            let timeout = Duration::from_secs(30);
            let since = tokio::time::Instant::now();
            let served = serve(&mut stream, &handler, peer, (since, timeout), &mut stop);
            let left = tokio::time::timeout(Duration::from_secs(5), served).await;
            assert!(
                matches!(left, Ok(Left::Closed)),
                "{name}: the connection was not closed after the hang-up"
            );
            drop(stream);
            assert_eq!(client.await.unwrap(), ANSWER, "{name}: the last request");
        }
    }

    #[tokio::test]
    async fn what_was_read_reaches_hyper_first() {
        use tokio::io::AsyncReadExt;
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .unwrap();
        drop(a);
        let mut p = Prefixed::new(Bytes::from_static(b"hello"), b);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }
}
