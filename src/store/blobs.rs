//! A shard's blob files: append-only files holding bodies too large to keep
//! inline in LevelDB (the value log of WiscKey).
//!
//! Why: rusty-leveldb compacts inside `put` and `get`, and a compaction
//! rewrites every value in the tables it merges. With 20 KB pages stored
//! inline, each compaction moved megabytes and stalled its shard for up to
//! seconds. With bodies here, LevelDB holds a few hundred bytes per page
//! (headers, deadline, a [`BlobRef`]), so compactions are small and short,
//! and a page is written once instead of once per level.
//!
//! The byte layout is defined in `store::record`. This module only does the
//! I/O: append an entry to the active file, read one back by reference,
//! walk a file's entries for the garbage collector, delete a file. Which
//! entries are still referenced, and how many live bytes each file holds,
//! is the shard's business: that lives in LevelDB, next to the references.
//!
//! Crash safety follows LevelDB's: entries are written to the OS before the
//! record pointing at them, and nothing is fsynced. A crash can leave an
//! unreferenced entry or a torn tail; neither is ever read (no record points
//! there), and the active file after a restart is always a new one.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::entry::{self, ENTRY_HEADER, FILE_MAGIC, Section};
use super::lookup::Lookup;
use super::record::{BlobRef, Codec, DecodeError, Record, Stored};

/// A file stops taking appends past this size (unless a disk budget asks
/// for smaller ones): big enough that a 100 GB cache is ~1,500 files per
/// shard, small enough that collecting one is a bounded piece of work.
pub const FILE_MAX: u64 = 64 << 20;
/// Read handles kept open per shard; beyond it the least recent go.
const OPEN_READERS: usize = 256;
/// Limits that make a damaged entry header read as "end of file" instead
/// of a huge allocation.
const KEY_MAX: usize = 64 << 10;
const STORED_MAX: usize = 1 << 30;

