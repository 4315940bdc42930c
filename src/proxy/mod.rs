//! The caching reverse proxy in front of Django.
//!
//! A request goes through these phases, each in its own module:
//!
//! 1. **Eligibility** ([`policy::request_bypass`]): methods other than GET
//!    and HEAD, credentials, session cookies and ranges pass through
//!    (`BYPASS`); a successful unsafe method invalidates its target.
//! 2. **Key** ([`key`]): the canonical request target, and the `Vary`
//!    variant, computed once per set of headers ([`key::PageKey`]).
//! 3. **Lookup** ([`lookup`]): the store (hot tier first), through the
//!    [`PageStore`] trait.
//! 4. **Decide** ([`entry::reuse`]): fresh: served (`HIT`). Stale within
//!    its stale-while-revalidate window: served (`UPDATING`) while one
//!    background request refreshes it. Otherwise:
//! 5. **Fetch** (`fill`, [`coalesce`], [`upstream`]): one upstream request
//!    per page however many clients wait (`MISS` for the one that asked,
//!    `HIT` for those that waited); a stale page with a validator is
//!    revalidated ([`revalidate`], `refresh`: `REVALIDATED` on a 304) and served
//!    instead of an upstream error within its stale-if-error window
//!    (`STALE`).
//! 6. **Store** ([`policy::storable`], [`entry`]): what may be kept, for how
//!    long, in which record.
//! 7. **Answer** ([`answer`]): the page, or a 304 for a matching client
//!    validator, with `Age`.
//!
//! Every response carries one [`Decision`] ([`decision`]): the `X-Cache`
//! header, the debug log line and the counters ([`stats`]) all come from
//! it. Errors are in [`error`], body plumbing in [`body`].

pub mod answer;
pub mod body;
pub mod classify;
pub mod coalesce;
pub mod compress;
pub mod cookies;
pub mod decision;
mod decoded;
pub mod directives;
pub mod encoding;
pub mod entry;
pub mod error;
pub mod esi;
pub mod fields;
mod fill;
pub mod forward;
pub mod key;
pub mod lookup;
mod names;
pub mod policy;
pub mod query;
mod query_cap;
mod quick;
pub mod range;
mod recode;
mod refresh;
pub mod revalidate;
pub mod rewarm;
pub mod served;
pub mod site;
pub mod stats;
pub mod tags;
pub mod upstream;
mod verdict;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response};

use crate::store::{PageStore, Store};
use body::{Body, BoxError};
use classify::Class;
use coalesce::Coalescer;
pub use decision::{CacheStatus, Decision, Reason};
use entry::{Reuse, Windows};
pub use error::ProxyError;
use forward::TrustedProxies;
use key::PageKey;
use lookup::Looked;
use stats::ProxyStats;
use upstream::{Upstream, UpstreamConfig, UpstreamUrlError};

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
    /// Peers whose `X-Forwarded-*` headers are believed.
    pub trusted: TrustedProxies,
    /// Longest request target (path and query) accepted; longer is a 414.
    pub max_target: usize,
    /// Store responses with `Vary: Cookie` (one copy per cookie header).
    pub cache_vary_cookie: bool,
    /// Send `Surrogate-Key`/`xkey` on to clients (`--keep-tag-headers`).
    pub keep_tag_headers: bool,
    /// Content codings the upstream produces, preferred first: a cacheable
    /// request's `Accept-Encoding` becomes one of them (`proxy::encoding`).
    pub encodings: Vec<String>,
    /// The site's host names (`key::host_name` form); other hosts bypass.
    pub hosts: Vec<String>,
    /// Which site each host's pages belong to (`site`).
    pub sites: site::Sites,
    /// Longest a request waits on another's fetch (and its write) before
    /// going upstream itself: a stuck store or leader must not hold its
    /// waiters for longer than their own fetch could take.
    pub flight_wait: Duration,
    /// Longest a response streaming from the upstream waits for the client
    /// to take its next piece; then the upstream connection is let go, so a
    /// slow reader cannot pin a Django worker (nginx's `send_timeout`).
    pub send_timeout: Duration,
    /// Where each request's line goes (`--access-log`), if anywhere.
    pub access_log: Option<crate::access_log::AccessLog>,
    /// Query strings stored per path (`--max-query-variants`); 0: no cap.
    pub max_query_variants: usize,
    /// Query parameters left out of the key and the upstream's request
    /// (`--strip-query-params`, `--sort-query`).
    pub query: query::QueryRules,
    /// Cookies left out of a cacheable request (`--ignore-cookies`).
    pub cookies: cookies::CookieRules,
    /// Brotli quality text pages are stored at (`proxy::compress`);
    /// `None`: stored as sent (`--no-compress`).
    pub compress: Option<u32>,
    /// RAM for decoded copies of brotli pages (`--decoded-cache-size`).
    pub decoded_cache: u64,
}

