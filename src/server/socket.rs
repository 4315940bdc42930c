//! Where a listener listens: a TCP address, or a Unix socket
//! (`unix:/run/bigcache/proxy.sock`), the cheaper hop from an nginx on the
//! same host. Both give the serving code the same [`Stream`].
//!
//! A Unix socket's peer has no address: it is taken to be `127.0.0.1`
//! (port 0), what a peer on the loopback interface would be, so
//! `--trusted-proxy 127.0.0.1` trusts an nginx that connects through the
//! socket. Who may connect is the socket file's mode: the proxy's is made
//! `0666` (as open as a loopback port), the REST API's `0660` (its owner
//! and group: the Django side's user joins the group).

use std::fmt;
use std::io::{self, IoSlice};
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::BytesMut;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};

/// A listening address as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl std::str::FromStr for Listen {
    type Err = String;

    fn from_str(s: &str) -> Result<Listen, String> {
        match s.strip_prefix("unix:") {
            Some("") => Err("unix: needs a path, like unix:/run/bigcache/proxy.sock".into()),
            Some(path) => Ok(Listen::Unix(PathBuf::from(path))),
            None => s.parse().map(Listen::Tcp).map_err(|_| {
                format!("{s:?} is not an address like 127.0.0.1:8080 or unix:/path/to/socket")
            }),
        }
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(a) => write!(f, "{a}"),
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

impl Listen {
    /// Whether only this host can reach it: a loopback address or a
    /// socket file.
    pub fn is_local(&self) -> bool {
        match self {
            Listen::Tcp(a) => a.ip().is_loopback(),
            Listen::Unix(_) => true,
        }
    }
}

/// The address a Unix socket's peer is taken to have.
const UNIX_PEER: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A bound listener.
pub enum Listener {
    Tcp(TcpListener),
    /// Its file is removed when the listener is dropped, if it is still
    /// this socket's (device and inode): another process may have bound
    /// the path since.
    Unix(UnixListener, PathBuf, (u64, u64)),
}

impl Listener {
    /// Binds `at`; a socket file is made with `mode`, replacing a stale
    /// socket file: one nothing answers on (never a live one, nor any
    /// other file).
    pub async fn bind(at: &Listen, mode: u32) -> io::Result<Listener> {
        match at {
            Listen::Tcp(a) => TcpListener::bind(a).await.map(Listener::Tcp),
            Listen::Unix(path) => {
                match std::fs::symlink_metadata(path) {
                    Ok(m) if m.file_type().is_socket() => {
                        if std::os::unix::net::UnixStream::connect(path).is_ok() {
                            return Err(io::Error::new(
                                io::ErrorKind::AddrInUse,
                                "another process listens on this socket",
                            ));
                        }
                        std::fs::remove_file(path)?
                    }
                    Ok(_) => {
                        return Err(io::Error::new(
                            io::ErrorKind::AlreadyExists,
                            "a file that is not a socket is in the way",
                        ));
                    }
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                let listener = UnixListener::bind(path)?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
                let made = std::fs::symlink_metadata(path)?;
                Ok(Listener::Unix(
                    listener,
                    path.clone(),
                    (made.dev(), made.ino()),
                ))
            }
        }
    }

    /// Where it listens, with the port the system chose for port 0.
    pub fn local(&self) -> io::Result<Listen> {
        match self {
            Listener::Tcp(l) => l.local_addr().map(Listen::Tcp),
            Listener::Unix(_, p, _) => Ok(Listen::Unix(p.clone())),
        }
    }

    /// The TCP address (for tests and tools that bind port 0).
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match self {
            Listener::Tcp(l) => l.local_addr(),
            Listener::Unix(..) => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "a Unix socket has no address",
            )),
        }
    }

    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        match self {
            Listener::Tcp(l) => {
                let (s, peer) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((Stream::Tcp(s), peer))
            }
            Listener::Unix(l, ..) => {
                let (s, _) = l.accept().await?;
                Ok((Stream::Unix(s), UNIX_PEER))
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path, made) = self {
            let ours = std::fs::symlink_metadata(&*path).is_ok_and(|m| (m.dev(), m.ino()) == *made);
            if ours {
                let _ = std::fs::remove_file(path);
            }
        }
    }
}

/// A read's outcome as `try_io` should see it: `WouldBlock` when it read
/// some bytes (kept in `got`) but fewer than the `room` it had.
fn drained(read: io::Result<usize>, room: usize, got: &mut usize) -> io::Result<usize> {
    let n = read?;
    if n > 0 && n < room {
        *got = n;
        return Err(io::ErrorKind::WouldBlock.into());
    }
    Ok(n)
}

