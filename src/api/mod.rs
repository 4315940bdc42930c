//! The REST API (default port 36379), wire-compatible with the original
//! Python server's `/cache` endpoints and extended with `/pickle`, `/prefix`,
//! `/stat`, `/clear`, `/docs` and `/openapi.json`.
//!
//! - [`key`]: how a URL becomes a key (read this before using the API).
//! - [`error`]: the error type and its HTTP statuses.
//! - [`docs`]: the OpenAPI document and the offline Swagger UI at `/docs`.
//! - `guard`: who may use the API (the token, no browser pages).
//! - `stat`: `/stat`, `/stat/count`, `/metrics`.
//!
//! Routing uses axum: it is hyper and tower underneath (the same stack as the
//! proxy), and its extractors and router make each endpoint a short function
//! instead of hand-matched paths. Keys are taken from the raw URI rather than
//! axum's path extractor because the key rule needs the undecoded path and
//! the query string.
//!
//! Responses that carry a stored JSON value are assembled from the stored
//! bytes without re-parsing them: the value was validated when it was
//! written and the record's checksum guards it since.

pub mod bulk_purge;
pub mod counter;
pub mod docs;
pub mod error;
mod guard;
pub mod key;
pub mod listing;
pub mod many;
pub mod purge;
mod stat;

use guard::{guard_browsers, require_token};
use stat::{count_requests, metrics, stat, stat_count};

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::metrics::Stats;

use crate::proxy::stats::ProxyStats;
use crate::store::{DeleteIf, Kind, Lookup, Namespace, Record, Store};
use crate::ttl;
use error::ApiError;

/// Limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_body: usize,
    pub max_key: usize,
    /// Time a request body may take to arrive in full: a body trickled a
    /// byte at a time cannot hold a connection and its buffer forever.
    pub body_timeout: std::time::Duration,
}

#[derive(Clone)]
pub struct ApiState {
    pub store: Store,
    pub stats: Arc<Stats>,
    pub proxy_stats: Arc<ProxyStats>,
    pub limits: Limits,
    /// When set, every endpoint but the docs and `/healthz` needs
    /// `Authorization: Bearer <token>`.
    pub token: Option<Arc<str>>,
    /// Host names (beside IP literals and `localhost`) the API answers to
    /// without a token (`--api-host`).
    pub hosts: Arc<[String]>,
    /// What `GET /metrics` reports (`crate::metrics::registry`).
    pub metrics: Arc<prometheus_client::registry::Registry>,
    /// Refreshes soft-purged pages at once when a purge asks (`warm`).
    pub rewarm: Option<Arc<crate::proxy::rewarm::Rewarmer>>,
    /// The proxy's query rules: a purge reaches a page under the key its
    /// requests are looked up by.
    pub query: crate::proxy::query::QueryRules,
}

pub fn router(state: ApiState) -> Router {
    // One reference count per request instead of a clone of every field:
    // axum clones the state for each handler and middleware.
    let state = Arc::new(state);
    let api = Router::new()
        .route(
            "/cache/{*key}",
            post(set_value).get(get_value).delete(delete_value),
        )
        .route(
            "/pickle/{*key}",
            post(set_bytes)
                .get(get_bytes)
                .delete(delete_bytes)
                .patch(touch_bytes),
        )
        .route("/incr/{*key}", post(counter::incr))
        .route("/keys", get(listing::keys))
        .route("/purge", post(bulk_purge::purge))
        .route("/many/get", post(many::get_many))
        .route("/many/set", post(many::set_many))
        .route("/many/delete", post(many::delete_many))
        .route(
            "/prefix/{*prefix}",
            axum::routing::delete(purge::delete_prefix),
        )
        .route("/prefix/", axum::routing::delete(purge::empty_prefix))
        .route("/prefix", axum::routing::delete(purge::empty_prefix))
        .route("/tag/{*tag}", axum::routing::delete(purge::delete_tag))
        .route("/tag/", axum::routing::delete(purge::empty_tag))
        .route("/tag", axum::routing::delete(purge::empty_tag))
        .route("/stat", get(stat))
        .route("/stat/count", get(stat_count))
        .route("/metrics", get(metrics))
        .route("/clear", get(clear_by_get).post(clear).delete(clear))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard_browsers,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .with_state(state);
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .merge(docs::router())
        .merge(api)
        .fallback(|| async { ApiError::NotFound("Not Found".into()) })
}