/// The proxy, over any [`PageStore`]: the LevelDB [`Store`] in the server,
/// `store::memory::MemoryStore` in tests.
pub struct Proxy<S = Store> {
    store: S,
    upstream: Upstream,
    coalescer: Arc<Coalescer>,
    cfg: ProxyConfig,
    /// Pages recently found uncacheable → until when (unix ms): requests
    /// for them go upstream in parallel instead of queueing on a flight.
    /// Weighed in bytes ([`PASS_BYTES`]): keys are request targets, up to
    /// `--max-target-length` each.
    pass: quick_cache::sync::Cache<Vec<u8>, PassMark, KeyBytes>,
    query_cap: Option<query_cap::QueryCap>,
    encoder: compress::Encoder,
    /// Pages offered for encoding at a hit (`recode`), and the worker's end
    /// until [`Proxy::start_recoder`] takes it.
    recodes: tokio::sync::mpsc::Sender<recode::Recode>,
    /// When the next page may be offered for encoding again at a hit
    /// (unix ms): a few a second (`recode::PACE`).
    next_recode: std::sync::atomic::AtomicU64,
    recode_rx: std::sync::Mutex<Option<tokio::sync::mpsc::Receiver<recode::Recode>>>,
    /// Pages brotli did not shrink enough, by stored key, with the store
    /// time of the copy tried: not offered for encoding again.
    no_gain: quick_cache::sync::Cache<Vec<u8>, u64, NoGainBytes>,
    /// Decoded copies of brotli pages for clients that do not accept br.
    decoded: decoded::Decoded,
    stats: Arc<ProxyStats>,
}

/// Pages remembered as not worth encoding, and the RAM their keys take.
const NO_GAIN_PAGES: usize = 16_384;
const NO_GAIN_BYTES: u64 = 4 << 20;
/// RAM the hit-for-pass map may hold.
const PASS_BYTES: u64 = 4 << 20;
/// RAM the `--max-query-variants` table may hold.
const QUERY_CAP_BYTES: u64 = 16 << 20;

/// A page found uncacheable, or the `Vary` names of a page some of whose
/// variants were. Any client chooses its own variant, so a mark must not
/// send the other variants' requests upstream too: a page that varies is
/// marked under its key with the names, and each uncacheable variant under
/// that variant's own key, so marks for different variants stand side by
/// side.
#[derive(Clone)]
struct PassMark {
    /// Unix ms.
    until: u64,
    /// Under a page's key: `None` for the whole page, or the names that
    /// select its variants (each marked under `PageKey::member`).
    names: Option<Arc<Vec<String>>>,
}

/// A miss whose page is not known to be stored when its answer leaves:
/// the store `failed` (its lookup or its write: the answer says
/// `store_error`), or the write has not finished. Either way it does not
/// say `stored`.
fn not_stored((res, decision): &mut (Response<Body>, Decision), failed: bool) {
    if decision.status == CacheStatus::Miss && decision.reason.is_none() {
        if failed {
            decision.reason = Some(Reason::StoreError);
        } else {
            decision.unconfirmed = true;
        }
        if decision.shown {
            let status = res.status().as_u16();
            decision.show_again(res.headers_mut(), status);
        }
    }
}

