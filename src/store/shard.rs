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

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use rusty_leveldb::{DB, LdbIterator, Options, StatusCode, WriteBatch};
use tokio::sync::{mpsc, oneshot};

use super::keys::{self, EXPIRY_TAG};
use super::purges::PurgeLog;
use super::record::{Kind, Record};
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
    /// Flushes and closes the DB; the thread exits after replying.
    Shutdown { reply: oneshot::Sender<()> },
}

pub struct ShardConfig {
    pub index: usize,
    pub dir: PathBuf,
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
}

fn db_options() -> Options {
    // The info LOG lists every table after each compaction and only rotates
    // on open; our own tracing says what matters, so LevelDB's goes nowhere.
    let sink = rusty_leveldb::infolog::Logger(Box::new(std::io::sink()));
    Options {
        create_if_missing: true,
        log: Some(std::rc::Rc::new(std::cell::RefCell::new(sink))),
        // Snappy: HTML compresses ~1.85x; off by default in rusty-leveldb.
        compressor: 1,
        // Fewer, larger tables: a 100 GB cache would otherwise be ~50,000
        // files against a 1,024-entry table cache.
        max_file_size: 8 << 20,
        max_open_files: 2048,
        ..Options::default()
    }
}

/// Opens the DB at `dir`. A lock error (another process has it) is fatal; any
/// other failure or a panic inside rusty-leveldb means the files are damaged,
/// so they are moved aside and an empty DB takes their place.
fn open_or_recover(index: usize, dir: &Path) -> Result<DB, StoreError> {
    let attempt = catch_unwind(AssertUnwindSafe(|| DB::open(dir, db_options())));
    let problem = match attempt {
        Ok(Ok(db)) => return Ok(db),
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
    catch_unwind(AssertUnwindSafe(|| DB::open(dir, db_options())))
        .map_err(|_| StoreError::Open(format!("{}: panicked on a fresh DB", dir.display())))?
        .map_err(|e| StoreError::Open(format!("{}: {e}", dir.display())))
}

/// Bytes on disk under `dir` (LevelDB keeps a flat directory).
pub fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

impl Shard {
    /// Opens the shard; runs on the caller's thread so a startup failure is
    /// reported before the server accepts anything.
    pub fn open(cfg: ShardConfig) -> Result<Shard, StoreError> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| StoreError::Open(format!("{}: {e}", cfg.dir.display())))?;
        let db = open_or_recover(cfg.index, &cfg.dir)?;
        Ok(Shard {
            index: cfg.index,
            dir: cfg.dir,
            db: Some(db),
            hot: cfg.hot,
            purges: cfg.purges,
            swept_span: None,
        })
    }

    /// The thread body: executes commands until shutdown or until every
    /// sender is gone. A panic inside one command is contained: that caller
    /// gets an error, the DB is reopened, and the shard keeps serving.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        while let Some(cmd) = rx.blocking_recv() {
            if let Command::Shutdown { reply } = cmd {
                self.close();
                let _ = reply.send(());
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| self.execute(cmd))).is_err() {
                tracing::error!(
                    shard = self.index,
                    "panic inside LevelDB; reopening the shard"
                );
                self.db = None;
                self.hot.clear();
                match open_or_recover(self.index, &self.dir) {
                    Ok(db) => self.db = Some(db),
                    Err(e) => tracing::error!(shard = self.index, error = %e, "shard is down"),
                }
            }
        }
        self.close();
    }

    fn close(&mut self) {
        if let Some(mut db) = self.db.take()
            && let Err(e) = db.close()
        {
            tracing::warn!(shard = self.index, error = %e, "closing shard");
        }
    }

    /// The open DB. A shard whose last (re)open failed, say for lack of file
    /// descriptors, tries again here, so it recovers once the cause passes.
    fn db(&mut self) -> Result<&mut DB, StoreError> {
        if self.db.is_none() {
            match open_or_recover(self.index, &self.dir) {
                Ok(db) => self.db = Some(db),
                Err(e) => {
                    tracing::error!(shard = self.index, error = %e, "shard is unavailable");
                    return Err(StoreError::Unavailable);
                }
            }
        }
        self.db.as_mut().ok_or(StoreError::Unavailable)
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
                let result = match self.get(&key) {
                    Ok(Lookup::Hit(_)) => Ok(false),
                    Ok(_) => self.put(key, record).map(|()| true),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Touch {
                key,
                expires_at,
                reply,
            } => {
                let result = match self.get(&key) {
                    Ok(Lookup::Hit(rec)) => {
                        self.put(key, Record { expires_at, ..rec }).map(|()| true)
                    }
                    Ok(_) => Ok(false),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Sweep { batch, reply } => {
                let _ = reply.send(self.sweep(batch));
            }
            Command::Shutdown { .. } => unreachable!("handled by run"),
        }
    }

    /// Reads an entry; an expired one is deleted here, a corrupt one is
    /// logged and deleted. Either way the caller sees no value.
    fn get(&mut self, key: &[u8]) -> Result<Lookup, StoreError> {
        let Some(raw) = self.db()?.get(key) else {
            return Ok(Lookup::Miss);
        };
        match Record::decode(&raw) {
            Ok(rec) if rec.is_expired(now_ms()) => {
                self.remove(key)?;
                Ok(Lookup::Expired)
            }
            Ok(rec) => {
                self.hot.insert(Bytes::copy_from_slice(key), rec.clone());
                Ok(Lookup::Hit(rec))
            }
            Err(e) => {
                tracing::warn!(
                    shard = self.index,
                    key = %String::from_utf8_lossy(key),
                    error = %e,
                    "unreadable record; treating it as a miss and deleting it"
                );
                self.remove(key)?;
                Ok(Lookup::Miss)
            }
        }
    }

    /// The live group record at `key`, if that is what is stored there.
    fn group_at(&mut self, key: &[u8]) -> Result<Option<Record>, StoreError> {
        Ok(self
            .db()?
            .get(key)
            .and_then(|raw| Record::decode(&raw).ok())
            .filter(|r| r.kind == Kind::Group))
    }

    /// Adds deleting a group's members to `batch`.
    fn drop_members(&self, group_key: &[u8], group: &Record, batch: &mut WriteBatch) {
        for m in group.group_members() {
            let mut k = group_key.to_vec();
            k.extend_from_slice(&m);
            self.hot.remove(k.as_slice());
            batch.delete(&k);
        }
    }

    fn add_record(batch: &mut WriteBatch, key: &[u8], record: &Record) {
        batch.put(key, &record.encode());
        if let Some(at) = record.expires_at {
            batch.put(&keys::expiry_key(at, key), b"");
        }
    }

    fn put(&mut self, key: Vec<u8>, record: Record) -> Result<(), StoreError> {
        let mut batch = WriteBatch::default();
        // A page that used to vary and no longer does: its variants go.
        if record.kind == Kind::Http
            && let Some(old) = self.group_at(&key)?
        {
            self.drop_members(&key, &old, &mut batch);
        }
        Self::add_record(&mut batch, &key, &record);
        // `sync` flushes the log to the OS on every write, so an acknowledged
        // write survives the process being killed (not a power loss: the
        // crate never fsyncs).
        self.db()?.write(batch, true)?;
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
        let mut batch = WriteBatch::default();
        let mut members = Vec::new();
        let mut expires_at = record.expires_at;
        if let Some(old) = self.group_at(&group_key)? {
            if old.meta == group_meta {
                members = old.group_members();
                // The group lives as long as its longest-lived member.
                expires_at = match (old.expires_at, expires_at) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            } else {
                // Members keyed by other header names can never match again.
                self.drop_members(&group_key, &old, &mut batch);
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
        Self::add_record(&mut batch, &group_key, &group);
        Self::add_record(&mut batch, &member_key, &record);
        self.db()?.write(batch, true)?;
        self.hot.insert(Bytes::from(group_key), group);
        self.hot.insert(Bytes::from(member_key), record);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        self.hot.remove(key);
        let mut batch = WriteBatch::default();
        batch.delete(key);
        self.db()?.write(batch, true)?;
        Ok(())
    }

    fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        let live = match self.get(key)? {
            Lookup::Hit(rec) => Some(rec),
            _ => None,
        };
        let Some(rec) = live else { return Ok(false) };
        let mut batch = WriteBatch::default();
        if rec.kind == Kind::Group {
            self.drop_members(key, &rec, &mut batch);
        }
        self.hot.remove(key);
        batch.delete(key);
        self.db()?.write(batch, true)?;
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
        let mut batch = WriteBatch::default();
        for key in &found {
            // Only live entries count; expired ones go too but quietly.
            let live = self
                .db()?
                .get(key)
                .and_then(|raw| Record::decode(&raw).ok())
                .is_some_and(|r| !r.is_expired(now));
            deleted += u64::from(live);
            self.hot.remove(key.as_slice());
            batch.delete(key);
        }
        if !found.is_empty() {
            self.db()?.write(batch, true)?;
            let end = keys::prefix_end(prefix).unwrap_or_else(|| vec![0xff; prefix.len() + 1]);
            self.compact_span(prefix, &end)?;
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
                    if Record::decode(&v).is_ok_and(|r| !r.is_expired(now)) {
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
        let mut wb = WriteBatch::default();
        for row in &due {
            let Some((at, entry)) = keys::parse_expiry_key(row) else {
                continue;
            };
            let current = self.db()?.get(entry).map(|raw| Record::decode(&raw));
            // The row is stale unless the entry still carries this deadline.
            if let Some(Ok(rec)) = current
                && rec.expires_at == Some(at)
            {
                self.hot.remove(entry);
                wb.delete(entry);
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
            wb.delete(row);
        }
        if !due.is_empty() {
            self.db()?.write(wb, true)?;
        }
        if !more && let Some((from, to)) = self.swept_span.take() {
            self.compact_span(&from, &to)?;
            // The index rows just deleted sit at the front of the `x` range.
            self.compact_span(&[EXPIRY_TAG], &keys::expiry_key(now, &[]))?;
        }
        Ok((removed, more))
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
