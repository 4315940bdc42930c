//! The persistent store: sharded LevelDB behind async handles, with a
//! directory of every entry and a byte-budgeted hot tier in RAM, and a
//! background expiry sweeper.
//!
//! ```text
//!  async callers ──► Store::get ──► hot tier hit? ──yes──► Record (no thread hop)
//!                       │ no
//!                       ▼
//!                  directory (RAM) ──absent──► miss
//!                       │ one whole entry
//!                       ▼
//!                  one positioned read of the blob entry ──► Record
//!                       │ anything else (a Vary list in LevelDB, a soft
//!                       │ purge, an old file, an error, not built yet)
//!                       ▼
//!      shard = crc32(key) % N ──bounded channel──► shard thread (owns one
//!                                                  LevelDB, the blob files,
//!                                                  and writes the directory)
//! ```
//!
//! Every byte this module puts on disk is specified in `docs/format.md`;
//! the code that writes each layout links there.
//!
//! The async side:
//! - [`Store`] (here): routes each key to its shard.
//! - `walk`: what walks many entries, every shard in steps (purges by
//!   prefix and tag, key listings, counts, the expiry sweep).
//! - `handle`: one shard's channel, hot slice and directory; the read that
//!   skips the shard thread, with `direct` (one positioned read).
//! - `directory`: where every entry is, in RAM (written by the shard).
//! - [`pages`]: the [`PageStore`] trait the proxy talks to, and
//!   [`memory`], an in-memory implementation for the proxy's tests.
//! - [`sweeper`]: the background task that expires and collects.
//! - [`budget`]: the background task that keeps the disk budget by
//!   evicting; `hotness`: what it knows about reads, in fixed RAM.
//!
//! The shard thread and what it owns:
//! - `shard`: the thread, command dispatch, entry and Vary-group writes,
//!   purges, counts and the expiry sweep; `command`: what it is asked.
//! - `db`: its LevelDB (options, crash recovery, scans, compaction).
//! - `tx`: a write staged as one batch with its live-byte accounting and
//!   directory changes.
//! - `space`: its blob files, their live counts and the collector;
//!   `blobs`: the blob-file I/O; `entry`: the blob-entry layout.
//! - `hot`: the hot tier and what gets admitted to it.
//!
//! - [`backlog`]: the bound on writes accepted but not yet on disk.
//!
//! Formats and shared pieces: [`record`] (the record codec),
//! [`keys`] (the key space), `layout` (the data directory),
//! `purges` (which pages were purged during a fetch), [`error`],
//! [`lookup`].
//!
//! Why shards: rusty-leveldb runs compaction inside `put`/`get`, stalling the
//! calling thread for up to seconds. With N independent DBs on N threads, a
//! compaction holds up only the requests queued for that one shard, and the
//! shards compact in parallel with each other. The shard count is fixed when
//! a data directory is created and recorded in it (`bigcache.meta`), since
//! the key-to-shard mapping depends on it.

pub mod backlog;
mod blobs;
pub mod budget;
mod command;
pub mod counters;
mod db;
mod direct;
mod directory;
mod entry;
pub mod error;
mod handle;
mod hot;
mod hotness;
pub mod keys;
pub mod layout;
pub mod lookup;
pub mod memory;
pub mod pages;
mod purges;
pub mod record;
mod shard;
mod space;
pub mod sweeper;
mod tx;
mod walk;

pub use walk::{KEYS_SCAN, MAX_MARKED, MAX_MARKED_BYTES, PREFIX_STEP, Purged, TAG_STEP};

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::clock::Clock;
use backlog::Room;
use command::Command;
use handle::ShardHandle;
use shard::{Shard, ShardConfig};

use command::PrefixStep;
pub use command::{DeleteIf, Incr};

/// Keys one step of [`site_copies`] lists (a copy's variants count too).
const SITE_STEP: usize = 1000;

/// The keys of the other sites' copies of the page at `key` (a bare page
/// key, `p<target> NUL`): `p<target> NUL @<scheme>://<host> NUL`
/// (`proxy::site`), on the same shard. None for any other key. Listed in
/// steps to the end: a copy's variants sort among the copies, and any
/// client can add variants.
async fn site_copies(shard: &ShardHandle, key: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
    if key.iter().filter(|&&b| b == 0).count() != 1 || key.last() != Some(&0) {
        return Ok(Vec::new());
    }
    let prefix = [key, b"@"].concat();
    let mut copies = Vec::new();
    let mut after = None;
    loop {
        let page = shard
            .call(|reply| Command::Keys {
                prefix: prefix.clone(),
                after: after.clone(),
                limit: SITE_STEP,
                scan: SITE_STEP * 4,
                reply,
            })
            .await?;
        let more = page.stopped_at.is_some();
        after = page.stopped_at.or_else(|| page.keys.last().cloned());
        // A copy's variants are listed too, and deleted with it.
        copies.extend(page.keys.into_iter().filter(|k| keys::is_site_copy(key, k)));
        if !more {
            return Ok(copies);
        }
    }
}

