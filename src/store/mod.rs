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
//! - [`Store`] (here): routes each key to its shard, broadcasts scans.
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

pub use command::{DeleteIf, Incr};
use command::{KeysPage, PrefixStep};

/// Entries one step of a prefix purge deletes in one shard.
pub const PREFIX_STEP: usize = 2000;

/// Index rows one step of a tag purge takes per shard. Smaller than a
/// prefix step: each row costs a point read of its page (a prefix step
/// finds its entries by iteration), about 20 to 300 µs each measured.
pub const TAG_STEP: usize = 500;

/// Pages one soft purge lists for re-warming, at most: beyond it the rest
/// are refreshed by their next request, as without re-warming.
pub const MAX_MARKED: usize = 100_000;

/// Bytes of keys one soft purge lists, at most (keys are up to
/// `--max-target-length` each).
pub const MAX_MARKED_BYTES: usize = 32 << 20;

/// What a purge reached.
#[derive(Debug, Default)]
pub struct Purged {
    /// Live entries deleted, or (soft) pages marked stale.
    pub count: u64,
    /// A soft purge's pages (full keys) when asked to list them, at most
    /// [`MAX_MARKED`] and [`MAX_MARKED_BYTES`].
    pub marked: Vec<Vec<u8>>,
    marked_bytes: usize,
    /// Keep the pages the steps marked (for re-warming).
    listing: bool,
}

impl Purged {
    fn listing(listing: bool) -> Purged {
        Purged {
            listing,
            ..Purged::default()
        }
    }

    fn add(&mut self, step: PrefixStep) {
        self.count += step.count;
        if !self.listing {
            return;
        }
        for key in step.marked {
            if self.marked.len() >= MAX_MARKED || self.marked_bytes + key.len() > MAX_MARKED_BYTES {
                break;
            }
            self.marked_bytes += key.len();
            self.marked.push(key);
        }
    }
}

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

