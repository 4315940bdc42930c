//! The persistent store: sharded LevelDB behind async handles, with a
//! byte-budgeted hot tier in RAM and a background expiry sweeper.
//!
//! ```text
//!  async callers ──► Store::get ──► hot tier hit? ──yes──► Record (no thread hop)
//!                       │ no
//!                       ▼
//!      shard = crc32(key) % N ──bounded channel──► shard thread (owns one LevelDB
//!                       │                           and the shard's blob files)
//!                       │ shard busy, or late            │ every written batch
//!                       ▼                                ▼
//!                  mirror thread (a second LevelDB, same entries, read-only role)
//! ```
//!
//! - [`record`]: the versioned on-disk formats (LevelDB records, blob files).
//! - [`keys`]: the key-space layout (namespaces, expiry index, blob counts).
//! - [`shard`]: a LevelDB instance and the thread that owns it.
//! - [`blobs`]: the shard's append-only files for large bodies.
//! - [`mirror`]: each shard's read replica, so reads never wait for a
//!   compaction.
//!
//! Why shards: rusty-leveldb runs compaction inside `put`/`get`, stalling the
//! calling thread for up to seconds. With N independent DBs on N threads, a
//! compaction holds up only the requests queued for that one shard, and the
//! shards compact in parallel with each other. The shard count is fixed when
//! a data directory is created and recorded in it (`bigcache.meta`), since
//! the key-to-shard mapping depends on it.
//!
//! Why the hot tier sits here and is written only by shard threads: see
//! [`shard`]. Hot lookups are the fast path for repeated reads and never
//! touch the shard threads.

mod blobs;
pub mod keys;
mod mirror;
mod purges;
pub mod record;
mod shard;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use keys::Namespace;
use mirror::{MirrorCommand, MirrorHandle};
pub use record::{Kind, Record};
use shard::{Command, Shard, ShardConfig};

/// Errors from the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("opening the store: {0}")]
    Open(String),
    #[error("LevelDB: {0}")]
    Db(#[from] rusty_leveldb::Status),
    #[error("store I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The shard thread is gone or dropped the request (it panicked).
    #[error("store unavailable")]
    Unavailable,
}

/// The outcome of a read.
#[derive(Debug, Clone)]
pub enum Lookup {
    Hit(Record),
    Miss,
    /// There was an entry but it had expired; it has been deleted.
    Expired,
}

/// Current time in unix milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Weighs hot-tier entries by the bytes they pin.
#[derive(Clone)]
pub(crate) struct ByBytes;

impl quick_cache::Weighter<Bytes, Record> for ByBytes {
    fn weight(&self, key: &Bytes, rec: &Record) -> u64 {
        // 64: rough per-entry bookkeeping, so tiny entries still count.
        (key.len() + rec.meta.len() + rec.body.len() + 64) as u64
    }
}

/// One shard's slice of the hot tier.
pub(crate) type Hot = quick_cache::sync::Cache<Bytes, Record, ByBytes>;

#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub dir: PathBuf,
    /// Shard count for a new data directory; an existing one keeps its own.
    pub shards: usize,
    /// Total hot-tier budget in bytes, split evenly across shards. 0 disables it.
    pub hot_bytes: u64,
    /// Commands that may wait for one shard before callers get `Busy`.
    pub queue_depth: usize,
}