/// Why a blob could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    #[error("blob I/O: {0}")]
    Io(#[from] io::Error),
    #[error("blob entry: {0}")]
    Damaged(#[from] DecodeError),
    #[error("blob body does not decompress to its recorded length")]
    Decompress,
}

/// Why a stored value could not be loaded: its record or its blob is
/// damaged. Either way the entry reads as a miss and is deleted.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("record: {0}")]
    Record(#[from] DecodeError),
    #[error("{0}")]
    Blob(#[from] BlobError),
}

/// One entry found while walking a file.
pub struct Entry {
    pub offset: u64,
    pub key: Vec<u8>,
    pub stored: Vec<u8>,
    /// The file's format (`store::entry`): 2 when `stored` starts with the
    /// record.
    pub version: u8,
    /// Where the next entry starts.
    pub next: u64,
}

struct Active {
    id: u32,
    file: File,
    len: u64,
}

/// The two FIFO queues of blob files the disk budget evicts from (see
/// `store::budget`): new entries go to the small, probationary one;
/// entries read there, or written again soon after eviction, to the main
/// one. Without a budget everything is in `Main`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Queue {
    Small = 0,
    Main = 1,
}

/// Read access to one shard's blob files, owned by the shard thread
/// (readers on other threads have `store::direct`).
pub struct BlobReader {
    dir: PathBuf,
    /// Open files: handle, last use, format version.
    readers: HashMap<u32, (File, u64, u8)>,
    /// Bumped per read; the stamp decides which reader to close first.
    clock: u64,
}

/// The blob files of one shard, owned by its thread: appends to the active
/// file, and reads.
pub struct Blobs {
    reader: BlobReader,
    next_id: u32,
    /// The file taking appends, per queue.
    active: [Option<Active>; 2],
    /// The size past which an active file of the main queue is rolled
    /// (a quarter of it for the small queue).
    file_max: u64,
    /// Files of the small queue. Kept in RAM only: after a restart, every
    /// file counts as main.
    small: std::collections::HashSet<u32>,
    /// A file was created since the last [`Blobs::sync`]: its directory
    /// entry must reach the disk too.
    created: bool,
    /// Files given up (`forget`) whose deletion may not be done yet: never
    /// listed again.
    gone: std::collections::HashSet<u32>,
    /// Files of format 1, found at open (this release writes format 2).
    legacy: std::sync::Arc<std::collections::HashSet<u32>>,
}

pub fn file_name(id: u32) -> String {
    format!("{id:08}.blob")
}

fn parse_name(name: &str) -> Option<u32> {
    name.strip_suffix(".blob")?.parse().ok()
}

fn list(dir: &Path) -> io::Result<Vec<u32>> {
    let mut ids = Vec::new();
    for e in std::fs::read_dir(dir)? {
        if let Some(id) = e?.file_name().to_str().and_then(parse_name) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

impl Blobs {
    /// Opens `dir` (creating it). Appends always start a new file, so a
    /// torn tail left by a crash is never written after.
    pub fn open(dir: PathBuf, file_max: u64) -> io::Result<Blobs> {
        std::fs::create_dir_all(&dir)?;
        let ids = list(&dir)?;
        let next_id = ids.iter().max().map_or(1, |m| m + 1);
        let mut legacy = std::collections::HashSet::new();
        for &id in &ids {
            // A file that cannot be opened or has no known magic is left
            // to the reads that meet it (an error each, so a miss).
            if let Ok((_, 1)) = open_file(&dir.join(file_name(id))) {
                legacy.insert(id);
            }
        }
        Ok(Blobs {
            legacy: std::sync::Arc::new(legacy),
            reader: BlobReader::new(dir),
            next_id,
            active: [None, None],
            file_max: file_max.clamp(1 << 16, FILE_MAX),
            small: Default::default(),
            gone: Default::default(),
            created: false,
        })
    }

    /// The id the next new file takes.
    pub fn next_id(&self) -> u32 {
        self.next_id
    }

    /// New files take ids from `id` on (if higher than the next one).
    pub fn skip_to(&mut self, id: u32) {
        self.next_id = self.next_id.max(id);
    }

    /// The files of format 1: their entries hold no record.
    pub fn legacy(&self) -> std::sync::Arc<std::collections::HashSet<u32>> {
        self.legacy.clone()
    }

    pub fn file_max(&self) -> u64 {
        self.file_max
    }

    /// Every blob file id in use, oldest first.
    pub fn files(&mut self) -> io::Result<Vec<u32>> {
        let mut ids = list(&self.reader.dir)?;
        if !self.gone.is_empty() {
            self.gone.retain(|id| ids.binary_search(id).is_ok());
            ids.retain(|id| !self.gone.contains(id));
        }
        Ok(ids)
    }

    pub fn reader(&mut self) -> &mut BlobReader {
        &mut self.reader
    }

    fn path(&self, id: u32) -> PathBuf {
        self.reader.path(id)
    }

    /// Whether file `id` is taking appends.
    pub fn is_active(&self, id: u32) -> bool {
        self.active.iter().flatten().any(|a| a.id == id)
    }

    /// The queue file `id` belongs to.
    pub fn queue_of(&self, id: u32) -> Queue {
        if self.small.contains(&id) {
            Queue::Small
        } else {
            Queue::Main
        }
    }

    /// Size of file `id` in bytes.
    pub fn file_len(&self, id: u32) -> io::Result<u64> {
        match self.active.iter().flatten().find(|a| a.id == id) {
            Some(a) => Ok(a.len),
            None => Ok(std::fs::metadata(self.path(id))?.len()),
        }
    }

    /// Stops appending to file `id` if it is active; the next append to its
    /// queue opens a new one.
    pub fn roll(&mut self, id: u32) {
        for a in &mut self.active {
            if a.as_ref().is_some_and(|a| a.id == id) {
                *a = None;
            }
        }
    }

    /// Compresses `body` when that saves at least an eighth, and appends it
    /// as `key`'s entry to the main queue.
    #[cfg(test)]
    pub fn append(&mut self, key: &[u8], body: &[u8]) -> io::Result<BlobRef> {
        let record = Record::new(
            super::record::Kind::Bytes,
            0,
            None,
            Bytes::new(),
            Bytes::new(),
        );
        self.append_to(Queue::Main, key, &record, body)
    }

    /// Appends `key`'s entry, holding `record` (its body aside) and `body`,
    /// to queue `q`. The body is compressed when that saves at least an
    /// eighth.
    pub fn append_to(
        &mut self,
        q: Queue,
        key: &[u8],
        record: &Record,
        body: &[u8],
    ) -> io::Result<BlobRef> {
        // LZ4 rather than snappy: as small on HTML (within 1%), and a page
        // read from disk decompresses in two thirds of the time, into
        // memory that is not zeroed first.
        let compressed = lz4_flex::block::compress(body);
        let (codec, stored) = if compressed.len() <= body.len() - body.len() / 8 {
            (Codec::Lz4, compressed.as_slice())
        } else {
            (Codec::None, body)
        };
        self.append_body(q, key, record, codec, body.len() as u32, stored)
    }

    /// Appends `key`'s entry, holding `record` and a body already stored
    /// (`codec`, `body_len` before it): a new entry, or one moved by the
    /// collector with its record as it is now.
    pub fn append_body(
        &mut self,
        q: Queue,
        key: &[u8],
        record: &Record,
        codec: Codec,
        body_len: u32,
        stored: &[u8],
    ) -> io::Result<BlobRef> {
        let head = entry::section_head(record, codec, body_len);
        let (file, offset) = self.append_stored(q, key, &[&head, stored])?;
        Ok(BlobRef {
            file,
            offset,
            stored_len: (head.len() + stored.len()) as u32,
            body_len,
            codec,
        })
    }

    /// Appends an entry whose stored bytes are `parts` to queue `q`;
    /// returns (file id, offset).
    fn append_stored(&mut self, q: Queue, key: &[u8], parts: &[&[u8]]) -> io::Result<(u32, u64)> {
        let max = match q {
            Queue::Small => (self.file_max / 4).max(1 << 16),
            Queue::Main => self.file_max,
        };
        let slot = &mut self.active[q as usize];
        if slot.as_ref().is_some_and(|a| a.len >= max) {
            *slot = None;
        }
        if slot.is_none() {
            // The id is used up whatever happens next: a file left behind
            // by a failed header write is never opened for appends again.
            let id = self.next_id;
            self.next_id += 1;
            let mut file = OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(self.path(id))?;
            self.created = true;
            if let Err(e) = file.write_all(&FILE_MAGIC) {
                drop(file);
                let _ = std::fs::remove_file(self.path(id));
                return Err(e);
            }
            if q == Queue::Small {
                self.small.insert(id);
            }
            self.active[q as usize] = Some(Active {
                id,
                file,
                len: FILE_MAGIC.len() as u64,
            });
        }
        let head = entry::head(key, parts);
        let slot = &mut self.active[q as usize];
        let Some(active) = slot.as_mut() else {
            return Err(io::Error::other("no active blob file"));
        };
        if let Err(e) = write_all_vectored(&mut active.file, &head, parts) {
            // How much of the entry landed is unknown: never append after it.
            *slot = None;
            return Err(e);
        }
        let offset = active.len;
        active.len += (head.len() + parts.iter().map(|p| p.len()).sum::<usize>()) as u64;
        Ok((active.id, offset))
    }

    /// Makes what was appended so far survive a power loss (`--sync`): the
    /// active file's data, and the directory entry of a new file.
    pub fn sync(&mut self) -> io::Result<()> {
        for a in self.active.iter().flatten() {
            a.file.sync_data()?;
        }
        if std::mem::take(&mut self.created) {
            File::open(&self.reader.dir)?.sync_all()?;
        }
        Ok(())
    }

    /// Stops using file `id`: no more appends to it, its read handle closed.
    pub fn forget(&mut self, id: u32) {
        self.roll(id);
        self.small.remove(&id);
        self.gone.insert(id);
        self.reader.forget(id);
    }

    /// Deletes file `id` (rolling first if it is the active one).
    pub fn remove(&mut self, id: u32) -> io::Result<()> {
        self.forget(id);
        self.reader.remove(id)
    }
}

impl BlobReader {
    pub fn new(dir: PathBuf) -> BlobReader {
        BlobReader {
            dir,
            readers: HashMap::new(),
            clock: 0,
        }
    }

    fn path(&self, id: u32) -> PathBuf {
        self.dir.join(file_name(id))
    }

    /// File `id`, open, and its format version.
    fn handle(&mut self, id: u32) -> io::Result<(&File, u8)> {
        self.clock += 1;
        if !self.readers.contains_key(&id) {
            if self.readers.len() >= OPEN_READERS {
                let oldest = self.readers.iter().min_by_key(|(_, (_, t, _))| *t);
                if let Some((&old, _)) = oldest {
                    self.readers.remove(&old);
                }
            }
            let (file, version) = open_file(&self.path(id))?;
            self.readers.insert(id, (file, self.clock, version));
        }
        let clock = self.clock;
        let (file, stamp, version) = self
            .readers
            .get_mut(&id)
            .ok_or_else(|| io::Error::other("blob reader vanished"))?;
        *stamp = clock;
        Ok((file, *version))
    }

    /// Reads `key`'s body through `r`, checking that the entry is `key`'s,
    /// intact, and decompresses to the recorded length.
    ///
    /// In a format-2 file the body follows the record in the entry; the
    /// reference's codec and length must agree with the entry's own.
    pub fn read(&mut self, key: &[u8], r: &BlobRef) -> Result<Bytes, BlobError> {
        let len = r.entry_len(key.len()) as usize;
        let mut buf = vec![0u8; len];
        let (file, version) = self.handle(r.file)?;
        file.read_exact_at(&mut buf, r.offset)?;
        let start = entry::check(&buf, key)?;
        if buf.len() - start != r.stored_len as usize {
            return Err(BlobError::Damaged(DecodeError::BadBlobRef));
        }
        let stored = Bytes::from(buf).slice(start..);
        let stored = if version >= 2 {
            let s = Section::decode(stored)?;
            if s.codec != r.codec || s.body_len != r.body_len {
                return Err(BlobError::Decompress);
            }
            s.stored
        } else {
            stored
        };
        if r.codec == Codec::None && stored.len() == r.body_len as usize {
            return Ok(stored);
        }
        entry::decode_body(r.codec, &stored, r.body_len)
            .map(Bytes::from)
            .ok_or(BlobError::Decompress)
    }

    /// Decodes the LevelDB value `raw` stored at `key` and reads its body
    /// from its blob file if it has one: a hit, or `Expired` at `now`
    /// (never a miss). Any damage, in the record or in the blob, is the
    /// error.
    pub fn load(&mut self, key: &[u8], raw: &Bytes, now: u64) -> Result<Lookup, LoadError> {
        let Stored { mut record, blob } = Record::decode(raw)?;
        if record.is_expired(now) {
            return Ok(Lookup::Expired);
        }
        if let Some(r) = blob {
            record.body = self.read(key, &r)?;
        }
        Ok(Lookup::Hit(record))
    }

    /// The entry starting at `offset` in file `id`, or `None` at the end of
    /// the file or at a header that cannot be an entry's (a torn tail).
    /// Without `stored`, only its key is read (its stored bytes are empty).
    pub fn entry_at(&mut self, id: u32, offset: u64, stored: bool) -> io::Result<Option<Entry>> {
        let offset = offset.max(FILE_MAGIC.len() as u64);
        let (file, version) = self.handle(id)?;
        let mut header = [0u8; ENTRY_HEADER];
        match file.read_exact_at(&mut header, offset) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let (k, s, _) = entry::decode_header(&header);
        if k > KEY_MAX || s > STORED_MAX {
            return Ok(None);
        }
        let mut rest = vec![0u8; if stored { k + s } else { k }];
        match file.read_exact_at(&mut rest, offset + ENTRY_HEADER as u64) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        let stored = rest.split_off(k);
        Ok(Some(Entry {
            offset,
            key: rest,
            stored,
            version,
            next: offset + (ENTRY_HEADER + k + s) as u64,
        }))
    }

    /// Closes file `id`'s read handle.
    pub fn forget(&mut self, id: u32) {
        self.readers.remove(&id);
    }

    /// Deletes file `id` (after collection or eviction).
    pub fn remove(&mut self, id: u32) -> io::Result<()> {
        self.forget(id);
        match std::fs::remove_file(self.path(id)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

/// Opens blob file `path` for reading: the handle and the file's format.
/// A file whose magic is not one this release knows is an error (never
/// read as entries).
pub fn open_file(path: &Path) -> io::Result<(File, u8)> {
    let file = File::open(path)?;
    let mut magic = [0u8; 8];
    file.read_exact_at(&mut magic, 0)?;
    let version = entry::file_version(&magic).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "not a blob file this release reads",
        )
    })?;
    Ok((file, version))
}

/// Writes `a` then each of `rest` with as few `writev` calls as the kernel
/// allows.
fn write_all_vectored(file: &mut File, a: &[u8], rest: &[&[u8]]) -> io::Result<()> {
    let mut bufs: Vec<io::IoSlice<'_>> = std::iter::once(a)
        .chain(rest.iter().copied())
        .map(io::IoSlice::new)
        .collect();
    let mut left: &mut [io::IoSlice<'_>] = &mut bufs;
    while !left.is_empty() {
        match file.write_vectored(left) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => io::IoSlice::advance_slices(&mut left, n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    fn html(n: usize) -> Vec<u8> {
        let row = b"<tr><td class=\"name\">station</td><td>12.5</td></tr>\n";
        row.iter().copied().cycle().take(n).collect()
    }

    #[test]
    fn appended_bodies_read_back_compressed_or_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Blobs::open(dir.path().join("blobs"), FILE_MAX).unwrap();
        let page = html(20_000);
        let r = b.append(b"p/a", &page).unwrap();
        assert_eq!(r.codec, Codec::Lz4);
        assert!(r.stored_len < 5_000);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let noise: Vec<u8> = (0..5_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        let r2 = b.append(b"p/b", &noise).unwrap();
        assert_eq!(r2.codec, Codec::None, "incompressible bodies stay raw");
        assert_eq!(b.reader().read(b"p/a", &r).unwrap(), page);
        assert_eq!(b.reader().read(b"p/b", &r2).unwrap(), noise);
        assert!(
            b.reader().read(b"p/b", &r).is_err(),
            "never another key's body"
        );
    }

    /// A format-1 file (entries hold the body alone), as an earlier
    /// release wrote it: its entries start at offset 8, one after another.
    pub fn v1_file(dir: &Path, id: u32, entries: &[(&[u8], &[u8])]) -> Vec<u64> {
        let mut bytes = entry::FILE_MAGIC_V1.to_vec();
        let mut offsets = Vec::new();
        for (key, stored) in entries {
            offsets.push(bytes.len() as u64);
            bytes.extend(entry::encode(key, &[stored]));
        }
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join(file_name(id)), bytes).unwrap();
        offsets
    }

    /// Bodies an earlier release wrote, in a format-1 file and compressed
    /// with snappy, still read.
    #[test]
    fn snappy_bodies_from_earlier_releases_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let page = html(20_000);
        let packed = snap::raw::Encoder::new().compress_vec(&page).unwrap();
        let offsets = v1_file(dir.path(), 1, &[(b"p/old", &packed)]);
        let mut b = Blobs::open(dir.path().to_path_buf(), FILE_MAX).unwrap();
        let r = BlobRef {
            file: 1,
            offset: offsets[0],
            stored_len: packed.len() as u32,
            body_len: page.len() as u32,
            codec: Codec::Snappy,
        };
        assert_eq!(b.reader().read(b"p/old", &r).unwrap(), page);
    }

    /// Stored bytes that pass the entry's CRC but are not what the
    /// reference says (another codec, another length) are an error.
    #[test]
    fn a_body_that_does_not_decode_to_its_length_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Blobs::open(dir.path().to_path_buf(), FILE_MAX).unwrap();
        let page = html(20_000);
        let r = b.append(b"p/a", &page).unwrap();
        for wrong in [
            BlobRef {
                body_len: r.body_len - 1,
                ..r
            },
            BlobRef {
                body_len: r.body_len + 1,
                ..r
            },
            BlobRef {
                codec: Codec::Snappy,
                ..r
            },
        ] {
            assert!(
                matches!(b.reader().read(b"p/a", &wrong), Err(BlobError::Decompress)),
                "{wrong:?}"
            );
        }
        let garbage: Vec<u8> = (0..4_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let (file, offset) = b.append_stored(Queue::Main, b"p/g", &[&garbage]).unwrap();
        let r = BlobRef {
            file,
            offset,
            stored_len: garbage.len() as u32,
            body_len: 20_000,
            codec: Codec::Lz4,
        };
        assert!(b.reader().read(b"p/g", &r).is_err());
    }

    #[test]
    fn entries_walk_in_order_and_stop_at_a_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Blobs::open(dir.path().to_path_buf(), FILE_MAX).unwrap();
        let r1 = b.append(b"k1", &html(3_000)).unwrap();
        let r2 = b.append(b"k2", &html(4_000)).unwrap();
        let id = r1.file;
        let e1 = b.reader().entry_at(id, 0, true).unwrap().unwrap();
        assert_eq!((e1.key.as_slice(), e1.offset), (&b"k1"[..], r1.offset));
        let e2 = b.reader().entry_at(id, e1.next, true).unwrap().unwrap();
        assert_eq!((e2.key.as_slice(), e2.offset), (&b"k2"[..], r2.offset));
        assert!(b.reader().entry_at(id, e2.next, true).unwrap().is_none());

        // A crash mid-append: the tail is cut short.
        let path = dir.path().join(file_name(id));
        let len = std::fs::metadata(&path).unwrap().len();
        let f = OpenOptions::new().write(true).open(&path).unwrap();
        f.set_len(len - 10).unwrap();
        let mut b = Blobs::open(dir.path().to_path_buf(), FILE_MAX).unwrap();
        assert!(b.reader().entry_at(id, e1.next, true).unwrap().is_none());
        assert!(b.reader().read(b"k2", &r2).is_err());
        assert_eq!(b.reader().read(b"k1", &r1).unwrap(), html(3_000));
        // After a restart appends go to a new file.
        let r3 = b.append(b"k3", &html(100)).unwrap();
        assert_eq!(r3.file, id + 1);
    }

    #[test]
    fn damaged_bytes_are_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = Blobs::open(dir.path().to_path_buf(), FILE_MAX).unwrap();
        let r = b.append(b"k", &html(10_000)).unwrap();
        let path = dir.path().join(file_name(r.file));
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = (r.offset + r.entry_len(1) / 2) as usize;
        bytes[mid] ^= 0x20;
        std::fs::write(&path, bytes).unwrap();
        let mut b = Blobs::open(dir.path().to_path_buf(), FILE_MAX).unwrap();
        assert!(matches!(
            b.reader().read(b"k", &r),
            Err(BlobError::Damaged(_))
        ));
    }
}