/// The part of the path after `route` (e.g. `/cache/`), still encoded.
fn rest<'a>(uri: &'a Uri, route: &str) -> &'a str {
    uri.path().strip_prefix(route).unwrap_or("")
}

async fn read_body(body: Body, limits: &Limits) -> Result<Bytes, ApiError> {
    let max = limits.max_body;
    let collected = tokio::time::timeout(limits.body_timeout, Limited::new(body, max).collect())
        .await
        .map_err(|_| {
            ApiError::Timeout(format!(
                "request body did not arrive within {}",
                humantime::format_duration(limits.body_timeout)
            ))
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => Err(ApiError::TooLarge(
            format!("request body is larger than the {max}-byte limit"),
        )),
        Err(e) => Err(ApiError::BadRequest(format!("reading request body: {e}"))),
    }
}

/// Deadline in unix ms from a duration text or an absolute unix time in
/// seconds; the duration wins when both are given. `now` is unix ms.
fn deadline(
    duration: Option<&str>,
    expire: Option<f64>,
    now: u64,
) -> Result<Option<u64>, ApiError> {
    if let Some(text) = duration {
        let d = ttl::parse(text)?;
        return Ok(Some(now + d.as_millis() as u64));
    }
    match expire {
        None => Ok(None),
        Some(e) if !e.is_finite() => Err(ApiError::Unprocessable(
            "expire must be a finite unix time in seconds".into(),
        )),
        // 0 encodes "never", so a deadline in the past is clamped to 1 ms.
        Some(e) => Ok(Some(((e * 1000.0) as u64).clamp(1, ttl_cap(now)))),
    }
}

fn ttl_cap(now: u64) -> u64 {
    now + ttl::MAX_TTL.as_millis() as u64
}

fn expire_secs(rec: &Record) -> Option<f64> {
    rec.expires_at.map(|ms| ms as f64 / 1000.0)
}

/// `{"key":..,"value":<stored JSON>,"expire":..[,"duration":..]}`.
fn value_json(key: &str, value: &Bytes, expire: Option<f64>, duration: Option<&str>) -> Response {
    let mut head = Vec::with_capacity(key.len() + 24);
    head.extend_from_slice(b"{\"key\":");
    // Serializing a str or an Option of numbers/strs cannot fail.
    let _ = serde_json::to_writer(&mut head, key);
    head.extend_from_slice(b",\"value\":");
    let mut tail = Vec::with_capacity(48);
    tail.extend_from_slice(b",\"expire\":");
    let _ = serde_json::to_writer(&mut tail, &expire);
    if let Some(d) = duration {
        tail.extend_from_slice(b",\"duration\":");
        let _ = serde_json::to_writer(&mut tail, &(!d.is_empty()).then_some(d));
    }
    tail.push(b'}');
    // The value goes out as the buffer it is stored in, between the two.
    let body = Chunks([Bytes::from(head), value.clone(), Bytes::from(tail)].into());
    (
        [(header::CONTENT_TYPE, "application/json")],
        Body::new(body),
    )
        .into_response()
}

/// A response body sent as the buffers it is made of, so a stored value
/// is shared with the response instead of copied into one buffer.
struct Chunks(std::collections::VecDeque<Bytes>);

impl hyper::body::Body for Chunks {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        std::task::Poll::Ready(self.0.pop_front().map(|b| Ok(hyper::body::Frame::data(b))))
    }

    fn is_end_stream(&self) -> bool {
        self.0.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.0.iter().map(|b| b.len() as u64).sum())
    }
}

/// Deepest nesting accepted in a JSON body. serde_json enforces its own
/// limit when building values, but not when it only validates a raw value,
/// which is how bodies are stored; and clients reading the value back with
/// recursive parsers deserve the same bound.
pub const MAX_JSON_DEPTH: usize = 128;

