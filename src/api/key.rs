//! How a request URL becomes a cache key.
//!
//! For `/cache/<rest>` and `/pickle/<rest>`:
//! 1. `<rest>` (the raw path after the route prefix) is percent-decoded, so
//!    `a%2Fb` and `a/b` are the same key; it must be valid UTF-8;
//! 2. leading and trailing `/` are stripped, as the original server did, so
//!    `/cache//dataset/x/` and `/cache/dataset/x` are the same key;
//! 3. a non-empty query string is appended as `?<query>`, exactly as sent.
//!    The original dropped it, so `?page=2` and `?page=3` shared one entry;
//!    bigcache keeps them apart, the same way for set, get and delete.
//!
//! So `POST /cache//dataset/x/?page=2` stores key `dataset/x?page=2`, which
//! `GET /cache/dataset/x?page=2` and `GET /cache/%2Fdataset%2Fx%3Fpage%3D2`
//! both read back.
//!
//! For `/prefix/<rest>`, steps 1 and 3 apply but only leading slashes are
//! stripped: `DELETE /prefix/dataset/` must not delete `datasets/...`.

use percent_encoding::percent_decode_str;

use super::error::ApiError;

fn decode(raw: &str) -> Result<String, ApiError> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ApiError::BadRequest("key is not valid UTF-8 once percent-decoded".into()))
}

fn with_query(mut key: String, query: Option<&str>) -> String {
    if let Some(q) = query.filter(|q| !q.is_empty()) {
        key.push('?');
        key.push_str(q);
    }
    key
}

fn check(key: String, max_len: usize, what: &str) -> Result<String, ApiError> {
    if key.is_empty() {
        return Err(ApiError::BadRequest(format!("{what} is empty")));
    }
    if key.len() > max_len {
        return Err(ApiError::BadRequest(format!(
            "{what} is {} bytes; the limit is {max_len}",
            key.len()
        )));
    }
    Ok(key)
}

/// The key of `/cache/<rest>` or `/pickle/<rest>`.
pub fn entry_key(rest: &str, query: Option<&str>, max_len: usize) -> Result<String, ApiError> {
    let path = decode(rest)?;
    let key = with_query(path.trim_matches('/').to_string(), query);
    check(key, max_len, "key")
}

/// A key named in a JSON body (the bulk calls): what `/pickle/<key>`
/// names once decoded, outer slashes stripped.
pub fn body_key(text: &str, max_len: usize) -> Result<String, ApiError> {
    check(text.trim_matches('/').to_string(), max_len, "key")
}

/// The prefix of `/prefix/<rest>`.
pub fn prefix_key(rest: &str, query: Option<&str>, max_len: usize) -> Result<String, ApiError> {
    let path = decode(rest)?;
    let key = with_query(path.trim_start_matches('/').to_string(), query);
    check(key, max_len, "prefix")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(rest: &str, q: Option<&str>) -> String {
        entry_key(rest, q, 4096).unwrap()
    }

    #[test]
    fn strips_slashes_and_decodes() {
        assert_eq!(k("mykey", None), "mykey");
        assert_eq!(k("/dataset/x/", None), "dataset/x");
        assert_eq!(k("%2Fdataset%2Fx%2F", None), "dataset/x");
        assert_eq!(k("caf%C3%A9", None), "café");
    }

    #[test]
    fn keeps_the_query() {
        assert_eq!(k("/dataset/x/", Some("page=2")), "dataset/x?page=2");
        assert_ne!(
            k("/dataset/x/", Some("page=2")),
            k("/dataset/x/", Some("page=3"))
        );
        assert_eq!(k("%2Fdataset%2Fx%2F%3Fpage%3D2", None), "dataset/x/?page=2");
        assert_eq!(k("a", Some("")), "a");
    }

    #[test]
    fn rejects_empty_long_and_non_utf8() {
        assert!(entry_key("/", None, 10).is_err());
        assert!(entry_key("", None, 10).is_err());
        assert!(entry_key("abcdefghijk", None, 10).is_err());
        assert!(entry_key("%FF", None, 10).is_err());
    }

    #[test]
    fn prefix_keeps_its_trailing_slash() {
        assert_eq!(prefix_key("/dataset/", None, 100).unwrap(), "dataset/");
        assert!(prefix_key("/", None, 100).is_err());
    }
}
