//! What a client's request headers become on the way to the upstream.
//!
//! The rule (web cache poisoning): any request input that can change a
//! response is part of the cache key, rewritten by bigcache to a value it
//! trusts, or removed. Here:
//! - hop-by-hop headers go (RFC 9110 §7.6.1), and those `Connection` names,
//!   except headers bigcache itself relies on (`Host`, `Cookie`,
//!   `Authorization` and the forwarding headers), which no client may strip;
//! - header names with `_` go, as nginx drops them: WSGI servers map
//!   `SCRIPT_NAME` and kin from such names, and Django then builds every
//!   link of a cached page under a prefix the client chose;
//! - headers that frameworks honour to rewrite the URL or the method
//!   ([`OVERRIDES`]) go;
//! - `X-Forwarded-*`, `Forwarded` and `X-Real-IP` are kept only from a
//!   [`TrustedProxies`] peer (the nginx in front); from anyone else they
//!   are replaced by what bigcache saw: the peer's address, `http`, the
//!   `Host` it was sent;
//! - HTTP/2 `cookie` fields are joined into one (RFC 9113 §8.2.3).

use std::net::{IpAddr, SocketAddr};

use http::Uri;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use super::fields::{Fields, Known};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Headers a client may not remove by naming them in `Connection`.
const PROTECTED: [&str; 10] = [
    "host",
    "cookie",
    "authorization",
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-real-ip",
];

/// The forwarding headers: kept from a trusted proxy, replaced otherwise
/// (`class_of` matches them; this list checks it).
#[cfg(test)]
const FORWARDING: [&str; 9] = [
    "forwarded",
    "x-forwarded-for",
    "x-forwarded-host",
    "x-forwarded-proto",
    "x-forwarded-port",
    "x-forwarded-server",
    "x-forwarded-prefix",
    "x-forwarded-scheme",
    "x-real-ip",
];

/// Request headers that frameworks, middlewares and WSGI/ASGI servers
/// honour to rewrite the URL, the method, the host or the scheme. None is
/// in the cache key, so none reaches the upstream: a client could make
/// Django render another page, or links to another site, and have it
/// cached for everyone.
pub const OVERRIDES: [&str; 18] = [
    "x-original-url",
    "x-rewrite-url",
    "x-override-url",
    "x-http-destinationurl",
    "x-http-method-override",
    "x-http-method",
    "x-method-override",
    "x-original-method",
    "x-host",
    "x-original-host",
    "x-forwarded-path",
    "x-original-uri",
    "x-url-scheme",
    "x-scheme",
    "front-end-https",
    "x-forwarded-ssl",
    "x-script-name",
    // What a surrogate can do (ESI): only bigcache says it (`set_forwarding`).
    "surrogate-capability",
];

const SURROGATE_CAPABILITY: http::HeaderName =
    http::HeaderName::from_static("surrogate-capability");
/// bigcache's `Surrogate-Capability` (ESI, `proxy::esi`).
pub const CAPABILITY: &str = "bigcache=\"ESI/1.0\"";

/// What [`sanitize`] does with a header by its name alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    /// Hop-by-hop, `Transfer-Encoding`, or an override (always removed).
    Dropped,
    /// One of [`FORWARDING`]: removed unless from a trusted proxy.
    Forwarding,
    Other,
}

/// The lists above as one `match`, which compiles to a switch on length
/// and a compare or two, where scanning them was dozens of compares per
/// header on every hit. `the_name_classes_are_the_lists` keeps the two in
/// step.
fn class_of(n: &str) -> Class {
    match n {
        "connection"
        | "keep-alive"
        | "proxy-connection"
        | "proxy-authenticate"
        | "proxy-authorization"
        | "te"
        | "trailer"
        | "upgrade"
        | "transfer-encoding"
        | "surrogate-capability"
        | "x-original-url"
        | "x-rewrite-url"
        | "x-override-url"
        | "x-http-destinationurl"
        | "x-http-method-override"
        | "x-http-method"
        | "x-method-override"
        | "x-original-method"
        | "x-host"
        | "x-original-host"
        | "x-forwarded-path"
        | "x-original-uri"
        | "x-url-scheme"
        | "x-scheme"
        | "front-end-https"
        | "x-forwarded-ssl"
        | "x-script-name" => Class::Dropped,
        "forwarded" | "x-forwarded-for" | "x-forwarded-host" | "x-forwarded-proto"
        | "x-forwarded-port" | "x-forwarded-server" | "x-forwarded-prefix"
        | "x-forwarded-scheme" | "x-real-ip" => Class::Forwarding,
        _ => Class::Other,
    }
}