/// Maximum bracket depth of a JSON text (strings skipped); a linear scan.
fn nesting_depth(json: &[u8]) -> usize {
    let (mut depth, mut max, mut i) = (0usize, 0usize, 0usize);
    while i < json.len() {
        match json[i] {
            b'"' => {
                // Jump through the string to its closing quote: values are
                // mostly long strings (pages, pickles), and byte-at-a-time
                // scanning of them was a sixth of a POST's CPU time.
                i += 1;
                while let Some(rest) = json.get(i..) {
                    match memchr::memchr2(b'"', b'\\', rest) {
                        Some(at) if rest[at] == b'\\' => i += at + 2,
                        Some(at) => {
                            i += at;
                            break;
                        }
                        None => {
                            i = json.len();
                            break;
                        }
                    }
                }
            }
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    max
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetRequest<'a> {
    /// Any JSON value, borrowed from the request body while it is checked
    /// (one copy fewer than an owned `RawValue`).
    #[serde(borrow)]
    #[schema(value_type = Object)]
    value: &'a RawValue,
    /// Lifetime, e.g. `30s`, `1m`, `6h`, `28d`, `1h 30m`. Wins over `expire`.
    #[serde(default)]
    duration: Option<String>,
    /// Absolute expiry, unix seconds.
    #[serde(default)]
    expire: Option<f64>,
}

/// Store a JSON value.
#[utoipa::path(post, path = "/cache/{key}", request_body = SetRequest,
    params(("key" = String, Path, description = "Cache key (slashes allowed; query string is part of the key)")),
    responses((status = 200, description = "Stored: {key, value, expire}"),
              (status = 413, description = "Body too large"),
              (status = 422, description = "Malformed JSON or duration")))]
async fn set_value(
    State(st): State<Arc<ApiState>>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key::entry_key(rest(&uri, "/cache/"), uri.query(), st.limits.max_key)?;
    let body = read_body(body, &st.limits).await?;
    if nesting_depth(&body) > MAX_JSON_DEPTH {
        return Err(ApiError::Unprocessable(format!(
            "JSON nests deeper than {MAX_JSON_DEPTH} levels"
        )));
    }
    let req: SetRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Unprocessable(format!(
            "invalid body ({e}); expected {{\"value\": <any JSON>, \"duration\": \"1m\"}}"
        ))
    })?;
    let now = st.store.clock().now_ms();
    let expires_at = deadline(req.duration.as_deref(), req.expire, now)?;
    // A buffer of its own: a view into the request body would hold the
    // whole body (padding, other fields, or hyper's read buffer) while
    // the hot tier counts only the value.
    let value = Bytes::copy_from_slice(req.value.get().as_bytes());
    let record = Record {
        kind: Kind::Json,
        created_at: now,
        expires_at,
        meta: Bytes::from(req.duration.unwrap_or_default()),
        body: value.clone(),
        tags: Default::default(),
        stale_since: None,
        memo: Default::default(),
    };
    let expire = expire_secs(&record);
    st.store
        .put(Namespace::Value, key.as_bytes(), record)
        .await?;
    Stats::bump(&st.stats.sets);
    Ok(value_json(&key, &value, expire, None))
}

/// Reads a live entry, counting the outcome.
async fn lookup(st: &ApiState, key: &str) -> Result<Record, ApiError> {
    match st.store.get(Namespace::Value, key.as_bytes()).await? {
        Lookup::Hit(rec) => {
            Stats::bump(&st.stats.hits);
            Ok(rec)
        }
        Lookup::Miss => {
            Stats::bump(&st.stats.misses);
            Err(ApiError::NotFound(format!("'{key}' not found in cache.")))
        }
        Lookup::Expired => {
            Stats::bump(&st.stats.expired);
            Err(ApiError::NotFound(format!("'{key}' has expired.")))
        }
    }
}

/// Read a JSON value.
#[utoipa::path(get, path = "/cache/{key}",
    params(("key" = String, Path, description = "Cache key")),
    responses((status = 200, description = "{key, value, expire, duration}"),
              (status = 404, description = "Missing or expired"),
              (status = 409, description = "Stored as raw bytes; use /pickle")))]
