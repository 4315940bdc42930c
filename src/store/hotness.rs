//! Which entries were read since they were last looked at by the evictor:
//! the one thing disk-budget eviction needs to know about popularity.
//!
//! A fixed table of small saturating counters indexed by a hash of the
//! key, in the spirit of S3-FIFO's per-object frequency bits, but without
//! any per-key RAM: its size never grows with the number of stored pages.
//! A read bumps the key's counter (a relaxed atomic, no write to disk,
//! no lock); when the evictor reaches an entry in the oldest blob file, a
//! non-zero counter buys it one more trip through the FIFO (and is
//! decremented), a zero counter means it goes. Keys that share a slot
//! share a counter: a cold key next to a hot one is sometimes kept one
//! round too long, which costs a little space and never correctness.
//!
//! Slots are picked by SipHash under a random key, saved with the table:
//! with an unkeyed hash a client could request keys made to share a
//! chosen page's slots, spending its reads so it is evicted.
//!
//! The table is saved at shutdown and loaded at start (`docs/format.md`,
//! "Hotness table"), so what was learned survives a restart; a missing or
//! damaged file just starts cold.

use std::hash::{BuildHasher, Hasher};
use std::io::{self, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};

use siphasher::sip::SipHasher13;

/// Reads that buy at most this many trips through the FIFO.
const MAX: u8 = 3;
const MAGIC: &[u8; 8] = b"bchot\0\0\x02";

pub struct Hotness {
    slots: Box<[AtomicU8]>,
    bits: u32,
    /// The hash key: random, or the saved table's (loaded before any
    /// read or eviction uses it).
    key: [AtomicU64; 2],
    /// S3-FIFO's ghost queue: fingerprints of keys evicted from the small
    /// queue unread, so one written again soon after goes straight to the
    /// main queue. A slot holds one fingerprint; a newer eviction
    /// overwrites it (the oldest ghosts fade first, roughly).
    ghosts: Box<[AtomicU32]>,
}

/// Magic, bits and the hash key, before the counters.
const HEADER: usize = 8 + 4 + 16;

/// Ghost slots: 4 MiB, whatever the number of pages.
const GHOST_BITS: u32 = 20;

impl Hotness {
    /// A table of `2^bits` counters (one byte each).
    pub fn new(bits: u32) -> Hotness {
        let bits = bits.clamp(4, 30);
        // `RandomState` is keyed from the OS's randomness; what it hashes
        // to is unpredictable without that key.
        let random = |n: u8| std::collections::hash_map::RandomState::new().hash_one(n);
        Hotness {
            slots: (0..1usize << bits).map(|_| AtomicU8::new(0)).collect(),
            bits,
            key: [AtomicU64::new(random(0)), AtomicU64::new(random(1))],
            ghosts: (0..1usize << GHOST_BITS)
                .map(|_| AtomicU32::new(0))
                .collect(),
        }
    }

    /// The keyed hash of `key`, `salt` telling the ghost table from the
    /// counters.
    fn hash(&self, salt: u8, key: &[u8]) -> u64 {
        let mut h =
            SipHasher13::new_with_keys(self.key[0].load(Relaxed), self.key[1].load(Relaxed));
        h.write_u8(salt);
        h.write(key);
        h.finish()
    }

    fn ghost(&self, key: &[u8]) -> (&AtomicU32, u32) {
        let h = self.hash(1, key);
        let slot = &self.ghosts[(h >> (64 - GHOST_BITS)) as usize];
        // Never 0, which marks an empty slot.
        (slot, (h as u32) | 1)
    }

    /// Notes that `key` was evicted from the small queue without a read.
    pub fn evicted(&self, key: &[u8]) {
        let (slot, print) = self.ghost(key);
        slot.store(print, Relaxed);
    }

    /// Whether `key` was evicted unread lately; forgets it if so.
    pub fn was_evicted(&self, key: &[u8]) -> bool {
        let (slot, print) = self.ghost(key);
        slot.compare_exchange(print, 0, Relaxed, Relaxed).is_ok()
    }

    fn slot(&self, key: &[u8]) -> &AtomicU8 {
        &self.slots[self.slot_of(key)]
    }

    /// Where `key`'s counter is: the same for the table's life (its hash
    /// key is loaded before any read), so a holder of the key may keep it
    /// (`store::hot`).
    pub fn slot_of(&self, key: &[u8]) -> usize {
        (self.hash(0, key) >> (64 - self.bits)) as usize
    }

    /// Notes a read of `key`.
    pub fn touch(&self, key: &[u8]) {
        self.touch_at(self.slot_of(key));
    }

