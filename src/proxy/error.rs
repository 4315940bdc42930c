//! The proxy's errors, and the one place that maps them to statuses.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use super::body::{self, Body};

/// Errors answered to the client.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("upstream failed: {0}")]
    UpstreamBroken(String),
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request target longer than {0} bytes")]
    TargetTooLong(usize),
    /// An ESI page that could not be assembled (`proxy::esi`).
    #[error("ESI: {0}")]
    Esi(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnreachable(_)
            | ProxyError::UpstreamBroken(_)
            | ProxyError::Esi(_) => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::TargetTooLong(_) => StatusCode::URI_TOO_LONG,
        }
    }

    /// A short plain-text response: the status line's words, never the
    /// upstream's error text (that goes to the log).
    pub fn to_response(&self) -> Response<Body> {
        let status = self.status();
        let text = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut res = Response::new(body::full(Bytes::from(text)));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }
}

/// Describes an error with every source it wraps, for logs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        assert_eq!(ProxyError::UpstreamTimeout.status(), 504);
        assert_eq!(ProxyError::UpstreamUnreachable("x".into()).status(), 502);
        let res = ProxyError::UpstreamBroken("secret detail".into()).to_response();
        assert_eq!(res.status(), 502);
    }
}
