//! The storage boundary of the proxy: what it needs from a store of pages.
//!
//! The LevelDB `Store` implements it for the server; [`MemoryStore`]
//! (`store::memory`) implements it in RAM, so the proxy's logic is tested
//! in-process without disk.
//!
//! Pages are stored under a group key (docs/format.md, "Key space"): a
//! page without `Vary` is the record at its group key; a varying page is a
//! member of the group, listed by the group record there. The contract the
//! proxy relies on:
//! - a write carries the purge point taken before its fetch began, and is
//!   dropped (answering `false`) if the page was purged after that point,
//!   so a purge during a fetch is never undone;
//! - a delete of a group takes every member with it;
//! - an expired entry is never returned.
//!
//! [`MemoryStore`]: super::memory::MemoryStore

use std::future::Future;

use bytes::Bytes;

use super::backlog::Room;
use super::error::StoreError;
use super::lookup::Lookup;
use super::record::Record;
use crate::clock::Clock;

pub trait PageStore: Clone + Send + Sync + 'static {
    /// The entry at page key `key`: a page, or a group record.
    fn get_page(&self, key: &[u8]) -> impl Future<Output = Result<Lookup, StoreError>> + Send;

    /// The entry at page key `key` if the store's RAM tier holds it
    /// unexpired at `now` (unix ms: the caller's reading, which it decides
    /// with), found without waiting; `None` otherwise (the page may still
    /// be on disk: [`PageStore::get_page`] knows). A store without a RAM
    /// tier has none.
    fn hot_page(&self, _key: &[u8], _now: u64) -> Option<Record> {
        None
    }

    /// Room in the store's write backlog for a write of `bytes` under
    /// `group` (`store::backlog`): taken before a fetched page is served,
    /// so pages waiting for a disk that fell behind cannot pile up in RAM.
    /// [`StoreError::Busy`] when none came in time.
    fn reserve(
        &self,
        group: &[u8],
        bytes: usize,
    ) -> impl Future<Output = Result<Room, StoreError>> + Send;

    /// Stores a page under `group`, or as variant `(suffix, group meta)` of
    /// it, unless it was purged after purge point `since`; returns whether
    /// it was stored. `room` is given back when the write is done.
    fn put_page(
        &self,
        group: &[u8],
        variant: Option<(&[u8], Bytes)>,
        record: Record,
        since: u64,
        room: Room,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// Purges the page (every variant) at `key`; returns whether a live one
    /// was there.
    /// With `every_site`, a bare page key (`p<target> NUL`) takes every
    /// other site's copy of the page too (`proxy::site`); without, only
    /// this copy.
    fn delete_page(
        &self,
        key: &[u8],
        every_site: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    /// The current point in the purge sequence (see `put_page`).
    fn purge_point(&self) -> u64;

    /// Whether the page at `key` was purged after point `since`.
    fn purged_since(&self, key: &[u8], since: u64) -> bool;

    /// Whether the pages tagged `tag` were purged after point `since`. A
    /// store without tag purges never purges by tag.
    fn tag_purged_since(&self, _tag: &[u8], _since: u64) -> bool {
        false
    }

    /// The clock the store's lifetimes are measured against.
    fn clock(&self) -> &Clock;
}
