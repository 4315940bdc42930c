//! The proxy's cache key.
//!
//! A page's key is its request target, path plus query, as received, with
//! one normalization: percent-escapes are made canonical. An escape of an
//! unreserved character (`A-Z a-z 0-9 - . _ ~`) is decoded (`%7E` = `~`),
//! every other escape is upper-cased (`%c3%a9` = `%C3%A9`), and any byte
//! outside printable ASCII is escaped, and an empty query (a bare trailing
//! `?`) is dropped. Nothing else changes: the query's
//! parameter order, `+`, trailing slashes and case all count, so two URLs
//! that differ only in query are two pages. The normalization makes
//! `/caf%C3%A9/`, `/caf%c3%a9/` and a purge for `/café/` the same page.
//!
//! In the store, a page lives under `<key> NUL` when its response has no
//! `Vary`, or as a variant `<key> NUL <variant>` listed by a group record at
//! `<key> NUL` (docs/format.md, "Key space"): so a purge of the page finds
//! every variant, and a prefix purge is a prefix of the key. A site other
//! than the data directory's own adds `@<scheme>://<host> NUL` after the
//! first NUL (`proxy::site`).
//!
//! A variant is the request's values of the headers the response varies on,
//! as `name=value` pairs (names lower-cased and sorted, values trimmed),
//! separated by `\x1f`. Compared as whole strings, never hashed, so two
//! variants can never be confused.

use std::borrow::Cow;

use http::HeaderMap;

use super::fields::Fields;

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Canonical form of a request target (or of a path/query a purge names).
pub fn canonical(target: &str) -> String {
    canonical_with_room(target, 0)
}

/// [`canonical`] in a buffer with `room` bytes to spare beyond the page
/// key's NUL (for a site segment, `PageKey::for_site`).
pub fn canonical_with_room(target: &str, room: usize) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    // An empty query is no query: Django renders `/x/?` as `/x/`, and a
    // purge of `/x/` must reach both.
    let target = match target.strip_suffix('?') {
        Some(bare) if !bare.contains('?') => bare,
        _ => target,
    };
    let bytes = target.as_bytes();
    // One byte spare: the page key is this and a NUL (`PageKey::from_canonical`).
    let mut out = String::with_capacity(bytes.len() + 1 + room);
    // Most targets need nothing changed: one scan, one copy.
    if bytes.iter().all(|&b| b.is_ascii_graphic() && b != b'%') {
        out.push_str(target);
        return out;
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%'
            && let (Some(h), Some(l)) = (
                bytes.get(i + 1).copied().and_then(hex),
                bytes.get(i + 2).copied().and_then(hex),
            )
        {
            let decoded = h << 4 | l;
            if is_unreserved(decoded) {
                out.push(decoded as char);
            } else {
                out.push('%');
                out.push(HEX[usize::from(h)] as char);
                out.push(HEX[usize::from(l)] as char);
            }
            i += 3;
            continue;
        }
        if b.is_ascii_graphic() {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 15)] as char);
        }
        i += 1;
    }
    out
}

/// Bytes a host name may hold: 0 never, 1 as is, 2 an upper-case letter.
const HOST_BYTE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        t[b] = if c.is_ascii_uppercase() {
            2
        } else if c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'[' | b']' | b':')
        {
            1
        } else {
            0
        };
        b += 1;
    }
    t
};

/// A `Host` value in the form the `--host` list holds: the name
/// lower-cased without a trailing dot, and the port, if any, kept (Django
/// builds absolute links from both, so `localhost:31337` is another host
/// than `localhost`). `None` for anything else (a port that is not digits,
/// userinfo, an empty name).
pub fn host_name(host: &str) -> Option<Cow<'_, str>> {
    let (name, port) = if host.starts_with('[') {
        let end = host.find(']')?;
        host.split_at(end + 1)
    } else {
        host.split_at(host.find(':').unwrap_or(host.len()))
    };
    if !port.is_empty() {
        let digits = port.strip_prefix(':')?;
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
    }
    let trimmed = name.trim_end_matches('.');
    if trimmed.is_empty() {
        return None;
    }
    // One pass, a table per byte: every hit pays for this.
    let mut upper = false;
    for b in trimmed.bytes() {
        match HOST_BYTE[usize::from(b)] {
            0 => return None,
            2 => upper = true,
            _ => {}
        }
    }
    // The usual, already listed form costs nothing more.
    if trimmed.len() == name.len() && !upper {
        return Some(Cow::Borrowed(host));
    }
    let mut out = trimmed.to_ascii_lowercase();
    out.push_str(port);
    Some(Cow::Owned(out))
}

