//! The caching reverse proxy in front of Django.
//!
//! - [`key`]: the cache key (request target, normalized escapes) and Vary
//!   variants.
//! - [`policy`]: what may be cached and for how long.
//! - [`entry`]: a stored response and its metadata format.
//! - [`upstream`]: the pooled client, header rewriting, timeouts.
//! - [`coalesce`]: one upstream request per missing page.
//!
//! A GET or HEAD that may use the cache is looked up in the store (hot tier
//! first). Fresh: served with `X-Cache: HIT`. Stale but within its
//! stale-while-revalidate window: served with `UPDATING` while one
//! background request refreshes it. Stale otherwise, or missing: fetched
//! through the coalescer (`MISS` for the request that went upstream, `HIT`
//! for those that waited for it); a stale entry with a validator is
//! revalidated with a conditional request (`REVALIDATED` on a 304), and
//! served instead of an upstream error within its stale-if-error window
//! (`STALE`). Anything else (other methods, requests with credentials or a
//! session) is forwarded untouched (`BYPASS`); a successful unsafe method
//! invalidates the page it targeted.

pub mod coalesce;
pub mod entry;
pub mod key;
pub mod policy;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use tokio::sync::oneshot;

use crate::metrics::{CacheStatus, ProxyStats};
use crate::store::{Kind, Lookup, Namespace, Store, now_ms};
use coalesce::{Coalescer, Outcome, Role};
use entry::Entry;
use policy::{NoCache, TTL_HEADER};
use upstream::{Body, Upstream, UpstreamConfig};

/// Errors answered to the client; statuses are decided in
/// [`ProxyError::status`] only.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProxyError {
    #[error("upstream unreachable: {0}")]
    UpstreamUnreachable(String),
    #[error("upstream did not answer in time")]
    UpstreamTimeout,
    #[error("upstream failed: {0}")]
    UpstreamBroken(String),
    #[error("bad request: {0}")]
    BadRequest(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnreachable(_) | ProxyError::UpstreamBroken(_) => {
                StatusCode::BAD_GATEWAY
            }
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
        }
    }

    fn to_response(&self) -> Response<Body> {
        let status = self.status();
        let text = format!(
            "{} {}\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        );
        let mut res = Response::new(upstream::full(Bytes::from(text)));
        *res.status_mut() = status;
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        res
    }
}

pub struct ProxyConfig {
    pub upstream: UpstreamConfig,
    /// Largest body stored; larger responses stream through uncached.
    pub max_entry_size: usize,
    /// Stale-while-revalidate window when the response names none.
    pub grace: Duration,
    /// Stale-if-error window when the response names none.
    pub stale_if_error: Duration,
    pub session_cookies: Vec<String>,
    /// How long a page found uncacheable skips coalescing (hit-for-pass).
    pub hit_for_pass: Duration,
}

pub struct Proxy {
    store: Store,
    upstream: Upstream,
    coalescer: Arc<Coalescer>,
    cfg: ProxyConfig,
    /// Pages recently found uncacheable → until when (unix ms): requests
    /// for them go upstream in parallel instead of queueing on a flight.
    pass: quick_cache::sync::Cache<Vec<u8>, u64>,
    stats: Arc<ProxyStats>,
}

/// A page found in the store.
struct Found {
    entry: Arc<Entry>,
    variant: Option<String>,
}

