//! `POST /incr/{key}`: atomic increment and decrement (Django's
//! `incr`/`decr`). The shard thread reads and writes the value in one
//! command, so concurrent increments never lose one, and the entry keeps
//! its lifetime.

use axum::body::Body;
use axum::extract::State;
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::sync::Arc;

use super::error::ApiError;
use super::{ApiState, key, read_body, rest};
use crate::store::{Incr, Namespace};

#[derive(Deserialize, utoipa::ToSchema)]
pub struct IncrRequest {
    /// Added to the stored integer; negative to decrement. Default 1.
    #[serde(default = "one")]
    delta: i64,
}

fn one() -> i64 {
    1
}

/// Add to the integer a key holds (stored as the bytes `42` through
/// /pickle, or the JSON number 42 through /cache). A missing key is an
/// error, as Django's `incr` says.
#[utoipa::path(post, path = "/incr/{key}",
    params(("key" = String, Path, description = "Cache key")),
    request_body(content = IncrRequest, description = "Empty body: delta 1"),
    responses((status = 200, description = "{key, value}: the new value"),
              (status = 404, description = "Missing or expired"),
              (status = 409, description = "Not an integer, or the sum overflows 64 bits")))]
pub async fn incr(
    State(st): State<Arc<ApiState>>,
    uri: Uri,
    body: Body,
) -> Result<Response, ApiError> {
    let key = key::entry_key(rest(&uri, "/incr/"), uri.query(), st.limits.max_key)?;
    let body = read_body(body, &st.limits).await?;
    let delta = if body.iter().all(u8::is_ascii_whitespace) {
        1
    } else {
        serde_json::from_slice::<IncrRequest>(&body)
            .map_err(|e| {
                ApiError::Unprocessable(format!("body must be {{\"delta\": <integer>}}: {e}"))
            })?
            .delta
    };
    match st
        .store
        .incr(Namespace::Value, key.as_bytes(), delta)
        .await?
    {
        Incr::Value(value) => {
            Ok(axum::Json(serde_json::json!({ "key": key, "value": value })).into_response())
        }
        Incr::Missing => Err(ApiError::NotFound(format!("'{key}' not found in cache."))),
        Incr::NotInteger => Err(ApiError::Conflict(format!(
            "'{key}' does not hold an integer."
        ))),
        Incr::Overflow => Err(ApiError::Conflict(format!(
            "'{key}' + {delta} does not fit in 64 bits; nothing changed."
        ))),
    }
}
