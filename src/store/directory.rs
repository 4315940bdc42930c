//! The directory: where every entry of one shard lives, in RAM. It is the
//! store's answer to "does this key hold a value?", so no decision waits on
//! rusty-leveldb's point read, which can call a live key absent
//! (`db::get_exact`).
//!
//! One 16-byte slot per entry (record key in the `v` or `p` namespace): a
//! 32-bit fingerprint of the key, and its place, a blob entry (file,
//! offset, length) or "in LevelDB" (inline bodies and Vary groups). Keys
//! are not kept: a key whose fingerprint has no slot is absent, exactly;
//! one whose fingerprint has a slot is confirmed against the key stored
//! with the entry before anything is decided on it (a record read from
//! LevelDB, or the key in a blob entry), since two keys can share a
//! fingerprint. Anchors: Apache Traffic Server's cache directory and
//! Bitcask's keydir.
//!
//! Only the shard thread changes it: after each batch is written, from the
//! old and new place of every key the batch changed (`Tx`). Readers on any
//! thread look up under a read lock of one of [`SEGMENTS`] segments, so a
//! segment that doubles holds up only the readers of that segment.
//!
//! It is built at every start from LevelDB's iterator (correct in the
//! crate), a step at a time between commands (`shard::build`); until then
//! [`Directory::ready`] is false and every lookup goes to LevelDB as it
//! did before there was a directory.

use std::collections::HashMap;
use std::hash::Hasher;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

use siphasher::sip::SipHasher13;

use super::record::BlobRef;

/// Segments per shard's directory: a power of two.
pub const SEGMENTS: usize = 256;
/// Slots a segment starts with.
const FIRST_SLOTS: usize = 8;
/// A segment grows before more than this share (in percent) of its slots
/// is used, by a quarter: so between 68% and 85% of the slots are in use,
/// 19 to 24 bytes per entry, and a miss probes about 20 slots (five cache
/// lines) at worst.
const MAX_LOAD_PERCENT: usize = 85;

/// Where an entry's record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In LevelDB, body inline (or a Vary group's list).
    Db,
    /// In blob file `file`, in the entry at `offset` of `len` bytes
    /// (header, key and stored bytes). `whole`: the entry holds the record
    /// as LevelDB has it, so reading the entry alone answers a lookup.
    Blob {
        file: u32,
        offset: u32,
        len: u32,
        whole: bool,
    },
}

/// Longest entry length a slot holds (its top bit is `whole`).
const LEN_MAX: u32 = u32::MAX >> 1;
const WHOLE: u32 = 1 << 31;

impl Place {
    /// The place of a record whose body is at `blob` (inline if `None`),
    /// stored under a key of `key_len` bytes. Its entry holds the record
    /// as it is exactly when the blob file is of format 2 (`legacy` says
    /// it is not) and the record is not soft-purged: every write of a
    /// record with a body appends a new entry holding it, except a soft
    /// purge, which only marks the record in LevelDB.
    pub fn of(blob: Option<&BlobRef>, stale: bool, key_len: usize, legacy: bool) -> Place {
        match blob {
            // Blob files stop taking appends at 64 MiB (`blobs::FILE_MAX`),
            // so an entry starts below 4 GiB; a length past 2 GiB (a body
            // past `--max-body-size`'s useful range) saturates, which only
            // skews the collector's estimate of a file's live share (such
            // an entry is never read through the directory: see
            // `Place::whole_entry`).
            Some(b) => Place::Blob {
                file: b.file,
                offset: u32::try_from(b.offset).unwrap_or(u32::MAX),
                len: u32::try_from(b.entry_len(key_len))
                    .unwrap_or(LEN_MAX)
                    .min(LEN_MAX),
                whole: !stale && !legacy,
            },
            None => Place::Db,
        }
    }

    /// The entry to read for a lookup that needs nothing else: (file,
    /// offset, length), when the place is a whole entry of a length the
    /// slot holds exactly.
    pub fn whole_entry(&self) -> Option<(u32, u64, usize)> {
        match *self {
            Place::Blob {
                file,
                offset,
                len,
                whole: true,
            } if len < LEN_MAX => Some((file, u64::from(offset), len as usize)),
            _ => None,
        }
    }
}

