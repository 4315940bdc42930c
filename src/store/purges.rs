//! Which pages were purged since a given moment, so a page fetched before a
//! purge is never stored after it.
//!
//! A fill notes [`PurgeLog::now`] before asking the upstream, and its write
//! carries that number. The shard thread checks the log right before the
//! write, and a purge records itself here before its delete is queued to
//! that same thread, so either the purge's delete runs after the write (and
//! removes it) or the write sees the purge (and is dropped).
//!
//! The shard thread records the purge again as it deletes (each step of a
//! prefix or tag purge too). A write of a copy read before the delete, with
//! a number read after the purge began (a re-encoding offered at a hit
//! while a long tag purge walks), then sees that second record and is
//! dropped: it cannot bring the purged page back. Only purges of
//! the page in question (or of a prefix of it) count: busy sites purge all
//! the time, and unrelated purges must not stop other pages from caching.
//!
//! The log is bounded: when it fills, it forgets its entries and raises its
//! floor, and any fill begun before the floor is treated as purged (one
//! skipped store, never a stale copy).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

const MAX_KEYS: usize = 100_000;
const MAX_PREFIXES: usize = 1_000;
/// Bytes of keys and prefixes the log holds before it starts over: keys
/// are request targets (up to `--max-target-length` each, or a REST key),
/// so a count alone would not bound its memory.
const MAX_BYTES: usize = 8 << 20;
/// Per-entry bookkeeping counted beside the key's own bytes.
const ENTRY_OVERHEAD: usize = 48;

#[derive(Default)]
struct Log {
    seq: u64,
    floor: u64,
    keys: HashMap<Vec<u8>, u64>,
    prefixes: VecDeque<(Vec<u8>, u64)>,
    bytes: usize,
}

#[derive(Default)]
pub struct PurgeLog {
    // A std mutex: held for a map operation, never across an await.
    log: Mutex<Log>,
}

impl PurgeLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The current point in the purge sequence.
    pub fn now(&self) -> u64 {
        self.lock().seq
    }

    fn next(log: &mut Log) -> u64 {
        log.seq += 1;
        log.seq
    }

    fn forget_all(log: &mut Log) {
        log.keys.clear();
        log.prefixes.clear();
        log.bytes = 0;
        log.floor = log.seq;
    }

    /// Makes room for an entry of `len` bytes, starting over when the log
    /// is full by count (`full`) or by bytes.
    fn room(log: &mut Log, full: bool, len: usize) {
        if full || log.bytes + len + ENTRY_OVERHEAD > MAX_BYTES {
            Self::forget_all(log);
        }
        log.bytes += len + ENTRY_OVERHEAD;
    }

    pub fn key(&self, key: &[u8]) {
        let mut log = self.lock();
        let s = Self::next(&mut log);
        if let Some(seen) = log.keys.get_mut(key) {
            *seen = s;
            return;
        }
        let full = log.keys.len() >= MAX_KEYS;
        Self::room(&mut log, full, key.len());
        log.keys.insert(key.to_vec(), s);
    }

    pub fn prefix(&self, prefix: &[u8]) {
        let mut log = self.lock();
        let s = Self::next(&mut log);
        // Logged again by each step of its purge: one entry, the newest.
        if let Some(at) = log.prefixes.iter().position(|(p, _)| p == prefix)
            && let Some((p, _)) = log.prefixes.remove(at)
        {
            log.prefixes.push_back((p, s));
            return;
        }
        let full = log.prefixes.len() >= MAX_PREFIXES;
        Self::room(&mut log, full, prefix.len());
        log.prefixes.push_back((prefix.to_vec(), s));
    }

    /// Everything purged (`clear`).
    pub fn all(&self) {
        let mut log = self.lock();
        Self::next(&mut log);
        Self::forget_all(&mut log);
    }

    /// Whether `key` was purged after `since`. A purge of a page's path
    /// (`p<target> NUL`) covers every site's copy of it
    /// (`p<target> NUL @<site> NUL`).
    pub fn purged_since(&self, key: &[u8], since: u64) -> bool {
        let log = self.lock();
        let path = memchr::memchr(0, key).map_or(key, |nul| &key[..=nul]);
        since < log.floor
            || log.keys.get(key).is_some_and(|&s| s > since)
            || (path.len() < key.len() && log.keys.get(path).is_some_and(|&s| s > since))
            || log
                .prefixes
                .iter()
                .any(|(p, s)| *s > since && key.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_later_purges_of_the_key_or_a_prefix_count() {
        let log = PurgeLog::default();
        log.key(b"p/a\0");
        let t = log.now();
        assert!(!log.purged_since(b"p/a\0", t));
        log.key(b"p/other\0");
        log.prefix(b"p/elsewhere/");
        assert!(!log.purged_since(b"p/a\0", t));
        log.prefix(b"p/a");
        assert!(log.purged_since(b"p/a\0", t));
        assert!(log.purged_since(b"p/ab\0", t));
        log.key(b"p/s\0");
        assert!(
            log.purged_since(b"p/s\0@https://example.org\0", t),
            "another site's copy"
        );
        assert!(!log.purged_since(b"p/s2\0", t));
        let t2 = log.now();
        assert!(!log.purged_since(b"p/a\0", t2));
        log.key(b"p/a\0");
        assert!(log.purged_since(b"p/a\0", t2));
    }

    #[test]
    fn clear_and_overflow_purge_everything_older() {
        let log = PurgeLog::default();
        let t = log.now();
        log.all();
        assert!(log.purged_since(b"p/x\0", t));
        assert!(!log.purged_since(b"p/x\0", log.now()));
        let t = log.now();
        for i in 0..MAX_KEYS + 1 {
            log.key(format!("p/{i}").as_bytes());
        }
        assert!(
            log.purged_since(b"p/never\0", t),
            "fills older than the floor count as purged"
        );
    }

    #[test]
    fn long_keys_are_bounded_in_bytes_not_only_in_count() {
        let log = PurgeLog::default();
        for i in 0..5_000u32 {
            let mut k = vec![b'p'; 8 << 10];
            k.extend_from_slice(&i.to_be_bytes());
            log.key(&k);
            let l = log.lock();
            assert!(l.bytes <= MAX_BYTES);
            assert!(
                l.keys
                    .keys()
                    .map(|k| k.len() + ENTRY_OVERHEAD)
                    .sum::<usize>()
                    <= MAX_BYTES
            );
        }
        let t = log.now();
        log.key(b"p/x\0");
        assert!(
            log.purged_since(b"p/x\0", t),
            "still exact after starting over"
        );
    }
}
