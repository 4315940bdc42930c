//! A shard's purges: soft purges of one page, and the bounded steps of
//! prefix and tag purges.

use super::{Shard, evict};
use crate::store::command::PrefixStep;
use crate::store::error::StoreError;
use crate::store::keys;
use crate::store::record::Kind;
use crate::store::tx::Tx;

impl Shard {
    /// Soft purge of the page at `key`: it (or each member of the group
    /// there) is marked stale; a value is deleted. Whether a live one was
    /// there.
    pub(super) fn soft_purge(&mut self, key: &[u8]) -> Result<PrefixStep, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = Tx::default();
        let mut step = PrefixStep::default();
        let Some(old) = self.stage_old(&mut tx, key)? else {
            return Ok(step);
        };
        if old.record.is_expired(now) {
            return Ok(step);
        }
        step.count = 1;
        match old.record.kind {
            Kind::Http => {
                self.stage_soft(&mut tx, key, old, now);
                step.marked.push(key.to_vec());
            }
            Kind::Group => {
                for m in old.record.group_members() {
                    let mut k = key.to_vec();
                    k.extend_from_slice(&m);
                    match self.stage_old(&mut tx, &k)? {
                        Some(member)
                            if member.record.kind == Kind::Http
                                && !member.record.is_expired(now) =>
                        {
                            self.stage_soft(&mut tx, &k, member, now);
                            step.marked.push(k);
                        }
                        // Left as it was (its rows back with it).
                        Some(other) => tx.put_record(&k, &other.record, other.blob),
                        None => {}
                    }
                }
                // The group record itself is unchanged: write it back as
                // it was (`stage_old` took its rows off).
                tx.put_record(key, &old.record, old.blob);
            }
            Kind::Json | Kind::Bytes => self.stage_delete(&mut tx, key)?,
        }
        self.commit(tx)?;
        Ok(step)
    }

    /// One step of a tag purge: up to `limit` of the tag's index rows from
    /// `from` on. A row whose entry no longer carries the tag (none should
    /// exist: rows are written and deleted with their entries) is dropped.
    pub(super) fn purge_tag(
        &mut self,
        tag: &[u8],
        from: &[u8],
        limit: usize,
        soft: bool,
    ) -> Result<PrefixStep, StoreError> {
        let prefix = keys::tag_prefix(tag);
        let rows = self.db.keys_with_prefix(&prefix, from, limit)?;
        let now = self.clock.now_ms();
        let mut purged = 0;
        let mut marked = Vec::new();
        let mut tx = Tx::default();
        let mut variants: std::collections::HashMap<Vec<u8>, Vec<Vec<u8>>> = Default::default();
        let entries: Vec<&[u8]> = rows.iter().map(|r| &r[prefix.len()..]).collect();
        let mut found = self.db.stored_many(&entries)?.into_iter();
        for row in &rows {
            let entry = &row[prefix.len()..];
            // An entry that no longer carries the tag is left alone (only
            // the stray row goes).
            let old = found.next().flatten();
            let Some(old) = old.filter(|s| s.record.tags.contains(tag)) else {
                tx.delete_row(row);
                continue;
            };
            if !tx.replaces(entry, Some(&old)) {
                tx.delete_row(row);
                continue;
            }
            let live = !old.record.is_expired(now);
            purged += u64::from(live);
            if soft && old.record.kind == Kind::Http {
                self.stage_soft(&mut tx, entry, old, now);
                if live {
                    marked.push(entry.to_vec());
                }
                continue;
            }
            self.stage_delete(&mut tx, entry)?;
            // A variant leaves its group's list (as eviction does).
            evict::note_variant(&mut variants, entry);
        }
        for (group, gone) in variants {
            self.stage_unlist(&mut tx, &group, &gone)?;
        }
        if !rows.is_empty() {
            self.commit(tx)?;
        }
        let next = next_step(&rows, limit);
        if next.is_none() && !rows.is_empty() {
            // As after a prefix purge: what the iterator saw deleted is
            // only dropped from disk after a reopen; blob files left with
            // nothing live go now (the pages are scattered over the key
            // space, so no span is compacted: the sweep's and LevelDB's
            // own compactions take the rest).
            self.reopen()?;
            if !soft {
                self.drop_dead_files()?;
            }
        }
        Ok(PrefixStep {
            count: purged,
            next,
            marked,
        })
    }

    /// One step of a prefix purge: up to `limit` entries; the span is
    /// compacted (the deleted data dropped from disk) after the last step.
    pub(super) fn delete_prefix(
        &mut self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
        continued: bool,
        soft: bool,
    ) -> Result<PrefixStep, StoreError> {
        let found = self.db.keys_with_prefix(prefix, from, limit)?;
        let now = self.clock.now_ms();
        let mut deleted = 0;
        let mut marked = Vec::new();
        let mut tx = Tx::default();
        for key in &found {
            // Only live entries count; expired ones go too but quietly.
            let old = self.stage_old(&mut tx, key)?;
            let live = old.as_ref().is_some_and(|s| !s.record.is_expired(now));
            if soft {
                // Pages are marked; groups (rewritten as they were) and
                // expired entries are left to their own course.
                if let Some(old) = old {
                    if live && old.record.kind == Kind::Http {
                        deleted += 1;
                        self.stage_soft(&mut tx, key, old, now);
                        marked.push(key.clone());
                    } else {
                        tx.put_record(key, &old.record, old.blob);
                    }
                }
                continue;
            }
            deleted += u64::from(live);
            self.stage_delete(&mut tx, key)?;
        }
        if !found.is_empty() {
            self.commit(tx)?;
        }
        let next = next_step(&found, limit);
        if next.is_none() {
            // Once, after the last step: reopening is what makes
            // rusty-leveldb drop deleted data after an iterator existed
            // (the span is compacted right after), and it costs a close
            // and a replay of the log.
            self.reopen()?;
            if !soft && (continued || !found.is_empty()) {
                let end = keys::prefix_end(prefix).unwrap_or_else(|| vec![0xff; prefix.len() + 1]);
                self.db.compact_span(prefix, &end)?;
                self.drop_dead_files()?;
            }
        }
        Ok(PrefixStep {
            count: deleted,
            next,
            marked,
        })
    }
}

/// Where the next step of a stepped purge starts, after one that took
/// `taken` of at most `limit` keys: the smallest key after the last one
/// (so no step walks over those already done); `None` when it took fewer,
/// the end of the range.
fn next_step(taken: &[Vec<u8>], limit: usize) -> Option<Vec<u8>> {
    (taken.len() == limit)
        .then(|| taken.last().map(|k| [k.as_slice(), &[0]].concat()))
        .flatten()
}
