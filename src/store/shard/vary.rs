//! A page's `Vary` variants: the group record at the page's key lists
//! them, each is stored under the page key and its variant (docs/format.md,
//! "Key space"). Here: storing a variant (the list created, extended or
//! replaced, and capped) and dropping a group's variants.

use bytes::Bytes;

use super::Shard;
use crate::store::error::StoreError;
use crate::store::record::{Kind, Record};
use crate::store::tx::Tx;

impl Shard {
    /// Stages deleting a group's members.
    pub(super) fn drop_members(
        &mut self,
        tx: &mut Tx,
        group_key: &[u8],
        group: &Record,
    ) -> Result<(), StoreError> {
        for m in group.group_members() {
            let mut k = group_key.to_vec();
            k.extend_from_slice(&m);
            self.stage_delete(tx, &k)?;
        }
        Ok(())
    }

    /// Stores `record` as variant `member` of the group at `group_key`,
    /// listing it in the group record (created, or replaced when the
    /// group's meta, the Vary header names, changed).
    pub(super) fn put_member(
        &mut self,
        group_key: Vec<u8>,
        member: &[u8],
        group_meta: Bytes,
        record: Record,
    ) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        let mut members = Vec::new();
        let mut expires_at = record.expires_at;
        let old = self.stage_old(&mut tx, &group_key)?;
        if let Some(old) = old.map(|s| s.record).filter(|r| r.kind == Kind::Group) {
            if old.meta == group_meta {
                members = old.group_members();
                // The group lives as long as its longest-lived member.
                expires_at = match (old.expires_at, expires_at) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            } else {
                // Members keyed by other header names can never match again.
                self.drop_members(&mut tx, &group_key, &old)?;
            }
        }
        if !members.iter().any(|m| m.as_ref() == member) {
            // Full: variants that expired (or the sweep removed) make room
            // first, then the oldest, so no client can grow the group
            // record (read on every lookup) without bound.
            if members.len() >= self.max_variants {
                let mut live = Vec::with_capacity(members.len());
                for m in members {
                    let mut k = group_key.clone();
                    k.extend_from_slice(&m);
                    if self.live_at(&k)?.is_some() {
                        live.push(m);
                    } else {
                        self.stage_delete(&mut tx, &k)?;
                    }
                }
                members = live;
            }
            while members.len() >= self.max_variants {
                let oldest = members.remove(0);
                let mut k = group_key.clone();
                k.extend_from_slice(&oldest);
                self.stage_delete(&mut tx, &k)?;
            }
            members.push(Bytes::copy_from_slice(member));
        }
        let group = Record {
            kind: Kind::Group,
            created_at: record.created_at,
            expires_at,
            meta: group_meta,
            body: Record::encode_group_members(members.iter().map(|m| m.as_ref())),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        };
        let mut member_key = group_key.clone();
        member_key.extend_from_slice(member);
        self.stage_write(&mut tx, &group_key, &group)?;
        self.stage_write(&mut tx, &member_key, &record)?;
        self.commit(tx)?;
        self.hot.insert(Bytes::from(group_key), group);
        self.hot.insert(Bytes::from(member_key), record);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::build::tests::assert_directory_matches;
    use super::super::tests::*;
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_group_goes_with_its_members_and_changed_vary_names_drop_them() {
        let mut o = open();
        let meta = Bytes::from_static(b"accept-language");
        for v in ["accept-language=ko", "accept-language=en"] {
            let rec = record(Kind::Http, v.as_bytes(), None);
            o.shard
                .put_member(b"pv\0".to_vec(), v.as_bytes(), meta.clone(), rec)
                .unwrap();
        }
        let ko = b"pv\0accept-language=ko";
        assert_eq!(body(o.shard.get(ko).unwrap()).as_deref(), Some(&ko[3..]));
        // Past --max-variants (2 here) the oldest variant makes room.
        let rec = record(Kind::Http, b"fr", None);
        o.shard
            .put_member(b"pv\0".to_vec(), b"accept-language=fr", meta.clone(), rec)
            .unwrap();
        assert_eq!(body(o.shard.get(ko).unwrap()), None, "the oldest stayed");
        let fr = b"pv\0accept-language=fr";
        assert!(body(o.shard.get(fr).unwrap()).is_some());
        let group = o.shard.stored(b"pv\0").unwrap().unwrap().record;
        assert_eq!(group.group_members().len(), 2);
        // An expired variant makes room before the oldest live one.
        let soon = o.clock.now_ms() + 1_000;
        let rec = record(Kind::Http, b"de", Some(soon));
        o.shard
            .put_member(b"pv\0".to_vec(), b"accept-language=de", meta.clone(), rec)
            .unwrap();
        assert_eq!(
            body(o.shard.get(&b"pv\0accept-language=en"[..]).unwrap()),
            None
        );
        o.clock.advance(Duration::from_secs(2));
        let rec = record(Kind::Http, b"it", None);
        o.shard
            .put_member(b"pv\0".to_vec(), b"accept-language=it", meta.clone(), rec)
            .unwrap();
        assert!(
            body(o.shard.get(fr).unwrap()).is_some(),
            "a live variant went while an expired one stayed"
        );
        // Stored again under other Vary names: the old members can never
        // match and are gone.
        let rec = record(Kind::Http, b"x", None);
        o.shard
            .put_member(
                b"pv\0".to_vec(),
                b"accept=x",
                Bytes::from_static(b"accept"),
                rec,
            )
            .unwrap();
        assert_eq!(body(o.shard.get(ko).unwrap()), None);
        assert!(o.shard.delete(b"pv\0").unwrap());
        assert_eq!(body(o.shard.get(b"pv\0accept=x").unwrap()), None);
        assert_directory_matches(&mut o);
    }
}
