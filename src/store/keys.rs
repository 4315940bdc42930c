//! How entries are laid out in LevelDB's single sorted key space: the
//! namespaces, the expiry index, the live-byte rows and the key-to-shard
//! mapping, as specified in `docs/format.md` ("Key space").

/// The namespace of a stored entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Namespace {
    /// Values set through the REST API.
    Value,
    /// Pages stored by the reverse proxy.
    Page,
}

impl Namespace {
    pub const fn tag(self) -> u8 {
        match self {
            Namespace::Value => b'v',
            Namespace::Page => b'p',
        }
    }

    /// Every namespace that holds entries (not index rows).
    pub const ALL: [Namespace; 2] = [Namespace::Value, Namespace::Page];
}

pub const EXPIRY_TAG: u8 = b'x';
pub const BLOB_TAG: u8 = b'b';
/// Tag-index rows: `t`, the tag, NUL, the tagged entry's key.
pub const TAG_TAG: u8 = b't';

/// The start of tag `tag`'s index rows; a tag never holds NUL, so these
/// are exactly the rows starting with it.
/// Whether `k` is an entry's key (a REST value or a page), as opposed to
/// an index row: the keys the directory holds.
pub fn is_entry_key(k: &[u8]) -> bool {
    Namespace::ALL.iter().any(|ns| k.first() == Some(&ns.tag()))
}

pub fn tag_prefix(tag: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + tag.len());
    k.push(TAG_TAG);
    k.extend_from_slice(tag);
    k.push(0);
    k
}

/// The index row saying entry `entry_key` carries `tag`; written and
/// deleted in the same batch as the entry.
pub fn tag_row(tag: &[u8], entry_key: &[u8]) -> Vec<u8> {
    let mut k = tag_prefix(tag);
    k.extend_from_slice(entry_key);
    k
}

/// The row counting the bytes of blob file `id` still referenced by a
/// record; written in the same batch as the references themselves.
pub fn blob_live_key(id: u32) -> [u8; 5] {
    let b = id.to_be_bytes();
    [BLOB_TAG, b[0], b[1], b[2], b[3]]
}

/// A live-byte row's value.
pub fn encode_live(n: u64) -> Vec<u8> {
    n.to_le_bytes().to_vec()
}

/// Reads a live-byte row's value. A damaged row counts as nothing live: at
/// worst the file is dropped early and its pages become misses (a blob
/// that is gone reads as a miss, never as another page).
pub fn decode_live(v: &[u8]) -> u64 {
    v.first_chunk::<8>().map_or(0, |b| u64::from_le_bytes(*b))
}

/// The LevelDB key of an entry.
pub fn entry_key(ns: Namespace, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + key.len());
    k.push(ns.tag());
    k.extend_from_slice(key);
    k
}

/// [`entry_key`] written into `buf`, when it fits: a lookup's key without
/// an allocation.
pub fn entry_key_in<'b>(ns: Namespace, key: &[u8], buf: &'b mut [u8]) -> Option<&'b [u8]> {
    let k = buf.get_mut(..key.len() + 1)?;
    k[0] = ns.tag();
    k[1..].copy_from_slice(key);
    Some(k)
}

/// Whether `key` is another site's copy of the page at `bare` (a bare page
/// key, `<target> NUL`, with or without its namespace byte, as `key`):
/// `bare @<scheme>://<host> NUL` exactly (`proxy::site`); the copy's
/// variants go on after that NUL, and are not copies themselves.
pub fn is_site_copy(bare: &[u8], key: &[u8]) -> bool {
    key.strip_prefix(bare)
        .and_then(|rest| rest.strip_prefix(b"@"))
        .is_some_and(|site| memchr::memchr(0, site) == site.len().checked_sub(1))
}

/// The expiry-index row for an entry key expiring at `expires_at` (ms).
pub fn expiry_key(expires_at: u64, entry_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(9 + entry_key.len());
    k.push(EXPIRY_TAG);
    k.extend_from_slice(&expires_at.to_be_bytes());
    k.extend_from_slice(entry_key);
    k
}

/// Splits an expiry-index row into (expires-at, entry key).
pub fn parse_expiry_key(k: &[u8]) -> Option<(u64, &[u8])> {
    if k.len() < 10 || k[0] != EXPIRY_TAG {
        return None;
    }
    let mut at = [0u8; 8];
    at.copy_from_slice(&k[1..9]);
    Some((u64::from_be_bytes(at), &k[9..]))
}

/// The smallest key greater than every key starting with `prefix`, or `None`
/// when no such key exists (the prefix is all `0xff`).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Which shard owns a key. Only the part before the first NUL byte counts,
/// so a group and all its members (`<group>\0<suffix>`) live on one shard,
/// whose thread keeps them consistent. CRC-32 rather than std's hasher
/// because the mapping is part of the on-disk layout and must never change
/// between releases or builds.
pub fn shard_of(entry_key: &[u8], shards: usize) -> usize {
    let routed = entry_key.split(|&b| b == 0).next().unwrap_or(entry_key);
    (crc32fast::hash(routed) as usize) % shards
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_key_in_a_buffer_is_the_entry_key() {
        let mut buf = [0u8; 8];
        for key in [&b""[..], b"a", b"/page/1"] {
            assert_eq!(
                entry_key_in(Namespace::Page, key, &mut buf),
                Some(entry_key(Namespace::Page, key).as_slice())
            );
        }
        assert_eq!(entry_key_in(Namespace::Value, b"/page/12", &mut buf), None);
    }

    #[test]
    fn a_site_copy_is_the_bare_key_then_one_site() {
        let bare = b"p/a\0";
        assert!(is_site_copy(bare, b"p/a\0@https://x.example\0"));
        assert!(
            !is_site_copy(bare, b"p/a\0@https://x.example\0accept=de"),
            "a variant"
        );
        assert!(
            !is_site_copy(bare, b"p/a\0@https://x.example"),
            "unterminated"
        );
        assert!(!is_site_copy(bare, b"p/a\0accept=de"));
        assert!(
            !is_site_copy(bare, b"p/ab\0@https://x.example\0"),
            "another path"
        );
    }

    #[test]
    fn expiry_rows_sort_by_deadline_and_round_trip() {
        let a = expiry_key(5, b"vzzz");
        let b = expiry_key(256, b"vaaa");
        assert!(a < b);
        assert_eq!(parse_expiry_key(&b), Some((256, &b"vaaa"[..])));
        assert_eq!(parse_expiry_key(b"x123"), None);
    }

    #[test]
    fn tag_rows_of_one_tag_are_one_range() {
        let row = tag_row(b"ds-4", b"p/a\0");
        assert_eq!(row, b"tds-4\0p/a\0");
        assert!(row.starts_with(&tag_prefix(b"ds-4")));
        assert!(!row.starts_with(&tag_prefix(b"ds")), "ds is not ds-4");
    }

    #[test]
    fn prefix_end_bounds_the_prefix_range() {
        assert_eq!(prefix_end(b"va"), Some(b"vb".to_vec()));
        assert_eq!(prefix_end(b"v\xff"), Some(b"w".to_vec()));
        assert_eq!(prefix_end(b"\xff\xff"), None);
    }

    #[test]
    fn shard_mapping_is_stable() {
        // Pinned: changing it would orphan every stored entry.
        assert_eq!(shard_of(b"vmykey", 4), 2);
        assert_eq!(shard_of(b"v/dataset/1", 8), 6);
        assert_eq!(shard_of(b"v/dataset/1\0variant", 8), 6);
    }
}
