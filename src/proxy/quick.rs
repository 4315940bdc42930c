//! The proxy's side of `server::h1`: requests answered from the store
//! straight from a head parsed in place, and every other request handed
//! to the general path ([`Proxy::handle`]) on the same connection.
//!
//! Which requests may be answered from the store is [`classify`]'s
//! decision, the general path's own; the key, the variant, the reuse
//! decision and the answer's shape are the general path's functions too
//! (`lookup`, `entry::reuse`, `answer`), run over the borrowed fields. What
//! this module adds is only what borrowing needs: a target `http::Uri`
//! reads exactly as sent ([`plain_target`]), and the fields a variant is
//! computed from as the general path holds them by then ([`AsLookedUp`]).
//! A page found fresh is answered here (`HIT`), whole from bytes made
//! once per page and second, or as a 304, a range, a HEAD; an ESI shell
//! whose includes are all fresh hits is assembled here too
//! (`quick_shell`); anything else (a miss, a stale page, a
//! bypass, an include to fetch) goes to the general path.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use super::Proxy;
use super::answer::{self, Shape};
use super::body::Body;
use super::classify::{self, Class};
use super::compress::{self, Accepts};
use super::cookies::CookieRules;
use super::decision::{CacheStatus, Decision};
use super::entry::{self, Entry, Reuse};
use super::esi::{self, parse::Piece};
use super::fields::{Fields, Gathered, Known};
use super::lookup::{self, Looked};
use super::{encoding, forward, key};
use crate::server::h1::{Answer, Handler, Head, Ready};
use crate::store::PageStore;

/// A target answered here: [`key::plain_target`], so hyper's parser would
/// take it exactly as written (and `key::canonical` sees what the general
/// path would see).
fn plain_target(target: &str) -> bool {
    key::plain_target(target.as_bytes())
}

/// A request's fields as the general path holds them when it computes
/// the variant: what `forward::sanitize` keeps, `Accept-Encoding` as
/// `encoding::normalise` rewrites it, `Cookie` without the ignored
/// cookies, `Host` in the site's spelling.
/// Built only for heads whose `Connection` names no field and that carry
/// at most one `Cookie` line (sanitize joins several).
struct AsLookedUp<'a, F: Fields + ?Sized> {
    fields: &'a F,
    trusted: bool,
    host: Option<&'a str>,
    /// `--accept-encoding`: empty leaves the header as sent.
    codings: &'a [String],
    /// The one `Cookie` line as sent.
    cookie: Option<&'a [u8]>,
    rules: &'a CookieRules,
    /// `cookie` without `--ignore-cookies`' cookies: made only for a page
    /// that varies on `Cookie` (matching every name cost a browser's hit
    /// an eighth of its instructions).
    kept: std::sync::OnceLock<Option<std::borrow::Cow<'a, [u8]>>>,
}

impl<F: Fields + ?Sized> Fields for AsLookedUp<'_, F> {
    fn each(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.fields.each().filter(|(n, _)| self.keeps(n))
    }

    fn all<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s [u8]> {
        let replaced: Option<Option<&[u8]>> = match name {
            "accept-encoding" if !self.codings.is_empty() => {
                Some(encoding::chosen(self.fields, self.codings).map(String::as_bytes))
            }
            "host" => self.host.map(|h| Some(h.as_bytes())),
            "cookie" => Some(self.kept_cookie()),
            _ => None,
        };
        // `name` is lower-case: the fields it names are kept or not as it is.
        let raw = (replaced.is_none() && self.keeps(name)).then(|| self.fields.all(name));
        replaced
            .flatten()
            .into_iter()
            .chain(raw.into_iter().flatten())
    }
}

impl<'a, F: Fields + ?Sized> AsLookedUp<'a, F> {
    /// `fields` of a request classified cacheable (from a `trusted` peer,
    /// its host `respelled`), as the general path looks its page up.
    #[inline]
    fn new(
        fields: &'a F,
        trusted: bool,
        respelled: Option<&'a str>,
        cfg: &'a super::ProxyConfig,
    ) -> Self {
        AsLookedUp {
            fields,
            trusted,
            host: respelled,
            codings: &cfg.encodings,
            cookie: fields.known(Known::Cookie).next(),
            rules: &cfg.cookies,
            kept: Default::default(),
        }
    }

    fn kept_cookie(&self) -> Option<&[u8]> {
        self.kept
            .get_or_init(|| self.cookie.and_then(|v| self.rules.kept(v)))
            .as_deref()
    }

    fn keeps(&self, name: &str) -> bool {
        let mut lower = [0u8; 32];
        let Some(lower) = lower.get_mut(..name.len()) else {
            // No rule names a field this long: only `_` can drop it.
            return !name.contains('_');
        };
        lower.copy_from_slice(name.as_bytes());
        lower.make_ascii_lowercase();
        std::str::from_utf8(lower).is_ok_and(|n| forward::kept(n, self.trusted))
    }
}

