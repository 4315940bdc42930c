//! The hot tier: recently used entries in RAM, within a byte budget, so
//! repeated reads never reach a shard thread.
//!
//! Each shard has its own slice. Only the shard's thread writes it (every
//! mutation of a key goes through that thread, so the LevelDB entry and its
//! hot copy change in one place and in order); readers on any thread look
//! it up without a hop, and drop an entry they find expired (atomically,
//! only if it still is: a fresher copy stored meanwhile stays).
//!
//! A page keeps the place of its hotness counter (`store::hotness`) beside
//! it, found once when it enters: a hit notes its read without hashing its
//! key again under the table's keyed hash.

use std::collections::HashSet;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::hotness::Hotness;
use super::record::Record;

/// Weighs hot-tier entries by the bytes they pin.
#[derive(Clone)]
pub struct ByBytes;

impl quick_cache::Weighter<Bytes, Held> for ByBytes {
    fn weight(&self, key: &Bytes, held: &Held) -> u64 {
        let rec = &held.record;
        // 64: rough per-entry bookkeeping, so tiny entries still count.
        let stored = key.len() + rec.meta.len() + rec.body.len() + rec.tags.as_bytes().len() + 64;
        (stored + decoded_estimate(rec)) as u64
    }
}

/// What a proxied page's record costs once it has been served: the
/// decoded response kept with it (`Record::memo`), the head template every
/// hit copies, the head's holed text (`proxy::served`) and the head written
/// on the socket, for each representation served (a page in brotli sent
/// to clients that accept it and to clients that do not has two). Measured
/// on the heap (`a_served_page_holds_no_more_than_it_weighs`): 7.5 KB for a
/// typical Django page served one way, 11.7 KB both ways, where an earlier
/// estimate counted 3.6 KB and the tier overran its budget by the
/// difference. Counted from the record's
/// size alone (the store does not parse a proxied page's fields): a
/// field takes about 35 bytes of it. Counted when the entry enters the
/// tier, served or not yet, so the budget bounds what the tier holds
/// after its hits too.
fn decoded_estimate(rec: &Record) -> usize {
    const ENTRY: usize = 5700;
    match rec.kind {
        super::record::Kind::Http => ENTRY + rec.meta.len() * 14,
        _ => 0,
    }
}

/// A page in the tier and where its hotness counter is.
#[derive(Clone)]
pub struct Held {
    record: Record,
    slot: usize,
}

/// What the tier holds at a key.
pub enum Read {
    /// Unexpired; the read is noted for the evictor.
    Fresh(Record),
    /// Held but expired: the caller decides what goes.
    Expired,
    Absent,
}

/// One shard's slice of the hot tier.
pub struct Hot {
    pages: quick_cache::sync::Cache<Bytes, Held, ByBytes>,
    hotness: Arc<Hotness>,
    /// `--hot-cache-size 0`: the tier holds nothing, and nothing is
    /// offered to it (an insert would evict itself at once).
    off: bool,
}

/// Pages assumed when sizing the tier's tables: the byte budget is what
/// bounds it, the estimate only avoids rehashing.
const TYPICAL_PAGE: u64 = 16 << 10;

/// A slice holding up to `bytes`, its reads counted in `hotness`.
pub fn slice(bytes: u64, hotness: Arc<Hotness>) -> Hot {
    Hot {
        pages: quick_cache::sync::Cache::with_weighter(
            (bytes / TYPICAL_PAGE).max(16) as usize,
            bytes.max(1),
            ByBytes,
        ),
        hotness,
        off: bytes == 0,
    }
}

impl Hot {
    pub fn insert(&self, key: Bytes, record: Record) {
        if self.off {
            return;
        }
        let slot = self.hotness.slot_of(&key);
        self.pages.insert(key, Held { record, slot });
    }

    /// The record at `key` as of `now` (unix ms), a fresh one's read
    /// counted in the hotness table through the slot kept with it.
    pub fn read(&self, key: &[u8], now: u64) -> Read {
        match self.pages.get(key) {
            None => Read::Absent,
            Some(held) if held.record.is_expired(now) => Read::Expired,
            Some(held) => {
                self.hotness.touch_at(held.slot);
                Read::Fresh(held.record)
            }
        }
    }

