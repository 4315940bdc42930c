//! `POST /purge`: many purges in one call (a deploy, a dataset that appears
//! on hundreds of pages), each item answered with its own count. Paths and
//! prefixes purge as `DELETE /cache/<path>` and `DELETE /prefix/<prefix>`
//! do: the REST value and the proxy's pages (every Vary variant).

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::ApiError;
use super::{ApiState, key, purge_path, purge_prefix, read_body};

/// Most paths and prefixes one call may name, together.
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
}

/// Purge paths and prefixes in one call.
#[utoipa::path(post, path = "/purge", request_body = PurgeRequest,
    responses((status = 200, description = "{paths: {path: 0|1}, prefixes: {prefix: count}, purged: total}"),
              (status = 400, description = "Over 1000 items, an empty prefix, or a key over the length limit"),
              (status = 422, description = "Not {paths, prefixes} (an unknown field is named)")))]
pub async fn purge(State(st): State<ApiState>, body: Body) -> Result<Response, ApiError> {
    let body = read_body(body, &st.limits).await?;
    let req: PurgeRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::Unprocessable(format!(
            "body must be {{\"paths\": [...], \"prefixes\": [...]}}: {e}"
        ))
    })?;
    if req.paths.len() + req.prefixes.len() > MAX_ITEMS {
        return Err(ApiError::BadRequest(format!(
            "{} items in one call; the limit is {MAX_ITEMS}",
            req.paths.len() + req.prefixes.len()
        )));
    }
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
    let mut total = 0u64;
    let mut path_counts = serde_json::Map::new();
    for (given, key, raw, query) in paths {
        let n = u64::from(purge_path(&st, &key, &raw, query.as_deref()).await?);
        total += n;
        path_counts.insert(given.clone(), n.into());
    }
    let mut prefix_counts = serde_json::Map::new();
    for (given, prefix, raw, query) in prefixes {
        let n = purge_prefix(&st, &prefix, &raw, query.as_deref()).await?;
        total += n;
        prefix_counts.insert(given.clone(), n.into());
    }
    Ok(axum::Json(serde_json::json!({
        "paths": path_counts,
        "prefixes": prefix_counts,
        "purged": total,
    }))
    .into_response())
}
