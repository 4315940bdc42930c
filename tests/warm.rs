//! `bigcache warm`: the real binary, a real proxy in front of a real origin.

use std::process::Command;

use crate::origin::Origin;
use crate::util::{BIN, Server};

/// Runs `bigcache warm`, off the test's runtime thread (the origin serves
/// on it meanwhile).
async fn warm(args: &[&str]) -> (bool, String, String) {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .arg("warm")
            .args(&args)
            .output()
            .expect("run bigcache warm")
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn warming_a_sitemap_index_fetches_each_page_once_within_its_bound() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Read from Django directly, as the README shows: its URLs name
    // Django's own address, and the pages are warmed for the proxy's.
    let index = format!("{}/sitemap-index.xml?parts=5&pages=100", origin.url());
    let s = Server::start_in(dir.path(), &["--upstream", &origin.url()]);
    let (ok, out, err) = warm(&[&index, "--proxy", &s.proxy, "--concurrency", "4"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("500 of 500 pages") && out.contains("500 warmed, 0 already fresh"),
        "{out}"
    );
    for i in 0..500 {
        let target = format!("/p/{i}?h=X-Bigcache-TTL:1h&delay=20");
        assert_eq!(
            origin.count(&target),
            1,
            "{target} fetched {} times",
            origin.count(&target)
        );
    }
    let most = origin
        .counts
        .max_in_flight
        .load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        (2..=4).contains(&most),
        "{most} requests at once at the origin, the bound is 4"
    );

    // Again: every page is fresh, Django is asked nothing.
    let (ok, out, _) = warm(&[&index, "--proxy", &s.proxy]).await;
    assert!(ok && out.contains("0 warmed, 500 already fresh"), "{out}");
    assert!((0..500).all(|i| origin.count(&format!("/p/{i}?h=X-Bigcache-TTL:1h&delay=20")) == 1));
}

#[tokio::test]
async fn warming_a_file_of_paths_paces_and_reports() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--upstream", &origin.url()]);
    let list = dir.path().join("paths.txt");
    let mut text = String::from("# pages to warm\n");
    for i in 0..10 {
        text.push_str(&format!("/q/{i}?h=X-Bigcache-TTL:1h\n"));
    }
    text.push_str("/private?h=Cache-Control:private\n");
    std::fs::write(&list, text).unwrap();
    let started = std::time::Instant::now();
    let (ok, out, err) = warm(&[list.to_str().unwrap(), "--proxy", &s.proxy, "--rate", "20"]).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("10 warmed, 0 already fresh, 1 not cacheable, 0 failed"),
        "{out}"
    );
    // 11 starts at 20 per second: at least half a second.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(450),
        "--rate was not kept"
    );

    let (ok, out, _) = warm(&["/nonexistent/sitemap.xml", "--proxy", &s.proxy]).await;
    assert!(!ok && out.is_empty());
    let (ok, _, err) = warm(&[list.to_str().unwrap(), "--proxy", "http://127.0.0.1:9"]).await;
    assert!(!ok, "a proxy that is down must fail the run: {err}");
}

#[tokio::test]
async fn ctrl_c_stops_after_the_requests_in_flight_and_says_what_was_done() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--upstream", &origin.url()]);
    let list = dir.path().join("slow.txt");
    let text: String = (0..40)
        .map(|i| format!("/slow/{i}?h=X-Bigcache-TTL:1h&delay=300\n"))
        .collect();
    std::fs::write(&list, text).unwrap();
    let child = Command::new(BIN)
        .args([
            "warm",
            list.to_str().unwrap(),
            "--proxy",
            &s.proxy,
            "--concurrency",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Stop once pages are in flight (both of the first two asked).
    origin
        .reached("/slow/0?h=X-Bigcache-TTL:1h&delay=300", 1)
        .await;
    origin
        .reached("/slow/1?h=X-Bigcache-TTL:1h&delay=300", 1)
        .await;
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(130), "{stdout}");
    let done: u64 = stdout
        .strip_prefix("stopped: ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no summary: {stdout}"));
    assert!((2..40).contains(&done), "{stdout}");
    // Every page it counts was fetched whole; none was left half-asked.
    let fetched = (0..40)
        .filter(|i| origin.count(&format!("/slow/{i}?h=X-Bigcache-TTL:1h&delay=300")) > 0)
        .count() as u64;
    assert_eq!(fetched, done, "{stdout}");
}

