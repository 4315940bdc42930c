//! bigcache's own compression against a real upstream and the real
//! binary: the page is stored once in brotli, sent as stored to clients
//! that accept br and decoded for those that do not, each representation
//! with its own validator, ranges of the identity body, and what must not
//! be recoded left as Django sent it.

use std::io::Read;

use crate::origin::Origin;
use crate::util::{Server, client, start_proxy as start, stored};

const TTL: &str = "h=X-Bigcache-TTL:1h";

struct Got {
    status: u16,
    cache: String,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Got {
    fn field(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body decoded from its `Content-Encoding`.
    fn decoded(&self) -> Vec<u8> {
        match self.field("content-encoding") {
            None => self.body.clone(),
            Some("br") => {
                let mut out = Vec::new();
                brotli::Decompressor::new(&self.body[..], 4096)
                    .read_to_end(&mut out)
                    .expect("valid brotli");
                out
            }
            Some(other) => panic!("unexpected coding {other}"),
        }
    }

    fn varies_on_accept_encoding(&self) -> bool {
        self.headers
            .get_all("vary")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|n| n.trim().eq_ignore_ascii_case("accept-encoding"))
    }
}

async fn get(s: &Server, path: &str, fields: &[(&str, &str)]) -> Got {
    request(s, reqwest::Method::GET, path, fields).await
}

async fn request(s: &Server, method: reqwest::Method, path: &str, fields: &[(&str, &str)]) -> Got {
    let mut req = client().request(method, s.page(path));
    for (n, v) in fields {
        req = req.header(*n, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    let cache = headers
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    let body = r.bytes().await.unwrap().to_vec();
    Got {
        status,
        cache,
        headers,
        body,
    }
}

/// `proxy.compressed.<outcome>` in `/stat`: `br` for pages stored in
/// brotli at their fetch, `recoded` for pages encoded again at a later hit.
fn packed(s: &Server, outcome: &str) -> u64 {
    stat(s)["proxy"]["compressed"][outcome]
        .as_u64()
        .unwrap_or(0)
}

/// Waits (bounded) until `outcome` counts `n` pages. Re-encodings run only
/// on CPU time nothing else wants: on a machine busy with other tests
/// they wait their turn.
async fn until_packed(s: &Server, outcome: &str, n: u64) {
    for _ in 0..3000 {
        if packed(s, outcome) >= n {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("{} of {n} pages counted as {outcome}", packed(s, outcome));
}

fn stat(s: &Server) -> serde_json::Value {
    let url = s.url("/stat");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            client()
                .get(url)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap()
        })
    })
    .join()
    .unwrap()
}

/// The page stored, then encoded, from one fetch, and what the origin
/// sent for it.
async fn stored_page(s: &Server, path: &str) -> Vec<u8> {
    let first = get(s, path, &[]).await;
    assert_eq!((first.status, first.cache.as_str()), (200, "MISS"));
    assert_eq!(first.field("content-encoding"), None, "a miss goes as sent");
    // Stored as sent at once, encoded after.
    let status = first.field("cache-status").unwrap_or_default();
    assert!(status.contains("stored"), "{status}");
    stored(s, 1).await;
    until_packed(s, "br", 1).await;
    first.body
}

#[tokio::test(flavor = "multi_thread")]
async fn one_stored_copy_in_brotli_each_client_gets_what_it_accepts() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/doc/?{TTL}&fixed=1&size=20000");
    let origin = stored_page(&s, &path).await;
    assert_eq!(packed(&s, "br"), 1, "stored in brotli");
    let br = get(&s, &path, &[("accept-encoding", "gzip, deflate, br, zstd")]).await;
    assert_eq!((br.status, br.cache.as_str()), (200, "HIT"));
    assert_eq!(br.field("content-encoding"), Some("br"));
    assert!(
        br.body.len() < origin.len() * 3 / 4,
        "{} bytes",
        br.body.len()
    );
    assert_eq!(
        br.field("content-length"),
        Some(br.body.len().to_string().as_str())
    );
    assert_eq!(br.decoded(), origin, "decoded, the origin's bytes");
    assert!(br.varies_on_accept_encoding());
    assert_eq!(br.field("accept-ranges"), None, "ranges are of identity");
    // Every way of (not) accepting br, q-values and wildcards included.
    for (ae, coded) in [
        ("br", true),
        ("BR;q=0.5, gzip", true),
        ("*", true),
        ("gzip, *;q=0.1", true),
        ("gzip, deflate", false),
        ("gzip, br;q=0", false),
        ("*;q=0", false),
        ("br;q=0, identity;q=0", false),
        ("identity;q=0", false),
        ("br;q=abc", false),
        ("", false),
    ] {
        let fields: &[(&str, &str)] = if ae.is_empty() {
            &[]
        } else {
            &[("accept-encoding", ae)]
        };
        let got = get(&s, &path, fields).await;
        assert_eq!(got.status, 200, "{ae}");
        assert_eq!(
            got.field("content-encoding"),
            coded.then_some("br"),
            "Accept-Encoding: {ae}"
        );
        assert_eq!(got.decoded(), origin, "{ae}");
        assert!(got.varies_on_accept_encoding(), "{ae}");
        if !coded {
            assert_eq!(got.field("accept-ranges"), Some("bytes"), "{ae}");
            assert_eq!(
                got.field("content-length"),
                Some(origin.len().to_string().as_str())
            );
        }
    }
    // A HEAD tells the length of the representation it stands for.
    let head = request(
        &s,
        reqwest::Method::HEAD,
        &path,
        &[("accept-encoding", "br")],
    )
    .await;
    assert_eq!(
        head.field("content-length"),
        Some(br.body.len().to_string().as_str())
    );
    assert_eq!(head.field("content-encoding"), Some("br"));
    assert_eq!(o.count(&path), 1, "one fetch for every client");
}