/// A slot: `fp == 0` is empty; `file == 0` is [`Place::Db`] (blob file
/// ids start at 1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Slot {
    fp: u32,
    file: u32,
    offset: u32,
    len: u32,
}

impl Slot {
    fn new(fp: u32, place: Place) -> Slot {
        match place {
            Place::Db => Slot {
                fp,
                file: 0,
                offset: 0,
                len: 0,
            },
            Place::Blob {
                file,
                offset,
                len,
                whole,
            } => Slot {
                fp,
                file,
                offset,
                len: len.min(LEN_MAX) | if whole { WHOLE } else { 0 },
            },
        }
    }

    fn place(&self) -> Place {
        match self.file {
            0 => Place::Db,
            file => Place::Blob {
                file,
                offset: self.offset,
                len: self.len & LEN_MAX,
                whole: self.len & WHOLE != 0,
            },
        }
    }
}

/// One segment: open addressing with linear probing. A slot's home is its
/// fingerprint scaled to the table's size, so a slot can be moved (on
/// growth and on backward-shift deletion) without the key, and the table
/// can grow by a quarter rather than double.
#[derive(Default)]
struct Table {
    slots: Vec<Slot>,
    len: usize,
}

impl Table {
    fn home(&self, fp: u32) -> usize {
        ((u64::from(fp) * self.slots.len() as u64) >> 32) as usize
    }

    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() { 0 } else { i + 1 }
    }

    fn insert(&mut self, slot: Slot) {
        if self.slots.is_empty() {
            self.slots = vec![Slot::default(); FIRST_SLOTS];
        } else if (self.len + 1) * 100 > self.slots.len() * MAX_LOAD_PERCENT {
            let n = self.slots.len();
            let grown = vec![Slot::default(); n + n / 4];
            let old = std::mem::replace(&mut self.slots, grown);
            for s in old.into_iter().filter(|s| s.fp != 0) {
                self.place_slot(s);
            }
        }
        self.place_slot(slot);
        self.len += 1;
    }

    fn place_slot(&mut self, slot: Slot) {
        let mut i = self.home(slot.fp);
        while self.slots[i].fp != 0 {
            i = self.next(i);
        }
        self.slots[i] = slot;
    }

    /// Every slot with fingerprint `fp`, in probe order.
    fn with_fp(&self, fp: u32) -> impl Iterator<Item = (usize, &Slot)> {
        let n = self.slots.len();
        let start = if n == 0 { 0 } else { self.home(fp) };
        (0..n)
            .map(move |step| (start + step) % n)
            .map(|i| (i, &self.slots[i]))
            .take_while(|(_, s)| s.fp != 0)
            .filter(move |(_, s)| s.fp == fp)
    }

    /// Removes the slot equal to `slot`; whether there was one.
    fn remove(&mut self, slot: Slot) -> bool {
        let Some(mut hole) = self
            .with_fp(slot.fp)
            .find(|(_, s)| **s == slot)
            .map(|(i, _)| i)
        else {
            return false;
        };
        // Backward shift: each following slot of the run moves into the
        // hole if its home is not between the hole and itself.
        let n = self.slots.len();
        let mut i = self.next(hole);
        while self.slots[i].fp != 0 {
            let home = self.home(self.slots[i].fp);
            let dist_home = (i + n - home) % n;
            let dist_hole = (i + n - hole) % n;
            if dist_home >= dist_hole {
                self.slots[hole] = self.slots[i];
                hole = i;
            }
            i = self.next(i);
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        true
    }
}

/// The places a key's fingerprint has: at most two are kept (more than
/// one is already a coincidence of 2^-38 per pair of keys).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Places {
    found: [Option<Place>; 2],
    /// More than two slots share the fingerprint.
    pub more: bool,
}

impl Places {
    /// No entry has this key: exact.
    pub fn is_empty(&self) -> bool {
        self.found[0].is_none()
    }

