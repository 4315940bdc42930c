//! Bulk calls: `POST /many/get`, `/many/set`, `/many/delete`, so Django's
//! `get_many`/`set_many`/`delete_many` cost one round trip, not one per
//! key. Values travel base64-encoded in JSON (they are raw bytes, usually
//! pickles); keys are given as text and name what `/pickle/<key>` names
//! once decoded. At most [`MAX_KEYS`] keys per call, within the body limit.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::Deserialize;

use super::error::ApiError;
use super::{ApiState, deadline, expire_secs, key, read_body};
use crate::metrics::Stats;
use crate::store::{Kind, Lookup, Namespace, Record};

/// Most keys one bulk call may name.
pub const MAX_KEYS: usize = 1000;

#[derive(Deserialize, utoipa::ToSchema)]
pub struct KeysRequest {
    /// At most 1000 keys.
    keys: Vec<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetManyRequest {
    /// At most 1000 items.
    items: Vec<SetItem>,
}

#[derive(Deserialize, utoipa::ToSchema)]
pub struct SetItem {
    key: String,
    /// The bytes to store, base64 (standard alphabet, padded).
    value: String,
    /// Lifetime from now, e.g. `300s`, `28d`; wins over `expire`.
    #[serde(default)]
    ttl: Option<String>,
    /// Absolute expiry, unix seconds. Neither: forever.
    #[serde(default)]
    expire: Option<f64>,
}

async fn parse<T: serde::de::DeserializeOwned>(st: &ApiState, body: Body) -> Result<T, ApiError> {
    let body = read_body(body, &st.limits).await?;
    serde_json::from_slice(&body).map_err(|e| ApiError::Unprocessable(format!("body: {e}")))
}

fn keys(st: &ApiState, given: Vec<String>) -> Result<Vec<String>, ApiError> {
    if given.len() > MAX_KEYS {
        return Err(ApiError::BadRequest(format!(
            "{} keys in one call; the limit is {MAX_KEYS}",
            given.len()
        )));
    }
    given
        .iter()
        .map(|k| key::body_key(k, st.limits.max_key))
        .collect()
}

/// Read several values: the live ones come back, missing and expired ones
/// are left out. Once the values read reach the body size limit
/// (`--max-body-size`), the keys not read yet are listed in `skipped`.
#[utoipa::path(post, path = "/many/get", request_body = KeysRequest,
    responses((status = 200, description = "{values: {key: {value: <base64>, expire}}, skipped: [keys not read]}"),
              (status = 400, description = "Over 1000 keys, or a bad key")))]
pub async fn get_many(State(st): State<Arc<ApiState>>, body: Body) -> Result<Response, ApiError> {
    let req: KeysRequest = parse(&st, body).await?;
    let mut values = BTreeMap::new();
    // The answer is bounded like a request body: past the limit the
    // remaining keys are named, not read, and the client asks for them in
    // a later call.
    let mut bytes = 0usize;
    let mut skipped = Vec::new();
    for key in keys(&st, req.keys)? {
        if bytes >= st.limits.max_body {
            skipped.push(key);
            continue;
        }
        let rec = match st.store.get(Namespace::Value, key.as_bytes()).await? {
            Lookup::Hit(rec) => rec,
            Lookup::Miss => {
                Stats::bump(&st.stats.misses);
                continue;
            }
            Lookup::Expired => {
                Stats::bump(&st.stats.expired);
                continue;
            }
        };
        Stats::bump(&st.stats.hits);
        bytes += rec.body.len();
        let value =
            serde_json::json!({ "value": BASE64.encode(&rec.body), "expire": expire_secs(&rec) });
        values.insert(key, value);
    }
    Ok(axum::Json(serde_json::json!({ "values": values, "skipped": skipped })).into_response())
}

/// Store several values, each with its own lifetime. Every item is checked
/// before any is stored.
#[utoipa::path(post, path = "/many/set", request_body = SetManyRequest,
    responses((status = 200, description = "{stored}"),
              (status = 400, description = "Over 1000 items, or a bad key"),
              (status = 422, description = "A value that is not base64, or a bad lifetime")))]
pub async fn set_many(State(st): State<Arc<ApiState>>, body: Body) -> Result<Response, ApiError> {
    let req: SetManyRequest = parse(&st, body).await?;
    if req.items.len() > MAX_KEYS {
        return Err(ApiError::BadRequest(format!(
            "{} items in one call; the limit is {MAX_KEYS}",
            req.items.len()
        )));
    }
    let now = st.store.clock().now_ms();
    let mut records = Vec::with_capacity(req.items.len());
    for item in req.items {
        let key = key::body_key(&item.key, st.limits.max_key)?;
        let body = BASE64
            .decode(&item.value)
            .map_err(|e| ApiError::Unprocessable(format!("value of '{key}' is not base64: {e}")))?;
        let record = Record {
            kind: Kind::Bytes,
            created_at: now,
            expires_at: deadline(item.ttl.as_deref(), item.expire, now)?,
            meta: Bytes::new(),
            body: Bytes::from(body),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        };
        records.push((key, record));
    }
    let stored = records.len();
    for (key, record) in records {
        st.store
            .put(Namespace::Value, key.as_bytes(), record)
            .await?;
        Stats::bump(&st.stats.sets);
    }
    Ok(axum::Json(serde_json::json!({ "stored": stored })).into_response())
}

/// Delete several values.
#[utoipa::path(post, path = "/many/delete", request_body = KeysRequest,
    responses((status = 200, description = "{deleted}: how many were there"),
              (status = 400, description = "Over 1000 keys, or a bad key")))]
pub async fn delete_many(
    State(st): State<Arc<ApiState>>,
    body: Body,
) -> Result<Response, ApiError> {
    let req: KeysRequest = parse(&st, body).await?;
    let mut deleted = 0u64;
    for key in keys(&st, req.keys)? {
        deleted += u64::from(st.store.delete(Namespace::Value, key.as_bytes()).await?);
    }
    st.stats
        .deletes
        .fetch_add(deleted, std::sync::atomic::Ordering::Relaxed);
    Ok(axum::Json(serde_json::json!({ "deleted": deleted })).into_response())
}
