//! bigcache's own compression of the pages it stores: a text page is kept
//! in brotli, encoded on a thread of its own after the page's first answer
//! went out (at quality [`FIRST`] at most; above it, once the page is read
//! again, at `--compress-level`), and sent as stored to every client that
//! accepts `br`; a client that does not gets the page decoded (`answer`).
//!
//! Why brotli: measured on the HTML of Debian's python3-doc (`bench/run.sh
//! codings`), it keeps a page in 0.157 of its bytes at quality 5 (0.134 at
//! 11), against 0.280 for the LZ4 the store used and 0.175 for gzip at
//! level 6, and decodes at hundreds of MB/s. Every browser of the last
//! years accepts it over HTTPS (the only way a browser reaches the shipped
//! nginx config). Quality 5 is the default because 11 costs forty times
//! the CPU for 15% fewer bytes, and its re-encoding costs the hit rate
//! while it runs (docs/proxy.md, `--compress-level`); no client waits for either.
//!
//! gzip is not stored beside it: a client that accepts gzip but not br is
//! rare behind HTTPS, and gets the identity body (nginx in front can gzip
//! it, see docs/proxy.md). Responses Django already encoded are stored as
//! they come, a variant per coding (`encoding`): decoding and re-encoding
//! them would spend CPU on a page Django has already spent it on, and
//! the Django recipe (docs/django.md) removes `GZipMiddleware` instead.

use std::io::Read;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;
use http::header::{self, HeaderValue};

use super::directives::Directives;
use super::fields::Fields;

/// The coding a stored page's body is kept in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Coding {
    /// As the upstream sent it (which may itself be encoded: then the
    /// stored `Content-Encoding` says so and bigcache never decodes it).
    #[default]
    Identity,
    /// Brotli, encoded by bigcache from the identity body.
    Br,
}

impl Coding {
    /// The byte in the stored response's metadata (docs/format.md).
    pub fn byte(self) -> u8 {
        match self {
            Coding::Identity => 0,
            Coding::Br => 1,
        }
    }

    pub fn from_byte(b: u8) -> Option<Coding> {
        match b {
            0 => Some(Coding::Identity),
            1 => Some(Coding::Br),
            _ => None,
        }
    }

    /// Its `Content-Encoding` token.
    pub fn token(self) -> &'static str {
        match self {
            Coding::Identity => "identity",
            Coding::Br => "br",
        }
    }
}

/// Whether a client accepts bigcache's coding, read from its own
/// `Accept-Encoding`: the general path keeps it with the request
/// (`http::Extensions`) before it rewrites the field for the upstream
/// (`encoding::normalise`), the fast path reads the field as sent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accepts {
    pub br: bool,
}

impl Accepts {
    pub fn of<F: Fields + ?Sized>(req: &F) -> Accepts {
        Accepts {
            br: super::encoding::accepts(req, Coding::Br.token()),
        }
    }

    /// What the general path kept for `parts`; nothing kept reads as
    /// identity only, which every client takes.
    pub fn kept(parts: &http::request::Parts) -> Accepts {
        parts
            .extensions
            .get::<Accepts>()
            .copied()
            .unwrap_or_default()
    }
}

/// Smallest body worth encoding: below it the saving is less than a
/// packet's headers.
pub const MIN_LEN: usize = 256;

/// Whether bigcache may keep a response with `headers` and a body of
/// `len` bytes ([`MIN_LEN`] to [`LARGE`]) in brotli: a text type, not
/// encoded already, and nothing
/// that forbids or breaks a change of coding (`no-transform`, RFC 9110
/// §7.7, where a proxy MUST NOT change the content; digests of the bytes
/// as sent; a partial body). The one place this is decided.
pub fn compressible(headers: &HeaderMap, len: usize) -> bool {
    if !(MIN_LEN..=LARGE).contains(&len) {
        return false;
    }
    let encoded = content_coded(headers);
    let digests = ["content-digest", "repr-digest", "digest", "content-md5"];
    // A shell is assembled at every answer: kept as sent, it is read
    // without a decoding each time (`proxy::esi`).
    if encoded
        || super::esi::opted_in(headers)
        || headers.contains_key(header::CONTENT_RANGE)
        || digests.iter().any(|d| headers.contains_key(*d))
    {
        return false;
    }
    let no_transform = Directives::parse(
        headers
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(HeaderValue::as_bytes),
    )
    // A field bigcache cannot read may say anything: leave the body be.
    .map_or(true, |d| d.is_some_and(|d| d.no_transform));
    if no_transform {
        return false;
    }
    is_text(headers)
}