impl<S: PageStore> Proxy<S> {
    /// The answer from the store to a parsed HTTP/1.1 request (see the
    /// module doc); `None` sends it down the general path.
    pub async fn quick_answer(&self, req: &Head<'_>, peer: SocketAddr) -> Option<Answer<Body>> {
        // Its line is written by the general path, which has the request
        // in the form the log reads.
        if self.cfg.access_log.is_some() || !plain_target(req.target) {
            return None;
        }
        let started = crate::latency::Stopwatch::start();
        let fields = Gathered::of(req.headers);
        let head = classify::Head {
            method: req.method,
            target: req.target,
            http11: true,
            fields: &fields,
        };
        let Class::Cacheable(c) = classify::classify(&head, peer.ip(), &self.cfg) else {
            return None;
        };
        if fields.known(Known::Cookie).nth(1).is_some() {
            return None;
        }
        let classify::Cacheable {
            mut key,
            respelled,
            trusted,
            ..
        } = c;
        let view = AsLookedUp::new(&fields, trusted, respelled.as_deref(), &self.cfg);
        // One reading of the clock finds the page and decides on it.
        let now = self.store.clock().now_ms();
        let found = match lookup::lookup(&self.store, &mut key, &view, now).await {
            Looked::Found(f) => f,
            Looked::Missing | Looked::Failed => return None,
        };
        if entry::reuse(&found.entry, now, &self.windows()) != Reuse::Fresh {
            return None;
        }
        self.recode_later(&key.group, &found);
        let entry = &*found.entry;
        let decision = Decision {
            shown: true,
            ..Decision::new(CacheStatus::Hit).with_ttl(entry.fresh_until, now)
        };
        let is_head = req.method == "HEAD";
        let status = entry.status.as_u16();
        if answer::is_shell(entry) {
            let page = match is_head {
                true => None,
                // Boxed: its fragments' lookups would make every hit's
                // future their size.
                false => Box::pin(self.quick_shell(entry, &fields, peer, now, decision)).await,
            }?;
            self.stats.count(decision);
            self.stats.quick_hit();
            self.stats
                .answered(decision, entry.status.as_u16(), started.elapsed());
            return Some(page);
        }
        let accepts = Accepts::of(&fields);
        let rep = answer::representation(entry, accepts, &fields);
        let wire = match answer::shape(entry, rep, is_head, &fields) {
            Shape::Whole => answer::wire_head(entry, rep, now, decision),
            _ => None,
        };
        let variant = found.variant.as_deref();
        let body = |rep| self.body_in(&key.group, variant, entry, rep);
        // A body that does not decode is the general path's to answer.
        let ready = wire.and_then(|head| match is_head {
            true => Some((head, Bytes::new())),
            false => body(rep).ok().map(|body| (head, body)),
        });
        let (reply, status) = match ready {
            Some((head, body)) => (
                Answer::Ready(Ready {
                    head,
                    body,
                    more: Vec::new(),
                }),
                status,
            ),
            None => {
                let (res, _) =
                    answer::from_entry(entry, is_head, accepts, &fields, now, decision, body);
                let status = res.status().as_u16();
                (Answer::Response(res), status)
            }
        };
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
        Some(reply)
    }
}

impl<S: PageStore> Proxy<S> {
    /// A shell's page assembled here when every include is a fresh hit on
    /// its `src` (what the general path would serve for it); `None` hands
    /// the request to the general path, which fetches, follows `alt` and
    /// `onerror`, and nests.
    async fn quick_shell<F: Fields + ?Sized>(
        &self,
        shell: &Entry,
        fields: &F,
        peer: SocketAddr,
        now: u64,
        decision: Decision,
    ) -> Option<Answer<Body>> {
        let Some(Ok(pieces)) = answer::shell_pieces(shell) else {
            return None;
        };
        // What the general path answers otherwise, or fails with.
        if !esi::assembles(&http::Method::GET, shell.status)
            || compress::content_coded(&shell.headers)
        {
            return None;
        }
        let as_fragment = esi::AsFragment(fields);
        let mut bodies = Vec::new();
        for p in pieces {
            if let Piece::Include(inc) = p {
                if bodies.len() == esi::MAX_INCLUDES {
                    return None;
                }
                bodies.push(
                    self.quick_fragment(&inc.src, &as_fragment, peer, now)
                        .await?,
                );
            }
        }
        let page = esi::splice(&shell.body, pieces, bodies.into_iter());
        let accepts = Accepts::of(fields);
        let len = page.iter().map(Bytes::len).sum::<usize>() as u64;
        // In identity, the head from text made once per shell.
        if !accepts.br
            && let Some(head) = answer::page_wire_head(shell, now, decision, len)
        {
            return Some(Answer::Ready(Ready {
                head,
                body: Bytes::new(),
                more: page,
            }));
        }
        let head = |rep| answer::body_of(shell, rep);
        let (res, _) =
            answer::from_entry(shell, true, Accepts::default(), fields, now, decision, head);
        let page = esi::page(res.into_parts().0, page, Vec::new(), accepts);
        Some(Answer::Response(page))
    }

