//! The REST API, endpoint by endpoint, including every error path.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::util::{Server, client, get_json, post_json, start, start_local};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

async fn delete(s: &Server, path: &str) -> (StatusCode, Value) {
    let r = client().delete(s.url(path)).send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// The original README's curl examples, verbatim, through real curl.
#[tokio::test]
async fn seed_readme_curl_examples_work_verbatim() {
    let (_d, s) = start(&[]);
    let curl = |args: &[&str]| {
        let out = std::process::Command::new("curl")
            .arg("-sS")
            .args(args)
            .output()
            .expect("curl is installed");
        assert!(out.status.success(), "curl {args:?} failed");
        serde_json::from_slice::<Value>(&out.stdout).expect("JSON reply")
    };
    let base = s.url("/cache/");
    let v = json!({"title": "example data", "notes": "example notes"});
    let r = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"value": {"title": "example data", "notes": "example notes"}, "duration": "1m"}"#,
        &format!("{base}mykey"),
    ]);
    assert_eq!(r["key"], "mykey");
    assert_eq!(r["value"], v);
    let expire = r["expire"].as_f64().unwrap();
    assert!((expire - (now() + 60.0)).abs() < 5.0, "expire {expire}");

    let r = curl(&[
        "-X",
        "POST",
        "-H",
        "Content-Type: application/json",
        "-d",
        r#"{"value": {"title": "example data", "notes": "example notes"}}"#,
        &format!("{base}mykey_noexpire"),
    ]);
    assert_eq!(r["expire"], Value::Null);

    let r = curl(&[&format!("{base}mykey")]);
    assert_eq!(r["value"], v);
    assert_eq!(r["duration"], "1m");
    assert_eq!(r["expire"].as_f64(), Some(expire));
    let r = curl(&[&format!("{base}mykey_noexpire")]);
    assert_eq!(r["value"], v);
    assert_eq!(r["expire"], Value::Null);
    assert_eq!(r["duration"], Value::Null);

    let r = curl(&["-X", "DELETE", &format!("{base}mykey")]);
    assert_eq!(r["message"], "'mykey' removed from cache.");
    let r = curl(&["-X", "DELETE", &format!("{base}mykey_noexpire")]);
    assert_eq!(r["message"], "'mykey_noexpire' removed from cache.");
    let r = curl(&[&format!("{base}mykey")]);
    assert!(r["detail"].as_str().unwrap().contains("not found"));
}

#[tokio::test]
async fn any_json_value_round_trips() {
    let (_d, s) = start(&[]);
    for (i, v) in [
        json!(null),
        json!(42),
        json!(-1.5e300),
        json!("text with \"quotes\" and ünïcode ☃"),
        json!([1, [2, [3]], {"a": null}]),
        json!({"html": "<p>".repeat(5000)}),
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("/cache/v{i}");
        let (st, _) = post_json(&s, &key, json!({ "value": v })).await;
        assert_eq!(st, 200);
        let (st, got) = get_json(&s, &key).await;
        assert_eq!(st, 200);
        assert_eq!(got["value"], v);
    }
}

#[tokio::test]
async fn durations_seed_and_humantime_forms() {
    let (_d, s) = start(&[]);
    for (text, secs) in [
        ("30s", 30.0),
        ("1m", 60.0),
        ("6h", 21600.0),
        ("28d", 28.0 * 86400.0),
        ("28ds", 28.0 * 86400.0),
        ("1h 30m", 5400.0),
        ("2w", 14.0 * 86400.0),
    ] {
        let (st, r) = post_json(&s, "/cache/d", json!({"value": 1, "duration": text})).await;
        assert_eq!(st, 200, "{text}");
        let expire = r["expire"].as_f64().unwrap();
        assert!((expire - now() - secs).abs() < 5.0, "{text}: {expire}");
    }
    // duration wins over expire; expire alone is absolute.
    let (_, r) = post_json(
        &s,
        "/cache/d",
        json!({"value": 1, "duration": "1h", "expire": now() + 10.0}),
    )
    .await;
    assert!((r["expire"].as_f64().unwrap() - now() - 3600.0).abs() < 5.0);
    let at = (now() + 1234.0).floor();
    let (_, r) = post_json(&s, "/cache/d", json!({"value": 1, "expire": at})).await;
    assert_eq!(r["expire"].as_f64(), Some(at));
}