/// Entries one shard examines for one page of [`Store::keys`].
pub const KEYS_SCAN: usize = 20_000;
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

    /// Up to `limit` live keys of `ns` starting with `prefix`, in byte
    /// order, after `after` when given; and the cursor to pass as `after`
    /// for the next page (`None` after the last). Each shard examines at
    /// most [`KEYS_SCAN`] entries (expired ones included), so no call walks
    /// the whole store; a page can then be short, or empty, with a cursor.
    pub async fn keys(
        &self,
        ns: Namespace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), StoreError> {
        self.keys_scanning(ns, prefix, after, limit, KEYS_SCAN)
            .await
    }

    async fn keys_scanning(
        &self,
        ns: Namespace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), StoreError> {
        let prefix = keys::entry_key(ns, prefix);
        let after = after.map(|a| keys::entry_key(ns, a));
        let pages: Vec<KeysPage> = self
            .broadcast(|reply| Command::Keys {
                prefix: prefix.clone(),
                after: after.clone(),
                limit,
                scan,
                reply,
            })
            .await?;
        // Every shard has given all its live keys up to its stopping point,
        // so the merged list is complete up to the lowest of them.
        let boundary = pages.iter().filter_map(|p| p.stopped_at.clone()).min();
        let mut all: Vec<Vec<u8>> = pages.into_iter().flat_map(|p| p.keys).collect();
        all.sort_unstable();
        if let Some(b) = &boundary {
            all.retain(|k| k <= b);
        }
        let next = if all.len() > limit {
            all.truncate(limit);
            all.last().cloned()
        } else {
            boundary
        };
        let strip = |mut k: Vec<u8>| k.split_off(1);
        Ok((all.into_iter().map(strip).collect(), next.map(strip)))
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

    /// Sends one command to every shard, then awaits all replies, so the
    /// shards work in parallel.
    async fn broadcast<T>(
        &self,
        make: impl Fn(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<Vec<T>, StoreError> {
        let mut pending = Vec::with_capacity(self.shards.len());
        for s in self.shards.iter() {
            let (reply, rx) = oneshot::channel();
            s.tx.send(make(reply))
                .await
                .map_err(|_| StoreError::Unavailable)?;
            pending.push(rx);
        }
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            out.push(rx.await.map_err(|_| StoreError::Unavailable)??);
        }
        Ok(out)
    }

    /// Deletes every entry of `ns` whose key starts with `prefix`; returns
    /// how many live entries went.
    pub async fn delete_prefix(&self, ns: Namespace, prefix: &[u8]) -> Result<u64, StoreError> {
        Ok(self.purge_prefix(ns, prefix, false, false).await?.count)
    }

    /// [`Store::delete_prefix`], or with `soft` the pages under `prefix`
    /// marked stale instead; how many live pages (or entries) it reached.
    pub async fn purge_prefix(
        &self,
        ns: Namespace,
        prefix: &[u8],
        soft: bool,
        list: bool,
    ) -> Result<Purged, StoreError> {
        let prefix = keys::entry_key(ns, prefix);
        if ns == Namespace::Page {
            self.purges.prefix(&prefix);
        }
        self.in_steps(&prefix, list, |from, continued, reply| {
            Command::DeletePrefix {
                prefix: prefix.clone(),
                from,
                limit: PREFIX_STEP,
                continued,
                soft,
                reply,
            }
        })
        .await
    }

    /// Purges every page tagged `tag` (every variant that carries it);
    /// with `soft`, marks them stale instead. Returns how many live pages
    /// it reached. `tag` must pass `record::check_tag`.
    pub async fn purge_tag(
        &self,
        tag: &[u8],
        soft: bool,
        list: bool,
    ) -> Result<Purged, StoreError> {
        let start = keys::tag_prefix(tag);
        // Logged first, as key purges are: a page with this tag whose
        // fetch began before now is not stored after it.
        self.purges.key(&start);
        self.in_steps(&start, list, |from, _, reply| Command::PurgeTag {
            tag: tag.to_vec(),
            from,
            limit: TAG_STEP,
            soft,
            reply,
        })
        .await
    }

    /// Rows in the tag index, over every shard.
    pub async fn tag_rows(&self) -> Result<u64, StoreError> {
        let n = self.broadcast(|reply| Command::TagRows { reply }).await?;
        Ok(n.iter().sum())
    }

    /// Runs a stepped walk on every shard at once, starting at `start`:
    /// each shard's step replies (count, where its next step starts), and
    /// between two steps of a shard its other commands (reads that missed
    /// the hot tier, writes) get their turn. `make` builds a step from
    /// (where it starts, whether an earlier step ran, reply); with `list`,
    /// the pages the steps marked are kept.
    async fn in_steps(
        &self,
        start: &[u8],
        list: bool,
        make: impl Fn(Vec<u8>, bool, oneshot::Sender<Result<PrefixStep, StoreError>>) -> Command,
    ) -> Result<Purged, StoreError> {
        let mut total = Purged::listing(list);
        let mut active: Vec<(usize, Vec<u8>)> = (0..self.shards.len())
            .map(|i| (i, start.to_vec()))
            .collect();
        let mut continued = false;
        while !active.is_empty() {
            let mut pending = Vec::with_capacity(active.len());
            for (i, from) in active {
                let (reply, rx) = oneshot::channel();
                self.shards[i]
                    .tx
                    .send(make(from, continued, reply))
                    .await
                    .map_err(|_| StoreError::Unavailable)?;
                pending.push((i, rx));
            }
            let mut next = Vec::new();
            for (i, rx) in pending {
                let mut step = rx.await.map_err(|_| StoreError::Unavailable)??;
                if let Some(from) = step.next.take() {
                    next.push((i, from));
                }
                total.add(step);
            }
            active = next;
            continued = true;
        }
        Ok(total)
    }

    /// Live entries in the given namespaces. Walks every entry: an admin
    /// operation, not a hot path.
    pub async fn count(&self, namespaces: &[Namespace]) -> Result<u64, StoreError> {
        let prefixes: Vec<Vec<u8>> = namespaces.iter().map(|ns| vec![ns.tag()]).collect();
        let counts = self
            .broadcast(|reply| Command::Count {
                prefixes: prefixes.clone(),
                reply,
            })
            .await?;
        Ok(counts.iter().sum())
    }

    /// Empties the whole store.
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.purges.all();
        self.broadcast(|reply| Command::Clear { reply }).await?;
        Ok(())
    }

    /// One full sweep of every shard in batches of `batch`, then blob
    /// garbage collection in steps; returns the number of expired entries
    /// removed.
    pub async fn sweep(&self, batch: usize) -> Result<u64, StoreError> {
        let mut total = 0;
        for s in self.shards.iter() {
            loop {
                let (removed, more) = s.call(|reply| Command::Sweep { batch, reply }).await?;
                total += removed;
                self.counters
                    .swept
                    .fetch_add(removed, std::sync::atomic::Ordering::Relaxed);
                if !more {
                    break;
                }
                // Let queued requests through between batches.
                tokio::task::yield_now().await;
            }
            let mut freed = 0;
            loop {
                let (n, more) = s
                    .call(|reply| Command::Collect {
                        budget: COLLECT_STEP,
                        reply,
                    })
                    .await?;
                freed += n;
                self.counters
                    .collected_bytes
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
            if freed > 0 {
                tracing::info!(freed, "blob files collected");
            }
        }
        Ok(total)
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
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            dir: dir.to_path_buf(),
            shards: 1,
            // No hot tier: every read goes to the directory or the shard.
            hot_bytes: 0,
            queue_depth: 64,
            max_variants: 32,
            sync: false,
            clock: Clock::system(),
            max_disk: Some(0),
            min_free: budget::MinFree::Bytes(0),
        }
    }

    /// Every live shard thread of this process and its policy.
    #[cfg(target_os = "linux")]
    fn shard_policies() -> Vec<(String, libc::c_int)> {
        let mut seen = Vec::new();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let task = task.unwrap().path();
            let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
            if !name.starts_with("bigcache-shard") {
                continue;
            }
            let tid: libc::pid_t = task.file_name().unwrap().to_str().unwrap().parse().unwrap();
            // SAFETY: only reads the policy of a thread of this process.
            let policy = unsafe { libc::sched_getscheduler(tid) };
            // -1: the thread (another test's store) ended meanwhile.
            if policy != -1 {
                seen.push((name.trim().to_string(), policy));
            }
        }
        seen
    }

    /// Store threads run under `SCHED_BATCH` (see `crate::sched`): a
    /// read queued by the runtime does not preempt it.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn store_threads_do_not_preempt_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        // A shard thread sets its policy as it starts, which may be just
        // after `open` returns: looked at until it has, for a while.
        let mut seen = Vec::new();
        for _ in 0..200 {
            seen = shard_policies();
            if !seen.is_empty() && seen.iter().all(|(_, p)| *p == libc::SCHED_BATCH) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Tests run in parallel: other tests' stores may show up too.
        assert!(!seen.is_empty(), "a shard thread: {seen:?}");
        assert!(
            seen.iter().all(|(_, p)| *p == libc::SCHED_BATCH),
            "{seen:?}"
        );
        store.shutdown().await;
    }

    fn record(body: &[u8]) -> Record {
        Record {
            kind: Kind::Bytes,
            created_at: 1,
            expires_at: None,
            meta: Bytes::new(),
            body: Bytes::copy_from_slice(body),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        }
    }

    /// Pages through every key with `limit` and `scan`, checking the
    /// cursor always moves forward.
    async fn all_keys(
        store: &Store,
        prefix: &[u8],
        limit: usize,
        scan: usize,
    ) -> (Vec<Vec<u8>>, usize) {
        let (mut out, mut pages, mut after) = (Vec::new(), 0, None::<Vec<u8>>);
        loop {
            let (keys, next) = store
                .keys_scanning(Namespace::Value, prefix, after.as_deref(), limit, scan)
                .await
                .unwrap();
            pages += 1;
            assert!(keys.len() <= limit);
            out.extend(keys);
            match next {
                Some(n) => {
                    assert!(
                        after.as_ref().is_none_or(|a| n > *a),
                        "the cursor went back"
                    );
                    after = Some(n);
                }
                None => return (out, pages),
            }
            assert!(pages < 10_000);
        }
    }

    #[tokio::test]
    async fn a_prefix_purge_of_many_steps_removes_exactly_its_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        let n = PREFIX_STEP * 3 + 17;
        for i in 0..n {
            let key = format!("p:{i:06}");
            store
                .put(Namespace::Value, key.as_bytes(), record(b"x"))
                .await
                .unwrap();
        }
        store
            .put(Namespace::Value, b"p", record(b"x"))
            .await
            .unwrap();
        store
            .put(Namespace::Value, b"q:1", record(b"x"))
            .await
            .unwrap();
        store
            .put(Namespace::Page, b"p:000001", record(b"x"))
            .await
            .unwrap();
        assert_eq!(
            store.delete_prefix(Namespace::Value, b"p:").await.unwrap(),
            n as u64
        );
        assert_eq!(
            store
                .count(&[Namespace::Value, Namespace::Page])
                .await
                .unwrap(),
            3
        );
        assert!(matches!(
            store.get(Namespace::Value, b"p:000005").await.unwrap(),
            Lookup::Miss
        ));
        assert!(matches!(
            store.get(Namespace::Page, b"p:000001").await.unwrap(),
            Lookup::Hit(_)
        ));
        store.shutdown().await;
    }

    /// A purge of a path reaches every site's copy of the page, however
    /// many variants sort among them (any client can add variants).
    #[tokio::test]
    async fn a_path_purge_reaches_every_sites_copy() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        let page = |k: &[u8]| (Namespace::Page, k.to_vec());
        let mut keys = vec![page(b"/t\0"), page(b"/t\0@https://a.example\0")];
        keys.extend(
            (0..1500).map(|i| page(format!("/t\0@https://a.example\0v={i:04}").as_bytes())),
        );
        keys.push(page(b"/t\0@https://b.example\0"));
        keys.push(page(b"/t\0@https://c.example\0"));
        keys.push(page(b"/t2\0@https://a.example\0"));
        for (ns, k) in &keys {
            store.put(*ns, k, record(b"x")).await.unwrap();
        }
        let purged = store.purge_page(b"/t\0", false, false).await.unwrap();
        assert_eq!(purged.count, 4, "the bare copy and three sites'");
        for site in ["a", "b", "c"] {
            let k = format!("/t\0@https://{site}.example\0");
            let found = store.get(Namespace::Page, k.as_bytes()).await.unwrap();
            assert!(matches!(found, Lookup::Miss), "{k} outlived the purge");
        }
        let other = store
            .get(Namespace::Page, b"/t2\0@https://a.example\0")
            .await
            .unwrap();
        assert!(matches!(other, Lookup::Hit(_)), "another path's copy went");
        // A copy's own delete (a page found uncacheable for one site) is
        // that copy's only.
        store
            .put(Namespace::Page, b"/u\0", record(b"x"))
            .await
            .unwrap();
        store
            .put(Namespace::Page, b"/u\0@https://a.example\0", record(b"x"))
            .await
            .unwrap();
        assert!(store.delete(Namespace::Page, b"/u\0").await.unwrap());
        let kept = store
            .get(Namespace::Page, b"/u\0@https://a.example\0")
            .await
            .unwrap();
        assert!(matches!(kept, Lookup::Hit(_)));
        store.shutdown().await;
    }

    /// Listing keys and counting (Django paging through `iter_keys`) do
    /// not reopen every shard per call: they leave it to the idle reopen.
    #[tokio::test]
    async fn listings_do_not_reopen_the_shards() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        for i in 0..20u32 {
            let key = format!("k:{i:02}");
            store
                .put(Namespace::Value, key.as_bytes(), record(b"x"))
                .await
                .unwrap();
        }
        for _ in 0..5 {
            let (keys, _) = store
                .keys(Namespace::Value, b"k:", None, 100)
                .await
                .unwrap();
            assert_eq!(keys.len(), 20);
            assert_eq!(store.count(&[Namespace::Value]).await.unwrap(), 20);
        }
        let reopens = store
            .counters()
            .reopens
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(reopens, 0);
        store.shutdown().await;
    }

    #[tokio::test]
    async fn key_pages_are_complete_whatever_each_shard_stops_at() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&StoreConfig {
            shards: 4,
            ..config(dir.path())
        })
        .unwrap();
        let mut expected = Vec::new();
        for i in 0..300u32 {
            let key = format!("k:{i:03}");
            let mut rec = record(b"x");
            // Every third entry is expired: skipped, but it counts as scanned.
            if i % 3 == 0 {
                rec.expires_at = Some(1);
            } else {
                expected.push(key.clone().into_bytes());
            }
            store
                .put(Namespace::Value, key.as_bytes(), rec)
                .await
                .unwrap();
        }
        store
            .put(Namespace::Value, b"j", record(b"x"))
            .await
            .unwrap();
        store
            .put(Namespace::Value, b"l", record(b"x"))
            .await
            .unwrap();
        for (limit, scan) in [(1000, 100_000), (7, 100_000), (7, 3), (1, 1), (50, 10)] {
            let (got, pages) = all_keys(&store, b"k:", limit, scan).await;
            assert_eq!(got, expected, "limit {limit}, scan {scan}");
            if scan >= 300 {
                assert_eq!(
                    pages,
                    expected.len().div_ceil(limit).max(1),
                    "limit {limit}: pages"
                );
            }
        }
        store.shutdown().await;
    }

    /// Commands queued behind a busy shard run in the order they were
    /// sent, whether or not their puts share a batch. (Reads are left out:
    /// while the shard is busy they are answered from the directory and
    /// the entries, with what was acknowledged so far.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_commands_keep_their_order_through_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        let big = |c: u8| record(&[c; 2_000]);
        stall(&store, 300).await;
        let mut tasks = Vec::new();
        // Sent one after another: each task is in the queue before the next.
        macro_rules! queue {
            ($e:expr) => {{
                let store = store.clone();
                tasks.push(tokio::spawn(async move { $e(store).await }));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }};
        }
        queue!(|s: Store| async move {
            s.put(Namespace::Value, b"a", big(b'1'))
                .await
                .map(|()| None)
        });
        queue!(|s: Store| async move {
            s.put(Namespace::Value, b"b", big(b'2'))
                .await
                .map(|()| None)
        });
        queue!(|s: Store| async move {
            s.put(Namespace::Value, b"a", big(b'3'))
                .await
                .map(|()| None)
        });
        queue!(|s: Store| async move {
            s.delete(Namespace::Value, b"b")
                .await
                .map(|d| d.then(Bytes::new))
        });
        queue!(|s: Store| async move {
            s.put(Namespace::Value, b"c", big(b'4'))
                .await
                .map(|()| None)
        });
        let mut got = Vec::new();
        for t in tasks {
            got.push(t.await.unwrap().unwrap());
        }
        assert_eq!(got[3], Some(Bytes::new()), "the delete found b");
        let now = |k: &'static [u8]| {
            let store = store.clone();
            async move {
                match store.get(Namespace::Value, k).await.unwrap() {
                    Lookup::Hit(r) => Some(r.body[0]),
                    _ => None,
                }
            }
        };
        assert_eq!(now(b"a").await, Some(b'3'));
        assert_eq!(now(b"b").await, None);
        assert_eq!(now(b"c").await, Some(b'4'));
        let grouped = store
            .counters()
            .grouped_puts
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(
            grouped, 2,
            "a then b shared a batch; the second a did not join it"
        );
        store.shutdown().await;
    }

    async fn stall(store: &Store, ms: u64) {
        store.shards[0]
            .tx
            .send(Command::Stall(Duration::from_millis(ms)))
            .await
            .unwrap();
        // Let the shard thread pick it up.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    /// How long `read_while_stalled` holds the shard thread.
    const STALLED: Duration = Duration::from_secs(2);

    /// Reads a key while the shard thread is held for [`STALLED`]; returns
    /// what was read and how long it took.
    async fn read_while_stalled(store: &Store, key: &[u8]) -> (Option<Bytes>, Duration) {
        stall(store, STALLED.as_millis() as u64).await;
        let t = Instant::now();
        let found = match store.get(Namespace::Value, key).await.unwrap() {
            Lookup::Hit(r) => Some(r.body),
            _ => None,
        };
        (found, t.elapsed())
    }

    /// Waits until every shard's directory is built.
    async fn directories_ready(store: &Store) {
        let t = Instant::now();
        while store.directory_usage().ready_shards < store.shard_count() as u64 {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "directories not built"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// A key the directory has no place for is a miss answered on the
    /// caller's task: the stalled shard is not asked.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_absent_key_is_a_miss_without_asking_the_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        store
            .put(Namespace::Value, b"gone", record(b"g"))
            .await
            .unwrap();
        assert!(store.delete(Namespace::Value, b"gone").await.unwrap());
        directories_ready(&store).await;
        for key in [&b"gone"[..], b"never"] {
            let (found, took) = read_while_stalled(&store, key).await;
            assert_eq!(found, None);
            assert!(took < STALLED / 4, "waited {took:?} for the shard");
        }
        store.shutdown().await;
    }

    fn direct_reads(store: &Store) -> (u64, u64) {
        let c = store.counters();
        (
            c.direct_reads.load(std::sync::atomic::Ordering::Relaxed),
            c.direct_fallbacks
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// A stored value is read from its entry on the caller's task, the
    /// shard thread held meanwhile; what a later
    /// write, a touch or a delete changed is what the next read sees.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn values_are_read_from_their_entries_without_the_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        directories_ready(&store).await;
        let page = vec![b'x'; 20_000];
        store
            .put(Namespace::Value, b"big", record(&page))
            .await
            .unwrap();
        store
            .put(Namespace::Value, b"small", record(b"s"))
            .await
            .unwrap();
        // A touch writes the entry again: a read from it sees the new
        // deadline, not the one the old entry held.
        let soon = store.clock().now_ms() + 200;
        let expiring = Record {
            expires_at: Some(soon),
            ..record(b"t")
        };
        store
            .put(Namespace::Value, b"touched", expiring)
            .await
            .unwrap();
        let later = store.clock().now_ms() + 3_600_000;
        assert!(
            store
                .touch(Namespace::Value, b"touched", Some(later))
                .await
                .unwrap()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
        let Lookup::Hit(r) = store.get(Namespace::Value, b"touched").await.unwrap() else {
            panic!("a touched value read as gone");
        };
        assert_eq!(r.expires_at, Some(later));
        let before = direct_reads(&store);
        let (found, took) = read_while_stalled(&store, b"big").await;
        assert_eq!(found.as_deref(), Some(&page[..]));
        assert!(took < STALLED / 4, "waited {took:?} for the shard");
        let (found, _) = read_while_stalled(&store, b"small").await;
        assert_eq!(found.as_deref(), Some(&b"s"[..]));
        let after = direct_reads(&store);
        assert_eq!((after.0 - before.0, after.1 - before.1), (2, 0));
        // The writes below wait out the stall; the reads after them do not.

        store
            .put(Namespace::Value, b"small", record(b"t"))
            .await
            .unwrap();
        let (found, _) = read_while_stalled(&store, b"small").await;
        assert_eq!(found.as_deref(), Some(&b"t"[..]), "the new value");
        assert!(store.delete(Namespace::Value, b"small").await.unwrap());
        let (found, _) = read_while_stalled(&store, b"small").await;
        assert_eq!(found, None);
        store.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn direct_reads_follow_clears_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        directories_ready(&store).await;
        store
            .put(Namespace::Value, b"a", record(b"1"))
            .await
            .unwrap();
        store.clear().await.unwrap();
        let (found, _) = read_while_stalled(&store, b"a").await;
        assert_eq!(found, None, "cleared");
        store
            .put(Namespace::Value, b"b", record(&[b'y'; 5_000]))
            .await
            .unwrap();
        store.shutdown().await;

        let store = Store::open(&config(dir.path())).unwrap();
        directories_ready(&store).await;
        let (found, took) = read_while_stalled(&store, b"b").await;
        assert_eq!(
            found.as_deref(),
            Some(&[b'y'; 5_000][..]),
            "the directory rebuilt at start"
        );
        // Far below the 2 s stall: read from its entry, not by the shard.
        assert!(took < STALLED / 2, "waited {took:?}");
        store.shutdown().await;
    }
}