async fn get_value(State(st): State<Arc<ApiState>>, uri: Uri) -> Result<Response, ApiError> {
    let key = key::entry_key(rest(&uri, "/cache/"), uri.query(), st.limits.max_key)?;
    let rec = lookup(&st, &key).await?;
    if rec.kind != Kind::Json {
        return Err(ApiError::Conflict(format!(
            "'{key}' holds raw bytes; read it with GET /pickle/{key}"
        )));
    }
    let duration = std::str::from_utf8(&rec.meta).unwrap_or_default();
    Ok(value_json(
        &key,
        &rec.body,
        expire_secs(&rec),
        Some(duration),
    ))
}

/// Delete an entry (JSON value or raw bytes), and purge the proxy's cached
/// page at that path (every Vary variant of it).
#[utoipa::path(delete, path = "/cache/{key}",
    params(("key" = String, Path, description = "Cache key, or a page path such as /dataset/x/?page=2"),
           ("X-Bigcache-If-Equals" = Option<String>, Header, description = "Delete only if the value's bytes are exactly these (no page purge then)"),
           ("X-Bigcache-Purge" = Option<String>, Header, description = "`soft`: mark the page stale instead of deleting it (a value at the key is deleted either way)")),
    responses((status = 200, description = "{message}"), (status = 404, description = "Absent"),
              (status = 412, description = "X-Bigcache-If-Equals given and the value differs")))]
async fn delete_value(
    State(st): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete_at(st, "/cache/", uri, headers).await
}

/// `DELETE /pickle/{key}`: the backend's delete, the same as under
/// `/cache/` (a page at that path is purged too).
#[utoipa::path(delete, path = "/pickle/{key}",
    params(("key" = String, Path, description = "Cache key"),
           ("X-Bigcache-If-Equals" = Option<String>, Header, description = "Delete only if the value's bytes are exactly these: a lock's release")),
    responses((status = 200, description = "{message}"), (status = 404, description = "Absent"),
              (status = 412, description = "X-Bigcache-If-Equals given and the value differs")))]
async fn delete_bytes(
    State(st): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    delete_at(st, "/pickle/", uri, headers).await
}

/// The delete of both routes; `route` is the one the request came by.
async fn delete_at(
    st: Arc<ApiState>,
    route: &str,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let raw = rest(&uri, route);
    let key = key::entry_key(raw, uri.query(), st.limits.max_key)?;
    if let Some(expected) = headers.get(IF_EQUALS_HEADER) {
        // Only visible ASCII survives a header intact (a parser trims
        // surrounding spaces, no line may hold CR, LF or NUL).
        if expected.is_empty() || !expected.as_bytes().iter().all(u8::is_ascii_graphic) {
            return Err(ApiError::BadRequest(format!(
                "{IF_EQUALS_HEADER} must be visible ASCII"
            )));
        }
        let expected = Bytes::copy_from_slice(expected.as_bytes());
        return match st
            .store
            .delete_if_body(Namespace::Value, key.as_bytes(), expected)
            .await?
        {
            DeleteIf::Deleted => {
                Stats::bump(&st.stats.deletes);
                Ok(axum::Json(removed(&key)).into_response())
            }
            DeleteIf::Missing => Err(ApiError::NotFound(format!("'{key}' not found in cache."))),
            DeleteIf::Differs => Err(ApiError::PreconditionFailed(format!(
                "'{key}' holds another value; not removed."
            ))),
        };
    }
    let mut answer = removed(&key);
    let found = if route == "/cache/" {
        let mode = purge::Mode::from_headers(&headers)?;
        let r = purge::path(&st, &key, raw, uri.query(), mode).await?;
        r.annotate(mode, &st, &mut answer);
        r.count > 0
    } else {
        st.store.delete(Namespace::Value, key.as_bytes()).await?
    };
    if !found {
        return Err(ApiError::NotFound(format!("'{key}' not found in cache.")));
    }
    Stats::bump(&st.stats.deletes);
    Ok(axum::Json(answer).into_response())
}