fn is_safe(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Conditional request headers: dropped when bigcache fetches for the
/// cache, since it needs the full response, not the client's 304.
const CONDITIONALS: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

impl Proxy {
    pub fn new(store: Store, cfg: ProxyConfig, stats: Arc<ProxyStats>) -> Result<Proxy, String> {
        let upstream = Upstream::new(&cfg.upstream)?;
        Ok(Proxy {
            store,
            upstream,
            coalescer: Arc::new(Coalescer::default()),
            cfg,
            pass: quick_cache::sync::Cache::new(10_000),
            stats,
        })
    }

    /// Serves one client request; never fails (errors become responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Response<Body> {
        match self.route(req, peer).await {
            Ok(res) => res,
            Err(e) => {
                tracing::warn!(error = %e, "proxy error");
                let mut res = e.to_response();
                self.label(&mut res, CacheStatus::Miss);
                res
            }
        }
    }

    fn label(&self, res: &mut Response<Body>, status: CacheStatus) {
        self.stats.count(status);
        res.headers_mut()
            .insert("x-cache", HeaderValue::from_static(status.as_str()));
    }

    async fn route(
        self: &Arc<Self>,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> Result<Response<Body>, ProxyError> {
        let (mut parts, body) = req.into_parts();
        let target = parts
            .uri
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        let canon = key::canonical(&target);

        if parts.method != Method::GET && parts.method != Method::HEAD {
            upstream::forward_headers(&mut parts.headers, &parts.uri, peer);
            let unsafe_method = !is_safe(&parts.method);
            let host = parts.headers.get(header::HOST).cloned();
            let res = self
                .pass_through(parts, upstream::incoming(body), CacheStatus::Bypass)
                .await?;
            let s = res.status();
            if unsafe_method && (s.is_success() || s.is_redirection()) {
                self.invalidate(&canon, res.headers(), host.as_ref()).await;
            }
            return Ok(res);
        }
        if let Some(reason) = policy::request_bypass(&parts.headers, &self.cfg.session_cookies) {
            tracing::debug!(target = %canon, reason = reason.as_str(), "bypass");
            upstream::forward_headers(&mut parts.headers, &parts.uri, peer);
            return self
                .pass_through(parts, upstream::incoming(body), CacheStatus::Bypass)
                .await;
        }
        // GET/HEAD bodies are not forwarded on the cache path: neither are
        // the headers that announce one, or the upstream would wait for it.
        drop(body);
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::EXPECT);
        let group = key::page_key(&canon);
        let found = self.lookup(&group, &parts.headers).await;
        if let Some(f) = &found
            && f.entry.is_fresh(now_ms())
            && !f.entry.no_cache
        {
            return Ok(self.serve(&f.entry, &parts, CacheStatus::Hit));
        }
        // From here on the upstream may be asked; hits never pay for this.
        upstream::forward_headers(&mut parts.headers, &parts.uri, peer);
        let Some(found) = found else {
            return self.fetch(parts, group, None).await;
        };
        let now = now_ms();
        let e = &found.entry;
        if self.within_grace(e, now) {
            self.refresh_in_background(&parts, &group, &found);
            return Ok(self.serve(e, &parts, CacheStatus::Updating));
        }
        self.fetch(parts, group, Some(found)).await
    }

    fn within_grace(&self, e: &Entry, now: u64) -> bool {
        if e.must_revalidate || e.no_cache {
            return false;
        }
        let window = e.stale_while_revalidate.unwrap_or(self.cfg.grace);
        now < e.fresh_until.saturating_add(window.as_millis() as u64)
    }

    fn within_stale_if_error(&self, e: &Entry, now: u64) -> bool {
        // RFC 9111 §4.2.4: no stale copy where a directive forbids it.
        if e.must_revalidate || e.no_cache {
            return false;
        }
        let window = e.stale_if_error.unwrap_or(self.cfg.stale_if_error);
        now < e.fresh_until.saturating_add(window.as_millis() as u64)
    }

    /// Finds the stored page for a request, resolving Vary variants. A
    /// store or decoding error is logged and reads as a miss: the request
    /// still gets its page from the upstream.
    async fn lookup(&self, group: &[u8], req: &HeaderMap) -> Option<Found> {
        let rec = self.get_page(group).await?;
        let (rec, variant) = if rec.kind == Kind::Group {
            let names: Vec<String> = std::str::from_utf8(&rec.meta)
                .ok()?
                .split(',')
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .collect();
            let variant = key::variant(&names, req)?;
            let mut member = group.to_vec();
            member.extend_from_slice(variant.as_bytes());
            (self.get_page(&member).await?, Some(variant))
        } else {
            (rec, None)
        };
        match Entry::from_record(&rec) {
            Ok(entry) => Some(Found {
                entry: Arc::new(entry),
                variant,
            }),
            Err(e) => {
                tracing::warn!(error = %e, "unreadable cached response; treating as a miss");
                None
            }
        }
    }

    async fn get_page(&self, key: &[u8]) -> Option<crate::store::Record> {
        match self.store.get(Namespace::Page, key).await {
            Ok(Lookup::Hit(rec)) => Some(rec),
            Ok(_) => None,
            Err(e) => {
                tracing::warn!(error = %e, "store read failed; treating as a miss");
                None
            }
        }
    }

    /// Builds the client's response from a stored entry, answering
    /// conditional requests with 304.
    fn serve(&self, e: &Entry, req: &Parts, status: CacheStatus) -> Response<Body> {
        let now = now_ms();
        let not_modified = e.status == StatusCode::OK && not_modified(&e.headers, &req.headers);
        let mut res = if not_modified {
            let mut res = Response::new(upstream::empty());
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            for name in [
                header::ETAG,
                header::LAST_MODIFIED,
                header::CACHE_CONTROL,
                header::EXPIRES,
                header::VARY,
                header::DATE,
                header::CONTENT_LOCATION,
            ] {
                for v in e.headers.get_all(&name) {
                    res.headers_mut().append(name.clone(), v.clone());
                }
            }
            res
        } else {
            let body = if req.method == Method::HEAD {
                upstream::empty()
            } else {
                upstream::full(e.body.clone())
            };
            let mut res = Response::new(body);
            *res.status_mut() = e.status;
            *res.headers_mut() = e.headers.clone();
            res.headers_mut().remove(TTL_HEADER);
            res.headers_mut()
                .insert(header::CONTENT_LENGTH, HeaderValue::from(e.body.len()));
            res
        };
        res.headers_mut()
            .insert(header::AGE, HeaderValue::from(e.age(now)));
        self.label(&mut res, status);
        res
    }

    /// Forwards a request as is and streams the answer back.
    async fn pass_through(
        &self,
        parts: Parts,
        body: Body,
        status: CacheStatus,
    ) -> Result<Response<Body>, ProxyError> {
        self.stats.upstream_request();
        let res = self
            .upstream
            .send(Request::from_parts(parts, body))
            .await
            .inspect_err(|_| self.stats.upstream_error())?;
        let (mut rp, body) = res.into_parts();
        upstream::strip_hop_by_hop(&mut rp.headers);
        Ok(self.streamed(rp, upstream::incoming(body), status))
    }

    /// A client response streaming an upstream body: bigcache's TTL header
    /// removed, an idle timeout on the body, `X-Cache` set.
    fn streamed(
        &self,
        mut rp: http::response::Parts,
        body: Body,
        status: CacheStatus,
    ) -> Response<Body> {
        rp.headers.remove(TTL_HEADER);
        let body = upstream::with_idle_timeout(body, self.upstream.timeout);
        let mut res = Response::from_parts(rp, body);
        self.label(&mut res, status);
        res
    }

    /// A miss or a stale entry that needs the upstream: coalesced, unless
    /// the page was recently found uncacheable.
    async fn fetch(
        self: &Arc<Self>,
        parts: Parts,
        group: Vec<u8>,
        stale: Option<Found>,
    ) -> Result<Response<Body>, ProxyError> {
        if self.pass.get(&group).is_some_and(|until| until > now_ms()) {
            return self
                .pass_through(parts, upstream::empty(), CacheStatus::Miss)
                .await;
        }
        match self.coalescer.join(&group, self.store.purge_point()) {
            Role::Leader(permit) => {
                let slot = permit.subscribe();
                let (handoff_tx, handoff_rx) = oneshot::channel();
                let this = self.clone();
                let fill_parts = clone_parts(&parts);
                // A task of its own: the fill completes, and the waiters are
                // answered, even if this client goes away.
                tokio::spawn(async move {
                    this.fill(fill_parts, group, stale, permit, Some(handoff_tx))
                        .await;
                });
                tokio::select! {
                    biased;
                    Ok(mut res) = handoff_rx => {
                        if parts.method == Method::HEAD {
                            *res.body_mut() = upstream::empty();
                        }
                        Ok(res)
                    }
                    outcome = coalesce::wait(slot) => self.answer(outcome, parts, true).await,
                }
            }
            Role::Waiter(slot, generation) => {
                let outcome = coalesce::wait(slot).await;
                // Purged since the flight began (it may have been announced
                // before the purge): its page must not be served any more.
                if matches!(outcome, Outcome::Entry { .. })
                    && self.store.purged_since(Namespace::Page, &group, generation)
                {
                    return self
                        .pass_through(parts, upstream::empty(), CacheStatus::Miss)
                        .await;
                }
                self.answer(outcome, parts, false).await
            }
        }
    }

    /// Answers a request from a flight's outcome.
    async fn answer(
        &self,
        outcome: Outcome,
        parts: Parts,
        leader: bool,
    ) -> Result<Response<Body>, ProxyError> {
        match outcome {
            Outcome::Entry {
                entry,
                variant,
                stale,
                revalidated,
            } => {
                // A waiter whose request varies differently cannot use it.
                if variant.is_some() {
                    let names = key::vary_names(&entry.headers);
                    if key::variant(&names, &parts.headers) != variant {
                        return self
                            .pass_through(parts, upstream::empty(), CacheStatus::Miss)
                            .await;
                    }
                }
                let status = match (stale, revalidated, leader) {
                    (true, _, _) => CacheStatus::Stale,
                    (_, true, true) => CacheStatus::Revalidated,
                    (_, _, true) => CacheStatus::Miss,
                    _ => CacheStatus::Hit,
                };
                Ok(self.serve(&entry, &parts, status))
            }
            Outcome::Pass => {
                self.pass_through(parts, upstream::empty(), CacheStatus::Miss)
                    .await
            }
            Outcome::Error(e) => Err((*e).clone()),
        }
    }

    /// Starts one background refresh of a stale entry unless one runs.
    fn refresh_in_background(self: &Arc<Self>, parts: &Parts, group: &[u8], found: &Found) {
        if let Role::Leader(permit) = self.coalescer.join(group, self.store.purge_point()) {
            let this = self.clone();
            let parts = clone_parts(parts);
            let group = group.to_vec();
            let stale = Found {
                entry: found.entry.clone(),
                variant: found.variant.clone(),
            };
            tokio::spawn(async move {
                this.fill(parts, group, Some(stale), permit, None).await;
            });
        }
    }

    /// Fetches a page from the upstream for the cache and publishes the
    /// outcome. A response that cannot be stored goes to the leading client
    /// through `handoff`, streaming, and the waiters are told to pass.
    async fn fill(
        self: Arc<Self>,
        parts: Parts,
        group: Vec<u8>,
        stale: Option<Found>,
        permit: coalesce::Permit,
        handoff: Option<oneshot::Sender<Response<Body>>>,
    ) {
        let generation = permit.generation();
        let mut up = clone_parts(&parts);
        up.method = Method::GET;
        for h in &CONDITIONALS {
            up.headers.remove(h);
        }
        if let Some(s) = &stale {
            let e = &s.entry;
            if !e.synthetic_etag
                && let Some(etag) = e.headers.get(header::ETAG)
            {
                up.headers.insert(header::IF_NONE_MATCH, etag.clone());
            }
            if let Some(lm) = e.headers.get(header::LAST_MODIFIED) {
                up.headers.insert(header::IF_MODIFIED_SINCE, lm.clone());
            }
        }
        self.stats.upstream_request();
        let sent = self
            .upstream
            .send(Request::from_parts(up, upstream::empty()))
            .await;
        let now = now_ms();
        let serve_stale = |s: &Option<Found>| {
            s.as_ref()
                .filter(|s| self.within_stale_if_error(&s.entry, now))
                .map(|s| Outcome::Entry {
                    entry: s.entry.clone(),
                    variant: s.variant.clone(),
                    stale: true,
                    revalidated: false,
                })
        };
        let res = match sent {
            Ok(res) => res,
            Err(e) => {
                self.stats.upstream_error();
                tracing::warn!(error = %e, "upstream request failed");
                permit.finish(serve_stale(&stale).unwrap_or(Outcome::Error(Arc::new(e))));
                return;
            }
        };
        if res.status().is_server_error()
            && let Some(outcome) = serve_stale(&stale)
        {
            tracing::warn!(status = %res.status(), "upstream error; serving stale");
            permit.finish(outcome);
            return;
        }
        let (mut rp, body) = res.into_parts();
        upstream::strip_hop_by_hop(&mut rp.headers);

        if rp.status == StatusCode::NOT_MODIFIED
            && let Some(s) = &stale
        {
            let outcome = self.refreshed(&group, s, &rp.headers, generation).await;
            permit.finish(outcome);
            return;
        }

        let decided = policy::response_policy(rp.status, &rp.headers, SystemTime::now())
            .and_then(|p| {
                let names = key::vary_names(&rp.headers);
                if names.is_empty() {
                    return Ok((p, names, None));
                }
                let v = key::variant(&names, &parts.headers).ok_or(NoCache::VaryTooLong)?;
                Ok((p, names, Some(v)))
            })
            .and_then(|d| {
                let too_big = body
                    .size_hint()
                    .exact()
                    .is_some_and(|n| n > self.cfg.max_entry_size as u64);
                if too_big {
                    Err(NoCache::TooLarge)
                } else {
                    Ok(d)
                }
            });
        let (storable, names, variant) = match decided {
            Ok(d) => d,
            Err(reason) => {
                tracing::debug!(reason = reason.as_str(), "not storing");
                self.mark_pass(&group, reason);
                if stale.is_some() && rp.status.is_success() {
                    // The page stopped being cacheable: drop the old copy.
                    // (A 429 or a 404 says nothing about the page itself.)
                    let _ = self.store.delete(Namespace::Page, &group).await;
                }
                self.hand_off(handoff, rp, upstream::incoming(body));
                permit.finish(Outcome::Pass);
                return;
            }
        };

        let limit = self.cfg.max_entry_size;
        let collected =
            tokio::time::timeout(self.upstream.timeout, collect_limited(body, limit)).await;
        let bytes = match collected {
            Ok(Ok(Collected::Whole(b))) => b,
            Ok(Ok(Collected::TooBig(prefix, rest))) => {
                self.mark_pass(&group, NoCache::TooLarge);
                self.hand_off(handoff, rp, chain(prefix, rest));
                permit.finish(Outcome::Pass);
                return;
            }
            Ok(Err(e)) => {
                self.stats.upstream_error();
                permit.finish(Outcome::Error(Arc::new(ProxyError::UpstreamBroken(e))));
                return;
            }
            Err(_) => {
                self.stats.upstream_error();
                permit.finish(Outcome::Error(Arc::new(ProxyError::UpstreamTimeout)));
                return;
            }
        };

        let entry = Arc::new(self.new_entry(rp.status, rp.headers, bytes, &storable, now));
        self.pass.remove(&group);
        // Everyone waiting is served now; nobody waits for the disk write.
        let mut permit = permit;
        permit.announce(Outcome::Entry {
            entry: entry.clone(),
            variant: variant.clone(),
            stale: false,
            revalidated: false,
        });
        // If this page was purged while it was being fetched, the copy may
        // be the very content the purge meant to remove: it is served to
        // those waiting for it, and not stored (decided in the shard).
        self.store_entry(&group, &names, variant.as_deref(), &entry, generation)
            .await;
        permit.end();
    }

    /// Gives an uncacheable response to the client that led the fetch (a
    /// background refresh has none: the response is dropped).
    fn hand_off(
        &self,
        handoff: Option<oneshot::Sender<Response<Body>>>,
        parts: http::response::Parts,
        body: Body,
    ) {
        if let Some(tx) = handoff {
            let _ = tx.send(self.streamed(parts, body, CacheStatus::Miss));
        }
    }

    fn mark_pass(&self, group: &[u8], reason: NoCache) {
        self.pass.insert(
            group.to_vec(),
            now_ms() + self.cfg.hit_for_pass.as_millis() as u64,
        );
        tracing::debug!(reason = reason.as_str(), "hit-for-pass");
    }

    fn new_entry(
        &self,
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        p: &policy::Storable,
        now: u64,
    ) -> Entry {
        // X-Bigcache-TTL stays stored (a 304 that omits it renews the page
        // with it) and is removed when the page is served.
        headers.remove(header::AGE);
        headers.remove(header::CONTENT_LENGTH);
        let synthetic_etag =
            !headers.contains_key(header::ETAG) && !headers.contains_key(header::LAST_MODIFIED);
        if synthetic_etag {
            // Strong and unique per stored version: crc of the body plus
            // the store time, so a changed page can never match.
            let tag = format!("\"bc-{now:x}-{:08x}\"", crc32fast::hash(&body));
            if let Ok(v) = HeaderValue::from_str(&tag) {
                headers.insert(header::ETAG, v);
            }
        }
        let windows = if p.must_revalidate {
            Duration::ZERO
        } else {
            p.stale_while_revalidate
                .unwrap_or(self.cfg.grace)
                .max(p.stale_if_error.unwrap_or(self.cfg.stale_if_error))
        };
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Entry {
            status,
            headers,
            body,
            stored_at: now,
            fresh_until: now.saturating_add(ms(p.fresh_for)),
            keep_until: Some(
                now.saturating_add(ms(p.keep_for))
                    .saturating_add(ms(windows)),
            ),
            initial_age: p.initial_age,
            must_revalidate: p.must_revalidate,
            no_cache: p.no_cache,
            synthetic_etag,
            stale_while_revalidate: p.stale_while_revalidate,
            stale_if_error: p.stale_if_error,
        }
    }

    async fn store_entry(
        &self,
        group: &[u8],
        names: &[String],
        variant: Option<&str>,
        e: &Entry,
        since: u64,
    ) {
        let member = variant.map(|v| (v.as_bytes(), Bytes::from(names.join(","))));
        match self
            .store
            .put_page(group, member, e.to_record(), since)
            .await
        {
            Ok(true) => {}
            Ok(false) => tracing::debug!("page purged during its fetch; not stored"),
            Err(e) => tracing::warn!(error = %e, "storing a page failed; served uncached"),
        }
    }

    /// A 304 from the upstream: the stored response gets the new headers
    /// and a new lifetime, and keeps its body.
    async fn refreshed(
        &self,
        group: &[u8],
        stale: &Found,
        fresh: &HeaderMap,
        generation: u64,
    ) -> Outcome {
        let old = &stale.entry;
        let mut headers = old.headers.clone();
        for name in fresh.keys() {
            if name == header::CONTENT_LENGTH {
                continue;
            }
            headers.remove(name);
            for v in fresh.get_all(name) {
                headers.append(name.clone(), v.clone());
            }
        }
        let now = now_ms();
        match policy::response_policy(old.status, &headers, SystemTime::now()) {
            // A 304 that changes what the page varies on cannot renew the
            // copy stored under the old variant rules.
            Ok(_) if key::vary_names(&headers) != key::vary_names(&old.headers) => {
                let _ = self.store.delete(Namespace::Page, group).await;
                Outcome::Pass
            }
            Ok(p) => {
                let mut e = self.new_entry(old.status, headers, old.body.clone(), &p, now);
                if old.synthetic_etag {
                    e.synthetic_etag = true;
                }
                let names = key::vary_names(&e.headers);
                // Purged meanwhile: the stored copy stays gone.
                self.store_entry(group, &names, stale.variant.as_deref(), &e, generation)
                    .await;
                Outcome::Entry {
                    entry: Arc::new(e),
                    variant: stale.variant.clone(),
                    stale: false,
                    revalidated: true,
                }
            }
            Err(reason) => {
                tracing::debug!(
                    reason = reason.as_str(),
                    "revalidated page no longer cacheable"
                );
                let _ = self.store.delete(Namespace::Page, group).await;
                Outcome::Pass
            }
        }
    }

    /// After a successful unsafe method: the page at the target, and at its
    /// `Location`/`Content-Location` when they point to this site, go.
    async fn invalidate(&self, canon: &str, res: &HeaderMap, host: Option<&HeaderValue>) {
        let mut targets = vec![canon.to_string()];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = res
                .get(&name)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<http::Uri>().ok())
            else {
                continue;
            };
            let same_site = match uri.authority() {
                None => true,
                Some(a) => {
                    host.is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(a.as_str().as_bytes()))
                }
            };
            if same_site && let Some(pq) = uri.path_and_query() {
                targets.push(key::canonical(pq.as_str()));
            }
        }
        for t in targets {
            if let Err(e) = self.store.delete(Namespace::Page, &key::page_key(&t)).await {
                tracing::warn!(error = %e, target = %t, "invalidation failed");
            }
        }
    }
}

