//! An origin that misbehaves in every way it can, under many concurrent
//! clients for a bounded number of requests: bigcache must not panic, must
//! never store a body that is not a complete answer of the origin's, and
//! must keep its memory bounded.
//!
//! The origin speaks raw HTTP/1.1 over TCP, so it can break the protocol:
//! it closes mid-head and mid-body, resets, sends garbage, stalls past the
//! upstream timeout, sends an interim `103` first, answers `304` without
//! validators, varies on a random header, cuts a chunked body. Its complete
//! answers for a path are always the same bytes ([`body_of`]), so any hit
//! can be checked byte for byte.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::util::{Server, client};

/// The complete body the origin sends for `path`.
fn body_of(path: &str) -> Vec<u8> {
    let line = format!("<p>{path}</p>\n");
    line.repeat(20_000 / line.len() + 1).into_bytes()
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Reads one request head; returns its path (None when the client left).
async fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = s.read(&mut byte).await.ok()?;
        if n == 0 || buf.len() > 64 << 10 {
            return None;
        }
        buf.extend_from_slice(&byte[..n]);
    }
    let line = std::str::from_utf8(&buf).ok()?.lines().next()?.to_string();
    Some(line.split(' ').nth(1)?.to_string())
}

const CACHEABLE: &str = "X-Bigcache-TTL: 1h\r\n";

/// Answers one request with the misbehaviour `kind` picks; whether the
/// connection may carry another request.
async fn answer(s: &mut TcpStream, path: &str, kind: u64, kind_salt: u64) -> std::io::Result<bool> {
    let body = body_of(path);
    let whole = |extra: &str| {
        let lifetime = if extra.is_empty() { CACHEABLE } else { "" };
        let mut out = format!(
            "HTTP/1.1 200 OK\r\n{lifetime}{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        out
    };
    match kind {
        0 | 1 => s.write_all(&whole("")).await?,
        2 => {
            // Chunked, complete.
            let mut out =
                format!("HTTP/1.1 200 OK\r\n{CACHEABLE}Transfer-Encoding: chunked\r\n\r\n")
                    .into_bytes();
            for part in body.chunks(7000) {
                out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                out.extend_from_slice(part);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            s.write_all(&out).await?;
        }
        3 => {
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Le").await?;
            return Ok(false);
        }
        4 => {
            let w = whole("");
            s.write_all(&w[..w.len() / 2]).await?;
            return Ok(false);
        }
        5 => {
            s.set_zero_linger()?;
            return Ok(false);
        }
        6 => {
            s.write_all(b"\x00\xffNOT HTTP\r\n\r\ngarbage").await?;
            return Ok(false);
        }
        7 => {
            // Past the upstream timeout, then gone.
            tokio::time::sleep(Duration::from_millis(1500)).await;
            return Ok(false);
        }
        8 => {
            s.write_all(b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n")
                .await?;
            s.write_all(&whole("")).await?;
        }
        9 => {
            // A 304, validators or not, that may change what the page
            // varies on (a stale copy is then dropped, and the request
            // passed).
            let head = format!(
                "HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=1\r\nVary: X-Random-{}\r\n\r\n",
                kind_salt % 3
            );
            s.write_all(head.as_bytes()).await?
        }
        10 => {
            // Short-lived, with a validator and a Vary: stale within the
            // run, so revalidated with conditional requests.
            let extra = format!(
                "Cache-Control: max-age=1\r\nETag: \"e\"\r\nVary: X-Random-{}\r\n",
                kind_salt % 3
            );
            s.write_all(&whole(&extra)).await?;
        }
        11 => {
            // A chunked body cut inside a chunk.
            let mut out =
                format!("HTTP/1.1 200 OK\r\n{CACHEABLE}Transfer-Encoding: chunked\r\n\r\n")
                    .into_bytes();
            out.extend_from_slice(format!("{:x}\r\n", body.len()).as_bytes());
            out.extend_from_slice(&body[..body.len() / 3]);
            s.write_all(&out).await?;
            return Ok(false);
        }
        _ => {
            // No framing: ends when the connection closes (never stored).
            let mut out = format!("HTTP/1.1 200 OK\r\n{CACHEABLE}\r\n").into_bytes();
            out.extend_from_slice(&body);
            s.write_all(&out).await?;
            return Ok(false);
        }
    }
    Ok(true)
}

/// The misbehaving origin; returns its URL and how many requests it took.
async fn origin(seed: u64) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(AtomicU64::new(0));
    let counter = seen.clone();
    tokio::spawn(async move {
        let mut rng = Rng(seed);
        while let Ok((mut s, _)) = listener.accept().await {
            let seed = rng.next();
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut rng = Rng(seed | 1);
                while let Some(path) = read_head(&mut s).await {
                    counter.fetch_add(1, Relaxed);
                    let (kind, salt) = (rng.next() % 13, rng.next());
                    if !matches!(answer(&mut s, &path, kind, salt).await, Ok(true)) {
                        break;
                    }
                }
            });
        }
    });
    (url, seen)
}

