//! The async side of one shard: its command channel, its hot-tier slice,
//! the way to its read mirror, and the hedged read that picks between them.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::busy::Busy;
use super::command::Command;
use super::counters::Counters;
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
    pub mirror: MirrorHandle,
    /// How long the shard thread has been on its current command.
    pub busy: Busy,
    pub counters: std::sync::Arc<super::counters::Counters>,
    pub thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
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
    /// (a compaction, most likely): then to the mirror. A shard answer
    /// still missing after [`HEDGE_AFTER`] is asked of the mirror as well,
    /// and the first answer wins. The mirror has every acknowledged write,
    /// so either answer is current.
    pub async fn cold_get(&self, key: Vec<u8>) -> Result<Lookup, StoreError> {
        if !self.mirror.usable() {
            return self.call(|reply| Command::Get { key, reply }).await;
        }
        if self.busy.for_us() >= HEDGE_AFTER_US {
            Counters::bump(&self.counters.mirror_busy);
            let (reply, mut from_mirror) = oneshot::channel();
            let asked = self.mirror.tx.try_send(MirrorCommand::Get {
                key: key.clone(),
                reply,
            });
            if asked.is_ok() {
                // The mirror may be compacting, or behind on batches (it
                // applies every write the shard makes, evictions too): if it
                // is late as well, the shard is asked after all, and the
                // first answer wins.
                if let Ok(Ok(Ok(found))) = tokio::time::timeout(HEDGE_AFTER, &mut from_mirror).await
                {
                    return Ok(found);
                }
                let (reply, mut from_shard) = oneshot::channel();
                self.tx
                    .send(Command::Get {
                        key: key.clone(),
                        reply,
                    })
                    .await
                    .map_err(|_| StoreError::Unavailable)?;
                tokio::select! {
                    answer = &mut from_shard => return answer.map_err(|_| StoreError::Unavailable)?,
                    answer = &mut from_mirror => {
                        if let Ok(Ok(found)) = answer {
                            return Ok(found);
                        }
                    }
                }
                return from_shard.await.map_err(|_| StoreError::Unavailable)?;
            }
        }
        let (reply, mut from_shard) = oneshot::channel();
        self.tx
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
        let hedged = self.mirror.tx.try_send(MirrorCommand::Get { key, reply });
        if hedged.is_ok() {
            Counters::bump(&self.counters.mirror_hedged);
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
}
