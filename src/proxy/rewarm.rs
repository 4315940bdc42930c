//! Re-warming after a soft purge (`X-Bigcache-Purge: soft, warm`): each
//! page the purge marked stale is refreshed at once, instead of by its next
//! visitor, at most `--rewarm-concurrency` at a time across all purges, so
//! Django is not flattened.
//!
//! A page is requested as a visitor of its own site would request it (the
//! site its key names, `proxy::site`: `--site-url`'s for the data
//! directory's own pages): that `Host`, `X-Forwarded-Proto` its scheme, `X-Forwarded-For: unknown` (no
//! visitor's address, and not the loopback one Django would otherwise see),
//! and the request headers its
//! variant was stored under (read back from the variant in its key). The
//! refresh goes through the proxy's own coalesced fetch, so a visitor
//! asking for the page meanwhile shares it, a purge landing meanwhile wins,
//! and a failing upstream leaves the stale copy in place. A page no longer
//! stale when its turn comes (a visitor refreshed it) is skipped, and so
//! is one whose variant cannot be rebuilt exactly.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request};
use tokio::sync::Semaphore;

use super::Proxy;
use super::encoding;
use super::key::PageKey;
use super::lookup::{self, Looked};
use crate::store::{MAX_MARKED, Namespace};

/// Where re-warm requests claim to come from.
#[derive(Debug, Clone)]
pub struct Site {
    /// `http` or `https`, sent as `X-Forwarded-Proto`.
    pub scheme: String,
    /// Sent as `Host` and `X-Forwarded-Host`.
    pub host: String,
}

pub struct Rewarmer {
    proxy: Arc<Proxy>,
    permits: Arc<Semaphore>,
    /// Pages waiting for a permit, over all purges.
    queued: Arc<AtomicUsize>,
}

