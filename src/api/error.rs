//! The REST API's error type and the one place errors become HTTP statuses.
//! Every error body is `{"detail": "..."}`, as the original server's were.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::store::StoreError;
use crate::ttl::TtlError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PreconditionFailed(String),
    #[error("{0}")]
    TooLarge(String),
    /// A well-formed request whose content is not acceptable (bad JSON, a
    /// malformed duration), 422 as FastAPI answered validation errors.
    #[error("{0}")]
    Unprocessable(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// A request a web page in a browser could have sent (see
    /// `api::guard_browsers`).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    MethodNotAllowed(String),
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<TtlError> for ApiError {
    fn from(e: TtlError) -> Self {
        ApiError::Unprocessable(e.to_string())
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PreconditionFailed(_) => StatusCode::PRECONDITION_FAILED,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::Store(StoreError::Unavailable | StoreError::Busy) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            // A full disk: the write was refused whole (no record points at
            // a partial blob), and the client can tell it from a bug.
            ApiError::Store(e) if e.is_disk_full() => StatusCode::INSUFFICIENT_STORAGE,
            ApiError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        }
        let mut res = (
            status,
            Json(serde_json::json!({ "detail": self.to_string() })),
        )
            .into_response();
        if matches!(self, ApiError::Store(StoreError::Busy)) {
            // The backlog drains in well under a second once the disk
            // catches up.
            res.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            );
        }
        if matches!(self, ApiError::Unauthorized) {
            res.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        res
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_disk_is_507_other_store_failures_500_or_503() {
        let full = std::io::Error::from(std::io::ErrorKind::StorageFull);
        assert_eq!(
            ApiError::Store(StoreError::Io(full)).status(),
            StatusCode::INSUFFICIENT_STORAGE
        );
        let leveldb_full = rusty_leveldb::Status::new(
            rusty_leveldb::StatusCode::IOError,
            "No space left on device (os error 28)",
        );
        assert_eq!(
            ApiError::Store(StoreError::Db(leveldb_full)).status(),
            StatusCode::INSUFFICIENT_STORAGE
        );
        let other = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            ApiError::Store(StoreError::Io(other)).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(
            ApiError::Store(StoreError::Unavailable).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let busy = ApiError::Store(StoreError::Busy).into_response();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.headers()[axum::http::header::RETRY_AFTER], "1");
    }
}