/// An accepted connection.
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    /// Reads what has arrived into `buf`, without waiting (`WouldBlock`
    /// when nothing has). A read that leaves room in `buf` emptied the
    /// socket's queue, so the socket is marked not readable at once: the
    /// next read waits for the next arrival rather than asking the kernel
    /// and being told to wait. Why: on a keep-alive connection the read
    /// after each answer found nothing (the client was still reading the
    /// answer), one `recvfrom` per request for nothing, nearly half of
    /// all the proxy's socket reads in `bench/run.sh mix`. nginx does the
    /// same (`ngx_unix_recv`, with `EPOLLRDHUP`).
    ///
    /// Nothing is missed: the socket is registered edge-triggered, and
    /// every arrival after the read raises a new event, which marks it
    /// readable again; tokio does not unmark readiness an event raised
    /// during the read, nor a hang-up it has seen (`READ_CLOSED` stays).
    /// The one exception is a client's own doing: a TCP read stops at
    /// urgent data and a Unix one at passed descriptors or `MSG_OOB`, with
    /// more queued behind; such a connection waits for its next bytes or
    /// the client timeout, and holds no more than any idle one does.
    pub fn read_some(&self, buf: &mut BytesMut) -> io::Result<usize> {
        let room = buf.capacity() - buf.len();
        let mut got = 0;
        // `try_io` unmarks readiness when its operation says `WouldBlock`.
        let read = match self {
            Stream::Tcp(s) => s.try_io(Interest::READABLE, || {
                drained(s.try_read_buf(buf), room, &mut got)
            }),
            Stream::Unix(s) => s.try_io(Interest::READABLE, || {
                drained(s.try_read_buf(buf), room, &mut got)
            }),
        };
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => Ok(got),
            read => read,
        }
    }

    pub fn try_write_vectored(&self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write_vectored(bufs),
            Stream::Unix(s) => s.try_write_vectored(bufs),
        }
    }

    pub async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            Stream::Unix(s) => s.readable().await,
        }
    }

    pub async fn writable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.writable().await,
            Stream::Unix(s) => s.writable().await,
        }
    }

    /// Bytes waiting to be read, left in place; 0 when the peer closed.
    pub async fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.peek(buf).await,
            Stream::Unix(s) => loop {
                s.readable().await?;
                let peeked = s.try_io(Interest::READABLE, || {
                    // SAFETY: `buf` is valid for `buf.len()` bytes for the
                    // call, and the descriptor is the stream's own.
                    let n = unsafe {
                        libc::recv(
                            s.as_raw_fd(),
                            buf.as_mut_ptr().cast(),
                            buf.len(),
                            libc::MSG_PEEK,
                        )
                    };
                    usize::try_from(n).map_err(|_| io::Error::last_os_error())
                });
                match peeked {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                    other => return other,
                }
            },
        }
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Unix(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_flush(cx),
            Stream::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

impl hyper_util::client::legacy::connect::Connection for Stream {
    fn connected(&self) -> hyper_util::client::legacy::connect::Connected {
        hyper_util::client::legacy::connect::Connected::new()
    }
}

/// A client's way to a listener: the URI's host and port over TCP, or
/// always one Unix socket (`bigcache warm --proxy unix:/path`).
#[derive(Clone)]
pub struct Dial(Option<std::sync::Arc<PathBuf>>);

impl Dial {
    pub fn tcp() -> Dial {
        Dial(None)
    }

    pub fn unix(path: PathBuf) -> Dial {
        Dial(Some(std::sync::Arc::new(path)))
    }
}

type Dialing = Pin<Box<dyn std::future::Future<Output = io::Result<TokioIo<Stream>>> + Send>>;

impl tower::Service<http::Uri> for Dial {
    type Response = TokioIo<Stream>;
    type Error = io::Error;
    type Future = Dialing;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Dialing {
        let unix = self.0.clone();
        Box::pin(async move {
            if let Some(path) = unix {
                return UnixStream::connect(&*path)
                    .await
                    .map(|s| TokioIo::new(Stream::Unix(s)));
            }
            let host = uri
                .host()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no host"))?;
            let port = uri.port_u16().unwrap_or(80);
            let s = TcpStream::connect((host.trim_matches(['[', ']']), port)).await?;
            let _ = s.set_nodelay(true);
            Ok(TokioIo::new(Stream::Tcp(s)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_socket_paths_parse() {
        assert_eq!(
            "127.0.0.1:8080".parse::<Listen>(),
            Ok(Listen::Tcp("127.0.0.1:8080".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/b.sock".parse::<Listen>(),
            Ok(Listen::Unix("/run/b.sock".into()))
        );
        assert!("unix:".parse::<Listen>().is_err());
        assert!("localhost".parse::<Listen>().is_err());
        assert_eq!("unix:/a".parse::<Listen>().unwrap().to_string(), "unix:/a");
        assert!(Listen::Unix("/a".into()).is_local());
        assert!(!"0.0.0.0:1".parse::<Listen>().unwrap().is_local());
    }

    #[tokio::test]
    async fn a_socket_file_is_made_replaced_when_stale_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.sock");
        let at = Listen::Unix(path.clone());
        let first = Listener::bind(&at, 0o660).await.unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        assert!(
            Listener::bind(&at, 0o660).await.is_err(),
            "a socket something listens on is not taken over"
        );
        drop(first);
        // A socket file nothing listens on, as a crash leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        let second = Listener::bind(&at, 0o666).await.unwrap();
        let client = UnixStream::connect(&path).await.unwrap();
        let (stream, peer) = second.accept().await.unwrap();
        assert_eq!(peer, UNIX_PEER);
        drop(client);
        assert_eq!(stream.peek(&mut [0u8; 1]).await.unwrap(), 0, "closed");
        drop(second);
        assert!(!path.exists());
        // Bound again by another listener meanwhile: the first one's drop
        // leaves the newcomer's file alone.
        let third = Listener::bind(&at, 0o660).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        let fourth = Listener::bind(&at, 0o660).await.unwrap();
        drop(third);
        assert!(path.exists(), "another listener's socket was removed");
        drop(fourth);
        assert!(!path.exists());
        std::fs::write(&path, b"not a socket").unwrap();
        assert!(
            Listener::bind(&at, 0o660).await.is_err(),
            "a file in the way"
        );
    }
}