/// Removes hop-by-hop headers, and the headers `Connection` names (from an
/// upstream response, all of them; from a client, see [`forward_headers`]).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    for n in connection_named(headers, &[]) {
        headers.remove(n);
    }
    for n in HOP_BY_HOP {
        headers.remove(n);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// The headers `Connection` names, but those in `protected`.
fn connection_named(headers: &HeaderMap, protected: &[&str]) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok())
        .filter(|n| !protected.contains(&n.as_str()))
        .collect()
}

/// One `address/prefix-length` range, IPv4 or IPv6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let bad =
            || format!("{s:?} is not an address or a CIDR range like 127.0.0.1/32 or ::1/128");
        let (addr, bits) = match s.trim().split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s.trim(), None),
        };
        let net: IpAddr = addr.parse().map_err(|_| bad())?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b.parse::<u8>().ok().filter(|&b| b <= max).ok_or_else(bad)?,
        };
        Ok(Cidr { net, bits })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        // The first `bits` bits alike (`/0`: any address). IPv4 in 32-bit
        // words: every trusted front's request asks.
        let bits = u32::from(self.bits);
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                let (n, i) = (u32::from(n), u32::from(i));
                (n ^ i)
                    .checked_shr(32 - bits.min(32))
                    .is_none_or(|d| d == 0)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => {
                let (n, i) = (u128::from(n), u128::from(i));
                (n ^ i)
                    .checked_shr(128 - bits.min(128))
                    .is_none_or(|d| d == 0)
            }
            _ => false,
        }
    }
}

/// The peers whose forwarding headers are believed (`--trusted-proxy`).
/// Empty by default: not even loopback is trusted implicitly, since
/// anything on the host can connect there.
#[derive(Debug, Clone, Default)]
pub struct TrustedProxies(pub Vec<Cidr>);

impl TrustedProxies {
    pub fn trusts(&self, peer: IpAddr) -> bool {
        self.0.iter().any(|c| c.contains(peer))
    }
}

/// Prepares a client's request headers for the upstream (see the module
/// docs): [`sanitize`], then [`set_forwarding`].
pub fn forward_headers(
    headers: &mut HeaderMap,
    uri: &Uri,
    peer: SocketAddr,
    trusted: &TrustedProxies,
) {
    sanitize(headers, peer, trusted);
    set_forwarding(headers, uri, peer, trusted);
}

/// What never reaches the upstream from this peer: hop-by-hop and
/// `Connection`-named headers (but the protected ones), names with `_`,
/// the overrides, and from an untrusted peer its forwarding headers;
/// HTTP/2 cookie fields are joined. Idempotent, and done before the cache
/// is asked, so a page is looked up under the variant of the very headers
/// it is fetched and stored with.
pub fn sanitize(headers: &mut HeaderMap, peer: SocketAddr, trusted: &TrustedProxies) {
    // One pass over the headers present (a hit pays for this): a request
    // carries a handful, the lists above hold dozens.
    let untrusted = !trusted.trusts(peer.ip());
    let named = connection_named(headers, &PROTECTED);
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|name| {
            let n = name.as_str();
            match class_of(n) {
                Class::Dropped => true,
                // Named in `Connection` goes even from a trusted proxy,
                // unless protected (as any other header).
                Class::Forwarding => untrusted || named.contains(name),
                Class::Other => n.contains('_') || named.contains(name),
            }
        })
        .cloned()
        .collect();
    for n in doomed {
        headers.remove(n);
    }
    join_cookies(headers);
}

/// Whether [`sanitize`] keeps a field named `name` (lower-case) from a
/// peer (`trusted` or not), when `Connection` names no field.
pub fn kept(name: &str, trusted: bool) -> bool {
    match class_of(name) {
        Class::Dropped => false,
        Class::Forwarding => trusted,
        Class::Other => !name.contains('_'),
    }
}