#[tokio::test(flavor = "multi_thread")]
async fn each_coding_has_its_own_validator_and_ranges_are_of_identity() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let path = format!("/v/?{TTL}&fixed=1&size=20000&etag=v7");
    let origin = stored_page(&s, &path).await;
    let br = [("accept-encoding", "gzip, br")];
    let coded = get(&s, &path, &br).await;
    let plain = get(&s, &path, &[]).await;
    assert_eq!(coded.field("etag"), Some("\"v7-br\""));
    assert_eq!(plain.field("etag"), Some("\"v7\""));
    // Each validator matches its own representation only.
    let revalidate = |etag: &'static str, ae: Option<&'static str>| {
        let s = &s;
        let path = &path;
        async move {
            let mut fields = vec![("if-none-match", etag)];
            if let Some(ae) = ae {
                fields.push(("accept-encoding", ae));
            }
            get(s, path, &fields).await
        }
    };
    let same = revalidate("\"v7-br\"", Some("br")).await;
    assert_eq!(same.status, 304);
    assert_eq!(same.field("etag"), Some("\"v7-br\""));
    assert!(same.varies_on_accept_encoding());
    assert_eq!(revalidate("W/\"v7-br\"", Some("br")).await.status, 304);
    assert_eq!(revalidate("\"v7\"", None).await.status, 304);
    let other = revalidate("\"v7\"", Some("br")).await;
    assert_eq!(other.status, 200, "the identity validator is not br's");
    assert_eq!(other.field("content-encoding"), Some("br"));
    assert_eq!(revalidate("\"v7-br\"", None).await.status, 200);
    // A range is of the identity body, whatever the client accepts.
    let part = get(
        &s,
        &path,
        &[("accept-encoding", "br"), ("range", "bytes=100-199")],
    )
    .await;
    assert_eq!(part.status, 206);
    assert_eq!(part.field("content-encoding"), None);
    assert_eq!(part.body, origin[100..200]);
    assert_eq!(
        part.field("content-range"),
        Some(format!("bytes 100-199/{}", origin.len()).as_str())
    );
    let resumed = get(
        &s,
        &path,
        &[
            ("accept-encoding", "br"),
            ("range", "bytes=-10"),
            ("if-range", "\"v7\""),
        ],
    )
    .await;
    assert_eq!(
        (resumed.status, resumed.body.as_slice()),
        (206, &origin[origin.len() - 10..])
    );
    assert_eq!(o.count(&path), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restart_reads_the_stored_brotli_from_disk() {
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // One site whatever port each run listens on.
    let args = ["--upstream", &o.url(), "--host", "example.org"];
    let host = ("host", "example.org");
    let path = format!("/disk/?{TTL}&fixed=1&size=30000");
    let (origin, sent) = {
        let s = Server::start_in(dir.path(), &args);
        let origin = get(&s, &path, &[host]).await.body;
        stored(&s, 1).await;
        until_packed(&s, "br", 1).await;
        let sent = get(&s, &path, &[host, ("accept-encoding", "br")]).await;
        assert_eq!(sent.field("content-encoding"), Some("br"));
        assert_eq!(s.stop().code(), Some(0));
        (origin, sent.body)
    };
    let s = Server::start_in(dir.path(), &args);
    let br = get(&s, &path, &[host, ("accept-encoding", "br")]).await;
    assert_eq!(br.cache, "HIT");
    assert_eq!(br.body, sent, "the bytes stored, as stored");
    assert_eq!(br.decoded(), origin);
    let plain = get(&s, &path, &[host]).await;
    assert_eq!(plain.body, origin);
    assert_eq!(o.count(&path), 1);
}

/// What bigcache must not recode is stored and sent as Django sent it:
/// bodies that are not text, `no-transform`, bodies Django encoded, tiny
/// bodies.
#[tokio::test(flavor = "multi_thread")]
async fn what_must_not_be_recoded_goes_as_sent() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let pages = [
        format!("/img/?{TTL}&fixed=1&size=20000&h=Content-Type:image/png"),
        format!("/nt/?{TTL}&fixed=1&size=20000&h=Cache-Control:public,%20no-transform"),
        format!("/gz/?{TTL}&fixed=1&size=20000&h=Content-Encoding:gzip&h=Vary:Accept-Encoding"),
        format!("/tiny/?{TTL}&fixed=1"),
    ];
    for (i, path) in pages.iter().enumerate() {
        let first = get(&s, path, &[("accept-encoding", "gzip, br")]).await;
        stored(&s, i as u64 + 1).await;
        let hit = get(&s, path, &[("accept-encoding", "gzip, br")]).await;
        assert_eq!(hit.cache, "HIT", "{path}");
        assert_eq!(hit.body, first.body, "{path}");
        assert_ne!(hit.field("content-encoding"), Some("br"), "{path}");
    }
    assert_eq!(packed(&s, "br"), 0);
    let gz = get(&s, &pages[2], &[("accept-encoding", "gzip")]).await;
    assert_eq!(
        gz.field("content-encoding"),
        Some("gzip"),
        "Django's coding kept"
    );
}

