//! Purges: of a page path (`DELETE /cache/<path>`), of a path prefix
//! (`DELETE /prefix/<prefix>`) and of a tag (`DELETE /tag/<tag>`), hard
//! (gone) or soft (marked stale: served while one request refreshes it).
//! `POST /purge` (`api::bulk_purge`) runs many of them through the same
//! functions.

use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

use super::error::ApiError;
use super::{ApiState, key, rest};
use crate::metrics::Stats;
use crate::proxy;
use crate::proxy::query::QueryRules;
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
    /// Refresh the pages marked stale at once (`proxy::rewarm`), rather
    /// than at their next request. Soft purges only.
    pub warm: bool,
}

impl Mode {
    /// `X-Bigcache-Purge: soft`, `soft, warm` or `hard` (the default).
    pub fn from_headers(headers: &HeaderMap) -> Result<Mode, ApiError> {
        let bad = || {
            ApiError::BadRequest(format!(
                "{MODE_HEADER} must be `hard`, `soft` or `soft, warm`"
            ))
        };
        let mut mode = Mode::default();
        let mut hard = false;
        // Every line counts: `soft` on one and `warm` on another is
        // `soft, warm`.
        for v in headers.get_all(MODE_HEADER) {
            let text = v.to_str().map_err(|_| bad())?.to_ascii_lowercase();
            for word in text.split(',').map(str::trim) {
                match word {
                    "soft" => mode.soft = true,
                    "warm" => mode.warm = true,
                    "hard" => hard = true,
                    _ => return Err(bad()),
                }
            }
        }
        mode.checked(hard)
    }

    /// `warm` needs `soft`; `hard` excludes both.
    pub fn checked(self, hard: bool) -> Result<Mode, ApiError> {
        if (hard && self.soft) || (self.warm && !self.soft) {
            return Err(ApiError::BadRequest(
                "warm applies to soft purges only (`soft, warm`)".into(),
            ));
        }
        Ok(self)
    }

    fn count(self, st: &ApiState) {
        if self.soft {
            Stats::bump(&st.stats.purges_soft);
        }
    }
}

/// Why a server cannot re-warm what a soft purge marked.
const WARM_UNAVAILABLE: &str = "not re-warmed: warm needs --site-url when bigcache runs behind a \
     --trusted-proxy (the scheme re-warmed pages are rendered for); the pages are marked \
     stale and refresh at their next request";

/// What one purge reached: live entries purged (or marked), and how many
/// of the marked pages were queued for re-warming.
#[derive(Debug, Default, Clone, Copy)]
pub struct Reached {
    pub count: u64,
    pub warming: usize,
}

impl Reached {
    pub fn add(&mut self, other: Reached) {
        self.count += other.count;
        self.warming += other.warming;
    }

    /// Adds `warming` to a purge's JSON answer, when the purge asked to
    /// re-warm, and `warm_error` when this server cannot re-warm: the
    /// purge itself is done either way (a page left fresh for its whole
    /// lifetime because its refresh could not run would be worse).
    pub fn annotate(self, mode: Mode, st: &ApiState, answer: &mut serde_json::Value) {
        if mode.warm {
            answer["warming"] = self.warming.into();
            if st.rewarm.is_none() {
                answer["warm_error"] = WARM_UNAVAILABLE.into();
            }
        }
    }
}

/// Queues what a soft purge marked for re-warming, when asked.
fn reached(st: &ApiState, purged: crate::store::Purged, mode: Mode) -> Reached {
    let warming = match (&st.rewarm, mode.warm) {
        (Some(r), true) if !purged.marked.is_empty() => r.queue(purged.marked),
        _ => 0,
    };
    Reached {
        count: purged.count,
        warming,
    }
}

/// The proxy's page keys a purge names, whether or not the client
/// percent-encoded the path: `/cache//dataset/x/?page=2` and
/// `/cache/%2Fdataset%2Fx%2F%3Fpage%3D2` both name page `/dataset/x/?page=2`.
/// A target with tracking parameters (or out of order, with
/// `--sort-query`) names the page its requests are stored under, and the
/// target as written too (a page stored before the rules changed).
fn page_targets(rest: &str, query: Option<&str>, rules: &QueryRules) -> Vec<String> {
    let q = query
        .filter(|q| !q.is_empty())
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let decoded = percent_encoding::percent_decode_str(rest).decode_utf8_lossy();
    let mut targets = Vec::with_capacity(4);
    for given in [
        format!("/{}{q}", rest.trim_start_matches('/')),
        format!("/{}{q}", decoded.trim_start_matches('/')),
    ] {
        for target in [
            proxy::key::canonical(&rules.apply(&given)),
            proxy::key::canonical(&given),
        ] {
            if !targets.contains(&target) {
                targets.push(target);
            }
        }
    }
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
) -> Result<Reached, ApiError> {
    let value = st.store.delete(Namespace::Value, key.as_bytes()).await?;
    Stats::bump(&st.stats.purges_path);
    mode.count(st);
    let mut total = Reached::default();
    for target in page_targets(raw, query, &st.query) {
        let purged = st
            .store
            .purge_page(&proxy::key::page_key(&target), mode.soft, mode.warm)
            .await?;
        total.add(reached(st, purged, mode));
    }
    // Found or not: one purge of one path.
    total.count = u64::from(value || total.count > 0);
    if total.count > 0 {
        Stats::bump(&st.stats.purged);
    }
    Ok(total)
}