#[tokio::test]
async fn malformed_durations_are_422_and_lose_nothing() {
    let (_d, s) = start(&[]);
    post_json(&s, "/cache/keep", json!({"value": "old"})).await;
    for bad in [
        json!("soon"),
        json!("60"),
        json!("-5m"),
        json!(""),
        json!(60),
        json!("500y"),
    ] {
        let (st, r) = post_json(&s, "/cache/keep", json!({"value": "new", "duration": bad})).await;
        assert_eq!(st, 422, "{bad}");
        assert!(r["detail"].as_str().is_some_and(|d| !d.is_empty()), "{r}");
    }
    let (_, r) = post_json(&s, "/cache/x", json!({"value": 1, "duration": "soon"})).await;
    let detail = r["detail"].as_str().unwrap();
    assert!(
        detail.contains("28d") && detail.contains("1h 30m"),
        "{detail}"
    );
    let (st, r) = get_json(&s, "/cache/keep").await;
    assert_eq!((st, &r["value"]), (StatusCode::OK, &json!("old")));
    let (st, _) = get_json(&s, "/cache/x").await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn expired_entries_are_never_served() {
    let (_d, s) = start_local(&[]).await;
    post_json(&s, "/cache/short", json!({"value": 1, "duration": "1s"})).await;
    post_json(
        &s,
        "/cache/past",
        json!({"value": 1, "expire": now() - 10.0}),
    )
    .await;
    let (st, _) = get_json(&s, "/cache/short").await;
    assert_eq!(st, 200);
    let (st, _) = get_json(&s, "/cache/past").await;
    assert_eq!(st, 404);
    s.advance(Duration::from_millis(1300));
    let (st, r) = get_json(&s, "/cache/short").await;
    assert_eq!(st, 404);
    assert!(r["detail"].as_str().unwrap().contains("expired"));
    let (_, stat) = get_json(&s, "/stat").await;
    assert_eq!(stat["stats"]["expire"], 2);
    assert_eq!(stat["stats"]["hit"], 1);
    // Deleted on that read: a second read is a plain miss.
    let (st, _) = get_json(&s, "/cache/short").await;
    assert_eq!(st, 404);
    let (_, stat) = get_json(&s, "/stat").await;
    assert_eq!(stat["stats"]["miss"], 1);
    let (_, count) = get_json(&s, "/stat/count").await;
    assert_eq!(count["count"], 0);
}

#[tokio::test]
async fn key_rule_slashes_encoding_and_query() {
    let (_d, s) = start(&[]);
    let (_, r) = post_json(&s, "/cache//dataset/x/?page=2", json!({"value": 2})).await;
    assert_eq!(r["key"], "dataset/x?page=2");
    post_json(&s, "/cache//dataset/x/?page=3", json!({"value": 3})).await;
    // The query keeps pages apart; slashes and encoding do not.
    let (_, r) = get_json(&s, "/cache/dataset/x?page=2").await;
    assert_eq!(r["value"], 2);
    let (_, r) = get_json(&s, "/cache//dataset/x/?page=3").await;
    assert_eq!(r["value"], 3);
    let (_, r) = get_json(&s, "/cache/%2Fdataset%2Fx%3Fpage%3D2").await;
    assert_eq!(r["value"], 2);
    let (st, _) = get_json(&s, "/cache/dataset/x").await;
    assert_eq!(st, 404);
    // Unicode and spaces, percent-encoded.
    post_json(&s, "/cache/caf%C3%A9%20au%20lait", json!({"value": "☕"})).await;
    let (_, r) = get_json(&s, "/cache/café au lait").await;
    assert_eq!(
        (r["key"].as_str(), &r["value"]),
        (Some("café au lait"), &json!("☕"))
    );
    let (st, _) = delete(&s, "/cache/dataset/x/?page=2").await;
    assert_eq!(st, 200);
    let (st, _) = get_json(&s, "/cache/dataset/x?page=2").await;
    assert_eq!(st, 404);
    let (st, _) = get_json(&s, "/cache/dataset/x?page=3").await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn limits_give_clear_errors_and_the_server_stays_up() {
    let (_d, s) = start(&["--max-body-size", "1KiB", "--max-key-length", "64"]);
    let big = json!({"value": "x".repeat(2000)});
    let (st, r) = post_json(&s, "/cache/big", big).await;
    assert_eq!(st, 413);
    assert!(r["detail"].as_str().unwrap().contains("1024"), "{r}");
    let r = client()
        .post(s.url("/pickle/big"))
        .header("content-type", "application/json")
        .body(vec![0u8; 5000])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);

    let long = format!("/cache/{}", "k".repeat(65));
    let (st, r) = post_json(&s, &long, json!({"value": 1})).await;
    assert_eq!(st, 400);
    assert!(r["detail"].as_str().unwrap().contains("64"));

    for body in ["{not json", "{\"duration\": \"1m\"}", "[1,2]", ""] {
        let r = client()
            .post(s.url("/cache/k"))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body:?}");
        let v: Value = r.json().await.unwrap();
        assert!(v["detail"].is_string());
    }
    let deep = format!("{{\"value\": {}1{}}}", "[".repeat(200), "]".repeat(200));
    let r = client()
        .post(s.url("/cache/deep"))
        .header("content-type", "application/json")
        .body(deep)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert!(v["detail"].as_str().unwrap().contains("128"), "{v}");

    let (st, _) = get_json(&s, "/cache/").await;
    assert_eq!(st, 404);
    let (st, _) = get_json(&s, "/cache/%FF").await;
    assert_eq!(st, 400);
    // Still healthy.
    let (st, _) = post_json(&s, "/cache/ok", json!({"value": 1})).await;
    assert_eq!(st, 200);
}

