//! Reads that never reach the shard thread: the directory says where a
//! key's entry is, and the entry (format 2, `store::entry`) holds both the
//! record and the body, so one positioned read from the caller's task
//! answers the lookup.
//!
//! The read is tried at once with `RWF_NOWAIT`, which succeeds only when
//! the bytes are in the page cache (a microsecond or two); otherwise it
//! goes to tokio's blocking pool, at most [`BLOCKING_READS`] at a time per
//! shard, so a slow disk holds up neither the runtime's workers nor other
//! shards' reads.
//!
//! Nothing here decides anything on its own: an entry of another key (two
//! keys sharing a fingerprint) is skipped, and an unreadable one, a file
//! gone meanwhile or any error hands the lookup back to the shard thread,
//! which reads from LevelDB and deletes what is damaged.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use tokio::sync::Semaphore;

use super::blobs::{file_name, open_file};
use super::directory::Place;
use super::entry::{self, Section};
use super::record::{DecodeError, Record};

/// Blocking reads one shard's readers may have in flight.
pub const BLOCKING_READS: usize = 32;
/// Files kept open per shard for these reads.
const OPEN_FILES: usize = 256;

/// Why a direct read gave up: the caller asks the shard instead.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    #[error("blob I/O: {0}")]
    Io(#[from] io::Error),
    #[error("blob entry: {0}")]
    Damaged(#[from] DecodeError),
    #[error("blob body does not decompress to its recorded length")]
    Decompress,
    #[error("the place is not a whole entry")]
    NotWhole,
}

#[derive(Default)]
struct Files {
    open: HashMap<u32, Arc<File>>,
    /// Deleted by the shard: never opened again (ids are not reused).
    gone: HashSet<u32>,
}

/// One shard's direct reader, shared by every task.
pub struct DirectReader {
    dir: PathBuf,
    files: RwLock<Files>,
    blocking: Arc<Semaphore>,
}

impl DirectReader {
    pub fn new(blobs_dir: PathBuf) -> DirectReader {
        DirectReader {
            dir: blobs_dir,
            files: RwLock::default(),
            blocking: Arc::new(Semaphore::new(BLOCKING_READS)),
        }
    }

    fn file(&self, id: u32) -> Result<Arc<File>, DirectError> {
        if let Some(f) = self
            .files
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .get(&id)
        {
            return Ok(f.clone());
        }
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        if files.gone.contains(&id) {
            return Err(io::Error::from(io::ErrorKind::NotFound).into());
        }
        if let Some(f) = files.open.get(&id) {
            return Ok(f.clone());
        }
        let (file, version) = open_file(&self.dir.join(file_name(id)))?;
        if version < 2 {
            return Err(DirectError::NotWhole);
        }
        if files.open.len() >= OPEN_FILES
            && let Some(&old) = files.open.keys().next()
        {
            files.open.remove(&old);
        }
        let file = Arc::new(file);
        files.open.insert(id, file.clone());
        Ok(file)
    }

    /// The shard deleted file `id`: its handle is closed here too (or its
    /// disk space would stay taken), and it is never opened again.
    pub fn forget(&self, id: u32) {
        let mut files = self.files.write().unwrap_or_else(|e| e.into_inner());
        files.open.remove(&id);
        files.gone.insert(id);
    }

    /// Forgets every handle (the shard's files were replaced; new ones take
    /// new ids, so those given up stay given up).
    pub fn forget_all(&self) {
        self.files
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .open
            .clear();
    }

    /// The record (body loaded) the whole entry at `place` holds for
    /// `key`; `None` when the entry is another key's.
    pub async fn read(&self, key: &[u8], place: Place) -> Result<Option<Record>, DirectError> {
        let (id, offset, len) = place.whole_entry().ok_or(DirectError::NotWhole)?;
        let file = self.file(id)?;
        let mut buf = Vec::with_capacity(len);
        if !read_cached(&file, &mut buf, len, offset) {
            buf.resize(len, 0);
            let permit = self
                .blocking
                .clone()
                .acquire_owned()
                .await
                .map_err(|_| io::Error::other("reader closed"))?;
            // The permit goes with the read: a caller that gives up does
            // not free a place while its read still runs.
            buf = tokio::task::spawn_blocking(move || {
                let _permit = permit;
                let mut buf = buf;
                file.read_exact_at(&mut buf, offset).map(|()| buf)
            })
            .await
            .map_err(io::Error::other)??;
        }
        decode(key, buf)
    }
}

/// Fills `buf` (empty, with room for `len` bytes) with the `len` bytes at
/// `offset` only if the page cache has them all; `false` when the kernel
/// would have to wait for the disk (or does not support the flag), or the
/// read came up short. The room is not zeroed first: a read from the page
/// cache is the common case, and zeroing cost as much as the copy.
fn read_cached(file: &File, buf: &mut Vec<u8>, len: usize, offset: u64) -> bool {
    let Ok(offset) = libc::off_t::try_from(offset) else {
        return false;
    };
    let room = &mut buf.spare_capacity_mut()[..len];
    let iov = libc::iovec {
        iov_base: room.as_mut_ptr().cast(),
        iov_len: len,
    };
    // SAFETY: `iov` describes `room`, `len` bytes of `buf`'s spare
    // capacity, which outlive the call and are not otherwise borrowed; the
    // kernel writes at most `len` bytes there.
    let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, libc::RWF_NOWAIT) };
    if usize::try_from(n).ok() != Some(len) {
        return false;
    }
    // SAFETY: the kernel wrote all `len` bytes.
    unsafe { buf.set_len(len) };
    true
}