struct ShardHandle {
    tx: mpsc::Sender<Command>,
    hot: Arc<Hot>,
    mirror: MirrorHandle,
    /// When the shard thread's current command started ([`shard::clock_us`]),
    /// 0 while idle.
    busy: Arc<AtomicU64>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A cheap-to-clone handle to the store.
#[derive(Clone)]
pub struct Store {
    shards: Arc<[ShardHandle]>,
    dir: PathBuf,
    /// Page purges, so a page fetched before one is not stored after it.
    purges: Arc<purges::PurgeLog>,
}

const META_FILE: &str = "bigcache.meta";
/// How long a cold read waits on a busy or slow shard thread before the
/// mirror is asked: well above a normal cold read (~0.1 ms), well below a
/// compaction (tens of ms).
const HEDGE_AFTER: Duration = Duration::from_millis(3);
const HEDGE_AFTER_US: u64 = HEDGE_AFTER.as_micros() as u64;
/// Blob bytes walked per garbage-collection step: a few milliseconds of
/// work, so requests queued behind it barely notice.
const COLLECT_STEP: u64 = 2 << 20;

/// Reads or creates the data directory's layout file and returns its shard
/// count.
fn layout(dir: &Path, wanted: usize) -> Result<usize, StoreError> {
    let path = dir.join(META_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let n = text
                .lines()
                .find_map(|l| l.strip_prefix("shards="))
                .and_then(|n| n.trim().parse::<usize>().ok())
                .filter(|n| (1..=256).contains(n))
                .ok_or_else(|| {
                    StoreError::Open(format!("{}: no valid `shards=` line", path.display()))
                })?;
            if n != wanted {
                tracing::info!(
                    existing = n,
                    requested = wanted,
                    "data directory keeps its shard count"
                );
            }
            Ok(n)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::write(&path, format!("format=1\nshards={wanted}\n"))?;
            Ok(wanted)
        }
        Err(e) => Err(StoreError::Open(format!("{}: {e}", path.display()))),
    }
}

impl Store {
    /// Opens (or creates) every shard and starts their threads.
    pub fn open(cfg: &StoreConfig) -> Result<Store, StoreError> {
        std::fs::create_dir_all(&cfg.dir)
            .map_err(|e| StoreError::Open(format!("{}: {e}", cfg.dir.display())))?;
        let n = layout(&cfg.dir, cfg.shards.clamp(1, 256))?;
        let purges = Arc::new(purges::PurgeLog::default());
        let hot_each = cfg.hot_bytes / n as u64;
        let mut shards = Vec::with_capacity(n);
        for index in 0..n {
            // Estimated item count only sizes quick_cache's tables; the byte
            // budget is what bounds it. Assume ~16 KiB pages.
            let hot = Arc::new(Hot::with_weighter(
                (hot_each / 16384).max(16) as usize,
                hot_each.max(1),
                ByBytes,
            ));
            let busy = Arc::new(AtomicU64::new(0));
            let (shard, mirror) = Shard::open(ShardConfig {
                index,
                dir: cfg.dir.join(format!("shard-{index:02}")),
                mirror_dir: cfg.dir.join(format!("mirror-{index:02}")),
                busy: busy.clone(),
                hot: hot.clone(),
                purges: purges.clone(),
            })?;
            let (tx, rx) = mpsc::channel(cfg.queue_depth.max(1));
            let thread = std::thread::Builder::new()
                .name(format!("bigcache-shard-{index:02}"))
                .spawn(move || shard.run(rx))?;
            shards.push(ShardHandle {
                tx,
                hot,
                mirror,
                busy,
                thread: std::sync::Mutex::new(Some(thread)),
            });
        }
        Ok(Store {
            shards: shards.into(),
            dir: cfg.dir.clone(),
            purges,
        })
    }

    pub fn shard_count(&self) -> usize {
        self.shards.len()
    }

    fn shard(&self, key: &[u8]) -> &ShardHandle {
        &self.shards[keys::shard_of(key, self.shards.len())]
    }

    async fn call<C, T>(
        tx: &mpsc::Sender<C>,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> C,
    ) -> Result<T, StoreError> {
        let (reply, rx) = oneshot::channel();
        tx.send(make(reply))
            .await
            .map_err(|_| StoreError::Unavailable)?;
        rx.await.map_err(|_| StoreError::Unavailable)?
    }

