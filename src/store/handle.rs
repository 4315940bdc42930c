//! The async side of one shard: its command channel, its hot-tier slice,
//! its directory, and the read that answers from them without the shard
//! thread when it can.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::backlog::Backlog;
use super::command::Command;
use super::counters::Counters;
use super::direct::DirectReader;
use super::directory::Directory;
use super::error::StoreError;
use super::hot::Admission;
use super::hot::Hot;
use super::lookup::Lookup;

pub struct ShardHandle {
    pub tx: mpsc::Sender<Command>,
    /// The store's clock, for what a direct read finds expired.
    pub clock: crate::clock::Clock,
    pub hot: Arc<Hot>,
    /// Where the shard's entries are: a key it calls absent is a miss
    /// without asking the shard.
    pub directory: Arc<Directory>,
    /// Reads of whole entries without the shard thread.
    pub direct: Arc<DirectReader>,
    /// Which cold reads earn a place in the hot tier (shared with the
    /// shard thread, which also reads).
    pub admission: Arc<std::sync::Mutex<Admission>>,
    pub counters: std::sync::Arc<super::counters::Counters>,
    pub thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    /// This shard's share of the write backlog (`store::backlog`): a
    /// shard stalled in a compaction fills its own, not the others'.
    pub backlog: Backlog,
}

/// Sends a command made with a fresh reply channel and awaits the reply.
pub async fn call<C, T>(
    tx: &mpsc::Sender<C>,
    make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> C,
) -> Result<T, StoreError> {
    let (reply, rx) = oneshot::channel();
    tx.send(make(reply))
        .await
        .map_err(|_| StoreError::Unavailable)?;
    rx.await.map_err(|_| StoreError::Unavailable)?
}

impl ShardHandle {
    pub async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<T, StoreError> {
        call(&self.tx, make).await
    }

    /// A read the hot tier could not answer, answered from the directory
    /// and the key's entry alone when they can (see `store::direct`):
    /// `None` when the shard must be asked.
    ///
    /// An absent key is a miss at once. A key with one place, a whole
    /// entry, is read from it. Anything else goes to the shard: a place in
    /// LevelDB, an entry that does not hold the current record (a format-1
    /// file, a soft purge), two keys sharing a fingerprint, an entry that
    /// turns out to be another key's (damage, or that coincidence), or any
    /// error reading one; the shard reads LevelDB and deletes what is
    /// damaged.
    pub async fn directory_get(&self, key: &[u8]) -> Option<Lookup> {
        let places = self.directory.lookup(key)?;
        if places.is_empty() {
            return Some(Lookup::Miss);
        }
        let mut it = places.iter();
        let (Some(place), None) = (it.next(), it.next()) else {
            return None;
        };
        place.whole_entry()?;
        match self.direct.read(key, place).await {
            Ok(Some(record)) => {
                if record.is_expired(self.clock.now_ms()) {
                    // The shard reads it again and deletes it before it
                    // answers, so the next read is a plain miss.
                    return None;
                }
                // A tier with no room (`--hot-cache-size 0`) would evict
                // what it was just given: not worth the shard thread's time.
                let admit = !self.hot.is_off()
                    && self
                        .admission
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .admit(key);
                if admit {
                    let _ = self.tx.try_send(Command::Admit {
                        key: key.to_vec(),
                        place,
                        record: record.clone(),
                    });
                }
                Counters::bump(&self.counters.direct_reads);
                Some(Lookup::Hit(record))
            }
            Ok(None) => {
                Counters::bump(&self.counters.direct_fallbacks);
                None
            }
            Err(e) => {
                Counters::bump(&self.counters.direct_fallbacks);
                tracing::debug!(error = %e, "direct read handed to the shard");
                None
            }
        }
    }

    /// A read the directory could not answer alone: the shard thread
    /// reads LevelDB (and deletes what it finds expired or damaged).
    pub async fn cold_get(&self, key: &[u8]) -> Result<Lookup, StoreError> {
        let key = key.to_vec();
        self.call(|reply| Command::Get { key, reply }).await
    }
}
