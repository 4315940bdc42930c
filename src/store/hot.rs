//! The hot tier: recently used entries in RAM, within a byte budget, so
//! repeated reads never reach a shard thread.
//!
//! Each shard has its own slice. Only the shard's thread writes it (every
//! mutation of a key goes through that thread, so the LevelDB entry and its
//! hot copy change in one place and in order); readers on any thread look
//! it up without a hop, and drop an entry they find expired (atomically,
//! only if it still is: a fresher copy stored meanwhile stays).

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::OnceLock;

use bytes::Bytes;

use super::record::Record;

/// Weighs hot-tier entries by the bytes they pin.
#[derive(Clone)]
pub struct ByBytes;

impl quick_cache::Weighter<Bytes, Record> for ByBytes {
    fn weight(&self, key: &Bytes, rec: &Record) -> u64 {
        // 64: rough per-entry bookkeeping, so tiny entries still count.
        let stored = key.len() + rec.meta.len() + rec.body.len() + rec.tags.as_bytes().len() + 64;
        (stored + decoded_estimate(rec)) as u64
    }
}

/// What a proxied page's record costs once it has been read: the decoded
/// response kept with it (`Record::memo`) holds its headers twice, as the
/// stored response and as the head every hit is answered with, each a
/// `HeaderMap` entry of about a hundred bytes plus index slots per header,
/// where the record spends about forty bytes per header. Counted when the
/// entry enters the tier, decoded or not yet, so the budget bounds what
/// the tier holds after its hits too.
fn decoded_estimate(rec: &Record) -> usize {
    const ENTRY: usize = 256;
    match rec.kind {
        super::record::Kind::Http => ENTRY + rec.meta.len() * 8,
        _ => 0,
    }
}

/// One shard's slice of the hot tier.
pub type Hot = quick_cache::sync::Cache<Bytes, Record, ByBytes>;

/// Pages assumed when sizing the tier's tables: the byte budget is what
/// bounds it, the estimate only avoids rehashing.
const TYPICAL_PAGE: u64 = 16 << 10;

/// A slice holding up to `bytes`.
pub fn slice(bytes: u64) -> Hot {
    Hot::with_weighter(
        (bytes / TYPICAL_PAGE).max(16) as usize,
        bytes.max(1),
        ByBytes,
    )
}

/// Which pages read from disk go into the hot tier: only those read twice
/// within the last `capacity` or so cold reads. With a long tail of pages
/// read once, admitting every read only churned the tier (each insert
/// evicting a page that was about to be read again) and cost throughput;
/// pages read twice are the ones worth RAM. Freshly stored entries are
/// always admitted (see `store::shard`).
pub struct Admission {
    seen: HashSet<u64>,
    /// How many keys `seen` holds before it starts over: about as many as
    /// the slice holds pages.
    capacity: usize,
}

impl Admission {
    pub fn for_slice(hot: &Hot) -> Admission {
        Admission {
            seen: HashSet::new(),
            capacity: (hot.capacity() / TYPICAL_PAGE).clamp(256, 1 << 16) as usize,
        }
    }

    /// Whether this cold read of `key` earns it a place in the tier.
    pub fn admit(&mut self, key: &[u8]) -> bool {
        static HASHER: OnceLock<RandomState> = OnceLock::new();
        let h = HASHER.get_or_init(RandomState::new).hash_one(key);
        if self.seen.remove(&h) {
            return true;
        }
        if self.seen.len() >= self.capacity {
            self.seen.clear();
        }
        self.seen.insert(h);
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proxied_page_weighs_its_decoded_headers_too() {
        use quick_cache::Weighter;
        let rec = |kind| Record {
            kind,
            created_at: 0,
            expires_at: None,
            meta: Bytes::from(vec![0; 500]),
            body: Bytes::from(vec![0; 20_000]),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        };
        let key = Bytes::from_static(b"p/x");
        let page = ByBytes.weight(&key, &rec(super::super::record::Kind::Http));
        let value = ByBytes.weight(&key, &rec(super::super::record::Kind::Json));
        assert_eq!(value, 3 + 500 + 20_000 + 64);
        assert!(page >= value + 4_000, "{page}");
    }

    #[test]
    fn a_page_is_admitted_on_its_second_cold_read() {
        let mut a = Admission::for_slice(&slice(1 << 20));
        assert!(!a.admit(b"p/a"));
        assert!(!a.admit(b"p/b"));
        assert!(a.admit(b"p/a"));
        assert!(!a.admit(b"p/a"), "counting starts over once admitted");
    }
}