    /// Reads an entry. Expired entries are never returned (and are deleted).
    pub async fn get(&self, ns: Namespace, key: &[u8]) -> Result<Lookup, StoreError> {
        let key = keys::entry_key(ns, key);
        let shard = self.shard(&key);
        if let Some(rec) = shard.hot.get(key.as_slice()) {
            if !rec.is_expired(now_ms()) {
                return Ok(Lookup::Hit(rec));
            }
            // Best effort: if the queue is full the sweeper gets it later.
            let _ = shard.tx.try_send(Command::DeleteIfExpired { key });
            return Ok(Lookup::Expired);
        }
        Self::cold_get(shard, key).await
    }

    /// A read the hot tier could not answer. It goes to the shard thread,
    /// unless that thread has been on one command for [`HEDGE_AFTER`]
    /// (a compaction, most likely): then to the mirror. A shard answer
    /// still missing after [`HEDGE_AFTER`] is asked of the mirror as well,
    /// and the first answer wins. The mirror has every acknowledged write,
    /// so either answer is current.
    async fn cold_get(shard: &ShardHandle, key: Vec<u8>) -> Result<Lookup, StoreError> {
        if !shard.mirror.usable() {
            return Self::call(&shard.tx, |reply| Command::Get { key, reply }).await;
        }
        let busy_since = shard.busy.load(Ordering::Acquire);
        if busy_since != 0 && shard::clock_us().saturating_sub(busy_since) >= HEDGE_AFTER_US {
            let from_mirror = Self::call(&shard.mirror.tx, |reply| MirrorCommand::Get {
                key: key.clone(),
                reply,
            })
            .await;
            if let Ok(found) = from_mirror {
                return Ok(found);
            }
        }
        let (reply, mut from_shard) = oneshot::channel();
        shard
            .tx
            .send(Command::Get {
                key: key.clone(),
                reply,
            })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        if let Ok(answer) = tokio::time::timeout(HEDGE_AFTER, &mut from_shard).await {
            return answer.map_err(|_| StoreError::Unavailable)?;
        }
        let (reply, mut from_mirror) = oneshot::channel();
        let hedged = shard.mirror.tx.try_send(MirrorCommand::Get { key, reply });
        if hedged.is_ok() {
            tokio::select! {
                answer = &mut from_shard => return answer.map_err(|_| StoreError::Unavailable)?,
                answer = &mut from_mirror => {
                    if let Ok(Ok(found)) = answer {
                        return Ok(found);
                    }
                }
            }
        }
        from_shard.await.map_err(|_| StoreError::Unavailable)?
    }

