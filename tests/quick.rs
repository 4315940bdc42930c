//! Hits answered on the socket, without hyper (`server::quick`): the same
//! answer the general path gives, and every other request on the
//! connection handed to hyper exactly as the client sent it.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::origin::Origin;
use crate::util::{Server, get_json, start_proxy as start, stored};

const PAGE: &str = "/q/page/?h=X-Bigcache-TTL:1h&etag=v1&fixed=1&h=Content-Language:fr";

/// One response read off a raw connection: its head lines and body.
struct Raw {
    status: u16,
    /// (lower-cased name, value), in the order sent.
    fields: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response with a `Content-Length` body from `conn`, `buf`
/// holding bytes already read past the previous one.
async fn read_response(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Raw {
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 8192];
        let n = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut chunk))
            .await
            .expect("a response within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buf[..end].to_vec()).unwrap();
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap()[9..12].parse().unwrap();
    let fields: Vec<(String, String)> = lines
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.to_ascii_lowercase(), v.trim().to_string())
        })
        .collect();
    let length: usize = fields
        .iter()
        .find(|(n, _)| n == "content-length")
        .map_or(0, |(_, v)| v.parse().unwrap());
    buf.drain(..end + 4);
    while buf.len() < length {
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-body");
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf.drain(..length).collect();
    Raw {
        status,
        fields,
        body,
    }
}

async fn connect(s: &Server) -> TcpStream {
    TcpStream::connect(s.proxy.trim_start_matches("http://"))
        .await
        .unwrap()
}

/// Sends `requests` in one write and reads one response per request.
async fn exchange(s: &Server, requests: &str, n: usize) -> Vec<Raw> {
    let mut conn = connect(s).await;
    conn.write_all(requests.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(read_response(&mut conn, &mut buf).await);
    }
    out
}

async fn quick_hits(s: &Server) -> u64 {
    let (_, stat) = get_json(s, "/stat").await;
    stat["proxy"]["quick_hits"].as_u64().unwrap()
}

/// A page cached and read once (so it is in the RAM tier).
async fn cached(o: &Origin, s: &Server) {
    let first = exchange(
        s,
        &format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        1,
    )
    .await;
    assert_eq!(first[0].field("x-cache"), Some("MISS"));
    stored(s, 1).await;
    let again = exchange(
        s,
        &format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        1,
    )
    .await;
    assert_eq!(again[0].field("x-cache"), Some("HIT"));
    assert_eq!(o.count(PAGE), 1);
}

/// Pipelined requests: hits, 304s and ranges are answered on the socket,
/// a bypassed request through the general path on the same connection,
/// and the first request with a body and all after it by hyper, in
/// order, from the bytes already read.
#[tokio::test(flavor = "multi_thread")]
async fn the_connection_goes_to_hyper_intact_at_the_first_request_with_a_body() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    cached(&o, &s).await;
    let before = quick_hits(&s).await;
    let plain = format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\n\r\n");
    let requests = [
        plain.clone(),
        format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic eDp5\r\n\r\n"),
        plain.clone(),
        format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nIf-None-Match: \"v1\"\r\n\r\n"),
        format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nRange: bytes=0-3\r\n\r\n"),
        format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\nxy"),
        plain.clone(),
    ]
    .concat();
    let got = exchange(&s, &requests, 7).await;
    let seen: Vec<(u16, Option<&str>)> =
        got.iter().map(|r| (r.status, r.field("x-cache"))).collect();
    assert_eq!(
        seen,
        [
            (200, Some("HIT")),
            (200, Some("BYPASS")),
            (200, Some("HIT")),
            (304, Some("HIT")),
            (206, Some("HIT")),
            (200, Some("HIT")),
            (200, Some("HIT")),
        ]
    );
    assert_eq!(got[4].body.len(), 4);
    assert_eq!(quick_hits(&s).await, before + 4, "hyper had the last two");
    assert_eq!(o.count(PAGE), 2, "only the credentialed request went up");
}

