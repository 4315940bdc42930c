//! The reverse proxy against a real upstream server, counting what reaches it.

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, Instant, SystemTime};

use reqwest::Method;
use reqwest::header::HeaderMap;

use crate::origin::Origin;
use crate::util::{Server, start_local_proxy as start_local, start_proxy as start, stored};

struct Reply {
    status: u16,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    fn cache(&self) -> &str {
        self.headers
            .get("x-cache")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
    }
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn send(url: String, method: Method, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().request(method, url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    Reply {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.text().await.unwrap(),
    }
}

async fn get(s: &Server, path: &str) -> Reply {
    send(s.page(path), Method::GET, &[]).await
}

async fn get_with(s: &Server, path: &str, headers: &[(&str, &str)]) -> Reply {
    send(s.page(path), Method::GET, headers).await
}

const TTL: &str = "h=X-Bigcache-TTL:1h";

#[tokio::test(flavor = "multi_thread")]
async fn miss_then_hit_without_touching_the_upstream() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/dataset/1/?{TTL}");
    let a = get(&s, &path).await;
    assert_eq!((a.status, a.cache()), (200, "MISS"));
    assert!(
        a.header("x-bigcache-ttl").is_none(),
        "TTL header must not leak"
    );
    for _ in 0..5 {
        let b = get(&s, &path).await;
        assert_eq!((b.status, b.cache()), (200, "HIT"));
        assert_eq!(b.body, a.body);
        assert_eq!(b.header("content-type"), Some("text/html; charset=utf-8"));
        assert!(b.header("age").is_some());
        assert!(b.header("x-bigcache-ttl").is_none());
    }
    assert_eq!(o.count(&path), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn query_strings_are_different_pages() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let p2 = get(&s, &format!("/list/?page=2&{TTL}")).await;
    let p3 = get(&s, &format!("/list/?page=3&{TTL}")).await;
    assert_eq!((p2.cache(), p3.cache()), ("MISS", "MISS"));
    assert_ne!(p2.body, p3.body);
    let again = get(&s, &format!("/list/?page=2&{TTL}")).await;
    assert_eq!(
        (again.cache(), again.body.as_str()),
        ("HIT", p2.body.as_str())
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn lifetime_from_each_header_form() {
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &["--grace", "0s"]).await;
    let date = httpdate::fmt_http_date(SystemTime::now()).replace(' ', "%20");
    let expires =
        httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(2)).replace(' ', "%20");
    let cases = [
        "/f/ttl?h=X-Bigcache-TTL:2s".to_string(),
        "/f/smax?h=Cache-Control:s-maxage%3D2,max-age%3D0".to_string(),
        "/f/max?h=Cache-Control:max-age%3D2".to_string(),
        "/f/age?h=Cache-Control:max-age%3D62&h=Age:60".to_string(),
        format!("/f/expires?h=Date:{date}&h=Expires:{expires}"),
    ];
    for path in &cases {
        assert_eq!(get(&s, path).await.cache(), "MISS", "{path}");
        assert_eq!(get(&s, path).await.cache(), "HIT", "{path}");
    }
    let aged = get(&s, &cases[3]).await;
    let age: u64 = aged.header("age").unwrap().parse().unwrap();
    assert!(age >= 60, "upstream Age carried: {age}");
    stored(&s, 5).await;
    s.advance(Duration::from_millis(3100));
    for path in &cases {
        assert_eq!(
            get(&s, path).await.cache(),
            "MISS",
            "{path} outlived its lifetime"
        );
        assert_eq!(o.count(path), 2, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn never_cached_responses() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    for path in [
        format!("/n/cookie?{TTL}&h=Set-Cookie:a%3Db"),
        format!("/n/private?{TTL}&h=Cache-Control:private"),
        format!("/n/nostore?{TTL}&h=Cache-Control:no-store"),
        // A sender's typo does not make a private page shared.
        format!("/n/privsemi?{TTL}&h=Cache-Control:max-age%3D600,%20private;"),
        format!("/n/cdnpriv?{TTL}&h=CDN-Cache-Control:private;"),
        format!("/n/varystar?{TTL}&h=Vary:*"),
        "/n/nolifetime".to_string(),
        "/n/lastmod?h=Last-Modified:Tue,%2001%20Jan%202019%2000:00:00%20GMT".to_string(),
        "/n/404?status=404".to_string(),
        "/n/400?status=400&h=Cache-Control:max-age%3D600".to_string(),
        "/n/503?status=503&h=Cache-Control:max-age%3D600".to_string(),
        "/n/206?status=206&h=Cache-Control:max-age%3D600".to_string(),
        "/n/badttl?h=X-Bigcache-TTL:someday".to_string(),
        "/n/quoted?h=Cache-Control:foo%3D%22max-age%3D600%22".to_string(),
    ] {
        let a = get(&s, &path).await;
        let b = get(&s, &path).await;
        assert_eq!((a.cache(), b.cache()), ("MISS", "MISS"), "{path}");
        assert_eq!(o.count(&path), 2, "{path} was cached");
    }
    // An invalid Age is ignored (RFC 9111 §5.1): the page is reused.
    let badage = "/n/badage?h=Cache-Control:max-age%3D600&h=Age:old,%200";
    let (a, b) = (get(&s, badage).await, get(&s, badage).await);
    assert_eq!((a.cache(), b.cache()), ("MISS", "HIT"));
    // Other final statuses with explicit freshness (RFC 9111 §3), and a
    // 5xx with the operator's header.
    for (path, status) in [
        ("/n/404ttl?status=404&h=X-Bigcache-TTL:1h", 404),
        (
            "/n/301ttl?status=301&h=Location:/x&h=X-Bigcache-TTL:1h",
            301,
        ),
        ("/n/404ma?status=404&h=Cache-Control:max-age%3D600", 404),
        ("/n/410ma?status=410&h=Cache-Control:max-age%3D600", 410),
        (
            "/n/301ma?status=301&h=Location:/x&h=Cache-Control:max-age%3D600",
            301,
        ),
        (
            "/n/302ma?status=302&h=Location:/x&h=Cache-Control:max-age%3D600",
            302,
        ),
        ("/n/204ma?status=204&h=Cache-Control:max-age%3D600", 204),
        ("/n/503ttl?status=503&h=X-Bigcache-TTL:1m", 503),
    ] {
        get(&s, path).await;
        let b = get(&s, path).await;
        assert_eq!(b.cache(), "HIT", "{path}");
        assert_eq!(b.status, status);
        assert_eq!(o.count(path), 1);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sessions_and_credentials_bypass_both_ways() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--session-cookie", "sessionid,mysess"]);
    let path = format!("/account/?{TTL}");
    // A logged-in user's page is never stored...
    let mine = get_with(&s, &path, &[("cookie", "csrftoken=1; sessionid=alice")]).await;
    assert_eq!(mine.cache(), "BYPASS");
    assert!(mine.body.contains("sessionid=alice"));
    let anon = get(&s, &path).await;
    assert_eq!(anon.cache(), "MISS");
    assert!(!anon.body.contains("alice"));
    // ...and never gets the anonymous copy.
    let again = get_with(&s, &path, &[("cookie", "mysess=bob")]).await;
    assert_eq!(again.cache(), "BYPASS");
    let auth = get_with(&s, &path, &[("authorization", "Bearer t")]).await;
    assert_eq!(auth.cache(), "BYPASS");
    // Cookies that are not sessions do not bypass.
    let ga = get_with(&s, &path, &[("cookie", "_ga=GA1.2")]).await;
    assert_eq!(ga.cache(), "HIT");
    assert_eq!(o.count(&path), 4);
}

#[tokio::test(flavor = "multi_thread")]
async fn vary_variants_are_kept_apart() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/v/?{TTL}&h=Vary:Accept-Language");
    let ko = get_with(&s, &path, &[("accept-language", "ko")]).await;
    let en = get_with(&s, &path, &[("accept-language", "en")]).await;
    assert_eq!((ko.cache(), en.cache()), ("MISS", "MISS"));
    assert!(ko.body.contains("accept-language=ko") && en.body.contains("accept-language=en"));
    let ko2 = get_with(&s, &path, &[("accept-language", "ko")]).await;
    let en2 = get_with(&s, &path, &[("accept-language", "en")]).await;
    assert_eq!((ko2.cache(), en2.cache()), ("HIT", "HIT"));
    assert_eq!(ko2.body, ko.body);
    assert_eq!(en2.body, en.body);
    let none = get(&s, &path).await;
    assert_eq!(none.cache(), "MISS");
    assert!(none.body.contains("accept-language=-"));
    assert_eq!(o.count(&path), 3);
    // A purge of the page takes every variant.
    let r = client()
        .delete(s.url(&format!("/cache/{path}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        get_with(&s, &path, &[("accept-language", "ko")])
            .await
            .cache(),
        "MISS"
    );
    assert_eq!(
        get_with(&s, &path, &[("accept-language", "en")])
            .await
            .cache(),
        "MISS"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn head_is_answered_from_a_cached_get() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/h/?{TTL}&size=5000");
    let head = send(s.page(&path), Method::HEAD, &[]).await;
    assert_eq!(
        (head.status, head.cache(), head.body.as_str()),
        (200, "MISS", "")
    );
    let get1 = get(&s, &path).await;
    assert_eq!(get1.cache(), "HIT");
    assert_eq!(get1.body.len(), 5000);
    assert!(
        get1.body.contains("method=GET"),
        "HEAD miss fetched with GET"
    );
    let head2 = send(s.page(&path), Method::HEAD, &[]).await;
    assert_eq!((head2.cache(), head2.body.as_str()), ("HIT", ""));
    assert_eq!(head2.header("content-length"), Some("5000"));
    assert_eq!(o.count(&path), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn conditional_requests_get_304_from_the_cache() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let lm = "Tue, 01 Jan 2019 00:00:00 GMT";
    let path = format!(
        "/c/?{TTL}&etag=v1&h=Last-Modified:{}",
        lm.replace(' ', "%20")
    );
    get(&s, &path).await;
    let r = get_with(&s, &path, &[("if-none-match", "\"v1\"")]).await;
    assert_eq!((r.status, r.cache(), r.body.as_str()), (304, "HIT", ""));
    assert_eq!(r.header("etag"), Some("\"v1\""));
    let r = get_with(&s, &path, &[("if-none-match", "W/\"v1\", \"v0\"")]).await;
    assert_eq!(r.status, 304);
    let r = get_with(&s, &path, &[("if-none-match", "\"v2\"")]).await;
    assert_eq!(r.status, 200);
    let r = get_with(&s, &path, &[("if-modified-since", lm)]).await;
    assert_eq!(r.status, 304);
    let r = get_with(
        &s,
        &path,
        &[("if-modified-since", "Mon, 31 Dec 2018 00:00:00 GMT")],
    )
    .await;
    assert_eq!(r.status, 200);
    assert_eq!(o.count(&path), 1);

    // Without upstream validators bigcache computes a strong ETag.
    let plain = format!("/c/plain?{TTL}");
    let first = get(&s, &plain).await;
    let etag = first.header("etag").expect("computed etag").to_string();
    assert!(!etag.starts_with("W/"));
    let r = get_with(&s, &plain, &[("if-none-match", &etag)]).await;
    assert_eq!(r.status, 304);
}

#[tokio::test(flavor = "multi_thread")]
async fn unsafe_methods_invalidate() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/form/?{TTL}");
    for method in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
        get(&s, &path).await;
        assert_eq!(get(&s, &path).await.cache(), "HIT");
        let r = send(s.page(&path), method.clone(), &[]).await;
        assert_eq!((r.status, r.cache()), (200, "BYPASS"));
        assert!(r.body.contains(&format!("method={method}")));
        assert_eq!(
            get(&s, &path).await.cache(),
            "MISS",
            "{method} left a stale copy"
        );
    }
    // A failed POST invalidates nothing.
    let failing = format!("/form/?{TTL}&status=500");
    get(&s, &path).await;
    send(s.page(&failing), Method::POST, &[]).await;
    assert_eq!(get(&s, &path).await.cache(), "HIT");
    // Location and Content-Location on the same site are invalidated too,
    // after a 2xx (a page created or changed there)...
    let target = format!("/thing/1?{TTL}");
    get(&s, &target).await;
    let escaped = target
        .replace('&', "%26")
        .replace('=', "%3D")
        .replace(':', "%3A");
    let r = send(
        s.page(&format!("/things/?status=201&h=Location:{escaped}")),
        Method::POST,
        &[],
    )
    .await;
    assert_eq!(r.status, 201);
    assert_eq!(get(&s, &target).await.cache(), "MISS");
    // ...but not after a redirect: Django's APPEND_SLASH answers a POST to
    // `/thing/1` with `301 Location: /thing/1/`, which would let anyone
    // purge any page.
    assert_eq!(get(&s, &target).await.cache(), "HIT");
    let r = send(
        s.page(&format!("/thing/1x?status=301&h=Location:{escaped}")),
        Method::POST,
        &[],
    )
    .await;
    assert_eq!(r.status, 301);
    assert_eq!(
        get(&s, &target).await.cache(),
        "HIT",
        "a redirect's Location purged the page"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_entry_is_revalidated_with_a_conditional_request() {
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &["--grace", "0s"]).await;
    let path = "/r/?etag=v1&h=Cache-Control:max-age%3D1&h=X-Version:1";
    let first = get(&s, path).await;
    assert_eq!(first.cache(), "MISS");
    stored(&s, 1).await;
    s.advance(Duration::from_millis(1300));
    let second = get(&s, path).await;
    assert_eq!(second.cache(), "REVALIDATED");
    assert_eq!(second.body, first.body, "304 keeps the stored body");
    assert_eq!(o.counts.not_modified.load(SeqCst), 1);
    let third = get(&s, path).await;
    assert_eq!(third.cache(), "HIT", "304 refreshed the lifetime");
    assert_eq!(o.count(path), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn no_cache_is_stored_but_revalidated_every_time() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = "/nc/?etag=v1&h=Cache-Control:no-cache,max-age%3D600";
    assert_eq!(get(&s, path).await.cache(), "MISS");
    assert_eq!(get(&s, path).await.cache(), "REVALIDATED");
    assert_eq!(get(&s, path).await.cache(), "REVALIDATED");
    assert_eq!(o.counts.not_modified.load(SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn coalesces_a_hundred_concurrent_misses_into_one_request() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let s = Arc::new(s);
    let path = format!("/slow/?{TTL}&delay=300");
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let (s, path) = (s.clone(), path.clone());
            tokio::spawn(async move { get(&s, &path).await })
        })
        .collect();
    let mut bodies = Vec::new();
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200);
        bodies.push(r.body);
    }
    assert_eq!(o.count(&path), 1, "exactly one upstream request");
    assert!(bodies.iter().all(|b| b == &bodies[0]));
    println!(
        "coalescing: 100 concurrent misses -> {} upstream request(s)",
        o.count(&path)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn uncacheable_waiters_go_upstream_in_parallel() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let s = Arc::new(s);
    let path = "/private/?h=Cache-Control:private&delay=400";
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let s = s.clone();
            tokio::spawn(async move { get(&s, path).await })
        })
        .collect();
    for t in tasks {
        assert_eq!(t.await.unwrap().status, 200);
    }
    assert_eq!(o.count(path), 20);
    assert!(
        o.counts.max_in_flight.load(SeqCst) >= 10,
        "waiters were serialized: at most {} at once",
        o.counts.max_in_flight.load(SeqCst)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stale_while_revalidate_serves_stale_during_one_refresh() {
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &[]).await;
    let path = "/swr/?h=Cache-Control:max-age%3D1,stale-while-revalidate%3D60&delay=300";
    let first = get(&s, path).await;
    assert!(first.body.contains("n=1"));
    stored(&s, 1).await;
    s.advance(Duration::from_millis(1200));
    for _ in 0..5 {
        let stale = get(&s, path).await;
        assert_eq!(stale.cache(), "UPDATING");
        assert_eq!(stale.body, first.body);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let fresh = loop {
        let r = get(&s, path).await;
        if r.cache() == "HIT" {
            break r;
        }
        assert!(Instant::now() < deadline, "refresh never landed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(fresh.body.contains("n=2"), "{}", fresh.body);
    assert_eq!(o.count(path), 2, "one background refresh only");
}

/// `--stale-if-error` stands in for an upstream that fails: for pages under
/// the operator's TTL header on any failure, for pages under RFC 9111 rules
/// only when the upstream cannot be reached (a 5xx is passed on, unless the
/// response granted `stale-if-error` itself).
#[tokio::test(flavor = "multi_thread")]
async fn stale_if_error_when_the_upstream_dies_or_fails() {
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &["--grace", "0s", "--stale-if-error", "1h"]).await;
    let path = "/sie/?h=X-Bigcache-TTL:1s";
    let rfc = "/sie/rfc?h=Cache-Control:max-age%3D1";
    let granted = "/sie/granted?h=Cache-Control:max-age%3D1,stale-if-error%3D60";
    get(&s, rfc).await;
    get(&s, granted).await;
    let first = get(&s, path).await;
    let strict = "/sie/strict?h=Cache-Control:max-age%3D1,must-revalidate";
    get(&s, strict).await;
    stored(&s, 4).await;
    s.advance(Duration::from_millis(1200));
    o.counts.fail.store(true, SeqCst);
    let r = get(&s, path).await;
    assert_eq!((r.status, r.cache()), (200, "STALE"));
    assert_eq!(r.body, first.body);
    assert_eq!(
        get(&s, rfc).await.status,
        500,
        "a 5xx on an RFC page goes through"
    );
    assert_eq!(get(&s, granted).await.cache(), "STALE");
    let r = get(&s, strict).await;
    assert_eq!(r.status, 500, "must-revalidate forbids stale");
    o.counts.fail.store(false, SeqCst);
    let (addr, counts) = o.kill();
    let r = get(&s, path).await;
    assert_eq!((r.status, r.cache()), (200, "STALE"));
    assert_eq!(r.body, first.body);
    // Disconnected: any page may stand in.
    assert_eq!(get(&s, rfc).await.cache(), "STALE");
    assert_eq!(
        get(&s, strict).await.status,
        502,
        "must-revalidate: never stale"
    );
    let r = get(&s, "/sie/never-cached").await;
    assert_eq!(r.status, 502);
    // Back up: fresh content again.
    let o = Origin::restart(addr, counts).await;
    let r = get(&s, path).await;
    assert_eq!(r.cache(), "MISS");
    assert_ne!(r.body, first.body);
    drop(o);
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_by_path_and_prefix_through_the_rest_api() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let pages = [
        format!("/dataset/x/?page=2&{TTL}"),
        format!("/dataset/x/?page=3&{TTL}"),
        format!("/dataset/y/?{TTL}"),
        format!("/other/?{TTL}"),
    ];
    for p in &pages {
        get(&s, p).await;
        assert_eq!(get(&s, p).await.cache(), "HIT");
    }
    // As the Django connector sends it: the full path, unencoded.
    let r = client()
        .delete(s.url(&format!("/cache/{}", pages[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&s, &pages[0]).await.cache(), "MISS");
    assert_eq!(get(&s, &pages[1]).await.cache(), "HIT");
    // Percent-encoded whole.
    let encoded: String =
        percent_encoding::utf8_percent_encode(&pages[1], percent_encoding::NON_ALPHANUMERIC)
            .to_string();
    let r = client()
        .delete(s.url(&format!("/cache/{encoded}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&s, &pages[1]).await.cache(), "MISS");
    // Prefix.
    let r = client()
        .delete(s.url("/prefix//dataset/"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["message"], "prefix 'dataset/': 3 keys deleted.");
    for p in &pages[..3] {
        assert_eq!(get(&s, p).await.cache(), "MISS", "{p}");
    }
    assert_eq!(get(&s, &pages[3]).await.cache(), "HIT");
    let r = client()
        .delete(s.url("/cache//nothing/here/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn rest_values_are_not_served_as_pages() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let r = client()
        .post(s.url("/cache//rest/page/"))
        .json(&serde_json::json!({"value": "not a page"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = get(&s, "/rest/page/").await;
    assert!(page.body.contains("target=/rest/page/"));
    assert_eq!(o.count("/rest/page/"), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_down_is_a_quick_502_and_slow_is_504() {
    // A port nobody listens on.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let (_d, s) = start(&format!("http://{addr}"), &[]);
    let t = Instant::now();
    let r = get(&s, "/anything").await;
    assert_eq!(r.status, 502);
    assert!(t.elapsed() < Duration::from_secs(5));

    let o = Origin::start().await;
    let (_d2, s2) = start(&o.url(), &["--upstream-timeout", "500ms"]);
    let r = get(&s2, "/slow?delay=3000").await;
    assert_eq!(r.status, 504);
    let r = get(&s2, &format!("/fast?{TTL}")).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversize_responses_stream_through_uncached() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--max-entry-size", "64KiB"]);
    let path = format!("/big/?{TTL}&size=300000");
    for _ in 0..2 {
        let r = get(&s, &path).await;
        assert_eq!((r.status, r.cache()), (200, "MISS"));
        assert_eq!(r.body.len(), 300000);
        assert!(r.body.starts_with("target=/big/"));
    }
    assert_eq!(o.count(&path), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn forwards_faithfully() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let r = get_with(
        &s,
        "/fwd?x=1",
        &[("host", "example.org"), ("connection", "keep-alive")],
    )
    .await;
    assert!(r.body.contains("target=/fwd?x=1"));
    assert!(r.body.contains("host=example.org"), "{}", r.body);
    assert!(r.body.contains("xff=127.0.0.1"), "{}", r.body);
    assert!(r.body.contains("xfproto=http"));
    assert!(r.body.contains("xfhost=example.org"));
    let body = "a=1&b=2".repeat(1000);
    let r = client()
        .post(s.page("/fwd/post"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("method=POST"));
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_keeps_the_cache() {
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--upstream", &o.url()];
    let path = format!("/keep/?{TTL}");
    // The same site both times (the proxy's port changes between runs).
    let host = [("host", "localhost")];
    let s = Server::start_in(dir.path(), &args);
    let first = get_with(&s, &path, &host).await;
    assert!(s.stop().success());
    let s = Server::start_in(dir.path(), &args);
    let r = get_with(&s, &path, &host).await;
    assert_eq!((r.cache(), r.body.as_str()), ("HIT", first.body.as_str()));
    assert_eq!(o.count(&path), 1);
}

/// Requests `path` (an origin page with a 1 s delay), and purges it once
/// the origin has the request, while that fetch is still waiting on it.
/// Nothing is stored yet (the DELETE answers 404), but the purge is
/// recorded all the same.
async fn purge_while_fetching(
    o: &Origin,
    s: Server,
    path: &str,
) -> (Arc<Server>, tokio::task::JoinHandle<Reply>) {
    let s = Arc::new(s);
    let inflight = {
        let (s, path) = (s.clone(), path.to_string());
        tokio::spawn(async move { get(&s, &path).await })
    };
    o.reached(path, 1).await;
    client()
        .delete(s.url(&format!("/cache/{path}")))
        .send()
        .await
        .unwrap();
    (s, inflight)
}

/// A purge that lands while a page is being fetched must win: the copy
/// fetched before it is served to its requester but never stored.
#[tokio::test(flavor = "multi_thread")]
async fn purge_during_a_fetch_is_not_undone() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/race/?{TTL}&delay=1000");
    let (s, inflight) = purge_while_fetching(&o, s, &path).await;
    assert_eq!(inflight.await.unwrap().cache(), "MISS");
    assert_eq!(get(&s, &path).await.cache(), "MISS", "the purge was undone");
    assert_eq!(o.count(&path), 2);
}

/// A request that arrives after a purge, while the fetch the purge
/// overtook is still running, must not be answered from that fetch (it
/// would get the purged content although the purge was acknowledged first).
#[tokio::test(flavor = "multi_thread")]
async fn a_request_after_a_purge_does_not_join_the_purged_fetch() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/race2/?{TTL}&delay=1000");
    let (s, leader) = purge_while_fetching(&o, s, &path).await;
    // The leader's fetch is still waiting on the origin.
    let after = get(&s, &path).await;
    assert_eq!(after.cache(), "MISS");
    assert_eq!(
        o.count(&path),
        2,
        "the request after the purge was served from the fetch it purged"
    );
    assert_eq!(leader.await.unwrap().cache(), "MISS");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_304_refreshes_the_stored_headers() {
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &["--grace", "0s"]).await;
    let path =
        "/r304/?etag=v1&h=Cache-Control:max-age%3D1&h304=X-Version:2&h304=Content-Language:de";
    let first = get(&s, path).await;
    assert_eq!(first.header("x-version"), None);
    stored(&s, 1).await;
    s.advance(Duration::from_millis(1300));
    let second = get(&s, path).await;
    assert_eq!(second.cache(), "REVALIDATED");
    assert_eq!(second.header("x-version"), Some("2"));
    // RFC 9111 §3.2: every field the 304 carries, Content-* included.
    assert_eq!(second.header("content-language"), Some("de"));
    let third = get(&s, path).await;
    assert_eq!(third.header("content-language"), Some("de"));
    assert_eq!(
        (third.cache(), third.header("x-version")),
        ("HIT", Some("2"))
    );
    assert_eq!(third.body, first.body);
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_may_speak_http2() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let url = s.page(&format!("/h2/?{TTL}"));
    for expect in ["MISS", "HIT"] {
        let out = std::process::Command::new("curl")
            .args([
                "-sS",
                "--http2-prior-knowledge",
                "-D",
                "-",
                "-o",
                "/dev/null",
                &url,
            ])
            .output()
            .unwrap();
        let head = String::from_utf8_lossy(&out.stdout).to_lowercase();
        assert!(head.starts_with("http/2 200"), "{head}");
        assert!(
            head.contains(&format!("x-cache: {}", expect.to_lowercase())),
            "{head}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_session_cookie_beside_a_non_ascii_cookie_still_bypasses() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/me8/?{TTL}&h=Vary:Cookie");
    let value = reqwest::header::HeaderValue::from_bytes("city=Zürich; sessionid=alice".as_bytes())
        .unwrap();
    let r = client()
        .get(s.page(&path))
        .header("cookie", value)
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "BYPASS");
    let anon = get(&s, &path).await;
    assert_eq!(anon.cache(), "MISS");
    assert!(!anon.body.contains("alice"));
}

/// A GET announcing a body: the body is not forwarded, so neither is its
/// Content-Length (the upstream would wait for bytes that never come).
#[tokio::test(flavor = "multi_thread")]
async fn get_with_a_body_does_not_stall_the_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--upstream-timeout", "3s"]);
    let addr = s.proxy.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "GET /cl/?{TTL} HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    conn.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn ttl_header_pages_survive_revalidation() {
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &["--grace", "0s"]).await;
    let path = "/ttl304/?etag=v1&h=X-Bigcache-TTL:1s";
    assert_eq!(get(&s, path).await.cache(), "MISS");
    stored(&s, 1).await;
    s.advance(Duration::from_millis(1300));
    let r = get(&s, path).await;
    assert_eq!(r.cache(), "REVALIDATED");
    assert!(r.header("x-bigcache-ttl").is_none());
    assert_eq!(get(&s, path).await.cache(), "HIT");
}

#[tokio::test(flavor = "multi_thread")]
async fn unrelated_purges_do_not_stop_a_page_from_caching() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let s = Arc::new(s);
    let path = format!("/calm/?{TTL}&delay=800");
    let inflight = {
        let (s, path) = (s.clone(), path.clone());
        tokio::spawn(async move { get(&s, &path).await })
    };
    o.reached(&path, 1).await;
    client()
        .delete(s.url("/cache//somewhere/else/"))
        .send()
        .await
        .unwrap();
    client()
        .delete(s.url("/prefix//other/"))
        .send()
        .await
        .unwrap();
    send(s.page("/post/elsewhere"), Method::POST, &[]).await;
    assert_eq!(inflight.await.unwrap().cache(), "MISS");
    assert_eq!(get(&s, &path).await.cache(), "HIT");
}

/// An upstream that sends its head and then stalls mid-body cannot hold a
/// client past the upstream timeout: a streamed body is cut off, a body
/// being read for the cache ends in 504.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_upstream_body_is_cut_off() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--upstream-timeout", "1s"]);
    let t = Instant::now();
    let streamed = client().get(s.page("/stall/?stall=1")).send().await;
    let ended = match streamed {
        Ok(r) => r.text().await.map(|_| ()),
        Err(e) => Err(e),
    };
    assert!(ended.is_err(), "a stalled body ended cleanly");
    let cached = get(&s, &format!("/stall/?stall=1&{TTL}")).await;
    assert_eq!(cached.status, 504);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "hung for {:?}",
        t.elapsed()
    );
}

/// The header a client sees and the counters an operator reads come from
/// one decision: they agree, reason included.
#[tokio::test(flavor = "multi_thread")]
async fn x_cache_and_the_proxy_counters_agree() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let mut seen = std::collections::HashMap::<String, u64>::new();
    for path in [
        format!("/agree/?{TTL}"),
        format!("/agree/?{TTL}"),
        "/agree/private?h=Cache-Control:private".to_string(),
        "/agree/private?h=Cache-Control:private".to_string(),
    ] {
        *seen
            .entry(get(&s, &path).await.cache().to_string())
            .or_default() += 1;
    }
    let auth = get_with(&s, &format!("/agree/?{TTL}"), &[("authorization", "x")]).await;
    *seen.entry(auth.cache().to_string()).or_default() += 1;
    let stat: serde_json::Value = client()
        .get(s.url("/stat"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let proxy = &stat["proxy"];
    for (status, n) in &seen {
        assert_eq!(proxy[status.to_lowercase()], *n, "{status}: {stat}");
    }
    assert_eq!(seen["MISS"], 3);
    let reasons = &proxy["not_cached"];
    assert_eq!(reasons["private"], 1, "{stat}");
    assert_eq!(reasons["hit_for_pass"], 1, "{stat}");
    assert_eq!(reasons["authorization"], 1, "{stat}");
}

/// Headers outside the cache key that frameworks honour (forwarding,
/// URL and method overrides, WSGI names with `_`) never reach the upstream
/// from an untrusted client, so a page they would change is never cached
/// for everyone. Loopback is not trusted by default.
#[tokio::test(flavor = "multi_thread")]
async fn headers_outside_the_key_cannot_poison_the_page_for_others() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/poison/?{TTL}");
    let evil = get_with(
        &s,
        &path,
        &[
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "host=evil.example;proto=https"),
            ("x-original-url", "/admin/"),
            ("x-http-method-override", "DELETE"),
            ("script_name", "/blog"),
            ("connection", "host"),
        ],
    )
    .await;
    assert_eq!(evil.cache(), "MISS");
    assert!(!evil.body.contains("evil.example"), "{}", evil.body);
    assert!(evil.body.contains("xfproto=http ") && evil.body.contains("host=127.0.0.1"));
    for name in [
        "forwarded",
        "x-original-url",
        "x-http-method-override",
        "script_name",
    ] {
        let names = evil.body.split("names=").nth(1).unwrap_or("").trim();
        assert!(
            !names.split(',').any(|n| n == name),
            "{name} reached the upstream: {names}"
        );
    }
    let clean = get(&s, &path).await;
    assert_eq!(
        (clean.cache(), clean.body.as_str()),
        ("HIT", evil.body.as_str())
    );
}

/// `--trusted-proxy` names the front whose forwarding headers are kept.
#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_proxy_keeps_its_forwarding_headers() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--trusted-proxy", "127.0.0.1/32"]);
    let r = get_with(
        &s,
        &format!("/front/?{TTL}"),
        &[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-for", "203.0.113.9"),
        ],
    )
    .await;
    assert!(r.body.contains("xfproto=https"), "{}", r.body);
    assert!(r.body.contains("xff=203.0.113.9, 127.0.0.1"), "{}", r.body);
}

/// An HTTP/1.1 request without `Host` is a 400, a target over
/// `--max-target-length` a 414; neither reaches the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn requests_without_one_host_or_with_huge_targets_are_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--max-target-length", "1KiB"]);
    let addr = s.proxy.trim_start_matches("http://").to_string();
    for head in [
        "GET /nohost/ HTTP/1.1\r\nConnection: close\r\n\r\n".to_string(),
        format!(
            "GET /nohost/ HTTP/1.1\r\nHost: {addr}\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
        ),
    ] {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(head.as_bytes()).await.unwrap();
        let mut out = String::new();
        conn.read_to_string(&mut out).await.unwrap();
        assert!(out.starts_with("HTTP/1.1 400"), "{head:?}: {out}");
    }
    let long = format!("/long/?q={}", "x".repeat(2000));
    assert_eq!(get(&s, &long).await.status, 414);
    assert_eq!(o.count("/nohost/") + o.count(&long), 0);
}

/// An error a header outside the key provoked (a bad `Host`, an odd
/// header) does not put the page into hit-for-pass for everyone.
#[tokio::test(flavor = "multi_thread")]
async fn an_error_one_client_provoked_does_not_pass_the_page_for_others() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = "/hfp/?h=Cache-Control:max-age%3D600";
    let bad = get_with(&s, path, &[("x-test-status", "400")]).await;
    assert_eq!(bad.status, 400);
    assert_eq!(get(&s, path).await.cache(), "MISS");
    assert_eq!(
        get(&s, path).await.cache(),
        "HIT",
        "the page was left uncached after one client's 400"
    );
}

/// Django strips NBSP (0xA0) and NEL (0x85) around cookie names: so does
/// the session check, or a logged-in page would be cached.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_cookie_padded_as_django_strips_it_still_bypasses() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/pad/?{TTL}");
    for raw in [&b"\xa0sessionid=alice"[..], b"a=1;\x85sessionid=alice"] {
        let r = client()
            .get(s.page(&path))
            .header(
                "cookie",
                reqwest::header::HeaderValue::from_bytes(raw).unwrap(),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(r.headers()["x-cache"], "BYPASS", "{raw:?}");
    }
    assert!(!get(&s, &path).await.body.contains("alice"));
}

/// An upstream that ends a body by closing the connection (no
/// Content-Length, not chunked) looks the same when it crashes mid-page:
/// such a body is passed on but never stored as complete.
#[tokio::test(flavor = "multi_thread")]
async fn a_close_delimited_body_is_never_stored() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            count.fetch_add(1, SeqCst);
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            // Half a page, then the "crash".
            let _ = conn
                .write_all(b"HTTP/1.1 200 OK\r\nX-Bigcache-TTL: 1h\r\nConnection: close\r\n\r\n<html><body>half a pa")
                .await;
        }
    });
    let (_d, s) = start(&origin, &[]);
    let first = get(&s, "/cut/").await;
    assert_eq!((first.status, first.cache()), (200, "MISS"));
    let second = get(&s, "/cut/").await;
    assert_eq!(second.cache(), "MISS", "a cut-off page was stored");
    assert_eq!(served.load(SeqCst), 2);
}

/// `Vary: Cookie` would give every visitor a copy of their own (and let any
/// client mint copies by sending new cookies): only the cookieless copy is
/// stored, unless per-cookie copies are asked for.
#[tokio::test(flavor = "multi_thread")]
async fn vary_cookie_pages_are_stored_per_cookie_only_when_configured() {
    let o = Origin::start().await;
    let path = format!("/vc/?{TTL}&h=Vary:Cookie");
    let (_d, s) = start(&o.url(), &[]);
    get_with(&s, &path, &[("cookie", "theme=dark")]).await;
    let again = get_with(&s, &path, &[("cookie", "theme=dark")]).await;
    assert_eq!(again.cache(), "MISS");
    assert_eq!(get(&s, &path).await.cache(), "MISS");
    assert_eq!(get(&s, &path).await.cache(), "HIT", "the cookieless copy");
    drop(s);
    let (_d, s) = start(&o.url(), &["--cache-vary-cookie"]);
    get_with(&s, &path, &[("cookie", "theme=dark")]).await;
    let again = get_with(&s, &path, &[("cookie", "theme=dark")]).await;
    assert_eq!(again.cache(), "HIT");
}

/// Variants per page are capped (`--max-variants`): a client sending ever
/// new header values replaces the oldest variant instead of growing the
/// page's group record, which every lookup reads.
#[tokio::test(flavor = "multi_thread")]
async fn variants_per_page_are_capped() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--max-variants", "2"]);
    let path = format!("/cap/?{TTL}&h=Vary:Accept-Language");
    for lang in ["ko", "en", "fr"] {
        get_with(&s, &path, &[("accept-language", lang)]).await;
    }
    let fr = get_with(&s, &path, &[("accept-language", "fr")]).await;
    let en = get_with(&s, &path, &[("accept-language", "en")]).await;
    assert_eq!((fr.cache(), en.cache()), ("HIT", "HIT"));
    let ko = get_with(&s, &path, &[("accept-language", "ko")]).await;
    assert_eq!(
        ko.cache(),
        "MISS",
        "the oldest variant was kept past the cap"
    );
}

/// A forged `Host` (Django with `ALLOWED_HOSTS = ['*']` builds absolute
/// links from it, port included) never reaches the cache: requests for
/// hosts outside `--host` bypass it both ways.
#[tokio::test(flavor = "multi_thread")]
async fn a_forged_host_cannot_poison_the_page_for_others() {
    let o = Origin::start().await;
    let (_d, s) = start(
        &o.url(),
        &[
            "--host",
            "www.example.org",
            "--host-alias",
            "example.org=www.example.org",
        ],
    );
    let path = format!("/links/?{TTL}");
    for forged in [
        "evil.example",
        "www.example.org:31337",
        "www.example.org:80@evil",
    ] {
        let r = get_with(&s, &path, &[("host", forged)]).await;
        assert_eq!(r.cache(), "BYPASS", "{forged}");
    }
    let site = [("host", "www.example.org")];
    let clean = get_with(&s, &path, &site).await;
    assert_eq!(clean.cache(), "MISS");
    assert!(
        !clean.body.contains("evil") && !clean.body.contains("31337"),
        "{}",
        clean.body
    );
    // The same host however it is spelt, and an alias the site answers to,
    // share the page (Django is sent the listed form); a purge by path
    // takes it for all of them.
    for alias in ["WWW.Example.org.", "example.org"] {
        let r = get_with(&s, &path, &[("host", alias)]).await;
        assert_eq!(
            (r.cache(), r.body.as_str()),
            ("HIT", clean.body.as_str()),
            "{alias}"
        );
    }
    let forged = get_with(&s, &path, &[("host", "evil.example")]).await;
    assert_eq!(
        forged.cache(),
        "BYPASS",
        "a forged Host got the shared page"
    );
}

/// A `Set-Cookie` the client's own cookies caused (Django's CSRF
/// middleware answers a malformed `csrftoken` with a new one) says nothing
/// about the page: it is not stored, and the page stays cacheable for
/// everyone else.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_cookie_one_client_provoked_does_not_pass_the_page_for_others() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/csrf/?{TTL}");
    let bad = get_with(&s, &path, &[("cookie", "csrftoken=bad")]).await;
    assert_eq!(bad.cache(), "MISS");
    assert_eq!(get(&s, &path).await.cache(), "MISS");
    assert_eq!(
        get(&s, &path).await.cache(),
        "HIT",
        "one client's cookie kept the page uncached"
    );
}

/// A trusted front's `X-Forwarded-Host`, `-Proto` and `-Port` are believed
/// (Django may render links from them), so each must be one value the site
/// serves, or the request bypasses.
#[tokio::test(flavor = "multi_thread")]
async fn a_trusted_fronts_forwarded_host_must_be_the_sites() {
    let o = Origin::start().await;
    let (_d, s) = start(
        &o.url(),
        &[
            "--trusted-proxy",
            "127.0.0.1/32",
            "--host",
            "www.example.org",
        ],
    );
    let path = format!("/xfh/?{TTL}");
    let site = ("host", "www.example.org");
    let evil = get_with(&s, &path, &[site, ("x-forwarded-host", "evil.example")]).await;
    assert_eq!(evil.cache(), "BYPASS");
    // Passed on as sent, so it must be listed exactly as sent.
    let odd = get_with(&s, &path, &[site, ("x-forwarded-host", "WWW.example.org.")]).await;
    assert_eq!(odd.cache(), "BYPASS");
    for (name, value) in [
        ("x-forwarded-proto", "javascript"),
        ("x-forwarded-proto", "http, https"),
        ("x-forwarded-port", "31337x"),
    ] {
        let r = get_with(&s, &path, &[site, (name, value)]).await;
        assert_eq!(r.cache(), "BYPASS", "{name}: {value}");
    }
    let ok = get_with(&s, &path, &[site, ("x-forwarded-host", "www.example.org")]).await;
    assert_eq!(ok.cache(), "MISS");
    let hit = get_with(&s, &path, &[site]).await;
    assert_eq!(hit.cache(), "HIT");
    assert!(!hit.body.contains("evil"), "{}", hit.body);
}

/// A client reading a large uncacheable page at 1 byte/s does not hold the
/// upstream connection (a Django worker) for the days that would take:
/// after `--client-timeout` without taking data, the upstream is let go.
/// (The page is 200 MB: loopback's socket buffers grow to tens of MB, so a
/// 10 MB page would leave the origin whole, held or not.)
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_reader_does_not_pin_the_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &["--client-timeout", "1s"]).await;
    let addr: std::net::SocketAddr = s.proxy.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    // A small window, as a slow mobile client has: the page cannot sit in
    // this end's buffers.
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    let head = format!("GET /slow/?stream=200000000 HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    let mut byte = [0u8; 1];
    let mut cut = false;
    for _ in 0..20 {
        if conn.read(&mut byte).await.unwrap_or(0) == 0 {
            break;
        }
        // The scenario itself: a reader this slow, in real time (the
        // server's send timeout runs on its own clock).
        tokio::time::sleep(Duration::from_secs(1)).await;
        if o.counts.cut.load(SeqCst) == 1 {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "the upstream was still held after 20 s of a slow reader"
    );
}

/// A client that stops reading a cached page loses its connection after
/// `--client-timeout` (nginx's `send_timeout`), instead of holding it and
/// one of `--max-connections` for as long as it likes.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_stops_reading_a_hit_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = Origin::start().await;
    let (_d, s) = start_local(
        &o.url(),
        &["--client-timeout", "1s", "--max-entry-size", "64MiB"],
    )
    .await;
    // 48 MB: more than loopback's socket buffers hold between the two ends.
    let path = format!("/big/?{TTL}&size=48000000");
    let first = client().get(s.page(&path)).send().await.unwrap();
    assert_eq!(first.bytes().await.unwrap().len(), 48_000_000);
    stored(&s, 1).await;
    let addr: std::net::SocketAddr = s.proxy.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    // The answer has begun (on a busy machine the read of 48 MB may take
    // a while): from here on the client stalls.
    let mut got = vec![0u8; 64];
    let n = tokio::time::timeout(Duration::from_secs(20), conn.read(&mut got))
        .await
        .expect("no answer began")
        .unwrap();
    got.truncate(n);
    // The scenario itself: a client that takes nothing for four client
    // timeouts, in real time (the server runs on its own clock).
    tokio::time::sleep(Duration::from_secs(4)).await;
    let read = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "the connection was still open");
    assert!(
        got.len() < 48_000_000,
        "the whole page arrived after the client stalled: not cut"
    );
    assert!(
        String::from_utf8_lossy(&got[..64.min(got.len())]).contains("X-Cache")
            || got.starts_with(b"HTTP/1.1 200"),
        "not the hit's response"
    );
}

/// A client on a slow link that keeps reading a large cached page is not
/// taken for one that stopped: it gets the whole page, however long that
/// takes past `--client-timeout`.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_but_steady_reader_gets_the_whole_page() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let o = Origin::start().await;
    let (_d, s) = start_local(
        &o.url(),
        &["--client-timeout", "1s", "--max-entry-size", "64MiB"],
    )
    .await;
    let path = format!("/steady/?{TTL}&size=24000000");
    let first = client().get(s.page(&path)).send().await.unwrap();
    assert_eq!(first.bytes().await.unwrap().len(), 24_000_000);
    stored(&s, 1).await;
    let addr = s.proxy.trim_start_matches("http://").to_string();
    let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    conn.write_all(head.as_bytes()).await.unwrap();
    // About 8 MB/s: three seconds for the page.
    let (mut got, mut buf) = (0usize, vec![0u8; 256 << 10]);
    let started = Instant::now();
    loop {
        let n = conn.read(&mut buf).await.unwrap_or(0);
        if n == 0 || started.elapsed() > Duration::from_secs(30) {
            break;
        }
        got += n;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(got > 24_000_000, "cut after {got} bytes");
    assert!(
        started.elapsed() > Duration::from_secs(1),
        "read too fast to test anything"
    );
}

/// RFC 9111 §4.2.4: a page whose lifetime is `max-age` is not served after
/// it went stale, whatever `--grace` says; with `stale-while-revalidate`
/// it is, for that window; `--grace` is for `X-Bigcache-TTL` pages.
#[tokio::test(flavor = "multi_thread")]
async fn stale_pages_are_served_only_where_allowed() {
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &["--grace", "1h"]).await;
    let rfc = "/fr/?h=Cache-Control:max-age%3D10";
    let swr = "/fr/swr?h=Cache-Control:max-age%3D10,stale-while-revalidate%3D30";
    let ttl = "/fr/ttl?h=X-Bigcache-TTL:10s";
    for p in [rfc, swr, ttl] {
        get(&s, p).await;
    }
    stored(&s, 3).await;
    s.advance(Duration::from_secs(15));
    assert_eq!(
        get(&s, rfc).await.cache(),
        "MISS",
        "max-age stretched by --grace"
    );
    assert_eq!(get(&s, swr).await.cache(), "UPDATING");
    assert_eq!(get(&s, ttl).await.cache(), "UPDATING");
}

/// Targeted fields (RFC 9213): `CDN-Cache-Control` governs the shared cache
/// where `Cache-Control` speaks to browsers, `Bigcache-Cache-Control` over
/// both, and bigcache's own field never leaves it.
#[tokio::test(flavor = "multi_thread")]
async fn targeted_cache_control_fields() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let cdn = "/tg/cdn?h=Cache-Control:no-cache,max-age%3D0&h=CDN-Cache-Control:max-age%3D600";
    let own = "/tg/own?h=Cache-Control:max-age%3D600&h=Bigcache-Cache-Control:no-store";
    get(&s, cdn).await;
    let hit = get(&s, cdn).await;
    assert_eq!(hit.cache(), "HIT");
    assert_eq!(
        hit.header("cdn-cache-control"),
        Some("max-age=600"),
        "for the CDNs in front"
    );
    assert_eq!(hit.header("cache-control"), Some("no-cache,max-age=0"));
    let a = get(&s, own).await;
    assert_eq!(get(&s, own).await.cache(), "MISS");
    assert_eq!(
        a.header("bigcache-cache-control"),
        None,
        "bigcache's own field leaked"
    );
}

/// `Cache-Status` (RFC 9211) says what bigcache did, beside `X-Cache`, and
/// keeps what caches behind it said (theirs first).
#[tokio::test(flavor = "multi_thread")]
async fn cache_status_says_what_happened() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = "/cs/?h=Cache-Control:max-age%3D600&h=Cache-Status:origin-cache;%20hit";
    let miss = get(&s, path).await;
    let statuses = |r: &Reply| -> Vec<String> {
        r.headers
            .get_all("cache-status")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect()
    };
    let got = statuses(&miss);
    assert_eq!(got[0], "origin-cache; hit");
    let ttl = got[1]
        .strip_prefix("bigcache;fwd=uri-miss;fwd-status=200;stored;ttl=")
        .and_then(|t| t.parse::<u32>().ok());
    // 600 s less the milliseconds between storing and answering.
    assert!(matches!(ttl, Some(599..=600)), "{got:?}");
    // Until the write lands, a request joins the fill (`collapsed`).
    stored(&s, 1).await;
    // A hit copies the stored headers with slots for its own fields: each
    // is there once, bigcache's member still after the origin's.
    let hit = get(&s, path).await;
    let got = statuses(&hit);
    assert_eq!(
        (got.len(), got[0].as_str()),
        (2, "origin-cache; hit"),
        "{got:?}"
    );
    assert!(got[1].starts_with("bigcache;hit;ttl="), "{got:?}");
    assert_eq!(hit.headers.get_all("x-cache").iter().count(), 1);
    assert_eq!(hit.headers.get_all("age").iter().count(), 1);
    // A 304 (only the fields RFC 9110 §15.4.5 lists: not the origin's
    // member), a range, and a 416 (which describes no stored response)
    // from the stored page: each field once, bigcache's member last.
    let tagged = format!("/cs/tagged?{TTL}&etag=v1&h=Cache-Status:origin-cache;%20hit");
    get(&s, &tagged).await;
    stored(&s, 2).await;
    let answers = [
        (
            get_with(&s, &tagged, &[("if-none-match", "\"v1\"")]).await,
            304,
            1,
        ),
        (
            get_with(&s, &tagged, &[("range", "bytes=0-1")]).await,
            206,
            2,
        ),
        (
            get_with(&s, &tagged, &[("range", "bytes=999999-")]).await,
            416,
            1,
        ),
    ];
    for (r, status, members) in answers {
        let got = statuses(&r);
        assert_eq!(r.status, status);
        assert_eq!(got.len(), members, "{status}: {got:?}");
        assert!(
            got.last()
                .is_some_and(|m| m.starts_with("bigcache;hit;ttl=")),
            "{status}: {got:?}"
        );
        for once in ["x-cache", "age"] {
            assert_eq!(
                r.headers.get_all(once).iter().count(),
                1,
                "{status}: {once}"
            );
        }
    }
    let nolife = get(&s, "/cs/none").await;
    assert_eq!(
        statuses(&nolife),
        [r#"bigcache;fwd=uri-miss;fwd-status=200;detail="no_lifetime""#]
    );
}

/// `Range` requests are answered from the stored page: a miss fetches the
/// whole page (stored, then the range cut from it), a hit never asks the
/// upstream; 416 past the end, the whole page for several ranges or an
/// `If-Range` that names another version.
#[tokio::test(flavor = "multi_thread")]
async fn ranges_are_served_from_the_stored_page() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/rg/?{TTL}&fixed=1&size=1000&etag=v1");
    let full = get(&s, &path).await.body;
    assert_eq!(full.len(), 1000);
    let other = format!("/rg/miss?{TTL}&fixed=1&size=1000");
    // A miss with a Range: the upstream is asked for the whole page.
    let r = get_with(&s, &other, &[("range", "bytes=0-9")]).await;
    assert_eq!(
        (r.status, r.header("content-range")),
        (206, Some("bytes 0-9/1000"))
    );
    assert_eq!(r.body.len(), 10);
    assert_eq!(o.count(&other), 1);
    let again = get(&s, &other).await;
    assert_eq!((again.status, again.cache()), (200, "HIT"));
    assert!(again.body.starts_with(&r.body));

    let r = get_with(&s, &path, &[("range", "bytes=-5")]).await;
    assert_eq!((r.status, r.cache()), (206, "HIT"));
    assert_eq!(r.header("content-range"), Some("bytes 995-999/1000"));
    assert_eq!(r.body, full[995..]);
    let r = get_with(&s, &path, &[("range", "bytes=1000-")]).await;
    assert_eq!(
        (r.status, r.header("content-range")),
        (416, Some("bytes */1000"))
    );
    let r = get_with(&s, &path, &[("range", "bytes=0-1,5-6")]).await;
    assert_eq!((r.status, r.body.len()), (200, 1000));
    let r = get_with(&s, &path, &[("range", "bytes=0-1"), ("if-range", "\"v2\"")]).await;
    assert_eq!((r.status, r.body.len()), (200, 1000));
    let r = get_with(&s, &path, &[("range", "bytes=0-1"), ("if-range", "\"v1\"")]).await;
    assert_eq!((r.status, r.body.as_str()), (206, &full[..2]));
    assert_eq!(o.count(&path), 1, "a range of a stored page went upstream");
}

/// Browsers' many `Accept-Encoding` spellings share one copy per coding of
/// a page that varies on it (`--accept-encoding`, default gzip).
#[tokio::test(flavor = "multi_thread")]
async fn accept_encoding_spellings_share_a_variant() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    // Not text: kept as sent, so every spelling's body is byte for byte
    // the first one's (bigcache's own brotli is `tests/coding.rs`).
    let path = format!("/ae/?{TTL}&h=Vary:Accept-Encoding&h=Content-Type:application/octet-stream");
    let first = get_with(&s, &path, &[("accept-encoding", "gzip, deflate, br, zstd")]).await;
    assert_eq!(first.cache(), "MISS");
    for ae in ["gzip, deflate", "br, gzip", "x-gzip", "*"] {
        let r = get_with(&s, &path, &[("accept-encoding", ae)]).await;
        assert_eq!(
            (r.cache(), r.body.as_str()),
            ("HIT", first.body.as_str()),
            "{ae}"
        );
    }
    // No gzip: the identity copy, its own variant.
    let plain = get_with(&s, &path, &[("accept-encoding", "br")]).await;
    assert_eq!(plain.cache(), "MISS");
    assert_eq!(
        get(&s, &path).await.cache(),
        "HIT",
        "no header is identity too"
    );
    assert_eq!(o.count(&path), 2);
}

/// `GET /metrics` is Prometheus text that a parser reads, and after known
/// traffic each counter has exactly the value that traffic makes.
#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_exactly_what_happened() {
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &[]).await;
    let page = format!("/m/?{TTL}");
    get(&s, &page).await; // miss, stored
    stored(&s, 1).await;
    get(&s, &page).await; // hit
    get(&s, &page).await; // hit
    get(&s, "/m/private?h=Cache-Control:private").await; // miss: private
    send(s.page("/m/form"), Method::POST, &[]).await; // bypass: method
    // A page that may stand in for a failing Django, then Django failing.
    let sie = "/m/sie?h=Cache-Control:max-age%3D1,stale-if-error%3D600";
    get(&s, sie).await; // miss, stored
    stored(&s, 2).await;
    s.advance(Duration::from_millis(1100));
    o.counts.fail.store(true, SeqCst);
    assert_eq!(get(&s, sie).await.cache(), "STALE"); // upstream 500, stale served
    assert_eq!(get(&s, "/m/down").await.status, 500); // upstream 500, passed on
    o.counts.fail.store(false, SeqCst);
    let c = client();
    c.post(s.url("/cache/k"))
        .header("content-type", "application/json")
        .body(r#"{"value": 1}"#)
        .send()
        .await
        .unwrap();
    c.get(s.url("/cache/k")).send().await.unwrap();
    c.get(s.url("/cache/nope")).send().await.unwrap();
    // Purges: the page by path, then a prefix that holds nothing more.
    let purged = c
        .delete(s.url(&format!("/cache/{page}")))
        .send()
        .await
        .unwrap();
    assert_eq!(purged.status(), 200);
    c.delete(s.url("/prefix//m/nothing")).send().await.unwrap();
    let r = c.get(s.url("/metrics")).send().await.unwrap();
    assert_eq!(
        r.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = r.text().await.unwrap();
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("Prometheus text");
    let value = |name: &str, label: Option<(&str, &str)>| -> f64 {
        let found = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)));
        match found.map(|s| &s.value) {
            Some(prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v)) => *v,
            Some(prometheus_parse::Value::Untyped(v)) => *v,
            other => panic!("{name} {label:?}: {other:?}\n{text}"),
        }
    };
    let req = "bigcache_proxy_requests_total";
    assert_eq!(value(req, Some(("cache", "hit"))), 2.0);
    assert_eq!(value(req, Some(("cache", "miss"))), 4.0);
    assert_eq!(value(req, Some(("cache", "bypass"))), 1.0);
    assert_eq!(value(req, Some(("cache", "stale"))), 1.0);
    let nc = "bigcache_proxy_not_cached_total";
    assert_eq!(value(nc, Some(("reason", "private"))), 1.0);
    assert_eq!(value(nc, Some(("reason", "method"))), 1.0);
    assert_eq!(value(nc, Some(("reason", "no_lifetime"))), 0.0);
    assert_eq!(value("bigcache_upstream_requests_total", None), 6.0);
    let upstream_errors = "bigcache_upstream_errors_total";
    for kind in ["connect", "timeout", "broken"] {
        assert_eq!(value(upstream_errors, Some(("kind", kind))), 0.0, "{kind}");
    }
    assert_eq!(value(upstream_errors, Some(("kind", "5xx"))), 2.0);
    assert_eq!(
        value(nc, Some(("reason", "status"))),
        1.0,
        "the 500 passed on"
    );
    // Histograms: the count of each series (2 hits answered 200, 3 upstream
    // requests).
    let count = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with(&format!("{name}_count"))
                    && labels
                        .iter()
                        .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
            })
            .unwrap_or_else(|| panic!("no {name}_count {labels:?}\n{text}"));
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    let client = "bigcache_proxy_response_time_seconds";
    assert_eq!(count(client, &[("cache", "hit"), ("class", "2xx")]), 2.0);
    assert_eq!(count("bigcache_upstream_response_time_seconds", &[]), 6.0);
    assert_eq!(value("bigcache_proxy_collapsed_total", None), 0.0);
    let rest = "bigcache_rest_requests_total";
    let by = |endpoint: &str, class: &str| {
        scrape
            .samples
            .iter()
            .find(|s| {
                s.metric == rest
                    && s.labels.get("endpoint") == Some(endpoint)
                    && s.labels.get("class") == Some(class)
            })
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => -1.0,
            })
    };
    // POST, GET hit, GET miss (404), DELETE of the page: four on /cache/.
    assert_eq!(by("cache", "2xx"), Some(3.0));
    assert_eq!(by("cache", "4xx"), Some(1.0));
    assert_eq!(by("prefix", "2xx"), Some(1.0));
    let purges = "bigcache_purges_total";
    assert_eq!(value(purges, Some(("kind", "path"))), 1.0);
    assert_eq!(value(purges, Some(("kind", "prefix"))), 1.0);
    assert_eq!(value("bigcache_purged_entries_total", None), 1.0);
    assert!(value("bigcache_store_slow_commands_total", None) >= 0.0);
    assert!(
        value(
            "bigcache_store_direct_reads_total",
            Some(("outcome", "read"))
        ) >= 0.0
    );
    assert_eq!(
        value("bigcache_rest_reads_total", Some(("result", "hit"))),
        1.0
    );
    assert_eq!(
        value("bigcache_rest_reads_total", Some(("result", "miss"))),
        1.0
    );
    assert_eq!(value("bigcache_rest_writes_total", None), 1.0);
    assert!(value("bigcache_hot_tier_bytes", None) > 0.0);
    assert!(value("bigcache_disk_bytes", None) > 0.0);
    assert!(value("bigcache_process_resident_memory_bytes", None) > 1e6);
    assert!(value("bigcache_process_open_fds", None) > 3.0);
}

