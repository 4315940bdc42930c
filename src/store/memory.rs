//! A [`PageStore`] in RAM, for testing the proxy without disk. Not for
//! production: unbounded, and gone with the process.
//!
//! It keeps the contract of `store::pages` (purges during a fetch win,
//! groups take their members with them, expired entries are never
//! returned) and can be told to fail, to test what the proxy does when its
//! store does.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;

use super::backlog::{BACKLOG_BYTES, Backlog, ROOM_WAIT, Room};
use super::error::StoreError;
use super::lookup::Lookup;
use super::pages::PageStore;
use super::purges::PurgeLog;
use super::record::{Kind, Record};
use crate::clock::Clock;

#[derive(Clone)]
pub struct MemoryStore {
    entries: Arc<Mutex<HashMap<Vec<u8>, Record>>>,
    purges: Arc<PurgeLog>,
    clock: Clock,
    failing: Arc<AtomicBool>,
    writes: Arc<AtomicU64>,
    /// Page writes wait for a read lock: [`MemoryStore::hold_writes`] takes
    /// the write lock, as a slow disk would.
    gate: Arc<tokio::sync::RwLock<()>>,
    backlog: Backlog,
}

impl Default for MemoryStore {
    fn default() -> MemoryStore {
        MemoryStore {
            entries: Arc::default(),
            purges: Arc::default(),
            clock: Clock::default(),
            failing: Arc::default(),
            writes: Arc::default(),
            gate: Arc::default(),
            backlog: Backlog::new(BACKLOG_BYTES, ROOM_WAIT),
        }
    }
}

impl MemoryStore {
    pub fn new(clock: Clock) -> MemoryStore {
        MemoryStore {
            clock,
            ..MemoryStore::default()
        }
    }

    /// From now on every read and write fails (or, with `false`, works
    /// again), as a store with a broken disk would.
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::Release);
    }

    /// Page writes wait until the returned guard is dropped, as on a disk
    /// busy compacting: what happens while a page is being written.
    pub async fn hold_writes(&self) -> tokio::sync::OwnedRwLockWriteGuard<()> {
        self.gate.clone().write_owned().await
    }

    /// A store whose write backlog holds `bytes`, and whose writers wait
    /// `wait` for room: what a slow disk does to the proxy, with
    /// [`MemoryStore::hold_writes`].
    pub fn with_backlog(mut self, bytes: usize, wait: std::time::Duration) -> MemoryStore {
        self.backlog = Backlog::new(bytes, wait);
        self
    }

    /// Pages stored so far.
    pub fn writes(&self) -> u64 {
        self.writes.load(Ordering::Acquire)
    }

    /// Entries held (groups and pages alike), expired ones included.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, Record>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.failing.load(Ordering::Acquire) {
            Err(StoreError::Unavailable)
        } else {
            Ok(())
        }
    }

    fn drop_members(map: &mut HashMap<Vec<u8>, Record>, group: &[u8]) {
        let Some(old) = map.get(group).filter(|r| r.kind == Kind::Group) else {
            return;
        };
        for m in old.group_members() {
            let mut k = group.to_vec();
            k.extend_from_slice(&m);
            map.remove(&k);
        }
    }

    fn put(&self, group: &[u8], variant: Option<(&[u8], Bytes)>, record: Record) {
        let mut map = self.lock();
        let Some((suffix, meta)) = variant else {
            Self::drop_members(&mut map, group);
            map.insert(group.to_vec(), record);
            return;
        };
        let mut members = Vec::new();
        let mut expires_at = record.expires_at;
        let same_group = map
            .get(group)
            .filter(|r| r.kind == Kind::Group && r.meta == meta)
            .cloned();
        match same_group {
            Some(old) => {
                members = old.group_members();
                expires_at = old.expires_at.zip(expires_at).map(|(a, b)| a.max(b));
            }
            None => Self::drop_members(&mut map, group),
        }
        if !members.iter().any(|m| m.as_ref() == suffix) {
            members.push(Bytes::copy_from_slice(suffix));
        }
        let group_record = Record {
            kind: Kind::Group,
            created_at: record.created_at,
            expires_at,
            meta,
            body: Record::encode_group_members(members.iter().map(|m| m.as_ref())),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        };
        map.insert(group.to_vec(), group_record);
        let mut member = group.to_vec();
        member.extend_from_slice(suffix);
        map.insert(member, record);
    }
}

impl PageStore for MemoryStore {
    fn get_page(&self, key: &[u8]) -> impl Future<Output = Result<Lookup, StoreError>> + Send {
        let found = self.check().map(|()| {
            let mut map = self.lock();
            match map.get(key) {
                None => Lookup::Miss,
                Some(r) if r.is_expired(self.clock.now_ms()) => {
                    map.remove(key);
                    Lookup::Expired
                }
                Some(r) => Lookup::Hit(r.clone()),
            }
        });
        std::future::ready(found)
    }

    fn put_page(
        &self,
        group: &[u8],
        variant: Option<(&[u8], Bytes)>,
        record: Record,
        since: u64,
        room: Room,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        let this = self.clone();
        let group = group.to_vec();
        let variant = variant.map(|(suffix, meta)| (suffix.to_vec(), meta));
        async move {
            let _room = room;
            let _turn = this.gate.read().await;
            this.check()?;
            if this.purges.purged_since(&group, since) {
                return Ok(false);
            }
            let variant = variant.as_ref().map(|(s, m)| (s.as_slice(), m.clone()));
            this.put(&group, variant, record);
            this.writes.fetch_add(1, Ordering::AcqRel);
            Ok(true)
        }
    }

    fn reserve(
        &self,
        _group: &[u8],
        bytes: usize,
    ) -> impl Future<Output = Result<Room, StoreError>> + Send {
        self.backlog.reserve(bytes)
    }

    fn delete_page(
        &self,
        key: &[u8],
        every_site: bool,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send {
        self.purges.key(key);
        let deleted = self.check().map(|()| {
            let mut map = self.lock();
            let mut keys = vec![key.to_vec()];
            if every_site {
                keys.extend(
                    map.keys()
                        .filter(|k| super::keys::is_site_copy(key, k))
                        .cloned(),
                );
            }
            let mut live = false;
            for k in keys {
                Self::drop_members(&mut map, &k);
                live |= map
                    .remove(&k)
                    .is_some_and(|r| !r.is_expired(self.clock.now_ms()));
            }
            live
        });
        std::future::ready(deleted)
    }

    fn purge_point(&self) -> u64 {
        self.purges.now()
    }

    fn purged_since(&self, key: &[u8], since: u64) -> bool {
        self.purges.purged_since(key, since)
    }

    fn clock(&self) -> &Clock {
        &self.clock
    }
}