/// The page as the cache serves it: the origin's echo of what it was sent.
async fn cached_body(s: &Server, target: &str, host: &str) -> (String, String) {
    let r = reqwest::Client::new()
        .get(s.page(target))
        .header("host", host)
        .header("x-forwarded-proto", "https")
        .send()
        .await
        .unwrap();
    let cache = r.headers()["x-cache"].to_str().unwrap().to_string();
    (cache, r.text().await.unwrap())
}

/// With `--site-url`, every page is requested for the site: its host and
/// scheme, never the sitemap URLs' (Django's own `http` address), and as no
/// visitor (`X-Forwarded-For: unknown`). URLs on a third host are left out,
/// and an index is not followed off its own host.
#[tokio::test]
async fn warming_is_for_the_site_and_stays_on_the_sitemaps_host() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        dir.path(),
        &[
            "--upstream",
            &origin.url(),
            "--host",
            "www.example.org",
            "--trusted-proxy",
            "127.0.0.1/32",
        ],
    );
    let sitemap = format!("{}/sitemap.xml?pages=3", origin.url());
    let (ok, out, err) = warm(&[
        &sitemap,
        "--proxy",
        &s.proxy,
        "--site-url",
        "https://www.example.org",
    ])
    .await;
    assert!(ok && out.contains("3 warmed"), "{out}{err}");
    let (cache, body) =
        cached_body(&s, "/p/0?h=X-Bigcache-TTL:1h&delay=20", "www.example.org").await;
    assert_eq!(cache, "HIT");
    assert!(
        body.contains("xfproto=https xfhost=www.example.org host=www.example.org"),
        "{body}"
    );
    assert!(body.contains("xff=unknown"), "{body}");

    // A sitemap listing pages on another host, and an index pointing off
    // its host and at a local file: left out, said on stderr.
    let files = dir.path().join("other.xml");
    std::fs::write(
        &files,
        r#"<urlset><url><loc>http://evil.example/p/9</loc></url><url><loc>/p/8?h=X-Bigcache-TTL:1h</loc></url></urlset>"#,
    )
    .unwrap();
    let (ok, out, err) = warm(&[
        files.to_str().unwrap(),
        "--proxy",
        &s.proxy,
        "--site-url",
        "https://www.example.org",
    ])
    .await;
    assert!(ok, "{out}{err}");
    assert!(err.contains("left out http://evil.example/p/9"), "{err}");
    assert!(out.contains("1 of 1 pages"), "{out}");
    assert_eq!(origin.count("/p/9"), 0);
    let index = dir.path().join("index.xml");
    std::fs::write(
        &index,
        r#"<sitemapindex><sitemap><loc>/etc/passwd</loc></sitemap><sitemap><loc>http://evil.example/s.xml</loc></sitemap></sitemapindex>"#,
    )
    .unwrap();
    let (_, out, err) = warm(&[index.to_str().unwrap(), "--proxy", &s.proxy]).await;
    assert!(
        err.contains("left out /etc/passwd: a sitemap not on the index's own host"),
        "{err}"
    );
    assert!(err.contains("left out http://evil.example/s.xml"), "{err}");
    assert!(out.contains("0 of 0 pages"), "{out}");
}

/// Pages the proxy will not store for the site named are each said, with
/// the reason, and a run that stores nothing fails.
#[tokio::test]
async fn a_run_that_stores_nothing_says_why_and_fails() {
    let origin = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(
        dir.path(),
        &["--upstream", &origin.url(), "--host", "www.example.org"],
    );
    let sitemap = format!("{}/sitemap.xml?pages=2", origin.url());
    let (ok, out, err) = warm(&[&sitemap, "--proxy", &s.proxy]).await;
    assert!(!ok, "{out}{err}");
    assert!(
        out.contains("0 warmed, 0 already fresh, 2 not cacheable"),
        "{out}"
    );
    assert!(
        err.contains("not stored: /p/0?h=X-Bigcache-TTL:1h&delay=20 (unknown_host)"),
        "{err}"
    );
    assert!(err.contains("no page could be stored"), "{err}");
}