    /// The body the general path would take for an include of `src`, when
    /// it is a fresh hit with nothing more to assemble.
    async fn quick_fragment<F: Fields + ?Sized>(
        &self,
        src: &str,
        fields: &F,
        peer: SocketAddr,
        now: u64,
    ) -> Option<Bytes> {
        // `src` passed `esi::parse::target`: a plain target.
        let head = classify::Head {
            method: "GET",
            target: src,
            http11: true,
            fields,
        };
        let (c, session) = match classify::classify(&head, peer.ip(), &self.cfg) {
            Class::Cacheable(c) => (c, false),
            Class::Session(c) => (c, true),
            _ => return None,
        };
        let classify::Cacheable {
            mut key,
            respelled,
            trusted,
            ..
        } = c;
        let view = AsLookedUp::new(fields, trusted, respelled.as_deref(), &self.cfg);
        let Looked::Found(found) = lookup::lookup(&self.store, &mut key, &view, now).await else {
            return None;
        };
        let e = &*found.entry;
        let shell = answer::is_shell(e);
        if entry::reuse(e, now, &self.windows()) != Reuse::Fresh
            || !e.status.is_success()
            || (session && !shell)
            || e.headers.contains_key(http::header::SET_COOKIE)
            || e.identity_len > esi::MAX_FRAGMENT as u64
            || compress::content_coded(&e.headers)
        {
            return None;
        }
        let rep = answer::representation(e, Accepts::default(), fields);
        let body = self
            .body_in(&key.group, found.variant.as_deref(), e, rep)
            .ok()?;
        let body = match shell.then(|| answer::shell_pieces(e)) {
            None => body,
            Some(Some(Ok(pieces))) if pieces.iter().all(|p| matches!(p, Piece::Text(_))) => {
                Bytes::from(esi::splice(&e.body, pieces, std::iter::empty()).concat())
            }
            Some(_) => return None,
        };
        let decision = Decision::new(CacheStatus::Hit).with_ttl(e.fresh_until, now);
        self.stats.count(decision);
        Some(body)
    }
}

impl<S: PageStore> Handler for Proxy<S> {
    type Body = Body;

    fn quick(
        &self,
        req: &Head<'_>,
        peer: SocketAddr,
    ) -> impl Future<Output = Option<Answer<Body>>> + Send {
        self.quick_answer(req, peer)
    }

    fn respond(
        self: Arc<Self>,
        req: Request<Full<Bytes>>,
        peer: SocketAddr,
    ) -> impl Future<Output = Response<Body>> + Send {
        self.handle(req, peer)
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
    fn a_variant_reads_the_fields_the_general_path_keeps() {
        let raw = [
            httparse::Header {
                name: "Accept-Encoding",
                value: b"gzip, br",
            },
            httparse::Header {
                name: "X-Forwarded-Host",
                value: b"evil",
            },
            httparse::Header {
                name: "X_Language",
                value: b"de",
            },
            httparse::Header {
                name: "Accept-Language",
                value: b"fr",
            },
            httparse::Header {
                name: "Host",
                value: b"Example.ORG",
            },
        ];
        let br = ["br".to_string()];
        let rules = CookieRules::new(&["_ga"]);
        let fields = Gathered::of(&raw[..]);
        let view = AsLookedUp {
            fields: &fields,
            trusted: false,
            host: Some("example.org"),
            codings: &br,
            cookie: Some(b"theme=dark; _ga=1"),
            rules: &rules,
            kept: Default::default(),
        };
        let all = |n| view.all(n).map(<[u8]>::to_vec).collect::<Vec<_>>();
        assert_eq!(all("cookie"), [b"theme=dark".to_vec()], "as kept");
        assert_eq!(all("accept-encoding"), [b"br".to_vec()]);
        assert_eq!(all("host"), [b"example.org".to_vec()]);
        assert_eq!(all("accept-language"), [b"fr".to_vec()]);
        assert!(all("x-forwarded-host").is_empty(), "untrusted");
        assert!(all("x_language").is_empty(), "underscores go");
        let kept: Vec<&str> = view.each().map(|(n, _)| n).collect();
        assert_eq!(kept, ["Accept-Encoding", "Accept-Language", "Host"]);
        let zstd = ["zstd".to_string()];
        let trusted = AsLookedUp {
            trusted: true,
            codings: &zstd,
            ..view
        };
        assert_eq!(trusted.all("x-forwarded-host").count(), 1);
        assert_eq!(trusted.all("accept-encoding").count(), 0, "accepts none");
        let cookieless = AsLookedUp {
            cookie: Some(b"_ga=2"),
            kept: Default::default(),
            ..trusted
        };
        assert_eq!(cookieless.all("cookie").count(), 0, "every cookie ignored");
    }
}
