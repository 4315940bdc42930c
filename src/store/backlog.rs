//! The write backlog: bytes of writes accepted but not yet on disk, within
//! a fixed bound.
//!
//! A proxied page is served the moment it is fetched, and written after:
//! nobody waits for the disk. Without a bound, a disk that falls behind
//! (the kernel throttling writeback, a compaction stalling a shard for
//! seconds) lets those writes pile up in RAM, each holding its page. Seen
//! here while filling 340,000 pages: every shard stalled 13 s at once in
//! the kernel's writeback, about 13,000 pages queued, and the heap grew
//! from 180 MB to 488 MB. With the bound, a writer that finds no room
//! waits a moment; if the disk is still behind, the page is served without
//! being stored, and a REST write is refused with a 503 the client can
//! retry. Each shard has its own share, so one shard stalled in a
//! compaction turns away only its own writes. However slow the disk,
//! queued writes hold at most this bound; beyond it, only the pages still
//! waiting for room are in RAM, one per request in flight.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::error::StoreError;

/// The bound, shared out evenly between the shards. A write larger than
/// its shard's share takes all of it.
pub const BACKLOG_BYTES: usize = 16 << 20;

/// Permits count units of this many bytes, so a semaphore's `u32` permits
/// cover any write.
const UNIT: usize = 1024;

/// How long a write waits for room before it gives up.
pub const ROOM_WAIT: Duration = Duration::from_secs(2);

/// Whole units covering `bytes`, at least one.
fn units(bytes: usize) -> u32 {
    u32::try_from(bytes.div_ceil(UNIT).max(1)).unwrap_or(u32::MAX)
}

#[derive(Clone)]
pub struct Backlog {
    room: Arc<Semaphore>,
    units: u32,
    wait: Duration,
}

/// Room for one write in the backlog, given back when dropped (when the
/// write has reached the shard's files, or failed).
#[must_use = "the room is given back when this is dropped"]
pub struct Room {
    _held: Option<OwnedSemaphorePermit>,
}

impl Room {
    /// Room from no backlog, for tests that build commands by hand.
    #[cfg(test)]
    pub fn unbounded() -> Room {
        Room { _held: None }
    }
}

impl Backlog {
    /// A backlog of `bytes` whose writers wait up to `wait` for room.
    pub fn new(bytes: usize, wait: Duration) -> Backlog {
        let units = units(bytes);
        Backlog {
            room: Arc::new(Semaphore::new(units as usize)),
            units,
            wait,
        }
    }

    /// Room for a write of `bytes`; [`StoreError::Busy`] when none came
    /// within the wait (the disk is that far behind).
    pub async fn reserve(&self, bytes: usize) -> Result<Room, StoreError> {
        let want = units(bytes).min(self.units);
        // Uncontended, this is one atomic operation and no timer.
        if let Ok(p) = self.room.clone().try_acquire_many_owned(want) {
            return Ok(Room { _held: Some(p) });
        }
        match tokio::time::timeout(self.wait, self.room.clone().acquire_many_owned(want)).await {
            Ok(Ok(p)) => Ok(Room { _held: Some(p) }),
            // The semaphore is never closed.
            Ok(Err(_)) => Err(StoreError::Unavailable),
            Err(_) => Err(StoreError::Busy),
        }
    }

    /// Bytes of writes waiting now (rounded up to whole units).
    #[cfg(test)]
    fn waiting(&self) -> usize {
        (self.units as usize - self.room.available_permits().min(self.units as usize)) * UNIT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_backlog_makes_writers_wait_then_refuses_them() {
        let b = Backlog::new(10 * UNIT, Duration::from_millis(50));
        let first = b.reserve(6 * UNIT).await.expect("room");
        let second = b.reserve(4 * UNIT).await.expect("room");
        assert_eq!(b.waiting(), 10 * UNIT);
        let refused = b.reserve(1).await;
        assert!(matches!(refused, Err(StoreError::Busy)), "no room left");
        // Room given back lets a waiting writer in.
        let waiter = tokio::spawn({
            let b = Backlog {
                wait: Duration::from_secs(5),
                ..b.clone()
            };
            async move { b.reserve(5 * UNIT).await.is_ok() }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(first);
        assert!(waiter.await.expect("joined"), "room came back");
        drop(second);
        assert_eq!(b.waiting(), 0);
    }

    #[tokio::test]
    async fn a_write_larger_than_the_backlog_takes_all_of_it() {
        let b = Backlog::new(4 * UNIT, ROOM_WAIT);
        let big = b.reserve(100 * UNIT).await.expect("room");
        assert_eq!(b.waiting(), 4 * UNIT);
        drop(big);
        assert_eq!(b.waiting(), 0);
    }
}
