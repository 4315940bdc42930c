//! A read replica of one shard, on its own thread, so that no read waits
//! for a compaction.
//!
//! rusty-leveldb compacts inside `put` and `get`: while it does, the shard
//! thread answers nothing, and with page metadata in LevelDB a compaction
//! still takes tens of milliseconds (level 1 alone is allowed 10 MB, and a
//! level-0 compaction rewrites all of it). The mirror is a second LevelDB
//! holding the same entries. The shard thread forwards every batch it has
//! written, in order and before acknowledging the write, so a read sent to
//! the mirror after a write was acknowledged sees that write (the channel
//! is FIFO). Readers go to the mirror when the shard thread has been busy
//! for a while, or when its answer is late (a hedged request, see
//! `Store::get`). The mirror uses a different write-buffer size, so its own
//! compactions fall at other moments than the shard's.
//!
//! The mirror never changes anything on its own: an expired or unreadable
//! entry is reported, and the shard thread deletes it when it sees it. Its
//! reads are exact as the shard's are (`db::get_exact`), and it reopens
//! after them as the shard does. It
//! never writes the hot tier either, since it may lag behind the shard.
//! It deletes blob files when the shard tells it to, after the batches that
//! moved their last entries away, so it never reads a file that is gone.
//!
//! It is rebuilt from the shard's files at every start (tables are
//! immutable, so they are hard-linked, not copied), so the two can never
//! drift apart across a crash. If the mirror fails it stops taking reads
//! until it is reset; the shard alone still serves everything.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use rusty_leveldb::DB;
use tokio::sync::{mpsc, oneshot};

use super::blobs::BlobReader;
use super::counters::Counters;
use super::db::{self, Op, batch_of};
use super::error::StoreError;
use super::lookup::Lookup;
use crate::clock::Clock;

pub enum MirrorCommand {
    /// A batch the shard has written.
    Apply(Vec<Op>),
    Get {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Lookup, StoreError>>,
    },
    /// The shard no longer references blob file `id`: delete it.
    DropBlobFile(u32),
    /// Starts over as a copy of the shard's files (after the shard was
    /// cleared or replaced).
    Reset {
        reply: std::sync::mpsc::SyncSender<()>,
    },
    Shutdown,
}

pub struct Mirror {
    index: usize,
    /// The shard's LevelDB directory, copied at start and on reset.
    source: PathBuf,
    dir: PathBuf,
    db: Option<DB>,
    blobs: BlobReader,
    healthy: Arc<AtomicBool>,
    clock: Clock,
    counters: Arc<Counters>,
    /// A miss was confirmed with an iterator since `opened_at` (see
    /// `db::reopen_due`).
    iterated: bool,
    opened_at: Instant,
}

impl Mirror {
    /// Builds the mirror as a copy of `source`, which must not be written
    /// meanwhile (the shard is open but idle).
    pub fn open(
        index: usize,
        source: PathBuf,
        dir: PathBuf,
        blobs_dir: PathBuf,
        healthy: Arc<AtomicBool>,
        clock: Clock,
        counters: Arc<Counters>,
    ) -> Result<Mirror, StoreError> {
        let mut m = Mirror {
            index,
            source,
            dir,
            db: None,
            blobs: BlobReader::new(blobs_dir),
            healthy,
            clock,
            counters,
            iterated: false,
            opened_at: Instant::now(),
        };
        m.rebuild()?;
        Ok(m)
    }

    fn rebuild(&mut self) -> Result<(), StoreError> {
        self.healthy.store(false, Ordering::Release);
        if let Some(mut db) = self.db.take() {
            let _ = db.close();
        }
        copy_db(&self.source, &self.dir)?;
        self.open_db()?;
        self.blobs.forget_all();
        self.healthy.store(true, Ordering::Release);
        Ok(())
    }

    fn open_db(&mut self) -> Result<(), StoreError> {
        let db = db::open_contained(&self.dir, db::options(MIRROR_WRITE_BUFFER))
            .map_err(|e| StoreError::open(&self.dir, e))?;
        self.db = Some(db);
        self.iterated = false;
        self.opened_at = Instant::now();
        Ok(())
    }

    /// Closes and opens the DB again after a confirmation made an
    /// iterator, so its compactions drop deleted data again; a mirror that
    /// does not open again stops taking reads.
    fn reopen(&mut self) {
        Counters::bump(&self.counters.reopens);
        if let Some(mut db) = self.db.take() {
            let _ = db.close();
        }
        if let Err(e) = self.open_db() {
            tracing::error!(shard = self.index, error = %e, "read mirror disabled");
            self.healthy.store(false, Ordering::Release);
        }
    }