    /// Notes a read of the key whose counter is at `slot` ([`Self::slot_of`]).
    pub fn touch_at(&self, slot: usize) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let n = s.load(Relaxed);
        if n < MAX {
            s.store(n + 1, Relaxed);
        }
    }

    /// Whether `key` was read since the evictor last asked; spends one
    /// read if so.
    pub fn take(&self, key: &[u8]) -> bool {
        let s = self.slot(key);
        let n = s.load(Relaxed);
        if n > 0 {
            s.store(n - 1, Relaxed);
        }
        n > 0
    }

    /// Writes the table to `path` (through a temporary file, so a crash
    /// mid-write leaves the old one or none).
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let tmp = path.with_extension("tmp");
        let mut f = std::fs::File::create(&tmp)?;
        let table: Vec<u8> = self.slots.iter().map(|s| s.load(Relaxed)).collect();
        // Mostly zeros: snappy makes 4 MiB a few KiB.
        let packed = snap::raw::Encoder::new()
            .compress_vec(&table)
            .map_err(io::Error::other)?;
        let mut out = Vec::with_capacity(packed.len() + 16);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.bits.to_le_bytes());
        for k in &self.key {
            out.extend_from_slice(&k.load(Relaxed).to_le_bytes());
        }
        out.extend_from_slice(&packed);
        out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
        f.write_all(&out)?;
        drop(f);
        std::fs::rename(tmp, path)
    }

    /// Loads a table [`save`](Hotness::save) wrote, if it is intact and of
    /// this size; otherwise the counters stay as they are.
    pub fn load(&self, path: &Path) -> io::Result<bool> {
        let mut raw = Vec::new();
        match std::fs::File::open(path) {
            Ok(mut f) => f.read_to_end(&mut raw)?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e),
        };
        // Version 1 (unkeyed CRC-32 slots) is not read: its counters
        // belong to other slots.
        if raw.len() < HEADER + 4 || &raw[..8] != MAGIC {
            return Ok(false);
        }
        let (body, crc) = raw.split_at(raw.len() - 4);
        if body[8..12] != self.bits.to_le_bytes() || crc32fast::hash(body).to_le_bytes() != crc {
            return Ok(false);
        }
        let word = |at: usize| body[at..at + 8].try_into().map(u64::from_le_bytes);
        let (Ok(k0), Ok(k1)) = (word(12), word(20)) else {
            return Ok(false);
        };
        let packed = &body[HEADER..];
        let n = self.slots.len();
        let mut decoder = snap::raw::Decoder::new();
        let table = match snap::raw::decompress_len(packed) {
            Ok(len) if len == n => decoder.decompress_vec(packed),
            _ => return Ok(false),
        };
        let Ok(table) = table else {
            return Ok(false);
        };
        self.key[0].store(k0, Relaxed);
        self.key[1].store(k1, Relaxed);
        for (s, &v) in self.slots.iter().zip(&table) {
            s.store(v.min(MAX), Relaxed);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_buy_trips_up_to_a_cap() {
        let h = Hotness::new(16);
        assert!(!h.take(b"pa\0"), "never read");
        for _ in 0..10 {
            h.touch(b"pa\0");
        }
        assert!((0..MAX).all(|_| h.take(b"pa\0")));
        assert!(!h.take(b"pa\0"), "more than {MAX} trips");
    }

    #[test]
    fn a_ghost_is_seen_once() {
        let h = Hotness::new(8);
        assert!(!h.was_evicted(b"pa\0"));
        h.evicted(b"pa\0");
        assert!(!h.was_evicted(b"pb\0"));
        assert!(h.was_evicted(b"pa\0"));
        assert!(!h.was_evicted(b"pa\0"), "forgotten once seen");
    }

    /// Slots come from a random key: which keys share a page's slot is
    /// not something a client can work out.
    #[test]
    fn slots_are_keyed_per_table() {
        let (a, b) = (Hotness::new(20), Hotness::new(20));
        let differ = (0..64)
            .map(|i| format!("p/page/{i}\0").into_bytes())
            .filter(|k| {
                let at =
                    |h: &Hotness| h.slot(k) as *const AtomicU8 as usize - h.slots.as_ptr() as usize;
                at(&a) != at(&b)
            })
            .count();
        assert!(differ > 60, "only {differ} of 64 keys moved");
    }

    #[test]
    fn the_table_survives_a_restart_and_a_damaged_one_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hotness");
        let h = Hotness::new(12);
        h.touch(b"pa\0");
        h.save(&path).unwrap();
        let again = Hotness::new(12);
        assert!(again.load(&path).unwrap());
        assert!(again.take(b"pa\0"));
        assert!(!again.take(b"pa\0"));
        assert_eq!(
            again.slot(b"pb\0") as *const _ as usize - again.slots.as_ptr() as usize,
            h.slot(b"pb\0") as *const _ as usize - h.slots.as_ptr() as usize,
            "the saved key picks the same slots"
        );
        // Another size, or a flipped byte: starts cold.
        assert!(!Hotness::new(13).load(&path).unwrap());
        let mut raw = std::fs::read(&path).unwrap();
        assert!(
            raw.len() < 1024,
            "{} bytes for a near-empty table",
            raw.len()
        );
        raw[14] ^= 1;
        std::fs::write(&path, raw).unwrap();
        assert!(!Hotness::new(12).load(&path).unwrap());
    }
}