/// The store key of a page's group (or of the page itself, without Vary).
pub fn page_key(canonical_target: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(canonical_target.len() + 1);
    k.extend_from_slice(canonical_target.as_bytes());
    k.push(0);
    k
}

/// Longest variant string kept; a response varying on longer header values
/// is not cached (it would fragment the cache anyway).
pub const MAX_VARIANT: usize = 1024;

/// The `Vary` header names of a response, lower-cased, sorted, deduplicated.
pub fn vary_names(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = headers
        .get_all(http::header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    names.sort();
    names.dedup();
    // The site states the page was made from no cookie (`@bigcache_page(
    // cookies=[])`, which names any session, language or CSRF cookie
    // itself): what `Vary: Cookie` guards against is not in the page.
    let mut given = headers
        .get_all(super::policy::VARY_COOKIES)
        .iter()
        .peekable();
    let cookie_free = given.peek().is_some()
        && given.all(|v| {
            v.as_bytes()
                .split(|&b| b == b',')
                .all(|n| n.trim_ascii().is_empty())
        });
    if cookie_free {
        names.retain(|n| n != "cookie");
    }
    names
}

/// The variant string of a request for the given Vary names; `None` when it
/// would exceed [`MAX_VARIANT`]. Header values are taken as bytes, with
/// anything outside printable ASCII (and `%`) percent-escaped: injective,
/// so two different requests can never share a variant, whatever bytes
/// their headers hold.
pub fn variant<F: Fields + ?Sized>(names: &[String], request: &F) -> Option<String> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push('\x1f');
        }
        out.push_str(name);
        out.push('=');
        for (j, v) in request.all(name.as_str()).enumerate() {
            if j > 0 {
                out.push(',');
            }
            for &b in v.trim_ascii() {
                if (b' '..=b'~').contains(&b) && b != b'%' {
                    out.push(b as char);
                } else {
                    out.push('%');
                    out.push(HEX[usize::from(b >> 4)] as char);
                    out.push(HEX[usize::from(b & 15)] as char);
                }
            }
        }
        if out.len() > MAX_VARIANT {
            return None;
        }
    }
    Some(out)
}

/// Whether `v`, made by [`variant`], is of `names`, in order. A name that
/// could be read two ways in it (holding `=` or the separator) never is.
fn of_names(v: &str, names: &[String]) -> bool {
    if names.is_empty() {
        return v.is_empty();
    }
    let mut segments = v.split('\x1f');
    names.iter().all(|n| {
        !n.contains(['=', '\x1f'])
            && segments.next().is_some_and(|s| {
                s.strip_prefix(n.as_str())
                    .is_some_and(|r| r.starts_with('='))
            })
    }) && segments.next().is_none()
}

/// A target of RFC 3986's path and query characters only, starting with
/// `/`: what bigcache takes as written, on the fast path and in an ESI
/// include.
pub fn plain_target(target: &[u8]) -> bool {
    target.starts_with(b"/") && target.iter().all(|&b| PLAIN[usize::from(b)])
}

/// [`plain_target`]'s bytes, as a table: one load a byte.
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = (b as u8).is_ascii_alphanumeric();
        b += 1;
    }
    let others = b"-._~%!$&'()*+,;=:@/?";
    let mut i = 0;
    while i < others.len() {
        t[others[i] as usize] = true;
        i += 1;
    }
    t
};

/// Bytes a site segment takes in a page key: `@<scheme>://<host> NUL`.
pub fn segment_len(scheme: &str, host: &str) -> usize {
    scheme.len() + host.len() + 5
}

/// One request's place in the cache: its page's group key, and the variant
/// its headers select, computed once per set of `Vary` names and headers
/// (the lookup, the fill and the answer of one request usually ask for the
/// same names). Whoever rewrites the request's headers calls
/// [`PageKey::headers_changed`]: a page is stored under the variant of the
/// headers the upstream saw, never of headers it did not see.
#[derive(Debug, Clone)]
pub struct PageKey {
    pub group: Vec<u8>,
    /// The last variant computed: it names the fields it is of
    /// ([`variant`]'s `name=value` segments), so it is its own memo key.
    last: Option<String>,
}

impl PageKey {
    pub fn new(canonical_target: &str) -> PageKey {
        PageKey {
            group: page_key(canonical_target),
            last: None,
        }
    }