fn clone_parts(p: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    req.into_parts().0
}

/// Whether a client's conditional GET matches the stored validators.
fn not_modified(stored: &HeaderMap, req: &HeaderMap) -> bool {
    if let Some(inm) = req.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) {
        let Some(etag) = stored.get(header::ETAG).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let opaque = |t: &str| t.trim().trim_start_matches("W/").to_string();
        let mine = opaque(etag);
        return inm.split(',').any(|t| t.trim() == "*" || opaque(t) == mine);
    }
    let since = req
        .get(header::IF_MODIFIED_SINCE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    let modified = stored
        .get(header::LAST_MODIFIED)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| httpdate::parse_http_date(v.trim()).ok());
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

enum Collected {
    Whole(Bytes),
    /// Over the limit: what was read so far and the rest of the body.
    TooBig(Bytes, Incoming),
}

/// Reads a body whole unless it grows past `limit`.
async fn collect_limited(mut body: Incoming, limit: usize) -> Result<Collected, String> {
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| e.to_string())?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
            if buf.len() > limit {
                return Ok(Collected::TooBig(buf.freeze(), body));
            }
        }
    }
    // The buffer grew by doubling; a page kept in the hot tier should pin
    // its own size, not up to twice that (the tier's budget counts length).
    let whole = if buf.capacity() - buf.len() > buf.len() / 8 {
        Bytes::copy_from_slice(&buf)
    } else {
        buf.freeze()
    };
    Ok(Collected::Whole(whole))
}

/// A body that yields `prefix`, then the rest of an upstream body: what a
/// response too large to cache streams as once its start was buffered.
struct Chain {
    prefix: Option<Bytes>,
    rest: Incoming,
}

impl hyper::body::Body for Chain {
    type Data = Bytes;
    type Error = upstream::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        if let Some(p) = self.prefix.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(p))));
        }
        std::pin::Pin::new(&mut self.rest)
            .poll_frame(cx)
            .map_err(upstream::BoxError::from)
    }
}

fn chain(prefix: Bytes, rest: Incoming) -> Body {
    Chain {
        prefix: Some(prefix),
        rest,
    }
    .boxed_unsync()
}