/// Pages stored as sent (by a run with `--no-compress`, as by an earlier
/// release, or when the encoder was busy) are encoded at a later hit, in
/// place: the same page, the same store time, no fetch.
#[tokio::test(flavor = "multi_thread")]
async fn pages_stored_as_sent_are_encoded_at_a_later_hit() {
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = ("host", "example.org");
    let path = format!("/old/?{TTL}&fixed=1&size=30000");
    let origin = {
        let s = Server::start_in(
            dir.path(),
            &[
                "--upstream",
                &o.url(),
                "--host",
                "example.org",
                "--no-compress",
            ],
        );
        let origin = get(&s, &path, &[host]).await.body;
        stored(&s, 1).await;
        let plain = get(&s, &path, &[host, ("accept-encoding", "br")]).await;
        assert_eq!(plain.field("content-encoding"), None, "--no-compress");
        assert!(!plain.varies_on_accept_encoding());
        assert_eq!(packed(&s, "br"), 0);
        assert_eq!(s.stop().code(), Some(0));
        origin
    };
    let s = Server::start_in(
        dir.path(),
        &["--upstream", &o.url(), "--host", "example.org"],
    );
    let br = [host, ("accept-encoding", "br")];
    let first = get(&s, &path, &br).await;
    assert_eq!(first.cache, "HIT");
    assert_eq!(first.body, origin, "as stored, until encoded");
    until_packed(&s, "recoded", 1).await;
    assert_eq!(packed(&s, "br"), 0, "not at a fetch");
    let later = get(&s, &path, &br).await;
    assert_eq!(later.cache, "HIT");
    assert_eq!(later.field("content-encoding"), Some("br"));
    assert_eq!(later.decoded(), origin);
    assert_eq!(get(&s, &path, &[host]).await.body, origin);
    assert_eq!(o.count(&path), 1, "encoded in place, never fetched again");
}

