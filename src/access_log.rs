//! The access log (`--access-log <path|->`): one line per proxied request,
//! in the combined log's order with the cache's decision added:
//!
//! ```text
//! 127.0.0.1 - - [2026-12-01T13:45:58.123Z] "GET /datasets/?page=2 HTTP/1.1" 200 20480 "-" "curl/8.5" cache=HIT reason=- ms=0.41
//! ```
//!
//! (`ms`: from the request's arrival to its response head; the byte count
//! is the response's `Content-Length`, `-` when it streams without one.)
//! Lines are handed to a writer thread through a bounded channel and never
//! block a request: when the writer falls behind, lines are dropped and
//! counted (`bigcache_access_log_dropped_total`). Request text a client
//! controls (target, referer, user agent) is escaped, so no client can
//! forge a line.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Instant, SystemTime};

/// Lines waiting for the writer, at most.
const QUEUE: usize = 16_384;

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Stdout,
    File(PathBuf),
}

impl Target {
    pub fn parse(s: &str) -> Target {
        if s == "-" {
            Target::Stdout
        } else {
            Target::File(PathBuf::from(s))
        }
    }
}

/// A handle that queues lines for the writer thread.
#[derive(Clone)]
pub struct AccessLog {
    tx: SyncSender<String>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Opens `target` (appending to a file) and starts the writer thread,
    /// which ends once every handle is dropped.
    pub fn open(target: &Target) -> std::io::Result<AccessLog> {
        let mut out: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 << 10);
                while let Ok(line) = rx.recv() {
                    buf.extend_from_slice(line.as_bytes());
                    // Everything queued meanwhile goes in the same write.
                    while let Ok(more) = rx.try_recv() {
                        buf.extend_from_slice(more.as_bytes());
                        if buf.len() > 60 << 10 {
                            break;
                        }
                    }
                    if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                        tracing::warn!(error = %e, "access log write failed");
                    }
                    buf.clear();
                }
            })?;
        Ok(AccessLog {
            tx,
            dropped: Arc::default(),
        })
    }

    /// Lines dropped because the writer fell behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    fn push(&self, line: String) {
        match self.tx.try_send(line) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// What a request line needs from the request, taken before it is
/// consumed.
pub struct Pending {
    started: Instant,
    peer: SocketAddr,
    request: String,
    referer: String,
    agent: String,
}

impl Pending {
    pub fn begin<B>(req: &http::Request<B>, peer: SocketAddr) -> Pending {
        let header = |name| {
            req.headers()
                .get(name)
                .map_or_else(|| "-".to_string(), |v| escape(v.as_bytes()))
        };
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        Pending {
            started: Instant::now(),
            peer,
            request: format!(
                "{} {} {:?}",
                req.method(),
                escape(target.as_bytes()),
                req.version()
            ),
            referer: header(http::header::REFERER),
            agent: header(http::header::USER_AGENT),
        }
    }

    /// Queues the line for a response with `status`, `length` (if known)
    /// and the decision's `cache` status and `reason`.
    pub fn finish(
        self,
        log: &AccessLog,
        status: u16,
        length: Option<u64>,
        cache: &str,
        reason: &str,
    ) {
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let when = humantime::format_rfc3339_millis(SystemTime::now());
        let bytes = length.map_or_else(|| "-".to_string(), |n| n.to_string());
        log.push(format!(
            "{} - - [{when}] \"{}\" {status} {bytes} \"{}\" \"{}\" cache={cache} reason={reason} ms={ms:.2}\n",
            self.peer.ip(),
            self.request,
            self.referer,
            self.agent,
        ));
    }
}

/// Printable ASCII as is, but `"` and `\`; everything else as `\xNN`.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            b' '..=b'~' => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_text_cannot_forge_a_line() {
        assert_eq!(escape(b"a\"b\\c"), "a\\\"b\\\\c");
        assert_eq!(
            escape(b"x\r\n127.0.0.1 - - fake"),
            "x\\x0d\\x0a127.0.0.1 - - fake"
        );
        assert_eq!(escape("é".as_bytes()), "\\xc3\\xa9");
    }
}
