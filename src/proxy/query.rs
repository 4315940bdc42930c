//! Query normalisation (`--strip-query-params`, `--sort-query`): campaign
//! and click-tracking parameters (`utm_*`, `gclid`, `fbclid`, …) name no
//! different page, yet each campaign click would be a new cache key and a
//! new render. They are removed from the target before the key is made
//! and from the request Django is sent, so what Django renders is what the
//! key names; with `--sort-query` the other parameters are put in order
//! too. Purges and invalidations go through the same function, so a page
//! named in either form is reached.
//!
//! Names are compared percent-decoded (`+` as a space), as Django reads
//! them, and exactly: `UTM_SOURCE` is another parameter to Django, so it is
//! to bigcache.

use std::borrow::Cow;

use super::names::Names;

/// The parameters a site's links add for tracking alone; `*` ends a prefix.
pub const DEFAULT_STRIP: &[&str] = &[
    "utm_*",
    "gclid",
    "gclsrc",
    "dclid",
    "gbraid",
    "wbraid",
    "fbclid",
    "msclkid",
    "mc_cid",
    "mc_eid",
    "yclid",
    "_ga",
    "_gl",
    "igshid",
    "twclid",
    "ttclid",
    "li_fat_id",
    "_hsenc",
    "_hsmi",
    "mkt_tok",
    "s_cid",
];

/// Which query parameters go, and whether the rest are sorted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryRules {
    strip: Names,
    sort: bool,
}

impl QueryRules {
    /// Rules stripping `names` (`utm_*`: every name starting `utm_`) and,
    /// if `sort`, ordering the rest by name.
    pub fn new<S: AsRef<str>>(names: &[S], sort: bool) -> QueryRules {
        QueryRules {
            strip: Names::new(names),
            sort,
        }
    }

    /// `target` (path and query) with the listed parameters removed and,
    /// with sorting, the others ordered by name (parameters of one name
    /// keep their order: Django's `getlist` reads it). Borrowed when
    /// nothing changes, which is every target without a query.
    pub fn apply<'t>(&self, target: &'t str) -> Cow<'t, str> {
        if self.strip.is_empty() && !self.sort {
            return Cow::Borrowed(target);
        }
        let Some(q) = memchr::memchr(b'?', target.as_bytes()) else {
            return Cow::Borrowed(target);
        };
        let (path, query) = (&target[..q], &target[q + 1..]);
        let mut kept: Vec<(Cow<'_, str>, &str)> = Vec::new();
        let mut dropped = false;
        for part in query.split('&') {
            let name = decoded(part.split_once('=').map_or(part, |(n, _)| n));
            if !part.is_empty() && self.strip.matches(&name) {
                dropped = true;
                continue;
            }
            kept.push((name, part));
        }
        // Stable: parameters of one name keep their order.
        let reordered = self.sort && !kept.is_sorted_by(|a, b| a.0 <= b.0);
        if reordered {
            kept.sort_by(|a, b| a.0.cmp(&b.0));
        }
        if !dropped && !reordered {
            return Cow::Borrowed(target);
        }
        let mut out = String::with_capacity(target.len() + 1);
        // An absolute-form target names its path empty when it is `/`.
        out.push_str(if path.is_empty() { "/" } else { path });
        for (i, (_, part)) in kept.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(part);
        }
        Cow::Owned(out)
    }
}

/// A query name as Django reads it: `+` is a space, then percent-decoded
/// (invalid UTF-8 replaced, as Django does).
fn decoded(name: &str) -> Cow<'_, str> {
    if !name.contains(['%', '+']) {
        return Cow::Borrowed(name);
    }
    let spaced = name.replace('+', " ");
    Cow::Owned(
        percent_encoding::percent_decode_str(&spaced)
            .decode_utf8_lossy()
            .into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults(sort: bool) -> QueryRules {
        QueryRules::new(DEFAULT_STRIP, sort)
    }

    #[test]
    fn tracking_parameters_go_and_the_rest_stay_in_order() {
        let r = defaults(false);
        for (given, want) in [
            ("/d/", "/d/"),
            ("/d/?page=2", "/d/?page=2"),
            ("/d/?utm_source=x", "/d/"),
            ("/d/?utm_source=x&utm_medium=y&gclid=z", "/d/"),
            ("/d/?page=2&utm_campaign=spring&q=a+b", "/d/?page=2&q=a+b"),
            ("/d/?fbclid=1&b=2&a=1", "/d/?b=2&a=1"),
            ("/d/?%75tm_source=x&a=1", "/d/?a=1"),
            ("/d/?utm=1", "/d/?utm=1"),
            ("/d/?UTM_SOURCE=1", "/d/?UTM_SOURCE=1"),
            ("/d/?gclid", "/d/"),
            ("/d/?a=1&&b=2", "/d/?a=1&&b=2"),
            ("/d/?_ga=1&_gax=2", "/d/?_gax=2"),
            ("?utm_source=1", "/"),
            ("?utm_source=1&a=2", "/?a=2"),
        ] {
            assert_eq!(r.apply(given), want, "{given}");
        }
        assert!(matches!(r.apply("/d/?page=2"), Cow::Borrowed(_)));
    }

    #[test]
    fn sorting_orders_names_and_keeps_each_names_values_in_order() {
        let r = defaults(true);
        assert_eq!(r.apply("/d/?b=2&a=1"), "/d/?a=1&b=2");
        assert_eq!(r.apply("/d/?tag=z&a=1&tag=b"), "/d/?a=1&tag=z&tag=b");
        assert_eq!(r.apply("/d/?b=1&utm_x=2&%61=3"), "/d/?%61=3&b=1");
        assert!(matches!(r.apply("/d/?a=1&b=2"), Cow::Borrowed(_)));
    }

    #[test]
    fn no_rules_change_nothing() {
        let r = QueryRules::new::<&str>(&[], false);
        assert_eq!(r, QueryRules::default());
        assert!(matches!(r.apply("/d/?utm_source=x"), Cow::Borrowed(_)));
        let custom = QueryRules::new(&[" ref ", ""], false);
        assert_eq!(custom.apply("/d/?ref=a&utm_source=x"), "/d/?utm_source=x");
    }
}
