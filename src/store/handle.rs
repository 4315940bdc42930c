//! The async side of one shard: its command channel, its hot-tier slice,
//! the way to its read mirror, and the hedged read that picks between them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::backlog::Backlog;
use super::busy::Busy;
use super::command::Command;
use super::counters::Counters;
use super::directory::Directory;
use super::error::StoreError;
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
    pub hot: Arc<Hot>,
    /// Where the shard's entries are: a key it calls absent is a miss
    /// without asking the shard.
    pub directory: Arc<Directory>,
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
