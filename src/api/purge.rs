//! Purges: of a page path (`DELETE /cache/<path>`), of a path prefix
//! (`DELETE /prefix/<prefix>`) and of a tag (`DELETE /tag/<tag>`), hard
//! (gone) or soft (marked stale: served while one request refreshes it).
//! `POST /purge` (`api::bulk_purge`) runs many of them through the same
//! functions.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};

use super::error::ApiError;
use super::{ApiState, key, rest};
use crate::metrics::Stats;
use crate::proxy;
use crate::store::Namespace;
use crate::store::record::check_tag;

/// The request header choosing a soft purge: `X-Bigcache-Purge: soft`.
/// A header rather than `?soft=1`, since on `/cache/` and `/prefix/` the
/// query string is part of the page path being purged.
pub const MODE_HEADER: &str = "x-bigcache-purge";

/// How a purge treats the pages it reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mode {
    /// Mark pages stale instead of deleting them. REST values under the
    /// same keys are deleted either way: they have no stale use.
    pub soft: bool,
}

impl Mode {
    pub fn from_headers(headers: &HeaderMap) -> Result<Mode, ApiError> {
        let Some(v) = headers.get(MODE_HEADER) else {
            return Ok(Mode::default());
        };
        match v.to_str().map(|v| v.trim().to_ascii_lowercase()).as_deref() {
            Ok("soft") => Ok(Mode { soft: true }),
            Ok("hard") => Ok(Mode { soft: false }),
            _ => Err(ApiError::BadRequest(format!(
                "{MODE_HEADER} must be `soft` or `hard`"
            ))),
        }
    }

    fn count(self, st: &ApiState) {
        if self.soft {
            Stats::bump(&st.stats.purges_soft);
        }
    }
}

/// The proxy's page keys a purge names, whether or not the client
/// percent-encoded the path: `/cache//dataset/x/?page=2` and
/// `/cache/%2Fdataset%2Fx%2F%3Fpage%3D2` both name page `/dataset/x/?page=2`.
fn page_targets(rest: &str, query: Option<&str>) -> Vec<String> {
    let q = query
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(rest).decode_utf8_lossy();
    let mut targets = vec![
        proxy::key::canonical(&format!("/{}{q}", rest.trim_start_matches('/'))),
        proxy::key::canonical(&format!("/{}{q}", decoded.trim_start_matches('/'))),
    ];
    targets.dedup();
    targets
}

/// `DELETE /cache/<raw>`'s purge: the value at `key` and the proxy's page
/// at that path (every Vary variant); whether anything was there.
pub async fn path(
    st: &ApiState,
    key: &str,
    raw: &str,
    query: Option<&str>,
    mode: Mode,
) -> Result<bool, ApiError> {
    let mut found = st.store.delete(Namespace::Value, key.as_bytes()).await?;
    Stats::bump(&st.stats.purges_path);
    mode.count(st);
    for target in page_targets(raw, query) {
        found |= st
            .store
            .purge_page(&proxy::key::page_key(&target), mode.soft)
            .await?;
    }
    if found {
        Stats::bump(&st.stats.purged);
    }
    Ok(found)
}

/// `DELETE /prefix/<raw>`'s purge: values under `prefix` and pages under
/// that path; how many live ones went (or, soft, were marked).
pub async fn prefix(
    st: &ApiState,
    prefix: &str,
    raw: &str,
    query: Option<&str>,
    mode: Mode,
) -> Result<u64, ApiError> {
    let mut n = st
        .store
        .delete_prefix(Namespace::Value, prefix.as_bytes())
        .await?;
    for target in page_targets(raw, query) {
        n += st
            .store
            .purge_prefix(Namespace::Page, target.as_bytes(), mode.soft)
            .await?;
    }
    st.stats
        .deletes
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Stats::bump(&st.stats.purges_prefix);
    mode.count(st);
    st.stats
        .purged
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Ok(n)
}

/// A tag as a client names it: percent-decoded, then held to the limits
/// the proxy indexes tags by.
pub fn tag_of(text: &str) -> Result<Vec<u8>, ApiError> {
    let tag: Vec<u8> = percent_encoding::percent_decode_str(text).collect();
    check_tag(&tag).map_err(|e| ApiError::BadRequest(format!("tag {text:?}: {e}")))?;
    Ok(tag)
}

/// Every page tagged `tag`; how many live ones went (or were marked).
pub async fn tag(st: &ApiState, tag: &[u8], mode: Mode) -> Result<u64, ApiError> {
    let n = st.store.purge_tag(tag, mode.soft).await?;
    Stats::bump(&st.stats.purges_tag);
    mode.count(st);
    st.stats
        .purged
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Ok(n)
}

/// Delete every key starting with the prefix, and purge every cached page
/// whose path starts with it.
#[utoipa::path(delete, path = "/prefix/{prefix}",
    params(("prefix" = String, Path, description = "Key prefix (only leading slashes are stripped), or a page path prefix such as /dataset/"),
           ("X-Bigcache-Purge" = Option<String>, Header, description = "`soft`: mark the pages stale instead (values are deleted either way)")),
    responses((status = 200, description = "{message, count}: count is the number of live entries and pages purged"), (status = 400, description = "Empty prefix")))]
pub async fn delete_prefix(
    State(st): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mode = Mode::from_headers(&headers)?;
    let raw = rest(&uri, "/prefix/");
    let p = key::prefix_key(raw, uri.query(), st.limits.max_key)?;
    let n = prefix(&st, &p, raw, uri.query(), mode).await?;
    let done = if mode.soft { "marked stale" } else { "deleted" };
    Ok(axum::Json(serde_json::json!({
        "message": format!("prefix '{p}': {n} keys {done}."),
        "count": n,
    }))
    .into_response())
}

pub async fn empty_prefix() -> ApiError {
    ApiError::BadRequest(
        "prefix is empty; DELETE /prefix/<prefix>, or /clear to empty the cache".into(),
    )
}

/// Purge every cached page (every variant) whose response carried the tag
/// in `Surrogate-Key` or `xkey`.
#[utoipa::path(delete, path = "/tag/{tag}",
    params(("tag" = String, Path, description = "The tag, percent-encoded where needed (1 to 256 bytes of visible ASCII, no comma)"),
           ("X-Bigcache-Purge" = Option<String>, Header, description = "`soft`: mark the pages stale instead")),
    responses((status = 200, description = "{message, count}: count is the number of live pages purged"),
              (status = 400, description = "A tag that breaks the limits")))]
pub async fn delete_tag(
    State(st): State<ApiState>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mode = Mode::from_headers(&headers)?;
    let text = rest(&uri, "/tag/");
    let t = tag_of(text)?;
    let n = tag(&st, &t, mode).await?;
    let done = if mode.soft { "marked stale" } else { "purged" };
    Ok(axum::Json(serde_json::json!({
        "message": format!("tag '{}': {n} pages {done}.", String::from_utf8_lossy(&t)),
        "count": n,
    }))
    .into_response())
}