    pub fn iter(&self) -> impl Iterator<Item = Place> + '_ {
        self.found.iter().flatten().copied()
    }
}

/// Slots and their bytes per blob file.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileUse {
    pub entries: u64,
    pub bytes: u64,
}

/// One shard's directory (see the module documentation).
pub struct Directory {
    segments: Box<[RwLock<Table>]>,
    keys: [u64; 2],
    /// Built and kept: lookups are exact.
    ready: AtomicBool,
    /// Bumped whenever the directory stops being trusted or is emptied,
    /// so a reader can tell its lookup raced with that ([`Directory::lookup`]).
    epoch: AtomicU64,
    entries: AtomicU64,
    files: Mutex<HashMap<u32, FileUse>>,
    /// Live blob bytes in all, and those of REST values (the `v`
    /// namespace), for the budget's classes (`shard::evict`).
    blob_bytes: AtomicU64,
    value_bytes: AtomicU64,
    #[cfg(test)]
    hash: Option<fn(&[u8]) -> u64>,
}

/// What a change does to the directory: `key` was at `old` and is now at
/// `new` (`None`: absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub key: Vec<u8>,
    pub old: Option<Place>,
    pub new: Option<Place>,
}

impl Default for Directory {
    fn default() -> Self {
        Directory::new()
    }
}