/// Takes apart the entry `buf` read for `key`.
fn decode(key: &[u8], buf: Vec<u8>) -> Result<Option<Record>, DirectError> {
    let start = match entry::check(&buf, key) {
        Ok(start) => start,
        Err(DecodeError::BadBlobRef) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let s = Section::decode(Bytes::from(buf).slice(start..))?;
    let body = if s.codec == super::record::Codec::None && s.stored.len() == s.body_len as usize {
        s.stored
    } else {
        entry::decode_body(s.codec, &s.stored, s.body_len)
            .map(Bytes::from)
            .ok_or(DirectError::Decompress)?
    };
    Ok(Some(Record { body, ..s.record }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::blobs::{Blobs, FILE_MAX, Queue};
    use crate::store::record::Kind;

    fn page(body: &[u8]) -> Record {
        Record {
            kind: Kind::Http,
            created_at: 5,
            expires_at: Some(99),
            meta: Bytes::from_static(b"meta"),
            body: Bytes::copy_from_slice(body),
            tags: crate::store::record::Tags::new([&b"t1"[..]]),
            stale_since: None,
            memo: Default::default(),
        }
    }

    fn whole(r: &crate::store::record::BlobRef, key: &[u8]) -> Place {
        Place::of(Some(r), false, key.len(), false)
    }

    #[tokio::test]
    async fn a_whole_entry_reads_back_as_its_record_and_never_for_another_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut blobs = Blobs::open(dir.path().to_path_buf(), FILE_MAX).unwrap();
        let body: Vec<u8> = b"<p>row</p>".iter().copied().cycle().take(20_000).collect();
        let rec = page(&body);
        let r = blobs.append_to(Queue::Main, b"p/a\0", &rec, &body).unwrap();
        let small = page(b"x");
        let r2 = blobs
            .append_to(Queue::Main, b"p/b\0", &small, b"x")
            .unwrap();
        let reader = DirectReader::new(dir.path().to_path_buf());
        let got = reader.read(b"p/a\0", whole(&r, b"p/a\0")).await.unwrap();
        assert_eq!(got, Some(rec));
        let got = reader.read(b"p/b\0", whole(&r2, b"p/b\0")).await.unwrap();
        assert_eq!(got, Some(small));
        // Same length, another key: not this key's entry.
        let got = reader.read(b"p/c\0", whole(&r2, b"p/c\0")).await.unwrap();
        assert_eq!(got, None);
        // A stale record's place is not read here.
        let stale = Place::of(Some(&r), true, 4, false);
        assert!(matches!(
            reader.read(b"p/a\0", stale).await,
            Err(DirectError::NotWhole)
        ));
        // Deleted by the shard: an error (the shard is asked), even with
        // the handle open before.
        reader.forget(r.file);
        assert!(reader.read(b"p/a\0", whole(&r, b"p/a\0")).await.is_err());
    }

    /// Every flipped byte of an entry is an error or "another key's",
    /// never a record.
    #[tokio::test]
    async fn a_damaged_entry_is_never_a_record() {
        let dir = tempfile::tempdir().unwrap();
        let mut blobs = Blobs::open(dir.path().to_path_buf(), FILE_MAX).unwrap();
        let rec = page(b"body bytes");
        let r = blobs
            .append_to(Queue::Main, b"p/a\0", &rec, b"body bytes")
            .unwrap();
        let path = dir.path().join(file_name(r.file));
        let clean = std::fs::read(&path).unwrap();
        let place = whole(&r, b"p/a\0");
        for i in r.offset as usize..clean.len() {
            let mut bad = clean.clone();
            bad[i] ^= 0x04;
            std::fs::write(&path, &bad).unwrap();
            let reader = DirectReader::new(dir.path().to_path_buf());
            if let Ok(Some(got)) = reader.read(b"p/a\0", place).await {
                panic!("byte {i}: read {got:?}");
            }
        }
    }
}
