//! The fast path (`server::h1`, `proxy::quick`) and the general path
//! (hyper, `Proxy::handle`) answer alike: the same requests, on one
//! keep-alive connection each, to a bigcache serving as it ships and one
//! started with `--no-fast-path`, each with its own origin, give the same
//! status, fields and body. Scripted sequences (browser-like, and from a
//! trusted front with nginx's forwarding fields) and a property test over
//! generated request heads.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use crate::origin::Origin;
use crate::util::{Server, start_proxy};

/// One response read off a raw connection.
#[derive(Debug)]
pub struct Raw {
    pub status: u16,
    /// (lower-cased name, value), in the order sent.
    pub fields: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Raw {
    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The fields without the values that follow the clock.
    fn comparable(&self) -> Vec<(String, String)> {
        let mut f: Vec<_> = self
            .fields
            .iter()
            .map(|(n, v)| match n.as_str() {
                "date" | "age" => (n.clone(), String::new()),
                // bigcache's own validator names the moment it was stored.
                "etag" if v.starts_with("\"bc-") => (n.clone(), "bc".into()),
                "cache-status" => (n.clone(), v.split(";ttl=").next().unwrap().to_string()),
                _ => (n.clone(), v.clone()),
            })
            .collect();
        f.sort();
        f
    }
}

/// A blocking client on one keep-alive connection.
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    pub fn open(s: &Server) -> Conn {
        let stream = TcpStream::connect(s.proxy.trim_start_matches("http://")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }

    fn fill(&mut self) {
        let mut chunk = [0u8; 16384];
        let n = self.stream.read(&mut chunk).expect("an answer within 20 s");
        assert!(n > 0, "connection closed mid-response");
        self.buf.extend_from_slice(&chunk[..n]);
    }

    fn line(&mut self) -> Vec<u8> {
        loop {
            if let Some(i) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = self.buf[..i].to_vec();
                self.buf.drain(..i + 2);
                return line;
            }
            self.fill();
        }
    }

    fn take(&mut self, n: usize) -> Vec<u8> {
        while self.buf.len() < n {
            self.fill();
        }
        self.buf.drain(..n).collect()
    }

    /// Sends `head` (a whole request head) and reads its answer; `is_head`:
    /// the request was a HEAD (the answer has no body).
    pub fn ask(&mut self, head: &str, is_head: bool) -> Raw {
        self.stream.write_all(head.as_bytes()).unwrap();
        self.read(is_head)
    }

    pub fn read(&mut self, is_head: bool) -> Raw {
        let status_line = String::from_utf8(self.line()).unwrap();
        let status: u16 = status_line[9..12].parse().unwrap();
        let mut fields = Vec::new();
        loop {
            let line = self.line();
            if line.is_empty() {
                break;
            }
            let line = String::from_utf8_lossy(&line).into_owned();
            let (n, v) = line.split_once(':').unwrap();
            fields.push((n.to_ascii_lowercase(), v.trim().to_string()));
        }
        let get = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v): &(String, String)| v.clone())
        };
        let body = if is_head || status == 304 || status == 204 {
            Vec::new()
        } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
            let mut body = Vec::new();
            loop {
                let size = String::from_utf8(self.line()).unwrap();
                let size = usize::from_str_radix(size.trim(), 16).unwrap();
                if size == 0 {
                    assert!(self.line().is_empty(), "no trailers");
                    break;
                }
                body.extend(self.take(size));
                assert!(self.line().is_empty());
            }
            body
        } else {
            let length = get("content-length").map_or(0, |v| v.parse().unwrap());
            self.take(length)
        };
        Raw {
            status,
            fields,
            body,
        }
    }
}

/// A bigcache as shipped and one with `--no-fast-path`, each in front of
/// its own origin, so both origins see the same sequence.
pub struct Pair {
    _origins: (Origin, Origin),
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    pub fast: Server,
    pub general: Server,
}