impl Directory {
    /// An empty directory, not ready, under a random hash key (it lives
    /// only as long as the process, so no client can aim keys at one
    /// segment's probe runs).
    pub fn new() -> Directory {
        let mut keys = [0u64; 2];
        for k in &mut keys {
            *k = std::hash::BuildHasher::hash_one(
                &std::collections::hash_map::RandomState::new(),
                0u8,
            );
        }
        Directory {
            segments: (0..SEGMENTS).map(|_| RwLock::default()).collect(),
            keys,
            ready: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            entries: AtomicU64::new(0),
            files: Mutex::default(),
            blob_bytes: AtomicU64::new(0),
            value_bytes: AtomicU64::new(0),
            #[cfg(test)]
            hash: None,
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        #[cfg(test)]
        if let Some(h) = self.hash {
            return h(key);
        }
        let mut h = SipHasher13::new_with_keys(self.keys[0], self.keys[1]);
        h.write(key);
        h.finish()
    }

    /// The segment and fingerprint of `key`: 38 bits that tell keys apart.
    fn locate(&self, key: &[u8]) -> (&RwLock<Table>, u32) {
        let h = self.hash(key);
        let fp = (h as u32).max(1);
        (&self.segments[(h >> 32) as usize % SEGMENTS], fp)
    }

    /// Whether lookups are exact (the directory is built and kept).
    pub fn ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    pub fn set_ready(&self, ready: bool) {
        if !ready {
            self.epoch.fetch_add(1, Ordering::AcqRel);
        }
        self.ready.store(ready, Ordering::Release);
    }

    /// The places `key`'s fingerprint has, for a reader on any thread:
    /// `None` unless the directory was ready, and neither emptied nor
    /// distrusted, for the whole lookup (an empty answer is then exact).
    pub fn lookup(&self, key: &[u8]) -> Option<Places> {
        let epoch = self.epoch.load(Ordering::Acquire);
        if !self.ready() {
            return None;
        }
        let places = self.places(key);
        (self.epoch.load(Ordering::Acquire) == epoch && self.ready()).then_some(places)
    }

    /// The places `key`'s fingerprint has. Empty means absent only once
    /// [`Directory::ready`].
    pub fn places(&self, key: &[u8]) -> Places {
        let (seg, fp) = self.locate(key);
        let table = seg.read().unwrap_or_else(|e| e.into_inner());
        let mut out = Places {
            found: [None; 2],
            more: false,
        };
        if table.slots.is_empty() {
            return out;
        }
        for (n, (_, s)) in table.with_fp(fp).enumerate() {
            if n == out.found.len() {
                out.more = true;
                break;
            }
            out.found[n] = Some(s.place());
        }
        out
    }

    /// Whether `key` may hold a value: false is exact once ready; true
    /// must be confirmed against the key stored with the entry.
    pub fn may_hold(&self, key: &[u8]) -> bool {
        !self.ready() || !self.places(key).is_empty()
    }

    /// Whether a slot of `key`'s fingerprint is at `place`: for a blob
    /// entry whose stored key is `key`, whether it is that key's current
    /// value (exact once ready).
    pub fn holds(&self, key: &[u8], place: Place) -> bool {
        let (seg, fp) = self.locate(key);
        let table = seg.read().unwrap_or_else(|e| e.into_inner());
        let want = Slot::new(fp, place);
        !table.slots.is_empty() && table.with_fp(fp).any(|(_, s)| *s == want)
    }

    pub fn insert(&self, key: &[u8], place: Place) {
        let (seg, fp) = self.locate(key);
        seg.write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(Slot::new(fp, place));
        self.entries.fetch_add(1, Ordering::Relaxed);
        self.count_file(key, place, true);
    }

    /// Removes `key`'s slot at `place`; whether it was there.
    pub fn remove(&self, key: &[u8], place: Place) -> bool {
        let (seg, fp) = self.locate(key);
        let removed = seg
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(Slot::new(fp, place));
        if removed {
            self.entries.fetch_sub(1, Ordering::Relaxed);
            self.count_file(key, place, false);
        }
        removed
    }

    /// Applies the changes of a written batch.
    pub fn apply(&self, changes: &[Change]) {
        for c in changes {
            if c.old == c.new {
                continue;
            }
            if let Some(old) = c.old {
                self.remove(&c.key, old);
            }
            if let Some(new) = c.new {
                self.insert(&c.key, new);
            }
        }
    }

    fn count_file(&self, key: &[u8], place: Place, added: bool) {
        let Place::Blob { file, len, .. } = place else {
            return;
        };
        let value = key.first() == Some(&super::keys::Namespace::Value.tag());
        for (counter, counts) in [(&self.blob_bytes, true), (&self.value_bytes, value)] {
            if counts && added {
                counter.fetch_add(u64::from(len), Ordering::Relaxed);
            } else if counts {
                counter.fetch_sub(
                    u64::from(len).min(counter.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
            }
        }
        let mut files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        let u = files.entry(file).or_default();
        if added {
            u.entries += 1;
            u.bytes += u64::from(len);
        } else {
            u.entries = u.entries.saturating_sub(1);
            u.bytes = u.bytes.saturating_sub(u64::from(len));
            if u.entries == 0 {
                files.remove(&file);
            }
        }
    }

    /// What blob file `id` holds that is live (exact once ready).
    pub fn file_use(&self, id: u32) -> FileUse {
        let files = self.files.lock().unwrap_or_else(|e| e.into_inner());
        files.get(&id).copied().unwrap_or_default()
    }

    /// Empties it; `ready` is left as it was (an emptied shard is known
    /// to be empty).
    pub fn clear(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        for seg in self.segments.iter() {
            *seg.write().unwrap_or_else(|e| e.into_inner()) = Table::default();
        }
        self.entries.store(0, Ordering::Relaxed);
        self.blob_bytes.store(0, Ordering::Relaxed);
        self.value_bytes.store(0, Ordering::Relaxed);
        self.files.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Live blob bytes: (all, REST values').
    pub fn blob_bytes(&self) -> (u64, u64) {
        (
            self.blob_bytes.load(Ordering::Relaxed),
            self.value_bytes.load(Ordering::Relaxed),
        )
    }

    /// Entries held.
    pub fn len(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    /// Bytes of RAM its slots take.
    pub fn slot_bytes(&self) -> u64 {
        self.segments
            .iter()
            .map(|s| s.read().unwrap_or_else(|e| e.into_inner()).slots.len())
            .sum::<usize>() as u64
            * std::mem::size_of::<Slot>() as u64
    }

    #[cfg(test)]
    pub fn with_hash(hash: fn(&[u8]) -> u64) -> Directory {
        Directory {
            hash: Some(hash),
            ..Directory::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blob(file: u32, offset: u32) -> Place {
        Place::Blob {
            file,
            offset,
            len: 100,
            whole: offset.is_multiple_of(2),
        }
    }

    #[test]
    fn a_slot_is_sixteen_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 16);
    }

    #[test]
    fn what_was_inserted_is_found_and_what_was_removed_is_gone() {
        let d = Directory::new();
        d.set_ready(true);
        for i in 0..10_000u32 {
            d.insert(format!("pk{i}").as_bytes(), blob(1 + i % 7, i));
        }
        assert_eq!(d.len(), 10_000);
        // Between 68% and 85% of the slots in use (segments this small
        // round up a little).
        let per_entry = d.slot_bytes() as f64 / d.len() as f64;
        assert!(
            (18.0..26.0).contains(&per_entry),
            "{per_entry} bytes per entry"
        );
        for i in 0..10_000u32 {
            let k = format!("pk{i}");
            assert!(d.holds(k.as_bytes(), blob(1 + i % 7, i)), "{k}");
            if i % 2 == 0 {
                assert!(d.remove(k.as_bytes(), blob(1 + i % 7, i)));
            }
        }
        for i in 0..10_000u32 {
            let k = format!("pk{i}");
            assert_eq!(d.places(k.as_bytes()).is_empty(), i % 2 == 0, "{k}");
            assert_eq!(d.may_hold(k.as_bytes()), i % 2 == 1);
        }
        assert!(!d.may_hold(b"never"));
        assert_eq!(d.len(), 5_000);
        let per_file: u64 = (1..=7).map(|f| d.file_use(f).entries).sum();
        assert_eq!(per_file, 5_000);
        assert_eq!(d.file_use(1).bytes, d.file_use(1).entries * 100);
    }

    /// Every key lands on one of 4 fingerprints of one segment: probe runs
    /// wrap around, deletions shift slots back across them, and keys that
    /// share a fingerprint keep apart by place.
    #[test]
    fn colliding_fingerprints_keep_every_place_apart() {
        let d = Directory::with_hash(|k| u64::from(k.last().copied().unwrap_or(0) % 4) + 7);
        let key = |i: u32| format!("k{i}{}", (i % 4) as u8 as char).into_bytes();
        let mut model: Vec<(Vec<u8>, Place)> = Vec::new();
        for i in 0..300u32 {
            let p = if i % 5 == 0 { Place::Db } else { blob(2, i) };
            d.insert(&key(i), p);
            model.push((key(i), p));
            if i % 3 == 0 {
                let (k, p) = model.remove((i as usize * 7) % model.len());
                assert!(d.remove(&k, p));
                assert!(!d.remove(&k, blob(9, 9)), "no such place");
            }
        }
        for (k, p) in &model {
            assert!(d.holds(k, *p));
        }
        assert_eq!(d.len(), model.len() as u64);
        let places = d.places(&key(1));
        assert!(places.more, "dozens share each fingerprint");
    }

    #[test]
    fn apply_moves_a_key_and_ignores_what_did_not_change() {
        let d = Directory::new();
        d.apply(&[Change {
            key: b"a".to_vec(),
            old: None,
            new: Some(blob(1, 8)),
        }]);
        d.apply(&[
            Change {
                key: b"a".to_vec(),
                old: Some(blob(1, 8)),
                new: Some(blob(2, 8)),
            },
            Change {
                key: b"b".to_vec(),
                old: Some(Place::Db),
                new: Some(Place::Db),
            },
        ]);
        assert!(d.holds(b"a", blob(2, 8)));
        assert!(!d.holds(b"a", blob(1, 8)));
        assert_eq!(d.file_use(1), FileUse::default());
        assert_eq!(d.file_use(2).entries, 1);
        assert!(!d.holds(b"b", Place::Db));
        d.clear();
        assert_eq!(d.len(), 0);
        assert_eq!(d.file_use(2), FileUse::default());
    }
}