    /// [`PageKey::new`] in the canonical target's own buffer.
    pub fn from_canonical(canonical_target: String) -> PageKey {
        PageKey::for_site(canonical_target, None)
    }

    /// The key of the page at `canonical_target` for a site: `None` for the
    /// data directory's own (`site::Sites::segment`).
    pub fn for_site(canonical_target: String, site: Option<(&str, &str)>) -> PageKey {
        let mut group = canonical_target.into_bytes();
        group.push(0);
        if let Some((scheme, host)) = site {
            group.reserve(segment_len(scheme, host));
            group.push(b'@');
            group.extend_from_slice(scheme.as_bytes());
            group.extend_from_slice(b"://");
            group.extend_from_slice(host.as_bytes());
            group.push(0);
        }
        PageKey { group, last: None }
    }

    /// The canonical target the key is for.
    pub fn target(&self) -> &[u8] {
        let end = memchr::memchr(0, &self.group).unwrap_or(self.group.len());
        &self.group[..end]
    }

    /// [`variant`] of `request` for `names`, remembered for the next call.
    pub fn variant<F: Fields + ?Sized>(&mut self, names: &[String], request: &F) -> Option<String> {
        if let Some(v) = &self.last
            && of_names(v, names)
        {
            return Some(v.clone());
        }
        let v = variant(names, request);
        self.last = v.clone();
        v
    }

    /// The request's headers were rewritten (`upstream::forward_headers`
    /// strips hop-by-hop headers and sets `X-Forwarded-*`): variants are
    /// computed afresh from now on.
    pub fn headers_changed(&mut self) {
        self.last = None;
    }

