//! Edge Side Includes against the real binary and a real origin: a shell
//! stored once and assembled per visitor (anonymous or with a session),
//! fragments fetched through the proxy's own rules, their cookies passed,
//! the limits, failing includes with and without `onerror`, compression,
//! and what never opts in.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::util::{Server, client, start_proxy};

const ESI: (&str, &str) = ("surrogate-control", "content=\"ESI/1.0\"");
const TTL: (&str, &str) = ("x-bigcache-ttl", "1h");

/// A site of shells and fragments. Its pages:
/// - `/page`: a shell with a per-user and a shared fragment;
/// - `/frag/user`: the visitor's `sessionid` (or `anon`), private, and a
///   `csrftoken` cookie for a visitor without one;
/// - `/frag/shared`: cacheable, rendered for everyone (so opted in),
///   counts its renders;
/// - `/frag/fail`: a 500;
/// - `/cap`: the `Surrogate-Capability` it was sent;
/// - the shells below, each named for what it holds.
struct Site {
    addr: SocketAddr,
    seen: Arc<Mutex<HashMap<String, u64>>>,
}

impl Site {
    async fn start() -> Site {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
        let counts = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let counts = counts.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<_>| {
                        let counts = counts.clone();
                        async move {
                            let path = req.uri().path().to_string();
                            let n = {
                                let mut c = counts.lock().unwrap();
                                let n = c.entry(path.clone()).or_insert(0);
                                *n += 1;
                                *n
                            };
                            Ok::<_, Infallible>(answer(&path, n, &req))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Site { addr, seen }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn seen(&self, path: &str) -> u64 {
        *self.seen.lock().unwrap().get(path).unwrap_or(&0)
    }
}

fn answer<B>(path: &str, n: u64, req: &Request<B>) -> Response<Full<Bytes>> {
    let field = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let cookie = field("cookie");
    let session = cookie
        .split(';')
        .find_map(|c| c.trim().strip_prefix("sessionid="))
        .unwrap_or("anon")
        .to_string();
    let pad = "<p>padding so the page is worth compressing</p>".repeat(20);
    let shell = |body: &str| {
        (
            vec![
                ESI,
                TTL,
                ("content-type", "text/html; charset=utf-8"),
                ("etag", "\"shell\""),
            ],
            format!("<html>{body}{pad}</html>"),
        )
    };
    let (fields, body): (Vec<(&str, &str)>, String) = match path {
        "/page" => shell(
            "<h1>Datasets</h1><esi:include src=\"/frag/user\"/>|<esi:include src=\"/frag/shared\"/><esi:remove><a href=\"/login\">no ESI</a></esi:remove><!--esi <b>esi only</b> -->",
        ),
        "/frag/user" => {
            let mut f = vec![("cache-control", "private"), ("content-type", "text/html")];
            if !cookie.contains("csrftoken=") {
                f.push(("set-cookie", "csrftoken=fresh; Path=/; SameSite=Lax"));
            }
            (f, format!("user:{session}"))
        }
        // Rendered for everyone, so it opts in: a visitor with a session
        // is served it from the store too.
        "/frag/shared" => (
            vec![ESI, TTL, ("content-type", "text/html")],
            format!("shared#{n}"),
        ),
        "/frag/fail" => {
            let mut res = Response::new(Full::new(Bytes::from("boom")));
            *res.status_mut() = http::StatusCode::INTERNAL_SERVER_ERROR;
            return res;
        }
        "/cap" => (vec![], format!("cap:{}", field("surrogate-capability"))),
        "/fail-continue" => shell("a<esi:include src=\"/frag/fail\" onerror=\"continue\"/>b"),
        "/fail-alt" => shell("a<esi:include src=\"/frag/fail\" alt=\"/frag/shared\"/>b"),
        "/fail-strict" => shell("a<esi:include src=\"/frag/fail\"/>b"),
        "/many" => shell(&"<esi:include src=\"/frag/shared\"/>".repeat(33)),
        "/self" => shell("<esi:include src=\"/self\"/>"),
        "/nested" => shell("[<esi:include src=\"/inner\"/>]"),
        "/inner" => shell("(<esi:include src=\"/frag/user\"/>)"),
        "/elsewhere" => shell("<esi:include src=\"//evil.example/x\"/>"),
        "/choose" => shell("<esi:choose><esi:when test=\"1\">x</esi:when></esi:choose>"),
        "/capsule" => shell("<esi:include src=\"/cap\"/>"),
        "/menu" => shell("a<esi:include src=\"/frag/shared\"/>b<esi:remove>x</esi:remove>c"),
        "/thirty-two" => shell(
            &(0..32)
                .map(|i| format!("[{i}:<esi:include src=\"/frag/shared?{i}\"/>]"))
                .collect::<String>(),
        ),
        "/twice" => shell("<esi:include src=\"/frag/user\"/>|<esi:include src=\"/frag/user\"/>"),
        "/alts" => shell(
            &(0..17)
                .map(|i| format!("<esi:include src=\"/frag/fail?{i}\" alt=\"/frag/shared?{i}\"/>"))
                .collect::<String>(),
        ),
        "/big" => (
            vec![ESI, TTL, ("content-type", "text/html")],
            "x".repeat(1_200_000),
        ),
        "/with-big" => shell("a<esi:include src=\"/big\" onerror=\"continue\"/>b"),
        // A shell a CDN would keep: the visitor's page must not say so.
        "/cdn" => {
            let (mut f, b) = shell("<esi:include src=\"/frag/user\"/>");
            f.push(("cdn-cache-control", "max-age=600"));
            (f, b)
        }
        // As Django's GZipMiddleware would label it (the bytes are not
        // gzip: bigcache must not read or pass them as text either way).
        "/gz" => {
            let (mut f, b) = shell("<esi:include src=\"/frag/shared\"/>");
            f.push(("content-encoding", "gzip"));
            (f, b)
        }
        // Not opted in: markup is text, sent as Django wrote it.
        "/plain" => (
            vec![TTL, ("content-type", "text/html")],
            "<esi:include src=\"/frag/user\"/>".to_string(),
        ),
        _ => (vec![], "not found".into()),
    };
    let mut res = Response::new(Full::new(Bytes::from(body)));
    for (k, v) in fields {
        res.headers_mut().append(k, v.parse().unwrap());
    }
    res
}

struct Got {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: String,
}

impl Got {
    fn field(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn get(s: &Server, path: &str, fields: &[(&str, &str)]) -> Got {
    send(s, reqwest::Method::GET, path, fields).await
}

async fn send(s: &Server, method: reqwest::Method, path: &str, fields: &[(&str, &str)]) -> Got {
    let mut req = client().request(method, s.page(path));
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let raw = r.bytes().await.unwrap();
    let body = match headers.get("content-encoding").map(|v| v.as_bytes()) {
        Some(b"br") => {
            let mut out = Vec::new();
            brotli::Decompressor::new(&raw[..], 4096)
                .read_to_end(&mut out)
                .unwrap();
            String::from_utf8(out).unwrap()
        }
        None => String::from_utf8(raw.to_vec()).unwrap(),
        Some(other) => panic!("coding {other:?}"),
    };
    Got {
        status,
        headers,
        body,
    }
}

#[tokio::test]
async fn a_shell_is_stored_once_and_assembled_for_each_visitor() {
    let site = Site::start().await;
    let (_d, s) = start_proxy(&site.url(), &[]);
    let anon = get(&s, "/page", &[]).await;
    assert_eq!(anon.status, 200);
    assert!(
        anon.body.contains("<h1>Datasets</h1>user:anon|shared#1"),
        "{}",
        anon.body
    );
    assert!(anon.body.contains("<b>esi only</b>") && !anon.body.contains("no ESI"));
    assert!(!anon.body.contains("esi:"), "{}", anon.body);
    assert_eq!(anon.field("surrogate-control"), "");
    assert_eq!(anon.field("cache-control"), "private, no-cache");
    assert_eq!(
        anon.field("etag"),
        "",
        "the shell's validator is not the page's"
    );
    assert!(anon.field("set-cookie").starts_with("csrftoken=fresh"));
    assert_eq!(anon.field("content-length"), anon.body.len().to_string());

    // A visitor with a session is served the same stored shell, with
    // fragments of their own; the shared one is a hit.
    let alice = get(&s, "/page", &[("cookie", "sessionid=alice; csrftoken=t")]).await;
    let bob = get(&s, "/page", &[("cookie", "sessionid=bob; csrftoken=t")]).await;
    assert!(alice.body.contains("user:alice|shared#1"), "{}", alice.body);
    assert!(bob.body.contains("user:bob|shared#1"), "{}", bob.body);
    assert!(!bob.body.contains("alice"));
    assert!(
        alice.field("x-cache").starts_with("HIT"),
        "{:?}",
        alice.headers
    );
    assert_eq!(
        alice.field("set-cookie"),
        "",
        "a visitor with the cookie gets none"
    );
    let again = get(&s, "/page", &[]).await;
    assert!(again.body.contains("user:anon|shared#1"));
    assert_eq!(site.seen("/page"), 1, "the shell is fetched once for all");
    assert_eq!(
        site.seen("/frag/shared"),
        1,
        "a cacheable fragment is a hit"
    );
    assert_eq!(
        site.seen("/frag/user"),
        4,
        "a private one is every visitor's own"
    );
}

#[tokio::test]
async fn an_assembled_page_is_encoded_whole_and_never_partial_or_304() {
    let site = Site::start().await;
    let (_d, s) = start_proxy(&site.url(), &[]);
    // Stored from an anonymous request: a visitor with a session never
    // stores, not even a shell.
    get(&s, "/page", &[]).await;
    let plain = get(&s, "/page", &[("cookie", "sessionid=a; csrftoken=t")]).await;
    let br = get(
        &s,
        "/page",
        &[
            ("cookie", "sessionid=a; csrftoken=t"),
            ("accept-encoding", "gzip, br"),
        ],
    )
    .await;
    assert_eq!(br.field("content-encoding"), "br");
    assert_eq!(br.body, plain.body);
    for cond in [
        ("if-none-match", "\"shell\""),
        ("if-none-match", "*"),
        ("range", "bytes=0-3"),
        ("if-modified-since", "Sun, 06 Nov 2094 08:49:37 GMT"),
    ] {
        let got = get(&s, "/page", &[cond]).await;
        assert_eq!(got.status, 200, "{cond:?}");
        assert!(got.body.contains("user:anon"), "{cond:?}");
    }
    let head = send(&s, reqwest::Method::HEAD, "/page", &[]).await;
    assert_eq!(head.status, 200);
    assert_eq!(head.field("surrogate-control"), "");
    assert_eq!(site.seen("/page"), 1);
}

#[tokio::test]
async fn a_failing_include_follows_its_alt_and_onerror() {
    let site = Site::start().await;
    let (_d, s) = start_proxy(&site.url(), &[]);
    let cont = get(&s, "/fail-continue", &[]).await;
    assert_eq!(cont.status, 200);
    assert!(cont.body.starts_with("<html>ab"), "{}", cont.body);
    let alt = get(&s, "/fail-alt", &[]).await;
    assert!(alt.body.starts_with("<html>ashared#"), "{}", alt.body);
    let strict = get(&s, "/fail-strict", &[]).await;
    assert_eq!(strict.status, 502);
    assert!(!strict.body.contains("boom"));
}

#[tokio::test]
async fn includes_are_bounded_in_number_depth_and_reach() {
    let site = Site::start().await;
    let (_d, s) = start_proxy(&site.url(), &[]);
    assert_eq!(get(&s, "/many", &[]).await.status, 502, "33 includes");
    assert_eq!(
        get(&s, "/self", &[]).await.status,
        502,
        "a page including itself"
    );
    assert!(
        site.seen("/self") <= 2,
        "stored once, then hits: {}",
        site.seen("/self")
    );
    let nested = get(&s, "/nested", &[("cookie", "sessionid=n")]).await;
    assert!(
        nested.body.starts_with("<html>[<html>(user:n)"),
        "{}",
        nested.body
    );
    assert_eq!(get(&s, "/elsewhere", &[]).await.status, 502);
    assert_eq!(get(&s, "/choose", &[]).await.status, 502);
    assert_eq!(site.seen("/x"), 0);
}

#[tokio::test]
async fn only_the_upstream_opts_in_and_only_bigcache_claims_the_capability() {
    let site = Site::start().await;
    let (_d, s) = start_proxy(&site.url(), &[]);
    let plain = get(
        &s,
        "/plain",
        &[("surrogate-control", "content=\"ESI/1.0\"")],
    )
    .await;
    assert_eq!(plain.body, "<esi:include src=\"/frag/user\"/>");
    assert_eq!(site.seen("/frag/user"), 0);
    let cap = get(
        &s,
        "/capsule",
        &[("surrogate-capability", "evil=\"ESI/1.0\"")],
    )
    .await;
    assert!(
        cap.body.contains("cap:bigcache=\"ESI/1.0\""),
        "{}",
        cap.body
    );
    let direct = get(&s, "/cap", &[("surrogate-capability", "evil=\"x\"")]).await;
    assert_eq!(direct.body, "cap:bigcache=\"ESI/1.0\"");
}

/// A page without ESI is never served to a visitor with a session: only a
/// shell is, which Django rendered for everyone.
#[tokio::test]
async fn a_session_still_bypasses_every_page_but_a_shell() {
    let site = Site::start().await;
    let (_d, s) = start_proxy(&site.url(), &[]);
    get(&s, "/plain", &[]).await;
    let first = site.seen("/plain");
    let got = get(&s, "/plain", &[("cookie", "sessionid=x")]).await;
    assert!(
        got.field("x-cache").starts_with("BYPASS"),
        "{:?}",
        got.headers
    );
    assert_eq!(site.seen("/plain"), first + 1);
}

async fn quick_hits(s: &Server) -> u64 {
    let (_, stat) = crate::util::get_json(s, "/stat").await;
    stat["proxy"]["quick_hits"].as_u64().unwrap()
}

/// The fast path assembles a shell whose includes are fresh hits; what it
/// answers is what the general path answers (a server with
/// `--access-log` takes the general path for every request).
#[tokio::test]
async fn the_fast_path_assembles_what_the_general_path_does() {
    let site = Site::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (_d1, fast) = start_proxy(&site.url(), &[]);
    let (_d2, general) = start_proxy(&site.url(), &["--access-log", log.to_str().unwrap()]);
    let visitors: [&[(&str, &str)]; 4] = [
        &[],
        &[("accept-encoding", "gzip, deflate, br, zstd")],
        &[("cookie", "_ga=GA1.2.3; theme=dark")],
        &[("cookie", "sessionid=s; csrftoken=t")],
    ];
    for path in [
        "/menu",
        "/nested",
        "/capsule",
        "/fail-alt",
        "/with-big",
        "/gz",
    ] {
        for s in [&fast, &general] {
            get(s, path, &[]).await;
            get(s, path, &[]).await;
        }
        for v in visitors {
            let before = quick_hits(&fast).await;
            let (a, b) = (get(&fast, path, v).await, get(&general, path, v).await);
            // Each server's copy of the shared fragment is its own render.
            let norm = |body: &str| {
                let mut out = String::new();
                let mut digits = false;
                for ch in body.chars() {
                    if !(digits && ch.is_ascii_digit()) {
                        out.push(ch);
                    }
                    digits = ch == '#' || (digits && ch.is_ascii_digit());
                }
                out
            };
            assert_eq!(
                (a.status, norm(&a.body)),
                (b.status, norm(&b.body)),
                "{path} {v:?}"
            );
            let fields = |g: &Got| {
                let mut f: Vec<(String, String)> = g
                    .headers
                    .iter()
                    .filter(|(n, _)| !matches!(n.as_str(), "date" | "age" | "connection"))
                    .map(|(n, v)| {
                        let v = v.to_str().unwrap_or("");
                        // The seconds left, counted at each answer, may
                        // have turned between the two.
                        let v = match v.split_once(";ttl=") {
                            Some((before, after)) => {
                                let rest = after.trim_start_matches(|c: char| c.is_ascii_digit());
                                format!("{before};ttl=N{rest}")
                            }
                            None => v.to_string(),
                        };
                        (n.to_string(), v)
                    })
                    .collect();
                f.sort();
                f
            };
            assert_eq!(fields(&a), fields(&b), "{path} {v:?}");
            let quick = quick_hits(&fast).await > before;
            // Assembled on the fast path when every include is a hit: not
            // /nested (its fragment is a shell with an include), /capsule
            // (its fragment is not stored) or /fail-alt (its src fails),
            // and not for a session.
            let expect = path == "/menu" && !v.iter().any(|(_, c)| c.contains("sessionid"));
            assert_eq!(quick, expect, "{path} {v:?}");
        }
    }
}

#[tokio::test]
async fn an_include_written_twice_is_fetched_once_and_alts_count() {
    let site = Site::start().await;
    let (_d, s) = start_proxy(&site.url(), &[]);
    let got = get(&s, "/twice", &[]).await;
    assert!(
        got.body.starts_with("<html>user:anon|user:anon"),
        "{}",
        got.body
    );
    let first = site.seen("/frag/user");
    get(&s, "/twice", &[]).await;
    assert_eq!(
        site.seen("/frag/user"),
        first + 1,
        "one fetch per page view"
    );
    // 17 includes whose src fails: with their alts, 34 fetches, over 32.
    // (Each its own: the same include twice is one fetch.)
    assert_eq!(get(&s, "/alts", &[]).await.status, 502);
}

#[tokio::test]
async fn the_page_is_no_cdns_and_only_get_and_head_are_assembled() {
    let site = Site::start().await;
    let (_d, s) = start_proxy(&site.url(), &[]);
    let got = get(&s, "/cdn", &[]).await;
    assert!(got.body.contains("user:anon"));
    assert_eq!(got.field("cdn-cache-control"), "");
    assert_eq!(got.field("cache-control"), "private, no-cache");
    let big = get(&s, "/with-big", &[]).await;
    assert!(
        big.body.starts_with("<html>ab"),
        "a fragment over 1 MiB is left out"
    );
    assert_eq!(get(&s, "/gz", &[]).await.status, 502);
    // Any other method's answer is passed as Django sent it (but for the
    // field addressed to bigcache).
    let options = send(&s, reqwest::Method::OPTIONS, "/menu", &[]).await;
    assert_eq!(options.status, 200);
    assert!(options.body.contains("<esi:include"), "{}", options.body);
    assert_eq!(options.field("surrogate-control"), "");
}

/// 32 includes, all hits: the fast path writes 65 pieces, more than one
/// `writev` takes, in order.
#[tokio::test]
async fn a_page_of_many_pieces_is_written_whole_and_in_order() {
    let site = Site::start().await;
    let (_d, s) = start_proxy(&site.url(), &[]);
    get(&s, "/thirty-two", &[]).await;
    let before = quick_hits(&s).await;
    let got = get(&s, "/thirty-two", &[]).await;
    assert_eq!(
        quick_hits(&s).await,
        before + 1,
        "assembled on the fast path"
    );
    // Each fragment in its place (its render number is the origin's).
    let mut at = "<html>".len();
    for i in 0..32 {
        let piece = format!("[{i}:shared#");
        assert_eq!(
            got.body.get(at..at + piece.len()),
            Some(piece.as_str()),
            "{}",
            got.body
        );
        at = at + got.body[at..].find(']').unwrap() + 1;
    }
    assert!(got.body[at..].starts_with("<p>padding"));
    assert_eq!(got.field("content-length"), got.body.len().to_string());
}
