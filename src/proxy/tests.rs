//! The proxy's state machine over the in-memory store, on a manual clock,
//! against a small real HTTP upstream on loopback: every path from request
//! to [`Decision`], without disk and without waiting for time to pass.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use super::stats::ProxyStats;
use super::upstream::UpstreamConfig;
use super::{Proxy, ProxyConfig};
use crate::clock::Clock;
use crate::store::memory::MemoryStore;

/// What the upstream answers, changeable mid-test.
#[derive(Clone)]
struct Reply {
    status: u16,
    headers: Vec<(&'static str, String)>,
}

/// An HTTP/1.1 upstream on a loopback port that answers every request
/// with the current [`Reply`] and a body naming the path, the request's
/// `Accept-Language` and how many requests it has seen.
struct Upstream {
    addr: SocketAddr,
    seen: Arc<AtomicUsize>,
    reply: Arc<Mutex<Reply>>,
    /// The headers of the last request it got.
    last: Arc<Mutex<http::HeaderMap>>,
}

impl Upstream {
    async fn start(reply: Reply) -> Upstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let reply = Arc::new(Mutex::new(reply));
        let last = Arc::new(Mutex::new(http::HeaderMap::new()));
        let (s, r, l) = (seen.clone(), reply.clone(), last.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, r, l) = (s.clone(), r.clone(), l.clone());
                let service = hyper::service::service_fn(move |req: Request<_>| {
                    *l.lock().unwrap() = req.headers().clone();
                    let n = s.fetch_add(1, Ordering::SeqCst) + 1;
                    let reply = r.lock().unwrap().clone();
                    let lang = req
                        .headers()
                        .get("accept-language")
                        .map_or("-".to_string(), |v| v.to_str().unwrap().to_string());
                    let body = format!("{} lang={lang} n={n}", req.uri().path());
                    let mut res = Response::new(Full::new(Bytes::from(body)));
                    *res.status_mut() = StatusCode::from_u16(reply.status).unwrap();
                    for (k, v) in reply.headers {
                        res.headers_mut().append(k, v.parse().unwrap());
                    }
                    async move { Ok::<_, std::convert::Infallible>(res) }
                });
                tokio::spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
        });
        Upstream {
            addr,
            seen,
            reply,
            last,
        }
    }

    fn seen(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    fn answer(&self, status: u16, headers: &[(&'static str, &str)]) {
        *self.reply.lock().unwrap() = reply(status, headers);
    }
}

fn reply(status: u16, headers: &[(&'static str, &str)]) -> Reply {
    Reply {
        status,
        headers: headers.iter().map(|(k, v)| (*k, v.to_string())).collect(),
    }
}

struct Rig {
    proxy: Arc<Proxy<MemoryStore>>,
    store: MemoryStore,
    clock: Clock,
    stats: Arc<ProxyStats>,
    upstream: Upstream,
}

async fn rig(first: Reply) -> Rig {
    rig_with(first, |_| {}).await
}

async fn rig_with(first: Reply, tune: impl FnOnce(&mut ProxyConfig)) -> Rig {
    rig_on(first, tune, |s| s).await
}

async fn rig_on(
    first: Reply,
    tune: impl FnOnce(&mut ProxyConfig),
    store: impl FnOnce(MemoryStore) -> MemoryStore,
) -> Rig {
    let upstream = Upstream::start(first).await;
    let clock = Clock::manual(SystemTime::now());
    let store = store(MemoryStore::new(clock.clone()));
    let stats = Arc::new(ProxyStats::default());
    let mut cfg = ProxyConfig {
        upstream: UpstreamConfig {
            base: format!("http://{}", upstream.addr).parse().unwrap(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
        },
        max_entry_size: 1 << 20,
        grace: Duration::from_secs(10),
        stale_if_error: Duration::from_secs(3600),
        session_cookies: vec!["sessionid".into()],
        hit_for_pass: Duration::from_secs(120),
        trusted: Default::default(),
        max_target: 8192,
        cache_vary_cookie: false,
        keep_tag_headers: false,
        encodings: vec!["gzip".into()],
        hosts: vec!["example.org".into()],
        sites: super::site::Sites::new("http://example.org", Vec::new()),
        flight_wait: Duration::from_secs(20),
        send_timeout: Duration::from_secs(30),
        access_log: None,
        max_query_variants: 0,
        query: Default::default(),
        cookies: Default::default(),
        compress: Some(11),
        decoded_cache: 1 << 20,
    };
    tune(&mut cfg);
    let proxy = Arc::new(Proxy::new(store.clone(), cfg, stats.clone()).unwrap());
    proxy.start_recoder();
    Rig {
        proxy,
        store,
        clock,
        stats,
        upstream,
    }
}

struct Got {
    status: u16,
    cache: String,
    /// Every `Cache-Status` value, in order.
    cache_status: Vec<String>,
    body: String,
}

impl Rig {
    async fn get(&self, path: &str, headers: &[(&str, &str)]) -> Got {
        let mut req = Request::get(path).header("host", "example.org");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(http_body_util::Empty::<Bytes>::new()).unwrap();
        let peer: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let res = self.proxy.clone().handle(req, peer).await;
        let status = res.status().as_u16();
        assert_eq!(res.headers().get_all("x-cache").iter().count(), 1);
        let cache = res.headers()["x-cache"].to_str().unwrap().to_string();
        let cache_status = res
            .headers()
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        Got {
            status,
            cache,
            cache_status,
            body: String::from_utf8(body.to_vec()).unwrap(),
        }
    }

    /// Waits (bounded) until the store has taken `n` pages: a background
    /// refresh lands on its own time.
    async fn stored(&self, n: u64) {
        for _ in 0..500 {
            if self.store.writes() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("only {} of {n} pages stored", self.store.writes());
    }

    /// The `/stat` counters, as the API reports them.
    fn stat(&self, name: &str) -> u64 {
        self.stats.snapshot()[name].as_u64().unwrap()
    }

    fn not_cached(&self, reason: &str) -> u64 {
        self.stats.snapshot()["not_cached"][reason]
            .as_u64()
            .unwrap_or(0)
    }
}

const TTL: (&str, &str) = ("x-bigcache-ttl", "1h");

/// Waits until `n` requests have joined another's fetch, then lets every
/// other task on this (single-threaded) runtime run until it waits too: a
/// request that would answer at once has answered by then.
async fn joined(r: &Rig, n: u64) {
    for _ in 0..1000 {
        if r.proxy.joined() >= n {
            for _ in 0..50 {
                tokio::task::yield_now().await;
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    panic!("{} of {n} requests joined a fetch", r.proxy.joined());
}

#[tokio::test]
async fn a_miss_is_stored_and_then_hit_until_its_lifetime_ends() {
    let r = rig(reply(200, &[TTL])).await;
    let a = r.get("/d/1", &[]).await;
    assert_eq!((a.status, a.cache.as_str()), (200, "MISS"));
    let b = r.get("/d/1", &[]).await;
    assert_eq!(
        (b.cache.as_str(), b.body.as_str()),
        ("HIT", a.body.as_str())
    );
    assert_eq!(r.upstream.seen(), 1);
    assert_eq!((r.stat("miss"), r.stat("hit")), (1, 1));

    // Past its hour: within --grace (10 s) it is served while refreshed...
    r.clock.advance(Duration::from_secs(3601));
    let c = r.get("/d/1", &[]).await;
    assert_eq!(
        (c.cache.as_str(), c.body.as_str()),
        ("UPDATING", a.body.as_str())
    );
    r.stored(2).await;
    let refreshed = r.get("/d/1", &[]).await;
    assert_eq!(refreshed.cache, "HIT");
    assert!(refreshed.body.ends_with("n=2"), "{}", refreshed.body);
    // ...and past the grace too, it is fetched again before it is served.
    r.clock.advance(Duration::from_secs(7200));
    let d = r.get("/d/1", &[]).await;
    assert_eq!(d.cache, "MISS");
    assert!(d.body.ends_with("n=3"), "{}", d.body);
}

#[tokio::test]
async fn an_uncacheable_page_says_why_and_passes_until_hit_for_pass_ends() {
    let r = rig(reply(200, &[TTL, ("cache-control", "private")])).await;
    assert_eq!(r.get("/me", &[]).await.cache, "MISS");
    assert_eq!(r.not_cached("private"), 1);
    assert_eq!(r.get("/me", &[]).await.cache, "MISS");
    assert_eq!(r.not_cached("hit_for_pass"), 1);
    assert_eq!(r.store.writes(), 0);
    // Hit-for-pass lasts 120 s; then the page is tried for the cache again.
    r.upstream.answer(200, &[TTL]);
    r.clock.advance(Duration::from_secs(121));
    assert_eq!(r.get("/me", &[]).await.cache, "MISS");
    assert_eq!(r.get("/me", &[]).await.cache, "HIT");
    assert_eq!(r.upstream.seen(), 3);
}

#[tokio::test]
async fn credentials_and_sessions_bypass_both_ways() {
    let r = rig(reply(200, &[TTL])).await;
    let a = r.get("/acct", &[("authorization", "Bearer x")]).await;
    assert_eq!(a.cache, "BYPASS");
    let b = r.get("/acct", &[("cookie", "a=1; sessionid=s")]).await;
    assert_eq!(b.cache, "BYPASS");
    assert_eq!(r.store.writes(), 0, "a private request stored a page");
    assert_eq!(
        (
            r.not_cached("authorization"),
            r.not_cached("session_cookie")
        ),
        (1, 1)
    );
    assert_eq!(r.get("/acct", &[]).await.cache, "MISS");
    assert_eq!(
        r.get("/acct", &[("authorization", "Bearer x")]).await.cache,
        "BYPASS",
        "a request with credentials got the shared copy"
    );
}

#[tokio::test]
async fn a_failing_store_serves_from_the_upstream_and_says_so() {
    let r = rig(reply(200, &[TTL])).await;
    r.store.set_failing(true);
    let a = r.get("/s", &[]).await;
    assert_eq!((a.status, a.cache.as_str()), (200, "MISS"));
    assert_eq!(r.not_cached("store_error"), 1);
    // The header says what the counters say: not stored, and why.
    assert_eq!(a.cache_status.len(), 1, "{:?}", a.cache_status);
    assert!(
        a.cache_status[0].ends_with(r#"detail="store_error""#)
            && !a.cache_status[0].contains(";stored"),
        "{:?}",
        a.cache_status
    );
    r.store.set_failing(false);
    assert_eq!(r.get("/s", &[]).await.cache, "MISS");
    assert_eq!(r.get("/s", &[]).await.cache, "HIT");
}

#[tokio::test]
async fn a_stale_page_stands_in_for_a_failing_upstream_within_stale_if_error() {
    // A page under RFC 9111 rules: a 5xx is passed on once it is stale
    // (the upstream answered; serving stale needs the response's leave).
    let r = rig(reply(200, &[("cache-control", "max-age=60")])).await;
    r.get("/rfc", &[]).await;
    r.upstream.answer(503, &[]);
    r.clock.advance(Duration::from_secs(600));
    assert_eq!(r.get("/rfc", &[]).await.status, 503);
    // The operator's TTL header: `--stale-if-error` (an hour) applies.
    r.upstream.answer(200, &[("x-bigcache-ttl", "60s")]);
    let a = r.get("/e", &[]).await;
    r.upstream.answer(503, &[]);
    // Past max-age and the 10 s grace, within the hour of stale-if-error.
    r.clock.advance(Duration::from_secs(600));
    let b = r.get("/e", &[]).await;
    assert_eq!((b.status, b.cache.as_str()), (200, "STALE"));
    assert_eq!(b.body, a.body);
    // Past stale-if-error too: the error goes through.
    r.clock.advance(Duration::from_secs(3600));
    let c = r.get("/e", &[]).await;
    assert_eq!(c.status, 503);
}

#[tokio::test]
async fn vary_variants_are_kept_apart_in_any_store() {
    let r = rig(reply(200, &[TTL, ("vary", "Accept-Language")])).await;
    let ko = r.get("/v", &[("accept-language", "ko")]).await;
    let en = r.get("/v", &[("accept-language", "en")]).await;
    assert!(ko.body.contains("lang=ko") && en.body.contains("lang=en"));
    let ko2 = r.get("/v", &[("accept-language", "ko")]).await;
    let en2 = r.get("/v", &[("accept-language", "en")]).await;
    assert_eq!((ko2.cache.as_str(), ko2.body), ("HIT", ko.body));
    assert_eq!((en2.cache.as_str(), en2.body), ("HIT", en.body));
    assert_eq!(r.upstream.seen(), 2);
}

#[tokio::test]
async fn other_methods_bypass_and_invalidate_their_target() {
    let r = rig(reply(200, &[TTL])).await;
    r.get("/f", &[]).await;
    assert_eq!(r.get("/f", &[]).await.cache, "HIT");
    let req = Request::post("/f")
        .header("host", "example.org")
        .body(Full::new(Bytes::from_static(b"x=1")))
        .unwrap();
    let res = r
        .proxy
        .clone()
        .handle(req, "127.0.0.1:40000".parse().unwrap())
        .await;
    assert_eq!(res.headers()["x-cache"], "BYPASS");
    assert_eq!(r.not_cached("method"), 1);
    assert_eq!(r.get("/f", &[]).await.cache, "MISS");
}

/// A header the client names in `Connection` never reaches the upstream,
/// so it must not select the variant the response is stored under: else
/// one request could store the default page as the `ko` variant for every
/// later `ko` visitor.
#[tokio::test]
async fn a_variant_is_stored_under_the_headers_the_upstream_saw() {
    let r = rig(reply(200, &[TTL, ("vary", "Accept-Language")])).await;
    let en = r.get("/p", &[("accept-language", "en")]).await;
    assert!(en.body.contains("lang=en"));
    let sneaky = r
        .get(
            "/p",
            &[("accept-language", "ko"), ("connection", "accept-language")],
        )
        .await;
    assert!(sneaky.body.contains("lang=-"), "{}", sneaky.body);
    let ko = r.get("/p", &[("accept-language", "ko")]).await;
    assert!(
        ko.body.contains("lang=ko"),
        "a ko visitor got another variant's page: {} ({})",
        ko.body,
        ko.cache
    );
    assert_eq!(ko.cache, "MISS");
    // And the lookup uses those headers too: the same request again finds
    // the page it was answered with.
    let again = r
        .get(
            "/p",
            &[("accept-language", "ko"), ("connection", "accept-language")],
        )
        .await;
    assert_eq!(
        (again.cache.as_str(), again.body.as_str()),
        ("HIT", sneaky.body.as_str())
    );
}

/// A request that joins a fetch while its page is still being written, and
/// arrives after that page's lifetime (a long write, a short max-age), does
/// not get the expired page as a hit.
#[tokio::test]
async fn a_late_waiter_never_gets_a_page_that_expired_during_its_write() {
    let r = rig(reply(200, &[("cache-control", "max-age=60")])).await;
    let held = r.store.hold_writes().await;
    assert_eq!(r.get("/w", &[]).await.cache, "MISS");
    r.clock.advance(Duration::from_secs(120));
    let r = Arc::new(r);
    let late = {
        let r = r.clone();
        tokio::spawn(async move { r.get("/w", &[]).await })
    };
    // It waits for the write instead of taking the announced page...
    joined(&r, 1).await;
    assert!(
        !late.is_finished(),
        "answered from the announced, expired page"
    );
    drop(held);
    // ...then finds the stored page stale, and fetches it anew.
    let late = late.await.unwrap();
    assert_eq!(late.cache, "MISS");
    assert!(late.body.ends_with("n=2"), "{}", late.body);
}

/// A `no-cache` page is revalidated before every reuse, also by a request
/// that arrives while it is still being written.
#[tokio::test]
async fn a_no_cache_page_being_written_is_still_revalidated() {
    let r = rig(reply(
        200,
        &[
            ("cache-control", "no-cache, max-age=600"),
            ("etag", "\"v1\""),
        ],
    ))
    .await;
    let held = r.store.hold_writes().await;
    assert_eq!(r.get("/nc", &[]).await.cache, "MISS");
    let r = Arc::new(r);
    let late = {
        let r = r.clone();
        tokio::spawn(async move { r.get("/nc", &[]).await })
    };
    joined(&r, 1).await;
    drop(held);
    let late = late.await.unwrap();
    assert_ne!(late.cache, "HIT", "a no-cache page was reused unvalidated");
    assert_eq!(r.upstream.seen(), 2);
}

/// With the disk behind (a write held, the backlog full), a fetched page
/// waits a moment for room, then is served without being stored: pages
/// cannot pile up in RAM behind a slow disk. Once the write lands, pages
/// are stored again.
#[tokio::test]
async fn a_full_write_backlog_serves_pages_unstored() {
    let r = rig_on(
        reply(200, &[TTL]),
        |_| {},
        |s| s.with_backlog(1, Duration::from_millis(100)),
    )
    .await;
    let held = r.store.hold_writes().await;
    let first = r.get("/first", &[]).await;
    assert_eq!(first.cache, "MISS");
    // Its write has not finished: Cache-Status does not claim it.
    assert_eq!(
        first.cache_status,
        ["bigcache;fwd=uri-miss;fwd-status=200;ttl=3600"]
    );
    let started = std::time::Instant::now();
    let second = r.get("/second", &[]).await;
    assert_eq!((second.status, second.cache.as_str()), (200, "MISS"));
    // Turned away by the full backlog: not stored, and it says why.
    assert_eq!(
        second.cache_status,
        [r#"bigcache;fwd=uri-miss;fwd-status=200;ttl=3600;detail="store_error""#]
    );
    assert!(second.body.ends_with("n=2"), "{}", second.body);
    assert!(
        started.elapsed() >= Duration::from_millis(100),
        "served before the wait for room ended"
    );
    assert_eq!(r.stat("unstored"), 1);
    drop(held);
    r.stored(1).await;
    assert_eq!(r.get("/first", &[]).await.cache, "HIT");
    let again = r.get("/second", &[]).await;
    assert_eq!(again.cache, "MISS", "it was stored");
    assert_eq!(
        again.cache_status,
        ["bigcache;fwd=uri-miss;fwd-status=200;stored;ttl=3600"]
    );
    r.stored(2).await;
    assert_eq!(r.get("/second", &[]).await.cache, "HIT");
    assert_eq!(r.stat("unstored"), 1);
}

/// Hit-for-pass keys are request targets, up to 8 KiB each: the map is
/// bounded in bytes, not in entries.
#[tokio::test]
async fn the_hit_for_pass_map_is_bounded_in_bytes() {
    let r = rig(reply(200, &[])).await;
    for i in 0..10_000u32 {
        let mut key = vec![b'x'; 8 << 10];
        key.extend_from_slice(&i.to_be_bytes());
        let mark = super::PassMark {
            until: u64::MAX,
            names: None,
        };
        r.proxy.pass.insert(key, mark);
    }
    assert!(
        r.proxy.pass.weight() <= super::PASS_BYTES,
        "{} bytes",
        r.proxy.pass.weight()
    );
}

/// Another variant's request that joins while the first variant is being
/// written waits for the write, then fetches and stores its own variant
/// (instead of passing uncached).
#[tokio::test]
async fn another_variant_arriving_during_a_write_gets_stored_too() {
    let r = rig(reply(200, &[TTL, ("vary", "Accept-Language")])).await;
    let held = r.store.hold_writes().await;
    assert_eq!(
        r.get("/lv", &[("accept-language", "ko")]).await.cache,
        "MISS"
    );
    let r = Arc::new(r);
    let en = {
        let r = r.clone();
        tokio::spawn(async move { r.get("/lv", &[("accept-language", "en")]).await })
    };
    joined(&r, 1).await;
    drop(held);
    let en = en.await.unwrap();
    assert!(en.body.contains("lang=en"), "{}", en.body);
    let again = r.get("/lv", &[("accept-language", "en")]).await;
    assert_eq!(
        (again.cache.as_str(), again.body.as_str()),
        ("HIT", en.body.as_str())
    );
}

/// A request waiting on another's fetch gives up after `flight_wait` and
/// goes upstream itself: a write that never finishes (a stuck disk) holds
/// no one longer than that.
#[tokio::test]
async fn a_waiter_stops_waiting_on_a_stuck_write() {
    let r = rig_with(reply(200, &[("cache-control", "max-age=60")]), |c| {
        c.flight_wait = Duration::from_millis(300);
    })
    .await;
    let held = r.store.hold_writes().await;
    assert_eq!(r.get("/stuck", &[]).await.cache, "MISS");
    // Expired while being written: the late request must wait for the
    // write, which never ends.
    r.clock.advance(Duration::from_secs(120));
    let late = tokio::time::timeout(Duration::from_secs(5), r.get("/stuck", &[]))
        .await
        .expect("still waiting on the stuck write");
    assert_eq!(late.cache, "MISS");
    assert!(late.body.ends_with("n=2"), "{}", late.body);
    assert_eq!(r.not_cached("wait_timed_out"), 1);
    drop(held);
}

/// A variant found uncacheable (the client picks its own variant through
/// the `Vary` headers) passes alone: the page's other variants are still
/// coalesced and stored.
#[tokio::test]
async fn hit_for_pass_is_kept_per_variant() {
    let r = rig(reply(
        200,
        &[("cache-control", "private"), ("vary", "Accept-Language")],
    ))
    .await;
    let ko = [("accept-language", "ko")];
    assert_eq!(r.get("/hv", &ko).await.cache, "MISS");
    assert_eq!(r.not_cached("private"), 1);
    r.get("/hv", &ko).await;
    assert_eq!(r.not_cached("hit_for_pass"), 1, "the variant itself passes");
    // Another uncacheable variant is marked beside it, not instead of it.
    r.get("/hv", &[("accept-language", "zz")]).await;
    r.get("/hv", &ko).await;
    assert_eq!(
        r.not_cached("hit_for_pass"),
        2,
        "one variant's mark replaced another's"
    );
    r.upstream.answer(200, &[TTL, ("vary", "Accept-Language")]);
    let en = [("accept-language", "en")];
    assert_eq!(r.get("/hv", &en).await.cache, "MISS");
    assert_eq!(
        r.not_cached("hit_for_pass"),
        2,
        "another variant was passed"
    );
    r.stored(1).await;
    assert_eq!(r.get("/hv", &en).await.cache, "HIT");
}

#[tokio::test]
async fn past_max_query_variants_the_oldest_query_is_purged() {
    let r = rig_with(reply(200, &[TTL]), |c| c.max_query_variants = 2).await;
    for q in ["a=1", "a=2", "a=1", "a=3"] {
        r.get(&format!("/d/?{q}"), &[]).await;
    }
    r.stored(3).await;
    // a=1 was the oldest when a=3 came: purged; a=2 and a=3 stay.
    assert_eq!(r.get("/d/?a=2", &[]).await.cache, "HIT");
    assert_eq!(r.get("/d/?a=3", &[]).await.cache, "HIT");
    assert_eq!(r.get("/d/?a=1", &[]).await.cache, "MISS");
    // The path itself, without a query, is not a query variant.
    r.get("/d/", &[]).await;
    assert_eq!(r.get("/d/", &[]).await.cache, "HIT");
}

/// A fill that ends in a pass without handing a response over (here a 304
/// that changes the page's Vary names) leaves its leader to pass alone:
/// the hand-off it waited on has resolved, and is not polled again (that
/// panicked, "called after complete", and reset the client's connection).
#[tokio::test]
async fn a_pass_without_a_handed_response_answers_the_leader() {
    let vary = ("vary", "accept-language");
    let r = rig(reply(200, &[TTL, vary, ("etag", "\"v1\"")])).await;
    let en = [("accept-language", "en")];
    assert_eq!(r.get("/v/1", &en).await.cache, "MISS");
    r.clock.advance(Duration::from_secs(3600 + 60));
    r.upstream.answer(304, &[TTL, ("vary", "accept-encoding")]);
    let got = r.get("/v/1", &en).await;
    assert_eq!(got.status, 304, "passed to the upstream");
    assert_eq!(r.not_cached("variant_mismatch"), 1);
    assert_eq!(r.upstream.seen(), 3, "the revalidation, then the pass");
}

/// A stale `must-revalidate` page (never served stale) is still kept, so
/// its refresh is a conditional request with its validators and the
/// headers its Vary names, and a 304 renews it without its body.
#[tokio::test]
async fn a_must_revalidate_page_is_revalidated_with_its_validators() {
    let cc = ("cache-control", "max-age=60, must-revalidate");
    let vary = ("vary", "accept-language");
    let lm = ("last-modified", "Tue, 01 Jan 2019 00:00:00 GMT");
    let r = rig(reply(200, &[cc, vary, lm, ("etag", "\"v1\"")])).await;
    let de = [("accept-language", "de")];
    let first = r.get("/m/1", &de).await;
    assert_eq!(first.cache, "MISS");
    r.clock.advance(Duration::from_secs(61));
    r.upstream.answer(304, &[cc, ("etag", "\"v1\"")]);
    let again = r.get("/m/1", &de).await;
    let sent = r.upstream.last.lock().unwrap().clone();
    assert_eq!(sent["if-none-match"], "\"v1\"");
    assert_eq!(sent["if-modified-since"], lm.1);
    assert_eq!(sent["accept-language"], "de", "the header Vary names");
    assert_eq!((again.status, again.cache.as_str()), (200, "REVALIDATED"));
    assert_eq!(again.body, first.body, "the stored body, renewed");
    assert_eq!(r.get("/m/1", &de).await.cache, "HIT");
}

/// A client that does not accept br is sent a decoded copy of a brotli
/// page, kept for its next request, but only while that stored copy is
/// the page: after a refetch it gets the new page, never the old bytes.
#[tokio::test]
async fn a_decoded_copy_serves_only_the_stored_copy_it_came_from() {
    // At the first quality already: no encoding again at a hit.
    let r = rig_with(
        reply(
            200,
            &[
                ("content-type", "text/html"),
                ("cache-control", "max-age=60"),
            ],
        ),
        |c| c.compress = Some(5),
    )
    .await;
    // The upstream's body names the path: long enough to be encoded.
    let path = format!("/d/{}", "x".repeat(400));
    let first = r.get(&path, &[]).await;
    assert_eq!(first.cache, "MISS");
    // Stored as sent, then in brotli.
    r.stored(2).await;
    assert_eq!(r.stats.snapshot()["compressed"]["br"], 1);
    for _ in 0..2 {
        let plain = r.get(&path, &[]).await;
        assert_eq!((plain.cache.as_str(), &plain.body), ("HIT", &first.body));
    }
    r.clock.advance(Duration::from_secs(61));
    let again = r.get(&path, &[]).await;
    assert_eq!(again.cache, "MISS");
    assert!(again.body.ends_with("n=2"), "{}", again.body);
    r.stored(3).await;
    let plain = r.get(&path, &[]).await;
    assert_eq!((plain.cache.as_str(), &plain.body), ("HIT", &again.body));
}

/// The page `r` has stored for `target`, as a request with `headers`
/// finds it.
async fn found(r: &Rig, target: &str, headers: &[(&'static str, &str)]) -> super::lookup::Found {
    let mut h = http::HeaderMap::new();
    for (k, v) in headers {
        h.insert(*k, v.parse().unwrap());
    }
    let mut key = super::key::PageKey::new(target);
    match super::lookup::lookup(&r.store, &mut key, &h, r.clock.now_ms()).await {
        super::lookup::Looked::Found(f) => f,
        _ => panic!("{target} is not stored"),
    }
}

/// The outcome a re-encoding announces: `f`, the stored copy.
fn recoded(f: super::lookup::Found) -> super::coalesce::Outcome {
    super::coalesce::Outcome::Entry {
        entry: f.entry,
        variant: f.variant,
        stale: false,
        revalidated: false,
        recoded: true,
    }
}

/// Holds `target`'s flight as a re-encoding of its stored copy does, lets
/// `request` join it, then ends the flight with `ending` as the re-encoder
/// does (a copy announced, then the flight ended; giving up ends it at
/// once); what `request` got.
async fn joined_a_recoding(
    r: &Arc<Rig>,
    target: &str,
    ending: super::coalesce::Outcome,
    request: tokio::task::JoinHandle<Got>,
) -> Got {
    use super::coalesce::{Outcome, Role};
    let group = super::key::page_key(target);
    let Role::Leader(mut permit) = r
        .proxy
        .coalescer
        .join(&group, crate::store::PageStore::purge_point(&r.store))
    else {
        panic!("a flight for {target} is under way");
    };
    // The request has not run yet (this runtime has one thread).
    let before = r.proxy.joined();
    joined(r, before + 1).await;
    match ending {
        entry @ Outcome::Entry { .. } => {
            permit.announce(entry);
            permit.end();
        }
        other => permit.finish(other),
    }
    request.await.unwrap()
}

/// A flight that re-encodes a stored page fetched nothing: a request that
/// joined it before its copy was announced gets the copy only as the store
/// would give it. A `no-cache` page is revalidated, not served as a hit.
#[tokio::test]
async fn a_no_cache_page_being_recoded_is_still_revalidated() {
    let r = rig(reply(
        200,
        &[
            ("cache-control", "no-cache, max-age=600"),
            ("etag", "\"v1\""),
        ],
    ))
    .await;
    assert_eq!(r.get("/nc", &[]).await.cache, "MISS");
    r.stored(1).await;
    let f = found(&r, "/nc", &[]).await;
    let r = Arc::new(r);
    let request = {
        let r = r.clone();
        tokio::spawn(async move { r.get("/nc", &[]).await })
    };
    let got = joined_a_recoding(&r, "/nc", recoded(f), request).await;
    assert_ne!(got.cache, "HIT", "a no-cache page was reused unvalidated");
    assert_eq!(r.upstream.seen(), 2);
    let last = r.upstream.last.lock().unwrap().clone();
    assert_eq!(last["if-none-match"], "\"v1\"", "a conditional request");
}

/// ...and another variant than the one being re-encoded is fetched and
/// stored, not passed through for that flight.
#[tokio::test]
async fn another_variant_arriving_during_a_recoding_gets_stored_too() {
    let r = rig(reply(200, &[TTL, ("vary", "Accept-Language")])).await;
    let en = [("accept-language", "en")];
    assert_eq!(r.get("/rv", &en).await.cache, "MISS");
    r.stored(1).await;
    let f = found(&r, "/rv", &en).await;
    let r = Arc::new(r);
    let request = {
        let r = r.clone();
        tokio::spawn(async move { r.get("/rv", &[("accept-language", "de")]).await })
    };
    let de = joined_a_recoding(&r, "/rv", recoded(f), request).await;
    assert!(de.body.contains("lang=de"), "{}", de.body);
    r.stored(2).await;
    let again = r.get("/rv", &[("accept-language", "de")]).await;
    assert_eq!(
        (again.cache.as_str(), again.body.as_str()),
        ("HIT", de.body.as_str())
    );
}

/// A re-encoding that finds its copy changed or gone ends its flight with
/// nothing to share: a request that joined it looks in the store again,
/// and its own variant is fetched and stored, not passed through.
#[tokio::test]
async fn a_request_joining_a_recoding_that_gave_up_looks_again() {
    let r = rig(reply(200, &[TTL, ("vary", "Accept-Language")])).await;
    assert_eq!(
        r.get("/gu", &[("accept-language", "en")]).await.cache,
        "MISS"
    );
    r.stored(1).await;
    let r = Arc::new(r);
    let de = {
        let r = r.clone();
        tokio::spawn(async move { r.get("/gu", &[("accept-language", "de")]).await })
    };
    let ending = super::coalesce::Outcome::LookAgain;
    let de = joined_a_recoding(&r, "/gu", ending, de).await;
    assert!(de.body.contains("lang=de"), "{}", de.body);
    r.stored(2).await;
    let again = r.get("/gu", &[("accept-language", "de")]).await;
    assert_eq!(
        (again.cache.as_str(), again.body.as_str()),
        ("HIT", de.body.as_str())
    );
}