/// Whether `headers` name a content coding other than `identity`.
pub fn content_coded(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONTENT_ENCODING)
        .iter()
        .any(|v| !v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"identity"))
}

/// One `Content-Type`, of a [`text_type`].
fn is_text(headers: &HeaderMap) -> bool {
    let mut types = headers.get_all(header::CONTENT_TYPE).iter();
    let (Some(ct), None) = (types.next(), types.next()) else {
        return false;
    };
    text_type(ct.as_bytes())
}

/// Media types that are text and compress: HTML, CSS, JavaScript, JSON,
/// XML, SVG, plain text (an event stream is text but never ends).
fn text_type(ct: &[u8]) -> bool {
    let Ok(ct) = std::str::from_utf8(ct) else {
        return false;
    };
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let Some((kind, sub)) = essence.split_once('/') else {
        return false;
    };
    match kind {
        "text" => sub != "event-stream",
        "application" => {
            matches!(
                sub,
                "json" | "javascript" | "x-javascript" | "ecmascript" | "xml" | "xhtml+xml"
            ) || sub.ends_with("+json")
                || sub.ends_with("+xml")
        }
        "image" => sub == "svg+xml",
        _ => false,
    }
}

/// The `ETag` of the coded representation: the identity one with `-br`
/// inside its quotes, weak if it was (RFC 9110 §8.8.3: different codings
/// of a resource must not share a strong validator). `None` for a value
/// that is not a quoted entity tag (the coded answer then has none).
pub fn coded_etag(etag: &HeaderValue, coding: Coding) -> Option<HeaderValue> {
    let v = etag.as_bytes().trim_ascii();
    let (weak, opaque) = match v.strip_prefix(b"W/") {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let inner = opaque.strip_prefix(b"\"")?.strip_suffix(b"\"")?;
    if inner.contains(&b'"') {
        return None;
    }
    let mut out = Vec::with_capacity(v.len() + 4);
    if weak {
        out.extend_from_slice(b"W/");
    }
    out.push(b'"');
    out.extend_from_slice(inner);
    out.push(b'-');
    out.extend_from_slice(coding.token().as_bytes());
    out.push(b'"');
    HeaderValue::from_bytes(&out).ok()
}

/// Brotli of `body` at `quality`, checked by decoding it again; `None`
/// when it would not save at least an eighth (the blob store's own rule).
/// `body`, made for one client, in brotli at `quality`, when its
/// `headers` say text and it is worth it; not checked by a decoding as a
/// stored copy is, since it is sent once.
pub fn for_client(headers: &HeaderMap, body: &[u8], quality: u32) -> Option<Bytes> {
    if !(MIN_LEN..=LARGE).contains(&body.len()) || !is_text(headers) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() / 3);
    let params = brotli::enc::BrotliEncoderParams {
        quality: i32::try_from(quality).ok()?,
        size_hint: body.len(),
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
    (out.len() < body.len()).then(|| Bytes::from(out))
}

fn encode(body: &[u8], quality: u32) -> Option<Bytes> {
    // The window the body needs (a decoder, ours or a browser's, sizes
    // its ring buffer by it), but 2^18 at least: below that brotli's
    // encoder takes ten times as long at quality 5 (measured on the
    // bench's 20 KB pages: 10.5 ms with a 2^15 window, 0.41 ms with 2^18).
    let bits = usize::BITS - body.len().saturating_sub(1).leading_zeros();
    let lgwin = bits.clamp(18, 24);
    let mut out = Vec::with_capacity(body.len() / 4);
    let params = brotli::enc::BrotliEncoderParams {
        quality: i32::try_from(quality).ok()?,
        lgwin: i32::try_from(lgwin).ok()?,
        size_hint: body.len(),
        ..Default::default()
    };
    brotli::BrotliCompress(&mut &body[..], &mut out, &params).ok()?;
    if out.len() > body.len() - body.len() / 8 {
        return None;
    }
    let back = decode(&out, body.len()).ok()?;
    if back != body {
        tracing::error!("brotli did not round-trip a page; kept as sent");
        return None;
    }
    Some(Bytes::from(out))
}

/// Brotli of `body` at quality 5, for tests elsewhere.
#[cfg(test)]
#[allow(dead_code)]
pub fn pack_for_test(body: &[u8]) -> Bytes {
    encode(body, 5).expect("compressible test body")
}

/// A stored body that does not decode to its recorded length.
#[derive(Debug, thiserror::Error)]
#[error("a stored brotli body does not decode to its length")]
pub struct Undecodable;

/// The identity body of a brotli body recorded as `len` bytes (at most
/// [`LARGE`]: bigcache encodes nothing larger); never more than `len`
/// bytes are produced.
pub fn decode(coded: &[u8], len: usize) -> Result<Vec<u8>, Undecodable> {
    if len > LARGE {
        return Err(Undecodable);
    }
    let mut out = Vec::with_capacity(len);
    let mut r = brotli::Decompressor::new(coded, 4096).take(len as u64 + 1);
    r.read_to_end(&mut out).map_err(|_| Undecodable)?;
    if out.len() != len {
        return Err(Undecodable);
    }
    Ok(out)
}

/// What became of a body given to the [`Encoder`].
#[derive(Debug)]
pub enum Packed {
    /// In brotli, at this quality.
    Br(Bytes, u8),
    /// Brotli would not save an eighth: kept as sent.
    NoGain,
    /// The encoder's queue was full, it did not answer within [`PATIENCE`],
    /// or it is off: kept as sent.
    Busy,
}

struct Job {
    body: Bytes,
    quality: u32,
    done: tokio::sync::oneshot::Sender<Option<(Bytes, u8)>>,
}

/// The quality of a page's first encoding, and of every encoding while
/// the encoder is behind: 27 to 41 MB/s on one core, where quality 11
/// takes 0.3 to 1 MB/s (`bench/run.sh codings`), for 0.138 of the bench's
/// pages instead of 0.118 (0.157 and 0.134 on python3-doc). Misses come
/// faster than quality 11 could keep up with on a burst; a page read
/// again is encoded once more at `--compress-level` (`proxy::recode`),
/// so the pages a site keeps serving are the ones that get the expensive
/// encoding.
pub const FIRST: u32 = 5;

/// The quality a body asked at `quality` is encoded at: [`FIRST`] at most
/// while the encoder is `behind`.
fn quality_for(quality: u32, behind: bool) -> u32 {
    if behind { quality.min(FIRST) } else { quality }
}

/// The largest body bigcache encodes: a larger one is kept as sent, since
/// decoding it for a client that does not take br (or for a range) would
/// cost milliseconds per request, and quality 11 a second per MB.
pub const LARGE: usize = 1 << 20;
/// Bodies waiting for a first encoding, at most.
const QUEUE: usize = 64;
/// Better codings waiting, at most: the recoder offers one at a time.
const SPARE_QUEUE: usize = 2;
/// Waiting bodies past which the encoder uses [`FIRST`] quality at most.
const BEHIND: usize = 2;
/// Longest a fetched page waits for its encoding before it is stored as
/// sent (its flight serves it meanwhile).
const PATIENCE: Duration = Duration::from_secs(2);

/// Two threads that encode bodies in the background, since no request
/// waits for them, each with a bounded queue:
/// - first encodings of fetched pages, at `sched::background_this_thread`'s
///   priority (about 1.5% of a busy core, any idle core), with a bounded
///   wait: a page that finds the queue full, or is not encoded within
///   [`PATIENCE`], is stored as sent and encoded at a later hit while the
///   encoder is idle (`proxy::recode`);
/// - better codings of pages already in brotli, under `SCHED_IDLE` for
///   good: only on CPU time nothing else wants, however long it takes.
///
/// Why two: one thread moved between the two policies, and Linux lets an
/// unprivileged thread out of `SCHED_IDLE` only when `RLIMIT_NICE` allows
/// its nice value (it is 0 by default), so after the first better coding
/// the thread stayed idle-only, and on a busy core every first encoding
/// then waited out its patience. A first encoding never waits behind a
/// slow quality-11 one either.
pub struct Encoder {
    first: Option<Lane>,
    spare: Option<Lane>,
}

/// One encoding thread's queue.
struct Lane {
    tx: mpsc::SyncSender<Job>,
    /// Bodies queued or being encoded.
    pending: Arc<AtomicUsize>,
}

impl Lane {
    fn start(name: &str, queue: usize, policy: fn()) -> Option<Lane> {
        let pending = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::sync_channel::<Job>(queue);
        let count = pending.clone();
        let spawned = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                policy();
                // Ends when the proxy, and with it the sender, is gone.
                while let Ok(job) = rx.recv() {
                    // This body and those behind it.
                    let behind = count.load(Relaxed) > BEHIND + 1;
                    let packed = (!job.done.is_closed()).then(|| {
                        let q = quality_for(job.quality, behind);
                        encode(&job.body, q).map(|b| (b, q as u8))
                    });
                    // Idle again before the result is out, so whoever gets
                    // it sees the encoder idle.
                    count.fetch_sub(1, Relaxed);
                    if let Some(packed) = packed {
                        let _ = job.done.send(packed);
                    }
                }
            });
        match spawned {
            Ok(_) => Some(Lane { tx, pending }),
            Err(e) => {
                tracing::warn!(error = %e, thread = name, "no encoder thread; pages are stored as sent");
                None
            }
        }
    }

    fn idle(&self) -> bool {
        self.pending.load(Relaxed) == 0
    }
}