    pub async fn put(&self, ns: Namespace, key: &[u8], record: Record) -> Result<(), StoreError> {
        let key = keys::entry_key(ns, key);
        let shard = self.shard(&key);
        Self::call(&shard.tx, |reply| Command::Put { key, record, reply }).await
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
        Self::call(&shard.tx, |reply| Command::PutIfAbsent {
            key,
            record,
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
        Self::call(&shard.tx, |reply| Command::Touch {
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
    ) -> Result<bool, StoreError> {
        let key = keys::entry_key(Namespace::Page, group);
        let shard = self.shard(&key);
        let member = variant.map(|(suffix, meta)| (suffix.to_vec(), meta));
        Self::call(&shard.tx, |reply| Command::PutPage {
            key,
            member,
            record,
            since,
            reply,
        })
        .await
    }

    /// Deletes an entry (a group with its members); returns whether a live
    /// one was there.
    pub async fn delete(&self, ns: Namespace, key: &[u8]) -> Result<bool, StoreError> {
        let key = keys::entry_key(ns, key);
        if ns == Namespace::Page {
            self.purges.key(&key);
        }
        let shard = self.shard(&key);
        Self::call(&shard.tx, |reply| Command::Delete { key, reply }).await
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
        let prefix = keys::entry_key(ns, prefix);
        if ns == Namespace::Page {
            self.purges.prefix(&prefix);
        }
        let counts = self
            .broadcast(|reply| Command::DeletePrefix {
                prefix: prefix.clone(),
                reply,
            })
            .await?;
        Ok(counts.iter().sum())
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
                let (removed, more) =
                    Self::call(&s.tx, |reply| Command::Sweep { batch, reply }).await?;
                total += removed;
                if !more {
                    break;
                }
                // Let queued requests through between batches.
                tokio::task::yield_now().await;
            }
            let mut freed = 0;
            loop {
                let (n, more) = Self::call(&s.tx, |reply| Command::Collect {
                    budget: COLLECT_STEP,
                    reply,
                })
                .await?;
                freed += n;
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

    /// Bytes the store occupies on disk (mirrors included: their tables
    /// are mostly hard links to the shards', counted twice here).
    pub fn disk_bytes(&self) -> u64 {
        (0..self.shards.len())
            .map(|i| {
                shard::dir_size(&self.dir.join(format!("shard-{i:02}")))
                    + shard::dir_size(&self.dir.join(format!("mirror-{i:02}")))
            })
            .sum()
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
    }
}

/// Runs the expiry sweeper until `shutdown` fires: every `interval`, each
/// shard removes its expired entries in batches of `batch`, so disk space
/// comes back even for keys nobody reads again.
pub async fn run_sweeper(
    store: Store,
    interval: Duration,
    batch: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match store.sweep(batch).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expiry sweep"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn config(dir: &Path) -> StoreConfig {
        StoreConfig {
            dir: dir.to_path_buf(),
            shards: 1,
            // No hot tier: every read goes to a shard thread or its mirror.
            hot_bytes: 0,
            queue_depth: 64,
        }
    }

    fn record(body: &[u8]) -> Record {
        Record {
            kind: Kind::Bytes,
            created_at: now_ms(),
            expires_at: None,
            meta: Bytes::new(),
            body: Bytes::copy_from_slice(body),
        }
    }

    async fn stall(store: &Store, ms: u64) {
        store.shards[0]
            .tx
            .send(Command::Stall(Duration::from_millis(ms)))
            .await
            .unwrap();
        // Let the shard thread pick it up and pass the hedge threshold.
        tokio::time::sleep(HEDGE_AFTER * 2).await;
    }

    /// Reads a key while the shard thread is held for 2 s; returns what was
    /// read and how long it took.
    async fn read_while_stalled(store: &Store, key: &[u8]) -> (Option<Bytes>, Duration) {
        stall(store, 2_000).await;
        let t = Instant::now();
        let found = match store.get(Namespace::Value, key).await.unwrap() {
            Lookup::Hit(r) => Some(r.body),
            _ => None,
        };
        (found, t.elapsed())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_for_a_busy_shard() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
        let page = vec![b'x'; 20_000];
        store
            .put(Namespace::Value, b"big", record(&page))
            .await
            .unwrap();
        store
            .put(Namespace::Value, b"small", record(b"s"))
            .await
            .unwrap();
        store
            .put(Namespace::Value, b"gone", record(b"g"))
            .await
            .unwrap();
        assert!(store.delete(Namespace::Value, b"gone").await.unwrap());

        let (found, took) = read_while_stalled(&store, b"big").await;
        assert_eq!(
            found.as_deref(),
            Some(&page[..]),
            "blob body via the mirror"
        );
        assert!(took < Duration::from_millis(500), "waited {took:?}");
        let (found, _) = read_while_stalled(&store, b"small").await;
        assert_eq!(found.as_deref(), Some(&b"s"[..]));
        let (found, took) = read_while_stalled(&store, b"gone").await;
        assert_eq!(found, None, "an acknowledged delete is seen by the mirror");
        assert!(took < Duration::from_millis(500), "waited {took:?}");
        store.shutdown().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_mirror_follows_clears_and_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&config(dir.path())).unwrap();
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
        let (found, took) = read_while_stalled(&store, b"b").await;
        assert_eq!(
            found.as_deref(),
            Some(&[b'y'; 5_000][..]),
            "rebuilt at start"
        );
        assert!(took < Duration::from_millis(500), "waited {took:?}");
        store.shutdown().await;
    }
}
