//! `POST /purge`: many purges in one call (a deploy, a dataset that appears
//! on hundreds of pages), each item answered with its own count. Paths,
//! prefixes and tags purge as `DELETE /cache/<path>`, `DELETE
//! /prefix/<prefix>` and `DELETE /tag/<tag>` do: the REST value and the
//! proxy's pages (every Vary variant); `"soft": true` marks the pages stale
//! instead.

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

use super::error::ApiError;
use super::purge::{self, Mode};
use super::{ApiState, key, read_body};

/// Most paths, prefixes and tags one call may name, together.
pub const MAX_ITEMS: usize = 1000;

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    /// Page paths as Django gives them (`/dataset/7/`, `/datasets/?page=2`),
    /// or REST keys.
    #[serde(default)]
    paths: Vec<String>,
    /// Path (or key) prefixes: every page and value under each.
    #[serde(default)]
    prefixes: Vec<String>,
    /// Tags (`Surrogate-Key`/`xkey`): every page that carries each.
    #[serde(default)]
    tags: Vec<String>,
    /// Mark the pages stale instead of deleting them (served while one
    /// request refreshes each); REST values are deleted either way.
    #[serde(default)]
    soft: bool,
    /// With `soft`: refresh the marked pages at once instead of at their
    /// next request.
    #[serde(default)]
    warm: bool,
}

/// Purge paths, prefixes and tags in one call.
#[utoipa::path(post, path = "/purge", request_body = PurgeRequest,
    responses((status = 200, description = "{paths: {path: 0|1}, prefixes: {prefix: count}, tags: {tag: count}, purged: total}"),
              (status = 400, description = "Over 1000 items, an empty prefix, a key over the length limit, or a tag that breaks the limits"),
              (status = 422, description = "Not {paths, prefixes, tags, soft} (an unknown field is named)")))]
pub async fn purge(State(st): State<Arc<ApiState>>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body, &st.limits).await?;
    let req: PurgeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Unprocessable(format!(
            "body must be {{\"paths\": [...], \"prefixes\": [...], \"tags\": [...], \"soft\": false}}: {e}"
        ))
    })?;
    let items = req.paths.len() + req.prefixes.len() + req.tags.len();
    if items > MAX_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "{items} items in one call; the limit is {MAX_ITEMS}"
        )));
    }
    let mode = Mode {
        soft: req.soft,
        warm: req.warm,
    }
    .checked(false)?;
    // Every item is checked before anything is purged.
    let split = |text: &str| match text.split_once('?') {
        Some((path, query)) => (path.to_string(), Some(query.to_string())),
        None => (text.to_string(), None),
    };
    let mut paths = Vec::with_capacity(req.paths.len());
    for p in &req.paths {
        let (raw, query) = split(p);
        let key = key::entry_key(&raw, query.as_deref(), st.limits.max_key)?;
        paths.push((p, key, raw, query));
    }
    let mut prefixes = Vec::with_capacity(req.prefixes.len());
    for p in &req.prefixes {
        let (raw, query) = split(p);
        let prefix = key::prefix_key(&raw, query.as_deref(), st.limits.max_key)
            .map_err(|e| ApiError::BadRequest(format!("prefix {p:?}: {e}")))?;
        prefixes.push((p, prefix, raw, query));
    }
    let mut tags = Vec::with_capacity(req.tags.len());
    for t in &req.tags {
        // Given as sent, not percent-encoded: JSON carries any text.
        let tag = t.as_bytes().to_vec();
        crate::store::record::check_tag(&tag)
            .map_err(|e| ApiError::BadRequest(format!("tag {t:?}: {e}")))?;
        tags.push((t, tag));
    }
    let mut total = purge::Reached::default();
    let mut path_counts = serde_json::Map::new();
    for (given, key, raw, query) in paths {
        let r = purge::path(&st, &key, &raw, query.as_deref(), mode).await?;
        total.add(r);
        path_counts.insert(given.clone(), r.count.into());
    }
    let mut prefix_counts = serde_json::Map::new();
    for (given, prefix, raw, query) in prefixes {
        let r = purge::prefix(&st, &prefix, &raw, query.as_deref(), mode).await?;
        total.add(r);
        prefix_counts.insert(given.clone(), r.count.into());
    }
    let mut tag_counts = serde_json::Map::new();
    for (given, tag) in tags {
        let r = purge::tag(&st, &tag, mode).await?;
        total.add(r);
        tag_counts.insert(given.clone(), r.count.into());
    }
    let mut answer = serde_json::json!({
        "paths": path_counts,
        "prefixes": prefix_counts,
        "tags": tag_counts,
        "purged": total.count,
    });
    total.annotate(mode, &st, &mut answer);
    Ok(axum::Json(answer).into_response())
}