pub use error::StoreError;
pub use keys::Namespace;
pub use lookup::Lookup;
pub use pages::PageStore;
pub use record::{Kind, Record};

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Shard count for a new data directory; an existing one keeps its own.
    pub shards: usize,
    /// Total hot-tier budget in bytes, split evenly across shards. 0 disables it.
    pub hot_bytes: u64,
    /// Commands that may wait for one shard before callers get `Busy`.
    pub queue_depth: usize,
    /// Variants kept per page group; a new one beyond it replaces the
    /// oldest, so one page's group record stays small.
    pub max_variants: usize,
    /// fsync every write before acknowledging it (`--sync`).
    pub sync: bool,
    /// What "now" is for every lifetime the store keeps.
    pub clock: Clock,
    /// `--max-disk`: `None` for the directory's recorded default, `Some(0)`
    /// for no limit.
    pub max_disk: Option<u64>,
    /// `--min-free`.
    pub min_free: budget::MinFree,
}

/// The directories' size ([`Store::directory_usage`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DirectoryUsage {
    pub entries: u64,
    /// RAM their slots take.
    pub bytes: u64,
    /// Shards whose directory is built.
    pub ready_shards: u64,
}

/// A cheap-to-clone handle to the store.
#[derive(Clone)]
pub struct Store {
    shards: Arc<[ShardHandle]>,
    counters: Arc<counters::Counters>,
    dir: Arc<std::path::Path>,
    /// Page purges, so a page fetched before one is not stored after it.
    purges: Arc<purges::PurgeLog>,
    clock: Clock,
    limits: budget::Limits,
    /// Reads per key since the evictor last looked (`store::hotness`).
    hotness: Arc<hotness::Hotness>,
}

/// Counters in the hotness table: 4 MiB, whatever the number of pages.
const HOTNESS_BITS: u32 = 22;
const HOTNESS_FILE: &str = "hotness";

/// Blob bytes walked per garbage-collection step: a few milliseconds of
/// work, so requests queued behind it barely notice.
const COLLECT_STEP: u64 = 2 << 20;