/// Requests whose framing or meaning the general path must judge are
/// handed over as sent: a body on a GET is read as a body (not as a
/// second request), two Hosts and an absolute target are hyper's and the
/// proxy's to refuse or key, a session is never answered from the cache.
#[tokio::test(flavor = "multi_thread")]
async fn requests_that_are_not_plain_hits_are_the_general_paths() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    cached(&o, &s).await;
    let before = quick_hits(&s).await;
    // The body spells a request for another page: it must not be one.
    let smuggled = "GET /other/?h=X-Bigcache-TTL:1h HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let with_body = format!(
        "GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    let mut conn = connect(&s).await;
    conn.write_all(with_body.as_bytes()).await.unwrap();
    conn.write_all(
        format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let first = read_response(&mut conn, &mut buf).await;
    let second = read_response(&mut conn, &mut buf).await;
    assert_eq!((first.status, first.field("x-cache")), (200, Some("HIT")));
    assert_eq!((second.status, second.field("x-cache")), (200, Some("HIT")));
    let mut rest = Vec::new();
    conn.read_to_end(&mut rest).await.unwrap();
    assert!(buf.is_empty() && rest.is_empty(), "no third answer");
    assert_eq!(o.count("/other/?h=X-Bigcache-TTL:1h"), 0);

    let two_hosts = exchange(
        &s,
        &format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nHost: y\r\n\r\n"),
        1,
    )
    .await;
    assert_eq!(two_hosts[0].status, 400);
    let absolute = exchange(
        &s,
        &format!("GET http://localhost{PAGE} HTTP/1.1\r\nHost: localhost\r\n\r\n"),
        1,
    )
    .await;
    assert_eq!(absolute[0].status, 200);
    let session = exchange(
        &s,
        &format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nCookie: a=1; sessionid=abc\r\n\r\n"),
        1,
    )
    .await;
    assert_eq!(session[0].field("x-cache"), Some("BYPASS"));
    let unknown_host = exchange(
        &s,
        &format!("GET {PAGE} HTTP/1.1\r\nHost: elsewhere.example\r\n\r\n"),
        1,
    )
    .await;
    assert_eq!(unknown_host[0].field("x-cache"), Some("BYPASS"));
    let http10 = exchange(
        &s,
        &format!("GET {PAGE} HTTP/1.0\r\nHost: localhost\r\n\r\n"),
        1,
    )
    .await;
    assert_eq!(http10[0].field("x-cache"), Some("HIT"));
    assert_eq!(quick_hits(&s).await, before, "none of them was quick");
    // A cookie that is not a session's does not stop a quick hit.
    let anonymous = exchange(
        &s,
        &format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nCookie: csrftoken=t\r\n\r\n"),
        1,
    )
    .await;
    assert_eq!(anonymous[0].field("x-cache"), Some("HIT"));
    assert_eq!(quick_hits(&s).await, before + 1);
}

/// With `--access-log`, every request takes the general path, which
/// writes its line.
#[tokio::test(flavor = "multi_thread")]
async fn an_access_log_sees_every_hit() {
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let (_d, s) = start(&o.url(), &["--access-log", log.to_str().unwrap()]);
    cached(&o, &s).await;
    assert_eq!(quick_hits(&s).await, 0);
}

/// Sends `head` a byte at a time, one every 300 ms, for at most 6 s;
/// returns whether the server closed the connection meanwhile.
async fn trickled_out(conn: &mut TcpStream, head: &[u8]) -> bool {
    for b in head.iter().cycle().take(20) {
        if conn.write_all(&[*b]).await.is_err() {
            return true;
        }
        let mut probe = [0u8; 1];
        let read = tokio::time::timeout(Duration::from_millis(300), conn.read(&mut probe)).await;
        if let Ok(Ok(0) | Err(_)) = read {
            return true;
        }
    }
    false
}

/// A client trickling its head a byte at a time gets the client timeout
/// for the whole head, from when the wait for it began: before its first
/// request, and after a request answered on the socket.
#[tokio::test(flavor = "multi_thread")]
async fn a_trickled_head_gets_the_client_timeout_once() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--client-timeout", "1s"]);
    cached(&o, &s).await;
    let head = format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
    let mut first = connect(&s).await;
    assert!(
        trickled_out(&mut first, head.as_bytes()).await,
        "a head trickled for 6 s"
    );
    let mut after = connect(&s).await;
    after
        .write_all(format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let answered = read_response(&mut after, &mut Vec::new()).await;
    assert_eq!(answered.field("x-cache"), Some("HIT"));
    assert!(
        trickled_out(&mut after, head.as_bytes()).await,
        "a second head trickled for 6 s"
    );
}

