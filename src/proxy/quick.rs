//! Hits answered without hyper: which parsed HTTP/1.1 requests the proxy
//! can answer from the store at once, and the bytes it answers with.
//! `server::quick` reads the requests off the socket and writes the bytes;
//! everything here is the proxy's own rules, applied to a request that was
//! never turned into an `http::Request`.
//!
//! A request qualifies only when the general path ([`Proxy::handle`])
//! would serve the page unchanged as a `HIT` for any request that shares
//! its key: a GET on a known host, no credentials or session, nothing that
//! makes the answer a 304 or a range, no forwarding headers from a trusted
//! front (whose values the general path checks), and a fresh page that
//! does not vary (from the RAM tier, or read from disk). For everything
//! else `answer` says
//! `None` and the request goes through hyper and the general path as if
//! this module did not exist. The answer is the same response that path
//! gives (`answer::wire_head`), counted and shown by the same
//! [`Decision`].

use std::net::SocketAddr;

use super::Proxy;
use super::answer;
use super::decision::{CacheStatus, Decision};
use super::entry::{self, Reuse};
use super::key::{self, PageKey};
use super::lookup;
use super::policy;
use crate::server::quick::{Head, QuickHits, Ready};
use crate::store::{Kind, Lookup, PageStore};

/// Bytes a target may hold to be answered here: RFC 3986's path and query
/// characters, so hyper's parser would take it exactly as written (and
/// `key::canonical` sees what the general path would see).
fn plain_target(target: &str) -> bool {
    target.starts_with('/')
        && target.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'-' | b'.'
                        | b'_'
                        | b'~'
                        | b'%'
                        | b'!'
                        | b'$'
                        | b'&'
                        | b'\''
                        | b'('
                        | b')'
                        | b'*'
                        | b'+'
                        | b','
                        | b';'
                        | b'='
                        | b':'
                        | b'@'
                        | b'/'
                        | b'?'
                )
        })
}

/// Request fields that change what the general path answers, or that it
/// checks before answering: a request carrying any goes there.
fn needs_general_path(name: &str, trusted_peer: bool) -> bool {
    let is = |n: &str| name.eq_ignore_ascii_case(n);
    let starts = |p: &str| {
        name.len() >= p.len() && name.as_bytes()[..p.len()].eq_ignore_ascii_case(p.as_bytes())
    };
    is("authorization")
        || is("range")
        // If-None-Match, If-Modified-Since, If-Range, If-Match, ...
        || starts("if-")
        || (trusted_peer && (is("forwarded") || starts("x-forwarded-")))
}

impl<S: PageStore> Proxy<S> {
    /// The answer to a parsed HTTP/1.1 request when it is a plain hit (see
    /// the module doc); `None` sends it down the general path.
    pub async fn quick_answer(&self, req: &Head<'_>, peer: SocketAddr) -> Option<Ready> {
        // Its line is written by the general path, which has the request
        // in the form the log reads.
        if self.cfg.access_log.is_some() {
            return None;
        }
        let started = std::time::Instant::now();
        if req.method != "GET"
            || req.target.len() > self.cfg.max_target
            || !plain_target(req.target)
        {
            return None;
        }
        let trusted = self.cfg.trusted.trusts(peer.ip());
        let mut host = None;
        for h in req.headers {
            if h.name.eq_ignore_ascii_case("host") {
                // Two Hosts are the general path's 400.
                if host.replace(h.value).is_some() {
                    return None;
                }
            } else if h.name.eq_ignore_ascii_case("cookie") {
                if policy::names_a_session(h.value, &self.cfg.session_cookies) {
                    return None;
                }
            } else if needs_general_path(h.name, trusted) {
                return None;
            }
        }
        let host = policy::known_host_value(std::str::from_utf8(host?).ok()?, &self.cfg.hosts)?;
        // Forwarding fields from a trusted front went to the general path:
        // this request came over plain HTTP.
        let segment = self.cfg.sites.segment("http", &host);
        let key = PageKey::for_site(key::canonical(req.target), segment);
        // The RAM tier without a wait; else the store (a miss is then
        // looked up again by the general path, on its way upstream).
        let rec = match self.store.hot_page(&key.group) {
            Some(rec) => rec,
            None => match self.store.get_page(&key.group).await {
                Ok(Lookup::Hit(rec)) => rec,
                Ok(Lookup::Miss | Lookup::Expired) | Err(_) => return None,
            },
        };
        // A group's variant is chosen from request fields: the general
        // path's work.
        if rec.kind == Kind::Group {
            return None;
        }
        let entry = match &*lookup::decoded(&rec) {
            Ok(e) => e.clone(),
            Err(_) => return None,
        };
        let now = self.store.clock().now_ms();
        if entry::reuse(&entry, now, &self.windows()) != Reuse::Fresh {
            return None;
        }
        let decision = Decision {
            shown: true,
            ..Decision::new(CacheStatus::Hit).with_ttl(entry.fresh_until, now)
        };
        let head = answer::wire_head(&entry, now, decision)?;
        let status = entry.status.as_u16();
        self.stats.count(decision);
        self.stats.quick_hit();
        self.stats.answered(decision, status, started.elapsed());
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                target = req.target,
                status,
                cache = decision.status.as_str(),
                reason = decision.reason_str(),
                "answered"
            );
        }
        Some(Ready {
            head,
            body: entry.body.clone(),
        })
    }
}

impl<S: PageStore> QuickHits for Proxy<S> {
    fn answer(
        &self,
        req: &Head<'_>,
        peer: SocketAddr,
    ) -> impl std::future::Future<Output = Option<Ready>> + Send {
        self.quick_answer(req, peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_outside_rfc_3986_take_the_general_path() {
        for ok in ["/", "/a/b?c=d&e=%20f", "/~x/(1)*+,;=:@!$'"] {
            assert!(plain_target(ok), "{ok}");
        }
        for not in [
            "",
            "*",
            "http://h/",
            "/a#b",
            "/a b",
            "/a\"b",
            "/a{b}",
            "/a|b",
            "/a\\b",
            "/a^b",
            "/a`b",
            "/a<b>",
            "/caf\u{e9}",
        ] {
            assert!(!plain_target(not), "{not}");
        }
    }

    #[test]
    fn fields_that_change_the_answer_take_the_general_path() {
        for name in [
            "Authorization",
            "range",
            "If-None-Match",
            "if-modified-since",
            "IF-RANGE",
        ] {
            assert!(needs_general_path(name, false), "{name}");
        }
        for name in ["Forwarded", "X-Forwarded-For", "x-forwarded-host"] {
            assert!(needs_general_path(name, true), "{name}");
            assert!(!needs_general_path(name, false), "{name}: stripped anyway");
        }
        for name in ["Accept", "User-Agent", "Accept-Encoding", "I", "If"] {
            assert!(!needs_general_path(name, true), "{name}");
        }
    }
}
