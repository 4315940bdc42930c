//! One LevelDB instance and the OS thread that owns it.
//!
//! rusty-leveldb's `DB` is `!Send` (built on `Rc<RefCell<..>>`) and every
//! call, `get` included, takes `&mut self` and may run a compaction inline.
//! So each shard's DB lives on a dedicated thread that executes [`Command`]s
//! from a bounded channel, one at a time; async callers never block the tokio
//! runtime and a compaction in one shard stalls only that shard's queue.
//!
//! The thread also owns the shard's slice of the hot tier ([`Hot`]): every
//! mutation of a key (put, delete, purge, expiry) goes through this thread,
//! so the LevelDB entry and its hot copy change in one place and in order;
//! readers on other threads only ever look the hot tier up.
//!
//! Two rusty-leveldb defects are worked around here (see
//! `shared/notes/rusty-leveldb.md`):
//! - once any iterator has existed, compaction stops dropping deleted data
//!   until the DB is reopened: every operation that iterates ends with
//!   [`Shard::reopen`], and a purge or sweep that deleted data then compacts
//!   the span it deleted;
//! - opening after a crash can fail or panic: the directory is moved aside
//!   and the shard starts empty (this is a cache), and the event is logged.
//!
//! Large bodies go to the shard's blob files ([`Blobs`]); LevelDB keeps the
//! record with a reference. Every batch that adds or drops a reference also
//! updates the live-byte row of the blob file concerned (see [`Tx`]), so the
//! collector knows which files are mostly dead without reading them: files
//! with no live bytes are deleted, files under half live have their live
//! entries copied to the active file first ([`Shard::collect`]), a bounded
//! step at a time between requests.

