//! Bodies on both sides of the proxy: one boxed type, relaying a body
//! streamed from the upstream (an idle timeout on the upstream side, a send
//! timeout on the client side), reading a body for the cache within a size
//! limit, and streaming on when it turns out too large.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use hyper::body::{Body as _, Frame, Incoming, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body type used on both sides of the proxy: bytes already in hand
/// as they are (a hit allocates nothing for its body), anything else boxed.
pub struct Body(Kind);

enum Kind {
    /// One frame, or none when empty (`http_body_util::Full`'s behaviour).
    Whole(Option<Bytes>),
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().0 {
            Kind::Whole(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Boxed(body) => Pin::new(body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.0 {
            Kind::Whole(bytes) => bytes.is_none(),
            Kind::Boxed(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.0 {
            Kind::Whole(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            Kind::Boxed(body) => body.size_hint(),
        }
    }
}

impl std::fmt::Debug for Body {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self.0 {
            Kind::Whole(_) => "Body::Whole",
            Kind::Boxed(_) => "Body::Boxed",
        })
    }
}

pub fn empty() -> Body {
    Body(Kind::Whole(None))
}

pub fn full(bytes: Bytes) -> Body {
    Body(Kind::Whole(Some(bytes).filter(|b| !b.is_empty())))
}

/// Any other body as a [`Body`].
fn boxed_body<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    Body(Kind::Boxed(body.boxed_unsync()))
}

/// Frames a stored page is sent in: a client on a slow link shows its
/// progress each time it has taken one (a whole page in one frame would
/// look stalled to the connection's watch until it was all sent).
const STORED_FRAME: usize = 64 << 10;

/// A stored page's body, in [`STORED_FRAME`] slices of the same buffer.
pub fn stored(bytes: Bytes) -> Body {
    if bytes.len() <= STORED_FRAME {
        return full(bytes);
    }
    chunks(vec![bytes])
}

/// A body sent as these pieces in order (an ESI page: slices of the stored
/// shell and its fragments, never copied into one buffer), each in frames
/// of at most [`STORED_FRAME`].
pub fn chunks(pieces: Vec<Bytes>) -> Body {
    let left = pieces.iter().map(|p| p.len() as u64).sum();
    boxed_body(Pieces {
        rest: pieces.into_iter().filter(|p| !p.is_empty()).collect(),
        left,
    })
}

struct Pieces {
    rest: std::collections::VecDeque<Bytes>,
    left: u64,
}

impl hyper::body::Body for Pieces {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let Some(piece) = self.rest.front_mut() else {
            return Poll::Ready(None);
        };
        let frame = piece.split_to(piece.len().min(STORED_FRAME));
        if piece.is_empty() {
            self.rest.pop_front();
        }
        self.left -= frame.len() as u64;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// Any request or response body as a [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    boxed_body(body.map_err(Into::into))
}

/// An upstream body that fails if no data arrives for `idle`: a stalled
/// upstream must not hold a client's response open forever once its head
/// has been sent.
struct IdleTimeout {
    inner: Body,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for IdleTimeout {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + self.idle;
                self.timer.as_mut().reset(deadline);
                Poll::Ready(frame)
            }
            Poll::Pending => match self.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BoxError::from(format!(
                    "upstream body idle for {:?}",
                    self.idle
                ))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

fn with_idle_timeout(inner: Body, idle: Duration) -> Body {
    boxed_body(IdleTimeout {
        inner,
        idle,
        timer: Box::pin(tokio::time::sleep(idle)),
    })
}

/// Frames, and bytes, read ahead of a slow client per relayed response:
/// what a stalled client can make bigcache hold (upstream frames reach
/// hundreds of KiB, so frames alone bound little).
const READ_AHEAD: usize = 16;
const READ_AHEAD_BYTES: usize = 256 << 10;

type Relay = (
    Result<Frame<Bytes>, BoxError>,
    Option<tokio::sync::OwnedSemaphorePermit>,
);

/// Relays an upstream body to a client through a task of its own.
///
/// A body is only polled while the client takes data, so a timer inside it
/// cannot notice a client that stopped reading (an HTTP/1 socket that never
/// drains, an HTTP/2 stream whose window stays shut): the upstream
/// connection, and the Django worker writing into it, would be held for as
/// long as the client likes. The relay task reads the upstream with `idle`
/// as its idle timeout, and lets it go when the client has not taken a frame
/// for `send`; the client then sees its response cut short.
pub fn relayed(inner: Body, idle: Duration, send: Duration) -> Body {
    if inner.is_end_stream() {
        return inner;
    }
    let hint = inner.size_hint();
    let (tx, rx) = tokio::sync::mpsc::channel::<Relay>(READ_AHEAD);
    let room = Arc::new(tokio::sync::Semaphore::new(READ_AHEAD_BYTES));
    let complete = Arc::new(AtomicBool::new(false));
    let done = complete.clone();
    tokio::spawn(async move {
        let mut upstream = with_idle_timeout(inner, idle);
        loop {
            let frame = tokio::select! {
                frame = upstream.frame() => frame,
                // The client went away: stop reading at once.
                () = tx.closed() => return,
            };
            let Some(frame) = frame else {
                done.store(true, Ordering::Release);
                return;
            };
            let failed = frame.is_err();
            let len = frame
                .as_ref()
                .ok()
                .and_then(Frame::data_ref)
                .map_or(0, Bytes::len);
            let handed = async {
                // A frame larger than the whole budget takes all of it.
                let n = u32::try_from(len.min(READ_AHEAD_BYTES)).unwrap_or(u32::MAX);
                let permit = room.clone().acquire_many_owned(n).await.ok();
                tx.send((frame, permit)).await
            };
            match tokio::time::timeout(send, handed).await {
                Ok(Ok(())) if !failed => {}
                Ok(Ok(())) | Ok(Err(_)) => return,
                Err(_) => {
                    tracing::debug!("client took no data for {send:?}; upstream let go");
                    return;
                }
            }
        }
    });
    boxed_body(Relayed { rx, complete, hint })
}

struct Relayed {
    /// Frames with their share of the read-ahead budget, given back as
    /// each is handed to hyper.
    rx: tokio::sync::mpsc::Receiver<Relay>,
    /// Set by the relay task when the upstream body ended normally.
    complete: Arc<AtomicBool>,
    hint: SizeHint,
}

impl hyper::body::Body for Relayed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some((frame, _room))) => Poll::Ready(Some(frame)),
            Poll::Ready(None) if !self.complete.load(Ordering::Acquire) => Poll::Ready(Some(Err(
                BoxError::from("upstream body cut: the client took too long to read"),
            ))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn size_hint(&self) -> SizeHint {
        self.hint
    }
}

pub enum Collected {
    Whole(Bytes),
    /// Over the limit: what was read so far and the rest of the body.
    TooBig(Bytes, Incoming),
}

/// Reads a body whole unless it grows past `limit`.
pub async fn collect_limited(mut body: Incoming, limit: usize) -> Result<Collected, hyper::Error> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame?.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Collected::TooBig(buf.freeze(), body));
            }
        }
    }
    // The buffer grew by doubling; a page kept in the hot tier should pin
    // its own size, not up to twice that (the tier's budget counts length).
    let whole = if buf.capacity() - buf.len() > buf.len() / 8 {
        Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
    };
    Ok(Collected::Whole(whole))
}

