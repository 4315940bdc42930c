//! The persistent store: sharded LevelDB behind async handles, with a
//! byte-budgeted hot tier in RAM and a background expiry sweeper.
//!
//! ```text
//!  async callers ──► Store::get ──► hot tier hit? ──yes──► Record (no thread hop)
//!                       │ no
//!                       ▼
//!      shard = crc32(key) % N ──bounded channel──► shard thread (owns one LevelDB)
//! ```
//!
//! - [`record`]: the versioned on-disk formats (LevelDB records, blob files).
//! - [`keys`]: the key-space layout (namespaces, expiry index, blob counts).
//! - [`shard`]: a LevelDB instance and the thread that owns it.
//! - [`blobs`]: the shard's append-only files for large bodies.
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
mod purges;
pub mod record;
mod shard;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

pub use keys::Namespace;
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
            let shard = Shard::open(ShardConfig {
                index,
                dir: cfg.dir.join(format!("shard-{index:02}")),
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

    async fn call<T>(
        tx: &mpsc::Sender<Command>,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
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
        Self::call(&shard.tx, |reply| Command::Get { key, reply }).await
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

    /// Bytes the store occupies on disk.
    pub fn disk_bytes(&self) -> u64 {
        (0..self.shards.len())
            .map(|i| shard::dir_size(&self.dir.join(format!("shard-{i:02}"))))
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
