//! Cache tags (surrogate keys): the names a response is purged by, from its
//! `Surrogate-Key` (Fastly's) and `xkey` (Varnish's) headers. Both take a
//! list separated by spaces and/or commas, over any number of field lines;
//! the tags of all of them are one set.
//!
//! A response whose tags break the limits (`store::record::check_tag`,
//! [`MAX_TAGS`]) is not stored at all: storing it without a tag would
//! leave a page its purge cannot reach.

use http::HeaderMap;
use http::header::HeaderName;

use crate::store::record::{MAX_TAGS, TagError, Tags, check_tag};

pub const SURROGATE_KEY: HeaderName = HeaderName::from_static("surrogate-key");
pub const XKEY: HeaderName = HeaderName::from_static("xkey");

/// The tags a response carries (none: empty), deduplicated, in the order
/// first named.
pub fn from_headers(headers: &HeaderMap) -> Result<Tags, TagError> {
    let mut tags: Vec<&[u8]> = Vec::new();
    for name in [SURROGATE_KEY, XKEY] {
        for value in headers.get_all(name) {
            for tag in value
                .as_bytes()
                .split(|&b| b == b' ' || b == b',' || b == b'\t')
                .filter(|t| !t.is_empty())
            {
                check_tag(tag)?;
                if !tags.contains(&tag) {
                    tags.push(tag);
                    // Checked as it grows: the dedup is linear per tag.
                    if tags.len() > MAX_TAGS {
                        return Err(TagError::TooMany(tags.len()));
                    }
                }
            }
        }
    }
    Ok(Tags::new(tags))
}

/// Most bytes of tag-index rows one page may take: each row holds the
/// page's whole key (up to `--max-target-length` plus its variant), so
/// 128 tags on a long query string would be a megabyte of index for one
/// page any client can make Django answer.
pub const MAX_INDEX_BYTES: usize = 64 << 10;

/// Whether a page at a key of `key_len` bytes may carry `tags` (the
/// index rows it would take stay under [`MAX_INDEX_BYTES`]).
pub fn index_fits(tags: &Tags, key_len: usize) -> bool {
    let rows: usize = tags.iter().map(|t| t.len() + 3 + key_len).sum();
    rows <= MAX_INDEX_BYTES
}

/// Whether the response names any tags.
pub fn present(headers: &HeaderMap) -> bool {
    headers.contains_key(SURROGATE_KEY) || headers.contains_key(XKEY)
}

/// Removes the tag headers, which name the site's internals, from what a
/// client receives.
pub fn strip(headers: &mut HeaderMap) {
    headers.remove(SURROGATE_KEY);
    headers.remove(XKEY);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(lines: &[(&str, &str)]) -> Result<Vec<String>, TagError> {
        let mut h = HeaderMap::new();
        for (n, v) in lines {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        from_headers(&h).map(|t| {
            t.iter()
                .map(|t| String::from_utf8(t.to_vec()).unwrap())
                .collect()
        })
    }

    #[test]
    fn both_headers_every_line_and_both_separators_make_one_set() {
        assert_eq!(
            tags(&[
                ("surrogate-key", "dataset-42 list"),
                ("surrogate-key", "feed,  dataset-42"),
                ("xkey", "home, list"),
            ]),
            Ok(vec![
                "dataset-42".into(),
                "list".into(),
                "feed".into(),
                "home".into()
            ])
        );
        assert_eq!(tags(&[]), Ok(vec![]));
        assert_eq!(tags(&[("xkey", " , ")]), Ok(vec![]));
    }

    #[test]
    fn limits_are_errors_not_truncation() {
        let long = "x".repeat(257);
        assert_eq!(
            tags(&[("xkey", long.as_str())]),
            Err(TagError::TooLong(257))
        );
        let many: Vec<String> = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect();
        assert_eq!(
            tags(&[("surrogate-key", many.join(" ").as_str())]),
            Err(TagError::TooMany(MAX_TAGS + 1))
        );
        let mut h = HeaderMap::new();
        h.insert(
            SURROGATE_KEY,
            http::HeaderValue::from_bytes("caf\u{e9}".as_bytes()).unwrap(),
        );
        assert_eq!(from_headers(&h), Err(TagError::BadByte));
        let fifty = Tags::new((0..50).map(|_| &b"dataset-1234"[..]));
        assert!(index_fits(&fifty, 1000));
        assert!(
            !index_fits(&fifty, 8192 + 1024),
            "a long key times many tags"
        );
    }
}
