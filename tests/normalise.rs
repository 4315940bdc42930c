//! Query and cookie normalisation (`--strip-query-params`, `--sort-query`,
//! `--ignore-cookies`) against a real upstream: what the key names is what
//! Django is asked for, and what Django is not sent cannot make a variant.

use crate::origin::Origin;
use crate::util::{Server, client, start_proxy as start};

const TTL: &str = "h=X-Bigcache-TTL:1h";

/// The `X-Cache` and body of a GET of `path`.
async fn get(s: &Server, path: &str) -> (String, String) {
    get_with(s, path, None).await
}

/// The same with a `Cookie` field.
async fn get_with(s: &Server, path: &str, cookie: Option<&str>) -> (String, String) {
    let mut req = client().get(s.page(path));
    if let Some(c) = cookie {
        req = req.header("cookie", c);
    }
    let r = req.send().await.unwrap();
    let cache = r
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    (cache, r.text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread")]
async fn tracking_parameters_name_no_other_page_and_never_reach_django() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let clean = format!("/q/?page=2&{TTL}");
    let (first, body) = get(&s, &format!("/q/?page=2&utm_source=news&{TTL}&gclid=abc")).await;
    assert_eq!(first, "MISS");
    assert!(body.contains(&format!("target={clean} ")), "{body}");
    for tracked in [
        format!("/q/?utm_campaign=spring&page=2&{TTL}"),
        format!("/q/?page=2&{TTL}&fbclid=x&utm_medium=mail"),
        format!("/q/?page=2&%75tm_source=x&{TTL}"),
        clean.clone(),
    ] {
        assert_eq!(
            get(&s, &tracked).await,
            ("HIT".to_string(), body.clone()),
            "{tracked}"
        );
    }
    assert_eq!(o.count(&clean), 1, "one render for every campaign's click");
    // A parameter Django reads is still its own page.
    let (other, _) = get(&s, &format!("/q/?page=3&utm_source=news&{TTL}")).await;
    assert_eq!(other, "MISS");
    assert_eq!(o.count(&format!("/q/?page=3&{TTL}")), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_purge_naming_tracking_parameters_reaches_the_page() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let page = format!("/p/?{TTL}");
    assert_eq!(get(&s, &page).await.0, "MISS");
    assert_eq!(get(&s, &page).await.0, "HIT");
    // As a link shared with its campaign parameters names it.
    let r = client()
        .delete(s.url(&format!("/cache//p/?utm_source=x&{TTL}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(get(&s, &page).await.0, "MISS");
    // An unsafe method on the tracked form invalidates the page too.
    assert_eq!(get(&s, &page).await.0, "HIT");
    let r = client()
        .post(s.page(&format!("/p/?{TTL}&gclid=1")))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    assert_eq!(get(&s, &page).await.0, "MISS");
}

#[tokio::test(flavor = "multi_thread")]
async fn sorting_makes_one_page_of_any_order() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--sort-query"]);
    let (first, body) = get(&s, &format!("/s/?{TTL}&b=2&a=1&utm_source=x")).await;
    assert_eq!(first, "MISS");
    let sorted = format!("/s/?a=1&b=2&{TTL}");
    assert!(body.contains(&format!("target={sorted} ")), "{body}");
    assert_eq!(get(&s, &format!("/s/?b=2&{TTL}&a=1")).await.0, "HIT");
    assert_eq!(get(&s, &sorted).await.0, "HIT");
    assert_eq!(o.count(&sorted), 1);
    // Values of one name keep their order: another page.
    assert_eq!(get(&s, &format!("/s/?t=2&t=1&{TTL}")).await.0, "MISS");
    assert_eq!(get(&s, &format!("/s/?t=1&t=2&{TTL}")).await.0, "MISS");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_list_every_parameter_is_part_of_the_page() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--strip-query-params="]);
    let tracked = format!("/n/?utm_source=x&{TTL}");
    assert_eq!(get(&s, &tracked).await.0, "MISS");
    assert_eq!(o.count(&tracked), 1, "sent as given");
    assert_eq!(get(&s, &format!("/n/?{TTL}")).await.0, "MISS");
}

#[tokio::test(flavor = "multi_thread")]
async fn analytics_cookies_share_one_copy_of_a_vary_cookie_page() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let page = format!("/c/?{TTL}&h=Vary:Cookie");
    let (first, body) = get_with(&s, &page, Some("_ga=GA1.1.1; _gid=GA1.1.2")).await;
    assert_eq!(first, "MISS");
    assert!(
        body.contains(" cookie=- "),
        "Django was sent no cookie: {body}"
    );
    let quick = crate::paths::quick_hits(&s);
    for visitor in [Some("_ga=GA1.1.9; _ga_ABC=GS1.1"), Some("_fbp=fb.1"), None] {
        assert_eq!(
            get_with(&s, &page, visitor).await,
            ("HIT".to_string(), body.clone()),
            "{visitor:?}"
        );
    }
    assert_eq!(
        crate::paths::quick_hits(&s),
        quick + 3,
        "the fast path keys the variant alike"
    );
    assert_eq!(o.count(&page), 1);
    // Another cookie is the visitor's own: not stored for anyone else.
    let (own, body) = get_with(&s, &page, Some("_ga=1; theme=dark")).await;
    assert_eq!(own, "MISS");
    assert!(body.contains(" cookie=theme=dark "), "{body}");
    assert_eq!(get_with(&s, &page, Some("theme=dark")).await.0, "MISS");
    // A session still bypasses, whatever else comes with it.
    assert_eq!(
        get_with(&s, &page, Some("_ga=1; sessionid=s")).await.0,
        "BYPASS"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_vary_cookie_copies_each_remaining_cookie_keys_its_own() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--cache-vary-cookie"]);
    let page = format!("/v/?{TTL}&h=Vary:Cookie");
    let (dark, dark_body) = get_with(&s, &page, Some("_ga=1; theme=dark")).await;
    assert_eq!(dark, "MISS");
    assert_eq!(
        get_with(&s, &page, Some("theme=dark; _gid=2")).await,
        ("HIT".to_string(), dark_body)
    );
    assert_eq!(
        get_with(&s, &page, Some("theme=light; _gid=2")).await.0,
        "MISS"
    );
    assert_eq!(
        get_with(&s, &page, Some("_gid=3")).await.0,
        "MISS",
        "no cookie is a variant too"
    );
    assert_eq!(get_with(&s, &page, None).await.0, "HIT");
}

#[tokio::test(flavor = "multi_thread")]
async fn without_the_cookie_list_analytics_cookies_are_cookies() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--ignore-cookies="]);
    let page = format!("/w/?{TTL}&h=Vary:Cookie");
    let (first, body) = get_with(&s, &page, Some("_ga=1")).await;
    assert_eq!(first, "MISS");
    assert!(body.contains(" cookie=_ga=1 "), "{body}");
    assert_eq!(
        get_with(&s, &page, Some("_ga=1")).await.0,
        "MISS",
        "not stored"
    );
}

/// A campaign's clicks as they arrive: every link with its own tracking
/// values, every visitor with their own analytics cookies, on a page that
/// varies by cookie (issue 33 counts 1,000). One render serves them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_campaigns_clicks_are_one_render() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let page = format!("/dataset/7/?{TTL}&h=Vary:Cookie");
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    let mut next = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut hits = 0;
    for i in 0..1000 {
        let target = match i % 3 {
            0 => format!(
                "/dataset/7/?utm_source=s{}&utm_medium=m&{TTL}&h=Vary:Cookie",
                next()
            ),
            1 => format!(
                "/dataset/7/?gclid={}&{TTL}&h=Vary:Cookie&fbclid={}",
                next(),
                next()
            ),
            _ => format!("/dataset/7/?{TTL}&h=Vary:Cookie&msclkid={}", next()),
        };
        let cookie = format!(
            "_ga=GA1.1.{}; _gid=GA1.1.{}; _fbp=fb.1.{}",
            next(),
            next(),
            next()
        );
        if get_with(&s, &target, Some(&cookie)).await.0 == "HIT" {
            hits += 1;
        }
    }
    assert_eq!(o.count(&page), 1, "one origin request");
    assert_eq!(hits, 999);
}

/// Django adds `Vary: Cookie` to any page that touches the session; the
/// connector's `X-Bigcache-Vary-Cookies` says which cookies the content was
/// made from. None: one copy for every anonymous visitor, whatever cookies
/// they carry; some: `Vary: Cookie` as sent.
#[tokio::test(flavor = "multi_thread")]
async fn the_connector_says_which_cookies_a_page_was_made_from() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let free = format!("/f/?{TTL}&h=Vary:Cookie&h=X-Bigcache-Vary-Cookies:");
    let r = client()
        .get(s.page(&free))
        .header("cookie", "csrftoken=abc; _ga=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-cache"], "MISS");
    assert!(
        r.headers().get("x-bigcache-vary-cookies").is_none(),
        "bigcache's own"
    );
    assert_eq!(
        r.headers()["vary"],
        "Cookie",
        "browsers still see Django's Vary"
    );
    for visitor in [Some("csrftoken=xyz"), Some("theme=dark; _gid=2"), None] {
        let (cache, _) = get_with(&s, &free, visitor).await;
        assert_eq!(cache, "HIT", "{visitor:?}");
    }
    assert_eq!(get_with(&s, &free, Some("sessionid=s")).await.0, "BYPASS");
    // A page that embeds the visitor's CSRF token is theirs alone.
    let csrf = format!("/t/?{TTL}&h=Vary:Cookie&h=X-Bigcache-Vary-Cookies:csrftoken");
    assert_eq!(get_with(&s, &csrf, Some("csrftoken=abc")).await.0, "MISS");
    assert_eq!(get_with(&s, &csrf, Some("csrftoken=xyz")).await.0, "MISS");
    assert_eq!(
        get_with(&s, &csrf, None).await.0,
        "MISS",
        "stored for no cookie"
    );
    assert_eq!(get_with(&s, &csrf, Some("_ga=1")).await.0, "HIT");
}