impl Encoder {
    /// The encoder; `on` false: every body is kept as sent.
    pub fn start(on: bool) -> Encoder {
        if !on {
            return Encoder {
                first: None,
                spare: None,
            };
        }
        Encoder {
            first: Lane::start(
                "bigcache-encode",
                QUEUE,
                crate::sched::background_this_thread,
            ),
            spare: Lane::start(
                "bigcache-recode",
                SPARE_QUEUE,
                crate::sched::idle_this_thread,
            ),
        }
    }

    /// Whether nothing is queued or being encoded (and the encoder is on).
    pub fn idle(&self) -> bool {
        self.first.as_ref().is_some_and(Lane::idle) && self.spare.as_ref().is_none_or(Lane::idle)
    }

    /// `body` in brotli at `quality` (0 to 11; [`FIRST`] at most while the
    /// encoder is behind), or why not. With `idle`, encoded only on CPU
    /// time nothing else wants: a better coding of a page already stored
    /// in one, which must never cost a hit its latency.
    pub async fn pack(&self, body: Bytes, quality: u32, idle: bool) -> Packed {
        let lane = if idle { &self.spare } else { &self.first };
        let Some(lane) = lane else {
            return Packed::Busy;
        };
        let (done, result) = tokio::sync::oneshot::channel();
        // Counted before it can be taken, so the count never wraps.
        lane.pending.fetch_add(1, Relaxed);
        let quality = quality.min(11);
        if lane
            .tx
            .try_send(Job {
                body,
                quality,
                done,
            })
            .is_err()
        {
            lane.pending.fetch_sub(1, Relaxed);
            return Packed::Busy;
        }
        // Given up: the thread sees the closed channel and skips it. An
        // idle-time encoding waits as long as it takes.
        let answer = if idle {
            Ok(result.await)
        } else {
            tokio::time::timeout(PATIENCE, result).await
        };
        match answer {
            Ok(Ok(Some((b, q)))) => Packed::Br(b, q),
            Ok(Ok(None)) => Packed::NoGain,
            Ok(Err(_)) | Err(_) => Packed::Busy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(fields: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (n, v) in fields {
            m.append(*n, HeaderValue::from_static(v));
        }
        m
    }

    #[test]
    fn text_is_compressed_and_what_forbids_it_is_not() {
        for ct in [
            "text/html; charset=utf-8",
            "TEXT/CSS",
            "application/json",
            "application/ld+json",
            "application/javascript",
            "application/rss+xml",
            "image/svg+xml",
            "text/plain",
        ] {
            assert!(compressible(&h(&[("content-type", ct)]), 1000), "{ct}");
        }
        for ct in [
            "image/png",
            "application/zip",
            "application/octet-stream",
            "text/event-stream",
            "video/mp4",
            "",
            "html",
        ] {
            assert!(!compressible(&h(&[("content-type", ct)]), 1000), "{ct}");
        }
        let html = ("content-type", "text/html");
        assert!(!compressible(&h(&[]), 1000), "no type");
        assert!(!compressible(&h(&[html]), MIN_LEN - 1), "too small");
        assert!(compressible(&h(&[html]), MIN_LEN));
        assert!(compressible(&h(&[html]), LARGE));
        assert!(!compressible(&h(&[html]), LARGE + 1), "too large");
        assert!(compressible(
            &h(&[html, ("content-encoding", "identity")]),
            1000
        ));
        for (n, v) in [
            ("content-encoding", "gzip"),
            ("cache-control", "max-age=60, no-transform"),
            ("cache-control", "No-Transform"),
            ("content-range", "bytes 0-9/10"),
            ("content-digest", "sha-256=:x:"),
            ("repr-digest", "sha-256=:x:"),
            ("content-type", "text/css"),
        ] {
            let mut m = h(&[html]);
            m.append(n, HeaderValue::from_str(v).unwrap());
            assert!(!compressible(&m, 1000), "{n}: {v}");
        }
        // A Cache-Control bigcache cannot read may say no-transform.
        let mut m = h(&[html]);
        m.append(
            "cache-control",
            HeaderValue::from_bytes(b"max-age=\xff").unwrap(),
        );
        assert!(!compressible(&m, 1000), "unreadable Cache-Control");
    }

    #[test]
    fn each_coding_has_its_own_etag() {
        let br = |v: &'static str| {
            coded_etag(&HeaderValue::from_static(v), Coding::Br)
                .map(|v| v.to_str().unwrap().to_string())
        };
        assert_eq!(br("\"abc\"").as_deref(), Some("\"abc-br\""));
        assert_eq!(br("W/\"abc\"").as_deref(), Some("W/\"abc-br\""));
        assert_eq!(br(" \"\" ").as_deref(), Some("\"-br\""));
        for bad in ["abc", "\"abc", "W/abc", "\"a\"b\"", "w/\"abc\""] {
            assert_eq!(br(bad), None, "{bad}");
        }
    }

    #[test]
    fn bodies_round_trip_and_bad_ones_are_errors() {
        let page: Vec<u8> = (0..2000)
            .flat_map(|i| format!("<tr><td>row {i}</td><td>{}</td></tr>\n", i * 7).into_bytes())
            .collect();
        let packed = encode(&page, 5).expect("HTML compresses");
        assert!(packed.len() < page.len() / 4, "{}", packed.len());
        assert_eq!(decode(&packed, page.len()).unwrap(), page);
        // A recorded length that is not the body's, and damaged bytes.
        assert!(decode(&packed, page.len() - 1).is_err());
        assert!(decode(&packed, page.len() + 1).is_err());
        assert!(decode(&packed[..packed.len() / 2], page.len()).is_err());
        let mut flipped = packed.to_vec();
        for i in (0..flipped.len()).step_by(7) {
            flipped[i] ^= 0x5a;
        }
        assert!(decode(&flipped, page.len()).is_err());
        assert!(decode(b"", 10).is_err());
        // Random bytes do not shrink: kept as sent.
        let mut x = 0x9e37_79b9_u32;
        let noise: Vec<u8> = (0..4096)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        assert!(encode(&noise, 11).is_none());
    }

    #[test]
    fn quality_drops_only_when_behind() {
        assert_eq!(quality_for(11, false), 11);
        assert_eq!(quality_for(11, true), FIRST);
        assert_eq!(quality_for(3, true), 3, "never above the level");
    }

    /// A better coding runs under `SCHED_IDLE`, which an unprivileged
    /// thread may not leave, and may take seconds (quality 11 on a large
    /// page): first encodings have their own thread and are answered
    /// meanwhile, at their own policy.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_first_encoding_never_waits_behind_a_better_one() {
        let mut x = 0x9e37_79b9_u32;
        let words = [
            "dataset ", "table ", "value ", "region ", "annual ", "<td>", "</td>\n",
        ];
        let large: String = (0..LARGE / 8)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                words[x as usize % words.len()]
            })
            .collect();
        let large = Bytes::from(large);
        let page = Bytes::from("<p>hello, compressible world</p>\n".repeat(200));
        let encoder = Arc::new(Encoder::start(true));
        let e = encoder.clone();
        let better = tokio::spawn(async move { e.pack(large, 11, true).await });
        // Queued, at least: one thread for both would take it first.
        while encoder.idle() {
            tokio::task::yield_now().await;
        }
        for _ in 0..5 {
            let started = std::time::Instant::now();
            match encoder.pack(page.clone(), 5, false).await {
                Packed::Br(b, 5) => assert_eq!(decode(&b, page.len()).unwrap(), page),
                other => panic!("a first encoding was {other:?} while a better one ran"),
            }
            assert!(started.elapsed() < PATIENCE);
        }
        assert!(
            !better.is_finished(),
            "the better coding ended too soon to tell"
        );
        better.abort();
    }

    #[tokio::test]
    async fn the_encoder_packs_off_the_runtime_and_says_when_it_cannot() {
        let page = Bytes::from("<p>hello, compressible world</p>\n".repeat(200));
        let encoder = Encoder::start(true);
        match encoder.pack(page.clone(), 7, false).await {
            Packed::Br(b, q) => {
                assert_eq!(q, 7);
                assert_eq!(decode(&b, page.len()).unwrap(), page);
            }
            other => panic!("{other:?}"),
        }
        let mut x = 0x2545_f491_u32;
        let noise: Vec<u8> = (0..1024)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect();
        let noise = Bytes::from(noise);
        assert!(matches!(
            encoder.pack(noise, 11, true).await,
            Packed::NoGain
        ));
        assert!(encoder.idle());
        let off = Encoder::start(false);
        assert!(matches!(off.pack(page, 5, false).await, Packed::Busy));
        assert!(!off.idle());
    }
}