impl<S: PageStore> Proxy<S> {
    /// Whether the request's page, or its variant, is in hit-for-pass.
    fn passes(&self, now: u64, key: &mut PageKey, request: &HeaderMap) -> bool {
        let Some(mark) = self.pass.get(&key.group).filter(|m| m.until > now) else {
            return false;
        };
        let Some(names) = mark.names else {
            return true;
        };
        key.variant(&names, request).is_some_and(|v| {
            self.pass
                .get(&key.member(&v))
                .is_some_and(|m| m.until > now)
        })
    }
}

/// Weighs a hit-for-pass entry by its key and names, plus bookkeeping.
#[derive(Clone)]
struct KeyBytes;

impl quick_cache::Weighter<Vec<u8>, PassMark> for KeyBytes {
    fn weight(&self, key: &Vec<u8>, mark: &PassMark) -> u64 {
        let names = mark
            .names
            .as_ref()
            .map_or(0, |n| n.iter().map(|n| n.len() + 24).sum::<usize>());
        (key.len() + names) as u64 + 64
    }
}

#[derive(Clone)]
struct NoGainBytes;

impl quick_cache::Weighter<Vec<u8>, u64> for NoGainBytes {
    fn weight(&self, key: &Vec<u8>, _: &u64) -> u64 {
        key.len() as u64 + 64
    }
}

/// A response with the decision that produced it.
type Answer = Result<(Response<Body>, Decision), ProxyError>;

