//! `GET /keys`: the keys under a prefix, a page at a time (Django's
//! `iter_keys` and `delete_pattern`). A page examines a bounded number of
//! entries per shard (`store::KEYS_SCAN`), so no call walks the whole
//! store; the caller follows `next` until it is null. A page may be short
//! (or empty) and still have a `next`.

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

use super::ApiState;
use super::error::ApiError;
use crate::store::Namespace;

/// Most keys one page holds.
pub const MAX_PAGE: usize = 1000;

#[derive(Deserialize, utoipa::IntoParams)]
pub struct KeysQuery {
    /// Only keys starting with this (none: every key).
    #[serde(default)]
    prefix: String,
    /// The `next` of the previous page.
    #[serde(default)]
    after: Option<String>,
    /// Keys per page, at most 1000 (the default).
    #[serde(default)]
    limit: Option<usize>,
}

/// List live keys set through the REST API (not the proxy's pages), in
/// byte order.
#[utoipa::path(get, path = "/keys", params(KeysQuery),
    responses((status = 200, description = "{keys: [...], next}: next is the cursor for the following page, null after the last; a page may be short, even empty, and have a next"),
              (status = 400, description = "A limit over 1000, or a prefix over the key length limit")))]
pub async fn keys(
    State(st): State<Arc<ApiState>>,
    Query(q): Query<KeysQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(MAX_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be 1 to {MAX_PAGE}"
        )));
    }
    if q.prefix.len() > st.limits.max_key {
        return Err(ApiError::BadRequest(format!(
            "prefix is {} bytes; the limit is {}",
            q.prefix.len(),
            st.limits.max_key
        )));
    }
    let (found, next) = st
        .store
        .keys(
            Namespace::Value,
            q.prefix.as_bytes(),
            q.after.as_deref().map(str::as_bytes),
            limit,
        )
        .await?;
    let keys: Vec<String> = found
        .into_iter()
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .collect();
    let next = next.map(|k| String::from_utf8_lossy(&k).into_owned());
    Ok(axum::Json(serde_json::json!({ "keys": keys, "next": next })).into_response())
}