/// The forwarding headers bigcache sets: `Host` from an HTTP/2 authority
/// (Django checks it against ALLOWED_HOSTS); the peer appended to a
/// trusted proxy's `X-Forwarded-For`; for anyone else the peer's address,
/// `http` and the `Host`. Run once per request, after [`sanitize`].
pub fn set_forwarding(
    headers: &mut HeaderMap,
    uri: &Uri,
    peer: SocketAddr,
    trusted: &TrustedProxies,
) {
    if !headers.contains_key(header::HOST)
        && let Some(a) = uri.authority()
        && let Ok(v) = HeaderValue::from_str(a.as_str())
    {
        headers.insert(header::HOST, v);
    }
    // Django's `{% bigcache_fragment %}` writes an include only for a
    // request that came this way (the ESI of the Edge Architecture spec).
    headers.insert(SURROGATE_CAPABILITY, HeaderValue::from_static(CAPABILITY));
    let ip = peer.ip();
    if trusted.trusts(ip) {
        let xff = match headers.get("x-forwarded-for").map(|v| v.as_bytes()) {
            Some(prev) => {
                let mut v = prev.to_vec();
                v.extend_from_slice(format!(", {ip}").as_bytes());
                HeaderValue::from_bytes(&v).ok()
            }
            None => HeaderValue::from_str(&ip.to_string()).ok(),
        };
        if let Some(v) = xff {
            headers.insert("x-forwarded-for", v);
        }
        return;
    }
    if let Ok(v) = HeaderValue::from_str(&ip.to_string()) {
        headers.insert("x-forwarded-for", v);
    }
    headers.insert("x-forwarded-proto", HeaderValue::from_static("http"));
    if let Some(host) = headers.get(header::HOST).cloned() {
        headers.insert("x-forwarded-host", host);
    }
}

/// HTTP/2 clients may send one `cookie` field per cookie; an HTTP/1.1
/// upstream must get them as one, joined with `; ` (RFC 9113 §8.2.3).
fn join_cookies(headers: &mut HeaderMap) {
    if headers.get_all(header::COOKIE).iter().nth(1).is_none() {
        return;
    }
    let mut joined = Vec::new();
    for v in headers.get_all(header::COOKIE) {
        if !joined.is_empty() {
            joined.extend_from_slice(b"; ");
        }
        joined.extend_from_slice(v.as_bytes());
    }
    if let Ok(v) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, v);
    }
}

