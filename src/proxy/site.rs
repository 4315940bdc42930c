//! Which site a request's page belongs to: its scheme and host.
//!
//! Django renders absolute links (canonical URLs, sitemaps, redirects,
//! `request.build_absolute_uri`) from the request's scheme and `Host`, so a
//! page rendered for `http://127.0.0.1:8080` is not the page for
//! `https://www.example.org`. Every site keeps its own copy of each page:
//! the site is part of the page's key, unless the operator declares a host
//! an alias of another (`--host-alias example.org=www.example.org`: Django
//! renders the same for both).
//!
//! One site, recorded in the data directory when it was first opened with
//! this rule (`bigcache.meta`, `page_site=`), keeps the bare key
//! `<target> NUL` that every page had before: its stored pages stay hits
//! across the upgrade. Every other site's pages live under
//! `<target> NUL @<scheme>://<host> NUL` (docs/format.md, "Key space"):
//! still on the target's shard, and still under a prefix purge of the path.
//! A purge of a path reaches every site's copy (`Store::purge_page`). A
//! page stored for a site the configuration no longer serves is never
//! looked up again.

use super::fields::{Fields, Known};

/// `http` or `https`.
pub type Scheme = &'static str;

/// The sites the proxy keys pages for.
#[derive(Debug, Clone)]
pub struct Sites {
    /// The site whose pages keep the bare key, as (scheme, host).
    bare: (Scheme, String),
    /// (alias, host): requests for the alias use the host's pages.
    aliases: Vec<(String, String)>,
}

impl Sites {
    /// `bare` is `<scheme>://<host>` as recorded in the data directory;
    /// hosts in `key::host_name` form.
    pub fn new(bare: &str, aliases: Vec<(String, String)>) -> Sites {
        let (scheme, host) = match bare.split_once("://") {
            Some(("https", h)) => ("https", h),
            Some((_, h)) => ("http", h),
            None => ("http", bare),
        };
        Sites {
            bare: (scheme, host.to_string()),
            aliases,
        }
    }

    /// The site whose pages keep the bare key, as (scheme, host).
    pub fn bare(&self) -> (Scheme, &str) {
        (self.bare.0, &self.bare.1)
    }

    /// The host whose pages `host` shares: its own, or the one it is an
    /// alias of.
    pub fn canonical<'h>(&'h self, host: &'h str) -> &'h str {
        self.aliases
            .iter()
            .find(|(alias, _)| alias == host)
            .map_or(host, |(_, to)| to.as_str())
    }

    /// The key segment of a page requested over `scheme` for `host`
    /// (`key::host_name` form): `None` for the bare site.
    pub fn segment<'h>(&'h self, scheme: Scheme, host: &'h str) -> Option<(Scheme, &'h str)> {
        let host = self.canonical(host);
        (scheme != self.bare.0 || host != self.bare.1).then_some((scheme, host))
    }
}

/// The scheme a cacheable request was made over: what a trusted front
/// says in `X-Forwarded-Proto` or `X-Forwarded-Scheme` (checked to be one
/// plain value, the same in both, before the request may use the cache:
/// `forward::forwarded_ok`), else `http` (bigcache itself speaks
/// plain HTTP).
pub fn scheme_of<F: Fields + ?Sized>(headers: &F, trusted_peer: bool) -> Scheme {
    let said = headers
        .known(Known::ForwardedProto)
        .next()
        .or_else(|| headers.known(Known::ForwardedScheme).next());
    let https = trusted_peer && said.is_some_and(|v| v.eq_ignore_ascii_case(b"https"));
    if https { "https" } else { "http" }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;

    #[test]
    fn the_bare_site_has_no_segment_and_aliases_share_their_hosts() {
        let sites = Sites::new(
            "https://www.example.org",
            vec![("example.org".into(), "www.example.org".into())],
        );
        assert_eq!(sites.segment("https", "www.example.org"), None);
        assert_eq!(sites.segment("https", "example.org"), None, "an alias");
        assert_eq!(
            sites.segment("http", "www.example.org"),
            Some(("http", "www.example.org")),
            "the other scheme"
        );
        assert_eq!(
            sites.segment("https", "static.example.org"),
            Some(("https", "static.example.org"))
        );
    }

    #[test]
    fn only_a_trusted_front_says_https() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-proto", "HTTPS".parse().unwrap());
        assert_eq!(scheme_of(&h, true), "https");
        assert_eq!(scheme_of(&h, false), "http");
        assert_eq!(scheme_of(&HeaderMap::new(), true), "http");
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-scheme", "https".parse().unwrap());
        assert_eq!(scheme_of(&h, true), "https");
    }
}
