//! Tags (surrogate keys) and soft purges, against the real binary (or its
//! server in this process, for tests that move the clock) and a real
//! origin: what is indexed, what a tag purge reaches, that the index
//! follows the pages it points to, and what a soft-purged page serves.

use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use reqwest::StatusCode;

use crate::origin::Origin;
use crate::util::{
    Server, client, get_json, post_json, start_local_proxy as start_local, start_proxy as start,
    stored,
};

const TTL: &str = "h=X-Bigcache-TTL:1h";

struct Reply {
    cache: String,
    body: String,
    headers: reqwest::header::HeaderMap,
}

async fn get_with(s: &Server, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = client().get(s.page(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    assert!(
        r.status().is_success(),
        "GET {path}: {}",
        r.status().as_u16()
    );
    let headers = r.headers().clone();
    let cache = headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    Reply {
        cache,
        body: r.text().await.unwrap(),
        headers,
    }
}

async fn get(s: &Server, path: &str) -> Reply {
    get_with(s, path, &[]).await
}

/// `DELETE /tag/<tag>`, soft or not; (status, JSON answer).
async fn purge_tag(s: &Server, tag: &str, soft: bool) -> (StatusCode, serde_json::Value) {
    let mut req = client().delete(s.url(&format!("/tag/{tag}")));
    if soft {
        req = req.header("X-Bigcache-Purge", "soft");
    }
    let r = req.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

/// (live entries, tag-index rows).
async fn counts(s: &Server) -> (u64, u64) {
    let (st, v) = get_json(s, "/stat/count").await;
    assert_eq!(st, 200);
    (
        v["count"].as_u64().unwrap(),
        v["tag_rows"].as_u64().unwrap(),
    )
}

/// Waits (bounded) until the tag index holds `rows` rows: pages are
/// written after their requester was answered.
async fn tag_rows_reach(s: &Server, rows: u64) {
    for _ in 0..500 {
        if counts(s).await.1 == rows {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!(
        "the tag index never held {rows} rows: {:?}",
        counts(s).await
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tags_from_both_headers_and_every_line_purge_every_variant_and_only_theirs() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    // Two Surrogate-Key lines, spaces and commas, and xkey beside them.
    let a = format!("/a?{TTL}&h=Surrogate-Key:ds-1%20list&h=Surrogate-Key:feed,ds-1&h=xkey:home");
    let b = format!("/b?{TTL}&h=xkey:ds-2,%20list");
    let untagged = format!("/c?{TTL}");
    // One page, two variants, both tagged.
    let v = format!("/v?{TTL}&h=Vary:Accept-Language&h=Surrogate-Key:ds-3");

    let first = get(&s, &a).await;
    assert_eq!(first.cache, "MISS");
    assert!(
        first.headers.get("surrogate-key").is_none() && first.headers.get("xkey").is_none(),
        "tag headers leave bigcache only with --keep-tag-headers: {:?}",
        first.headers
    );
    get(&s, &b).await;
    get(&s, &untagged).await;
    get_with(&s, &v, &[("accept-language", "en")]).await;
    get_with(&s, &v, &[("accept-language", "de")]).await;
    // a: ds-1, list, feed, home; b: ds-2, list; each variant: ds-3.
    tag_rows_reach(&s, 8).await;
    let hit = get(&s, &a).await;
    assert_eq!(hit.cache, "HIT");
    assert!(hit.headers.get("surrogate-key").is_none());

    let (st, answer) = purge_tag(&s, "home", false).await;
    assert_eq!(st, 200);
    assert_eq!(answer["count"], 1, "{answer}");
    assert_eq!(get(&s, &a).await.cache, "MISS");
    assert_eq!(get(&s, &b).await.cache, "HIT");
    assert_eq!(get(&s, &untagged).await.cache, "HIT");
    tag_rows_reach(&s, 8).await;

    let (_, answer) = purge_tag(&s, "list", false).await;
    assert_eq!(answer["count"], 2, "a and b: {answer}");
    let (_, answer) = purge_tag(&s, "ds-3", false).await;
    assert_eq!(answer["count"], 2, "both variants: {answer}");
    tag_rows_reach(&s, 0).await;
    for lang in ["en", "de"] {
        let r = get_with(&s, &v, &[("accept-language", lang)]).await;
        assert_eq!(r.cache, "MISS", "{lang}");
    }
    assert_eq!(get(&s, &untagged).await.cache, "HIT");
    assert_eq!(o.count(&a), 2);
    assert_eq!(o.count(&untagged), 1);
    let (_, answer) = purge_tag(&s, "nothing-has-this", false).await;
    assert_eq!(answer["count"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn kept_tag_headers_reach_the_client_and_the_tags_still_purge() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--keep-tag-headers"]);
    let a = format!("/a?{TTL}&h=Surrogate-Key:ds-1%20list&h=xkey:home");
    get(&s, &a).await;
    let hit = get(&s, &a).await;
    assert_eq!(hit.cache, "HIT");
    assert_eq!(hit.headers["surrogate-key"], "ds-1 list");
    assert_eq!(hit.headers["xkey"], "home");
    let (_, answer) = purge_tag(&s, "home", false).await;
    assert_eq!(answer["count"], 1);
    assert_eq!(get(&s, &a).await.cache, "MISS");
}

/// The index holds one row per tag of each live page: a replaced page's
/// old tags, an expired page's and a purged page's leave with them.
#[tokio::test(flavor = "multi_thread")]
async fn the_tag_index_follows_replace_expiry_and_every_purge() {
    let o = Origin::start().await;
    let (_d, s) = start_local(
        &o.url(),
        &[
            "--sweep-interval",
            "1s",
            "--grace",
            "0s",
            "--stale-if-error",
            "0s",
        ],
    )
    .await;
    // Tag `v-<n>` changes with every fetch; `all` stays.
    let page = "/r?h=X-Bigcache-TTL:1m&tagn=v&h=xkey:all";
    get(&s, page).await;
    tag_rows_reach(&s, 2).await;
    // Replaced (a purge of its old tag would find nothing now).
    s.advance(Duration::from_secs(61));
    assert_eq!(get(&s, page).await.cache, "MISS");
    tag_rows_reach(&s, 2).await;
    assert_eq!(purge_tag(&s, "v-1", false).await.1["count"], 0);
    assert_eq!(get(&s, page).await.cache, "HIT");
    // Expired and swept, never read again.
    s.advance(Duration::from_secs(61));
    for _ in 0..500 {
        if counts(&s).await == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counts(&s).await, (0, 0), "the sweeper took the rows too");
    // Purged by path, then by prefix.
    get(&s, page).await;
    tag_rows_reach(&s, 2).await;
    let r = client()
        .delete(s.url(&format!("/cache{page}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tag_rows_reach(&s, 0).await;
    get(&s, page).await;
    tag_rows_reach(&s, 2).await;
    let r = client().delete(s.url("/prefix/r")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    tag_rows_reach(&s, 0).await;
    // A soft purge keeps the page, so its rows.
    get(&s, page).await;
    tag_rows_reach(&s, 2).await;
    assert_eq!(purge_tag(&s, "all", true).await.1["count"], 1);
    assert_eq!(counts(&s).await, (1, 2));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_tag_purge_during_the_fetch_wins() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let slow = format!("/slow?{TTL}&h=xkey:ds-9&delay=600");
    let fetch = {
        let url = s.page(&slow);
        tokio::spawn(async move { client().get(url).send().await.unwrap().status() })
    };
    o.reached(&slow, 1).await;
    let (_, answer) = purge_tag(&s, "ds-9", false).await;
    assert_eq!(answer["count"], 0, "nothing stored yet");
    // Its requester is answered once the store has decided (here: not to
    // store it).
    assert_eq!(fetch.await.unwrap(), 200, "served to its requester");
    // Not stored: the next request fetches again.
    assert_eq!(counts(&s).await, (0, 0));
    assert_eq!(get(&s, &slow).await.cache, "MISS");
    assert_eq!(o.count(&slow), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purge_serves_the_stale_copy_while_one_request_refreshes_it() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let page = format!("/s?{TTL}&h=Surrogate-Key:ds-5&delay=3000");
    assert_eq!(get(&s, &page).await.cache, "MISS");
    assert_eq!(get(&s, &page).await.cache, "HIT");
    let (st, answer) = purge_tag(&s, "ds-5", true).await;
    assert_eq!(st, 200);
    assert_eq!(answer["count"], 1, "{answer}");

    // 50 clients at once: all get the old copy at once, one request
    // refreshes it.
    let mut all = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let url = s.page(&page);
        all.spawn(async move {
            let r = client().get(url).send().await.unwrap();
            let cache = r.headers()["x-cache"].to_str().unwrap().to_string();
            (cache, r.text().await.unwrap())
        });
    }
    while let Some(r) = all.join_next().await {
        let (cache, body) = r.unwrap();
        assert_eq!(cache, "UPDATING");
        assert!(body.contains("n=1 "), "the old copy: {body}");
    }
    // All answered while the one refresh still waits on the origin (3 s):
    // none of them waited for it.
    o.reached(&page, 2).await;
    assert_eq!(o.in_flight(), 1, "the refresh is no longer in flight");
    let mut refreshed = None;
    for _ in 0..100 {
        let r = get(&s, &page).await;
        if r.cache == "HIT" {
            refreshed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refreshed = refreshed.expect("refreshed");
    assert!(refreshed.body.contains("n=2 "), "{}", refreshed.body);
    assert_eq!(o.count(&page), 2, "one refresh for all of them");
}

/// A soft-purged page that nobody asks for stays stale, across a restart.
#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purged_page_is_never_fresh_again_even_after_a_restart() {
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = o.url();
    let page = format!("/keep?{TTL}&h=xkey:ds-6");
    // One site across restarts (the proxy's port changes between runs).
    let host = [("host", "localhost")];
    {
        let s = Server::start_in(dir.path(), &["--upstream", &upstream]);
        get_with(&s, &page, &host).await;
        stored(&s, 1).await;
        let r = client()
            .delete(s.url(&format!("/cache{page}")))
            .header("X-Bigcache-Purge", "soft")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(s.stop().success());
    }
    o.counts.fail.store(true, SeqCst);
    let s = Server::start_in(dir.path(), &["--upstream", &upstream]);
    let r = get_with(&s, &page, &host).await;
    assert_eq!(r.cache, "UPDATING", "stale, not HIT");
    assert!(r.body.contains("n=1 "));
}

/// With the origin down, a soft-purged page stands in for the stale-if-
/// error window after the purge, and not after it.
#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purged_page_with_the_origin_down_is_served_within_stale_if_error() {
    let o = Origin::start().await;
    let (_d, s) = start_local(&o.url(), &["--grace", "0s", "--stale-if-error", "10m"]).await;
    let page = format!("/down?{TTL}&h=xkey:ds-7");
    get(&s, &page).await;
    stored(&s, 1).await;
    assert_eq!(purge_tag(&s, "ds-7", true).await.1["count"], 1);
    o.counts.fail.store(true, SeqCst);
    let r = get(&s, &page).await;
    assert!(r.cache == "UPDATING" || r.cache == "STALE", "{}", r.cache);
    assert!(r.body.contains("n=1 "));
    s.advance(Duration::from_secs(9 * 60));
    let r = get(&s, &page).await;
    assert!(r.cache == "UPDATING" || r.cache == "STALE", "{}", r.cache);
    s.advance(Duration::from_secs(2 * 60));
    let r = client().get(s.page(&page)).send().await.unwrap();
    assert_eq!(r.status(), 500, "past the window the origin's error shows");
}

#[tokio::test(flavor = "multi_thread")]
async fn bulk_purges_count_each_item_and_limits_are_clear_errors() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    for i in 0..3 {
        get(&s, &format!("/ds/{i}?{TTL}&h=xkey:ds-{i}%20every")).await;
    }
    let plain = format!("/plain?{TTL}");
    get(&s, &plain).await;
    stored(&s, 4).await;
    let (st, v) = post_json(
        &s,
        "/purge",
        serde_json::json!({"tags": ["ds-0", "every"], "paths": [plain], "soft": true}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["tags"]["ds-0"], 1);
    assert_eq!(
        v["tags"]["every"], 3,
        "ds-0 counts again: it is still there, stale"
    );
    assert_eq!(v["paths"][&plain], 1);
    assert_eq!(v["purged"], 5);
    // Soft: all four are still there, served stale.
    assert_eq!(counts(&s).await.0, 4);

    // Limits: each a 400 naming the problem, and nothing purged.
    let long = "x".repeat(257);
    let (st, v) = purge_tag(&s, &long, false).await;
    assert_eq!(st, 400);
    assert!(
        v["detail"].as_str().unwrap().contains("limit is 256"),
        "{v}"
    );
    let (st, v) = purge_tag(&s, "caf%C3%A9", false).await;
    assert_eq!(st, 400, "{v}");
    let (st, v) = post_json(&s, "/purge", serde_json::json!({"tags": ["a b"]})).await;
    assert_eq!(st, 400);
    assert!(
        v["detail"].as_str().unwrap().contains("visible ASCII"),
        "{v}"
    );
    let r = client()
        .delete(s.url("/tag/every"))
        .header("X-Bigcache-Purge", "later")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(counts(&s).await.0, 4, "nothing purged by a refused call");

    // A response over the tag limits is served but not stored.
    let many: Vec<String> = (0..129).map(|i| format!("t{i}")).collect();
    let over = format!("/over?{TTL}&h=Surrogate-Key:{}", many.join("%20"));
    assert_eq!(get(&s, &over).await.cache, "MISS");
    let r = get(&s, &over).await;
    assert_eq!(r.cache, "MISS");
    assert!(r.headers.get("surrogate-key").is_none());
    assert_eq!(o.count(&over), 2);
}

/// Pages and their tag rows are one LevelDB batch: a kill -9 in the middle
/// of writing leaves every stored page findable by its tags, and no row
/// without its page.
#[tokio::test(flavor = "multi_thread")]
async fn a_kill_9_while_storing_leaves_no_orphan_rows_or_untagged_pages() {
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let upstream = o.url();
    let s = Server::start_in(dir.path(), &["--upstream", &upstream]);
    let mut all = tokio::task::JoinSet::new();
    for i in 0..300 {
        let url = s.page(&format!("/k/{i}?{TTL}&h=xkey:every%20k-{i}&size=3000"));
        all.spawn(async move { client().get(url).send().await.map(|r| r.status()) });
    }
    // Partway through the writes.
    for _ in 0..500 {
        let (_, v) = get_json(&s, "/stat/count").await;
        if v["count"].as_u64() >= Some(100) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    s.kill9_now();
    while all.join_next().await.is_some() {}
    drop(s);
    let s = Server::start_in(dir.path(), &["--upstream", &upstream]);
    let (pages, rows) = counts(&s).await;
    assert!(pages >= 100, "{pages} pages survived");
    assert_eq!(rows, 2 * pages, "two rows per page, no more, no fewer");
    let (_, v) = purge_tag(&s, "every", false).await;
    assert_eq!(v["count"].as_u64(), Some(pages));
    assert_eq!(counts(&s).await, (0, 0));
}

/// `soft, warm`: the marked pages are refreshed at once, every variant,
/// at most `--rewarm-concurrency` at a time, and served fresh afterwards
/// without their visitors waiting.
#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purge_with_warm_refreshes_every_page_within_the_bound() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--rewarm-concurrency", "3"]);
    let pages: Vec<String> = (0..9)
        .map(|i| format!("/w/{i}?{TTL}&h=xkey:ds-8&delay=150"))
        .collect();
    for p in &pages {
        get(&s, p).await;
    }
    let varying = format!("/w/v?{TTL}&h=xkey:ds-8&h=Vary:Accept-Language");
    for lang in ["en", "de"] {
        get_with(&s, &varying, &[("accept-language", lang)]).await;
    }
    tag_rows_reach(&s, 11).await;
    assert_eq!(o.counts.max_in_flight.load(SeqCst), 1);

    let r = client()
        .delete(s.url("/tag/ds-8"))
        .header("X-Bigcache-Purge", "soft, warm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["count"].as_u64(), v["warming"].as_u64()),
        (Some(11), Some(11))
    );
    // Every page fetched a second time, by the re-warmer alone.
    for _ in 0..300 {
        if pages.iter().all(|p| o.count(p) == 2) && o.count(&varying) == 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in &pages {
        assert_eq!(o.count(p), 2, "{p}");
    }
    assert_eq!(o.count(&varying), 4, "both variants");
    let most = o.counts.max_in_flight.load(SeqCst);
    assert!((2..=3).contains(&most), "{most} at once, bound 3");
    // Fresh now (once the last refresh, begun above, has been answered
    // and written): hits, the new copies, no more origin requests.
    for _ in 0..500 {
        if o.in_flight() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for p in &pages {
        let mut r = get(&s, p).await;
        for _ in 0..500 {
            if r.cache == "HIT" {
                break;
            }
            // Its refresh answered, its write still landing.
            tokio::time::sleep(Duration::from_millis(10)).await;
            r = get(&s, p).await;
        }
        assert_eq!(r.cache, "HIT", "{p}");
        assert!(r.body.contains("n=2 "));
    }
    for lang in ["en", "de"] {
        let r = get_with(&s, &varying, &[("accept-language", lang)]).await;
        assert_eq!(r.cache, "HIT");
        assert!(
            r.body.contains(&format!("accept-language={lang}")),
            "{}",
            r.body
        );
    }
    assert_eq!(o.count(&varying), 4);

    // `warm` only with `soft`.
    for mode in ["warm", "hard, warm", "soft, hard"] {
        let r = client()
            .delete(s.url("/tag/ds-8"))
            .header("X-Bigcache-Purge", mode)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{mode}");
    }
    let (st, _) = post_json(
        &s,
        "/purge",
        serde_json::json!({"tags": ["ds-8"], "warm": true}),
    )
    .await;
    assert_eq!(st, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_index_a_page_may_take_is_bounded_and_tag_urls_are_exact() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    // 60 tags on a 1,500-byte key: 90 KB of index rows for one page.
    let tags: Vec<String> = (0..60).map(|i| format!("t{i}")).collect();
    let long = format!(
        "/long?{TTL}&h=Surrogate-Key:{}&pad={}",
        tags.join("%20"),
        "x".repeat(1500)
    );
    assert_eq!(get(&s, &long).await.cache, "MISS");
    assert_eq!(get(&s, &long).await.cache, "MISS", "not stored");
    // The same tags on a short key are fine.
    let short = format!("/short?{TTL}&h=Surrogate-Key:{}", tags.join("%20"));
    get(&s, &short).await;
    stored(&s, 1).await;
    assert_eq!(get(&s, &short).await.cache, "HIT");

    for (path, what) in [
        ("/tag/t1?x", "a query"),
        ("/tag/", "no tag"),
        ("/tag", "no tag"),
    ] {
        let r = client().delete(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 400, "{what}");
    }
    assert_eq!(get(&s, &short).await.cache, "HIT", "nothing purged");
    let (_, v) = purge_tag(&s, "t1%3Fx", false).await;
    assert_eq!(v["count"], 0, "tag `t1?x` is not `t1`");
    assert_eq!(purge_tag(&s, "t1", false).await.1["count"], 1);
}

/// A soft-purged page whose refresh answers 403 (no longer public) is dropped,
/// not served stale for its whole window.
#[tokio::test(flavor = "multi_thread")]
async fn a_soft_purged_page_that_is_gone_upstream_is_dropped() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    // Django's own 404 carries no lifetime: not cacheable.
    let page = "/gone?h=Cache-Control:max-age%3D3600&h=xkey:ds-11";
    get(&s, page).await;
    stored(&s, 1).await;
    assert_eq!(purge_tag(&s, "ds-11", true).await.1["count"], 1);
    // The origin answers this request 403 (a header it reads
    // decides): not storable without bigcache's TTL header.
    let r = get_with(&s, page, &[("x-test-status", "403")]).await;
    assert_eq!(r.cache, "UPDATING");
    // The refresh runs in the background: up to 10 s on a loaded machine
    // (2 s was not enough beside a parallel build).
    for _ in 0..1000 {
        if counts(&s).await.0 == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(counts(&s).await, (0, 0), "the old copy went");
}

/// Behind a trusted front, re-warming needs `--site-url`: the scheme the
/// pages are rendered for cannot be guessed. The purge is done all the
/// same (it was refused whole, leaving the page fresh for its lifetime),
/// and the answer says the warm part did not run.
#[tokio::test(flavor = "multi_thread")]
async fn warm_behind_a_trusted_front_needs_the_site_url() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--trusted-proxy", "127.0.0.1/32"]);
    let page = format!("/nw/1?{TTL}&h=xkey:ds-1");
    get(&s, &page).await;
    tag_rows_reach(&s, 1).await;
    let r = client()
        .delete(s.url("/tag/ds-1"))
        .header("X-Bigcache-Purge", "soft, warm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (v["count"].as_u64(), v["warming"].as_u64()),
        (Some(1), Some(0)),
        "{v}"
    );
    assert!(
        v["warm_error"].as_str().unwrap().contains("--site-url"),
        "{v}"
    );
    let after = get(&s, &page).await;
    assert_ne!(after.cache, "HIT", "still fresh after the purge");
    let (_d2, s2) = start(
        &o.url(),
        &[
            "--trusted-proxy",
            "127.0.0.1/32",
            "--site-url",
            "https://localhost",
        ],
    );
    let r = client()
        .delete(s2.url("/tag/ds-1"))
        .header("X-Bigcache-Purge", "soft, warm")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