/// Once a request was answered on the socket the connection stays
/// HTTP/1.1: HTTP/2's preface at the next request boundary is no switch
/// of protocol (hyper answers it as a bad HTTP/1.1 request, or closes).
#[tokio::test(flavor = "multi_thread")]
async fn no_switch_to_http2_after_a_quick_answer() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    cached(&o, &s).await;
    let mut conn = connect(&s).await;
    conn.write_all(
        format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\n\r\nPRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let hit = read_response(&mut conn, &mut buf).await;
    assert_eq!(hit.field("x-cache"), Some("HIT"));
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
    buf.extend_from_slice(&rest);
    // An HTTP/2 server's first frame is SETTINGS: type 4 at byte 3.
    assert!(
        buf.is_empty() || buf.starts_with(b"HTTP/1.1 "),
        "{:?}",
        &buf[..buf.len().min(32)]
    );
}

/// The wait for a connection's first bytes and for the rest of its first
/// head share one client timeout: a client that speaks just before it runs
/// out gets no fresh timeout for the head (it got one, then hyper another:
/// three in all).
#[tokio::test(flavor = "multi_thread")]
async fn the_first_bytes_and_the_first_head_share_the_client_timeout() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &["--client-timeout", "2s"]);
    cached(&o, &s).await;
    let mut conn = connect(&s).await;
    let opened = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(1700)).await;
    let head = format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\nX-Slow: ");
    assert!(trickled_out(&mut conn, head.as_bytes()).await);
    let closed = opened.elapsed();
    // Closed at 2 s; a fresh timeout from the first byte closed it at 3.7 s.
    assert!(
        closed < Duration::from_millis(3200),
        "closed after {closed:?}"
    );
}

/// A client that hangs up while its request waits on the upstream lets it
/// go, as hyper does: the request is dropped (never answered or counted),
/// and its connection and the upstream's are free again.
#[tokio::test(flavor = "multi_thread")]
async fn a_client_hanging_up_mid_request_is_let_go() {
    let o = Origin::start().await;
    let (_d, s) = start(&o.url(), &[]);
    let mut conn = connect(&s).await;
    conn.write_all(
        b"GET /slow/?delay=1500 HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic eDp5\r\n\r\n",
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(conn);
    // Past the upstream's answer: had the request gone on, it would be
    // counted by now.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (_, stat) = get_json(&s, "/stat").await;
    assert_eq!(stat["proxy"]["bypass"], 0, "{stat}");
    assert_eq!(o.count("/slow/?delay=1500"), 1, "it did reach the upstream");
}

/// `--proxy-listen unix:PATH`: the socket file is made (mode 0666), pages
/// are served and hits answered on the fast path through it, a peer on it
/// counts as 127.0.0.1 (trusted here: its forwarding fields are read, its
/// `https` keys the page apart), and a clean stop removes the file.
#[tokio::test(flavor = "multi_thread")]
async fn the_proxy_serves_on_a_unix_socket() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    use tokio::net::UnixStream;
    let o = Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("proxy.sock");
    let mut child = std::process::Command::new(crate::util::BIN)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .args(["--api-listen", "127.0.0.1:0", "--upstream", &o.url()])
        .args(["--trusted-proxy", "127.0.0.1", "--log", "warn"])
        .arg("--proxy-listen")
        .arg(format!("unix:{}", sock.display()))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.trim_end()
            .ends_with(&format!("proxy=unix:{}", sock.display())),
        "{line}"
    );
    let api = line
        .split("api=")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    let ask = |fields: &'static str| {
        let sock = sock.clone();
        async move {
            let mut c = UnixStream::connect(&sock).await.unwrap();
            let head = format!("GET {PAGE} HTTP/1.1\r\nHost: localhost\r\n{fields}\r\n");
            c.write_all(head.as_bytes()).await.unwrap();
            let mut out = Vec::new();
            let mut chunk = [0u8; 8192];
            while !out.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut chunk).await.unwrap();
                assert!(n > 0);
                out.extend_from_slice(&chunk[..n]);
            }
            String::from_utf8_lossy(&out).to_lowercase()
        }
    };
    let stat = || async {
        let url = format!("{api}/stat");
        let v: serde_json::Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        v
    };
    assert!(ask("").await.contains("x-cache: miss"));
    for _ in 0..500 {
        if stat().await["count"].as_u64() >= Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(ask("").await.contains("x-cache: hit"));
    assert_eq!(stat().await["proxy"]["quick_hits"], 1);
    // A trusted front's https: another site's copy of the page.
    assert!(
        ask("X-Forwarded-Proto: https\r\n")
            .await
            .contains("x-cache: miss")
    );
    assert_eq!(o.count(PAGE), 2);
    std::process::Command::new("kill")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    child.wait().unwrap();
    assert!(!sock.exists(), "the socket file is removed at a clean stop");
}