    /// Removes `key` if its record is as `expired` says.
    pub fn remove_if(&self, key: &[u8], expired: impl FnOnce(&Record) -> bool) {
        self.pages.remove_if(key, |h: &Held| expired(&h.record));
    }

    pub fn remove(&self, key: &[u8]) {
        self.pages.remove(key);
    }

    pub fn clear(&self) {
        self.pages.clear();
    }

    pub fn len(&self) -> usize {
        self.pages.len()
    }

    pub fn weight(&self) -> u64 {
        self.pages.weight()
    }

    /// Whether the tier takes pages at all.
    pub fn is_off(&self) -> bool {
        self.off
    }

    pub fn capacity(&self) -> u64 {
        self.pages.capacity()
    }
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
        let held = |kind| Held {
            record: rec(kind),
            slot: 0,
        };
        let page = ByBytes.weight(&key, &held(super::super::record::Kind::Http));
        let value = ByBytes.weight(&key, &held(super::super::record::Kind::Json));
        assert_eq!(value, 3 + 500 + 20_000 + 64);
        assert!(page >= value + 4_000, "{page}");
    }

    /// What a proxied page with `headers` weighs, the bytes its record
    /// holds, and the bytes it holds once served: its decoded response,
    /// the head template every hit copies and the head written on the
    /// socket (measured on this thread's heap).
    /// `coded`: the page is in brotli and served in both representations
    /// (to a client that accepts br and to one that does not).
    fn weighed_and_held(
        headers: &[(&'static str, &'static str)],
        coded: bool,
    ) -> (isize, isize, isize) {
        use crate::proxy::{answer, decision, entry::Entry, lookup};
        use quick_cache::Weighter;
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.insert(*name, http::HeaderValue::from_static(value));
        }
        let now = 1_800_000_000_000;
        let page = Bytes::from(vec![b'x'; 20_000]);
        let (body, coding) = if coded {
            let packed = crate::proxy::compress::pack_for_test(&page);
            (packed, crate::proxy::compress::Coding::Br)
        } else {
            (page, Default::default())
        };
        let entry = Entry {
            status: http::StatusCode::OK,
            headers: map,
            body,
            coding,
            quality: if coded { 5 } else { 0 },
            identity_len: 20_000,
            stored_at: now,
            fresh_until: now + 600_000,
            keep_until: Some(now + 28 * 86_400_000),
            initial_age: 0,
            must_revalidate: false,
            no_cache: false,
            synthetic_etag: false,
            ttl_header: true,
            stale_while_revalidate: None,
            stale_if_error: None,
            tags: Default::default(),
            soft_purged_at: None,
            served: Default::default(),
            shell: Default::default(),
        };
        let key = Bytes::from_static(b"p/datasets/7/?page=2");
        let rec = entry.to_record();
        drop(entry);
        let weight = ByBytes.weight(
            &key,
            &Held {
                record: rec.clone(),
                slot: 0,
            },
        ) as isize;
        let raw = (key.len() + rec.meta.len() + rec.body.len()) as isize;
        let before = crate::test_alloc::held();
        let decoded = lookup::decoded(&rec);
        let Ok(hit) = decoded.as_ref() else {
            panic!("the record decodes")
        };
        let d = decision::Decision {
            shown: true,
            ..decision::Decision::new(decision::CacheStatus::Hit).with_ttl(hit.fresh_until, now)
        };
        let reps: &[answer::Rep] = if coded {
            &[answer::Rep::Stored, answer::Rep::Decoded]
        } else {
            &[answer::Rep::Stored]
        };
        for rep in reps {
            let head = answer::wire_head(hit, *rep, now, d);
            assert!(head.is_some(), "a plain hit has a ready head");
        }
        (weight, raw, crate::test_alloc::held() - before)
    }

    /// A page's weight covers what it holds in RAM once served (measured
    /// before this test: 6.5 KB for a typical Django page's headers, where
    /// the tier counted 3.6 KB, and the tier overran its budget by the
    /// difference), without counting it twice over.
    #[test]
    fn a_served_page_holds_no_more_than_it_weighs() {
        let django: &[(&str, &str)] = &[
            ("content-type", "text/html; charset=utf-8"),
            ("cache-control", "max-age=600"),
            ("x-bigcache-ttl", "28d"),
            ("vary", "Accept-Encoding"),
            ("x-frame-options", "DENY"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "same-origin"),
            ("cross-origin-opener-policy", "same-origin"),
            ("content-language", "en"),
            ("last-modified", "Sat, 05 Dec 2026 10:00:00 GMT"),
            ("etag", "\"5f3c1a9e-4e20\""),
            ("date", "Sun, 06 Dec 2026 10:00:00 GMT"),
        ];
        let bare: &[(&str, &str)] = &[
            ("content-type", "text/html"),
            ("x-bigcache-ttl", "1h"),
            ("etag", "\"1\""),
        ];
        let csp = "default-src 'self'; script-src 'self' https://cdn.example.org \
            https://stats.example.org; style-src 'self' 'unsafe-inline'; img-src 'self' \
            data: https://tiles.example.org https://images.example.org; connect-src 'self' \
            https://api.example.org; frame-ancestors 'none'; base-uri 'self'";
        let long: &[(&str, &str)] = &[
            ("content-type", "text/html; charset=utf-8"),
            ("x-bigcache-ttl", "28d"),
            ("content-security-policy", csp),
            (
                "link",
                "</static/app.css>; rel=preload; as=style, </static/app.js>; rel=preload; as=script",
            ),
            ("etag", "\"5f3c1a9e-4e20\""),
        ];
        for headers in [django, bare, long] {
            for coded in [false, true] {
                let (weight, raw, held) = weighed_and_held(headers, coded);
                let extra = weight - raw;
                assert!(
                    extra >= held,
                    "{} fields, coded {coded}: weighs {weight} bytes, holds {raw} stored and {held} decoded",
                    headers.len()
                );
                // Covering a page held in both representations counts
                // an identity page up to 2.5 times what it holds.
                assert!(2 * extra <= 5 * held, "{extra} counted for {held} held");
            }
        }
    }

    /// A REST value of one byte, never expiring.
    fn one_byte_value() -> Record {
        Record {
            kind: super::super::record::Kind::Json,
            created_at: 0,
            expires_at: None,
            meta: Bytes::new(),
            body: Bytes::from_static(b"1"),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        }
    }

    #[test]
    fn a_tier_of_no_bytes_takes_nothing() {
        let hot = slice(0, Arc::new(Hotness::new(16)));
        let rec = one_byte_value();
        assert!(hot.is_off());
        hot.insert(Bytes::from_static(b"r/k"), rec);
        assert!(matches!(hot.read(b"r/k", 0), Read::Absent));
        assert_eq!(hot.len(), 0);
        assert!(!slice(1, Arc::new(Hotness::new(16))).is_off());
    }

    /// A read noted through the place kept with the page is the read the
    /// evictor asks the table about by key.
    #[test]
    fn a_hot_read_counts_for_the_evictor() {
        let hotness = Arc::new(Hotness::new(16));
        let hot = slice(1 << 20, hotness.clone());
        let rec = one_byte_value();
        for i in 0..64 {
            hot.insert(Bytes::from(format!("r/k{i}")), rec.clone());
        }
        for i in (0..64).step_by(2) {
            let read = hot.read(format!("r/k{i}").as_bytes(), 0);
            assert!(matches!(read, Read::Fresh(_)), "k{i} held");
        }
        for i in (0..64).step_by(2) {
            assert!(hotness.take(format!("r/k{i}").as_bytes()), "k{i}'s read");
        }
        let unread = (1..64)
            .step_by(2)
            .filter(|i| hotness.take(format!("r/k{i}").as_bytes()))
            .count();
        assert!(unread < 4, "{unread} unread keys counted as read");
    }

    #[test]
    fn a_page_is_admitted_on_its_second_cold_read() {
        let mut a = Admission::for_slice(&slice(1 << 20, Arc::new(Hotness::new(4))));
        assert!(!a.admit(b"p/a"));
        assert!(!a.admit(b"p/b"));
        assert!(a.admit(b"p/a"));
        assert!(!a.admit(b"p/a"), "counting starts over once admitted");
    }
}
