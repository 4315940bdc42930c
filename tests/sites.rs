//! Pages are kept per site (scheme and host), as Django renders them: the
//! real binary, a real origin whose body names the `Host` it rendered for.

use std::time::Duration;

use reqwest::Method;

use crate::origin::Origin;
use crate::util::{Server, client, start};

const TTL: &str = "h=X-Bigcache-TTL:1h";

/// (X-Cache, body) of a GET for `path` with `headers`.
async fn get(s: &Server, path: &str, headers: &[(&str, &str)]) -> (String, String) {
    let mut req = client().request(Method::GET, s.page(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let cache = r.headers()["x-cache"].to_str().unwrap().to_string();
    (cache, r.text().await.unwrap())
}

/// Waits (bounded) for `path` to be a hit for `host`.
async fn hit(s: &Server, path: &str, host: &str) -> String {
    for _ in 0..100 {
        let (cache, body) = get(s, path, &[("host", host)]).await;
        if cache == "HIT" {
            return body;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{path} never a hit for {host}");
}

/// The README's first run: `localhost` and `127.0.0.1` are both served,
/// and Django renders each page's links for the one asked. Neither gets
/// the other's copy; an alias shares; a purge of the path reaches all.
#[tokio::test(flavor = "multi_thread")]
async fn each_host_keeps_its_own_pages_and_a_purge_reaches_every_copy() {
    let o = Origin::start().await;
    let (_d, s) = start(&[
        "--upstream",
        &o.url(),
        "--host",
        "www.example.org,static.example.org",
        "--host-alias",
        "example.org=www.example.org",
    ]);
    let page = format!("/site/1?{TTL}");
    let (first, www) = get(&s, &page, &[("host", "www.example.org")]).await;
    assert_eq!(first, "MISS");
    assert!(www.contains("host=www.example.org"), "{www}");
    let (cache, other) = get(&s, &page, &[("host", "static.example.org")]).await;
    assert_eq!(cache, "MISS", "another host's page was served");
    assert!(other.contains("host=static.example.org"), "{other}");
    assert!(
        hit(&s, &page, "www.example.org")
            .await
            .contains("host=www.example.org")
    );
    assert!(
        hit(&s, &page, "static.example.org")
            .await
            .contains("host=static.example.org")
    );
    // The alias shares www's page.
    let alias = hit(&s, &page, "example.org").await;
    assert!(alias.contains("host=www.example.org"), "{alias}");
    assert_eq!(o.count(&page), 2);

    let r = client()
        .delete(s.url(&format!("/cache/{page}")))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    for host in ["www.example.org", "static.example.org"] {
        let (cache, _) = get(&s, &page, &[("host", host)]).await;
        assert_eq!(cache, "MISS", "{host}'s copy outlived the purge");
    }
    assert_eq!(o.count(&page), 4);
}

/// Behind a trusted front, the scheme it reports is part of the site: a
/// page rendered for http is not served over https.
#[tokio::test(flavor = "multi_thread")]
async fn the_scheme_a_trusted_front_reports_keeps_pages_apart() {
    let o = Origin::start().await;
    let (_d, s) = start(&[
        "--upstream",
        &o.url(),
        "--host",
        "www.example.org",
        "--trusted-proxy",
        "127.0.0.1/32",
    ]);
    let page = format!("/scheme/1?{TTL}");
    let https = [("host", "www.example.org"), ("x-forwarded-proto", "https")];
    let http = [("host", "www.example.org"), ("x-forwarded-proto", "http")];
    let (cache, body) = get(&s, &page, &http).await;
    assert_eq!(cache, "MISS");
    assert!(body.contains("xfproto=http "), "{body}");
    let (cache, body) = get(&s, &page, &https).await;
    assert_eq!(cache, "MISS", "the http page was served over https");
    assert!(body.contains("xfproto=https "), "{body}");
    assert_eq!(o.count(&page), 2);
}

/// After a restart with another site, a page stored for the old one is
/// never served (the first start recorded the site whose pages keep bare
/// keys; the new one keys its own).
#[tokio::test(flavor = "multi_thread")]
async fn a_page_stored_for_a_site_no_longer_served_is_never_served() {
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let page = format!("/moved/1?{TTL}");
    {
        let s = Server::start_in(dir.path(), &["--upstream", &o.url()]);
        let (cache, _) = get(&s, &page, &[("host", "localhost")]).await;
        assert_eq!(cache, "MISS");
        hit(&s, &page, "localhost").await;
        s.stop();
    }
    let s = Server::start_in(
        dir.path(),
        &[
            "--upstream",
            &o.url(),
            "--host",
            "www.example.org",
            "--trusted-proxy",
            "127.0.0.1/32",
        ],
    );
    let https = [("host", "www.example.org"), ("x-forwarded-proto", "https")];
    let (cache, body) = get(&s, &page, &https).await;
    assert_eq!(
        cache, "MISS",
        "a page rendered for http://localhost was served"
    );
    assert!(body.contains("host=www.example.org"), "{body}");
}
