//! Building a shard's directory (`store::directory`) from LevelDB, a step
//! at a time between commands, so a shard serves from its first second and
//! its lookups become exact from the directory once the walk is done.
//!
//! The walk reads entries in key order with an iterator (which merges
//! tables correctly, unlike the point read). Commands keep writing
//! meanwhile, and each written batch changes the directory at once: a key
//! the walk has passed is kept current that way; a key ahead of it is noted
//! in `written`, and the walk leaves it alone when it gets there, since the
//! directory already has what the batch put there (or knows it is gone).

use std::collections::HashSet;
use std::time::Instant;

use super::Shard;
use crate::store::directory::{Change, Place};
use crate::store::error::StoreError;
use crate::store::keys::{self, Namespace};
use crate::store::record::{Record, Stored};

/// Entries one step reads: a few milliseconds of the shard thread.
pub(super) const BUILD_STEP: usize = 4_096;
/// Commands run back to back before a step is taken anyway, so a shard
/// that never idles still gets its directory.
pub(super) const STEP_EVERY: u32 = 16;
/// Walks that end in a panic before the shard gives up on its directory
/// (and keeps deciding from LevelDB, as it did before there was one).
const BUILD_TRIES: u32 = 3;

/// The place of `stored`, the record at `key` (see `Place::of`).
pub(super) fn place_of(stored: &Stored, key: &[u8], legacy: &HashSet<u32>) -> Place {
    let blob = stored.blob.as_ref();
    let stale = stored.record.stale_since.is_some();
    Place::of(
        blob,
        stale,
        key.len(),
        blob.is_some_and(|b| legacy.contains(&b.file)),
    )
}

/// A walk in progress.
pub(super) struct Build {
    /// The next key to read.
    cursor: Vec<u8>,
    /// Entry keys at or after `cursor` written since the walk began.
    written: HashSet<Vec<u8>>,
    started: Instant,
    entries: u64,
    /// Commands run since the last step.
    pub(super) since_step: u32,
}

impl Shard {
    /// Starts the directory over: emptied, not trusted, and walked again
    /// from the first entry (at start, and after anything that may have
    /// left it apart from LevelDB, such as a panic mid-write).
    pub(super) fn rebuild_directory(&mut self) {
        self.directory.set_ready(false);
        self.directory.clear();
        if self.build_tries >= BUILD_TRIES {
            tracing::error!(
                shard = self.index,
                "directory walks keep failing; deciding from LevelDB alone"
            );
            self.build = None;
            return;
        }
        self.build_tries += 1;
        self.build = Some(Build {
            cursor: vec![Namespace::Page.tag().min(Namespace::Value.tag())],
            written: HashSet::new(),
            started: Instant::now(),
            entries: 0,
            since_step: 0,
        });
    }

    /// Notes the keys a written batch changed that the walk has yet to
    /// reach. A key written back as it was (`old == new`: the directory
    /// is not changed for it) is left to the walk.
    pub(super) fn note_written(&mut self, changes: &[Change]) {
        if let Some(b) = &mut self.build {
            for c in changes {
                if c.key >= b.cursor && c.old != c.new {
                    b.written.insert(c.key.clone());
                }
            }
        }
    }

