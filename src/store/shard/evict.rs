//! A shard's part in the disk budget: one bounded eviction step, run on
//! the shard thread like any command (the budget's task in
//! `store::budget` decides when and where).

use bytes::Bytes;

use super::Shard;
use crate::store::command::Evicted;
use crate::store::error::StoreError;
use crate::store::keys;
use crate::store::record::{Kind, Record};
use crate::store::space::{Queue, Step};
use crate::store::tx::Tx;

impl Shard {
    /// One bounded step of disk-budget eviction (see `store::budget` for
    /// the policy, `store::space` for the walk): entries at the head of a
    /// queue that were read since they came go to the main queue's tail
    /// (unless `force`), the others are deleted, a variant with its place
    /// in its group's list, and an entry evicted unread from the small
    /// queue leaves a ghost.
    pub(super) fn evict(&mut self, budget: u64, force: bool) -> Result<Evicted, StoreError> {
        let now = self.clock.now_ms();
        let hotness = self.hotness.clone();
        let mut tx = Tx::default();
        let mut step = self
            .space
            .evict_step(&mut self.db, budget, &mut tx, |key, owner, _| {
                !force && !owner.record.is_expired(now) && hotness.take(key)
            })?;
        let mut out = Evicted {
            reinserted: step.reinserted,
            copied: step.copied,
            ..Evicted::default()
        };
        let mut variants: std::collections::HashMap<Vec<u8>, Vec<Vec<u8>>> = Default::default();
        for (key, owner) in std::mem::take(&mut step.dropped) {
            if owner.record.is_expired(now) {
                out.expired += 1;
            } else {
                out.evicted += 1;
                if step.from == Queue::Small {
                    self.hotness.evicted(&key);
                }
            }
            tx.replaces(&key, Some(&owner));
            self.stage_delete(&mut tx, &key)?;
            // Its expiry row too: under steady eviction, rows left for the
            // sweeper would pile up until their deadlines (28 days for a
            // page cached that long).
            if let Some(at) = owner.record.expires_at {
                tx.delete(&keys::expiry_key(at, &key));
            }
            if key.first() == Some(&keys::Namespace::Page.tag()) {
                note_variant(&mut variants, &key);
            }
        }
        for (group, gone) in variants {
            self.stage_unlist(&mut tx, &group, &gone)?;
        }
        if !tx.is_empty() {
            self.commit(tx)?;
        }
        self.space.evicted(&step.step);
        match step.step {
            Step::Idle => {}
            Step::Partial { .. } => out.more = true,
            Step::Walked(id) => {
                out.freed = self.drop_file(id)?;
                out.more = true;
            }
        }
        out.blob_bytes = self.space.file_bytes();
        Ok(out)
    }

    /// Stages taking evicted variants `gone` off the list of the group at
    /// `group`; a group left with no variant goes.
    pub(super) fn stage_unlist(
        &mut self,
        tx: &mut Tx,
        group: &[u8],
        gone: &[Vec<u8>],
    ) -> Result<(), StoreError> {
        let Some(old) = self.db.stored(group)? else {
            return Ok(());
        };
        if old.record.kind != Kind::Group {
            return Ok(());
        }
        let members: Vec<Bytes> = old
            .record
            .group_members()
            .into_iter()
            .filter(|m| !gone.iter().any(|g| g.as_slice() == m.as_ref()))
            .collect();
        tx.replaces(group, Some(&old));
        self.hot.remove(group);
        if members.is_empty() {
            tx.delete(group);
        } else {
            let record = Record {
                body: Record::encode_group_members(members.iter().map(|m| m.as_ref())),
                ..old.record
            };
            tx.put_record(group, &record, None);
        }
        Ok(())
    }
}

/// Notes `key`, when it is a `Vary` member (`<group>\0<suffix>`), under its
/// group, to take it off the group's list after the batch's deletes.
pub(super) fn note_variant(
    variants: &mut std::collections::HashMap<Vec<u8>, Vec<Vec<u8>>>,
    key: &[u8],
) {
    if let Some(nul) = memchr::memchr(0, key)
        && nul + 1 < key.len()
    {
        variants
            .entry(key[..=nul].to_vec())
            .or_default()
            .push(key[nul + 1..].to_vec());
    }
}
