//! `--ignore-cookies`: analytics cookies (`_ga`, `_gid`, `_fbp`, …) are
//! written and read by scripts in the browser, and every anonymous visitor
//! carries different ones. Django adds `Vary: Cookie` as soon as a view
//! touches the session, so with those cookies each visitor would be a
//! variant of their own, or (without `--cache-vary-cookie`) the page would
//! not be stored at all. They are removed from the `Cookie` a cacheable
//! request is looked up and fetched with: what bigcache does not forward
//! cannot change the page, so anonymous visitors share one copy while
//! every other cookie still keys its own. A session cookie is checked on
//! the request as sent, before this: it still bypasses.
//!
//! Names are read as Django reads them (`policy::cookie_name`: not
//! decoded, stripped as Python strips), the way the session check reads them.

use std::borrow::Cow;

use http::{HeaderMap, HeaderValue, header};

use super::names::Names;

/// Cookies set by analytics and advertising scripts; `*` ends a prefix.
pub const DEFAULT_IGNORE: &[&str] = &[
    "_ga",
    "_ga_*",
    "_gid",
    "_gat*",
    "_gcl_*",
    "_fbp",
    "_fbc",
    "_hj*",
    "__utm*",
    "_clck",
    "_clsk",
    "_uetsid",
    "_uetvid",
    "_pk_id*",
    "_pk_ses*",
    "__hstc",
    "__hssc",
    "__hssrc",
    "hubspotutk",
    "_ttp",
    "_pin_unauth",
    "_rdt_uuid",
    "_scid",
    "ajs_anonymous_id",
];

/// The cookies left out of a cacheable request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CookieRules {
    ignore: Names,
}

impl CookieRules {
    pub fn new<S: AsRef<str>>(names: &[S]) -> CookieRules {
        CookieRules {
            ignore: Names::new(names),
        }
    }

    /// One `Cookie` value without the ignored cookies, in the order sent;
    /// `None` when none is left. Borrowed when none was ignored.
    pub fn kept<'v>(&self, cookie: &'v [u8]) -> Option<Cow<'v, [u8]>> {
        if self.ignore.is_empty() {
            return Some(Cow::Borrowed(cookie));
        }
        let pairs = || {
            cookie
                .split(|&b| b == b';')
                .map(<[u8]>::trim_ascii)
                .filter(|p| !p.is_empty())
        };
        let ignored = |pair: &[u8]| {
            std::str::from_utf8(super::policy::cookie_name(pair))
                .is_ok_and(|n| self.ignore.matches(n))
        };
        if !pairs().any(ignored) {
            return Some(Cow::Borrowed(cookie));
        }
        let mut out = Vec::with_capacity(cookie.len());
        for pair in pairs().filter(|p| !ignored(p)) {
            if !out.is_empty() {
                out.extend_from_slice(b"; ");
            }
            out.extend_from_slice(pair);
        }
        (!out.is_empty()).then_some(Cow::Owned(out))
    }

    /// Rewrites a request's `Cookie` fields (joined into one by
    /// `forward::sanitize` already) without the ignored cookies.
    pub fn strip(&self, headers: &mut HeaderMap) {
        if self.ignore.is_empty() || !headers.contains_key(header::COOKIE) {
            return;
        }
        let kept: Vec<HeaderValue> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| match self.kept(v.as_bytes())? {
                Cow::Borrowed(_) => Some(v.clone()),
                Cow::Owned(o) => HeaderValue::from_bytes(&o).ok(),
            })
            .collect();
        headers.remove(header::COOKIE);
        for v in kept {
            headers.append(header::COOKIE, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> CookieRules {
        CookieRules::new(DEFAULT_IGNORE)
    }

    #[test]
    fn analytics_cookies_go_and_the_rest_stay_as_sent() {
        let r = defaults();
        let kept = |c: &str| {
            r.kept(c.as_bytes())
                .map(|k| String::from_utf8_lossy(&k).into_owned())
        };
        assert_eq!(kept("_ga=GA1.1.1; _gid=GA1.1.2"), None);
        assert_eq!(
            kept("_ga=1; csrftoken=abc; _ga_XYZ=2"),
            Some("csrftoken=abc".into())
        );
        assert_eq!(
            kept("csrftoken=abc;theme=dark"),
            Some("csrftoken=abc;theme=dark".into())
        );
        assert_eq!(kept("a=1;_fbp=x;b=2"), Some("a=1; b=2".into()));
        assert_eq!(
            kept("_GA=1"),
            Some("_GA=1".into()),
            "names are compared as sent"
        );
        assert_eq!(kept("__utma=1; __utmz=2; x"), Some("x".into()));
        // Named as Django reads names, as the session check reads them.
        let nbsp = r.kept(b"\xa0_ga=1; a=1").map(|k| k.into_owned());
        assert_eq!(nbsp, Some(b"a=1".to_vec()));
        assert!(matches!(r.kept(b"theme=dark"), Some(Cow::Borrowed(_))));
        assert!(matches!(
            CookieRules::default().kept(b"_ga=1"),
            Some(Cow::Borrowed(_))
        ));
    }

    #[test]
    fn a_request_left_with_no_cookie_has_no_cookie_field() {
        let r = defaults();
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("_ga=1; _gid=2"));
        r.strip(&mut h);
        assert!(!h.contains_key(header::COOKIE));
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("_ga=1; sessionid=s"),
        );
        r.strip(&mut h);
        assert_eq!(h[header::COOKIE], "sessionid=s");
    }
}
