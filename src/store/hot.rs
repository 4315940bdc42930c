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
        (key.len() + rec.meta.len() + rec.body.len() + 64) as u64
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
    fn a_page_is_admitted_on_its_second_cold_read() {
        let mut a = Admission::for_slice(&slice(1 << 20));
        assert!(!a.admit(b"p/a"));
        assert!(!a.admit(b"p/b"));
        assert!(a.admit(b"p/a"));
        assert!(!a.admit(b"p/a"), "counting starts over once admitted");
    }
}