#[tokio::test]
async fn pickle_stores_raw_bytes_verbatim() {
    let (_d, s) = start_local(&[]).await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let r = client()
        .post(s.url("/pickle/blob"))
        .header("content-type", "application/octet-stream")
        .body(bytes.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["size"].as_u64(), &v["expire"]),
        (Some(70_000), &Value::Null)
    );
    let r = client().get(s.url("/pickle/blob")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap().as_ref(), bytes.as_slice());
    // A raw value is not JSON: /cache says so instead of mangling it.
    let (st, r) = get_json(&s, "/cache/blob").await;
    assert_eq!(st, 409);
    assert!(r["detail"].as_str().unwrap().contains("/pickle/"));

    let r = client()
        .post(s.url("/pickle/short"))
        .header("X-Bigcache-TTL", "1s")
        .header("content-type", "application/octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert!((v["expire"].as_f64().unwrap() - now() - 1.0).abs() < 3.0);
    let r = client()
        .post(s.url("/pickle/bad"))
        .header("X-Bigcache-TTL", "whenever")
        .header("content-type", "application/octet-stream")
        .body("abc")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    s.advance(Duration::from_millis(1200));
    let r = client().get(s.url("/pickle/short")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let (st, _) = delete(&s, "/pickle/blob").await;
    assert_eq!(st, 200);
    let (st, _) = delete(&s, "/pickle/blob").await;
    assert_eq!(st, 404);
}

#[tokio::test]
async fn prefix_delete_is_a_range_and_counts() {
    let (_d, s) = start(&[]);
    for k in [
        "dataset/1",
        "dataset/2",
        "dataset/2?page=2",
        "datasets/9",
        "other",
    ] {
        post_json(&s, &format!("/cache/{k}"), json!({"value": k})).await;
    }
    let (st, r) = delete(&s, "/prefix/dataset/").await;
    assert_eq!(st, 200);
    assert_eq!(r["message"], "prefix 'dataset/': 3 keys deleted.");
    assert_eq!(r["count"], 3, "the count as a number, not only in the text");
    let (st, _) = get_json(&s, "/cache/datasets/9").await;
    assert_eq!(st, 200);
    let (_, r) = get_json(&s, "/stat/count").await;
    assert_eq!(r["count"], 2);
    let (st, r) = delete(&s, "/prefix/").await;
    assert_eq!(st, 400);
    assert!(r["detail"].is_string());
    let (_, r) = delete(&s, "/prefix/nothing-here").await;
    assert_eq!(r["message"], "prefix 'nothing-here': 0 keys deleted.");
    assert_eq!(r["count"], 0);
}

#[tokio::test]
async fn stat_counts_hits_misses_and_deletes() {
    let (_d, s) = start(&[]);
    post_json(&s, "/cache/a", json!({"value": 1})).await;
    get_json(&s, "/cache/a").await;
    get_json(&s, "/cache/a").await;
    get_json(&s, "/cache/a").await;
    get_json(&s, "/cache/nope").await;
    delete(&s, "/cache/a").await;
    let (st, r) = get_json(&s, "/stat").await;
    assert_eq!(st, 200);
    // The original server's shape: {"stats": {hit, miss, expire, delete,
    // hit_rate: "NN.NN%"}}.
    let stats = &r["stats"];
    assert_eq!(
        (
            &stats["hit"],
            &stats["miss"],
            &stats["expire"],
            &stats["delete"]
        ),
        (&json!(3), &json!(1), &json!(0), &json!(1))
    );
    assert_eq!(stats["set"], 1);
    assert_eq!(stats["hit_rate"], "75.00%");
}

#[tokio::test]
async fn clear_empties_and_the_server_stays_healthy() {
    let (_d, s) = start(&[]);
    for i in 0..50 {
        post_json(&s, &format!("/cache/k{i}"), json!({"value": i})).await;
    }
    // The original's form, GET /clear, changes nothing (any web page could
    // send it) and says what to do instead.
    let (st, r) = get_json(&s, "/clear").await;
    assert_eq!(st, 405, "{r}");
    assert!(r["detail"].as_str().unwrap().contains("POST"), "{r}");
    let (_, r) = get_json(&s, "/stat/count").await;
    assert_eq!(r["count"], 50);
    let (st, r) = delete(&s, "/clear").await;
    assert_eq!(st, 200, "{r}");
    let (_, r) = get_json(&s, "/stat/count").await;
    assert_eq!(r["count"], 0);
    let (st, _) = get_json(&s, "/cache/k1").await;
    assert_eq!(st, 404);
    let (st, _) = post_json(&s, "/cache/k1", json!({"value": "again"})).await;
    assert_eq!(st, 200);
    let (_, r) = get_json(&s, "/cache/k1").await;
    assert_eq!(r["value"], "again");
    let (st, _) = client()
        .post(s.url("/clear"))
        .send()
        .await
        .map(|r| (r.status(), ()))
        .unwrap();
    assert_eq!(st, 200);
}

#[tokio::test]
async fn docs_are_served_offline() {
    let (_d, s) = start(&[]);
    let r = client().get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let html = r.text().await.unwrap();
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("cdn") && !html.contains("unpkg"),
        "UI must not load from a CDN"
    );
    let r = client()
        .get(s.url("/docs/swagger-ui-bundle.js"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.unwrap().len() > 100_000);
    let (st, spec) = get_json(&s, "/openapi.json").await;
    assert_eq!(st, 200);
    for p in [
        "/cache/{key}",
        "/pickle/{key}",
        "/prefix/{prefix}",
        "/stat",
        "/stat/count",
        "/clear",
    ] {
        assert!(spec["paths"][p].is_object(), "{p} missing from the spec");
    }
}

#[tokio::test]
async fn token_guards_everything_but_docs() {
    let (_d, s) = start(&["--api-token", "s3cret"]);
    let (st, r) = post_json(&s, "/cache/a", json!({"value": 1})).await;
    assert_eq!(st, 401);
    assert!(r["detail"].is_string());
    for path in ["/cache/a", "/stat", "/stat/count", "/clear", "/pickle/a"] {
        let r = client().get(s.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 401, "{path}");
    }
    let r = client()
        .delete(s.url("/prefix/a"))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client()
        .post(s.url("/cache/a"))
        .bearer_auth("s3cret")
        .json(&json!({"value": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .get(s.url("/cache/a"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(s.url("/docs/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn refuses_a_public_api_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(crate::util::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--api-listen", "0.0.0.0:0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--api-token"), "{err}");
}

#[tokio::test]
async fn concurrent_clients_never_see_another_keys_value() {
    let (_d, s) = start(&[]);
    let s = std::sync::Arc::new(s);
    let mut tasks = Vec::new();
    for t in 0..32 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let c = client();
            for i in 0..40 {
                let key = format!("/cache/c{t}/{i}?q={i}");
                let body = json!({"value": {"t": t, "i": i, "pad": "p".repeat(i * 50)}});
                let r = c.post(s.url(&key)).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 200);
                let got: Value = c
                    .get(s.url(&key))
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                assert_eq!(got["value"], body["value"], "{key}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (_, r) = get_json(&s, "/stat/count").await;
    assert_eq!(r["count"], 32 * 40);
}

#[tokio::test]
async fn add_is_atomic_only_if_absent_and_touch_renews() {
    let (_d, s) = start_local(&[]).await;
    let add = |body: &'static str| {
        client()
            .post(s.url("/pickle/once"))
            .header("X-Bigcache-Mode", "add")
            .header("content-type", "application/octet-stream")
            .body(body)
            .send()
    };
    assert_eq!(add("first").await.unwrap().status(), 200);
    assert_eq!(add("second").await.unwrap().status(), 409);
    let r = client().get(s.url("/pickle/once")).send().await.unwrap();
    assert_eq!(r.text().await.unwrap(), "first");
    let r = client()
        .post(s.url("/pickle/once"))
        .header("X-Bigcache-Mode", "sometimes")
        .header("content-type", "application/octet-stream")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // 50 concurrent adds of one key: exactly one wins.
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let url = s.url("/pickle/race");
            tokio::spawn(async move {
                client()
                    .post(url)
                    .header("X-Bigcache-Mode", "add")
                    .header("content-type", "application/octet-stream")
                    .body(format!("{i}"))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            })
        })
        .collect();
    let mut wins = 0;
    for t in tasks {
        wins += u32::from(t.await.unwrap() == 200);
    }
    assert_eq!(wins, 1);

    // touch: a 1 s entry made permanent survives its old deadline.
    client()
        .post(s.url("/pickle/t"))
        .header("X-Bigcache-TTL", "1s")
        .header("content-type", "application/octet-stream")
        .body("v")
        .send()
        .await
        .unwrap();
    let r = client().patch(s.url("/pickle/t")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["expire"], Value::Null);
    s.advance(Duration::from_millis(1200));
    let r = client().get(s.url("/pickle/t")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = client()
        .patch(s.url("/pickle/t"))
        .header("X-Bigcache-TTL", "1s")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    s.advance(Duration::from_millis(1200));
    let r = client().get(s.url("/pickle/t")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .patch(s.url("/pickle/absent"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

/// A web page open in a browser on this host can reach a token-less API on
/// loopback: cross-site requests, other origins, DNS-rebinding host names
/// and blind (no-preflight) writes are refused, so it can neither plant a
/// pickle for Django to load nor read or purge the cache.
#[tokio::test]
async fn web_pages_in_a_browser_cannot_use_the_api() {
    let (_d, s) = start(&[]);
    let (st, _) = post_json(&s, "/cache/k", json!({"value": 1})).await;
    assert_eq!(st, 200);
    let send = |method: reqwest::Method, path: &str, headers: &[(&str, &str)]| {
        let mut r = client().request(method, s.url(path));
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        async move { r.body("payload").send().await.unwrap().status() }
    };
    use reqwest::Method;
    let blind = [
        ("origin", "http://evil.example"),
        ("content-type", "text/plain"),
    ];
    assert_eq!(send(Method::POST, "/pickle/k", &blind).await, 403);
    assert_eq!(
        send(Method::GET, "/cache/k", &[("sec-fetch-site", "cross-site")]).await,
        403
    );
    assert_eq!(
        send(Method::DELETE, "/clear", &[("origin", "null")]).await,
        403
    );
    let rebound = [("host", "evil.example:36379")];
    assert_eq!(send(Method::GET, "/cache/k", &rebound).await, 403);
    // Writes need a type no form or no-cors fetch can send.
    assert_eq!(send(Method::POST, "/pickle/k", &[]).await, 415);
    assert_eq!(
        send(Method::POST, "/pickle/k", &[("content-type", "text/plain")]).await,
        415
    );
    let (st, r) = get_json(&s, "/cache/k").await;
    assert_eq!(
        (st, &r["value"]),
        (StatusCode::OK, &json!(1)),
        "something was planted"
    );
    let own = s.url("").trim_end_matches('/').to_string();
    let ok = [
        ("origin", own.as_str()),
        ("content-type", "application/octet-stream"),
    ];
    assert_eq!(
        send(Method::POST, "/pickle/own", &ok).await,
        200,
        "the docs page's own origin"
    );
}

/// Host names the operator names, or any name with a token, are answered.
#[tokio::test]
async fn named_hosts_are_answered_when_configured_or_with_a_token() {
    let (_d, s) = start(&["--api-host", "bigcache.internal"]);
    let get = |host: &'static str, token: Option<&'static str>| {
        let mut r = client().get(s.url("/stat")).header("host", host);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move { r.send().await.unwrap().status() }
    };
    assert_eq!(get("bigcache.internal:36379", None).await, 200);
    assert_eq!(get("localhost", None).await, 200);
    assert_eq!(get("other.internal", None).await, 403);
    drop(s);
    let (_d, s) = start(&["--api-token", "t0ken"]);
    let r = client()
        .get(s.url("/stat"))
        .header("host", "other.internal")
        .bearer_auth("t0ken")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Slow clients cannot hold the REST API's connections: headers trickled
/// past `--client-timeout` close the connection, a body trickled past it
/// is a 408, and `--max-connections` bounds how many are open at once.
#[tokio::test]
async fn slow_clients_cannot_hold_the_api() {
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_d, s) = start(&["--client-timeout", "1s", "--max-connections", "2"]);
    let addr = s.api.trim_start_matches("http://").to_string();
    let read_all = |mut c: tokio::net::TcpStream| async move {
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut out)).await;
        String::from_utf8_lossy(&out).to_string()
    };

    let t = Instant::now();
    let mut headers = tokio::net::TcpStream::connect(&addr).await.unwrap();
    headers
        .write_all(b"GET /stat HTTP/1.1\r\nHo")
        .await
        .unwrap();
    let mut body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    body.write_all(
        b"POST /cache/slow HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"value\":",
    )
    .await
    .unwrap();
    // Both slots are taken: a third client waits.
    let waiting = client()
        .get(s.url("/healthz"))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(waiting.is_err(), "served beyond --max-connections");
    let (headers_out, body_out) = tokio::join!(read_all(headers), read_all(body));
    assert!(!headers_out.starts_with("HTTP/1.1 200"), "{headers_out}");
    assert!(body_out.starts_with("HTTP/1.1 408"), "{body_out}");
    assert!(
        t.elapsed() < Duration::from_secs(8),
        "held for {:?}",
        t.elapsed()
    );
    // The slots are free again.
    let r = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

/// A client that connects and sends nothing (or part of the HTTP/2
/// preface) cannot hold one of `--max-connections` past `--client-timeout`.
#[tokio::test]
async fn silent_connections_do_not_hold_slots() {
    use tokio::io::AsyncWriteExt;
    let (_d, s) = start(&["--client-timeout", "1s", "--max-connections", "2"]);
    let addr = s.api.trim_start_matches("http://").to_string();
    let _silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let mut preface = tokio::net::TcpStream::connect(&addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let r = client()
        .get(s.url("/healthz"))
        .timeout(Duration::from_secs(8))
        .send()
        .await
        .expect("a slot came free");
    assert_eq!(r.status(), 200);
}

/// An HTTP/2 connection that sends no request (only answering the pings
/// that keep it alive) is closed after `--client-timeout`, as an idle
/// HTTP/1 keep-alive connection is: it cannot hold a slot for ever.
#[tokio::test]
async fn idle_http2_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_d, s) = start(&["--client-timeout", "1s"]);
    let addr = s.api.trim_start_matches("http://").to_string();
    for preface in [
        // HTTP/2: the preface and an empty SETTINGS frame.
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00"[..],
        // HTTP/1.1: one request, then silence on the kept-alive connection.
        &b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"[..],
    ] {
        let mut conn = tokio::net::TcpStream::connect(&addr).await.unwrap();
        conn.write_all(preface).await.unwrap();
        let mut sink = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(8), conn.read_to_end(&mut sink)).await;
        assert!(
            closed.is_ok(),
            "an idle connection stayed open: {:?}",
            String::from_utf8_lossy(&preface[..3])
        );
    }
}

/// An HTTP/2 client that shuts its flow-control window (so no response
/// body can be sent) while answering pings cannot hold one of
/// `--max-connections`: a response that waits on the client for
/// `--client-timeout` closes its connection.
#[tokio::test]
async fn a_shut_http2_window_does_not_hold_a_slot() {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let (_d, s) = start(&["--client-timeout", "1s", "--max-connections", "1"]);
    let addr = s.api.trim_start_matches("http://").to_string();
    let tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(0)
        .initial_connection_window_size(0)
        .handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    let held = tokio::spawn(conn);
    let req = http::Request::get(format!("http://{addr}/stat"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    // The head arrives; the body never can.
    let _res = send.send_request(req).await.unwrap();
    let other = client()
        .get(s.url("/healthz"))
        .timeout(Duration::from_secs(8))
        .send()
        .await
        .expect("the stalled connection still held the only slot");
    assert_eq!(other.status(), 200);
    held.abort();
}

/// POSTs `body` with the given `Content-Type`; the status.
async fn post_typed(s: &Server, path: &str, content_type: &str, body: &'static str) -> StatusCode {
    client()
        .post(s.url(path))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap()
        .status()
}

async fn head(s: &Server, path: &str) -> reqwest::Response {
    client().head(s.url(path)).send().await.unwrap()
}

async fn get_text(s: &Server, path: &str) -> String {
    client()
        .get(s.url(path))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

async fn put_bytes(s: &Server, key: &str, body: &'static [u8], ttl: Option<&str>) -> StatusCode {
    let mut r = client()
        .post(s.url(&format!("/pickle/{key}")))
        .header("content-type", "application/octet-stream")
        .body(body);
    if let Some(ttl) = ttl {
        r = r.header("x-bigcache-ttl", ttl);
    }
    r.send().await.unwrap().status()
}

#[tokio::test]
async fn incr_is_atomic_keeps_the_lifetime_and_refuses_what_is_not_an_integer() {
    let (_d, s) = start(&[]);
    assert_eq!(put_bytes(&s, "n", b"41", Some("1h")).await, 200);
    let (st, v) = post_json(&s, "/incr/n", json!({})).await;
    assert_eq!((st, v["value"].clone()), (StatusCode::OK, json!(42)));
    let (_, v) = post_json(&s, "/incr/n", json!({"delta": -50})).await;
    assert_eq!(v["value"], -8);
    let r = head(&s, "/pickle/n").await;
    let left: u64 = r.headers()["x-bigcache-ttl"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3590..=3600).contains(&left), "lifetime lost: {left}");
    assert_eq!(get_text(&s, "/pickle/n").await, "-8");

    // 200 increments from 8 clients at once: none is lost.
    put_bytes(&s, "c", b"0", None).await;
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let url = s.url("/incr/c");
        tasks.push(tokio::spawn(async move {
            for _ in 0..25 {
                let r = client()
                    .post(&url)
                    .header("content-type", "application/json")
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(get_text(&s, "/pickle/c").await, "200");
    assert!(
        head(&s, "/pickle/c")
            .await
            .headers()
            .get("x-bigcache-ttl")
            .is_none()
    );

    // A JSON integer set through /cache counts too.
    post_json(&s, "/cache/j", json!({"value": 7})).await;
    assert_eq!(
        post_json(&s, "/incr/j", json!({"delta": 3})).await.1["value"],
        10
    );
    assert_eq!(get_json(&s, "/cache/j").await.1["value"], 10);

    assert_eq!(
        post_json(&s, "/incr/missing", json!({})).await.0,
        StatusCode::NOT_FOUND
    );
    put_bytes(&s, "text", b"+5", None).await;
    assert_eq!(
        post_json(&s, "/incr/text", json!({})).await.0,
        StatusCode::CONFLICT
    );
    put_bytes(&s, "max", b"9223372036854775807", None).await;
    assert_eq!(
        post_json(&s, "/incr/max", json!({})).await.0,
        StatusCode::CONFLICT
    );
    assert_eq!(get_text(&s, "/pickle/max").await, "9223372036854775807");
    assert_eq!(
        post_json(&s, "/incr/n", json!({"delta": "x"})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(
        post_typed(&s, "/incr/n", "application/x-www-form-urlencoded", "").await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test]
async fn bulk_calls_read_write_and_delete_many_keys_in_one_request() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let (_d, s) = start(&[]);
    let items: Vec<Value> = (0..100)
        .map(|i| json!({"key": format!("k{i}"), "value": b64(&[i as u8, 0, 255]), "ttl": "1h"}))
        .collect();
    let (st, v) = post_json(&s, "/many/set", json!({ "items": items })).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"stored": 100})));
    let bytes = client()
        .get(s.url("/pickle/k7"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &[7, 0, 255]);

    let mut keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
    keys.push("absent".into());
    let (st, v) = post_json(&s, "/many/get", json!({ "keys": keys })).await;
    assert_eq!(st, StatusCode::OK);
    let values = v["values"].as_object().unwrap();
    assert_eq!(values.len(), 100);
    assert_eq!(values["k42"]["value"], b64(&[42, 0, 255]));
    assert!(values["k42"]["expire"].as_f64().unwrap() > now() + 3500.0);

    // One bad item: nothing is stored.
    let (st, _) = post_json(
        &s,
        "/many/set",
        json!({"items": [
        {"key": "fresh", "value": b64(b"x")}, {"key": "bad", "value": "not base64!"}]}),
    )
    .await;
    assert_eq!(st, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(get_json(&s, "/pickle/fresh").await.0, StatusCode::NOT_FOUND);
    let too_many: Vec<String> = (0..1001).map(|i| format!("x{i}")).collect();
    assert_eq!(
        post_json(&s, "/many/get", json!({ "keys": too_many }))
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        post_json(&s, "/many/get", json!({"keys": [""]})).await.0,
        StatusCode::BAD_REQUEST
    );

    let (st, v) = post_json(&s, "/many/delete", json!({"keys": ["k1", "k2", "absent"]})).await;
    assert_eq!((st, v), (StatusCode::OK, json!({"deleted": 2})));
    assert_eq!(get_json(&s, "/pickle/k1").await.0, StatusCode::NOT_FOUND);
    assert_eq!(get_json(&s, "/pickle/k3").await.0, StatusCode::OK);

    assert_eq!(
        post_typed(&s, "/many/set", "text/plain", r#"{"items": []}"#).await,
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
}

#[tokio::test]
async fn head_tells_existence_and_time_left_without_a_body() {
    let (_d, s) = start(&[]);
    put_bytes(&s, "h", b"some bytes", Some("10m")).await;
    let r = head(&s, "/pickle/h").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-bigcache-ttl"], "600");
    assert!(r.bytes().await.unwrap().is_empty());
    assert_eq!(head(&s, "/pickle/nope").await.status(), 404);
}

#[tokio::test]
async fn keys_are_listed_by_prefix_a_page_at_a_time() {
    let (_d, s) = start_local(&[]).await;
    for i in 0..2000 {
        assert_eq!(put_bytes(&s, &format!("p:{i:04}"), b"x", None).await, 200);
    }
    for k in ["p", "q:1", "o:9"] {
        put_bytes(&s, k, b"x", None).await;
    }
    put_bytes(&s, "p:short", b"x", Some("10s")).await;
    s.advance(Duration::from_secs(20));
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut url = s.url("/keys");
        url.push_str("?prefix=p%3A&limit=1000");
        if let Some(a) = &after {
            url.push_str(&format!("&after={a}"));
        }
        let v: Value = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        pages += 1;
        seen.extend(
            v["keys"]
                .as_array()
                .unwrap()
                .iter()
                .map(|k| k.as_str().unwrap().to_string()),
        );
        match v["next"].as_str() {
            Some(n) => after = Some(n.to_string()),
            None => break,
        }
        assert!(pages < 10, "the cursor does not advance");
    }
    let expected: Vec<String> = (0..2000).map(|i| format!("p:{i:04}")).collect();
    assert_eq!(
        seen, expected,
        "missing, repeated, unordered, foreign or expired keys"
    );
    assert_eq!(pages, 2, "a trailing empty page");
    // A cursor below or outside the prefix.
    let (_, v) = get_json(&s, "/keys?prefix=p%3A19&after=a&limit=5").await;
    assert_eq!(v["keys"][0], "p:1900");
    let (_, v) = get_json(&s, "/keys?prefix=p%3A&after=z").await;
    assert_eq!(v, json!({"keys": [], "next": null}));
    let (st, _) = get_json(&s, "/keys?limit=1001").await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (_, v) = get_json(&s, "/keys?prefix=q").await;
    assert_eq!(v, json!({"keys": ["q:1"], "next": null}));
}

#[tokio::test]
async fn a_conditional_delete_removes_only_the_expected_value() {
    let (_d, s) = start(&[]);
    put_bytes(&s, "lock", b"token-a", Some("1m")).await;
    let del = |token: &'static str| {
        client()
            .delete(s.url("/pickle/lock"))
            .header("x-bigcache-if-equals", token)
            .send()
    };
    assert_eq!(
        del("token-b").await.unwrap().status(),
        StatusCode::PRECONDITION_FAILED
    );
    assert_eq!(get_json(&s, "/pickle/lock").await.0, StatusCode::OK);
    assert_eq!(del("token-a").await.unwrap().status(), StatusCode::OK);
    assert_eq!(get_json(&s, "/pickle/lock").await.0, StatusCode::NOT_FOUND);
    assert_eq!(
        del("token-a").await.unwrap().status(),
        StatusCode::NOT_FOUND
    );
    let bad = client()
        .delete(s.url("/pickle/lock"))
        .header(
            "x-bigcache-if-equals",
            reqwest::header::HeaderValue::from_bytes(b"caf\xc3\xa9").unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_bulk_read_stops_at_the_body_limit_and_names_what_it_skipped() {
    use base64::Engine;
    let (_d, s) = start(&["--max-body-size", "64KiB"]);
    let big = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 20_000]);
    for i in 0..6 {
        let items = json!({"items": [{"key": format!("big{i}"), "value": big}]});
        assert_eq!(post_json(&s, "/many/set", items).await.0, StatusCode::OK);
    }
    let keys: Vec<String> = (0..6).map(|i| format!("big{i}")).collect();
    let (st, v) = post_json(&s, "/many/get", json!({ "keys": keys })).await;
    assert_eq!(st, StatusCode::OK);
    let mut named: Vec<String> = v["values"].as_object().unwrap().keys().cloned().collect();
    let skipped: Vec<String> = v["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    // 64 KiB holds four 20,000-byte values: the fourth crosses the limit.
    assert_eq!((named.len(), skipped.len()), (4, 2));
    named.extend(skipped);
    named.sort();
    assert_eq!(named, keys, "every key is either read or named");
}
