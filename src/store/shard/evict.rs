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

/// The share of a shard's live blob bytes pages must hold for REST values
/// to be kept while eviction walks.
const PAGES_FIRST: f64 = 0.1;

impl Shard {
    /// One bounded step of disk-budget eviction (see `store::budget` for
    /// the policy, `store::space` for the walk): entries at the head of a
    /// queue that were read since they came go to the main queue's tail
    /// (unless `force`), the others are deleted, a variant with its place
    /// in its group's list, and an entry evicted unread from the small
    /// queue leaves a ghost.
    ///
    /// Values set through the REST API (Django's cache: locks, counters,
    /// explicit values) are a class of their own: while pages hold at least
    /// [`PAGES_FIRST`] of the shard's live blob bytes and the step is not
    /// `force`d, a live value is kept like a page that was read, so a
    /// stream of one-off pages never pushes them out. Once pages are
    /// (nearly) gone, values are evicted like pages are.
    pub(super) fn evict(&mut self, budget: u64, force: bool) -> Result<Evicted, StoreError> {
        let now = self.clock.now_ms();
        let hotness = self.hotness.clone();
        let mut tx = Tx::default();
        let (all, values) = self.directory.blob_bytes();
        let pages_left =
            self.directory.ready() && (all - values.min(all)) as f64 >= all as f64 * PAGES_FIRST;
        let mut step = self
            .space
            .evict_step(&mut self.db, budget, &mut tx, |key, owner, _| {
                // A Vary group's list stays while its variants do (it
                // goes when the last of them is evicted, `stage_unlist`).
                let value = key.first() == Some(&keys::Namespace::Value.tag());
                let group = owner.record.kind == Kind::Group;
                !force
                    && !owner.record.is_expired(now)
                    && (group || value && pages_left || hotness.take(key))
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
                tx.delete_row(&keys::expiry_key(at, &key));
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
        let Some(old) = self.stored(group)? else {
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
            Ok(())
        } else {
            let record = Record {
                body: Record::encode_group_members(members.iter().map(|m| m.as_ref())),
                ..old.record
            };
            self.stage_write(tx, group, &record)
        }
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

#[cfg(test)]
mod tests {
    use super::super::build::tests::assert_directory_matches;
    use super::super::tests::*;
    use super::*;
    use crate::store::command::Evicted;
    use crate::store::record::Kind;
    use std::time::Duration;

    /// Steps eviction until the shard has nothing left to evict or `stop`
    /// says enough; returns the summed steps.
    fn evict_until(o: &mut Open, mut stop: impl FnMut(&Evicted) -> bool) -> Evicted {
        let mut sum = Evicted::default();
        for _ in 0..100_000 {
            // One entry per step, so `stop` sees each.
            let s = o.shard.evict(1, false).unwrap();
            sum.evicted += s.evicted;
            sum.reinserted += s.reinserted;
            sum.expired += s.expired;
            sum.freed += s.freed;
            if !s.more || stop(&sum) {
                return sum;
            }
        }
        panic!("eviction never ended");
    }

    #[test]
    fn eviction_walks_the_oldest_file_and_keeps_what_was_read() {
        let mut o = open();
        let now = o.clock.now_ms();
        // Incompressible, so 3 KB on disk each.
        let page: Vec<u8> = (0..3_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // 60 pages over several 64 KiB files; every third one is read, one
        // is expired, one is a Vary variant, one a small REST value.
        for i in 0..60u32 {
            let key = format!("p/page/{i}\0").into_bytes();
            let expires = (i == 1).then_some(now + 1_000);
            o.shard
                .put(key, record(Kind::Http, &page, expires))
                .unwrap();
        }
        let meta = Bytes::from_static(b"accept-language");
        o.shard
            .put_member(
                b"p/v\0".to_vec(),
                b"accept-language=ko",
                meta,
                record(Kind::Http, &page, None),
            )
            .unwrap();
        o.shard
            .put(b"vsmall".to_vec(), record(Kind::Bytes, b"s", None))
            .unwrap();
        assert!(
            o.shard
                .db
                .stored(b"vsmall")
                .unwrap()
                .unwrap()
                .blob
                .is_some(),
            "under a budget even a small body has its place in the FIFO"
        );
        for i in (0..60u32).step_by(3) {
            o.shard.hotness.touch(format!("p/page/{i}\0").as_bytes());
        }
        o.clock.advance(Duration::from_secs(2));
        let before = o.shard.space.file_bytes();
        // One round over everything: each read page is reinserted once,
        // and so is the REST value, read or not.
        let first = evict_until(&mut o, |s| s.reinserted + s.evicted + s.expired >= 62);
        assert_eq!(first.expired, 1);
        assert_eq!(
            first.reinserted, 21,
            "pages 0, 3, ... 57 were read; the value stays"
        );
        assert!(first.freed > 0 && o.shard.space.file_bytes() < before);
        for i in 0..60u32 {
            let key = format!("p/page/{i}\0");
            let kept = body(o.shard.get(key.as_bytes()).unwrap()).is_some();
            assert_eq!(kept, i % 3 == 0 && i != 1, "{key}");
        }
        // The variant went with its place in the group's list.
        assert_eq!(o.shard.db.stored(b"p/v\0").unwrap(), None);
        assert_eq!(
            body(o.shard.get(b"vsmall").unwrap()).as_deref(),
            Some(&b"s"[..])
        );
        // Not read again: the next round takes every page, not the value.
        let second = evict_until(&mut o, |s| s.evicted >= 20);
        assert_eq!(second.evicted, 20);
        assert_eq!(o.shard.count(&[b"p".to_vec()]).unwrap(), 0);
        assert_eq!(o.shard.count(&[b"v".to_vec()]).unwrap(), 1);
        // With no page left, values are evicted like pages (this one was
        // never read).
        let third = evict_until(&mut o, |s| s.evicted >= 1);
        assert_eq!(third.evicted, 1);
        assert_eq!(o.shard.count(&[b"p".to_vec(), b"v".to_vec()]).unwrap(), 0);
        assert_directory_matches(&mut o);
    }

    #[test]
    fn probation_ends_with_a_read_or_a_ghost_hit() {
        let mut o = open();
        let page: Vec<u8> = (0..3_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let queue = |o: &mut Open, key: &[u8]| {
            let blob = o.shard.db.stored(key).unwrap().unwrap().blob.unwrap();
            o.shard.space.queue_of(blob.file)
        };
        let put = |o: &mut Open, key: &[u8]| {
            o.shard
                .put(key.to_vec(), record(Kind::Http, &page, None))
                .unwrap()
        };
        put(&mut o, b"p/a\0");
        assert_eq!(queue(&mut o, b"p/a\0"), Queue::Small, "new: on probation");
        let gone = evict_until(&mut o, |_| false);
        assert_eq!((gone.evicted, gone.reinserted), (1, 0));
        // Wanted back soon after: the ghost sends it to the main queue.
        put(&mut o, b"p/a\0");
        assert_eq!(queue(&mut o, b"p/a\0"), Queue::Main);
        // Rewritten while in the main queue: stays there.
        put(&mut o, b"p/a\0");
        assert_eq!(queue(&mut o, b"p/a\0"), Queue::Main);
        // Read while on probation: promoted when its file is walked.
        put(&mut o, b"p/b\0");
        assert_eq!(queue(&mut o, b"p/b\0"), Queue::Small);
        o.shard.hotness.touch(b"p/b\0");
        let walked = evict_until(&mut o, |s| s.reinserted > 0);
        assert_eq!((walked.evicted, walked.reinserted), (0, 1));
        assert_eq!(queue(&mut o, b"p/b\0"), Queue::Main);
        assert!(body(o.shard.get(b"p/b\0").unwrap()).is_some());
        // Forced (what is read does not fit the budget): read or not, out.
        o.shard.hotness.touch(b"p/b\0");
        let mut forced = Evicted::default();
        while let Ok(s) = o.shard.evict(1 << 20, true) {
            forced.evicted += s.evicted;
            forced.reinserted += s.reinserted;
            if !s.more {
                break;
            }
        }
        assert_eq!((forced.evicted, forced.reinserted), (2, 0));
        assert_eq!(body(o.shard.get(b"p/b\0").unwrap()), None);
        assert_directory_matches(&mut o);
    }

    /// Evicting one variant takes it off its group's list and leaves the
    /// others listed (the list, in a blob entry, is read to do so).
    #[test]
    fn evicting_a_variant_keeps_the_others_listed() {
        let mut o = open();
        let page: Vec<u8> = (0..3_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let meta = Bytes::from_static(b"accept-language");
        for lang in ["ko", "en"] {
            let member = format!("accept-language={lang}");
            o.shard
                .put_member(
                    b"p/v\0".to_vec(),
                    member.as_bytes(),
                    meta.clone(),
                    record(Kind::Http, &page, None),
                )
                .unwrap();
        }
        o.shard.hotness.touch(b"p/v\0accept-language=en");
        let round = evict_until(&mut o, |s| s.evicted >= 1);
        assert_eq!(round.evicted, 1);
        let group = o.shard.stored(b"p/v\0").unwrap().expect("the group went");
        let members = group.record.group_members();
        assert_eq!(members, [Bytes::from_static(b"accept-language=en")]);
        assert!(body(o.shard.get(b"p/v\0accept-language=en").unwrap()).is_some());
        assert_directory_matches(&mut o);
    }
}