use std::collections::{HashMap, HashSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rusty_leveldb::{DB, LdbIterator, Options, StatusCode};
use tokio::sync::{mpsc, oneshot};

use super::blobs::Blobs;
use super::keys::{self, EXPIRY_TAG};
use super::mirror::{Mirror, MirrorCommand, MirrorHandle, MirrorLink, Op, batch_of};
use super::purges::PurgeLog;
use super::record::{BlobRef, INLINE_MAX, Kind, Record, Stored};
use super::{Hot, Lookup, StoreError, now_ms};

/// Work sent to a shard thread. Each carries its own reply channel; a reply
/// sender dropped without an answer (the thread died) reads as
/// [`StoreError::Unavailable`] on the caller's side.
pub enum Command {
    Get {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Lookup, StoreError>>,
    },
    Put {
        key: Vec<u8>,
        record: Record,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Stores `record` only if no live entry is at `key`; replies whether
    /// it stored. Atomic: the shard thread does the check and the write.
    PutIfAbsent {
        key: Vec<u8>,
        record: Record,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Gives a live entry a new deadline; replies whether one was there.
    Touch {
        key: Vec<u8>,
        expires_at: Option<u64>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Stores a page unless it was purged after `since` (see
    /// `store::purges`); replies whether it stored. With a `member`
    /// (suffix, group meta) the page is stored at `key + suffix` and listed
    /// in the group record at `key` (created, or replaced when its meta
    /// changes).
    PutPage {
        key: Vec<u8>,
        member: Option<(Vec<u8>, Bytes)>,
        record: Record,
        since: u64,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Replies whether a live entry was there. Deleting a group deletes its
    /// members.
    Delete {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Deletes the entry only if it is still expired: a reader saw it expired
    /// in the hot tier, but a newer write may have replaced it since.
    DeleteIfExpired { key: Vec<u8> },
    DeletePrefix {
        prefix: Vec<u8>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Count {
        prefixes: Vec<Vec<u8>>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Clear {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Removes up to `batch` expired entries; replies (removed, more left).
    Sweep {
        batch: usize,
        reply: oneshot::Sender<Result<(u64, bool), StoreError>>,
    },
    /// One bounded step of blob garbage collection, copying at most
    /// `budget` bytes; replies (bytes freed, more to do).
    Collect {
        budget: u64,
        reply: oneshot::Sender<Result<(u64, bool), StoreError>>,
    },
    /// Flushes and closes the DB; the thread exits after replying.
    Shutdown { reply: oneshot::Sender<()> },
    /// Holds the thread as a long compaction would (tests of the mirror).
    #[cfg(test)]
    Stall(std::time::Duration),
}

impl Command {
    fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "get",
            Command::Put { .. } => "put",
            Command::PutIfAbsent { .. } => "put-if-absent",
            Command::Touch { .. } => "touch",
            Command::PutPage { .. } => "put-page",
            Command::Delete { .. } => "delete",
            Command::DeleteIfExpired { .. } => "delete-if-expired",
            Command::DeletePrefix { .. } => "delete-prefix",
            Command::Count { .. } => "count",
            Command::Clear { .. } => "clear",
            Command::Sweep { .. } => "sweep",
            Command::Collect { .. } => "collect",
            Command::Shutdown { .. } => "shutdown",
            #[cfg(test)]
            Command::Stall(_) => "stall",
        }
    }
}

/// A command taking longer than this is logged: it held up its shard.
const SLOW_COMMAND: std::time::Duration = std::time::Duration::from_millis(20);

pub struct ShardConfig {
    pub index: usize,
    pub dir: PathBuf,
    /// Where the read mirror keeps its copy of the LevelDB files.
    pub mirror_dir: PathBuf,
    /// Set to when the running command started (see [`busy_since`]).
    pub busy: Arc<AtomicU64>,
    pub hot: Arc<Hot>,
    pub purges: Arc<PurgeLog>,
}

/// State owned by the shard thread.
pub struct Shard {
    index: usize,
    dir: PathBuf,
    db: Option<DB>,
    hot: Arc<Hot>,
    purges: Arc<PurgeLog>,
    /// Key span deleted by the current sweep round, compacted when it ends.
    swept_span: Option<(Vec<u8>, Vec<u8>)>,
    blobs: Blobs,
    /// Live bytes per blob file: a cache of the `b` rows.
    live: HashMap<u32, u64>,
    /// The blob file being collected and the offset reached.
    collecting: Option<(u32, u64)>,
    mirror: Option<MirrorLink>,
    busy: Arc<AtomicU64>,
    /// Hashes of keys read from disk once recently (see [`Shard::admit`]).
    seen: HashSet<u64>,
    /// How many keys `seen` holds before it starts over: about as many as
    /// the shard's hot tier holds pages.
    seen_max: usize,
}

/// Microseconds since the process's first call, plus one: a command start
/// stamp that is never 0 (0 means idle).
pub fn clock_us() -> u64 {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

/// Changes staged for one atomic LevelDB write: the batch, plus how the
/// live bytes of each blob file move with it.
#[derive(Default)]
struct Tx {
    ops: Vec<Op>,
    live: HashMap<u32, i64>,
    /// Keys whose previous value is already accounted for in `live`.
    seen: HashSet<Vec<u8>>,
}

impl Tx {
    fn put(&mut self, key: &[u8], value: Vec<u8>) {
        self.ops.push((key.to_vec(), Some(value)));
    }

    /// Notes that `old`, the value `key` holds now, is being replaced or
    /// deleted: its blob bytes come off the live count. Once per key per
    /// transaction; returns whether this was the first time.
    fn replaces(&mut self, key: &[u8], old: Option<&Stored>) -> bool {
        if !self.seen.insert(key.to_vec()) {
            return false;
        }
        if let Some(r) = old.and_then(|s| s.blob) {
            *self.live.entry(r.file).or_default() -= r.entry_len(key.len()) as i64;
        }
        true
    }

    /// Stages `record` at `key`, its body inline or at `blob` (whose bytes
    /// count as live), with its expiry-index row.
    fn put_record(&mut self, key: &[u8], record: &Record, blob: Option<BlobRef>) {
        match blob {
            Some(r) => {
                *self.live.entry(r.file).or_default() += r.entry_len(key.len()) as i64;
                self.put(key, record.encode_with_blob(&r));
            }
            None => self.put(key, record.encode()),
        }
        if let Some(at) = record.expires_at {
            self.put(&keys::expiry_key(at, key), Vec::new());
        }
    }

    fn delete(&mut self, key: &[u8]) {
        self.ops.push((key.to_vec(), None));
    }
}

/// A blob file is collected once less than this share of it is live.
const COLLECT_BELOW: f64 = 0.5;
/// Dead bytes the active file must hold before it is rolled to be
/// collected: below this, collecting costs more than it frees.
const ACTIVE_DEAD_MIN: u64 = 8 << 20;

/// LevelDB options for a shard (and, with another write buffer, for its
/// mirror). LevelDB holds records and page metadata only (bodies are in
/// blob files): a few hundred bytes per page, so its caches stay small.
pub(super) fn db_options(write_buffer: usize) -> Options {
    // The info LOG lists every table after each compaction and only rotates
    // on open; our own tracing says what matters, so LevelDB's goes nowhere.
    let sink = rusty_leveldb::infolog::Logger(Box::new(std::io::sink()));
    Options {
        create_if_missing: true,
        log: Some(std::rc::Rc::new(std::cell::RefCell::new(sink))),
        // Snappy for inline values and metadata; off by default.
        compressor: 1,
        // rusty-leveldb counts this in blocks (capacity / block size), so
        // with 4 KiB blocks it is also about the bytes it holds.
        block_cache_capacity_bytes: 1 << 20,
        write_buffer_size: write_buffer,
        // Smaller tables make each compaction step smaller.
        max_file_size: 2 << 20,
        max_open_files: 2048,
        ..Options::default()
    }
}

/// Memtable size: LevelDB keeps up to two per DB (one being flushed), and
/// every shard has two DBs (see `store::mirror`).
const WRITE_BUFFER: usize = 2 << 20;
/// Batches the mirror may lag behind before the shard waits for it.
const MIRROR_QUEUE: usize = 4096;

/// Opens the DB at `dir`. A lock error (another process has it) is fatal; any
/// other failure or a panic inside rusty-leveldb means the files are damaged,
/// so they are moved aside and an empty DB takes their place.
///
/// Returns the DB and whether the old files were moved aside (their blob
/// files went with them).
fn open_or_recover(index: usize, dir: &Path) -> Result<(DB, bool), StoreError> {
    let attempt = catch_unwind(AssertUnwindSafe(|| DB::open(dir, db_options(WRITE_BUFFER))));
    let problem = match attempt {
        Ok(Ok(db)) => return Ok((db, false)),
        Ok(Err(e)) if e.code == StatusCode::LockError => {
            return Err(StoreError::Open(format!(
                "{}: {} (is another bigcache using this data directory?)",
                dir.display(),
                e.err
            )));
        }
        // Damage in the files themselves: moving them aside is the cure.
        Ok(Err(e))
            if matches!(
                e.code,
                StatusCode::Corruption
                    | StatusCode::InvalidData
                    | StatusCode::CompressionError
                    | StatusCode::NotFound
            ) =>
        {
            e.to_string()
        }
        // Anything else (out of file descriptors, disk full, permissions)
        // may pass and says nothing about the data: keep it, report it.
        Ok(Err(e)) => {
            return Err(StoreError::Open(format!("{}: {e}", dir.display())));
        }
        Err(_) => "rusty-leveldb panicked while opening".to_string(),
    };
    let aside = dir.with_extension(format!("corrupt-{}", now_ms()));
    tracing::error!(
        shard = index,
        dir = %dir.display(),
        aside = %aside.display(),
        %problem,
        "shard could not be opened; moving it aside and starting empty"
    );
    std::fs::rename(dir, &aside)
        .map_err(|e| StoreError::Open(format!("moving {} aside: {e}", dir.display())))?;
    let db = catch_unwind(AssertUnwindSafe(|| DB::open(dir, db_options(WRITE_BUFFER))))
        .map_err(|_| StoreError::Open(format!("{}: panicked on a fresh DB", dir.display())))?
        .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))?;
    Ok((db, true))
}

/// Bytes on disk under a shard's directory: LevelDB's flat files plus the
/// `blobs` subdirectory.
pub fn dir_size(dir: &Path) -> u64 {
    fn flat(dir: &Path) -> u64 {
        std::fs::read_dir(dir)
            .map(|rd| {
                rd.filter_map(|e| e.ok()?.metadata().ok())
                    .filter(|m| m.is_file())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    }
    flat(dir) + flat(&dir.join(BLOBS_DIR))
}

const BLOBS_DIR: &str = "blobs";

impl Shard {
    /// Opens the shard; runs on the caller's thread so a startup failure is
    /// reported before the server accepts anything.
    pub fn open(cfg: ShardConfig) -> Result<(Shard, MirrorHandle), StoreError> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| StoreError::Open(format!("{}: {e}", cfg.dir.display())))?;
        let (db, _) = open_or_recover(cfg.index, &cfg.dir)?;
        let blobs = Blobs::open(cfg.dir.join(BLOBS_DIR))?;
        let shard_hot_capacity = cfg.hot.capacity();
        // Built while the shard is open and idle, from its files.
        let healthy = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(MIRROR_QUEUE);
        // Without its mirror a shard still serves everything, only reads
        // then wait out its compactions: worth a loud log, not a refusal
        // to start.
        let mirror = Mirror::open(
            cfg.index,
            cfg.dir.clone(),
            cfg.mirror_dir,
            cfg.dir.join(BLOBS_DIR),
            healthy.clone(),
        )
        .and_then(|m| {
            std::thread::Builder::new()
                .name(format!("bigcache-mirror-{:02}", cfg.index))
                .spawn(move || m.run(rx))
                .map_err(StoreError::from)
        });
        let link = match mirror {
            Ok(thread) => Some(MirrorLink {
                tx: tx.clone(),
                thread: Some(thread),
            }),
            Err(e) => {
                tracing::error!(shard = cfg.index, error = %e, "no read mirror for this shard");
                None
            }
        };
        let handle = MirrorHandle { tx, healthy };
        let shard = Shard {
            index: cfg.index,
            dir: cfg.dir,
            db: Some(db),
            hot: cfg.hot,
            purges: cfg.purges,
            swept_span: None,
            blobs,
            live: HashMap::new(),
            collecting: None,
            mirror: link,
            busy: cfg.busy,
            seen: HashSet::new(),
            seen_max: (shard_hot_capacity / 16_384).clamp(256, 1 << 16) as usize,
        };
        Ok((shard, handle))
    }

    /// The thread body: executes commands until shutdown or until every
    /// sender is gone. A panic inside one command is contained: that caller
    /// gets an error, the DB is reopened, and the shard keeps serving.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.blocking_recv() {
            if let Command::Shutdown { reply } = cmd {
                self.shut_down();
                let _ = reply.send(());
                return;
            }
            let name = cmd.name();
            let started = Instant::now();
            self.busy.store(clock_us(), Ordering::Release);
            let outcome = catch_unwind(AssertUnwindSafe(|| self.execute(cmd)));
            self.busy.store(0, Ordering::Release);
            let took = started.elapsed();
            if took >= SLOW_COMMAND {
                // Usually a LevelDB compaction run inline: everything queued
                // for this shard waited this long.
                tracing::warn!(
                    shard = self.index,
                    command = name,
                    took_ms = took.as_millis() as u64,
                    "slow store command"
                );
            }
            if outcome.is_err() {
                tracing::error!(
                    shard = self.index,
                    "panic inside LevelDB; reopening the shard"
                );
                self.db = None;
                self.hot.clear();
                self.live.clear();
                self.collecting = None;
                if let Err(e) = self.open_db() {
                    tracing::error!(shard = self.index, error = %e, "shard is down");
                }
            }
        }
        self.shut_down();
    }

    fn close(&mut self) {
        if let Some(mut db) = self.db.take()
            && let Err(e) = db.close()
        {
            tracing::warn!(shard = self.index, error = %e, "closing shard");
        }
    }

    /// Closes the DB and stops the mirror: the end of the shard.
    fn shut_down(&mut self) {
        self.close();
        if let Some(mut m) = self.mirror.take() {
            m.shutdown();
        }
    }

    /// Rebuilds the mirror from the shard's current files.
    fn reset_mirror(&mut self) {
        if let Some(m) = &self.mirror {
            m.reset();
        }
    }

    /// Writes `ops` in one batch, then forwards them to the mirror, before
    /// the caller acknowledges anything: a read the mirror answers after an
    /// acknowledged write sees it.
    fn write(&mut self, ops: Vec<Op>) -> Result<(), StoreError> {
        let batch = batch_of(&ops);
        // `sync` flushes the log to the OS on every write, so an acknowledged
        // write survives the process being killed (not a power loss: the
        // crate never fsyncs).
        self.db()?.write(batch, true)?;
        if let Some(m) = &self.mirror {
            m.send(MirrorCommand::Apply(ops));
        }
        Ok(())
    }

    /// The open DB. A shard whose last (re)open failed, say for lack of file
    /// descriptors, tries again here, so it recovers once the cause passes.
    fn db(&mut self) -> Result<&mut DB, StoreError> {
        if self.db.is_none()
            && let Err(e) = self.open_db()
        {
            tracing::error!(shard = self.index, error = %e, "shard is unavailable");
            return Err(StoreError::Unavailable);
        }
        self.db.as_mut().ok_or(StoreError::Unavailable)
    }

    /// Opens the DB; when the old files had to be moved aside, the blob
    /// files went with them and the shard starts over with fresh ones.
    fn open_db(&mut self) -> Result<(), StoreError> {
        let (db, moved) = open_or_recover(self.index, &self.dir)?;
        self.db = Some(db);
        if moved {
            self.reset_blobs()?;
        }
        Ok(())
    }

    /// After the shard's files were replaced: fresh blob files, an empty
    /// hot tier, and a mirror rebuilt from the new files.
    fn reset_blobs(&mut self) -> Result<(), StoreError> {
        self.hot.clear();
        self.live.clear();
        self.collecting = None;
        self.blobs = Blobs::open(self.dir.join(BLOBS_DIR))?;
        self.reset_mirror();
        Ok(())
    }

    fn execute(&mut self, cmd: Command) {
        match cmd {
            Command::Get { key, reply } => {
                let _ = reply.send(self.get(&key));
            }
            Command::Put { key, record, reply } => {
                let _ = reply.send(self.put(key, record));
            }
            Command::PutPage {
                key,
                member,
                record,
                since,
                reply,
            } => {
                let result = if self.purges.purged_since(&key, since) {
                    Ok(false)
                } else {
                    match member {
                        None => self.put(key, record),
                        Some((suffix, meta)) => self.put_member(key, &suffix, meta, record),
                    }
                    .map(|()| true)
                };
                let _ = reply.send(result);
            }
            Command::Delete { key, reply } => {
                let _ = reply.send(self.delete(&key));
            }
            Command::DeleteIfExpired { key } => {
                if let Err(e) = self.get(&key) {
                    tracing::warn!(shard = self.index, error = %e, "deleting expired entry");
                }
            }
            Command::DeletePrefix { prefix, reply } => {
                let _ = reply.send(self.delete_prefix(&prefix));
            }
            Command::Count { prefixes, reply } => {
                let _ = reply.send(self.count(&prefixes));
            }
            Command::Clear { reply } => {
                let _ = reply.send(self.clear());
            }
            Command::PutIfAbsent { key, record, reply } => {
                let result = match self.live_at(&key) {
                    Ok(Some(_)) => Ok(false),
                    Ok(None) => self.put(key, record).map(|()| true),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Touch {
                key,
                expires_at,
                reply,
            } => {
                let _ = reply.send(self.touch(&key, expires_at));
            }
            Command::Sweep { batch, reply } => {
                let _ = reply.send(self.sweep(batch));
            }
            Command::Collect { budget, reply } => {
                let _ = reply.send(self.collect(budget));
            }
            Command::Shutdown { .. } => unreachable!("handled by run"),
            #[cfg(test)]
            Command::Stall(d) => std::thread::sleep(d),
        }
    }

    /// The decoded value at `key`, body not loaded. An unreadable value
    /// reads as nothing here; [`Shard::get`] is where it gets deleted.
    fn stored_at(&mut self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        Ok(self
            .db()?
            .get(key)
            .and_then(|raw| Record::decode(&raw).ok()))
    }

    /// The unexpired value at `key`, body not loaded.
    fn live_at(&mut self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        let now = now_ms();
        Ok(self.stored_at(key)?.filter(|s| !s.record.is_expired(now)))
    }

    /// Reads an entry; an expired one is deleted here, a corrupt one (in
    /// LevelDB or in its blob file) is logged and deleted. Either way the
    /// caller sees no value.
    fn get(&mut self, key: &[u8]) -> Result<Lookup, StoreError> {
        let Some(raw) = self.db()?.get(key) else {
            return Ok(Lookup::Miss);
        };
        let problem = match self.blobs.load(key, &raw, now_ms()) {
            Ok(Lookup::Hit(record)) => {
                if self.admit(key) {
                    self.hot.insert(Bytes::copy_from_slice(key), record.clone());
                }
                return Ok(Lookup::Hit(record));
            }
            Ok(_) => {
                self.remove(key)?;
                return Ok(Lookup::Expired);
            }
            Err(problem) => problem,
        };
        tracing::warn!(
            shard = self.index,
            key = %String::from_utf8_lossy(key),
            error = %problem,
            "unreadable record; treating it as a miss and deleting it"
        );
        self.remove(key)?;
        Ok(Lookup::Miss)
    }

    /// Whether a page read from disk goes into the hot tier: only on its
    /// second read within the last `seen_max` or so cold reads. With a
    /// long tail of pages read once, admitting every read only churned the
    /// tier (each insert evicting a page that was about to be read again)
    /// and cost throughput; pages read twice are the ones worth RAM.
    /// Freshly stored entries are always admitted (see `put`).
    fn admit(&mut self, key: &[u8]) -> bool {
        use std::hash::{BuildHasher, RandomState};
        static HASHER: std::sync::OnceLock<RandomState> = std::sync::OnceLock::new();
        let h = HASHER.get_or_init(RandomState::new).hash_one(key);
        if self.seen.remove(&h) {
            return true;
        }
        if self.seen.len() >= self.seen_max {
            self.seen.clear();
        }
        self.seen.insert(h);
        false
    }

    /// Live bytes recorded for blob file `id`.
    fn live_of(&mut self, id: u32) -> Result<u64, StoreError> {
        if let Some(&n) = self.live.get(&id) {
            return Ok(n);
        }
        let n = self
            .db()?
            .get(&keys::blob_live_key(id))
            .and_then(|v| v.first_chunk::<8>().map(|b| u64::from_le_bytes(*b)))
            .unwrap_or(0);
        self.live.insert(id, n);
        Ok(n)
    }

    /// Reads the value `key` holds before `tx` changes it and takes its
    /// blob bytes off the live count. Once per key per transaction: a later
    /// call for the same key returns `None` without reading.
    fn stage_old(&mut self, tx: &mut Tx, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        if tx.seen.contains(key) {
            return Ok(None);
        }
        let old = self.stored_at(key)?;
        tx.replaces(key, old.as_ref());
        Ok(old)
    }

    /// Stages writing `record` at `key`: a large body is appended to a blob
    /// file now and referenced from the record.
    fn stage_write(&mut self, tx: &mut Tx, key: &[u8], record: &Record) -> Result<(), StoreError> {
        self.stage_old(tx, key)?;
        let blob = if record.kind != Kind::Group && record.body.len() > INLINE_MAX {
            Some(self.blobs.append(key, &record.body)?)
        } else {
            None
        };
        tx.put_record(key, record, blob);
        Ok(())
    }

    fn stage_delete(&mut self, tx: &mut Tx, key: &[u8]) -> Result<(), StoreError> {
        self.stage_old(tx, key)?;
        self.hot.remove(key);
        tx.delete(key);
        Ok(())
    }

    /// Writes `tx` with the blob files' new live counts, in one batch.
    fn commit(&mut self, tx: Tx) -> Result<(), StoreError> {
        let Tx { mut ops, live, .. } = tx;
        let mut counts = Vec::with_capacity(live.len());
        for (id, delta) in live {
            if delta != 0 {
                let n = (self.live_of(id)? as i64 + delta).max(0) as u64;
                ops.push((
                    keys::blob_live_key(id).to_vec(),
                    Some(n.to_le_bytes().to_vec()),
                ));
                counts.push((id, n));
            }
        }
        self.write(ops)?;
        self.live.extend(counts);
        Ok(())
    }

    /// Stages deleting a group's members.
    fn drop_members(
        &mut self,
        tx: &mut Tx,
        group_key: &[u8],
        group: &Record,
    ) -> Result<(), StoreError> {
        for m in group.group_members() {
            let mut k = group_key.to_vec();
            k.extend_from_slice(&m);
            self.stage_delete(tx, &k)?;
        }
        Ok(())
    }

    fn put(&mut self, key: Vec<u8>, record: Record) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        let old = self.stage_old(&mut tx, &key)?;
        // A page that used to vary and no longer does: its variants go.
        if record.kind == Kind::Http
            && let Some(old) = old.filter(|s| s.record.kind == Kind::Group)
        {
            self.drop_members(&mut tx, &key, &old.record)?;
        }
        self.stage_write(&mut tx, &key, &record)?;
        self.commit(tx)?;
        self.hot.insert(Bytes::from(key), record);
        Ok(())
    }

    fn put_member(
        &mut self,
        group_key: Vec<u8>,
        member: &[u8],
        group_meta: Bytes,
        record: Record,
    ) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        let mut members = Vec::new();
        let mut expires_at = record.expires_at;
        let old = self.stage_old(&mut tx, &group_key)?;
        if let Some(old) = old.map(|s| s.record).filter(|r| r.kind == Kind::Group) {
            if old.meta == group_meta {
                members = old.group_members();
                // The group lives as long as its longest-lived member.
                expires_at = match (old.expires_at, expires_at) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            } else {
                // Members keyed by other header names can never match again.
                self.drop_members(&mut tx, &group_key, &old)?;
            }
        }
        if !members.iter().any(|m| m.as_ref() == member) {
            members.push(Bytes::copy_from_slice(member));
        }
        let group = Record {
            kind: Kind::Group,
            created_at: record.created_at,
            expires_at,
            meta: group_meta,
            body: Record::encode_group_members(members.iter().map(|m| m.as_ref())),
        };
        let mut member_key = group_key.clone();
        member_key.extend_from_slice(member);
        self.stage_write(&mut tx, &group_key, &group)?;
        self.stage_write(&mut tx, &member_key, &record)?;
        self.commit(tx)?;
        self.hot.insert(Bytes::from(group_key), group);
        self.hot.insert(Bytes::from(member_key), record);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        self.stage_delete(&mut tx, key)?;
        self.commit(tx)
    }

    fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        let mut tx = Tx::default();
        let Some(old) = self.stage_old(&mut tx, key)? else {
            return Ok(false);
        };
        if old.record.kind == Kind::Group {
            self.drop_members(&mut tx, key, &old.record)?;
        }
        self.stage_delete(&mut tx, key)?;
        self.commit(tx)?;
        Ok(!old.record.is_expired(now_ms()))
    }

    /// Gives a live entry a new deadline, keeping its body where it is.
    fn touch(&mut self, key: &[u8], expires_at: Option<u64>) -> Result<bool, StoreError> {
        let Some(old) = self.live_at(key)? else {
            return Ok(false);
        };
        let record = Record {
            expires_at,
            ..old.record.clone()
        };
        let mut tx = Tx::default();
        tx.replaces(key, Some(&old));
        tx.put_record(key, &record, old.blob);
        self.commit(tx)?;
        self.hot.remove(key);
        Ok(true)
    }

    /// Collects the keys under `prefix`, then closes the iterator before
    /// anything is deleted.
    fn keys_with_prefix(&mut self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        let mut it = self.db()?.new_iter()?;
        it.seek(prefix);
        while it.valid() {
            let Some((k, _)) = it.current() else { break };
            if !k.starts_with(prefix) {
                break;
            }
            out.push(k.to_vec());
            if !it.advance() {
                break;
            }
        }
        Ok(out)
    }

    fn delete_prefix(&mut self, prefix: &[u8]) -> Result<u64, StoreError> {
        let found = self.keys_with_prefix(prefix);
        self.reopen()?;
        let found = found?;
        let now = now_ms();
        let mut deleted = 0;
        let mut tx = Tx::default();
        for key in &found {
            // Only live entries count; expired ones go too but quietly.
            let old = self.stage_old(&mut tx, key)?;
            deleted += u64::from(old.is_some_and(|s| !s.record.is_expired(now)));
            self.stage_delete(&mut tx, key)?;
        }
        if !found.is_empty() {
            self.commit(tx)?;
            let end = keys::prefix_end(prefix).unwrap_or_else(|| vec![0xff; prefix.len() + 1]);
            self.compact_span(prefix, &end)?;
            self.drop_dead_files()?;
        }
        Ok(deleted)
    }

    fn count(&mut self, prefixes: &[Vec<u8>]) -> Result<u64, StoreError> {
        let now = now_ms();
        let mut n = 0;
        let result = (|| {
            for prefix in prefixes {
                let mut it = self.db()?.new_iter()?;
                it.seek(prefix);
                while it.valid() {
                    let Some((k, v)) = it.current() else { break };
                    if !k.starts_with(prefix) {
                        break;
                    }
                    if Record::decode(&v).is_ok_and(|s| !s.record.is_expired(now)) {
                        n += 1;
                    }
                    if !it.advance() {
                        break;
                    }
                }
            }
            Ok(n)
        })();
        self.reopen()?;
        result
    }

    /// Empties the shard by replacing its directory: instant, and the space
    /// comes back at once instead of after compaction.
    fn clear(&mut self) -> Result<(), StoreError> {
        self.close();
        self.hot.clear();
        let doomed = self.dir.with_extension("clearing");
        let _ = std::fs::remove_dir_all(&doomed);
        let renamed = std::fs::rename(&self.dir, &doomed);
        // Reopened whatever happened above (db() retries later if not).
        std::fs::create_dir_all(&self.dir)?;
        self.db()?;
        self.reset_blobs()?;
        renamed?;
        std::fs::remove_dir_all(&doomed)?;
        Ok(())
    }

    /// Reads the expiry index from its start up to now and deletes up to
    /// `batch` entries whose own deadline has passed. When a round ends (no
    /// more due rows), the shard is reopened and the deleted span compacted
    /// so the disk space really comes back.
    fn sweep(&mut self, batch: usize) -> Result<(u64, bool), StoreError> {
        let now = now_ms();
        let mut due = Vec::new();
        let mut more = false;
        let scan = (|| {
            let mut it = self.db()?.new_iter()?;
            it.seek(&[EXPIRY_TAG]);
            while it.valid() {
                let Some((k, _)) = it.current() else { break };
                match keys::parse_expiry_key(&k) {
                    Some((at, _)) if at <= now => {}
                    _ => break,
                }
                if due.len() == batch {
                    more = true;
                    break;
                }
                due.push(k.to_vec());
                if !it.advance() {
                    break;
                }
            }
            Ok::<_, StoreError>(())
        })();
        if !due.is_empty() || scan.is_err() {
            self.reopen()?;
        }
        scan?;
        let mut removed = 0;
        let mut tx = Tx::default();
        for row in &due {
            let Some((at, entry)) = keys::parse_expiry_key(row) else {
                continue;
            };
            let current = self.stored_at(entry)?;
            // The row is stale unless the entry still carries this deadline.
            if let Some(s) = current.filter(|s| s.record.expires_at == Some(at)) {
                tx.replaces(entry, Some(&s));
                self.stage_delete(&mut tx, entry)?;
                removed += 1;
                let span = self
                    .swept_span
                    .get_or_insert_with(|| (entry.to_vec(), entry.to_vec()));
                if entry < span.0.as_slice() {
                    span.0 = entry.to_vec();
                }
                if entry > span.1.as_slice() {
                    span.1 = entry.to_vec();
                }
            }
            tx.delete(row);
        }
        if !due.is_empty() {
            self.commit(tx)?;
        }
        if !more && let Some((from, to)) = self.swept_span.take() {
            self.compact_span(&from, &to)?;
            // The index rows just deleted sit at the front of the `x` range.
            self.compact_span(&[EXPIRY_TAG], &keys::expiry_key(now, &[]))?;
            self.drop_dead_files()?;
        }
        Ok((removed, more))
    }

    /// Deletes the blob files no record references any more (rolling the
    /// active file if it is one of them).
    fn drop_dead_files(&mut self) -> Result<u64, StoreError> {
        let mut freed = 0;
        for id in self.blobs.files()? {
            if self.live_of(id)? == 0 && self.collecting.is_none_or(|(c, _)| c != id) {
                freed += self.drop_file(id)?;
            }
        }
        Ok(freed)
    }

    /// Deletes blob file `id`. The mirror deletes it, after the batches
    /// that moved entries out of it, so it never reads a vanished file.
    fn drop_file(&mut self, id: u32) -> Result<u64, StoreError> {
        let len = self.blobs.file_len(id).unwrap_or(0);
        self.blobs.forget(id);
        self.live.remove(&id);
        self.write(vec![(keys::blob_live_key(id).to_vec(), None)])?;
        let handed = self
            .mirror
            .as_ref()
            .is_some_and(|m| m.send(MirrorCommand::DropBlobFile(id)));
        if !handed {
            self.blobs.remove(id)?;
        }
        Ok(len)
    }

    /// The blob file that most needs collecting: the least live share,
    /// under [`COLLECT_BELOW`]. The active file qualifies only once it
    /// holds [`ACTIVE_DEAD_MIN`] dead bytes; it is rolled first.
    fn pick_collectable(&mut self) -> Result<Option<u32>, StoreError> {
        let mut best: Option<(f64, u32)> = None;
        for id in self.blobs.files()? {
            let len = self.blobs.file_len(id)?;
            let live = self.live_of(id)?;
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

    /// One step of blob garbage collection: walks the file being collected
    /// from where the last step stopped, copies each entry a record still
    /// references to the active file (re-pointing the record), and deletes
    /// the file once the walk reaches its end.
    /// Walks at most `budget` bytes per step so the shard's queue never
    /// waits long.
    fn collect(&mut self, budget: u64) -> Result<(u64, bool), StoreError> {
        let mut freed = self.drop_dead_files()?;
        let (id, mut offset) = match self.collecting {
            Some(c) => c,
            None => match self.pick_collectable()? {
                Some(id) => (id, 0),
                None => return Ok((freed, false)),
            },
        };
        let mut tx = Tx::default();
        let mut scanned = 0u64;
        let mut done = false;
        while scanned < budget {
            let entry = match self.blobs.entry_at(id, offset) {
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
            let owner = self.stored_at(&entry.key)?;
            let Some((owner, old)) = owner
                .and_then(|s| s.blob.map(|b| (s, b)))
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
        self.commit(tx)?;
        if done {
            self.collecting = None;
            freed += self.drop_file(id)?;
            Ok((freed, self.pick_collectable()?.is_some()))
        } else {
            self.collecting = Some((id, offset));
            Ok((freed, true))
        }
    }

    /// Closes and reopens the DB: the only way to make rusty-leveldb drop
    /// deleted data again after an iterator has existed.
    fn reopen(&mut self) -> Result<(), StoreError> {
        self.close();
        self.db()?;
        Ok(())
    }

    /// Compacts `[from, to]` until the shard stops shrinking:
    /// `compact_range` covers a range only partially per call, and the first
    /// call may only turn the memtable into a level-0 table (no shrink yet).
    fn compact_span(&mut self, from: &[u8], to: &[u8]) -> Result<(), StoreError> {
        let started = Instant::now();
        let before = dir_size(&self.dir);
        let mut size = before;
        let mut idle = 0;
        // Data can sit several levels below the deletions, each call moves
        // one step, and a step may not shrink anything yet; a call with
        // nothing left to do costs about a millisecond.
        for _ in 0..12 {
            self.db()?.compact_range(from, to)?;
            let now = dir_size(&self.dir);
            idle = if now < size { 0 } else { idle + 1 };
            size = now;
            if idle == 3 {
                break;
            }
        }
        tracing::debug!(
            shard = self.index,
            before,
            after = size,
            took_ms = started.elapsed().as_millis() as u64,
            "compacted"
        );
        Ok(())
    }
}