/// Whether the forwarding headers a trusted front sent are each at most
/// one value Django can only read one way: `X-Forwarded-Host` one of the
/// site's hosts exactly as listed and the request's own `Host` (the page
/// is keyed on the site, `proxy::site`, and Django may render for either),
/// `X-Forwarded-Proto` and `X-Forwarded-Scheme` `http` or `https`, the
/// same when both are sent (the key's scheme is theirs), `X-Forwarded-Port`
/// a port number. A front that passes a client's own values on then lets
/// it choose among values the site serves, each keyed apart, not any host
/// or scheme text it likes. (`Forwarded` and `X-Forwarded-Prefix` are the
/// front's to set: Django reads neither unless told to.)
///
/// `site_host` is the request's `Host` in the site's form when it is one of
/// the site's hosts (`policy::known_host`). Values are compared as bytes:
/// each rule names the ASCII it takes, so nothing else can match.
pub fn forwarded_ok<F: Fields + ?Sized>(headers: &F, site_host: Option<&str>) -> bool {
    let (proto, scheme) = (
        headers.known(Known::ForwardedProto).next(),
        headers.known(Known::ForwardedScheme).next(),
    );
    let agree = match (proto, scheme) {
        (Some(p), Some(s)) => p.eq_ignore_ascii_case(s),
        _ => true,
    };
    let one = |name: Known, ok: &dyn Fn(&[u8]) -> bool| {
        let mut given = headers.known(name);
        match (given.next(), given.next()) {
            (None, _) => true,
            (Some(v), None) => ok(v),
            (Some(_), Some(_)) => false,
        }
    };
    let scheme_ok = |v: &[u8]| v == b"http" || v == b"https";
    agree
        && one(Known::ForwardedHost, &|v| {
            site_host.is_some_and(|h| h.as_bytes() == v)
        })
        && one(Known::ForwardedProto, &scheme_ok)
        && one(Known::ForwardedScheme, &scheme_ok)
        && one(Known::ForwardedPort, &|v| {
            // 1 to 65535, in digits, without a leading zero.
            v.first().is_some_and(|d| *d != b'0')
                && v.len() <= 5
                && v.iter().all(u8::is_ascii_digit)
                && v.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')) <= 65_535
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_name_classes_are_the_lists() {
        for n in HOP_BY_HOP
            .iter()
            .chain(&OVERRIDES)
            .chain(&["transfer-encoding"])
        {
            assert_eq!(class_of(n), Class::Dropped, "{n}");
        }
        for n in FORWARDING {
            assert_eq!(class_of(n), Class::Forwarding, "{n}");
        }
        for n in [
            "host",
            "cookie",
            "accept",
            "x-forwarded",
            "x-real-ipv6",
            "tee",
        ] {
            assert_eq!(class_of(n), Class::Other, "{n}");
        }
    }

    use crate::proxy::policy::known_host;

    fn trusted(cidrs: &[&str]) -> TrustedProxies {
        TrustedProxies(cidrs.iter().map(|c| c.parse().unwrap()).collect())
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        h.insert("connection", "close, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert("content-type", "text/html".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn a_client_cannot_strip_what_bigcache_relies_on() {
        let uri: Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            "host, cookie, authorization, x-secret".parse().unwrap(),
        );
        h.insert("host", "example.org".parse().unwrap());
        h.insert("cookie", "a=1".parse().unwrap());
        h.insert("authorization", "Bearer t".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        forward_headers(
            &mut h,
            &uri,
            "203.0.113.9:5000".parse().unwrap(),
            &trusted(&[]),
        );
        assert_eq!(h["host"], "example.org");
        assert_eq!(h["cookie"], "a=1");
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["x-forwarded-host"], "example.org");
        assert!(!h.contains_key("x-secret"));
    }

    #[test]
    fn forwarding_headers_are_believed_from_trusted_proxies_only() {
        let uri: Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("host", "example.org".parse().unwrap());
        h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-host", "evil.example".parse().unwrap());
        h.insert("forwarded", "host=evil.example".parse().unwrap());
        h.insert("x-forwarded-prefix", "/evil".parse().unwrap());
        let loopback: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let mut untrusted = h.clone();
        forward_headers(&mut untrusted, &uri, loopback, &trusted(&[]));
        assert_eq!(untrusted["x-forwarded-for"], "127.0.0.1");
        assert_eq!(untrusted["x-forwarded-proto"], "http");
        assert_eq!(untrusted["x-forwarded-host"], "example.org");
        assert!(!untrusted.contains_key("forwarded"));
        assert!(!untrusted.contains_key("x-forwarded-prefix"));
        forward_headers(&mut h, &uri, loopback, &trusted(&["127.0.0.0/8"]));
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "evil.example");
        // A forwarding header its sender named hop-by-hop goes even from a
        // trusted proxy, unless protected.
        let mut named = HeaderMap::new();
        named.insert(
            "connection",
            "x-forwarded-prefix, x-forwarded-for".parse().unwrap(),
        );
        named.insert("x-forwarded-prefix", "/evil".parse().unwrap());
        named.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
        sanitize(&mut named, loopback, &trusted(&["127.0.0.0/8"]));
        assert!(!named.contains_key("x-forwarded-prefix"));
        assert_eq!(named["x-forwarded-for"], "10.0.0.1", "protected");
        let site = ["www.example.org".to_string()];
        assert!(
            !forwarded_ok(&h, known_host(&h, &site).as_deref()),
            "a host not listed"
        );
        for (name, ok, bad) in [
            ("x-forwarded-host", "www.example.org", "WWW.example.org"),
            ("x-forwarded-proto", "https", "javascript"),
            ("x-forwarded-scheme", "https", "gopher"),
            ("x-forwarded-port", "443", "443x"),
        ] {
            let mut h = HeaderMap::new();
            h.insert("host", "www.example.org".parse().unwrap());
            h.insert(name, ok.parse().unwrap());
            assert!(
                forwarded_ok(&h, known_host(&h, &site).as_deref()),
                "{name}: {ok}"
            );
            h.append(name, ok.parse().unwrap());
            assert!(
                !forwarded_ok(&h, known_host(&h, &site).as_deref()),
                "{name} twice"
            );
            h.insert(name, bad.parse().unwrap());
            assert!(
                !forwarded_ok(&h, known_host(&h, &site).as_deref()),
                "{name}: {bad}"
            );
        }
        for (port, ok) in [
            ("1", true),
            ("80", true),
            ("65535", true),
            ("0", false),
            ("00080", false),
            ("65536", false),
            ("99999", false),
            ("100000", false),
            ("", false),
            ("+80", false),
            ("8 0", false),
            ("\u{ff18}0", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert("host", "www.example.org".parse().unwrap());
            h.insert(
                "x-forwarded-port",
                HeaderValue::from_bytes(port.as_bytes()).unwrap(),
            );
            let got = forwarded_ok(&h, known_host(&h, &site).as_deref());
            assert_eq!(got, ok, "port {port:?}");
        }
        // Pages are keyed per site: a forwarded host other than the
        // request's own, or two schemes that disagree, could have Django
        // render one site's page into another's key.
        let two = [
            "www.example.org".to_string(),
            "static.example.org".to_string(),
        ];
        let mut h = HeaderMap::new();
        h.insert("host", "www.example.org".parse().unwrap());
        h.insert("x-forwarded-host", "static.example.org".parse().unwrap());
        assert!(
            !forwarded_ok(&h, known_host(&h, &two).as_deref()),
            "another listed host"
        );
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        h.insert("x-forwarded-scheme", "http".parse().unwrap());
        assert!(
            !forwarded_ok(&h, known_host(&h, &two).as_deref()),
            "schemes that disagree"
        );
        h.insert("x-forwarded-scheme", "https".parse().unwrap());
        assert!(forwarded_ok(&h, known_host(&h, &two).as_deref()));
    }

    #[test]
    fn overrides_and_underscored_names_never_reach_the_upstream() {
        let uri: Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-original-url", "/admin/".parse().unwrap());
        h.insert("x-http-method-override", "DELETE".parse().unwrap());
        h.insert("script_name", "/blog".parse().unwrap());
        h.insert("x_forwarded_host", "evil.example".parse().unwrap());
        h.insert("accept-language", "ko".parse().unwrap());
        forward_headers(
            &mut h,
            &uri,
            "203.0.113.9:5000".parse().unwrap(),
            &trusted(&[]),
        );
        for gone in [
            "x-original-url",
            "x-http-method-override",
            "script_name",
            "x_forwarded_host",
        ] {
            assert!(!h.contains_key(gone), "{gone} was forwarded");
        }
        assert_eq!(h["accept-language"], "ko");
    }

    #[test]
    fn http2_cookie_fields_are_joined() {
        let uri: Uri = "/x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.append("cookie", "a=1".parse().unwrap());
        h.append("cookie", "sessionid=s".parse().unwrap());
        forward_headers(
            &mut h,
            &uri,
            "203.0.113.9:5000".parse().unwrap(),
            &trusted(&[]),
        );
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; sessionid=s");
    }

    #[test]
    fn cidr_ranges() {
        let c: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(c.contains("10.1.200.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(
            c.contains("::ffff:10.1.0.9".parse().unwrap()),
            "v4-mapped v6"
        );
        let one: Cidr = "::1".parse().unwrap();
        assert!(one.contains("::1".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("203.0.113.9".parse().unwrap()));
        let host: Cidr = "10.0.0.1/32".parse().unwrap();
        assert!(host.contains("10.0.0.1".parse().unwrap()));
        assert!(!host.contains("10.0.0.2".parse().unwrap()));
        let any6: Cidr = "::/0".parse().unwrap();
        assert!(any6.contains("2001:db8::1".parse().unwrap()));
        let net6: Cidr = "2001:db8::/32".parse().unwrap();
        assert!(net6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!net6.contains("2001:db9::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("example.org".parse::<Cidr>().is_err());
    }
}
