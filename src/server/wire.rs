//! An `http::Response` written as HTTP/1.1 on a connection `server::h1`
//! serves, framed as hyper's server frames it (its `proto::h1::role`
//! rules for `Content-Length`, `Transfer-Encoding`, `Date`, bodies that
//! HEAD, 204 and 304 answers do not have), so a client cannot tell which
//! of the two wrote an answer. `tests/quick.rs` holds the two to the same
//! bytes.
//!
//! A response whose framing cannot be kept (a body that ends short of its
//! `Content-Length` or runs past it, a body error, conflicting lengths)
//! ends the connection: the client sees a cut, never a desync.

use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use super::socket::Stream;
use bytes::{Buf, Bytes};
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use hyper::body::{Body, Frame};

/// How the body goes on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(u64),
    Chunked,
}

/// Whether an answer to `head` (a HEAD request) with `status` carries a
/// body, and so may be chunked.
fn can_have_body(head: bool, status: StatusCode) -> bool {
    !head && can_have_length(status)
}

fn can_have_length(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// The body's length as hyper reads it: `None` when it is already over.
fn body_length<B: Body>(body: &B) -> Option<Option<u64>> {
    if body.is_end_stream() {
        return None;
    }
    Some(body.size_hint().exact())
}

/// Why a response could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("writing to the client: {0}")]
    Io(#[from] io::Error),
    /// The response's own fields or body break its framing.
    #[error("{0}")]
    Framing(&'static str),
}

/// The head of `parts` as bytes, and how its body is framed
/// (`Length(0)`: no body is sent). The flag that comes back says the
/// connection ends after it: `last` (then `Connection: close` is added
/// unless the response names a `Connection`), a 101, or a response that
/// says `Connection: close`.
fn encode_head(
    parts: &http::response::Parts,
    head: bool,
    length: Option<Option<u64>>,
    last: bool,
    out: &mut Vec<u8>,
) -> Result<(Framing, bool), WireError> {
    let status = parts.status;
    // hyper's rules: a 101 ends the HTTP/1.1 exchange, no other 1xx is
    // sent as a response.
    if status.is_informational() && status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(WireError::Framing("an interim status as the response"));
    }
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    match parts.extensions.get::<hyper::ext::ReasonPhrase>() {
        Some(reason) => out.extend_from_slice(reason.as_bytes()),
        None => out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes()),
    }
    out.extend_from_slice(b"\r\n");
    let chunkable = can_have_body(head, status);
    let mut framing = Framing::Length(0);
    let (mut wrote_len, mut wrote_date) = (false, false);
    let mut is_last = last || status == StatusCode::SWITCHING_PROTOCOLS;
    if last && !parts.headers.contains_key(header::CONNECTION) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let mut length_seen: Option<u64> = None;
    for name in parts.headers.keys() {
        let mut values = parts.headers.get_all(name).iter();
        match *name {
            header::CONTENT_LENGTH if wrote_len => {
                return Err(WireError::Framing(
                    "Content-Length beside Transfer-Encoding",
                ));
            }
            header::CONTENT_LENGTH => match length {
                Some(Some(known)) => {
                    let first = values.next().map_or(&b""[..], HeaderValue::as_bytes);
                    line(out, name.as_str(), &[first]);
                    framing = Framing::Length(known);
                    wrote_len = true;
                }
                Some(None) => {
                    for v in values {
                        let n = parse_length(v.as_bytes())
                            .ok_or(WireError::Framing("a Content-Length that is not a number"))?;
                        match length_seen {
                            Some(prev) if prev != n => {
                                return Err(WireError::Framing("two Content-Lengths"));
                            }
                            Some(_) => {}
                            None => {
                                line(out, name.as_str(), &[v.as_bytes()]);
                                length_seen = Some(n);
                                framing = Framing::Length(n);
                                wrote_len = true;
                            }
                        }
                    }
                }
                // No body: the length is the HEAD answer's, or dropped.
                None if head => {
                    let (Some(v), None) = (values.next(), values.next()) else {
                        return Err(WireError::Framing("two Content-Lengths"));
                    };
                    line(out, name.as_str(), &[v.as_bytes()]);
                    wrote_len = true;
                }
                None => {}
            },
            header::TRANSFER_ENCODING => {
                if !chunkable {
                    continue;
                }
                if wrote_len {
                    return Err(WireError::Framing(
                        "Transfer-Encoding beside Content-Length",
                    ));
                }
                let mut all: Vec<&[u8]> = values.map(HeaderValue::as_bytes).collect();
                if !all.last().is_some_and(|v| is_chunked(v)) {
                    all.push(b"chunked");
                }
                line(out, name.as_str(), &all);
                framing = Framing::Chunked;
                wrote_len = true;
            }
            header::CONNECTION => {
                let all: Vec<&[u8]> = values.map(HeaderValue::as_bytes).collect();
                is_last |= all.iter().any(|v| names_close(v));
                line(out, name.as_str(), &all);
            }
            header::TRAILER => {
                if chunkable {
                    let all: Vec<&[u8]> = values.map(HeaderValue::as_bytes).collect();
                    line(out, name.as_str(), &all);
                }
            }
            _ => {
                wrote_date |= *name == header::DATE;
                for v in values {
                    line(out, name.as_str(), &[v.as_bytes()]);
                }
            }
        }
    }
    if !wrote_len {
        framing = match length {
            Some(None) if chunkable => {
                out.extend_from_slice(b"transfer-encoding: chunked\r\n");
                Framing::Chunked
            }
            Some(None) => Framing::Length(0),
            None | Some(Some(0)) => {
                if can_have_length(status) && !head {
                    out.extend_from_slice(b"content-length: 0\r\n");
                }
                Framing::Length(0)
            }
            Some(Some(n)) => {
                if can_have_length(status) {
                    out.extend_from_slice(b"content-length: ");
                    out.extend_from_slice(n.to_string().as_bytes());
                    out.extend_from_slice(b"\r\n");
                    Framing::Length(n)
                } else {
                    Framing::Length(0)
                }
            }
        };
    }
    if !chunkable {
        framing = Framing::Length(0);
    }
    if !wrote_date {
        out.extend_from_slice(b"date: ");
        http_date(out);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok((framing, is_last))
}

/// One field line of values joined with `, `.
fn line(out: &mut Vec<u8>, name: &str, values: &[&[u8]]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            out.extend_from_slice(b", ");
        }
        out.extend_from_slice(v);
    }
    out.extend_from_slice(b"\r\n");
}

