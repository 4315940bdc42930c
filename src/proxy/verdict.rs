//! What a fill does with the upstream's answer to a fetch for the cache:
//! the decision at the heart of `fill`, as a pure function of the answer's
//! head, the client's request, the stale copy (if any) and the time. `fill`
//! then only carries it out (serves the stale copy, refreshes it, passes
//! the response on, or reads the body and stores it).

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode};

use super::decision::Reason;
use super::entry::{self, Entry};
use super::key::{self, PageKey};
use super::policy::{self, Storable};
use super::tags;

/// The upstream's answer, as far as the decision reads it.
pub struct Answered<'a> {
    pub status: StatusCode,
    /// Hop-by-hop fields already removed.
    pub headers: &'a HeaderMap,
    /// A body without `Content-Length` or chunked framing: it ends when the
    /// connection does, so it can never be known complete.
    pub close_delimited: bool,
    /// The body's length when announced.
    pub length: Option<u64>,
}

/// The operator's settings the decision reads.
pub struct Rules {
    pub stale_if_error: Duration,
    pub max_entry_size: usize,
    pub cache_vary_cookie: bool,
}

/// What to do.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// No answer at all, and no stale copy may stand in: an error.
    Failed,
    /// The stale copy stands in for a failure (stale-if-error).
    Stale,
    /// A 304 for the stale copy: refresh it.
    Refresh,
    /// Not stored: the response goes to the client that led the fetch,
    /// the others pass. `mark`: hit-for-pass for the page (what the page
    /// itself is, not what a request header chose); `drop_stale`: the old
    /// copy goes.
    Pass {
        reason: Reason,
        mark: bool,
        drop_stale: bool,
    },
    /// Stored once its body is in, under `variant` of the page when it
    /// varies on `names`.
    Store {
        storable: Storable,
        names: Vec<String>,
        variant: Option<String>,
    },
}

/// Decides what a fill does with `answered` (`None`: no answer came) to
/// request `req` for the page at `key`, `stale` being the copy it would
/// replace, at `now` (unix ms, and as a time).
pub fn judge(
    answered: Option<&Answered<'_>>,
    req: &HeaderMap,
    key: &mut PageKey,
    stale: Option<&Entry>,
    now: (u64, SystemTime),
    rules: &Rules,
) -> Verdict {
    // `disconnected`: no response at all (refused, reset, timed out).
    let stale_serves = |disconnected| {
        stale.is_some_and(|s| {
            entry::serve_stale_on_error(s, now.0, rules.stale_if_error, disconnected)
        })
    };
    let Some(a) = answered else {
        return if stale_serves(true) {
            Verdict::Stale
        } else {
            Verdict::Failed
        };
    };
    if a.status.is_server_error() && stale_serves(false) {
        return Verdict::Stale;
    }
    if a.status == StatusCode::NOT_MODIFIED && stale.is_some() {
        return Verdict::Refresh;
    }
    match storable(a, req, key, now.1, rules) {
        Ok((storable, names, variant)) => Verdict::Store {
            storable,
            names,
            variant,
        },
        Err(reason) => {
            // Hit-for-pass, and dropping a stored copy, only for what the
            // page itself is: a redirect or an error status (an i18n or
            // HTTPS redirect, a 400 for a bad header) may come from
            // request headers outside the key, and would let one client
            // send everyone's requests for the page to the upstream.
            let has_cookies = req.contains_key(http::header::COOKIE);
            let page_says_so = a.status.is_success()
                && match reason {
                    // Request headers outside the key may have chosen
                    // these: a cookie Django answers with `Set-Cookie` (a
                    // malformed `csrftoken`), a variant too long.
                    Reason::VaryTooLong | Reason::VaryCookie => false,
                    Reason::SetCookie => !has_cookies,
                    _ => true,
                };
            // A soft-purged copy is one the site called outdated: any
            // answer but an error of the server or of load (a 404 or 410
            // for unpublished content, a redirect) replaces it, rather
            // than it standing in for its whole window.
            let soft_purged = stale.is_some_and(|s| s.soft_purged_at.is_some())
                && !a.status.is_server_error()
                && !matches!(a.status.as_u16(), 408 | 429);
            Verdict::Pass {
                reason,
                mark: page_says_so,
                // The page stopped being cacheable: the old copy goes. (A
                // 429 or a 404 says nothing about the page itself.)
                drop_stale: stale.is_some() && (page_says_so || soft_purged),
            }
        }
    }
}

