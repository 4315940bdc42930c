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

use bytes::Bytes;

use super::blobs::{Blobs, LoadError};
use super::db::Db;
use super::error::StoreError;
use super::keys;
use super::lookup::Lookup;
use super::record::{BlobRef, Stored};
use super::tx::Tx;

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
    pub fn open(index: usize, dir: PathBuf) -> io::Result<BlobSpace> {
        Ok(BlobSpace {
            index,
            blobs: Blobs::open(dir.clone())?,
            dir,
            live: HashMap::new(),
            collecting: None,
        })
    }

    /// Starts over on fresh files, after the shard's directory was replaced
    /// (the old blob files went with it).
    pub fn reset(&mut self) -> io::Result<()> {
        self.blobs = Blobs::open(self.dir.clone())?;
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
    }

    /// Appends `key`'s body to the active file.
    pub fn append(&mut self, key: &[u8], body: &[u8]) -> io::Result<BlobRef> {
        self.blobs.append(key, body)
    }

    /// Decodes a LevelDB value and loads its body (see `BlobReader::load`).
    pub fn load(&mut self, key: &[u8], raw: &Bytes, now: u64) -> Result<Lookup, LoadError> {
        self.blobs.reader().load(key, raw, now)
    }

    /// Live bytes recorded for blob file `id`.
    pub fn live_of(&mut self, db: &mut Db, id: u32) -> Result<u64, StoreError> {
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

    /// Files no record references any more (not the one being collected).
    pub fn dead_files(&mut self, db: &mut Db) -> Result<Vec<u32>, StoreError> {
        let mut dead = Vec::new();
        for id in self.blobs.files()? {
            if self.live_of(db, id)? == 0 && self.collecting.is_none_or(|(c, _)| c != id) {
                dead.push(id);
            }
        }
        Ok(dead)
    }

    /// Stops using file `id` before it is deleted; returns its size.
    pub fn forget_file(&mut self, id: u32) -> u64 {
        let len = self.blobs.file_len(id).unwrap_or(0);
        self.blobs.forget(id);
        self.live.remove(&id);
        len
    }

    /// Deletes file `id` from disk.
    pub fn remove_file(&mut self, id: u32) -> io::Result<()> {
        self.blobs.remove(id)
    }

    /// The blob file that most needs collecting: the least live share,
    /// under [`COLLECT_BELOW`]. The active file qualifies only once it
    /// holds [`ACTIVE_DEAD_MIN`] dead bytes; it is rolled first.
    pub fn pick_collectable(&mut self, db: &mut Db) -> Result<Option<u32>, StoreError> {
        let mut best: Option<(f64, u32)> = None;
        for id in self.blobs.files()? {
            let len = self.blobs.file_len(id)?;
            let live = self.live_of(db, id)?;
            if len == 0
                || self.blobs.active_id() == Some(id) && len - live.min(len) < ACTIVE_DEAD_MIN
            {
                continue;
            }
            let share = live as f64 / len as f64;
            if share < COLLECT_BELOW && best.is_none_or(|(b, _)| share < b) {
                best = Some((share, id));
            }
        }
        if let Some((_, id)) = best
            && self.blobs.active_id() == Some(id)
        {
            self.blobs.roll();
        }
        Ok(best.map(|(_, id)| id))
    }

    /// Stages one step of garbage collection into `tx`: walks the file
    /// being collected from where the last written step stopped, and copies each
    /// entry a record still references to the active file (re-pointing the
    /// record). Walks at most `budget` bytes so the shard's queue never
    /// waits long.
    pub fn collect_step(
        &mut self,
        db: &mut Db,
        budget: u64,
        tx: &mut Tx,
    ) -> Result<Step, StoreError> {
        let (id, mut offset) = match self.collecting {
            Some(c) => c,
            None => match self.pick_collectable(db)? {
                Some(id) => (id, 0),
                None => return Ok(Step::Idle),
            },
        };
        let mut scanned = 0u64;
        let mut done = false;
        while scanned < budget {
            let entry = match self.blobs.reader().entry_at(id, offset) {
                Ok(Some(e)) => e,
                Ok(None) => {
                    done = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(shard = self.index, file = id, error = %e, "reading a blob file to collect it");
                    done = true;
                    break;
                }
            };
            scanned += entry.next - entry.offset;
            offset = entry.next;
            // Only the entry its record still points at is live.
            let owner = db.stored(&entry.key)?;
            let Some((owner, old)) = owner
                .and_then(|s: Stored| s.blob.map(|b| (s, b)))
                .filter(|(_, b)| b.file == id && b.offset == entry.offset)
            else {
                continue;
            };
            tx.replaces(&entry.key, Some(&owner));
            let (file, at) = self.blobs.append_stored(&entry.key, &entry.stored)?;
            let moved = BlobRef {
                file,
                offset: at,
                ..old
            };
            tx.put_record(&entry.key, &owner.record, Some(moved));
        }
        Ok(if done {
            Step::Walked(id)
        } else {
            Step::Partial { file: id, offset }
        })
    }

    /// Records the progress of a step whose batch has been written.
    pub fn reached(&mut self, step: &Step) {
        self.collecting = match *step {
            Step::Partial { file, offset } => Some((file, offset)),
            Step::Idle | Step::Walked(_) => None,
        };
    }
}
