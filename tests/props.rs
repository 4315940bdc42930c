//! Property tests of the parsers a client's request and an upstream's
//! response go through: the cache key, the Vary variant, `Cache-Control`
//! and the storability decision. Each runs 256 cases by default; set
//! `PROPTEST_CASES=1000000` for a long run.

use std::time::SystemTime;

use bigcache::proxy::directives::Directives;
use bigcache::proxy::key::{canonical, variant};
use bigcache::proxy::policy::response_policy;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;

/// Bytes a header value may hold (visible ASCII, space, tab, obs-text).
fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(b'\t'), 0x20u8..0x7f, 0x80u8..=0xff], 0..64)
}

/// Request targets: mostly URL-ish characters and escapes, some anything.
fn target() -> impl Strategy<Value = String> {
    prop_oneof![
        "(/[a-zA-Z0-9._~%?&=+-]{0,12}){1,6}",
        "/(%[0-9a-fA-F]{2}|[a-z/?])*",
        any::<String>(),
    ]
}

proptest! {
    /// Any target has a key: printable ASCII, and canonical already.
    #[test]
    fn a_key_is_printable_and_canonical(t in target()) {
        let k = canonical(&t);
        prop_assert!(k.bytes().all(|b| b.is_ascii_graphic()), "{k:?}");
        prop_assert_eq!(canonical(&k), k.clone());
    }

    /// Spelling an unreserved character as an escape names the same page,
    /// and any other escape's case does not matter.
    #[test]
    fn escapes_of_the_same_byte_name_the_same_page(
        path in "[a-z]{1,8}",
        b in any::<u8>(),
    ) {
        let lower = format!("/{path}%{b:02x}");
        let upper = format!("/{path}%{b:02X}");
        prop_assert_eq!(canonical(&lower), canonical(&upper));
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            prop_assert_eq!(canonical(&lower), canonical(&format!("/{path}{}", b as char)));
        }
    }

    /// Two requests whose varied header differs (after trimming) never
    /// share a variant: one visitor's page is never another's.
    #[test]
    fn different_header_values_never_share_a_variant(a in header_bytes(), b in header_bytes()) {
        prop_assume!(a.trim_ascii() != b.trim_ascii());
        let (Ok(va), Ok(vb)) = (HeaderValue::from_bytes(&a), HeaderValue::from_bytes(&b)) else {
            return Ok(());
        };
        let names = vec!["accept-language".to_string()];
        let req = |v: HeaderValue| {
            let mut h = HeaderMap::new();
            h.insert("accept-language", v);
            h
        };
        let (x, y) = (variant(&names, &req(va)), variant(&names, &req(vb)));
        if let (Some(x), Some(y)) = (x, y) {
            prop_assert_ne!(x, y);
        }
    }

    /// `Cache-Control` and the storability decision take any bytes an
    /// upstream sends without panicking, and never store a response whose
    /// `Cache-Control` says `private` or `no-store` anywhere bigcache reads.
    #[test]
    fn response_heads_never_panic_and_private_is_never_stored(
        cc in header_bytes(),
        vary in header_bytes(),
        status in 100u16..600,
        extra in prop::sample::select(vec!["private", "no-store", "public", ""]),
    ) {
        let mut h = HeaderMap::new();
        let cc = [cc.as_slice(), b", ", extra.as_bytes()].concat();
        if let Ok(v) = HeaderValue::from_bytes(&cc) {
            h.insert(http::header::CACHE_CONTROL, v);
        }
        if let Ok(v) = HeaderValue::from_bytes(&vary) {
            h.insert(http::header::VARY, v);
        }
        h.insert(HeaderName::from_static("x-bigcache-ttl"), HeaderValue::from_static("1h"));
        let lines = h.get_all(http::header::CACHE_CONTROL).iter().map(|v| v.as_bytes());
        let parsed = Directives::parse(lines).ok().flatten().unwrap_or_default();
        let decided = response_policy(StatusCode::from_u16(status).unwrap(), &h, SystemTime::now());
        if extra == "private" || extra == "no-store" || parsed.private || parsed.no_store {
            prop_assert!(decided.is_err(), "stored with Cache-Control {cc:?}");
        }
        // The same text as a targeted field: its restrictions hold too.
        let mut t = HeaderMap::new();
        if let Ok(v) = HeaderValue::from_bytes(&cc) {
            t.insert(HeaderName::from_static("cdn-cache-control"), v);
        }
        t.insert(HeaderName::from_static("x-bigcache-ttl"), HeaderValue::from_static("1h"));
        let decided = response_policy(StatusCode::OK, &t, SystemTime::now());
        if t.contains_key("cdn-cache-control") && (extra == "private" || extra == "no-store") {
            prop_assert!(decided.is_err(), "stored with CDN-Cache-Control {cc:?}");
        }
    }
}
