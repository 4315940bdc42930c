//! The blob space of one shard: its blob files, how many bytes of each are
//! still referenced, and the collector that gives dead space back.
//!
//! Live bytes per file are kept in LevelDB (the `b` rows, docs/format.md),
//! written in the same batch as the references they count ([`Tx`]), and
//! cached here. The collector works from them without reading the files:
//! files with no live bytes are deleted, files under half live have their
//! live entries copied to the active file first, a bounded step at a time
//! between requests.

use std::collections::HashMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;

pub use super::blobs::Queue;
use super::blobs::{Blobs, LoadError};
use super::db::Db;
use super::directory::Directory;
use super::entry::{FILE_MAGIC, Section};
use super::error::StoreError;
use super::keys;
use super::lookup::Lookup;
use super::record::{BlobRef, Record, Stored};
use super::tx::Tx;

/// The small queue's share of a shard's blob bytes (S3-FIFO's 10%): past
/// it, eviction walks the small queue.
const SMALL_SHARE: f64 = 0.1;
/// A blob file is collected once less than this share of it is live.
const COLLECT_BELOW: f64 = 0.5;
/// Dead bytes the active file must hold before it is rolled to be
/// collected: below this, collecting costs more than it frees.
const ACTIVE_DEAD_MIN: u64 = 8 << 20;

pub struct BlobSpace {
    index: usize,
    dir: PathBuf,
    blobs: Blobs,
    /// Live bytes per blob file: a cache of the `b` rows.
    live: HashMap<u32, u64>,
    /// The blob file being collected and the offset reached.
    collecting: Option<(u32, u64)>,
    /// The blob file being evicted and the offset reached.
    evicting: Option<(u32, u64)>,
    /// Failed reads per file while walking it.
    walk_failures: HashMap<u32, u32>,
    /// Where every entry is: once ready, the exact live bytes of each file.
    directory: Arc<Directory>,
}

/// Keys one [`BlobSpace::dead_files`] call checks, at most: about a
/// second of the shard thread.
const DEAD_CHECK_KEYS: usize = 50_000;

/// What [`BlobSpace::dead_files`] found.
#[derive(Debug, Default)]
pub struct Dead {
    /// Files nothing points into: to delete.
    pub files: Vec<u32>,
    /// Files counted empty that are not, with their live bytes: counts to
    /// write.
    pub recounted: Vec<(u32, u64)>,
    /// Files left unchecked for a later call.
    pub more: bool,
}

/// The owner of an entry met at `at` in blob file `id`, with its blob
/// reference, when it still points there: only then is the entry live.
fn pointing_at(owner: Option<Stored>, id: u32, at: u64) -> Option<(Stored, BlobRef)> {
    let blob = owner.as_ref()?.blob?;
    (blob.file == id && blob.offset == at).then_some((owner?, blob))
}

/// Walks of a file that fail on I/O before the file is given up on.
const WALK_TRIES: u32 = 3;

/// A live entry met while walking a file.
struct Live {
    key: Vec<u8>,
    stored: Vec<u8>,
    /// Its file's format (`store::entry`).
    version: u8,
    owner: Stored,
    blob: BlobRef,
}

/// What one eviction step did.
#[derive(Debug)]
pub struct Evicting {
    pub step: Step,
    /// The queue of the file walked.
    pub from: Queue,
    /// Entries read since they were written, copied to the tail.
    pub reinserted: u64,
    /// Their bytes: what the step wrote again.
    pub copied: u64,
    /// The other live entries met, with their records, for the shard to
    /// delete.
    pub dropped: Vec<(Vec<u8>, Stored)>,
}

/// What one collection step staged. Its progress counts only once its
/// batch is written ([`BlobSpace::reached`]): a step whose batch failed is
/// walked again, or the file could be dropped while records still point
/// into it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing is worth collecting.
    Idle,
    /// File `file` was walked up to `offset`; more steps follow.
    Partial { file: u32, offset: u64 },
    /// File `id` was walked to its end: once the step's batch is written,
    /// nothing references it.
    Walked(u32),
}