fn parse_length(v: &[u8]) -> Option<u64> {
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

fn is_chunked(v: &[u8]) -> bool {
    v.rsplit(|&b| b == b',')
        .next()
        .is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

fn names_close(v: &[u8]) -> bool {
    v.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
}

/// Today's `Date` value, formatted once a second per thread.
pub fn http_date(out: &mut Vec<u8>) {
    thread_local! {
        static CACHED: std::cell::RefCell<(u64, String)> = const {
            std::cell::RefCell::new((u64::MAX, String::new()))
        };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with_borrow_mut(|(at, text)| {
        if *at != secs {
            *at = secs;
            *text = httpdate::fmt_http_date(std::time::UNIX_EPOCH + Duration::from_secs(secs));
        }
        out.extend_from_slice(text.as_bytes());
    });
}

/// Writes `res` as the answer to a request (`head`: a HEAD); `last`: the
/// connection closes after it (a stop), which the answer says as hyper's
/// would. A write that waits `limit` for the client fails. `Ok(true)`:
/// the connection may carry the next request.
pub async fn write_response<B>(
    stream: &mut Stream,
    res: Response<B>,
    head: bool,
    last: bool,
    limit: Duration,
) -> Result<bool, WireError>
where
    B: Body<Data = Bytes> + Unpin,
{
    let (parts, mut body) = res.into_parts();
    let mut out = Vec::with_capacity(256 + parts.headers.len() * 48);
    let (framing, is_last) = encode_head(&parts, head, body_length(&body), last, &mut out)?;
    let mut left = match framing {
        Framing::Length(0) => {
            write_all(stream, [&out], limit).await?;
            return Ok(!is_last);
        }
        Framing::Length(n) => Some(n),
        Framing::Chunked => None,
    };
    // The head goes out with the first piece of the body when that is at
    // hand (a stored page), else at once (a response still streaming).
    let mut pending_head = Some(out);
    loop {
        let frame = match &pending_head {
            Some(_) => match poll_fn(|cx| match Pin::new(&mut body).poll_frame(cx) {
                Poll::Ready(f) => Poll::Ready(Some(f)),
                Poll::Pending => Poll::Ready(None),
            })
            .await
            {
                Some(f) => f,
                None => {
                    if let Some(h) = pending_head.take() {
                        write_all(stream, [&h], limit).await?;
                    }
                    continue;
                }
            },
            None => poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await,
        };
        let head_bytes = pending_head.take();
        let head_bytes = head_bytes.as_deref().unwrap_or(&[]);
        match frame {
            None => {
                return match left {
                    Some(0) => {
                        write_all(stream, [head_bytes], limit).await?;
                        Ok(!is_last)
                    }
                    Some(_) => {
                        write_all(stream, [head_bytes], limit).await?;
                        Err(WireError::Framing("the body ended short of its length"))
                    }
                    None => {
                        write_all(stream, [head_bytes, b"0\r\n\r\n"], limit).await?;
                        Ok(!is_last)
                    }
                };
            }
            Some(Err(_)) => {
                write_all(stream, [head_bytes], limit).await?;
                return Err(WireError::Framing("the body failed"));
            }
            Some(Ok(frame)) => {
                let Ok(mut data) = frame.into_data().map_err(|_: Frame<Bytes>| ()) else {
                    // Trailers: not sent (hyper sends them only when the
                    // response announced them, which no proxied one does).
                    write_all(stream, [head_bytes], limit).await?;
                    continue;
                };
                match &mut left {
                    Some(n) => {
                        let take = (data.len() as u64).min(*n);
                        let over = (data.len() as u64) > *n;
                        data.truncate(take as usize);
                        *n -= take;
                        write_all(stream, [head_bytes, &data], limit).await?;
                        if over {
                            return Err(WireError::Framing("the body ran past its length"));
                        }
                    }
                    None if data.is_empty() => write_all(stream, [head_bytes], limit).await?,
                    None => {
                        let size = format!("{:x}\r\n", data.len());
                        let parts = [head_bytes, size.as_bytes(), &data, b"\r\n"];
                        write_all(stream, parts, limit).await?;
                    }
                }
            }
        }
    }
}

/// Writes every slice whole, in order; fails when the client takes
/// nothing for `limit`.
pub async fn write_all<const N: usize>(
    stream: &mut Stream,
    mut parts: [&[u8]; N],
    limit: Duration,
) -> io::Result<()> {
    write_in::<N>(stream, &mut parts, limit).await
}

/// Slices handed to one `writev` at most.
const IOV: usize = 64;

/// [`write_all`] for any number of parts (an ESI page's pieces), [`IOV`]
/// at a time.
pub async fn write_slices(
    stream: &mut Stream,
    parts: &mut [&[u8]],
    limit: Duration,
) -> io::Result<()> {
    write_in::<IOV>(stream, parts, limit).await
}

/// `parts` written in order, up to `CAP` in one `writev` (the slices are
/// made on the stack for each call: as many as a hit's two parts need).
async fn write_in<const CAP: usize>(
    stream: &mut Stream,
    parts: &mut [&[u8]],
    limit: Duration,
) -> io::Result<()> {
    let mut first = 0;
    loop {
        while first < parts.len() && parts[first].is_empty() {
            first += 1;
        }
        if first == parts.len() {
            return Ok(());
        }
        let n = (parts.len() - first).min(CAP);
        let slices: [IoSlice<'_>; CAP] =
            std::array::from_fn(|i| IoSlice::new(if i < n { parts[first + i] } else { &[] }));
        match stream.try_write_vectored(&slices[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(mut n) => {
                for p in &mut parts[first..] {
                    let k = n.min(p.len());
                    p.advance(k);
                    n -= k;
                    if n == 0 {
                        break;
                    }
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tokio::time::timeout(limit, stream.writable())
                    .await
                    .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The head of a response with `fields` and `status`, to a HEAD or a
    /// GET, its body `length` as hyper reads it.
    fn head_of(
        status: u16,
        fields: &[(&str, &str)],
        head: bool,
        length: Option<Option<u64>>,
        last: bool,
    ) -> Result<(String, Framing, bool), WireError> {
        let mut res = Response::new(());
        *res.status_mut() = StatusCode::from_u16(status).unwrap();
        *res.headers_mut() = crate::proxy::test_headers(fields);
        let (parts, ()) = res.into_parts();
        let mut out = Vec::new();
        let (framing, is_last) = encode_head(&parts, head, length, last, &mut out)?;
        let text = String::from_utf8(out).unwrap();
        // The date changes; its line is there.
        let at = text.find("date: ").expect("a Date");
        let end = at + text[at..].find("\r\n").unwrap() + 2;
        Ok((format!("{}{}", &text[..at], &text[end..]), framing, is_last))
    }

    #[test]
    fn lengths_as_hyper_writes_them() {
        let ok = |s, f: &[(&str, &str)], head, len| head_of(s, f, head, len, false).unwrap();
        let (text, framing, _) = ok(200, &[("x-a", "1")], false, Some(Some(5)));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\nx-a: 1\r\ncontent-length: 5\r\n\r\n"
        );
        assert_eq!(framing, Framing::Length(5));
        let (text, framing, _) = ok(200, &[], false, Some(None));
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        assert_eq!(framing, Framing::Chunked);
        let (text, _, _) = ok(200, &[], false, None);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        // A HEAD keeps the length it was given and adds none.
        let (text, framing, _) = ok(200, &[("content-length", "7")], true, None);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\n");
        assert_eq!(framing, Framing::Length(0));
        let (text, _, _) = ok(200, &[], true, None);
        assert_eq!(text, "HTTP/1.1 200 OK\r\n\r\n");
        // A length announced for a body that is not there goes (not a HEAD).
        let (text, _, _) = ok(200, &[("content-length", "7")], false, None);
        assert_eq!(text, "HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
        // 204 and 304 have no body and no added length.
        let (text, framing, _) = ok(304, &[("etag", "\"v\"")], false, None);
        assert_eq!(text, "HTTP/1.1 304 Not Modified\r\netag: \"v\"\r\n\r\n");
        assert_eq!(framing, Framing::Length(0));
        let (text, framing, _) = ok(204, &[], false, Some(Some(3)));
        assert_eq!(text, "HTTP/1.1 204 No Content\r\n\r\n");
        assert_eq!(framing, Framing::Length(0));
        // A body of unknown length with its length named: that length.
        let (_, framing, _) = ok(200, &[("content-length", "9")], false, Some(None));
        assert_eq!(framing, Framing::Length(9));
    }

    #[test]
    fn framing_that_cannot_be_kept_is_an_error() {
        for fields in [
            &[("content-length", "3"), ("content-length", "4")][..],
            &[("content-length", "x")],
            &[("transfer-encoding", "chunked"), ("content-length", "3")],
            &[("content-length", "3"), ("transfer-encoding", "chunked")],
        ] {
            assert!(
                head_of(200, fields, false, Some(None), false).is_err(),
                "{fields:?}"
            );
        }
        assert!(
            head_of(103, &[], false, None, false).is_err(),
            "an interim status"
        );
    }

    #[test]
    fn the_last_answer_says_so() {
        let (text, _, last) = head_of(200, &[], false, Some(Some(1)), true).unwrap();
        assert!(last);
        assert!(text.contains("connection: close\r\n"), "{text}");
        let (_, _, last) = head_of(200, &[("connection", "close")], false, None, false).unwrap();
        assert!(last, "the response's own");
        let (_, _, last) = head_of(101, &[("upgrade", "x")], false, None, false).unwrap();
        assert!(last, "a 101");
        let (_, _, last) = head_of(200, &[], false, None, false).unwrap();
        assert!(!last);
    }
}