    pub fn run(mut self, mut rx: mpsc::Receiver<MirrorCommand>) {
        while let Some(cmd) = rx.blocking_recv() {
            match cmd {
                MirrorCommand::Shutdown => break,
                MirrorCommand::Reset { reply } => {
                    if let Err(e) = self.rebuild() {
                        tracing::error!(shard = self.index, error = %e, "rebuilding the read mirror");
                    }
                    let _ = reply.send(());
                }
                MirrorCommand::DropBlobFile(id) => {
                    if let Err(e) = self.blobs.remove(id) {
                        tracing::warn!(shard = self.index, file = id, error = %e, "deleting a blob file");
                    }
                }
                MirrorCommand::Apply(ops) => {
                    if !self.healthy.load(Ordering::Acquire) {
                        continue;
                    }
                    if let Err(e) = self.apply(ops) {
                        // Out of step with the shard: stop serving reads
                        // until the next reset or restart.
                        tracing::error!(shard = self.index, error = %e, "read mirror disabled");
                        self.healthy.store(false, Ordering::Release);
                    }
                }
                MirrorCommand::Get { key, reply } => {
                    let _ = reply.send(self.get(&key));
                }
            }
            if self.iterated && db::reopen_due(self.opened_at, rx.is_empty()) {
                self.reopen();
            }
        }
        if let Some(mut db) = self.db.take() {
            let _ = db.close();
        }
    }

    fn apply(&mut self, ops: Vec<Op>) -> Result<(), StoreError> {
        let db = self.db.as_mut().ok_or(StoreError::Unavailable)?;
        let batch = batch_of(&ops);
        catch_unwind(AssertUnwindSafe(|| db.write(batch, false)))
            .map_err(|_| StoreError::Unavailable)??;
        Ok(())
    }

    fn get(&mut self, key: &[u8]) -> Result<Lookup, StoreError> {
        if !self.healthy.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable);
        }
        let db = self.db.as_mut().ok_or(StoreError::Unavailable)?;
        let counters = &self.counters;
        let read = catch_unwind(AssertUnwindSafe(|| db::get_exact(db, &[key], counters))).map_err(
            |_| {
                self.healthy.store(false, Ordering::Release);
                StoreError::Unavailable
            },
        )?;
        let (mut found, iterated) = read?;
        self.iterated |= iterated;
        let Some(raw) = found.pop().flatten() else {
            return Ok(Lookup::Miss);
        };
        // Anything unreadable: the shard will find it, log it and delete it.
        self.blobs
            .load(key, &raw, self.clock.now_ms())
            .map_err(|_| StoreError::Unavailable)
    }
}

/// Different from the shard's, so the two rarely compact at once.
const MIRROR_WRITE_BUFFER: usize = 3 << 19;

/// Replaces `to` with a copy of the LevelDB files in `from`: tables are
/// hard-linked (they never change), the manifest, `CURRENT` and logs copied.
fn copy_db(from: &Path, to: &Path) -> Result<(), StoreError> {
    match std::fs::remove_dir_all(to) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
        _ => {}
    }
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if !entry.file_type()?.is_file() {
            continue;
        }
        let name = entry.file_name();
        let Some(n) = name.to_str() else { continue };
        if n == "LOCK" || n.starts_with("LOG") {
            continue;
        }
        let target = to.join(&name);
        if n.ends_with(".ldb") || n.ends_with(".sst") {
            std::fs::hard_link(entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The shard side of the link.
pub struct MirrorLink {
    pub tx: mpsc::Sender<MirrorCommand>,
    pub thread: Option<std::thread::JoinHandle<()>>,
}

impl MirrorLink {
    /// Forwards a command; from the shard thread, waiting for room.
    pub fn send(&self, cmd: MirrorCommand) -> bool {
        self.tx.blocking_send(cmd).is_ok()
    }

    /// Rebuilds the mirror from the shard's files and waits until it is.
    pub fn reset(&self) {
        let (reply, rx) = std::sync::mpsc::sync_channel(1);
        if self.send(MirrorCommand::Reset { reply }) {
            let _ = rx.recv();
        }
    }

    pub fn shutdown(&mut self) {
        let _ = self.tx.blocking_send(MirrorCommand::Shutdown);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// What readers need to reach a mirror.
#[derive(Clone)]
pub struct MirrorHandle {
    pub tx: mpsc::Sender<MirrorCommand>,
    pub healthy: Arc<AtomicBool>,
}

impl MirrorHandle {
    pub fn usable(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }
}