impl BlobSpace {
    /// Opens the blob files in `dir`; a file takes appends up to
    /// `file_max` bytes.
    pub fn open(
        index: usize,
        dir: PathBuf,
        file_max: u64,
        directory: Arc<Directory>,
    ) -> io::Result<BlobSpace> {
        Ok(BlobSpace {
            directory,
            index,
            blobs: Blobs::open(dir.clone(), file_max)?,
            dir,
            live: HashMap::new(),
            collecting: None,
            evicting: None,
            walk_failures: HashMap::new(),
        })
    }

    /// Starts over on fresh files, after the shard's directory was replaced
    /// (the old blob files went with it).
    pub fn reset(&mut self) -> io::Result<()> {
        let next = self.blobs.next_id();
        self.blobs = Blobs::open(self.dir.clone(), self.blobs.file_max())?;
        // Never an id used before in this process: a reader holding a
        // place in an old file must not find a new file under its name.
        self.blobs.skip_to(next);
        self.forget_counts();
        Ok(())
    }

    /// See [`Blobs::sync`].
    pub fn sync(&mut self) -> io::Result<()> {
        self.blobs.sync()
    }

    /// Drops cached counts and collector progress (after a panic inside
    /// LevelDB, they are re-read from the `b` rows).
    pub fn forget_counts(&mut self) {
        self.live.clear();
        self.collecting = None;
        self.evicting = None;
    }

    /// Appends `key`'s entry, holding `record` and its body, to the active
    /// file of queue `q`.
    pub fn append(&mut self, q: Queue, key: &[u8], record: &Record) -> io::Result<BlobRef> {
        self.blobs.append_to(q, key, record, &record.body)
    }

    /// The body `key`'s record keeps at `blob`.
    pub fn read_body(
        &mut self,
        key: &[u8],
        blob: &BlobRef,
    ) -> Result<Bytes, super::blobs::BlobError> {
        self.blobs.reader().read(key, blob)
    }

    /// The blob files of format 1 (their entries hold no record).
    pub fn legacy(&self) -> Arc<std::collections::HashSet<u32>> {
        self.blobs.legacy()
    }

    /// Decodes a LevelDB value and loads its body (see `BlobReader::load`).
    pub fn load(&mut self, key: &[u8], raw: &Bytes, now: u64) -> Result<Lookup, LoadError> {
        self.blobs.reader().load(key, raw, now)
    }

    /// Live bytes of blob file `id`: the directory's count once it is
    /// ready, else the file's `b` row (read exactly).
    pub fn live_of(&mut self, db: &mut Db, id: u32) -> Result<u64, StoreError> {
        if self.directory.ready() {
            return Ok(self.directory.file_use(id).bytes);
        }
        if let Some(&n) = self.live.get(&id) {
            return Ok(n);
        }
        let n = db
            .get(&keys::blob_live_key(id))?
            .map_or(0, |v| keys::decode_live(&v));
        self.live.insert(id, n);
        Ok(n)
    }

    /// Takes the counts a committed batch wrote.
    pub fn counted(&mut self, counts: Vec<(u32, u64)>) {
        self.live.extend(counts);
    }

