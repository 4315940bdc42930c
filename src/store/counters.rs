//! What the store counts for `GET /metrics`: shard commands slow enough to
//! hold their queue (usually a LevelDB compaction run inline), reads
//! answered without the shard thread, and the sweeper's and collector's
//! work.
//! Relaxed atomics, shared by the shard threads and the async side.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use crate::latency::Latency;

#[derive(Debug, Default)]
pub struct Counters {
    /// Commands that held a shard thread for `SLOW_COMMAND` or more.
    pub slow_commands: AtomicU64,
    /// How long those commands took.
    pub slow_command_time: Latency,
    /// Puts written in a batch with others (`Shard::put_group`).
    pub grouped_puts: AtomicU64,
    /// LevelDB point reads that answered "absent", looked up again with an
    /// iterator (`Db::get`): found absent, and found live (rusty-leveldb's
    /// false "absent", met and not believed).
    pub misses_absent: AtomicU64,
    pub misses_live: AtomicU64,
    /// Reads answered from the directory and the key's entry alone, and
    /// those handed to the shard after a failed read (`store::direct`).
    pub direct_reads: AtomicU64,
    pub direct_fallbacks: AtomicU64,
    /// LevelDB reopens of shards (after iterators: the crate
    /// drops no deleted data until then).
    pub reopens: AtomicU64,
    /// Expired entries the sweeper removed.
    pub swept: AtomicU64,
    /// Blob bytes the collector gave back.
    pub collected_bytes: AtomicU64,
    /// Bytes appended to blob files by writes (the budget's estimate of
    /// growth between two measurements of the disk).
    pub appended_bytes: AtomicU64,
    /// Live entries evicted for the disk budget.
    pub evicted: AtomicU64,
    /// Entries the evictor kept because they were read (moved to the tail).
    pub reinserted: AtomicU64,
    /// Blob bytes eviction gave back.
    pub evicted_bytes: AtomicU64,
    /// The disk budget (`--max-disk`, 0 = none), the free space to keep
    /// (`--min-free`), and the last measured usage and free space.
    pub disk_budget: AtomicU64,
    pub disk_min_free: AtomicU64,
    pub disk_used: AtomicU64,
    pub disk_free: AtomicU64,
}

impl Counters {
    pub fn slow(&self, took: Duration) {
        self.slow_commands.fetch_add(1, Relaxed);
        self.slow_command_time.observe(took);
    }

    pub fn grouped(&self, puts: usize) {
        self.grouped_puts.fetch_add(puts as u64, Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }
}
