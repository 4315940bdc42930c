//! The OpenAPI document (`/openapi.json`) and Swagger UI (`/docs`), like the
//! original FastAPI server's. The UI's files are compiled into the binary
//! (utoipa-swagger-ui's `vendored` feature), so `/docs` works offline.

use axum::Router;
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "bigcache",
        description = "Disk-backed cache server. Keys: the path after /cache/ (percent-decoded, \
                       outer slashes stripped) plus `?query` when present. Durations: 30s, 1m, \
                       6h, 28d, 2w, `1h 30m`. When the server runs with --api-token, send \
                       `Authorization: Bearer <token>`."
    ),
    paths(
        super::set_value,
        super::get_value,
        super::delete_value,
        super::set_bytes,
        super::get_bytes,
        super::delete_bytes,
        super::touch_bytes,
        super::counter::incr,
        super::listing::keys,
        super::bulk_purge::purge,
        super::many::get_many,
        super::many::set_many,
        super::many::delete_many,
        super::purge::delete_prefix,
        super::purge::delete_tag,
        super::stat::stat,
        super::stat::stat_count,
        super::clear,
        super::stat::metrics,
        healthz,
        livez,
        readyz
    ),
    components(schemas(
        super::SetRequest,
        super::counter::IncrRequest,
        super::many::KeysRequest,
        super::bulk_purge::PurgeRequest,
        super::many::SetManyRequest,
        super::many::SetItem,
        super::stat::StatResponse,
        super::stat::DiskStat,
        crate::metrics::StatsSnapshot
    ))
)]
pub struct ApiDoc;

// The health endpoints are answered in `server` (`/livez` and `/readyz`
// before the store is open, when this router is not serving yet) and in
// `api::router` (`/healthz`); these functions only carry their documents.

/// The process is up (answered before the store is open, and always
/// without a token).
#[utoipa::path(get, path = "/livez", responses((status = 200, description = "ok")))]
#[allow(dead_code)]
fn livez() {}

/// Ready to serve: 503 while the store opens and from the moment a
/// shutdown begins (load balancers stop sending), 200 in between.
#[utoipa::path(get, path = "/readyz",
    responses((status = 200, description = "ready"), (status = 503, description = "starting or shutting down")))]
#[allow(dead_code)]
fn readyz() {}

/// The REST router answers (kept from the first releases; `/readyz` is the
/// probe to use).
#[utoipa::path(get, path = "/healthz", responses((status = 200, description = "ok")))]
#[allow(dead_code)]
fn healthz() {}

pub fn router() -> Router {
    SwaggerUi::new("/docs")
        .url("/openapi.json", ApiDoc::openapi())
        .into()
}
