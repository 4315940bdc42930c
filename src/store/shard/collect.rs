//! A shard's part in blob garbage collection: dead files deleted (checked
//! exactly), files mostly dead copied out a bounded step at a time.

use super::Shard;
use crate::store::error::StoreError;
use crate::store::keys;
use crate::store::space::Step;
use crate::store::tx::Tx;

impl Shard {
    /// Deletes the blob files no record references any more (checked
    /// exactly, see `BlobSpace::dead_files`), and puts right any count
    /// found wrong on the way. Whether files are left to check.
    pub(super) fn drop_dead_files(&mut self) -> Result<(u64, bool), StoreError> {
        let dead = self.space.dead_files(&mut self.db)?;
        if !dead.recounted.is_empty() {
            let ops = dead
                .recounted
                .iter()
                .map(|&(id, n)| (keys::blob_live_key(id).to_vec(), Some(keys::encode_live(n))))
                .collect();
            self.write(ops, &[])?;
            self.space.counted(dead.recounted);
        }
        let mut freed = 0;
        for id in dead.files {
            freed += self.drop_file(id)?;
        }
        Ok((freed, dead.more))
    }

    /// Deletes blob file `id` and its live-byte row. A reader that looked
    /// up a place in it just before (`store::direct`) either has the file
    /// open, and reads the entry from the unlinked file, or finds it gone
    /// and asks the shard, which knows where the entry is now.
    ///
    /// Once the directory is built, a file it still has an entry in is
    /// kept, whatever the walk that led here concluded (a damaged header
    /// ends a walk early, with live entries after it).
    pub(super) fn drop_file(&mut self, id: u32) -> Result<u64, StoreError> {
        let live = self.directory.file_use(id).entries;
        if self.directory.ready() && live > 0 {
            tracing::error!(
                shard = self.index,
                file = id,
                live,
                "a blob file to drop still holds live entries; keeping it"
            );
            return Ok(0);
        }
        let len = self.space.forget_file(id);
        self.direct.forget(id);
        self.write(vec![(keys::blob_live_key(id).to_vec(), None)], &[])?;
        self.space.remove_file(id)?;
        Ok(len)
    }

    /// One bounded step of blob garbage collection (see `store::space`);
    /// returns (bytes freed, more to do).
    pub(super) fn collect(&mut self, budget: u64) -> Result<(u64, bool), StoreError> {
        let (mut freed, unchecked) = self.drop_dead_files()?;
        let mut tx = Tx::default();
        let step = self.space.collect_step(&mut self.db, budget, &mut tx)?;
        if !tx.is_empty() {
            self.commit(tx)?;
        }
        self.space.reached(&step);
        match step {
            Step::Idle => Ok((freed, unchecked)),
            Step::Partial { .. } => Ok((freed, true)),
            Step::Walked(id) => {
                freed += self.drop_file(id)?;
                Ok((freed, self.space.pick_collectable(&mut self.db)?.is_some()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::build::tests::assert_directory_matches;
    use super::super::tests::*;
    use crate::store::keys;
    use crate::store::record::Kind;

    #[test]
    fn live_bytes_follow_every_write_and_a_dead_file_is_dropped() {
        let mut o = open();
        let page = vec![b'p'; 4_000];
        o.shard
            .put(b"pa\0".to_vec(), record(Kind::Http, &page, None))
            .unwrap();
        let (file, entry) = {
            let s = o.shard.db.stored(b"pa\0").unwrap().unwrap();
            let r = s.blob.expect("a 4 KB body goes to a blob file");
            (r.file, r.entry_len(3))
        };
        let live = |o: &mut Open| o.shard.space.live_of(&mut o.shard.db, file).unwrap();
        assert_eq!(live(&mut o), entry);
        // Overwritten: the old entry's bytes are dead, the new one's live.
        o.shard
            .put(b"pa\0".to_vec(), record(Kind::Http, &page, None))
            .unwrap();
        assert_eq!(live(&mut o), entry);
        assert!(o.shard.delete(b"pa\0").unwrap());
        assert_eq!(live(&mut o), 0);
        // Nothing references the file any more: the collector drops it,
        // though it was the one taking appends.
        let (freed, _) = o.shard.collect(1 << 20).unwrap();
        assert!(freed > 0, "the dead file was kept");
        assert_eq!(body(o.shard.get(b"pa\0").unwrap()), None);
        assert_directory_matches(&mut o);
    }

    /// A data directory from a release whose blob entries held only the
    /// body: its pages still read (through LevelDB, since the entry has no
    /// record), and once the collector moves them into a format-2 file
    /// they are read from the entry alone.
    #[test]
    fn format_1_entries_read_and_move_into_whole_entries() {
        use crate::store::blobs::tests::v1_file;
        use crate::store::directory::Place;
        use crate::store::record::{BlobRef, Codec};
        let mut o = open();
        let body: Vec<u8> = b"<td>42</td>".iter().copied().cycle().take(6_000).collect();
        let packed = lz4_flex::block::compress(&body);
        let garbage = vec![b'g'; 20_000];
        let blobs = o._dir.path().join("shard-00/blobs");
        let offsets = v1_file(&blobs, 900, &[(b"pold\0", &packed), (b"pdead\0", &garbage)]);
        let r = BlobRef {
            file: 900,
            offset: offsets[0],
            stored_len: packed.len() as u32,
            body_len: body.len() as u32,
            codec: Codec::Lz4,
        };
        let rec = record(Kind::Http, b"", None);
        let rows = vec![
            (b"pold\0".to_vec(), Some(rec.encode_with_blob(&r))),
            (
                keys::blob_live_key(900).to_vec(),
                Some(keys::encode_live(r.entry_len(5))),
            ),
        ];
        o.shard.db.write(&rows).unwrap();
        let mut o = reopen(o);
        let place = o.shard.directory.places(b"pold\0").iter().next().unwrap();
        assert!(
            place.whole_entry().is_none(),
            "a format-1 entry holds no record"
        );
        assert_eq!(body_of(o.shard.get(b"pold\0").unwrap()), Some(body.clone()));

        let mut freed = 0;
        loop {
            let (n, more) = o.shard.collect(1 << 20).unwrap();
            freed += n;
            if !more {
                break;
            }
        }
        assert!(freed > 20_000, "the old file stayed");
        assert!(!blobs.join("00000900.blob").exists(), "the old file stayed");
        assert_directory_matches(&mut o);
        let places = o.shard.directory.places(b"pold\0");
        let place = places.iter().next().unwrap();
        assert!(
            matches!(place, Place::Blob { whole: true, .. }),
            "{place:?}"
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let read = rt.block_on(o.shard.direct.read(b"pold\0", place)).unwrap();
        assert_eq!(read.map(|r| r.body.to_vec()), Some(body));
    }
}