/// 2,000 requests from 32 clients at once over 40 paths, half of them
/// shared by every client (coalesced) and half each client's own, with
/// conditionals and `Vary`'d headers among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_origin_never_panics_bigcache_nor_gets_a_partial_page_stored() {
    let (upstream, seen) = origin(0x9E37_79B9_7F4A_7C15).await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("bigcache.log");
    let data = dir.path().join("data");
    let s = Server::start_logging(
        &data,
        &[
            "--upstream",
            &upstream,
            "--upstream-timeout",
            "1s",
            "--upstream-connect-timeout",
            "1s",
            "--stale-if-error",
            "0s",
        ],
        &log,
    );
    let http = client();
    let started = std::time::Instant::now();
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..32u64 {
        let (http, proxy) = (http.clone(), s.proxy.clone());
        clients.spawn(async move {
            let mut rng = Rng(c * 7919 + 1);
            for _ in 0..2000 / 32 {
                let n = rng.next();
                let path = if n.is_multiple_of(2) {
                    format!("/shared/{}", n % 20)
                } else {
                    format!("/own/{c}/{}", n % 20)
                };
                let mut req = http
                    .get(format!("{proxy}{path}"))
                    .timeout(Duration::from_secs(10))
                    .header("x-random-1", (n % 3).to_string());
                if n.is_multiple_of(5) {
                    req = req.header("if-none-match", "\"x\"");
                }
                if let Ok(r) = req.send().await {
                    let _ = r.bytes().await;
                }
            }
        });
    }
    while clients.join_next().await.is_some() {}
    assert!(seen.load(Relaxed) > 300, "the origin was hardly asked");

    let loaded = started.elapsed();

    // Every page bigcache serves from its store is a complete answer
    // (asked concurrently: a miss meets the origin's stalls again).
    let mut checks = tokio::task::JoinSet::new();
    let paths = (0..20)
        .map(|i| format!("/shared/{i}"))
        .chain((0..32).flat_map(|c| (0..20).map(move |i| format!("/own/{c}/{i}"))));
    for (i, path) in paths.enumerate() {
        let (http, proxy) = (http.clone(), s.proxy.clone());
        checks.spawn(async move {
            let r = http
                .get(format!("{proxy}{path}"))
                .header("x-random-1", (i % 3).to_string())
                .timeout(Duration::from_secs(10))
                .send()
                .await
                .ok()?;
            let hit = r.headers().get("x-cache").is_some_and(|v| v == "HIT");
            let body = r.bytes().await.ok()?;
            hit.then_some((path, body))
        });
    }
    let mut hits = 0;
    while let Some(done) = checks.join_next().await {
        if let Some((path, body)) = done.unwrap() {
            hits += 1;
            assert!(
                body == body_of(&path),
                "{path}: a stored body that is not the origin's whole answer ({} bytes)",
                body.len()
            );
        }
    }
    assert!(hits > 0, "nothing was ever stored");
    eprintln!("load {loaded:?}, {hits} hits checked");
    let rss = s.rss();
    assert!(rss < 400 << 20, "RSS {rss} bytes after the load");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("panicked"), "{logged}");
    assert!(s.stop().success(), "a clean stop");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert!(!logged.contains("panicked"), "{logged}");
}
