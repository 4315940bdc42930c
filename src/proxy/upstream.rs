//! The upstream (Django) side: a pooled keep-alive HTTP/1.1 client with
//! timeouts on every call. What a request's headers become on the way is
//! `proxy::forward`.

use std::time::Duration;

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