/// A body that yields `prefix`, then the rest of an upstream body: what a
/// response too large to cache streams as once its start was buffered.
struct Chain {
    prefix: Option<Bytes>,
    rest: Incoming,
}

impl hyper::body::Body for Chain {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(p) = self.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(p))));
        }
        Pin::new(&mut self.rest)
            .poll_frame(cx)
            .map_err(BoxError::from)
    }
}

pub fn chain(prefix: Bytes, rest: Incoming) -> Body {
    boxed_body(Chain {
        prefix: Some(prefix),
        rest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every piece in order, in frames of at most `STORED_FRAME`, the
    /// length known exactly at each step.
    #[tokio::test]
    async fn pieces_go_in_order_in_bounded_frames() {
        let big = Bytes::from(vec![b'a'; STORED_FRAME + 5]);
        let pieces = vec![
            big.clone(),
            Bytes::new(),
            Bytes::from_static(b"xyz"),
            big.clone(),
        ];
        let want: Vec<u8> = [&big[..], b"xyz", &big[..]].concat();
        let mut body = chunks(pieces);
        let mut got = Vec::new();
        let mut left = want.len() as u64;
        while let Some(frame) = body.frame().await {
            assert_eq!(
                body.size_hint().exact(),
                Some(left - frame.as_ref().unwrap().data_ref().unwrap().len() as u64)
            );
            let data = frame.unwrap().into_data().unwrap();
            assert!(!data.is_empty() && data.len() <= STORED_FRAME);
            left -= data.len() as u64;
            got.extend_from_slice(&data);
        }
        assert_eq!(got, want);
        assert!(body.is_end_stream());
        let whole = stored(big.clone()).collect().await.unwrap().to_bytes();
        assert_eq!(whole, big);
    }
}