/// The original server's answer to a delete.
fn removed(key: &str) -> serde_json::Value {
    serde_json::json!({ "message": format!("'{key}' removed from cache.") })
}

const TTL_HEADER: &str = "x-bigcache-ttl";
const EXPIRE_HEADER: &str = "x-bigcache-expire";
/// `add` stores only if the key is absent (409 otherwise), atomically.
const MODE_HEADER: &str = "x-bigcache-mode";
/// On `DELETE`: remove the entry only if its bytes are exactly this
/// header's (a lock released by the holder of its token only).
const IF_EQUALS_HEADER: &str = "x-bigcache-if-equals";

/// Store raw bytes verbatim. Lifetime from the `X-Bigcache-TTL` header
/// (duration) or `X-Bigcache-Expire` (unix seconds); none means forever.
#[utoipa::path(post, path = "/pickle/{key}", request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    params(("key" = String, Path, description = "Cache key"),
           ("X-Bigcache-TTL" = Option<String>, Header, description = "Lifetime, e.g. 28d"),
           ("X-Bigcache-Expire" = Option<f64>, Header, description = "Absolute expiry, unix seconds"),
           ("X-Bigcache-Mode" = Option<String>, Header, description = "`add`: store only if absent (409 otherwise)")),
    responses((status = 200, description = "{key, expire, size}"), (status = 409, description = "Exists (mode add)")))]
async fn set_bytes(
    State(st): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key::entry_key(rest(&uri, "/pickle/"), uri.query(), st.limits.max_key)?;
    let only_if_absent = match headers.get(MODE_HEADER).map(|v| v.as_bytes()) {
        None | Some(b"set") => false,
        Some(b"add") => true,
        Some(_) => {
            return Err(ApiError::BadRequest(format!(
                "{MODE_HEADER} must be `set` or `add`"
            )));
        }
    };
    let now = st.store.clock().now_ms();
    let expires_at = header_deadline(&headers, now)?;
    // Copied to a buffer of its own, as `/cache` values are: the body may
    // share hyper's read buffer, which the hot tier would not count.
    let body = Bytes::copy_from_slice(&read_body(body, &st.limits).await?);
    let size = body.len();
    let record = Record {
        kind: Kind::Bytes,
        created_at: now,
        expires_at,
        meta: Bytes::new(),
        body,
        tags: Default::default(),
        stale_since: None,
        memo: Default::default(),
    };
    let expire = expire_secs(&record);
    if only_if_absent {
        if !st
            .store
            .put_if_absent(Namespace::Value, key.as_bytes(), record)
            .await?
        {
            return Err(ApiError::Conflict(format!("'{key}' already exists.")));
        }
    } else {
        st.store
            .put(Namespace::Value, key.as_bytes(), record)
            .await?;
    }
    Stats::bump(&st.stats.sets);
    Ok(
        axum::Json(serde_json::json!({ "key": key, "expire": expire, "size": size }))
            .into_response(),
    )
}

/// The deadline named by the `X-Bigcache-TTL` / `X-Bigcache-Expire`
/// headers; none means forever.
fn header_deadline(headers: &HeaderMap, now: u64) -> Result<Option<u64>, ApiError> {
    let text = |name: &str| -> Result<Option<String>, ApiError> {
        headers
            .get(name)
            .map(|v| {
                v.to_str()
                    .map(str::to_string)
                    .map_err(|_| ApiError::BadRequest(format!("{name} is not text")))
            })
            .transpose()
    };
    let duration = text(TTL_HEADER)?;
    let expire = text(EXPIRE_HEADER)?
        .map(|e| {
            e.trim().parse::<f64>().map_err(|_| {
                ApiError::Unprocessable(format!("{EXPIRE_HEADER} must be unix seconds, got {e:?}"))
            })
        })
        .transpose()?;
    deadline(duration.as_deref(), expire, now)
}

