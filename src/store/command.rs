//! What a shard thread can be asked to do. Each command carries its own
//! reply channel; a reply sender dropped without an answer (the thread
//! died) reads as [`StoreError::Unavailable`] on the caller's side.

use bytes::Bytes;
use tokio::sync::oneshot;

use super::backlog::Room;
use super::directory::Place;
use super::error::StoreError;
use super::lookup::Lookup;
use super::record::Record;

/// Work sent to a shard thread.
pub enum Command {
    Get {
        key: Vec<u8>,
        reply: oneshot::Sender<Result<Lookup, StoreError>>,
    },
    Put {
        key: Vec<u8>,
        record: Record,
        /// Its room in the write backlog, given back once it is written.
        room: Room,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Stores `record` only if no live entry is at `key`; replies whether
    /// it stored. Atomic: the shard thread does the check and the write.
    PutIfAbsent {
        key: Vec<u8>,
        record: Record,
        room: Room,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Adds `delta` to the integer a live entry holds, keeping its
    /// lifetime. Atomic: the shard thread reads and writes.
    Incr {
        key: Vec<u8>,
        delta: i64,
        reply: oneshot::Sender<Result<Incr, StoreError>>,
    },
    /// Deletes the entry only if it is live and its body is `expected`
    /// (a lock released by its holder only). Atomic.
    DeleteIfBody {
        key: Vec<u8>,
        expected: Bytes,
        reply: oneshot::Sender<Result<DeleteIf, StoreError>>,
    },
    /// Up to `limit` live keys starting with `prefix`, in order, after
    /// `after` when given, examining at most `scan` entries.
    Keys {
        prefix: Vec<u8>,
        after: Option<Vec<u8>>,
        limit: usize,
        scan: usize,
        reply: oneshot::Sender<Result<KeysPage, StoreError>>,
    },
    /// Gives a live entry a new deadline; replies whether one was there.
    Touch {
        key: Vec<u8>,
        expires_at: Option<u64>,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Stores a page unless it was purged after `since` (see
    /// `store::purges`); replies whether it stored. With a `member`
    /// (suffix, group meta) the page is stored at `key + suffix` and listed
    /// in the group record at `key` (created, or replaced when its meta
    /// changes).
    PutPage {
        key: Vec<u8>,
        member: Option<(Vec<u8>, Bytes)>,
        record: Record,
        since: u64,
        room: Room,
        reply: oneshot::Sender<Result<bool, StoreError>>,
    },
    /// Replies whether a live entry was there (`count` 1 or 0). Deleting a
    /// group deletes its members. With `soft`, a page (or each member of a
    /// group) is marked stale instead (`Record::stale_since`), and listed
    /// in `marked`; other kinds are deleted.
    Delete {
        key: Vec<u8>,
        soft: bool,
        reply: oneshot::Sender<Result<PrefixStep, StoreError>>,
    },
    /// Deletes the entry only if it is still expired: a reader saw it expired
    /// in the hot tier, but a newer write may have replaced it since.
    DeleteIfExpired { key: Vec<u8> },
    /// A record read straight from its entry (`store::direct`) earned a
    /// place in the hot tier: inserted if `place` is still where the key
    /// is (the hot tier changes only on this thread, in order with writes).
    Admit {
        key: Vec<u8>,
        place: Place,
        record: Record,
    },
    /// Deletes up to `limit` entries under `prefix` from `from` on;
    /// replies (live ones deleted, where the next step starts if more may
    /// be left). One bounded step: a purge of
    /// many pages is many steps, and other commands run between them.
    DeletePrefix {
        prefix: Vec<u8>,
        /// Where this step starts: the prefix, then the key after the last
        /// one the previous step deleted (so no step walks over the ones
        /// already deleted).
        from: Vec<u8>,
        limit: usize,
        /// An earlier step of the same purge deleted something.
        continued: bool,
        /// Mark pages stale instead of deleting them.
        soft: bool,
        reply: oneshot::Sender<Result<PrefixStep, StoreError>>,
    },
    /// Purges up to `limit` of the entries tagged `tag` (their index rows
    /// from `from` on), deleting them or, with `soft`, marking them stale;
    /// replies like [`Command::DeletePrefix`].
    PurgeTag {
        tag: Vec<u8>,
        from: Vec<u8>,
        limit: usize,
        soft: bool,
        reply: oneshot::Sender<Result<PrefixStep, StoreError>>,
    },
    /// Rows in the tag index (for `/stat/count`: the index must never hold
    /// more than the live pages' tags).
    TagRows {
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Count {
        prefixes: Vec<Vec<u8>>,
        reply: oneshot::Sender<Result<u64, StoreError>>,
    },
    Clear {
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Removes up to `batch` expired entries; replies (removed, more left).
    Sweep {
        batch: usize,
        reply: oneshot::Sender<Result<(u64, bool), StoreError>>,
    },
    /// One bounded step of blob garbage collection, copying at most
    /// `budget` bytes; replies (bytes freed, more to do).
    Collect {
        budget: u64,
        reply: oneshot::Sender<Result<(u64, bool), StoreError>>,
    },
    /// One bounded step of disk-budget eviction, walking at most `budget`
    /// bytes of the oldest blob file; with `force`, what was read goes too.
    Evict {
        budget: u64,
        force: bool,
        reply: oneshot::Sender<Result<Evicted, StoreError>>,
    },
    /// Flushes and closes the DB; the thread exits after replying.
    Shutdown { reply: oneshot::Sender<()> },
    /// Holds the thread as a long compaction would (tests of reads that
    /// skip it).
    #[cfg(test)]
    Stall(std::time::Duration),
}

/// What one eviction step did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Evicted {
    /// Live entries deleted to make room.
    pub evicted: u64,
    /// Entries read since they were written, copied to the FIFO's tail.
    pub reinserted: u64,
    /// Their bytes.
    pub copied: u64,
    /// Expired entries met on the way, deleted too.
    pub expired: u64,
    /// Blob-file bytes given back.
    pub freed: u64,
    /// Whether the shard has anything left to evict.
    pub more: bool,
    /// Bytes in the shard's blob files after the step.
    pub blob_bytes: u64,
}

/// What [`Command::Incr`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Incr {
    /// The new value, stored.
    Value(i64),
    /// No live entry at the key.
    Missing,
    /// The entry holds something other than a decimal integer.
    NotInteger,
    /// The sum does not fit in 64 bits; nothing was stored.
    Overflow,
}

/// One step of a prefix or tag purge.
#[derive(Debug, Default)]
pub struct PrefixStep {
    /// Live entries deleted (or, soft, marked stale).
    pub count: u64,
    /// Where the next step starts; `None`: nothing is left in this shard.
    pub next: Option<Vec<u8>>,
    /// A soft purge's pages marked stale (their full keys), for re-warming;
    /// at most one step's worth (`Store::Purged` keeps them only when asked).
    pub marked: Vec<Vec<u8>>,
}

/// What [`Command::Keys`] found in one shard.
#[derive(Debug, Default)]
pub struct KeysPage {
    pub keys: Vec<Vec<u8>>,
    /// The last key examined when the shard stopped before the end of the
    /// prefix (its `limit` or `scan` reached): every live key up to it is
    /// in `keys`. `None`: the shard has no more.
    pub stopped_at: Option<Vec<u8>>,
}

/// What [`Command::DeleteIfBody`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteIf {
    Deleted,
    Missing,
    /// The entry holds something else; it stays.
    Differs,
}

impl Command {
    /// The command's name in the slow-command log.
    pub fn name(&self) -> &'static str {
        match self {
            Command::Get { .. } => "get",
            Command::Put { .. } => "put",
            Command::PutIfAbsent { .. } => "put-if-absent",
            Command::Incr { .. } => "incr",
            Command::DeleteIfBody { .. } => "delete-if-body",
            Command::Keys { .. } => "keys",
            Command::Touch { .. } => "touch",
            Command::PutPage { .. } => "put-page",
            Command::Delete { .. } => "delete",
            Command::DeleteIfExpired { .. } => "delete-if-expired",
            Command::Admit { .. } => "admit",
            Command::DeletePrefix { .. } => "delete-prefix",
            Command::PurgeTag { .. } => "purge-tag",
            Command::TagRows { .. } => "tag-rows",
            Command::Count { .. } => "count",
            Command::Clear { .. } => "clear",
            Command::Sweep { .. } => "sweep",
            Command::Collect { .. } => "collect",
            Command::Evict { .. } => "evict",
            Command::Shutdown { .. } => "shutdown",
            #[cfg(test)]
            Command::Stall(_) => "stall",
        }
    }
}
