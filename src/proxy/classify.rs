//! The one decision about a request's head: refused, passed through, or
//! allowed to use the cache under which key. The general path
//! ([`super::Proxy::handle`]) and the fast path (`proxy::quick`, on
//! requests `server::h1` parsed in place) both call [`classify`] and act
//! on what it says; neither has a rule of its own about which requests may
//! be answered from the store.
//!
//! The order is the order a request's problems are reported in: the
//! target's length (414), the `Host` count (400, RFC 9112 §3.2), the
//! method, then the bypass rules ([`policy::request_bypass`]) and the
//! values a trusted front forwards ([`forward::forwarded_ok`]).
//!
//! The fields given are the ones the upstream would see less what
//! `forward::sanitize` adds nothing to: the general path sanitizes first;
//! the fast path takes only requests whose `Connection` names no field,
//! where sanitizing removes nothing this function reads.

use std::borrow::Cow;
use std::net::IpAddr;

use super::decision::Reason;
use super::error::ProxyError;
use super::fields::{Fields, Known};
use super::key::{self, PageKey};
use super::site::Sites;
use super::{ProxyConfig, forward, policy, site};

/// A request head as either parser read it.
pub struct Head<'a, F: Fields + ?Sized> {
    pub method: &'a str,
    /// Path and query (origin form).
    pub target: &'a str,
    /// HTTP/1.1, where a missing `Host` is an error; HTTP/2 names the host
    /// in `:authority`, which the general path has made `Host` already.
    pub http11: bool,
    pub fields: &'a F,
}

/// What a request is.
#[derive(Debug)]
pub enum Class {
    /// Answered with an error before anything else.
    Refused(ProxyError),
    /// Neither GET nor HEAD: passed through, and a success invalidates the
    /// pages it names (RFC 9111 §4.4).
    OtherMethod,
    /// Passed through both ways: never answered from the store, its
    /// response never stored.
    Bypass(Reason),
    /// May be answered from the store, and its response stored.
    Cacheable(Cacheable),
    /// A visitor with a session: answered from the store only by an ESI
    /// shell (a page Django rendered for everyone, `proxy::esi`), else
    /// passed through as [`Reason::SessionCookie`]; its response never
    /// stored.
    Session(Cacheable),
}

#[derive(Debug)]
pub struct Cacheable {
    /// The page's key: canonical target and site.
    pub key: PageKey,
    /// The site's spelling of the `Host` when the request spelt it
    /// otherwise (`Example.ORG.` is `example.org`): what the upstream is
    /// sent, so every request sharing a page renders it alike.
    pub respelled: Option<String>,
    /// From a `--trusted-proxy` peer: its forwarding fields were checked
    /// and are kept.
    pub trusted: bool,
    /// The target the key names, when `--strip-query-params` or
    /// `--sort-query` changed it: what the upstream is sent.
    pub target: Option<String>,
}

/// Classifies a request from `peer`. A parsed head is best given as
/// [`fields::Gathered`](super::fields::Gathered): the rules read each
/// field several times.
pub fn classify<F: Fields + ?Sized>(req: &Head<'_, F>, peer: IpAddr, cfg: &ProxyConfig) -> Class {
    if req.target.len() > cfg.max_target {
        return Class::Refused(ProxyError::TargetTooLong(cfg.max_target));
    }
    let mut hosts = req.fields.known(Known::Host);
    let (first, second) = (hosts.next(), hosts.next());
    // Without a Host, what the upstream renders depends on its default
    // site, which no cache key names.
    if req.http11 && first.is_none() {
        return Class::Refused(ProxyError::BadRequest(
            "HTTP/1.1 request without Host".into(),
        ));
    }
    // Two Hosts: a front and the upstream may each believe another.
    if second.is_some() {
        return Class::Refused(ProxyError::BadRequest("more than one Host".into()));
    }
    if req.method != "GET" && req.method != "HEAD" {
        return Class::OtherMethod;
    }
    let site_host = policy::known_host(req.fields, &cfg.hosts);
    let trusted = cfg.trusted.trusts(peer);
    // What a trusted front says is passed on as sent, and Django may
    // render from it: it must be one plain value the site can serve.
    let forwarded_ok = !trusted || forward::forwarded_ok(req.fields, site_host.as_deref());
    let bypass = policy::request_bypass(req.fields, site_host.is_some(), &cfg.session_cookies)
        .or((!forwarded_ok).then_some(Reason::UnknownHost));
    let session = match bypass {
        Some(Reason::SessionCookie) if forwarded_ok => true,
        Some(reason) => return Class::Bypass(reason),
        None => false,
    };
    let Some(site_host) = site_host else {
        return Class::Bypass(Reason::UnknownHost);
    };
    let scheme = site::scheme_of(req.fields, trusted);
    let target = cfg.query.apply(req.target);
    let key = page_key(&target, &cfg.sites, scheme, &site_host);
    let respelled = match site_host {
        Cow::Owned(h) => Some(h),
        Cow::Borrowed(_) => None,
    };
    let c = Cacheable {
        key,
        respelled,
        trusted,
        target: match target {
            Cow::Owned(t) => Some(t),
            Cow::Borrowed(_) => None,
        },
    };
    match session {
        true => Class::Session(c),
        false => Class::Cacheable(c),
    }
}

fn page_key(target: &str, sites: &Sites, scheme: site::Scheme, host: &str) -> PageKey {
    let segment = sites.segment(scheme, host);
    // Room for the segment in the canonical target's own buffer.
    let room = segment.map_or(0, |(s, h)| key::segment_len(s, h));
    PageKey::for_site(key::canonical_with_room(target, room), segment)
}