    /// Files no record references any more (not one being walked), and
    /// counts found wrong on the way. A zero count only nominates a file:
    /// its keys are read and each owner looked up exactly, and only a file
    /// none of them points into is dead. One that still holds live entries
    /// (a count written from a false "absent" by an earlier release) is
    /// kept, with its count as found. At most [`DEAD_CHECK_KEYS`] keys are
    /// checked per call; later calls (the collector's steps) go on.
    ///
    /// Once the directory is ready it decides alone: a file is dead when no
    /// entry's place is in it.
    pub fn dead_files(&mut self, db: &mut Db) -> Result<Dead, StoreError> {
        let mut dead = Dead::default();
        let mut checked = 0;
        let exact = self.directory.ready();
        for id in self.blobs.files()? {
            let busy = [self.collecting, self.evicting]
                .iter()
                .any(|w| w.is_some_and(|(c, _)| c == id));
            if busy {
                continue;
            }
            if exact {
                if self.directory.file_use(id).entries == 0 {
                    dead.files.push(id);
                }
                continue;
            }
            if self.live_of(db, id)? != 0 {
                continue;
            }
            if checked >= DEAD_CHECK_KEYS {
                dead.more = true;
                break;
            }
            let (keys, live) = match self.live_in(db, id) {
                Ok(found) => found,
                // Kept for now; the collector walks it (and gives up on a
                // file that keeps failing).
                Err(StoreError::Io(e)) => {
                    tracing::warn!(shard = self.index, file = id, error = %e, "checking a blob file counted empty");
                    continue;
                }
                Err(e) => return Err(e),
            };
            checked += keys;
            if live == 0 {
                dead.files.push(id);
            } else {
                tracing::error!(
                    shard = self.index,
                    file = id,
                    live,
                    "blob file counted empty still holds live entries; keeping it"
                );
                dead.recounted.push((id, live));
            }
        }
        Ok(dead)
    }

    /// Entries in file `id` (keys only read), and the bytes of those its
    /// owners, looked up exactly, still point at.
    fn live_in(&mut self, db: &mut Db, id: u32) -> Result<(usize, u64), StoreError> {
        let mut met = Vec::new();
        let mut offset = 0;
        while let Some(e) = self.blobs.reader().entry_at(id, offset, false)? {
            met.push((e.key, e.offset));
            offset = e.next;
        }
        let keys: Vec<&[u8]> = met.iter().map(|(k, _)| k.as_slice()).collect();
        let owners = db.stored_many(&keys)?;
        let live = met
            .iter()
            .zip(owners)
            .filter_map(|((key, at), owner)| {
                let (_, b) = pointing_at(owner, id, *at)?;
                Some(b.entry_len(key.len()))
            })
            .sum();
        Ok((met.len(), live))
    }

    /// Stops using file `id` before it is deleted; returns its size.
    pub fn forget_file(&mut self, id: u32) -> u64 {
        let len = self.blobs.file_len(id).unwrap_or(0);
        self.blobs.forget(id);
        self.live.remove(&id);
        self.walk_failures.remove(&id);
        len
    }

    /// Deletes file `id` from disk.
    pub fn remove_file(&mut self, id: u32) -> io::Result<()> {
        self.blobs.remove(id)
    }

    /// The blob file that most needs collecting: the least live share,
    /// under [`COLLECT_BELOW`]. The active file qualifies only once it
    /// holds [`ACTIVE_DEAD_MIN`] dead bytes, or an eighth of that while
    /// under an eighth live; it is rolled first.
    pub fn pick_collectable(&mut self, db: &mut Db) -> Result<Option<u32>, StoreError> {
        let mut best: Option<(f64, u32)> = None;
        for id in self.blobs.files()? {
            let len = self.blobs.file_len(id)?;
            let live = self.live_of(db, id)?;
            let dead = len - live.min(len);
            // The active file is worth rolling once it holds much dead
            // space, or is mostly dead (a few small live entries would
            // otherwise keep a purged page's bytes on disk).
            let active_worth =
                dead >= ACTIVE_DEAD_MIN || dead >= ACTIVE_DEAD_MIN / 8 && live * 8 < len;
            if len == 0
                || self.evicting.is_some_and(|(e, _)| e == id)
                || self.blobs.is_active(id) && !active_worth
            {
                continue;
            }
            let share = live as f64 / len as f64;
            if share < COLLECT_BELOW && best.is_none_or(|(b, _)| share < b) {
                best = Some((share, id));
            }
        }
        if let Some((_, id)) = best
            && self.blobs.is_active(id)
        {
            self.blobs.roll(id);
        }
        Ok(best.map(|(_, id)| id))
    }