/// Whether the answer may be stored, and under which variant.
fn storable(
    a: &Answered<'_>,
    req: &HeaderMap,
    key: &mut PageKey,
    now: SystemTime,
    rules: &Rules,
) -> Result<(Storable, Vec<String>, Option<String>), Reason> {
    let p = policy::storable(a.status, a.headers, now, a.length, rules.max_entry_size)?;
    if a.close_delimited {
        return Err(Reason::CloseDelimited);
    }
    let names = key::vary_names(a.headers);
    let variant = if names.is_empty() {
        None
    } else {
        // `Vary: Cookie`: one copy for visitors without cookies (the
        // anonymous page Django sends first-time visitors, crawlers and
        // CDNs); copies per cookie value only when configured, since any
        // client can mint cookie values at will.
        let has_cookies = req
            .get_all(http::header::COOKIE)
            .iter()
            .any(|v| !v.as_bytes().trim_ascii().is_empty());
        if !rules.cache_vary_cookie && has_cookies && names.iter().any(|n| n == "cookie") {
            return Err(Reason::VaryCookie);
        }
        Some(key.variant(&names, req).ok_or(Reason::VaryTooLong)?)
    };
    let key_len = key.group.len() + variant.as_ref().map_or(0, String::len);
    if !tags::index_fits(&p.tags, key_len) {
        return Err(Reason::Tags);
    }
    Ok((p, names, variant))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::test_headers as h;

    const RULES: Rules = Rules {
        stale_if_error: Duration::from_secs(60),
        max_entry_size: 1 << 20,
        cache_vary_cookie: false,
    };

    fn at() -> (u64, SystemTime) {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        (1_800_000_000_000, t)
    }

    /// A stored copy that went stale a second ago, within stale-if-error
    /// unless `must_revalidate`.
    fn stale_copy(soft_purged: bool) -> Entry {
        let (now, _) = at();
        let p = policy::response_policy(StatusCode::OK, &h(&[("x-bigcache-ttl", "1m")]), at().1)
            .unwrap();
        let windows = entry::Windows {
            grace: Duration::ZERO,
            stale_if_error: Duration::from_secs(60),
        };
        let mut e = Entry::new(
            StatusCode::OK,
            h(&[("x-bigcache-ttl", "1m")]),
            bytes::Bytes::from_static(b"old"),
            &p,
            now - 61_000,
            windows,
        );
        if soft_purged {
            e.soft_purged_at = Some(now - 1_000);
        }
        e
    }

    fn judged(
        status: Option<u16>,
        resp: &[(&str, &str)],
        req: &[(&str, &str)],
        stale: Option<&Entry>,
    ) -> Verdict {
        let headers = h(resp);
        let answered = status.map(|s| Answered {
            status: StatusCode::from_u16(s).unwrap(),
            headers: &headers,
            close_delimited: false,
            length: Some(3),
        });
        let mut key = PageKey::new("/p");
        judge(answered.as_ref(), &h(req), &mut key, stale, at(), &RULES)
    }

    fn pass(v: &Verdict) -> (Reason, bool, bool) {
        match v {
            Verdict::Pass {
                reason,
                mark,
                drop_stale,
            } => (*reason, *mark, *drop_stale),
            other => panic!("not a pass: {other:?}"),
        }
    }

    #[test]
    fn failures_are_met_by_the_stale_copy_within_its_window() {
        let old = stale_copy(false);
        assert_eq!(judged(None, &[], &[], None), Verdict::Failed);
        assert_eq!(judged(None, &[], &[], Some(&old)), Verdict::Stale);
        assert_eq!(judged(Some(503), &[], &[], Some(&old)), Verdict::Stale);
        let ttl = [("x-bigcache-ttl", "1h")];
        assert!(matches!(
            judged(Some(200), &ttl, &[], Some(&old)),
            Verdict::Store { .. }
        ));
        assert_eq!(judged(Some(304), &[], &[], Some(&old)), Verdict::Refresh);
        // A 304 with nothing stored is an answer like any other: no lifetime.
        assert_eq!(
            pass(&judged(Some(304), &[], &[], None)).0,
            Reason::Status,
            "304 without a stored copy"
        );
    }

    #[test]
    fn only_what_the_page_is_marks_it_and_drops_its_copy() {
        let old = stale_copy(false);
        let cookie = [("x-bigcache-ttl", "1h"), ("set-cookie", "a=1")];
        // Set-Cookie to a request without cookies: the page's own doing.
        assert_eq!(
            pass(&judged(Some(200), &cookie, &[], Some(&old))),
            (Reason::SetCookie, true, true)
        );
        // To a request with cookies: maybe the request's (a bad csrftoken).
        assert_eq!(
            pass(&judged(
                Some(200),
                &cookie,
                &[("cookie", "csrftoken=x")],
                Some(&old)
            )),
            (Reason::SetCookie, false, false)
        );
        // A redirect without a lifetime: not the page's verdict.
        assert_eq!(
            pass(&judged(Some(302), &[], &[], Some(&old))),
            (Reason::NoLifetime, false, false)
        );
        assert_eq!(
            pass(&judged(
                Some(200),
                &[("cache-control", "private")],
                &[],
                None
            )),
            (Reason::Private, true, false)
        );
        let vary_cookie = [("x-bigcache-ttl", "1h"), ("vary", "Cookie")];
        assert_eq!(
            pass(&judged(Some(200), &vary_cookie, &[("cookie", "a=1")], None)),
            (Reason::VaryCookie, false, false)
        );
        assert!(matches!(
            judged(Some(200), &vary_cookie, &[], None),
            Verdict::Store {
                variant: Some(_),
                ..
            }
        ));
    }

    #[test]
    fn a_soft_purged_copy_is_replaced_by_any_answer_but_a_failure() {
        let old = stale_copy(true);
        assert_eq!(
            pass(&judged(Some(404), &[], &[], Some(&old))),
            (Reason::NoLifetime, false, true)
        );
        assert!(
            !pass(&judged(Some(429), &[], &[], Some(&old))).2,
            "a 429 keeps it"
        );
    }

    #[test]
    fn a_body_without_framing_is_never_stored() {
        let headers = h(&[("x-bigcache-ttl", "1h")]);
        let a = Answered {
            status: StatusCode::OK,
            headers: &headers,
            close_delimited: true,
            length: None,
        };
        let mut key = PageKey::new("/p");
        let v = judge(Some(&a), &HeaderMap::new(), &mut key, None, at(), &RULES);
        assert_eq!(pass(&v), (Reason::CloseDelimited, true, false));
    }
}