    /// The store key of variant `v` of this page.
    pub fn member(&self, v: &str) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.group.len() + v.len());
        k.extend_from_slice(&self.group);
        k.extend_from_slice(v.as_bytes());
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_variant_is_only_its_own_names() {
        let req = crate::proxy::test_headers(&[("accept-encoding", "br"), ("cookie", "a=1")]);
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let mut key = PageKey::new("/x");
        let ae = key.variant(&names(&["accept-encoding"]), &req);
        assert_eq!(ae.as_deref(), Some("accept-encoding=br"));
        assert_eq!(key.variant(&names(&["accept-encoding"]), &req), ae);
        for other in [
            &["cookie"][..],
            &["accept-encoding", "cookie"],
            &[],
            &["accept"],
        ] {
            assert_eq!(
                key.variant(&names(other), &req),
                variant(&names(other), &req),
                "{other:?}"
            );
        }
        assert!(!of_names("a=b=c", &names(&["a=b"])));
        assert!(of_names("", &[]));
        assert!(!of_names("x=1", &[]));
        assert!(!of_names("x=1\x1fy=2", &names(&["x"])));
    }

    #[test]
    fn a_page_key_from_the_canonical_buffer_is_the_page_key() {
        for target in ["/", "/a/b?x=1", "/%7euser/?", "/caf\u{e9}?q=%41%2F", ""] {
            let canon = canonical(target);
            assert_eq!(
                PageKey::from_canonical(canon.clone()).group,
                page_key(&canon),
                "{target:?}"
            );
        }
    }

    #[test]
    fn a_sites_key_keeps_the_target_first() {
        let bare = PageKey::for_site("/a?x=1".into(), None);
        let other = PageKey::for_site("/a?x=1".into(), Some(("https", "example.org")));
        assert_eq!(bare.group, b"/a?x=1\0");
        assert_eq!(other.group, b"/a?x=1\0@https://example.org\0");
        assert!(
            other.group.starts_with(&bare.group),
            "a purge of the path reaches it"
        );
        assert_eq!(
            (bare.target(), other.target()),
            (&b"/a?x=1"[..], &b"/a?x=1"[..])
        );
        assert_eq!(
            other.member("accept-language=de"),
            b"/a?x=1\0@https://example.org\0accept-language=de"
        );
    }

    #[test]
    fn canonical_escapes() {
        assert_eq!(canonical("/dataset/x/?page=2"), "/dataset/x/?page=2");
        assert_eq!(canonical("/caf%c3%a9/"), "/caf%C3%A9/");
        assert_eq!(canonical("/café/"), "/caf%C3%A9/");
        assert_eq!(canonical("/%7Euser/%41"), "/~user/A");
        assert_eq!(canonical("/a%2Fb"), "/a%2Fb");
        assert_eq!(canonical("/a b"), "/a%20b");
        assert_eq!(canonical("/100%"), "/100%");
        assert_eq!(canonical("/%zz"), "/%zz");
        assert_eq!(canonical("/dataset/1/?"), "/dataset/1/", "an empty query");
        assert_eq!(canonical("/x/??"), "/x/??", "a query of `?` is one");
    }

    #[test]
    fn host_names_are_normalised_and_keep_their_port() {
        assert_eq!(host_name("Example.ORG.").as_deref(), Some("example.org"));
        assert_eq!(
            host_name("Example.ORG.:8080").as_deref(),
            Some("example.org:8080")
        );
        assert_eq!(host_name("[::1]:8080").as_deref(), Some("[::1]:8080"));
        assert_eq!(host_name("[::1]").as_deref(), Some("[::1]"));
        for bad in ["localhost:80@evil", "localhost:", "a b", "", "[::1", "x:y"] {
            assert_eq!(host_name(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn query_order_and_trailing_slash_count() {
        assert_ne!(canonical("/x?a=1&b=2"), canonical("/x?b=2&a=1"));
        assert_ne!(canonical("/x/"), canonical("/x"));
    }

    #[test]
    fn a_page_key_remembers_its_variant_per_set_of_names() {
        let mut req = HeaderMap::new();
        req.insert("accept-language", "ko".parse().unwrap());
        let mut k = PageKey::new("/x");
        let names = vec!["accept-language".to_string()];
        assert_eq!(
            k.variant(&names, &req).as_deref(),
            Some("accept-language=ko")
        );
        assert_eq!(k.member("v"), b"/x\0v");
        // Other names are computed afresh...
        assert_eq!(k.variant(&[], &req).as_deref(), Some(""));
        // ...and so is everything once the headers were rewritten.
        k.headers_changed();
        assert_eq!(
            k.variant(&names, &HeaderMap::new()).as_deref(),
            Some("accept-language=")
        );
    }

    #[test]
    fn a_page_made_from_no_cookie_is_not_keyed_on_cookies() {
        let vary = |extra: Option<&'static str>| {
            let mut resp = HeaderMap::new();
            resp.insert("vary", "Cookie, Accept-Language".parse().unwrap());
            if let Some(v) = extra {
                resp.insert("x-bigcache-vary-cookies", v.parse().unwrap());
            }
            vary_names(&resp)
        };
        assert_eq!(vary(None), ["accept-language", "cookie"]);
        assert_eq!(vary(Some("")), ["accept-language"]);
        assert_eq!(vary(Some(" , ")), ["accept-language"]);
        assert_eq!(vary(Some("csrftoken")), ["accept-language", "cookie"]);
        let mut two = HeaderMap::new();
        two.insert("vary", "Cookie".parse().unwrap());
        two.append("x-bigcache-vary-cookies", "".parse().unwrap());
        two.append("x-bigcache-vary-cookies", "theme".parse().unwrap());
        assert_eq!(
            vary_names(&two),
            ["cookie"],
            "any field naming a cookie counts"
        );
    }

    #[test]
    fn variants() {
        let mut resp = HeaderMap::new();
        resp.append("vary", "Accept-Language, accept-encoding".parse().unwrap());
        resp.append("vary", "Accept-Encoding".parse().unwrap());
        let names = vary_names(&resp);
        assert_eq!(names, ["accept-encoding", "accept-language"]);
        let mut req = HeaderMap::new();
        req.insert("accept-encoding", "gzip".parse().unwrap());
        req.insert("accept-language", " ko ".parse().unwrap());
        assert_eq!(
            variant(&names, &req).unwrap(),
            "accept-encoding=gzip\x1faccept-language=ko"
        );
        let bare = variant(&names, &HeaderMap::new()).unwrap();
        assert_eq!(bare, "accept-encoding=\x1faccept-language=");
        req.insert(
            "accept-language",
            http::HeaderValue::from_bytes("Zürich".as_bytes()).unwrap(),
        );
        let z = variant(&names, &req).unwrap();
        assert!(z.ends_with("accept-language=Z%C3%BCrich"), "{z}");
        req.insert("accept-language", "Z%C3%BCrich".parse().unwrap());
        assert_ne!(
            variant(&names, &req).unwrap(),
            z,
            "escaping must be injective"
        );
        req.insert("accept-language", "x".repeat(2000).parse().unwrap());
        assert_eq!(variant(&names, &req), None);
    }
}
