//! The upstream (Django) side: a pooled keep-alive HTTP/1.1 client, the
//! rewriting of requests and responses a proxy owes (hop-by-hop headers,
//! `X-Forwarded-*`), and timeouts on every call.

use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::body::Body;
use super::error::{ProxyError, chain};

/// Why an upstream URL cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamUrlError {
    #[error("upstream URL {0} needs http://")]
    NoScheme(Uri),
    #[error("upstream scheme {0} is not supported; use http://")]
    Scheme(http::uri::Scheme),
    #[error("upstream URL {0} needs a host")]
    NoHost(Uri),
}

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for n in named {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

pub struct UpstreamConfig {
    pub base: Uri,
    pub connect_timeout: Duration,
    /// Time allowed for the response head, and separately for a cached
    /// body to arrive in full.
    pub timeout: Duration,
}

pub struct Upstream {
    client: Client<HttpConnector, Body>,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    pub timeout: Duration,
}

impl Upstream {
    pub fn new(cfg: &UpstreamConfig) -> Result<Upstream, UpstreamUrlError> {
        let scheme = cfg
            .base
            .scheme()
            .cloned()
            .ok_or_else(|| UpstreamUrlError::NoScheme(cfg.base.clone()))?;
        if scheme != http::uri::Scheme::HTTP {
            return Err(UpstreamUrlError::Scheme(scheme));
        }
        let authority = cfg
            .base
            .authority()
            .cloned()
            .ok_or_else(|| UpstreamUrlError::NoHost(cfg.base.clone()))?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(cfg.connect_timeout));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build(connector);
        Ok(Upstream {
            client,
            scheme,
            authority,
            timeout: cfg.timeout,
        })
    }

    /// Sends a request whose headers were prepared by [`forward_headers`];
    /// the URI is rewritten to the upstream. Times out on the response head.
    pub async fn send(&self, mut req: Request<Body>) -> Result<Response<Incoming>, ProxyError> {
        let pq = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|e| ProxyError::BadRequest(e.to_string()))?;
        *req.version_mut() = http::Version::HTTP_11;
        match tokio::time::timeout(self.timeout, self.client.request(req)).await {
            Err(_) => Err(ProxyError::UpstreamTimeout),
            Ok(Err(e)) if e.is_connect() => Err(ProxyError::UpstreamUnreachable(e.to_string())),
            Ok(Err(e)) => Err(ProxyError::UpstreamBroken(chain(&e))),
            Ok(Ok(res)) => Ok(res),
        }
    }
}

/// Prepares a client's request headers for the upstream: hop-by-hop
/// headers removed, `Host` kept (Django checks it against ALLOWED_HOSTS),
/// `X-Forwarded-For` appended with the client's address, and
/// `X-Forwarded-Proto`/`-Host` set, or kept when the client is on loopback
/// (an nginx in front of bigcache on the same machine, which terminates
/// TLS and knows the real scheme).
pub fn forward_headers(headers: &mut HeaderMap, uri: &Uri, peer: SocketAddr) {
    strip_hop_by_hop(headers);
    if !headers.contains_key(header::HOST)
        && let Some(a) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(header::HOST, v);
    }
    let trusted = peer.ip().is_loopback();
    let xff = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(prev) if trusted => format!("{prev}, {}", peer.ip()),
        _ => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        headers.insert("x-forwarded-for", v);
    }
    if !trusted || !headers.contains_key("x-forwarded-proto") {
        headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    }
    if (!trusted || !headers.contains_key("x-forwarded-host"))
        && let Some(host) = headers.get(header::HOST).cloned()
    {
        headers.insert("x-forwarded-host", host);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("content-type", "text/html".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn forwarded_headers() {
        let uri: Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", "example.org".parse().unwrap());
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        let mut outside = h.clone();
        forward_headers(&mut outside, &uri, "203.0.113.9:5000".parse().unwrap());
        assert_eq!(outside["x-forwarded-for"], "203.0.113.9");
        assert_eq!(outside["x-forwarded-proto"], "http");
        assert_eq!(outside["x-forwarded-host"], "example.org");
        assert_eq!(outside["host"], "example.org");
        forward_headers(&mut h, &uri, "127.0.0.1:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