/// `/livez` and `/readyz`: ready once serving; from the moment a shutdown
/// begins `/readyz` says 503 (a load balancer stops sending) while the
/// requests in flight finish; systemd hears `READY=1` and `STOPPING=1`.
#[tokio::test(flavor = "multi_thread")]
async fn health_endpoints_and_systemd_notifications() {
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sock_path = dir.path().join("notify.sock");
    let sock = std::os::unix::net::UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let data = dir.path().join("data");
    let s = Server::start_with_env(
        &data,
        &["--upstream", &o.url()],
        &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())],
    );
    let mut buf = [0u8; 256];
    let n = sock.recv(&mut buf).expect("READY=1 from bigcache");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("READY=1"));
    let c = client();
    for path in ["/livez", "/readyz", "/healthz"] {
        assert_eq!(
            c.get(s.url(path)).send().await.unwrap().status(),
            200,
            "{path}"
        );
    }
    // A slow page in flight, then SIGTERM.
    let slow = tokio::spawn(send(s.page("/slow/?delay=2000"), Method::GET, &[]));
    o.reached("/slow/?delay=2000", 1).await;
    s.terminate();
    let n = sock.recv(&mut buf).expect("STOPPING=1 from bigcache");
    assert!(String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1"));
    let mut draining = false;
    for _ in 0..20 {
        match c.get(s.url("/readyz")).send().await {
            Ok(r) if r.status() == 503 => {
                draining = true;
                break;
            }
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
    assert!(draining, "/readyz never said 503 during the drain");
    assert_eq!(
        slow.await.unwrap().status,
        200,
        "the request in flight was cut"
    );
}

/// Lines in the access log at `path`, once it holds `n` (bounded wait).
async fn log_lines(path: &std::path::Path, n: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for _ in 0..250 {
        lines = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        if lines.len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    lines
}

/// The access log is created 0640 and, on SIGHUP, reopened: logrotate
/// moves it away and the next lines go to a new file.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_is_private_and_reopened_on_sighup() {
    use std::os::unix::fs::PermissionsExt;
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    // Left world-readable by an earlier release: narrowed.
    std::fs::write(&log, "").unwrap();
    std::fs::set_permissions(&log, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (_d, s) = start(&o.url(), &["--access-log", log.to_str().unwrap()]);
    get(&s, "/rot/1").await;
    assert_eq!(log_lines(&log, 1).await.len(), 1);
    let mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640);
    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    s.hangup();
    // Until the writer has reopened, lines may still reach the old file.
    let mut fresh = Vec::new();
    for i in 0..100 {
        get(&s, &format!("/rot/after/{i}")).await;
        fresh = log_lines(&log, 1).await;
        if !fresh.is_empty() {
            break;
        }
    }
    assert!(fresh.iter().any(|l| l.contains("/rot/after/")), "{fresh:?}");
    assert!(log_lines(&rotated, 1).await[0].contains("/rot/1"));
}

/// SIGHUP (logrotate, `systemctl reload`) never ends a server, access log
/// or not.
#[tokio::test(flavor = "multi_thread")]
async fn sighup_without_an_access_log_changes_nothing() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    s.hangup();
    s.hangup();
    let page = format!("/hup/?{TTL}");
    assert_eq!(get(&s, &page).await.cache(), "MISS");
    assert!(s.stop().success(), "a clean stop after SIGHUP");
}

/// `--access-log`: one line per proxied request, with the cache's decision,
/// and client text escaped so no client can forge a line.
#[tokio::test(flavor = "multi_thread")]
async fn the_access_log_has_a_line_per_request() {
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (_d, s) = start(&o.url(), &["--access-log", log.to_str().unwrap()]);
    let page = format!("/al/?{TTL}");
    get(&s, &page).await;
    stored(&s, 1).await;
    get_with(&s, &page, &[("user-agent", "evil\" cache=HIT \\")]).await;
    send(s.page("/al/form"), Method::POST, &[]).await;
    let mut lines = Vec::new();
    for _ in 0..100 {
        lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        if lines.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(lines.len(), 3, "{lines:?}");
    let target = page.clone();
    assert!(lines[0].starts_with("127.0.0.1 - - ["), "{}", lines[0]);
    assert!(
        lines[0].contains(&format!("\"GET {target} HTTP/1.1\" 200 ")),
        "{}",
        lines[0]
    );
    assert!(
        lines[0].contains(" cache=MISS reason=- ms="),
        "{}",
        lines[0]
    );
    assert!(lines[1].contains(" cache=HIT reason=- "), "{}", lines[1]);
    assert!(
        lines[1].contains(r#""evil\" cache=HIT \\""#),
        "{}",
        lines[1]
    );
    assert!(
        lines[2].contains("\"POST /al/form HTTP/1.1\""),
        "{}",
        lines[2]
    );
    assert!(
        lines[2].contains(" cache=BYPASS reason=method "),
        "{}",
        lines[2]
    );
    // A request just before SIGTERM still gets its line.
    get(&s, "/al/last").await;
    assert!(s.stop().success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        text.lines().count(),
        4,
        "the last line was lost at shutdown"
    );
    // Behind a trusted front, the line names the client the front saw.
    let log2 = dir.path().join("behind.log");
    let (_d2, s) = start(
        &o.url(),
        &[
            "--access-log",
            log2.to_str().unwrap(),
            "--trusted-proxy",
            "127.0.0.1/32",
        ],
    );
    let forwarded = [("x-forwarded-for", "198.51.100.1, 203.0.113.7")];
    get_with(&s, "/al/front", &forwarded).await;
    assert!(s.stop().success());
    let line = std::fs::read_to_string(&log2).unwrap();
    assert!(line.starts_with("203.0.113.7 - - ["), "{line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_bulk_purge_counts_each_item_and_checks_them_all_first() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let pages = [
        format!("/d/1/?{TTL}"),
        format!("/d/2/?{TTL}"),
        format!("/e/1/?{TTL}"),
        format!("/keep/?{TTL}"),
    ];
    for p in &pages {
        assert_eq!(get(&s, p).await.cache(), "MISS");
    }
    crate::util::stored(&s, 4).await;
    let bad = crate::util::post_json(
        &s,
        "/purge",
        serde_json::json!({"paths": [&pages[0]], "prefixes": ["/"]}),
    )
    .await;
    assert_eq!(bad.0, 400, "an empty prefix");
    let unknown =
        crate::util::post_json(&s, "/purge", serde_json::json!({"keys": ["dataset-1"]})).await;
    assert_eq!(unknown.0, 422);
    assert!(
        unknown.1["detail"].as_str().unwrap().contains("keys"),
        "{}",
        unknown.1
    );
    let many: Vec<String> = (0..1001).map(|i| format!("/x/{i}")).collect();
    assert_eq!(
        crate::util::post_json(&s, "/purge", serde_json::json!({ "paths": many }))
            .await
            .0,
        400
    );
    assert_eq!(
        get(&s, &pages[0]).await.cache(),
        "HIT",
        "a refused call purged something"
    );

    let (st, v) = crate::util::post_json(
        &s,
        "/purge",
        serde_json::json!({"paths": [&pages[0], "/never/cached/"], "prefixes": ["/d/", "/e/"]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["paths"][&pages[0]], 1);
    assert_eq!(v["paths"]["/never/cached/"], 0);
    assert_eq!(v["prefixes"]["/d/"], 1, "{v}");
    assert_eq!(v["prefixes"]["/e/"], 1, "{v}");
    assert_eq!(v["purged"], 3);
    for p in &pages[..3] {
        assert_eq!(get(&s, p).await.cache(), "MISS", "{p} was not purged");
    }
    assert_eq!(get(&s, &pages[3]).await.cache(), "HIT");
}
