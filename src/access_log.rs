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
//!
//! The file is created readable by its owner and group only (client
//! addresses and the pages they read are personal data), and reopened on
//! SIGHUP, so logrotate can move it away and signal (`postrotate`).

use std::io::Write;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};
use std::time::{Instant, SystemTime};

/// Lines waiting for the writer, at most.
const QUEUE: usize = 16_384;
/// How often the writer takes what is queued. It sleeps rather than
/// waiting on the channel: a writer blocked in `recv` has to be woken by
/// every request (a futex call each), which cost the hot path 45% of its
/// throughput; asleep, it is woken by no one.
const FLUSH_EVERY: std::time::Duration = std::time::Duration::from_millis(20);

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
    /// Set to have the writer reopen its file before its next write.
    reopen: Arc<std::sync::atomic::AtomicBool>,
}

/// Opens the log file for appending, `0640` (a file an earlier release
/// left `0644` is narrowed too).
fn open_file(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o640);
    let file = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o777;
        if mode & 0o037 != 0 {
            // Not ours to change (another owner): the log still works.
            let _ = file.set_permissions(std::fs::Permissions::from_mode(mode & 0o740));
        }
    }
    Ok(file)
}

/// The writer thread: [`Writer::close`] has it write what is queued and
/// waits for it, so a shutdown keeps the last lines.
pub struct Writer {
    closing: Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

impl Writer {
    pub fn close(self) {
        self.closing.store(true, Relaxed);
        self.thread.thread().unpark();
        let _ = self.thread.join();
    }
}

impl std::fmt::Debug for AccessLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AccessLog").finish_non_exhaustive()
    }
}

impl AccessLog {
    /// Opens `target` (appending to a file) and starts the writer thread,
    /// which ends once every handle is dropped or it is closed.
    pub fn open(target: &Target) -> std::io::Result<(AccessLog, Writer)> {
        let mut out: Box<dyn Write + Send> = match target {
            Target::Stdout => Box::new(std::io::stdout()),
            Target::File(path) => Box::new(open_file(path)?),
        };
        let (tx, rx) = sync_channel::<String>(QUEUE);
        let closing = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = closing.clone();
        let reopen = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let reopening = reopen.clone();
        let path = match target {
            Target::File(path) => Some(path.clone()),
            Target::Stdout => None,
        };
        let thread = std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 << 10);
                let mut open = true;
                while open {
                    std::thread::park_timeout(FLUSH_EVERY);
                    // Closing: this drain is the last.
                    open &= !closed.load(Relaxed);
                    if let Some(path) = &path
                        && reopening.swap(false, Relaxed)
                    {
                        // A failed reopen keeps the old file: lines still
                        // land somewhere.
                        match open_file(path) {
                            Ok(f) => out = Box::new(f),
                            Err(e) => tracing::warn!(error = %e, "reopening the access log"),
                        }
                    }
                    loop {
                        match rx.try_recv() {
                            Ok(line) => buf.extend_from_slice(line.as_bytes()),
                            Err(std::sync::mpsc::TryRecvError::Empty) => break,
                            Err(std::sync::mpsc::TryRecvError::Disconnected) => {
                                open = false;
                                break;
                            }
                        }
                        if buf.len() > 60 << 10 {
                            if let Err(e) = out.write_all(&buf) {
                                tracing::warn!(error = %e, "access log write failed");
                            }
                            buf.clear();
                        }
                    }
                    if let Err(e) = out.write_all(&buf).and_then(|()| out.flush()) {
                        tracing::warn!(error = %e, "access log write failed");
                    }
                    buf.clear();
                }
            })?;
        let log = AccessLog {
            tx,
            dropped: Arc::default(),
            reopen,
        };
        Ok((log, Writer { closing, thread }))
    }

    /// Has the writer reopen the file (after logrotate moved it away),
    /// before it writes again.
    pub fn reopen(&self) {
        self.reopen.store(true, Relaxed);
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
/// consumed: cheap clones (shared bytes), formatted only at the end, into
/// one buffer.
pub struct Pending {
    started: Instant,
    client: IpAddr,
    method: http::Method,
    uri: http::Uri,
    version: http::Version,
    referer: Option<http::HeaderValue>,
    agent: Option<http::HeaderValue>,
}

impl Pending {
    /// `client`: the peer, or for a trusted front the address it forwarded.
    pub fn begin<B>(req: &http::Request<B>, client: IpAddr) -> Pending {
        Pending {
            started: Instant::now(),
            client,
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            referer: req.headers().get(http::header::REFERER).cloned(),
            agent: req.headers().get(http::header::USER_AGENT).cloned(),
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
        use std::fmt::Write as _;
        let ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let when = humantime::format_rfc3339_millis(SystemTime::now());
        let mut line = String::with_capacity(192);
        let target = self.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let _ = write!(line, "{} - - [{when}] \"{} ", self.client, self.method);
        escape_into(&mut line, target.as_bytes());
        let _ = write!(line, " {:?}\" {status} ", self.version);
        match length {
            Some(n) => {
                let _ = write!(line, "{n}");
            }
            None => line.push('-'),
        }
        for v in [&self.referer, &self.agent] {
            line.push_str(" \"");
            match v {
                Some(v) => escape_into(&mut line, v.as_bytes()),
                None => line.push('-'),
            }
            line.push('"');
        }
        let _ = writeln!(line, " cache={cache} reason={reason} ms={ms:.2}");
        log.push(line);
    }
}

/// Printable ASCII as is, but `"` and `\`; everything else as `\xNN`.
fn escape_into(out: &mut String, bytes: &[u8]) {
    use std::fmt::Write as _;
    for &b in bytes {
        match b {
            b'"' | b'\\' => {
                out.push('\\');
                out.push(b as char);
            }
            b' '..=b'~' => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escape(bytes: &[u8]) -> String {
        let mut s = String::new();
        escape_into(&mut s, bytes);
        s
    }

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