/// `DELETE /prefix/<raw>`'s purge: values under `prefix` and pages under
/// that path; how many live ones went (or, soft, were marked).
pub async fn prefix(
    st: &ApiState,
    prefix: &str,
    raw: &str,
    query: Option<&str>,
    mode: Mode,
) -> Result<Reached, ApiError> {
    let mut total = Reached {
        count: st
            .store
            .delete_prefix(Namespace::Value, prefix.as_bytes())
            .await?,
        warming: 0,
    };
    // A prefix is matched as written: the rules apply to whole targets.
    for target in page_targets(raw, query, &QueryRules::default()) {
        let purged = st
            .store
            .purge_prefix(Namespace::Page, target.as_bytes(), mode.soft, mode.warm)
            .await?;
        total.add(reached(st, purged, mode));
    }
    let n = total.count;
    st.stats
        .deletes
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Stats::bump(&st.stats.purges_prefix);
    mode.count(st);
    st.stats
        .purged
        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    Ok(total)
}

/// A tag as a client names it: percent-decoded, then held to the limits
/// the proxy indexes tags by.
pub fn tag_of(text: &str) -> Result<Vec<u8>, ApiError> {
    let tag: Vec<u8> = percent_encoding::percent_decode_str(text).collect();
    check_tag(&tag).map_err(|e| ApiError::BadRequest(format!("tag {text:?}: {e}")))?;
    Ok(tag)
}

/// Every page tagged `tag`; how many live ones went (or were marked).
pub async fn tag(st: &ApiState, tag: &[u8], mode: Mode) -> Result<Reached, ApiError> {
    let purged = st.store.purge_tag(tag, mode.soft, mode.warm).await?;
    Stats::bump(&st.stats.purges_tag);
    mode.count(st);
    st.stats
        .purged
        .fetch_add(purged.count, std::sync::atomic::Ordering::Relaxed);
    Ok(reached(st, purged, mode))
}

/// Delete every key starting with the prefix, and purge every cached page
/// whose path starts with it.
#[utoipa::path(delete, path = "/prefix/{prefix}",
    params(("prefix" = String, Path, description = "Key prefix (only leading slashes are stripped), or a page path prefix such as /dataset/"),
           ("X-Bigcache-Purge" = Option<String>, Header, description = "`soft`: mark the pages stale instead (values are deleted either way); `soft, warm`: and refresh them at once")),
    responses((status = 200, description = "{message, count}: count is the number of live entries and pages purged"), (status = 400, description = "Empty prefix")))]
pub async fn delete_prefix(
    State(st): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mode = Mode::from_headers(&headers)?;
    let raw = rest(&uri, "/prefix/");
    let p = key::prefix_key(raw, uri.query(), st.limits.max_key)?;
    let r = prefix(&st, &p, raw, uri.query(), mode).await?;
    let done = if mode.soft { "marked stale" } else { "deleted" };
    let mut answer = serde_json::json!({
        "message": format!("prefix '{p}': {} keys {done}.", r.count),
        "count": r.count,
    });
    r.annotate(mode, &st, &mut answer);
    Ok(axum::Json(answer).into_response())
}

pub async fn empty_tag() -> ApiError {
    ApiError::BadRequest("tag is empty; DELETE /tag/<tag>".into())
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
           ("X-Bigcache-Purge" = Option<String>, Header, description = "`soft`: mark the pages stale instead; `soft, warm`: and refresh them at once")),
    responses((status = 200, description = "{message, count[, warming]}: count is the number of live pages purged; warming, how many were queued for a refresh"),
              (status = 400, description = "A tag that breaks the limits")))]
pub async fn delete_tag(
    State(st): State<Arc<ApiState>>,
    uri: Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let mode = Mode::from_headers(&headers)?;
    // `?` is a tag byte: `/tag/a?b` must not quietly purge tag `a`.
    if uri.query().is_some() {
        return Err(ApiError::BadRequest(
            "a tag's `?` must be percent-encoded (%3F); DELETE /tag/<tag> takes no query".into(),
        ));
    }
    let text = rest(&uri, "/tag/");
    let t = tag_of(text)?;
    let r = tag(&st, &t, mode).await?;
    let done = if mode.soft { "marked stale" } else { "purged" };
    let mut answer = serde_json::json!({
        "message": format!("tag '{}': {} pages {done}.", String::from_utf8_lossy(&t), r.count),
        "count": r.count,
    });
    r.annotate(mode, &st, &mut answer);
    Ok(axum::Json(answer).into_response())
}