impl Pair {
    pub async fn start(args: &[&str]) -> Pair {
        let (a, b) = (Origin::start().await, Origin::start().await);
        // Pages at their first quality on both: encoding them again at a
        // hit happens on each server's own time.
        let mut args = args.to_vec();
        args.extend(["--compress-level", "5"]);
        let (da, fast) = start_proxy(&a.url(), &args);
        let mut general_args = args.to_vec();
        general_args.push("--no-fast-path");
        let (db, general) = start_proxy(&b.url(), &general_args);
        Pair {
            _origins: (a, b),
            _dirs: (da, db),
            fast,
            general,
        }
    }
}

pub fn quick_hits(s: &Server) -> u64 {
    stat(s)["proxy"]["quick_hits"].as_u64().unwrap()
}

fn stat(s: &Server) -> serde_json::Value {
    api_json(s, "/stat")
}

fn api_json(s: &Server, path: &str) -> serde_json::Value {
    let mut c = TcpStream::connect(s.api.trim_start_matches("http://")).unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    c.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    c.read_to_end(&mut out).unwrap();
    let start = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    serde_json::from_slice(&out[start..]).unwrap()
}

/// How many records the store holds.
fn count(s: &Server) -> u64 {
    api_json(s, "/stat/count")["count"].as_u64().unwrap()
}

