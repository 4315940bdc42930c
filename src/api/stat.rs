//! What the API reports about the server: `/stat`, `/stat/count`,
//! `/metrics`, and the request counting behind them.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiState;
use super::error::ApiError;
use crate::store::Namespace;

/// `GET /stat`: the original server's `stats` object, and bigcache's proxy
/// counters beside it.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct StatResponse {
    stats: crate::metrics::StatsSnapshot,
    /// Proxied requests by `X-Cache` status (`hit`, `miss`, …), `not_cached`
    /// by reason, `upstream_requests`, `upstream_errors`, `unstored`
    /// (cacheable pages the store did not take: busy or failing),
    /// `quick_hits` (hits answered on the socket, without hyper).
    #[schema(value_type = Object)]
    proxy: serde_json::Value,
    disk: DiskStat,
}

/// The disk budget and what eviction did since start.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub(super) struct DiskStat {
    /// `--max-disk` in bytes; 0 when unlimited.
    budget: u64,
    /// Bytes the data directory took at the last check.
    used: u64,
    /// `--min-free` in bytes, and the filesystem's free space at the last
    /// check.
    min_free: u64,
    free: u64,
    /// Live entries evicted, entries kept because they were read, and the
    /// blob bytes eviction gave back.
    evictions: u64,
    reinsertions: u64,
    evicted_bytes: u64,
}

/// Hit, miss, expiry and delete counters since start; `proxy` holds the
/// proxy's counters by `X-Cache` status and its upstream requests.
#[utoipa::path(get, path = "/stat", responses((status = 200, body = StatResponse)))]
pub(super) async fn stat(State(st): State<Arc<ApiState>>) -> Response {
    // Measured by the budget's task; without a budget, now (a directory
    // walk: off the async threads).
    let mut used = st
        .store
        .counters()
        .disk_used
        .load(std::sync::atomic::Ordering::Relaxed);
    if used == 0 {
        let store = st.store.clone();
        used = tokio::task::spawn_blocking(move || store.disk_bytes())
            .await
            .unwrap_or(0);
    }
    axum::Json(StatResponse {
        stats: st.stats.snapshot(),
        proxy: st.proxy_stats.snapshot(),
        disk: {
            let c = st.store.counters();
            let load =
                |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
            DiskStat {
                budget: load(&c.disk_budget),
                used,
                min_free: load(&c.disk_min_free),
                free: load(&c.disk_free),
                evictions: load(&c.evicted),
                reinsertions: load(&c.reinserted),
                evicted_bytes: load(&c.evicted_bytes),
            }
        },
    })
    .into_response()
}

/// Counts every REST request by endpoint and status class, refusals by the
/// token and browser guards included.
pub(super) async fn count_requests(
    State(st): State<Arc<ApiState>>,
    req: Request,
    next: Next,
) -> Response {
    let endpoint = crate::metrics::Endpoint::of(req.uri().path());
    // The REST side of the access log, at debug level (`--log
    // bigcache::api=debug`): the method, the endpoint, the status.
    let method = tracing::enabled!(tracing::Level::DEBUG).then(|| req.method().clone());
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    st.stats.request(endpoint, res.status().as_u16());
    if let Some(method) = method {
        tracing::debug!(
            %method,
            endpoint = endpoint.as_str(),
            status = res.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "rest request"
        );
    }
    res
}

/// Prometheus metrics, text format 0.0.4 (behind `--api-token` like the
/// rest: Prometheus scrapes with a bearer token).
#[utoipa::path(get, path = "/metrics",
    responses((status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain")))]
pub(super) async fn metrics(State(st): State<Arc<ApiState>>) -> Response {
    let body = crate::metrics::encode(&st.metrics);
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

/// Number of live entries. Walks the whole store: for occasional use.
#[utoipa::path(get, path = "/stat/count", responses((status = 200, description = "{count, tag_rows}: live entries, and rows in the tag index (one per tag of each stored page)")))]
pub(super) async fn stat_count(State(st): State<Arc<ApiState>>) -> Result<Response, ApiError> {
    let count = st.store.count(&Namespace::ALL).await?;
    let tag_rows = st.store.tag_rows().await?;
    Ok(axum::Json(serde_json::json!({ "count": count, "tag_rows": tag_rows })).into_response())
}