/// With `--compress-level` above 5, a page is stored at the quick first
/// quality, and encoded again at the level once it is read again:
/// smaller, the same page.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_read_again_gets_the_best_coding() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--compress-level", "11"]);
    let path = format!("/again/?{TTL}&fixed=1&size=40000");
    let origin = stored_page(&s, &path).await;
    let br = [("accept-encoding", "br")];
    let quick = get(&s, &path, &br).await;
    assert_eq!(quick.field("content-encoding"), Some("br"));
    until_packed(&s, "recoded", 1).await;
    let best = get(&s, &path, &br).await;
    assert_eq!(best.decoded(), origin);
    assert!(
        best.body.len() < quick.body.len(),
        "{} bytes at the first quality, {} at 11",
        quick.body.len(),
        best.body.len()
    );
    assert_eq!(best.field("etag"), quick.field("etag"), "the same page");
    // Once at its level, a page is not encoded again.
    for _ in 0..5 {
        get(&s, &path, &br).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(packed(&s, "recoded"), 1);
    assert_eq!(o.count(&path), 1);
}

/// A date in `If-Range` validates both codings alike: a client resuming a
/// brotli download with one gets the whole page, never identity bytes to
/// splice into brotli ones.
#[tokio::test(flavor = "multi_thread")]
async fn a_dated_if_range_on_a_brotli_page_gets_the_whole_page() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--compress-level", "5"]);
    let lm = "Tue, 01 Jan 2019 00:00:00 GMT";
    let path = format!(
        "/dated/?{TTL}&fixed=1&size=20000&h=Last-Modified:{}",
        lm.replace(' ', "%20")
    );
    let origin = stored_page(&s, &path).await;
    let coded = get(&s, &path, &[("accept-encoding", "br")]).await;
    assert_eq!(coded.field("content-encoding"), Some("br"));
    assert_eq!(coded.field("accept-ranges"), None);
    let resumed = get(
        &s,
        &path,
        &[
            ("accept-encoding", "br"),
            ("range", "bytes=100-"),
            ("if-range", lm),
        ],
    )
    .await;
    assert_eq!(resumed.status, 200);
    assert_eq!(resumed.decoded(), origin);
}

/// A 304 that makes the page one bigcache may not recode (here it adds
/// `no-transform`, RFC 9110 §7.7) turns the stored brotli copy back into
/// the page as sent.
#[tokio::test(flavor = "multi_thread")]
async fn a_304_adding_no_transform_ends_the_brotli_copy() {
    let o = Origin::start().await;
    let (_d, s) = crate::util::start_local_proxy(&o.url(), &["--compress-level", "5"]).await;
    let path = "/nt304/?fixed=1&size=20000&etag=v1&h=Cache-Control:max-age%3D60\
        &h304=Cache-Control:max-age%3D60,%20no-transform";
    let origin = stored_page(&s, path).await;
    let br = [("accept-encoding", "br")];
    assert_eq!(
        get(&s, path, &br).await.field("content-encoding"),
        Some("br")
    );
    s.advance(std::time::Duration::from_secs(61));
    let revalidated = get(&s, path, &br).await;
    assert_eq!(revalidated.cache, "REVALIDATED");
    assert_eq!(revalidated.field("content-encoding"), None);
    assert_eq!(revalidated.body, origin);
    stored(&s, 1).await;
    let hit = get(&s, path, &br).await;
    assert_eq!(hit.cache, "HIT");
    assert_eq!(hit.field("content-encoding"), None);
    assert_eq!(hit.body, origin);
}