/// Give an entry a new lifetime (Django's `touch`), from the same headers
/// as `POST /pickle`; none makes it permanent.
#[utoipa::path(patch, path = "/pickle/{key}",
    params(("key" = String, Path, description = "Cache key"),
           ("X-Bigcache-TTL" = Option<String>, Header, description = "New lifetime, e.g. 28d"),
           ("X-Bigcache-Expire" = Option<f64>, Header, description = "New absolute expiry, unix seconds")),
    responses((status = 200, description = "{key, expire}"), (status = 404, description = "Absent")))]
async fn touch_bytes(
    State(st): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let key = key::entry_key(rest(&uri, "/pickle/"), uri.query(), st.limits.max_key)?;
    let expires_at = header_deadline(&headers, st.store.clock().now_ms())?;
    if !st
        .store
        .touch(Namespace::Value, key.as_bytes(), expires_at)
        .await?
    {
        return Err(ApiError::NotFound(format!("'{key}' not found in cache.")));
    }
    let expire = expires_at.map(|ms| ms as f64 / 1000.0);
    Ok(axum::Json(serde_json::json!({ "key": key, "expire": expire })).into_response())
}

/// Read raw bytes (a JSON value set through /cache comes back as its JSON
/// text). `HEAD` answers the same headers without the body: whether the
/// key exists, and its remaining lifetime in whole seconds
/// (`X-Bigcache-TTL`, absent when it never expires).
#[utoipa::path(get, path = "/pickle/{key}",
    params(("key" = String, Path, description = "Cache key")),
    responses((status = 200, description = "The stored bytes; headers X-Bigcache-Expire (unix seconds) and X-Bigcache-TTL (seconds left) when it expires", content_type = "application/octet-stream"),
              (status = 404, description = "Missing or expired")))]
async fn get_bytes(State(st): State<Arc<ApiState>>, uri: Uri) -> Result<Response, ApiError> {
    let key = key::entry_key(rest(&uri, "/pickle/"), uri.query(), st.limits.max_key)?;
    let rec = lookup(&st, &key).await?;
    let content_type = match rec.kind {
        Kind::Json => "application/json",
        _ => "application/octet-stream",
    };
    let mut res = (StatusCode::OK, rec.body.clone()).into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(e) = expire_secs(&rec)
        && let Ok(v) = HeaderValue::from_str(&e.to_string())
    {
        h.insert(EXPIRE_HEADER, v);
    }
    // The lifetime left, by this server's clock, so a client whose clock
    // differs still learns the right remaining time (Django's `ttl`).
    if let Some(at) = rec.expires_at {
        let left = at.saturating_sub(st.store.clock().now_ms()).div_ceil(1000);
        h.insert(TTL_HEADER, HeaderValue::from(left));
    }
    Ok(res)
}

/// `GET /clear` emptied the original server's cache; a GET that changes
/// state can be sent by any web page (an image tag), so here it only says
/// what to do instead.
async fn clear_by_get() -> ApiError {
    ApiError::MethodNotAllowed("use POST /clear or DELETE /clear to empty the cache".into())
}

/// Empty the whole cache (POST or DELETE; GET, the original's form, is
/// refused with a message).
#[utoipa::path(method(post, delete), path = "/clear", responses((status = 200, description = "{message}")))]
async fn clear(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    st.store.clear().await?;
    tracing::info!("cache cleared");
    Ok(axum::Json(serde_json::json!({ "message": "cache cleared." })).into_response())
}

#[cfg(test)]
mod tests {
    use super::nesting_depth;

    #[test]
    fn depth_skips_brackets_inside_strings() {
        assert_eq!(nesting_depth(br#"{"value": 1}"#), 1);
        assert_eq!(nesting_depth(br#"{"value": [[1], {"a": []}]}"#), 4);
        assert_eq!(nesting_depth(br#"{"value": "[[[[\"[[["}"#), 1);
        assert_eq!(nesting_depth(b"[[[]]]"), 3);
        assert_eq!(nesting_depth(br#"["a\\", ["b\"]["]]"#), 2);
        assert_eq!(nesting_depth(br#"["unterminated [[["#), 1);
        assert_eq!(nesting_depth(br#"["ends in an escape \"#), 1);
    }
}