impl Rewarmer {
    pub fn new(proxy: Arc<Proxy>, concurrency: usize) -> Rewarmer {
        Rewarmer {
            proxy,
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            queued: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Queues the pages at store keys `keys` (`p<target>\0<variant>`) for
    /// a refresh; returns how many were queued. At most [`MAX_MARKED`] wait
    /// at once: past that a page is left for its next visitor.
    pub fn queue(&self, mut keys: Vec<Vec<u8>>) -> usize {
        // Room taken in one step, so purges at once cannot overshoot.
        let mut n = 0;
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |q| {
                n = keys.len().min(MAX_MARKED.saturating_sub(q));
                Some(q + n)
            });
        keys.truncate(n);
        // One task walks the list in order, starting each refresh once a
        // permit is free: a purge of 100,000 pages holds their keys, not
        // 100,000 waiting tasks.
        let proxy = self.proxy.clone();
        let permits = self.permits.clone();
        let queued = self.queued.clone();
        tokio::spawn(async move {
            for key in keys {
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                queued.fetch_sub(1, Ordering::Relaxed);
                let proxy = proxy.clone();
                tokio::spawn(async move {
                    refresh(&proxy, &key).await;
                    drop(permit);
                });
            }
        });
        n
    }
}

/// Refreshes one page if it is still soft-purged.
async fn refresh(proxy: &Arc<Proxy>, store_key: &[u8]) {
    let Some((target, own_site, variant)) = split_key(store_key) else {
        return;
    };
    // A copy is refreshed for its own site: another site's for that one, a
    // bare key's for the data directory's own (`proxy::site`).
    let (scheme, host) = own_site.unwrap_or_else(|| proxy.cfg.sites.bare());
    let site = Site {
        scheme: scheme.to_string(),
        host: host.to_string(),
    };
    let Some(mut parts) = request_for(target, variant, &site) else {
        tracing::debug!(
            target,
            "page cannot be re-warmed: its variant does not rebuild"
        );
        return;
    };
    encoding::normalise(&mut parts.headers, &proxy.cfg.encodings);
    let mut key = PageKey::for_site(target.to_string(), own_site);
    let now = proxy.store.clock().now_ms();
    let Looked::Found(found) = lookup::lookup(&proxy.store, &mut key, &parts.headers, now).await
    else {
        return;
    };
    // The variant the rebuilt request selects must be the page's own.
    if found.variant.as_deref().unwrap_or("") != variant
        || found.entry.soft_purged_at.is_none()
        || found.entry.is_fresh(now)
    {
        return;
    }
    // Its upstream request is counted as any other; the answer, given to
    // nobody, is not a client request.
    if let Err(e) = proxy.fetch(parts, key, Some(found)).await {
        tracing::warn!(target, error = %e, "re-warming a soft-purged page failed");
    }
}

/// A page's site, as (scheme, host), when it is not the data directory's
/// own.
type OwnSite<'k> = Option<(&'k str, &'k str)>;

/// (target, site, variant) of a page's store key (`proxy::site`).
fn split_key(key: &[u8]) -> Option<(&str, OwnSite<'_>, &str)> {
    let rest = key.strip_prefix(&[Namespace::Page.tag()])?;
    let nul = memchr::memchr(0, rest)?;
    let target = std::str::from_utf8(&rest[..nul]).ok()?;
    let mut rest = &rest[nul + 1..];
    let mut site = None;
    if let Some(segment) = rest.strip_prefix(b"@")
        && let Some(end) = memchr::memchr(0, segment)
    {
        let (scheme, host) = std::str::from_utf8(&segment[..end])
            .ok()?
            .split_once("://")?;
        site = Some((scheme, host));
        rest = &segment[end + 1..];
    }
    let variant = std::str::from_utf8(rest).ok()?;
    Some((target, site, variant))
}

/// A GET for `target` with the headers variant `variant` was stored for
/// (`key::variant` backwards: `name=value` pairs split by `\x1f`, values
/// percent-escaped; an empty value is an absent header).
fn request_for(target: &str, variant: &str, site: &Site) -> Option<http::request::Parts> {
    let mut req = Request::builder().method(Method::GET).uri(target);
    let host = HeaderValue::from_str(&site.host).ok()?;
    // `X-Forwarded-For: unknown`: without one Django would see bigcache's
    // loopback address, and a site that trusts its own machine
    // (INTERNAL_IPS, debug toolbars, previews) must not render for the
    // cache what it renders for itself.
    req = req
        .header(header::HOST, host.clone())
        .header("x-forwarded-host", host)
        .header("x-forwarded-proto", site.scheme.as_str())
        .header("x-forwarded-for", "unknown");
    if !variant.is_empty() {
        for pair in variant.split('\x1f') {
            let (name, value) = pair.split_once('=')?;
            if value.is_empty() {
                continue;
            }
            let value: Vec<u8> = percent_encoding::percent_decode_str(value).collect();
            req = req.header(
                HeaderName::from_bytes(name.as_bytes()).ok()?,
                HeaderValue::from_bytes(&value).ok()?,
            );
        }
    }
    Some(req.body(()).ok()?.into_parts().0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::key;

    #[test]
    fn a_variant_rebuilds_the_headers_it_was_stored_for() {
        let site = Site {
            scheme: "https".into(),
            host: "www.example.org".into(),
        };
        let mut h = http::HeaderMap::new();
        h.insert("accept-language", "de-CH, en;q=0.5".parse().unwrap());
        h.insert("x-odd", HeaderValue::from_bytes(b"100%\x80").unwrap());
        let names = vec![
            "accept-encoding".to_string(),
            "accept-language".to_string(),
            "x-odd".to_string(),
        ];
        let v = key::variant(&names, &h).unwrap();
        let mut store_key = b"p/a/?x=1\0".to_vec();
        store_key.extend_from_slice(v.as_bytes());
        let (target, own, variant) = split_key(&store_key).unwrap();
        assert_eq!((target, own), ("/a/?x=1", None));
        let parts = request_for(target, variant, &site).unwrap();
        assert_eq!(
            key::variant(&names, &parts.headers).as_deref(),
            Some(variant)
        );
        assert!(!parts.headers.contains_key("accept-encoding"));
        assert_eq!(parts.headers["host"], "www.example.org");
        assert_eq!(parts.headers["x-forwarded-proto"], "https");
        assert_eq!(parts.headers["x-forwarded-for"], "unknown");
        assert_eq!(parts.uri, "/a/?x=1");
        // A page without Vary.
        let (target, own, variant) = split_key(b"p/plain\0").unwrap();
        assert_eq!((target, own, variant), ("/plain", None, ""));
        // Another site's copy names its site.
        let (target, own, variant) =
            split_key(b"p/plain\0@https://static.example.org\0accept=x").unwrap();
        assert_eq!(
            (target, own, variant),
            ("/plain", Some(("https", "static.example.org")), "accept=x")
        );
        assert!(split_key(b"vvalue").is_none());
    }
}
