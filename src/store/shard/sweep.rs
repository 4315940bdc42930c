//! A shard's expiry sweep: entries whose deadline passed are deleted in
//! bounded steps, and the span they held compacted once a round ends.

use super::Shard;
use crate::store::error::StoreError;
use crate::store::keys::{self, EXPIRY_TAG};
use crate::store::tx::Tx;

impl Shard {
    /// Reads the expiry index from its start up to now and deletes up to
    /// `batch` entries whose own deadline has passed. When a round ends (no
    /// more due rows), the shard is reopened and the deleted span compacted
    /// so the disk space really comes back.
    pub(super) fn sweep(&mut self, batch: usize) -> Result<(u64, bool), StoreError> {
        let now = self.clock.now_ms();
        let mut due = Vec::new();
        let mut more = false;
        let scan = self.db.scan(&[EXPIRY_TAG], |k, _| {
            if keys::parse_expiry_key(k).is_none_or(|(at, _)| at > now) {
                return false;
            }
            if due.len() == batch {
                more = true;
                return false;
            }
            due.push(k.to_vec());
            true
        });
        if !due.is_empty() || scan.is_err() {
            self.reopen()?;
        }
        scan?;
        let mut removed = 0;
        let mut tx = Tx::default();
        for row in &due {
            let Some((at, entry)) = keys::parse_expiry_key(row) else {
                continue;
            };
            let current = self.db.stored(entry)?;
            // The row is stale unless the entry still carries this deadline.
            if let Some(s) = current.filter(|s| s.record.expires_at == Some(at)) {
                tx.replaces(entry, Some(&s));
                self.stage_delete(&mut tx, entry)?;
                removed += 1;
                let span = self
                    .swept_span
                    .get_or_insert_with(|| (entry.to_vec(), entry.to_vec()));
                if entry < span.0.as_slice() {
                    span.0 = entry.to_vec();
                }
                if entry > span.1.as_slice() {
                    span.1 = entry.to_vec();
                }
            }
            tx.delete_row(row);
        }
        if !due.is_empty() {
            self.commit(tx)?;
        }
        if !more && let Some((from, to)) = self.swept_span.take() {
            self.db.compact_span(&from, &to)?;
            // The index rows just deleted sit at the front of the `x` range.
            self.db
                .compact_span(&[EXPIRY_TAG], &keys::expiry_key(now, &[]))?;
            self.drop_dead_files()?;
        }
        Ok((removed, more))
    }
}

#[cfg(test)]
mod tests {
    use super::super::build::tests::assert_directory_matches;
    use super::super::tests::*;
    use crate::store::record::Kind;
    use std::time::Duration;

    #[test]
    fn the_sweep_removes_what_expired_on_the_clock_and_nothing_else() {
        let mut o = open();
        let now = o.clock.now_ms();
        let hour = 3_600_000;
        o.shard
            .put(
                b"vshort".to_vec(),
                record(Kind::Bytes, b"s", Some(now + hour)),
            )
            .unwrap();
        o.shard
            .put(
                b"vlong".to_vec(),
                record(Kind::Bytes, b"l", Some(now + 48 * hour)),
            )
            .unwrap();
        o.shard
            .put(b"vforever".to_vec(), record(Kind::Bytes, b"f", None))
            .unwrap();
        assert_eq!(o.shard.sweep(100).unwrap(), (0, false));
        o.clock.advance(Duration::from_secs(2 * 3600));
        assert_eq!(o.shard.sweep(100).unwrap(), (1, false));
        assert_eq!(o.shard.db.get(b"vshort").unwrap(), None, "swept from disk");
        assert!(body(o.shard.get(b"vlong").unwrap()).is_some());
        assert!(body(o.shard.get(b"vforever").unwrap()).is_some());
        assert_eq!(o.shard.count(&[b"v".to_vec()]).unwrap(), 2);
        assert_directory_matches(&mut o);
    }
}
