//! What a shard lists and counts: `/keys` pages, entry counts, tag rows.

use super::Shard;
use crate::store::command::KeysPage;
use crate::store::error::StoreError;
use crate::store::keys;
use crate::store::record::Record;

impl Shard {
    pub(super) fn keys(
        &mut self,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        scan: usize,
    ) -> Result<KeysPage, StoreError> {
        let now = self.clock.now_ms();
        let from = match after {
            Some(a) if a > prefix => a,
            _ => prefix,
        };
        let mut page = KeysPage::default();
        let mut examined = 0;
        let mut last: Option<Vec<u8>> = None;
        let scanned = self.db.scan(from, |k, v| {
            if !k.starts_with(prefix) {
                return false;
            }
            // The cursor itself was in the previous page.
            if Some(k) == after {
                return true;
            }
            if page.keys.len() >= limit || examined >= scan {
                // More under the prefix: everything up to the last key
                // examined (at least one past the cursor) has been seen.
                page.stopped_at = last.take();
                return false;
            }
            examined += 1;
            if Record::decode(v).is_ok_and(|s| !s.record.is_expired(now)) {
                page.keys.push(k.to_vec());
            }
            last = Some(k.to_vec());
            true
        });
        scanned.map(|()| page)
    }

    pub(super) fn count(&mut self, prefixes: &[Vec<u8>]) -> Result<u64, StoreError> {
        let now = self.clock.now_ms();
        let mut n = 0;
        let mut scanned = Ok(());
        for prefix in prefixes {
            scanned = self.db.scan(prefix, |k, v| {
                let under = k.starts_with(prefix);
                if under && Record::decode(v).is_ok_and(|s| !s.record.is_expired(now)) {
                    n += 1;
                }
                under
            });
            if scanned.is_err() {
                break;
            }
        }
        scanned.map(|()| n)
    }

    pub(super) fn tag_rows(&mut self) -> Result<u64, StoreError> {
        let mut n = 0;
        let scanned = self.db.scan(&[keys::TAG_TAG], |k, _| {
            let under = k.first() == Some(&keys::TAG_TAG);
            n += u64::from(under);
            under
        });
        scanned.map(|()| n)
    }
}
