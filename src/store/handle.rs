//! The async side of one shard: its command channel, its hot-tier slice,
//! the way to its read mirror, and the hedged read that picks between them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::backlog::Backlog;
use super::busy::Busy;
use super::command::Command;
use super::counters::Counters;
use super::direct::DirectReader;
use super::directory::Directory;
use super::error::StoreError;
use super::hot::Admission;
use super::hot::Hot;
use super::lookup::Lookup;
use super::mirror::{MirrorCommand, MirrorHandle};

/// How long a cold read waits on a busy or slow shard thread before the
/// mirror is asked: well above a normal cold read (~0.1 ms), well below a
/// compaction (tens of ms).
pub const HEDGE_AFTER: Duration = Duration::from_millis(3);
const HEDGE_AFTER_US: u64 = HEDGE_AFTER.as_micros() as u64;

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
    pub mirror: MirrorHandle,
    /// How long the shard thread has been on its current command.
    pub busy: Busy,
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
        if !self.directory.ready() {
            return None;
        }
        let places = self.directory.places(key);
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
                    // Deleted by the shard, best effort (the sweeper
                    // gets it otherwise), if still expired then.
                    let key = key.to_vec();
                    let _ = self.tx.try_send(Command::DeleteIfExpired { key });
                    return Some(Lookup::Expired);
                }
                let admit = self
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

    /// A read the hot tier could not answer. It goes to the shard thread,
    /// unless that thread has been on one command for [`HEDGE_AFTER`]
    /// (a compaction, most likely): then to the mirror. Whichever was asked
    /// first, if its answer is still missing after [`HEDGE_AFTER`] the
    /// other is asked as well, and the first answer wins (the mirror may be
    /// compacting too, or behind on a burst of batches such as eviction's).
    /// The mirror has every acknowledged write, so either answer is
    /// current.
    pub async fn cold_get(&self, key: &[u8]) -> Result<Lookup, StoreError> {
        if !self.mirror.usable() {
            let key = key.to_vec();
            return self.call(|reply| Command::Get { key, reply }).await;
        }
        if self.busy.for_us() >= HEDGE_AFTER_US {
            Counters::bump(&self.counters.mirror_busy);
            if let Some(mut from_mirror) = self.ask_mirror(key) {
                let pending = match tokio::time::timeout(HEDGE_AFTER, &mut from_mirror).await {
                    Ok(Ok(Ok(found))) => return Ok(found),
                    // The mirror answered, with an error: its receiver is
                    // spent (polling it again panics); the shard decides.
                    Ok(_) => None,
                    Err(_) => Some(from_mirror),
                };
                let from_shard = self.ask_shard(key.to_vec()).await?;
                return first_answer(from_shard, pending).await;
            }
        }
        let mut from_shard = self.ask_shard(key.to_vec()).await?;
        if let Ok(answer) = tokio::time::timeout(HEDGE_AFTER, &mut from_shard).await {
            return answer.map_err(|_| StoreError::Unavailable)?;
        }
        let from_mirror = self.ask_mirror(key);
        if from_mirror.is_some() {
            Counters::bump(&self.counters.mirror_hedged);
        }
        first_answer(from_shard, from_mirror).await
    }

    /// Queues a read on the shard thread.
    async fn ask_shard(&self, key: Vec<u8>) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Command::Get { key, reply })
            .await
            .map_err(|_| StoreError::Unavailable)?;
        Ok(answer)
    }

    /// Queues a read on the mirror, unless its queue is full.
    fn ask_mirror(&self, key: &[u8]) -> Option<Answer> {
        let (reply, answer) = oneshot::channel();
        let key = key.to_vec();
        self.mirror
            .tx
            .try_send(MirrorCommand::Get { key, reply })
            .ok()
            .map(|()| answer)
    }
}

/// A read's pending answer.
type Answer = oneshot::Receiver<Result<Lookup, StoreError>>;

/// The shard's answer, or the mirror's if it comes first with a lookup (a
/// mirror that fails leaves the answer to the shard).
async fn first_answer(
    mut from_shard: Answer,
    from_mirror: Option<Answer>,
) -> Result<Lookup, StoreError> {
    if let Some(mut from_mirror) = from_mirror {
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