fn is_safe(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

impl<S: PageStore> Proxy<S> {
    pub fn new(
        store: S,
        cfg: ProxyConfig,
        stats: Arc<ProxyStats>,
    ) -> Result<Self, UpstreamUrlError> {
        let upstream = Upstream::new(&cfg.upstream)?;
        let (recodes, recode_rx) = recode::channel();
        Ok(Proxy {
            store,
            upstream,
            coalescer: Arc::new(Coalescer::default()),
            pass: quick_cache::sync::Cache::with_weighter(10_000, PASS_BYTES, KeyBytes),
            query_cap: (cfg.max_query_variants > 0)
                .then(|| query_cap::QueryCap::new(cfg.max_query_variants, QUERY_CAP_BYTES)),
            encoder: compress::Encoder::start(cfg.compress.is_some()),
            recodes,
            next_recode: std::sync::atomic::AtomicU64::new(0),
            recode_rx: std::sync::Mutex::new(Some(recode_rx)),
            no_gain: quick_cache::sync::Cache::with_weighter(
                NO_GAIN_PAGES,
                NO_GAIN_BYTES,
                NoGainBytes,
            ),
            decoded: decoded::Decoded::new(cfg.decoded_cache),
            cfg,
            stats,
        })
    }

    /// Requests that have joined another's fetch so far (for tests, which
    /// wait on it rather than sleep).
    #[cfg(test)]
    pub(crate) fn joined(&self) -> u64 {
        self.coalescer.joined()
    }

    /// Serves one client request; never fails (errors become responses).
    /// Here, and only here, the request's [`Decision`] is shown: `X-Cache`,
    /// the counters, the log line.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>, peer: SocketAddr) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The target for the log line, kept only when that line is written.
        let uri = tracing::enabled!(tracing::Level::DEBUG).then(|| req.uri().clone());
        let started = crate::latency::Stopwatch::start();
        let access = self.cfg.access_log.as_ref().map(|_| {
            // Behind a trusted front, the client is the address the
            // front saw: the last `X-Forwarded-For` entry.
            let client = if self.cfg.trusted.trusts(peer.ip()) {
                req.headers()
                    .get_all("x-forwarded-for")
                    .iter()
                    .next_back()
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.rsplit(',').next())
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(peer.ip())
            } else {
                peer.ip()
            };
            crate::access_log::Pending::begin(&req, client)
        });
        let visitor = esi::Visitor::of(&req);
        let method = req.method().clone();
        let (mut res, decision) = match self.route(req, peer).await {
            Ok(answered) => answered,
            Err(e) => {
                tracing::warn!(error = %e, upstream = %self.cfg.upstream.base, "proxy error");
                let reason = match e {
                    ProxyError::BadRequest(_) | ProxyError::TargetTooLong(_) => Reason::BadRequest,
                    _ => Reason::UpstreamError,
                };
                (e.to_response(), Decision::uncached(reason))
            }
        };
        if res.extensions().get::<esi::Shell>().is_some() && esi::assembles(&method, res.status()) {
            res = self.clone().assemble(res, visitor, peer).await;
        }
        self.stats.count(decision);
        self.stats
            .answered(decision, res.status().as_u16(), started.elapsed());
        if !decision.shown {
            let status = res.status().as_u16();
            decision.show(res.headers_mut(), status);
        }
        if let (Some(pending), Some(log)) = (access, &self.cfg.access_log) {
            let length = res
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
            let status = res.status().as_u16();
            pending.finish(
                log,
                status,
                length,
                decision.status.as_str(),
                decision.reason_str(),
            );
        }
        if let Some(uri) = uri {
            tracing::debug!(
                target = %uri,
                status = res.status().as_u16(),
                cache = decision.status.as_str(),
                reason = decision.reason_str(),
                "answered"
            );
        }
        res
    }

    async fn route<B>(self: &Arc<Self>, req: Request<B>, peer: SocketAddr) -> Answer
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (mut parts, body) = req.into_parts();
        let trusted = &self.cfg.trusted;
        // HTTP/2 names the host in `:authority`; from here on it is `Host`.
        // (An HTTP/1.1 request must send `Host` itself: `classify`.)
        if parts.version != http::Version::HTTP_11
            && !parts.headers.contains_key(header::HOST)
            && let Some(a) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(a.as_str())
        {
            parts.headers.insert(header::HOST, v);
        }
        forward::sanitize(&mut parts.headers, peer, trusted);
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        let head = classify::Head {
            method: parts.method.as_str(),
            target,
            http11: parts.version == http::Version::HTTP_11,
            fields: &parts.headers,
        };
        let cacheable = match classify::classify(&head, peer.ip(), &self.cfg) {
            Class::Refused(e) => return Err(e),
            Class::OtherMethod => {
                let canon = key::canonical(&self.cfg.query.apply(target));
                forward::set_forwarding(&mut parts.headers, &parts.uri, peer, trusted);
                let unsafe_method = !is_safe(&parts.method);
                let host = parts.headers.get(header::HOST).cloned();
                let res = self.pass_through(parts, body::boxed(body)).await?;
                let s = res.status();
                // RFC 9111 §4.4: the target after any non-error status; the
                // pages `Location` and `Content-Location` name only after a
                // 2xx (a redirect's Location, e.g. Django's APPEND_SLASH
                // answering any POST, would let anyone purge any page).
                if unsafe_method && (s.is_success() || s.is_redirection()) {
                    let named = if s.is_success() {
                        Some(res.headers())
                    } else {
                        None
                    };
                    self.invalidate(&canon, named, host.as_ref()).await;
                }
                return Ok((res, Decision::because(CacheStatus::Bypass, Reason::Method)));
            }
            Class::Session(c) => {
                if let Some(shell) = self.shell_for_session(&parts, c).await {
                    return Ok(shell);
                }
                forward::set_forwarding(&mut parts.headers, &parts.uri, peer, trusted);
                let res = self.pass_through(parts, body::boxed(body)).await?;
                let reason = Reason::SessionCookie;
                return Ok((res, Decision::because(CacheStatus::Bypass, reason)));
            }
            Class::Bypass(reason) => {
                forward::set_forwarding(&mut parts.headers, &parts.uri, peer, trusted);
                let res = self.pass_through(parts, body::boxed(body)).await?;
                return Ok((res, Decision::because(CacheStatus::Bypass, reason)));
            }
            Class::Cacheable(c) => c,
        };
        self.as_looked_up(&mut parts, &cacheable);
        // Django renders the target the key names.
        if let Some(target) = &cacheable.target {
            let rewritten = target.parse().ok().and_then(|pq| {
                let mut uri = parts.uri.clone().into_parts();
                uri.path_and_query = Some(pq);
                http::Uri::from_parts(uri).ok()
            });
            parts.uri =
                rewritten.ok_or_else(|| ProxyError::BadRequest("unreadable target".into()))?;
        }
        // GET/HEAD bodies are not forwarded on the cache path: neither are
        // the headers that announce one, or the upstream would wait for it.
        drop(body);
        parts.headers.remove(header::CONTENT_LENGTH);
        parts.headers.remove(header::EXPECT);
        self.from_cache(parts, cacheable.key, Some(peer)).await
    }

    /// A cacheable request's fields as its page is looked up: one spelling
    /// per coding, no analytics cookies, the site's `Host`, before the
    /// variant is computed; what the client itself accepts is kept for its
    /// answer.
    fn as_looked_up(&self, parts: &mut Parts, c: &classify::Cacheable) {
        let accepts = compress::Accepts::of(&parts.headers);
        parts.extensions.insert(accepts);
        encoding::normalise(&mut parts.headers, &self.cfg.encodings);
        self.cfg.cookies.strip(&mut parts.headers);
        if let Some(respelled) = &c.respelled
            && let Ok(v) = HeaderValue::from_str(respelled)
        {
            parts.headers.insert(header::HOST, v);
        }
    }

    /// The stored shell a visitor with a session may be served: an ESI
    /// page, fresh, found as any visitor's request finds it. Anything else
    /// (a page Django rendered without ESI may hold another visitor's
    /// session) is `None`: passed through.
    async fn shell_for_session(
        self: &Arc<Self>,
        parts: &Parts,
        c: classify::Cacheable,
    ) -> Option<(Response<Body>, Decision)> {
        let mut p = clone_parts(parts);
        self.as_looked_up(&mut p, &c);
        let mut key = c.key;
        let now = self.store.clock().now_ms();
        let Looked::Found(f) = lookup::lookup(&self.store, &mut key, &p.headers, now).await else {
            return None;
        };
        if !answer::is_shell(&f.entry)
            || entry::reuse(&f.entry, now, &self.windows()) != Reuse::Fresh
        {
            return None;
        }
        Some(self.answer_found(&f, &key, &p, now, CacheStatus::Hit))
    }

    /// The answer to `parts` from `f`, found under `key`, served as
    /// `status` (a hit, or a stale page while it is refreshed).
    fn answer_found(
        &self,
        f: &lookup::Found,
        key: &PageKey,
        parts: &Parts,
        now: u64,
        status: CacheStatus,
    ) -> (Response<Body>, Decision) {
        let decision = Decision::new(status).with_ttl(f.entry.fresh_until, now);
        let body = |rep| self.body_in(&key.group, f.variant.as_deref(), &f.entry, rep);
        answer::for_request(&f.entry, parts, now, decision, body)
    }

    /// Phases 2 to 7 for a request that may use the cache. `peer` is the
    /// client's address while its headers have not been rewritten for the
    /// upstream yet; `None` when they have (a request starting over, see
    /// `fill`).
    async fn from_cache(
        self: &Arc<Self>,
        mut parts: Parts,
        mut key: PageKey,
        peer: Option<SocketAddr>,
    ) -> Answer {
        // 2, 3. Key and lookup, at the time the decision is made at.
        let now = self.store.clock().now_ms();
        let (found, store_failed) =
            match lookup::lookup(&self.store, &mut key, &parts.headers, now).await {
                Looked::Found(f) => (Some(f), false),
                Looked::Missing => (None, false),
                Looked::Failed => (None, true),
            };

        // 4. Decide.
        let reuse = found
            .as_ref()
            .map(|f| entry::reuse(&f.entry, now, &self.windows()));
        if let (Some(f), Some(Reuse::Fresh)) = (&found, reuse) {
            self.recode_later(&key.group, f);
            return Ok(self.answer_found(f, &key, &parts, now, CacheStatus::Hit));
        }
        // From here on the upstream may be asked; hits never pay for this.
        if let Some(peer) = peer {
            forward::set_forwarding(&mut parts.headers, &parts.uri, peer, &self.cfg.trusted);
            key.headers_changed();
        }
        if let (Some(f), Some(Reuse::Updating)) = (&found, reuse) {
            self.refresh_in_background(&parts, &key, f);
            return Ok(self.answer_found(f, &key, &parts, now, CacheStatus::Updating));
        }

        // 5-7. Fetch, store, answer.
        let mut answer = self.fetch(parts, key, found).await?;
        if store_failed {
            not_stored(&mut answer, true);
        }
        Ok(answer)
    }

    fn windows(&self) -> Windows {
        Windows {
            grace: self.cfg.grace,
            stale_if_error: self.cfg.stale_if_error,
        }
    }

    /// Sends a request upstream, counting it, its failure by kind, and the
    /// time to its response head.
    async fn send_upstream(
        &self,
        req: Request<Body>,
    ) -> Result<Response<hyper::body::Incoming>, ProxyError> {
        self.stats.upstream_request();
        let started = std::time::Instant::now();
        let sent = self.upstream.send(req).await;
        match &sent {
            Ok(res) => {
                self.stats.upstream_latency.observe(started.elapsed());
                if res.status().is_server_error() {
                    self.stats.upstream_error(stats::UpstreamFailure::Status5xx);
                }
            }
            Err(e) => self.stats.upstream_error(stats::UpstreamFailure::of(e)),
        }
        sent
    }

    /// Forwards a request as is and streams the answer back.
    async fn pass_through(&self, parts: Parts, body: Body) -> Result<Response<Body>, ProxyError> {
        let res = self.send_upstream(Request::from_parts(parts, body)).await?;
        let (mut rp, body) = res.into_parts();
        forward::strip_hop_by_hop(&mut rp.headers);
        Ok(self.streamed(rp, body::boxed(body)))
    }

    /// Removes the tag headers, unless `--keep-tag-headers`: from what is
    /// stored (so never served) and from what streams through.
    fn strip_tags(&self, headers: &mut HeaderMap) {
        if !self.cfg.keep_tag_headers {
            tags::strip(headers);
        }
    }

    /// A client response streaming an upstream body: bigcache's own fields
    /// (and the tag headers, unless kept) removed, the body relayed within the upstream and client deadlines.
    fn streamed(&self, mut rp: http::response::Parts, body: Body) -> Response<Body> {
        if esi::opted_in(&rp.headers) {
            rp.extensions.insert(esi::Shell);
        }
        policy::strip_own(&mut rp.headers);
        self.strip_tags(&mut rp.headers);
        let body = body::relayed(body, self.upstream.timeout, self.cfg.send_timeout);
        Response::from_parts(rp, body)
    }

    /// After a successful unsafe method: the page at the target, and at its
    /// `Location`/`Content-Location` when they point to this site, go.
    async fn invalidate(&self, canon: &str, res: Option<&HeaderMap>, host: Option<&HeaderValue>) {
        let mut targets = vec![canon.to_string()];
        for name in [header::LOCATION, header::CONTENT_LOCATION] {
            let Some(uri) = res
                .and_then(|h| h.get(&name))
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
                targets.push(key::canonical(&self.cfg.query.apply(pq.as_str())));
            }
        }
        for t in targets {
            if let Err(e) = self.store.delete_page(&key::page_key(&t), true).await {
                tracing::warn!(error = %e, target = %t, "invalidation failed");
            }
        }
    }
}

/// Headers from name/value pairs (repeated names appended), for the unit
/// tests of the header-reading modules.
#[cfg(test)]
pub(crate) fn test_headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut m = HeaderMap::new();
    for (k, v) in pairs {
        m.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    m
}

fn clone_parts(p: &Parts) -> Parts {
    let mut req = Request::new(());
    *req.method_mut() = p.method.clone();
    *req.uri_mut() = p.uri.clone();
    *req.version_mut() = p.version;
    *req.headers_mut() = p.headers.clone();
    let mut parts = req.into_parts().0;
    if let Some(a) = p.extensions.get::<compress::Accepts>() {
        parts.extensions.insert(*a);
    }
    parts
}
