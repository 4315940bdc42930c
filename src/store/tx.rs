//! Changes staged for one atomic LevelDB write: the batch, plus how the live
//! bytes of each blob file move with it.
//!
//! Every batch that adds or drops a blob reference also rewrites the live-
//! byte row of the blob file concerned (docs/format.md, "Key space"), in the
//! same batch, so the counts can never disagree with the references after a
//! crash. A `Tx` only collects; the shard reads old values for it and
//! commits it (`store::shard`).

use std::collections::HashMap;

use super::db::Op;
use super::directory::{Change, Place};
use super::error::StoreError;
use super::keys;
use super::record::{BlobRef, Record, Stored, Tags};

/// A committed transaction's batch, the live counts it writes, and what it
/// changes in the directory.
pub struct Batch {
    pub ops: Vec<Op>,
    pub counts: Vec<(u32, u64)>,
    pub changes: Vec<Change>,
    /// An entry was changed without its old value being staged first: the
    /// directory cannot be told where it was, and must be rebuilt.
    pub blind: bool,
}

/// What a key holds, as far as the directory and the live counts care:
/// where its body is, and whether it is soft-purged.
#[derive(Clone, Copy)]
struct Held {
    blob: Option<BlobRef>,
    stale: bool,
}

/// A key the transaction read: what it held, and what it will hold.
struct Touched {
    /// Its value before the transaction (`None`: absent), with its tags.
    old: Option<(Held, Tags)>,
    /// `None` until the transaction changes it; then `Some(None)` for a
    /// delete, `Some(Some(..))` for a write.
    new: Option<Option<Held>>,
}

#[derive(Default)]
pub struct Tx {
    ops: Vec<Op>,
    touched: HashMap<Vec<u8>, Touched>,
    blind: bool,
}

impl Tx {
    /// Whether the value `key` held before this transaction is accounted for.
    pub fn has_seen(&self, key: &[u8]) -> bool {
        self.touched.contains_key(key)
    }

    /// The blob file `key`'s value was in before this transaction.
    pub fn old_file(&self, key: &[u8]) -> Option<u32> {
        let (held, _) = self.touched.get(key)?.old.as_ref()?;
        held.blob.map(|b| b.file)
    }

    /// Notes that `old` is the value `key` holds now, before this
    /// transaction changes it. Once per key per transaction; returns
    /// whether this was the first time. Nothing changes until
    /// [`Tx::put_record`] or [`Tx::delete`] says how.
    pub fn replaces(&mut self, key: &[u8], old: Option<&Stored>) -> bool {
        if self.touched.contains_key(key) {
            return false;
        }
        let old = old.map(|s| {
            let held = Held {
                blob: s.blob,
                stale: s.record.stale_since.is_some(),
            };
            (held, s.record.tags.clone())
        });
        self.touched
            .insert(key.to_vec(), Touched { old, new: None });
        true
    }

    /// Records that `key` ends up as `new`; the first change drops the old
    /// value's tag rows (a new value re-adds its own after these).
    fn change(&mut self, key: &[u8], new: Option<Held>) {
        let t = match self.touched.get_mut(key) {
            Some(t) => t,
            None => {
                debug_assert!(false, "an entry changed without its old value staged");
                self.blind = true;
                self.touched.entry(key.to_vec()).or_insert(Touched {
                    old: None,
                    new: None,
                })
            }
        };
        if t.new.is_none()
            && let Some((_, tags)) = &t.old
        {
            for tag in tags.iter() {
                self.ops.push((keys::tag_row(tag, key), None));
            }
        }
        t.new = Some(new);
    }

    /// Stages `record` at `key`, its body inline or at `blob` (whose bytes
    /// count as live), with its expiry-index row and its tag rows. The
    /// value `key` held before must have been passed to [`Tx::replaces`]
    /// first.
    pub fn put_record(&mut self, key: &[u8], record: &Record, blob: Option<BlobRef>) {
        self.change(
            key,
            Some(Held {
                blob,
                stale: record.stale_since.is_some(),
            }),
        );
        let value = match blob {
            Some(r) => record.encode_with_blob(&r),
            None => record.encode(),
        };
        self.ops.push((key.to_vec(), Some(value)));
        if let Some(at) = record.expires_at {
            self.ops.push((keys::expiry_key(at, key), Some(Vec::new())));
        }
        for tag in record.tags.iter() {
            self.ops.push((keys::tag_row(tag, key), Some(Vec::new())));
        }
    }

    /// Stages deleting the entry at `key` (passed to [`Tx::replaces`]
    /// first).
    pub fn delete(&mut self, key: &[u8]) {
        self.change(key, None);
        self.ops.push((key.to_vec(), None));
    }