    /// Stages one step of garbage collection into `tx`: walks the file
    /// being collected from where the last written step stopped, and copies
    /// each entry a record still references to the active file (re-pointing
    /// the record). Walks at most `budget` bytes so the shard's queue never
    /// waits long.
    pub fn collect_step(
        &mut self,
        db: &mut Db,
        budget: u64,
        tx: &mut Tx,
    ) -> Result<Step, StoreError> {
        let (id, offset) = match self.collecting {
            Some(c) => c,
            None => match self.pick_collectable(db)? {
                Some(id) => (id, 0),
                None => return Ok(Step::Idle),
            },
        };
        let (live, step) = self.walk(db, id, offset, budget)?;
        let q = self.blobs.queue_of(id);
        for e in &live {
            self.copy_forward(tx, e, q)?;
        }
        Ok(step)
    }

    /// Walks file `id` from `offset` for up to `budget` bytes and returns
    /// the entries a record still points at, with the records.
    fn walk(
        &mut self,
        db: &mut Db,
        id: u32,
        mut offset: u64,
        budget: u64,
    ) -> Result<(Vec<Live>, Step), StoreError> {
        let mut scanned = 0u64;
        let mut done = false;
        // (key, stored bytes, offset) of every entry met, owners looked up
        // after the walk, all at once.
        let mut met = Vec::new();
        while scanned < budget {
            let entry = match self.blobs.reader().entry_at(id, offset, true) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    done = true;
                    break;
                }
                Err(e) => {
                    // Once may be a passing error (say, out of file
                    // descriptors): the step fails and is tried again from
                    // here. Only a file that keeps failing is given up on
                    // (its entries read as misses either way).
                    let tries = self.walk_failures.entry(id).or_default();
                    *tries += 1;
                    if *tries < WALK_TRIES {
                        return Err(e.into());
                    }
                    tracing::warn!(shard = self.index, file = id, error = %e, "blob file unreadable; dropping it");
                    done = true;
                    break;
                }
            };
            scanned += entry.next - entry.offset;
            offset = entry.next;
            met.push((entry.key, entry.stored, entry.offset, entry.version));
        }
        // Only the entry its record still points at is live. Looked up
        // exactly (`Db::get_many`): a live entry taken for garbage would be
        // dropped with its file.
        let keys: Vec<&[u8]> = met.iter().map(|(k, ..)| k.as_slice()).collect();
        let owners = db.stored_many(&keys)?;
        let mut live = Vec::new();
        for ((key, stored, at, version), owner) in met.into_iter().zip(owners) {
            if let Some((owner, blob)) = pointing_at(owner, id, at) {
                live.push(Live {
                    key,
                    stored,
                    version,
                    owner,
                    blob,
                });
            }
        }
        let step = if done {
            Step::Walked(id)
        } else {
            Step::Partial { file: id, offset }
        };
        Ok((live, step))
    }

    /// Stages moving a live entry to the active file of queue `q`, its
    /// record re-pointed: the entry stays, the file it was in can go.
    ///
    /// The new entry holds the record as LevelDB has it now, whatever the
    /// old one held (nothing, in a format-1 file), and the stored body as
    /// it was (not decompressed).
    fn copy_forward(&mut self, tx: &mut Tx, e: &Live, q: Queue) -> Result<(), StoreError> {
        let body = if e.version >= 2 {
            let damaged = || io::Error::new(io::ErrorKind::InvalidData, "blob entry section");
            let s = Section::decode(Bytes::copy_from_slice(&e.stored)).map_err(|_| damaged())?;
            if s.codec != e.blob.codec || s.body_len != e.blob.body_len {
                return Err(damaged().into());
            }
            s.stored
        } else {
            Bytes::copy_from_slice(&e.stored)
        };
        tx.replaces(&e.key, Some(&e.owner));
        let r = &e.blob;
        let moved =
            self.blobs
                .append_body(q, &e.key, &e.owner.record, r.codec, r.body_len, &body)?;
        tx.put_record(&e.key, &e.owner.record, Some(moved));
        Ok(())
    }

    /// Stages one step of eviction: walks the head of a FIFO queue (its
    /// oldest file) from where the last written step stopped. The small
    /// queue is walked while it holds [`SMALL_SHARE`] of the shard's blob
    /// bytes or more, else the main one. Each live entry `keep` says yes to
    /// (given the queue it is in) is copied to the main queue's tail; the
    /// others are handed back for the shard to delete. Walks at most
    /// `budget` bytes.
    pub fn evict_step(
        &mut self,
        db: &mut Db,
        budget: u64,
        tx: &mut Tx,
        mut keep: impl FnMut(&[u8], &Stored, Queue) -> bool,
    ) -> Result<Evicting, StoreError> {
        let (id, offset) = match self.evicting {
            Some(e) => e,
            None => {
                let (small, total) = self.queue_bytes();
                let first = if small as f64 >= total as f64 * SMALL_SHARE {
                    Queue::Small
                } else {
                    Queue::Main
                };
                let other = match first {
                    Queue::Small => Queue::Main,
                    Queue::Main => Queue::Small,
                };
                match self.pick_oldest(first)?.or(self.pick_oldest(other)?) {
                    Some(id) => (id, 0),
                    None => {
                        return Ok(Evicting {
                            step: Step::Idle,
                            from: Queue::Main,
                            reinserted: 0,
                            copied: 0,
                            dropped: Vec::new(),
                        });
                    }
                }
            }
        };
        let from = self.blobs.queue_of(id);
        let (live, step) = self.walk(db, id, offset, budget)?;
        let mut dropped = Vec::new();
        let mut reinserted = 0;
        let mut copied = 0;
        for e in live {
            if keep(&e.key, &e.owner, from) {
                // Space is short: an entry that cannot be copied (a full
                // disk) is evicted instead of failing the step.
                match self.copy_forward(tx, &e, Queue::Main) {
                    Ok(()) => {
                        reinserted += 1;
                        copied += e.blob.entry_len(e.key.len());
                        continue;
                    }
                    Err(err) => {
                        tracing::warn!(shard = self.index, error = %err, "keeping a read entry failed; evicting it")
                    }
                }
            }
            dropped.push((e.key, e.owner));
        }
        Ok(Evicting {
            step,
            from,
            reinserted,
            copied,
            dropped,
        })
    }

    /// The head of queue `q`: its oldest file that still holds something,
    /// other than the one being collected. The queue's active file
    /// qualifies only when it is the last one; it is rolled first.
    fn pick_oldest(&mut self, q: Queue) -> Result<Option<u32>, StoreError> {
        let collecting = self.collecting.map(|(c, _)| c);
        let files = self.blobs.files()?;
        let mut last_resort = None;
        for id in files {
            if self.blobs.queue_of(id) != q
                || Some(id) == collecting
                || self.blobs.file_len(id).unwrap_or(0) <= FILE_MAGIC.len() as u64
            {
                continue;
            }
            if self.blobs.is_active(id) {
                last_resort = Some(id);
                continue;
            }
            return Ok(Some(id));
        }
        if let Some(id) = last_resort {
            self.blobs.roll(id);
        }
        Ok(last_resort)
    }

    /// Bytes in the small queue's files, and in all files.
    fn queue_bytes(&mut self) -> (u64, u64) {
        let ids = self.blobs.files().unwrap_or_default();
        let mut small = 0;
        let mut total = 0;
        for id in ids {
            let len = self.blobs.file_len(id).unwrap_or(0);
            total += len;
            if self.blobs.queue_of(id) == Queue::Small {
                small += len;
            }
        }
        (small, total)
    }

    /// The queue blob file `id` belongs to.
    pub fn queue_of(&self, id: u32) -> Queue {
        self.blobs.queue_of(id)
    }

    /// Bytes in this shard's blob files.
    pub fn file_bytes(&mut self) -> u64 {
        self.queue_bytes().1
    }

    /// Records the progress of an eviction step whose batch has been written.
    pub fn evicted(&mut self, step: &Step) {
        self.evicting = match *step {
            Step::Partial { file, offset } => Some((file, offset)),
            Step::Idle | Step::Walked(_) => None,
        };
    }

    /// Records the progress of a step whose batch has been written.
    pub fn reached(&mut self, step: &Step) {
        self.collecting = match *step {
            Step::Partial { file, offset } => Some((file, offset)),
            Step::Idle | Step::Walked(_) => None,
        };
    }
}