impl Store {
    /// Opens (or creates) every shard and starts their threads.
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| StoreError::open(&cfg.dir, e))?;
        let n = layout::open(&cfg.dir, cfg.shards.clamp(1, *layout::SHARDS.end()))?;
        let limits = budget::Limits::resolve(&cfg.dir, n, cfg.max_disk, cfg.min_free)?;
        let hotness = Arc::new(hotness::Hotness::new(HOTNESS_BITS));
        let hotness_file = cfg.dir.join(HOTNESS_FILE);
        if let Err(e) = hotness.load(&hotness_file) {
            tracing::warn!(path = %hotness_file.display(), error = %e, "hotness table not read; starting cold");
        }
        let purges = Arc::new(purges::PurgeLog::default());
        let counters = Arc::new(counters::Counters::default());
        let hot_each = cfg.hot_bytes / n as u64;
        let mut shards = Vec::with_capacity(n);
        for index in 0..n {
            let hot = Arc::new(hot::slice(hot_each, hotness.clone()));
            let mirror = layout::mirror_dir(&cfg.dir, index);
            if mirror.exists() {
                // An earlier release's read mirror: reads no longer need it.
                if let Err(e) = std::fs::remove_dir_all(&mirror) {
                    tracing::warn!(path = %mirror.display(), error = %e, "removing an old read mirror");
                }
            }
            let directory = Arc::new(directory::Directory::new());
            let shard_dir = layout::shard_dir(&cfg.dir, index);
            let direct = Arc::new(direct::DirectReader::new(layout::blobs_dir(&shard_dir)));
            let admission = Arc::new(std::sync::Mutex::new(hot::Admission::for_slice(&hot)));
            let opening = std::time::Instant::now();
            let shard = Shard::open(ShardConfig {
                index,
                dir: shard_dir,
                hot: hot.clone(),
                purges: purges.clone(),
                max_variants: cfg.max_variants.max(1),
                sync: cfg.sync,
                clock: cfg.clock.clone(),
                counters: counters.clone(),
                budgeted: limits.enforced(),
                blob_file_max: limits.file_max,
                hotness: hotness.clone(),
                directory: directory.clone(),
                direct: direct.clone(),
                admission: admission.clone(),
            })?;
            // LevelDB's recovery writes the log it replayed into a table
            // and may compact inline: the part of a start that grows with
            // what was written before the last stop.
            tracing::info!(
                shard = index,
                took_ms = opening.elapsed().as_millis() as u64,
                "shard opened"
            );
            let (tx, rx) = mpsc::channel(cfg.queue_depth.max(1));
            let thread = std::thread::Builder::new()
                .name(format!("bigcache-shard-{index:02}"))
                .spawn(move || {
                    crate::sched::batch_this_thread();
                    shard.run(rx)
                })?;
            shards.push(ShardHandle {
                tx,
                clock: cfg.clock.clone(),
                hot,
                directory,
                direct,
                admission,
                counters: counters.clone(),
                thread: std::sync::Mutex::new(Some(thread)),
                backlog: backlog::Backlog::new(backlog::BACKLOG_BYTES / n, backlog::ROOM_WAIT),
            });
        }
        counters.disk_budget.store(
            limits.max_disk.unwrap_or(0),
            std::sync::atomic::Ordering::Relaxed,
        );
        counters
            .disk_min_free
            .store(limits.min_free, std::sync::atomic::Ordering::Relaxed);
        Ok(Store {
            counters,
            shards: shards.into(),
            dir: cfg.dir.as_path().into(),
            purges,
            clock: cfg.clock.clone(),
            limits,
            hotness,
        })
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    /// The clock every lifetime in this store is measured against.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    fn shard(&self, key: &[u8]) -> &ShardHandle {
        &self.shards[keys::shard_of(key, self.shards.len())]
    }

    /// Reads an entry. Expired entries are never returned (and are deleted).
    pub async fn get(&self, ns: Namespace, key: &[u8]) -> Result<Lookup, StoreError> {
        // Built on the stack when it fits: a hot-tier hit allocates nothing
        // for its key.
        let mut stack = [0u8; 128];
        let heap;
        let key: &[u8] = match keys::entry_key_in(ns, key, &mut stack) {
            Some(k) => k,
            None => {
                heap = keys::entry_key(ns, key);
                &heap
            }
        };
        let shard = self.shard(key);
        let now = self.clock.now_ms();
        match shard.hot.read(key, now) {
            hot::Read::Fresh(rec) => return Ok(Lookup::Hit(rec)),
            hot::Read::Absent => {}
            hot::Read::Expired => {
                // Out of the hot tier at once, so the next read is a plain miss
                // (only if still expired: a fresh copy stored meanwhile stays);
                // the disk copy goes through the shard, best effort: if its
                // queue is full the sweeper gets it later.
                shard.hot.remove_if(key, |r: &Record| r.is_expired(now));
                let _ = shard
                    .tx
                    .try_send(Command::DeleteIfExpired { key: key.to_vec() });
                return Ok(Lookup::Expired);
            }
        }
        let found = match shard.directory_get(key).await {
            Some(found) => Ok(found),
            None => shard.cold_get(key).await,
        };
        if let Ok(Lookup::Hit(_)) = &found {
            self.hotness.touch(key);
        }
        found
    }

    /// The entry at `key` when the hot tier holds it unexpired, without
    /// waiting on anything: for answers that must not await (the proxy's
    /// wire-level hits). `None` says nothing about the disk; [`Store::get`]
    /// is the lookup that knows. Counted as a read, as `get` counts one.
    pub fn get_hot(&self, ns: Namespace, key: &[u8], now: u64) -> Option<Record> {
        let mut stack = [0u8; 128];
        let key = keys::entry_key_in(ns, key, &mut stack)?;
        match self.shard(key).hot.read(key, now) {
            hot::Read::Fresh(rec) => Some(rec),
            hot::Read::Expired | hot::Read::Absent => None,
        }
    }

    pub async fn put(&self, ns: Namespace, key: &[u8], record: Record) -> Result<(), StoreError> {
        let key = keys::entry_key(ns, key);
        let shard = self.shard(&key);
        // The command carries its room: a caller that goes away leaves the
        // write queued, and still counted, until the shard has done it.
        let room = shard.backlog.reserve(record.encoded_len()).await?;
        shard
            .call(|reply| Command::Put {
                key,
                record,
                room,
                reply,
            })
            .await
    }

    /// Stores `record` unless a live entry exists; returns whether it did.
    pub async fn put_if_absent(
        &self,
        ns: Namespace,
        key: &[u8],
        record: Record,
    ) -> Result<bool, StoreError> {
        let key = keys::entry_key(ns, key);
        let shard = self.shard(&key);
        let room = shard.backlog.reserve(record.encoded_len()).await?;
        shard
            .call(|reply| Command::PutIfAbsent {
                key,
                record,
                room,
                reply,
            })
            .await
    }

    /// Adds `delta` to the decimal integer stored at `key` (a value stored
    /// as the bytes `42`, or the JSON number 42), atomically, keeping the
    /// entry's lifetime.
    pub async fn incr(&self, ns: Namespace, key: &[u8], delta: i64) -> Result<Incr, StoreError> {
        let key = keys::entry_key(ns, key);
        let shard = self.shard(&key);
        shard
            .call(|reply| Command::Incr { key, delta, reply })
            .await
    }

    /// Deletes the live entry at `key` only if it holds `expected`.
    pub async fn delete_if_body(
        &self,
        ns: Namespace,
        key: &[u8],
        expected: Bytes,
    ) -> Result<DeleteIf, StoreError> {
        let key = keys::entry_key(ns, key);
        let shard = self.shard(&key);
        shard
            .call(|reply| Command::DeleteIfBody {
                key,
                expected,
                reply,
            })
            .await
    }

    /// Sets a live entry's deadline; returns whether there was one.
    pub async fn touch(
        &self,
        ns: Namespace,
        key: &[u8],
        expires_at: Option<u64>,
    ) -> Result<bool, StoreError> {
        let key = keys::entry_key(ns, key);
        let shard = self.shard(&key);
        shard
            .call(|reply| Command::Touch {
                key,
                expires_at,
                reply,
            })
            .await
    }

    /// A point in the purge sequence; pass it to [`Store::put_page`] so the
    /// write is dropped if the page is purged after this point.
    pub fn purge_point(&self) -> u64 {
        self.purges.now()
    }

    /// Whether the entry at `key` was purged after point `since`.
    pub fn purged_since(&self, ns: Namespace, key: &[u8], since: u64) -> bool {
        self.purges.purged_since(&keys::entry_key(ns, key), since)
    }

    /// Stores a page (under `group`, or as variant `member` of it) unless
    /// it was purged after `since`; returns whether it was stored.
    pub async fn put_page(
        &self,
        group: &[u8],
        variant: Option<(&[u8], Bytes)>,
        record: Record,
        since: u64,
        room: Room,
    ) -> Result<bool, StoreError> {
        let key = keys::entry_key(Namespace::Page, group);
        let shard = self.shard(&key);
        let member = variant.map(|(suffix, meta)| (suffix.to_vec(), meta));
        shard
            .call(|reply| Command::PutPage {
                key,
                member,
                record,
                since,
                room,
                reply,
            })
            .await
    }

    /// Deletes an entry (a group with its members); returns whether a live
    /// one was there.
    pub async fn delete(&self, ns: Namespace, key: &[u8]) -> Result<bool, StoreError> {
        Ok(self.delete_entry(ns, key, false, false).await?.count > 0)
    }

    /// Purges the page at `key` (every variant); with `soft`, marks it stale
    /// instead of deleting it. `count` is 1 when a live one was there.
    /// With `list`, a soft purge lists what it marked (`Purged::marked`).
    pub async fn purge_page(
        &self,
        key: &[u8],
        soft: bool,
        list: bool,
    ) -> Result<Purged, StoreError> {
        let step = self.delete_entry(Namespace::Page, key, soft, true).await?;
        let mut purged = Purged::listing(list);
        purged.add(step);
        Ok(purged)
    }

    /// Deletes (or, `soft`, marks) the entry at `key`; with `every_site`,
    /// and a bare page key, every other site's copy too.
    async fn delete_entry(
        &self,
        ns: Namespace,
        key: &[u8],
        soft: bool,
        every_site: bool,
    ) -> Result<PrefixStep, StoreError> {
        let key = keys::entry_key(ns, key);
        // A soft purge too: a fetch begun before it may carry the content
        // it declares outdated, so its write is dropped like after a
        // delete (the stale copy stays, and the next request refreshes).
        if ns == Namespace::Page {
            self.purges.key(&key);
        }
        let shard = self.shard(&key);
        let copies = if ns == Namespace::Page && every_site {
            site_copies(shard, &key).await?
        } else {
            Vec::new()
        };
        let mut step = shard
            .call(|reply| Command::Delete {
                key: key.clone(),
                soft,
                reply,
            })
            .await?;
        for copy in copies {
            let more = shard
                .call(|reply| Command::Delete {
                    key: copy,
                    soft,
                    reply,
                })
                .await?;
            step.count += more.count;
            step.marked.extend(more.marked);
        }
        Ok(step)
    }

    /// The store's counters (slow commands, direct reads).
    pub fn counters(&self) -> &counters::Counters {
        &self.counters
    }

    /// The disk limits in force.
    pub fn limits(&self) -> budget::Limits {
        self.limits
    }

    /// One bounded step of disk-budget eviction on shard `index`.
    async fn evict_step(
        &self,
        index: usize,
        budget: u64,
        force: bool,
    ) -> Result<command::Evicted, StoreError> {
        let shard = self.shards.get(index).ok_or(StoreError::Unavailable)?;
        shard
            .call(|reply| Command::Evict {
                budget,
                force,
                reply,
            })
            .await
    }

    /// Bytes the hot tier holds, and its entries.
    pub fn hot_usage(&self) -> (u64, u64) {
        self.shards.iter().fold((0, 0), |(b, n), s| {
            (b + s.hot.weight(), n + s.hot.len() as u64)
        })
    }

    /// What the shards' directories hold and take.
    pub fn directory_usage(&self) -> DirectoryUsage {
        let mut u = DirectoryUsage::default();
        for s in self.shards.iter() {
            u.entries += s.directory.len();
            u.bytes += s.directory.slot_bytes();
            u.ready_shards += u64::from(s.directory.ready());
        }
        u
    }

    /// Bytes the store occupies on disk (a file with several names
    /// counted once).
    pub fn disk_bytes(&self) -> u64 {
        layout::disk_usage(&self.dir)
    }

    /// Flushes and closes every shard and waits for their threads.
    pub async fn shutdown(&self) {
        for s in self.shards.iter() {
            let (reply, rx) = oneshot::channel();
            if s.tx.send(Command::Shutdown { reply }).await.is_ok() {
                let _ = rx.await;
            }
            let thread = s.thread.lock().ok().and_then(|mut t| t.take());
            if let Some(t) = thread {
                let _ = tokio::task::spawn_blocking(move || t.join()).await;
            }
        }
        let path = self.dir.join(HOTNESS_FILE);
        if let Err(e) = self.hotness.save(&path) {
            tracing::warn!(path = %path.display(), error = %e, "hotness table not saved");
        }
    }
}

