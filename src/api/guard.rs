//! Who may use the API: the bearer token when one is set, and no browser
//! page on any origin (a cross-site request could purge or write through
//! the visitor's own loopback).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;

pub(super) async fn require_token(
    State(st): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    if let Some(token) = &st.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.as_bytes())) {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(req).await
}

/// Refuses what a web page open in a browser on this host could send: the
/// API can overwrite values that Django unpickles, and purge everything.
/// - a request the browser marks as cross-site (`Sec-Fetch-Site`), or whose
///   `Origin` is not this API's own (the docs page is);
/// - without a token, a `Host` that is a name other than `localhost` or an
///   `--api-host` (DNS rebinding: a page whose name resolves to 127.0.0.1
///   is same-origin to the browser, but its `Host` is its own name);
/// - a write (`POST /cache`, `POST /pickle`) without a content type, or with
///   one a form or a no-cors `fetch` can send: such requests need no CORS
///   preflight, so a page could send them blind.
pub(super) async fn guard_browsers(
    State(st): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    match browser_problem(&st, &req) {
        Some(e) => e.into_response(),
        None => next.run(req).await,
    }
}

fn browser_problem(st: &ApiState, req: &Request) -> Option<ApiError> {
    let h = req.headers();
    let host = h.get(header::HOST).and_then(|v| v.to_str().ok());
    if let Some(site) = h.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return Some(ApiError::Forbidden(
            "cross-site requests are refused".into(),
        ));
    }
    if let Some(origin) = h.get(header::ORIGIN) {
        let own = host.is_some_and(|host| {
            origin
                .to_str()
                .ok()
                .and_then(|o| o.strip_prefix("http://"))
                .is_some_and(|o| o.eq_ignore_ascii_case(host))
        });
        if !own {
            return Some(ApiError::Forbidden(
                "requests from other origins (web pages) are refused".into(),
            ));
        }
    }
    if st.token.is_none()
        && let Some(host) = host
        && !host_allowed(host, &st.hosts)
    {
        return Some(ApiError::Forbidden(format!(
            "Host {host:?} is not allowed without --api-token; use an IP address, \
             localhost, or name it with --api-host"
        )));
    }
    let path = req.uri().path();
    let writes = req.method() == axum::http::Method::POST
        && ["/cache/", "/pickle/", "/incr/", "/many/", "/purge"]
            .iter()
            .any(|route| path.starts_with(route));
    if writes {
        let essence = h
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|v| {
                v.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            });
        let simple = |t: &str| {
            matches!(
                t,
                "" | "text/plain" | "application/x-www-form-urlencoded" | "multipart/form-data"
            )
        };
        if essence.as_deref().is_none_or(simple) {
            return Some(ApiError::UnsupportedMediaType(
                "writes need a Content-Type: application/json for /cache, /incr, /many and /purge, \
                 application/octet-stream (or another non-form type) for /pickle"
                    .into(),
            ));
        }
    }
    None
}

/// Whether a `Host` header names this API safely: an IP literal, a
/// `localhost` name, or a name the operator allowed.
fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if host.starts_with('[') {
        return true;
    } else {
        match host.rsplit_once(':') {
            Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) => n,
            _ => host,
        }
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name.parse::<std::net::Ipv4Addr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(&name))
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