/// Waits until `s` holds more than `before` records (a miss's page is
/// written after its answer left).
fn settled(s: &Server, before: u64) {
    for _ in 0..500 {
        if count(s) > before {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("nothing stored after a miss");
}

/// Waits until `s` has stored a fetched page in brotli (after its write
/// as sent).
fn encoded(s: &Server) {
    for _ in 0..500 {
        if stat(s)["proxy"]["compressed"]["br"].as_u64() >= Some(1) {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("the page was never stored in brotli");
}

/// Sends each head to both servers and checks the answers agree; after a
/// `MISS` that stores, waits for both stores. Returns the fast answers.
fn same_answers(pair: &Pair, heads: &[String]) -> Vec<Raw> {
    let (mut fast, mut general) = (Conn::open(&pair.fast), Conn::open(&pair.general));
    let mut out = Vec::new();
    for head in heads {
        let is_head = head.starts_with("HEAD ");
        let (before_f, before_g) = (count(&pair.fast), count(&pair.general));
        let f = fast.ask(head, is_head);
        let g = general.ask(head, is_head);
        assert_eq!(f.status, g.status, "{head}");
        assert_eq!(f.comparable(), g.comparable(), "{head}");
        assert_eq!(f.body, g.body, "{head}");
        if f.field("x-cache") == Some("MISS") && !head.contains("nostore") {
            settled(&pair.fast, before_f);
            settled(&pair.general, before_g);
            if head.contains("/p/packed/") {
                encoded(&pair.fast);
                encoded(&pair.general);
            }
        }
        out.push(f);
    }
    out
}

const PAGE: &str = "/p/page/?fixed=1&h=X-Bigcache-TTL:1h&etag=v1&h=Last-Modified:Tue,%2001%20Jan%202019%2000:00:00%20GMT&h=Content-Language:fr";
const VARIED: &str = "/p/varied/?fixed=1&h=X-Bigcache-TTL:1h&h=Vary:Accept-Language";
const TRACKED: &str = "/p/page/?utm_source=x&fixed=1&h=X-Bigcache-TTL:1h&etag=v1&gclid=1&h=Last-Modified:Tue,%2001%20Jan%202019%2000:00:00%20GMT&h=Content-Language:fr";
const ENCODED: &str = "/p/encoded/?fixed=1&h=X-Bigcache-TTL:1h&h=Vary:Accept-Encoding";
/// A page bigcache keeps in brotli.
const PACKED: &str = "/p/packed/?fixed=1&size=4000&h=X-Bigcache-TTL:1h&etag=v1";

/// What a browser sends besides the request line and `Host`.
const BROWSER: &str = "User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\nAccept-Encoding: gzip, deflate, br, zstd\r\nCookie: _ga=GA1.1.1234.5678; csrftoken=abc\r\nSec-Fetch-Dest: document\r\nUpgrade-Insecure-Requests: 1\r\n";

fn script(extra: &str) -> Vec<String> {
    let get = |target: &str, fields: &str| {
        format!("GET {target} HTTP/1.1\r\nHost: localhost\r\n{extra}{fields}\r\n")
    };
    vec![
        get(PAGE, ""),
        get(PAGE, ""),
        get(PAGE, BROWSER),
        format!("HEAD {PAGE} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n"),
        get(PAGE, "If-None-Match: \"v1\"\r\n"),
        get(PAGE, "If-None-Match: W/\"v0\", \"v1\"\r\n"),
        get(PAGE, "If-None-Match: \"v0\"\r\n"),
        get(PAGE, "If-Modified-Since: Tue, 01 Jan 2019 00:00:00 GMT\r\n"),
        get(PAGE, "If-Modified-Since: Mon, 31 Dec 2018 00:00:00 GMT\r\n"),
        get(PAGE, "Range: bytes=0-9\r\n"),
        get(PAGE, "Range: bytes=-5\r\nIf-Range: \"v1\"\r\n"),
        get(PAGE, "Range: bytes=5-\r\nIf-Range: \"v0\"\r\n"),
        get(PAGE, "Range: bytes=0-1,4-5\r\n"),
        get(PAGE, "Range: bytes=999999-\r\n"),
        format!("HEAD {PAGE} HTTP/1.1\r\nHost: localhost\r\n{extra}Range: bytes=0-3\r\n\r\n"),
        get(PAGE, "Authorization: Basic eDp5\r\n"),
        get(PAGE, "Cookie: a=1; sessionid=abc\r\n"),
        get(PAGE, "Cookie: csrftoken=t\r\n"),
        get(
            PAGE,
            "X-Forwarded-Host: evil.example\r\nX_Forwarded_Host: evil\r\n",
        ),
        format!("GET {PAGE} HTTP/1.1\r\nHost: LocalHost.\r\n{extra}\r\n"),
        format!("GET {PAGE} HTTP/1.1\r\nHost: elsewhere.example\r\n{extra}\r\n"),
        get("/p/none/?nostore=1", ""),
        get("/p/none/?nostore=1", BROWSER),
        get(VARIED, "Accept-Language: fr\r\n"),
        get(VARIED, "Accept-Language: fr\r\n"),
        get(VARIED, "Accept-Language:  fr \r\n"),
        get(VARIED, "Accept-Language: de\r\n"),
        get(VARIED, "Accept-Language: de\r\nIf-None-Match: \"x\"\r\n"),
        get(VARIED, "Accept-Language: fr\r\nRange: bytes=2-4\r\n"),
        get(VARIED, "Accept-Language: fr\r\nAccept-Language: de\r\n"),
        get(ENCODED, "Accept-Encoding: gzip, deflate, br, zstd\r\n"),
        get(ENCODED, "Accept-Encoding: br, gzip\r\n"),
        get(ENCODED, "Accept-Encoding: identity\r\n"),
        get(ENCODED, "Accept-Encoding: gzip;q=0\r\n"),
        get(ENCODED, ""),
        get("/p/missing/?status=404&h=X-Bigcache-TTL:1h&fixed=1", ""),
        get("/p/missing/?status=404&h=X-Bigcache-TTL:1h&fixed=1", ""),
        format!("OPTIONS {PAGE} HTTP/1.1\r\nHost: localhost\r\n{extra}\r\n"),
        get(PAGE, ""),
        get(PACKED, ""),
        get(PACKED, BROWSER),
        get(PACKED, ""),
        get(PACKED, "Accept-Encoding: br;q=0, gzip\r\n"),
        get(
            PACKED,
            "Accept-Encoding: br\r\nIf-None-Match: \"v1-br\"\r\n",
        ),
        get(PACKED, "Accept-Encoding: br\r\nIf-None-Match: \"v1\"\r\n"),
        get(PACKED, "If-None-Match: \"v1\"\r\n"),
        get(PACKED, "Accept-Encoding: br\r\nRange: bytes=10-19\r\n"),
        format!("HEAD {PACKED} HTTP/1.1\r\nHost: localhost\r\n{extra}Accept-Encoding: br\r\n\r\n"),
    ]
}

/// A browser's requests, on one keep-alive connection: misses, hits,
/// 304s, ranges, HEADs, bypasses, variants and errors answer alike, with
/// pages in the RAM tier and read from disk.
#[tokio::test(flavor = "multi_thread")]
async fn a_browsers_requests_answer_alike_on_both_paths() {
    for args in [&[][..], &["--hot-cache-size", "0"][..]] {
        let pair = Pair::start(args).await;
        let (answers, quick) = tokio::task::spawn_blocking(move || {
            let answers = same_answers(&pair, &script(""));
            assert_eq!(quick_hits(&pair.general), 0);
            (answers, quick_hits(&pair.fast))
        })
        .await
        .unwrap();
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        assert_eq!(
            &statuses[..15],
            [
                200, 200, 200, 200, 304, 304, 200, 304, 200, 206, 206, 200, 200, 416, 200
            ]
        );
        let cache: Vec<&str> = answers
            .iter()
            .map(|r| r.field("x-cache").unwrap_or(""))
            .collect();
        assert_eq!(cache[0], "MISS");
        assert!(cache[1..15].iter().all(|c| *c == "HIT"), "{cache:?}");
        assert_eq!(&cache[15..17], ["BYPASS", "BYPASS"]);
        // Every hit, after misses and bypasses on the same connection, was
        // answered on the fast path.
        let hits = cache.iter().filter(|c| **c == "HIT").count() as u64;
        assert_eq!(quick, hits, "{cache:?}");
    }
}

/// The same behind a trusted front that sends nginx's forwarding fields
/// (`nginx/bigcache.conf`): hits stay on the fast path, and forged or
/// doubled forwarding values are the general path's bypass on both.
#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_fronts_requests_answer_alike_on_both_paths() {
    let pair = Pair::start(&["--trusted-proxy", "127.0.0.1"]).await;
    let nginx = "X-Forwarded-For: 203.0.113.9\r\nX-Forwarded-Host: localhost\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Port: 443\r\nX-Real-IP: 203.0.113.9\r\n";
    tokio::task::spawn_blocking(move || {
        let mut heads = script(nginx);
        let get = |fields: &str| format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\n{fields}\r\n");
        heads.extend([
            get("X-Forwarded-Proto: http\r\n"),
            get("X-Forwarded-Proto: https\r\nX-Forwarded-Scheme: http\r\n"),
            get("X-Forwarded-Host: evil.example\r\n"),
            get("X-Forwarded-Proto: https\r\nX-Forwarded-Proto: https\r\n"),
            get("X-Forwarded-Port: 0443\r\n"),
            get(nginx),
        ]);
        let answers = same_answers(&pair, &heads);
        let n = answers.len();
        assert_eq!(answers[n - 4].field("x-cache"), Some("BYPASS"));
        assert_eq!(answers[n - 1].field("x-cache"), Some("HIT"));
        assert!(quick_hits(&pair.fast) >= 14);
    })
    .await
    .unwrap();
}

/// Request heads: a method, a host, and any of the fields that change
/// how a request is treated.
fn request_head() -> impl Strategy<Value = String> {
    let method = prop_oneof![
        6 => Just("GET"),
        2 => Just("HEAD"),
        1 => Just("OPTIONS"),
    ];
    let target = prop_oneof![
        Just(PAGE),
        Just(VARIED),
        Just(ENCODED),
        Just("/p/none/?nostore=1"),
        Just(PACKED),
        // The page above with campaign parameters: one key, one page.
        Just(TRACKED)
    ];
    let host = prop_oneof![
        6 => Just("localhost"),
        1 => Just("LOCALHOST"),
        1 => Just("localhost."),
        1 => Just("other.example"),
    ];
    let field = prop_oneof![
        Just("Authorization: Bearer t"),
        Just("Cookie: sessionid=1"),
        Just("Cookie: _ga=GA1.2; csrftoken=x"),
        Just("Cookie: a=1"),
        Just("If-None-Match: \"v1\""),
        Just("If-None-Match: \"v2\""),
        Just("If-None-Match: \"v1-br\""),
        Just("If-None-Match: *"),
        Just("If-Modified-Since: Tue, 01 Jan 2019 00:00:00 GMT"),
        Just("If-Modified-Since: yesterday"),
        Just("Range: bytes=0-3"),
        Just("Range: bytes=-2"),
        Just("Range: bytes=3-1"),
        Just("Range: items=0-1"),
        Just("If-Range: \"v1\""),
        Just("Accept-Language: fr"),
        Just("Accept-Language: de"),
        Just("Accept-Encoding: gzip, deflate, br, zstd"),
        Just("Accept-Encoding: br"),
        Just("X-Forwarded-For: 198.51.100.1"),
        Just("X-Forwarded-Host: localhost"),
        Just("X-Forwarded-Host: evil.example"),
        Just("X-Forwarded-Proto: https"),
        Just("X-Forwarded-Proto: gopher"),
        Just("X-Forwarded-Port: 443"),
        Just("Forwarded: for=1.2.3.4"),
        Just("X-Original-URL: /admin/"),
        Just("Connection: keep-alive"),
        Just("User-Agent: curl/8"),
    ];
    (method, target, host, prop::collection::vec(field, 0..5)).prop_map(|(m, t, h, fields)| {
        let mut head = format!("{m} {t} HTTP/1.1\r\nHost: {h}\r\n");
        for f in fields {
            head.push_str(f);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        head
    })
}

/// Generated heads, from an untrusted peer and from a trusted front: the
/// two paths agree on every one. The pages and variants the heads can
/// reach are stored first, so no answer depends on a write in flight.
#[tokio::test(flavor = "multi_thread")]
async fn generated_requests_answer_alike_on_both_paths() {
    for args in [&[][..], &["--trusted-proxy", "127.0.0.1"][..]] {
        let pair = Pair::start(args).await;
        tokio::task::spawn_blocking(move || {
            let warm: Vec<String> = [
                (PAGE, ""),
                (VARIED, "Accept-Language: fr\r\n"),
                (VARIED, "Accept-Language: de\r\n"),
                (VARIED, ""),
                (ENCODED, "Accept-Encoding: gzip\r\n"),
                (ENCODED, ""),
                (PACKED, ""),
            ]
            .iter()
            .map(|(t, f)| format!("GET {t} HTTP/1.1\r\nHost: localhost\r\n{f}\r\n"))
            .collect();
            same_answers(&pair, &warm);
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|c| c.parse().ok())
                .unwrap_or(128);
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            });
            let conns =
                std::cell::RefCell::new((Conn::open(&pair.fast), Conn::open(&pair.general)));
            runner
                .run(&request_head(), |head| {
                    let is_head = head.starts_with("HEAD ");
                    let (before_f, before_g) = (count(&pair.fast), count(&pair.general));
                    let (fast, general) = &mut *conns.borrow_mut();
                    let f = fast.ask(&head, is_head);
                    let g = general.ask(&head, is_head);
                    prop_assert_eq!(f.status, g.status, "{}", head);
                    prop_assert_eq!(f.comparable(), g.comparable(), "{}", head);
                    prop_assert_eq!(&f.body, &g.body, "{}", head);
                    // A new variant or site's copy: stored before the next.
                    if f.field("x-cache") == Some("MISS") && !head.contains("nostore") {
                        settled(&pair.fast, before_f);
                        settled(&pair.general, before_g);
                    }
                    Ok(())
                })
                .unwrap();
            assert!(quick_hits(&pair.fast) > 0);
        })
        .await
        .unwrap();
    }
}