/// The proxy's storage boundary (`store::pages`), on LevelDB.
impl PageStore for Store {
    fn get_page(&self, key: &[u8]) -> impl Future<Output = Result<Lookup, StoreError>> + Send {
        self.get(Namespace::Page, key)
    }

    fn put_page(
        &self,
        group: &[u8],
        variant: Option<(&[u8], Bytes)>,
        record: Record,
        since: u64,
        room: Room,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        Store::put_page(self, group, variant, record, since, room)
    }

    fn hot_page(&self, key: &[u8], now: u64) -> Option<Record> {
        self.get_hot(Namespace::Page, key, now)
    }

    fn reserve(
        &self,
        group: &[u8],
        bytes: usize,
    ) -> impl Future<Output = Result<Room, StoreError>> + Send {
        let shard = self.shard(&keys::entry_key(Namespace::Page, group));
        shard.backlog.reserve(bytes)
    }

    async fn delete_page(&self, key: &[u8], every_site: bool) -> Result<bool, StoreError> {
        let step = self
            .delete_entry(Namespace::Page, key, false, every_site)
            .await?;
        Ok(step.count > 0)
    }

    fn purge_point(&self) -> u64 {
        Store::purge_point(self)
    }

    fn purged_since(&self, key: &[u8], since: u64) -> bool {
        Store::purged_since(self, Namespace::Page, key, since)
    }

    fn tag_purged_since(&self, tag: &[u8], since: u64) -> bool {
        self.purges.purged_since(&keys::tag_prefix(tag), since)
    }

    fn clock(&self) -> &Clock {
        Store::clock(self)
    }
}

#[cfg(test)]
mod tests;
