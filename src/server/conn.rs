//! Serving connections: HTTP/1.1 and HTTP/2 on one listener, within limits
//! no client can stretch. A connection may not take long to send its first
//! bytes or a request's headers, may not leave a response unread, and may
//! not sit idle (an HTTP/2 connection answering pings counts as idle); at
//! most `max_connections` are open at once.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use super::socket::{Listener, Stream};
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::watch;
use tokio::time::{Instant, Sleep};

use super::h1::{self, Handler, Left, Prefixed};
use crate::shutdown;

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// HTTP/2: a ping every interval, the connection closed when one goes
/// unanswered for the timeout.
const H2_KEEP_ALIVE: Duration = Duration::from_secs(20);
const H2_MAX_STREAMS: u32 = 256;

/// Limits every listener applies to its connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections at once; beyond it new ones wait in the kernel's
    /// accept queue, as nginx's `worker_connections` do.
    pub max_connections: usize,
    /// `--client-timeout`: how long a client may take to send a request's
    /// headers, to take the next part of a response, and how long a
    /// connection with no request in progress stays open. Slow clients
    /// cannot hold connections by trickling bytes (slowloris) or by not
    /// reading, before or after a token.
    pub client_timeout: Duration,
}

/// Accepts connections on `listener` and serves each with the service
/// `make` builds for its peer, until shutdown; then lets open connections
/// finish their requests, for at most [`DRAIN_TIMEOUT`].
pub async fn serve<M, S, B, H: Handler>(
    name: &'static str,
    listener: Listener,
    make: M,
    quick: Option<Arc<H>>,
    limits: ConnLimits,
    stop: watch::Receiver<bool>,
) where
    M: Fn(std::net::SocketAddr) -> S,
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.client_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(H2_KEEP_ALIVE))
        .keep_alive_timeout(H2_KEEP_ALIVE)
        .max_concurrent_streams(H2_MAX_STREAMS);
    // For connections the fast path answered on: HTTP/1.1 to the end.
    let h1_builder = builder.clone().http1_only();
    let max = u32::try_from(limits.max_connections.max(1)).unwrap_or(u32::MAX);
    let slots = Arc::new(tokio::sync::Semaphore::new(max as usize));
    let mut stopping = std::pin::pin!(shutdown::wait(stop.clone()));
    loop {
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = &mut stopping => break,
        };
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Usually out of file descriptors: back off, keep going.
                    tracing::warn!(listener = name, error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopping => break,
        };
        let service = make(peer);
        let builder = builder.clone();
        let h1_builder = h1_builder.clone();
        let mut stop = stop.clone();
        let quick = quick.clone();
        tokio::spawn(async move {
            // hyper reads the first bytes to tell HTTP/1 from HTTP/2 before
            // any of its timeouts run: a client sending nothing (or part of
            // the HTTP/2 preface) would hold its slot forever (and hold up
            // a shutdown for the whole drain time).
            let since = tokio::time::Instant::now();
            let spoke = tokio::select! {
                spoke = first_bytes_within(&stream, limits.client_timeout) => spoke,
                _ = stop.wait_for(|s| *s) => false,
            };
            if spoke {
                let read = match &quick {
                    Some(q) => {
                        let left = h1::serve(
                            &mut stream,
                            q,
                            peer,
                            (since, limits.client_timeout),
                            &mut stop,
                        )
                        .await;
                        match left {
                            Left::HandOver { read, answered } => Some((read, answered)),
                            Left::Closed => None,
                        }
                    }
                    None => Some((Bytes::new(), false)),
                };
                if let Some((read, answered)) = read {
                    let io = Prefixed::new(read, stream);
                    let builder = if answered { &h1_builder } else { &builder };
                    connection(name, builder, io, service, limits, stop).await;
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    // Every connection holds a slot: all slots back means all are closed.
    if tokio::time::timeout(DRAIN_TIMEOUT, slots.acquire_many(max))
        .await
        .is_err()
    {
        tracing::warn!(
            listener = name,
            "connections still open after {DRAIN_TIMEOUT:?}; closing anyway"
        );
    }
}

/// Serves one connection until it ends, closing it gracefully (finishing
/// the requests in progress) when it has been idle for the client timeout
/// or the server stops, and at once when a response has waited that long
/// for the client to take more of it.
async fn connection<S, B>(
    name: &'static str,
    builder: &hyper_util::server::conn::auto::Builder<TokioExecutor>,
    stream: Prefixed<Stream>,
    service: S,
    limits: ConnLimits,
    mut stop: watch::Receiver<bool>,
) where
    S: hyper::service::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>>
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let activity = Arc::new(Activity::new());
    let busy = activity.clone();
    let service = hyper::service::service_fn(move |req| {
        let guard = InFlight::begin(busy.clone());
        let answer = service.call(req);
        async move {
            let res = answer.await?;
            Ok::<_, S::Error>(res.map(|body| Tracked::new(body, guard)))
        }
    });
    let io = TokioIo::new(WriteDeadline::new(stream, limits.client_timeout));
    let conn = builder.serve_connection(io, service);
    let mut conn = std::pin::pin!(conn);
    let mut closing = false;
    let result = loop {
        tokio::select! {
            result = conn.as_mut() => break result,
            watch = activity.watch(limits.client_timeout) => {
                if watch == Watch::Stalled {
                    // HTTP/2 flow control shut by the client (the socket
                    // stays writable, pings are answered), or a socket
                    // that does not drain: the response can never finish.
                    tracing::debug!(listener = name, "a response stalled on the client; closing");
                    break Ok(());
                }
                if closing {
                    // Still open a whole idle period after being told to
                    // close: an HTTP/2 client that does not acknowledge
                    // the GOAWAY's ping. Nothing is in progress: drop it.
                    break Ok(());
                }
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
            _ = stop.wait_for(|s| *s), if !closing => {
                closing = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(listener = name, error = %e, "connection ended with an error");
    }
}

/// Requests in progress on one connection and the state of their response
/// bodies. Counted with atomics and checked by a timer, rather than
/// signalled: a wake-up per request would cost the hot path more than the
/// check does.
struct Activity {
    opened: Instant,
    in_flight: AtomicUsize,
    /// Milliseconds after `opened` that the connection last became idle.
    idle_since: AtomicU64,
    /// Response bodies waiting on the client: for hyper to ask for more,
    /// which it does only when the client has room (socket buffer, HTTP/2
    /// window), or, all handed over, to be done sending them. A body waiting
    /// on the upstream is not counted.
    awaiting_client: AtomicUsize,
    /// Milliseconds after `opened` that a response body was last asked for
    /// data: the client's last progress.
    last_pull: AtomicU64,
}

#[derive(Debug, PartialEq, Eq)]
enum Watch {
    /// No request in progress for the whole period.
    Idle,
    /// Responses wait for the client, and it took nothing for the period.
    Stalled,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            in_flight: AtomicUsize::new(0),
            idle_since: AtomicU64::new(0),
            awaiting_client: AtomicUsize::new(0),
            last_pull: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Resolves when the connection has been idle, or its responses
    /// stalled on the client, for `limit`.
    async fn watch(&self, limit: Duration) -> Watch {
        let limit_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX);
        loop {
            // The counts first: a request ending between the two loads
            // then shows its fresh stamp (Release on the stamp, AcqRel on
            // the count).
            let busy = self.in_flight.load(Ordering::Acquire) > 0;
            let awaiting = self.awaiting_client.load(Ordering::Acquire) > 0;
            let now = self.now_ms();
            let wait = if !busy {
                let idle = now.saturating_sub(self.idle_since.load(Ordering::Acquire));
                if idle >= limit_ms {
                    return Watch::Idle;
                }
                limit_ms - idle
            } else if awaiting {
                let quiet = now.saturating_sub(self.last_pull.load(Ordering::Acquire));
                if quiet >= limit_ms {
                    return Watch::Stalled;
                }
                limit_ms - quiet
            } else {
                // Busy on our side (the upstream, the store): look again.
                limit_ms
            };
            tokio::time::sleep(Duration::from_millis(wait.max(1))).await;
        }
    }
}

/// One request in progress, from its call until its response body is done
/// with (sent or dropped).
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>) -> InFlight {
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let a = &self.0;
        a.idle_since.store(a.now_ms(), Ordering::Release);
        a.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its request counted as in progress, and
/// tells [`Activity`] whether it waits for the client.
struct Tracked<B> {
    body: B,
    guard: InFlight,
    /// Counted in `awaiting_client`.
    awaiting: bool,
}

impl<B: Body> Tracked<B> {
    fn new(body: B, guard: InFlight) -> Tracked<B> {
        let mut t = Tracked {
            body,
            guard,
            awaiting: false,
        };
        t.set_awaiting(true);
        t
    }

    fn set_awaiting(&mut self, awaiting: bool) {
        let a = &self.guard.0;
        if awaiting && !self.awaiting {
            a.last_pull.store(a.now_ms(), Ordering::Release);
            a.awaiting_client.fetch_add(1, Ordering::AcqRel);
        } else if !awaiting && self.awaiting {
            a.awaiting_client.fetch_sub(1, Ordering::AcqRel);
        }
        self.awaiting = awaiting;
    }
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let a = &self.guard.0;
        a.last_pull.store(a.now_ms(), Ordering::Release);
        let polled = Pin::new(&mut self.body).poll_frame(cx);
        // A frame handed over (the last one too: hyper holds the body until
        // the client has taken it all) puts the client on turn; `Pending`
        // means the body waits on us (the upstream), not on the client.
        self.set_awaiting(polled.is_ready());
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if self.awaiting {
            self.guard.0.awaiting_client.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A socket whose writes fail once one has waited `limit` for the client
/// to make room: a client that stops reading a response (HTTP/1, or all of
/// HTTP/2's streams at once) loses its connection, as with nginx's
/// `send_timeout`.
struct WriteDeadline {
    io: Prefixed<Stream>,
    limit: Duration,
    /// Allocated at the first stall, reset at each later one.
    timer: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl WriteDeadline {
    fn new(io: Prefixed<Stream>, limit: Duration) -> WriteDeadline {
        WriteDeadline {
            io,
            limit,
            timer: None,
            stalled: false,
        }
    }

    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        let deadline = tokio::time::Instant::now() + self.limit;
        let timer = match (&mut self.timer, self.stalled) {
            (Some(t), true) => t,
            (Some(t), false) => {
                t.as_mut().reset(deadline);
                t
            }
            (None, _) => self
                .timer
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.stalled = true;
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client took no data within the client timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.check(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Whether a client sends enough of its first request, within `limit`, for
/// hyper to tell HTTP/1 from HTTP/2 (a byte that is not the HTTP/2 preface,
/// or the whole preface).
async fn first_bytes_within(stream: &Stream, limit: Duration) -> bool {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let sniff = async {
        let mut buf = [0u8; 24];
        loop {
            match stream.peek(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) if n == PREFACE.len() || buf[..n] != PREFACE[..n] => return true,
                // Part of the preface: peek returns at once, so wait a bit.
                Ok(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    };
    tokio::time::timeout(limit, sniff).await.unwrap_or(false)
}
