//! Bodies on both sides of the proxy: one boxed type, an idle timeout for
//! bodies streamed from the upstream, reading a body for the cache within a
//! size limit, and streaming on when it turns out too large.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty};
use hyper::body::{Frame, Incoming, SizeHint};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type used on both sides of the proxy.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

pub fn empty() -> Body {
    Empty::<Bytes>::new().map_err(|e| match e {}).boxed_unsync()
}

pub fn full(bytes: Bytes) -> Body {
    http_body_util::Full::new(bytes)
        .map_err(|e| match e {})
        .boxed_unsync()
}

/// Any request or response body as a [`Body`].
pub fn boxed<B>(body: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    body.map_err(Into::into).boxed_unsync()
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

pub fn with_idle_timeout(inner: Body, idle: Duration) -> Body {
    IdleTimeout {
        inner,
        idle,
        timer: Box::pin(tokio::time::sleep(idle)),
    }
    .boxed_unsync()
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
    Chain {
        prefix: Some(prefix),
        rest,
    }
    .boxed_unsync()
}