    /// Stages deleting an index row (expiry or tag), not an entry.
    pub fn delete_row(&mut self, row: &[u8]) {
        self.ops.push((row.to_vec(), None));
    }

    /// Blob bytes each file gains (or loses) with this transaction.
    fn live_deltas(&self) -> HashMap<u32, i64> {
        let mut live: HashMap<u32, i64> = HashMap::new();
        for (key, t) in &self.touched {
            let Some(new) = &t.new else { continue };
            if let Some(r) = t.old.as_ref().and_then(|(h, _)| h.blob) {
                *live.entry(r.file).or_default() -= r.entry_len(key.len()) as i64;
            }
            if let Some(r) = new.and_then(|h| h.blob) {
                *live.entry(r.file).or_default() += r.entry_len(key.len()) as i64;
            }
        }
        live
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty() && self.live_deltas().values().all(|&d| d == 0)
    }

    /// The batch to write, given each touched file's current live count:
    /// the staged ops followed by the new count rows; the new counts; and
    /// the directory's changes (`legacy` says which blob files are of
    /// format 1, see `Place::of`).
    pub fn finish(
        self,
        mut live_of: impl FnMut(u32) -> Result<u64, StoreError>,
        legacy: impl Fn(u32) -> bool,
    ) -> Result<Batch, StoreError> {
        let live = self.live_deltas();
        let Tx {
            mut ops,
            touched,
            blind,
        } = self;
        let mut counts = Vec::with_capacity(live.len());
        for (id, delta) in live {
            if delta != 0 {
                let n = (live_of(id)? as i64 + delta).max(0) as u64;
                ops.push((keys::blob_live_key(id).to_vec(), Some(keys::encode_live(n))));
                counts.push((id, n));
            }
        }
        let changes = touched
            .into_iter()
            .filter_map(|(key, t)| {
                let new = t.new?;
                let place = |h: Held| {
                    let legacy = h.blob.is_some_and(|b| legacy(b.file));
                    Place::of(h.blob.as_ref(), h.stale, key.len(), legacy)
                };
                let old = t.old.map(|(held, _)| place(held));
                let new = new.map(place);
                Some(Change { key, old, new })
            })
            .collect();
        Ok(Batch {
            ops,
            counts,
            changes,
            blind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::{Codec, Kind};
    use bytes::Bytes;

    fn record(expires_at: Option<u64>) -> Record {
        Record {
            kind: Kind::Bytes,
            created_at: 1,
            expires_at,
            meta: Bytes::new(),
            body: Bytes::new(),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        }
    }

    #[test]
    fn tag_rows_follow_the_value_that_carries_them() {
        use crate::store::record::Tags;
        let old = Stored {
            record: Record {
                tags: Tags::new([&b"a"[..], b"b"]),
                ..record(None)
            },
            blob: None,
        };
        let new = Record {
            tags: Tags::new([&b"b"[..], b"c"]),
            ..record(None)
        };
        let mut tx = Tx::default();
        tx.replaces(b"pk", Some(&old));
        tx.put_record(b"pk", &new, None);
        // Applied in order, as LevelDB applies a batch: the last op wins.
        let mut rows = std::collections::BTreeMap::new();
        for (k, v) in tx.finish(|_| Ok(0), |_| false).unwrap().ops {
            if k.first() == Some(&keys::TAG_TAG) {
                rows.insert(k, v.is_some());
            }
        }
        let expect = [("ta\0pk", false), ("tb\0pk", true), ("tc\0pk", true)];
        let got: Vec<_> = rows.iter().map(|(k, v)| (k.as_slice(), *v)).collect();
        let expect: Vec<_> = expect.iter().map(|(k, v)| (k.as_bytes(), *v)).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn a_replaced_blob_moves_live_bytes_from_its_file_to_the_new_one() {
        let blob = |file| BlobRef {
            file,
            offset: 8,
            stored_len: 100,
            body_len: 100,
            codec: Codec::None,
        };
        let old = Stored {
            record: record(None),
            blob: Some(blob(1)),
        };
        let mut tx = Tx::default();
        assert!(tx.replaces(b"pk", Some(&old)));
        assert!(!tx.replaces(b"pk", Some(&old)), "counted once");
        tx.put_record(b"pk", &record(Some(5)), Some(blob(2)));
        let Batch {
            ops, mut counts, ..
        } = tx.finish(|_| Ok(1_000), |_| false).unwrap();
        counts.sort_unstable();
        let entry = 12 + 2 + 100;
        assert_eq!(counts, [(1, 1_000 - entry), (2, 1_000 + entry)]);
        // The record, its expiry row, and two count rows.
        assert_eq!(ops.len(), 4);
        assert_eq!(ops[1].0, keys::expiry_key(5, b"pk"));
    }
}