    /// One step of the walk; the directory is ready after the last.
    pub(super) fn build_step(&mut self) -> Result<(), StoreError> {
        let Some(mut b) = self.build.take() else {
            return Ok(());
        };
        b.since_step = 0;
        let mut seen = 0;
        let mut last: Option<Vec<u8>> = None;
        let mut jump: Option<Vec<u8>> = None;
        let directory = self.directory.clone();
        let legacy = self.space.legacy();
        let scanned = self.db.scan(&b.cursor, |k, v| {
            if !keys::is_entry_key(k) {
                // Index rows between the two namespaces: on to the next.
                if let Some(&first) = k.first()
                    && first < Namespace::Value.tag()
                {
                    jump = Some(vec![Namespace::Value.tag()]);
                }
                return false;
            }
            if seen == BUILD_STEP {
                return false;
            }
            seen += 1;
            if !b.written.remove(k) {
                // An unreadable record still holds its key: it is deleted
                // when read, and until then it is there.
                let place = Record::decode(v).map_or(Place::Db, |s| place_of(&s, k, &legacy));
                directory.insert(k, place);
                b.entries += 1;
            }
            last = Some(k.to_vec());
            true
        });
        if let Err(e) = scanned {
            self.build = Some(b);
            return Err(e);
        }
        let next = match (last, jump) {
            (_, Some(j)) => Some(j),
            (Some(mut k), None) if seen == BUILD_STEP => {
                k.push(0);
                Some(k)
            }
            _ => None,
        };
        match next {
            Some(cursor) => {
                b.written.retain(|k| *k >= cursor);
                b.cursor = cursor;
                self.build = Some(b);
            }
            None => {
                self.directory.set_ready(true);
                self.build_tries = 0;
                tracing::info!(
                    shard = self.index,
                    entries = self.directory.len(),
                    walked = b.entries,
                    took_ms = b.started.elapsed().as_millis() as u64,
                    "directory ready"
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::tests::*;
    use super::*;
    use crate::store::record::Kind;

    /// Every entry LevelDB holds, walked with an iterator, is in the
    /// directory at its place, and the directory holds nothing else.
    pub(in crate::store::shard) fn assert_directory_matches(o: &mut Open) {
        let shard = &mut o.shard;
        assert!(shard.directory.ready(), "directory not built");
        let mut n = 0;
        let dir = shard.directory.clone();
        let legacy = shard.space.legacy();
        shard
            .db
            .scan(&[], |k, v| {
                if keys::is_entry_key(k) {
                    let place = Record::decode(v).map_or(Place::Db, |s| place_of(&s, k, &legacy));
                    assert!(
                        dir.holds(k, place),
                        "{} missing",
                        String::from_utf8_lossy(k)
                    );
                    n += 1;
                }
                true
            })
            .unwrap();
        assert_eq!(dir.len(), n, "the directory holds entries LevelDB does not");
    }

    fn build_all(o: &mut Open) {
        while o.shard.build.is_some() {
            o.shard.build_step().unwrap();
        }
    }

    #[test]
    fn a_walk_with_writes_ahead_and_behind_it_ends_with_exactly_what_is_stored() {
        let mut o = open();
        build_all(&mut o);
        for i in 0..3 * BUILD_STEP {
            let key = format!("vkey{i:05}").into_bytes();
            let body = vec![b'x'; if i % 2 == 0 { 10 } else { 3_000 }];
            o.shard.put(key, record(Kind::Bytes, &body, None)).unwrap();
        }
        o.shard
            .put(b"p/page\0".to_vec(), record(Kind::Http, b"page", None))
            .unwrap();
        o.shard.rebuild_directory();
        assert!(!o.shard.directory.ready());
        o.shard.build_step().unwrap();
        // Behind the walk, ahead of it, and past its end: overwritten,
        // deleted, and new.
        for i in [
            5usize,
            BUILD_STEP + 7,
            2 * BUILD_STEP + 1,
            3 * BUILD_STEP + 9,
        ] {
            let key = format!("vkey{i:05}").into_bytes();
            o.shard
                .put(key, record(Kind::Bytes, &[b'y'; 2_000], None))
                .unwrap();
        }
        for i in [6usize, BUILD_STEP + 8, 2 * BUILD_STEP + 2] {
            assert!(o.shard.delete(format!("vkey{i:05}").as_bytes()).unwrap());
        }
        assert!(o.shard.delete(b"p/page\0").unwrap());
        build_all(&mut o);
        assert_directory_matches(&mut o);
        assert!(!o.shard.directory.may_hold(b"vkey00006"));
        assert!(o.shard.directory.may_hold(b"vkey12297"));
    }

    /// With the directory built, writing new keys and asking for absent
    /// ones reads nothing from LevelDB: no point read, no iterator.
    #[test]
    fn absent_keys_cost_no_leveldb_read_once_built() {
        use std::sync::atomic::Ordering::Relaxed;
        let mut o = open();
        assert!(o.shard.directory.ready());
        o.shard.db.reopen().unwrap();
        for i in 0..200 {
            let key = format!("vnew{i}").into_bytes();
            assert!(o.shard.live_at(&key).unwrap().is_none());
            o.shard.put(key, record(Kind::Bytes, b"v", None)).unwrap();
        }
        assert!(o.shard.delete(b"vnew7").unwrap());
        assert!(!o.shard.delete(b"vnew7").unwrap());
        assert!(matches!(
            o.shard.get(b"vnever").unwrap(),
            crate::store::Lookup::Miss
        ));
        let counters = &o.shard.counters;
        assert_eq!(
            counters.misses_absent.load(Relaxed),
            0,
            "a miss was confirmed"
        );
        assert!(!o.shard.db.iterated, "an iterator was made");
        assert_directory_matches(&mut o);
    }

    /// A write-back that changes nothing (a soft purge of a page already
    /// soft-purged) ahead of the walk leaves the key to the walk: it is
    /// not lost from the directory.
    #[test]
    fn an_unchanged_write_back_ahead_of_the_walk_is_not_lost() {
        let mut o = open();
        for i in 0..2 * BUILD_STEP {
            let key = format!("p/s/{i:05}\0").into_bytes();
            o.shard.put(key, record(Kind::Http, b"page", None)).unwrap();
        }
        let late = format!("p/s/{:05}\0", 2 * BUILD_STEP - 3).into_bytes();
        o.shard.soft_purge(&late).unwrap();
        o.shard.rebuild_directory();
        o.shard.build_step().unwrap();
        // Stale already: written back as it was.
        o.shard.soft_purge(&late).unwrap();
        build_all(&mut o);
        assert_directory_matches(&mut o);
    }

    /// After a clear, new blob files take new ids: a reader holding a
    /// place in an old file never finds another file under its name.
    #[test]
    fn blob_ids_are_not_reused_after_a_clear() {
        let mut o = open();
        o.shard
            .put(b"va".to_vec(), record(Kind::Bytes, b"1", None))
            .unwrap();
        let first = o
            .shard
            .db
            .stored(b"va")
            .unwrap()
            .unwrap()
            .blob
            .unwrap()
            .file;
        o.shard.clear().unwrap();
        o.shard
            .put(b"va".to_vec(), record(Kind::Bytes, b"2", None))
            .unwrap();
        let second = o
            .shard
            .db
            .stored(b"va")
            .unwrap()
            .unwrap()
            .blob
            .unwrap()
            .file;
        assert!(second > first, "file {second} after {first}");
        assert_directory_matches(&mut o);
    }

    /// A record that no longer decodes is deleted when read, or replaced,
    /// and its slot goes with it (nothing else could say where it was).
    #[test]
    fn an_undecodable_record_leaves_the_directory_when_read() {
        let mut o = open();
        // Stored, then its LevelDB record damaged in place.
        let damaged = |o: &mut Open| {
            o.shard
                .put(b"vbad".to_vec(), record(Kind::Bytes, &[7; 3_000], None))
                .unwrap();
            o.shard
                .db
                .write(&[(b"vbad".to_vec(), Some(b"not a record".to_vec()))])
                .unwrap();
        };
        damaged(&mut o);
        o.shard.hot.clear();
        assert!(matches!(
            o.shard.get(b"vbad").unwrap(),
            crate::store::Lookup::Miss
        ));
        assert!(o.shard.directory.places(b"vbad").is_empty());
        assert_directory_matches(&mut o);
        // Overwritten rather than read first: the same.
        damaged(&mut o);
        o.shard
            .put(b"vbad".to_vec(), record(Kind::Bytes, &[8; 3_000], None))
            .unwrap();
        assert_eq!(o.shard.directory.places(b"vbad").iter().count(), 1);
        assert_directory_matches(&mut o);
    }

    /// A file the directory still has an entry in is never dropped, even
    /// when asked to.
    #[test]
    fn a_file_with_a_live_entry_is_not_dropped() {
        let mut o = open();
        o.shard
            .put(b"vlive".to_vec(), record(Kind::Bytes, &[9; 3_000], None))
            .unwrap();
        let file = o
            .shard
            .db
            .stored(b"vlive")
            .unwrap()
            .unwrap()
            .blob
            .unwrap()
            .file;
        assert_eq!(o.shard.drop_file(file).unwrap(), 0);
        o.shard.hot.clear();
        let got = o.shard.get(b"vlive").unwrap();
        assert!(matches!(got, crate::store::Lookup::Hit(r) if r.body.len() == 3_000));
    }
}
