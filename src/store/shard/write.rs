//! A shard's reads and writes of single entries and Vary groups: each
//! write staged in a [`Tx`] (the old value read exactly first) and
//! committed in one batch; puts of REST values queued together share one.

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::Shard;
use crate::store::backlog::Room;
use crate::store::command::{Command, DeleteIf, Incr};
use crate::store::error::StoreError;
use crate::store::lookup::Lookup;
use crate::store::record::{Kind, Record, Stored};
use crate::store::space::Queue;
use crate::store::tx::Tx;

/// The most puts written as one batch: a group holds its callers no
/// longer than a batch this size takes to write.
const GROUP_MAX: usize = 32;

/// A `Command::Put`, taken apart to join a group.
pub(super) struct Put {
    pub(super) key: Vec<u8>,
    pub(super) record: Record,
    /// Given back when the put is answered.
    pub(super) _room: Room,
    pub(super) reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Whether a put may share a batch: a REST value. A page or a Vary group
/// replaces or drops other keys (a group's members) that another put in
/// the batch could be writing, and staging does not see a batch's own
/// writes.
pub(super) fn groupable(record: &Record) -> bool {
    !matches!(record.kind, Kind::Http | Kind::Group)
}

/// `first` and the puts queued right behind it, for distinct keys (a key
/// twice in one batch would stage its second value against a first that
/// is not written yet), up to [`GROUP_MAX`]. Whatever else comes first is
/// left in `next`, so commands still run in the order they were sent.
pub(super) fn gather(
    first: Put,
    rx: &mut mpsc::Receiver<Command>,
    next: &mut Option<Command>,
) -> Vec<Put> {
    let mut puts = vec![first];
    while puts.len() < GROUP_MAX {
        match rx.try_recv() {
            Ok(Command::Put {
                key,
                record,
                room,
                reply,
            }) if groupable(&record) && !puts.iter().any(|p| p.key == key) => {
                puts.push(Put {
                    key,
                    record,
                    _room: room,
                    reply,
                });
            }
            Ok(cmd) => {
                *next = Some(cmd);
                break;
            }
            Err(_) => break,
        }
    }
    puts
}

impl Shard {
    /// The unexpired value at `key`, body not loaded.
    pub(super) fn live_at(&mut self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self.db.stored(key)?.filter(|s| !s.record.is_expired(now)))
    }

    /// Reads an entry; an expired one is deleted here, a corrupt one (in
    /// LevelDB or in its blob file) is logged and deleted. Either way the
    /// caller sees no value.
    pub(super) fn get(&mut self, key: &[u8]) -> Result<Lookup, StoreError> {
        let Some(raw) = self.db.get(key)? else {
            return Ok(Lookup::Miss);
        };
        let problem = match self.space.load(key, &raw, self.clock.now_ms()) {
            Ok(Lookup::Hit(record)) => {
                if self
                    .admission
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .admit(key)
                {
                    self.hot.insert(Bytes::copy_from_slice(key), record.clone());
                }
                return Ok(Lookup::Hit(record));
            }
            Ok(_) => {
                self.remove(key)?;
                return Ok(Lookup::Expired);
            }
            Err(problem) => problem,
        };
        tracing::warn!(
            shard = self.index,
            key = %String::from_utf8_lossy(key),
            error = %problem,
            "unreadable record; treating it as a miss and deleting it"
        );
        // An undecodable record's slot goes with it (`Shard::stored`).
        self.remove(key)?;
        Ok(Lookup::Miss)
    }

    /// Takes `key`'s slot out of the directory: its record does not
    /// decode, so nothing can say where it was. The directory holds every
    /// key, so a single place for its fingerprint is this key's; more
    /// (another key shares it) and the directory is walked again rather
    /// than guessed at.
    fn forget_undecodable(&mut self, key: &[u8]) {
        if !self.directory.ready() {
            return;
        }
        let places = self.directory.places(key);
        let mut it = places.iter();
        match (it.next(), it.next()) {
            (None, _) => {}
            (Some(place), None) if !places.more => {
                self.directory.remove(key, place);
            }
            _ => self.rebuild_directory(),
        }
    }

    /// Reads the value `key` holds before `tx` changes it (exactly: see
    /// `Db::get`) and takes its blob bytes off the live count. Once per key
    /// per transaction: a later call for the same key returns `None`
    /// without reading.
    pub(super) fn stage_old(
        &mut self,
        tx: &mut Tx,
        key: &[u8],
    ) -> Result<Option<Stored>, StoreError> {
        if tx.has_seen(key) {
            return Ok(None);
        }
        let old = self.stored(key)?;
        tx.replaces(key, old.as_ref());
        Ok(old)
    }

    /// The decoded value at `key` (exactly, see `Db::get`), body not
    /// loaded, except a Vary group's: the list of its variants is what
    /// every decision on a group reads. A list that cannot be read (a
    /// damaged entry) is logged and reads as empty: its variants are then
    /// left to eviction and the sweep. A record that does not decode reads
    /// as absent, and its slot leaves the directory here: whoever asked is
    /// about to replace or delete it, and could not say where it was.
    pub(super) fn stored(&mut self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        let Some(raw) = self.db.get(key)? else {
            return Ok(None);
        };
        let Ok(mut old) = Record::decode(&raw) else {
            self.forget_undecodable(key);
            return Ok(None);
        };
        if old.record.kind == Kind::Group
            && let Some(blob) = old.blob
        {
            match self.space.read_body(key, &blob) {
                Ok(list) => old.record.body = list,
                Err(e) => tracing::warn!(
                    shard = self.index,
                    key = %String::from_utf8_lossy(key),
                    error = %e,
                    "unreadable Vary group list; taking it as empty"
                ),
            }
        }
        Ok(Some(old))
    }

    /// Stages writing `record` at `key`: its entry, holding the record and
    /// its body, is appended to a blob file now (so a read needs that entry
    /// alone, `store::direct`, and every entry has a place in the FIFO the
    /// evictor walks) and referenced from the record; a Vary group's list
    /// of variants too.
    pub(super) fn stage_write(
        &mut self,
        tx: &mut Tx,
        key: &[u8],
        record: &Record,
    ) -> Result<(), StoreError> {
        self.stage_old(tx, key)?;
        // Under a budget a new entry starts in the small queue, unless it
        // replaces one in the main queue or was evicted unread lately (it
        // is wanted again: S3-FIFO's ghost hit).
        let queue = if !self.budgeted
            || tx
                .old_file(key)
                .is_some_and(|f| self.space.queue_of(f) == Queue::Main)
            || self.hotness.was_evicted(key)
        {
            Queue::Main
        } else {
            Queue::Small
        };
        let blob = self.space.append(queue, key, record)?;
        self.counters.appended_bytes.fetch_add(
            blob.entry_len(key.len()),
            std::sync::atomic::Ordering::Relaxed,
        );
        tx.put_record(key, record, Some(blob));
        Ok(())
    }

    /// Stages marking `old`, the page at `key` (already passed to
    /// `stage_old`), stale as of `now`: the record is rewritten with its
    /// body where it is. An entry soft-purged before keeps its first time.
    pub(super) fn stage_soft(&mut self, tx: &mut Tx, key: &[u8], old: Stored, now: u64) {
        let record = Record {
            stale_since: Some(old.record.stale_since.unwrap_or(now)),
            ..old.record
        };
        // Its body is not loaded here: the next read goes to disk.
        self.hot.remove(key);
        tx.put_record(key, &record, old.blob);
    }

    pub(super) fn stage_delete(&mut self, tx: &mut Tx, key: &[u8]) -> Result<(), StoreError> {
        self.stage_old(tx, key)?;
        self.hot.remove(key);
        tx.delete(key);
        Ok(())
    }

    /// Writes `tx` with the blob files' new live counts, in one batch.
    pub(super) fn commit(&mut self, tx: Tx) -> Result<(), StoreError> {
        let (space, db) = (&mut self.space, &mut self.db);
        let legacy = space.legacy();
        let batch = tx.finish(|id| space.live_of(db, id), |id| legacy.contains(&id))?;
        if batch.blind {
            // Cannot happen (every change stages its old value first);
            // if it does, the directory is walked again rather than trusted.
            self.rebuild_directory();
        }
        if let Err(e) = self.write(batch.ops, &batch.changes) {
            // The batch may be on disk even so (its fsync failed, with
            // --sync): the live counts kept in RAM are no longer known to
            // match the rows, so they are read again when next needed.
            self.space.forget_counts();
            return Err(e);
        }
        self.space.counted(batch.counts);
        Ok(())
    }

    pub(super) fn put(&mut self, key: Vec<u8>, record: Record) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        self.stage_put(&mut tx, &key, &record)?;
        self.commit(tx)?;
        self.hot.insert(Bytes::from(key), record);
        Ok(())
    }

    /// Stages storing `record` at `key`, replacing what is there.
    pub(super) fn stage_put(
        &mut self,
        tx: &mut Tx,
        key: &[u8],
        record: &Record,
    ) -> Result<(), StoreError> {
        let old = self.stage_old(tx, key)?;
        // A page that used to vary and no longer does: its variants go.
        if record.kind == Kind::Http
            && let Some(old) = old.filter(|s| s.record.kind == Kind::Group)
        {
            self.drop_members(tx, key, &old.record)?;
        }
        self.stage_write(tx, key, record)
    }

    /// Puts of distinct keys, written as one LevelDB batch (group commit):
    /// one log write instead of one each.
    /// If any of them cannot be staged or the batch cannot be written, each
    /// is retried alone, so every caller gets its own put's outcome (a blob
    /// appended for the group is then left unreferenced, as after any
    /// failed write, for the collector to reclaim).
    pub(super) fn put_group(&mut self, puts: Vec<Put>) {
        self.ensure_open();
        if puts.len() > 1 {
            let mut tx = Tx::default();
            let staged = puts
                .iter()
                .try_for_each(|p| self.stage_put(&mut tx, &p.key, &p.record));
            if staged.and_then(|()| self.commit(tx)).is_ok() {
                self.counters.grouped(puts.len());
                for p in puts {
                    self.hot.insert(Bytes::from(p.key), p.record);
                    let _ = p.reply.send(Ok(()));
                }
                return;
            }
        }
        for p in puts {
            let _ = p.reply.send(self.put(p.key, p.record));
        }
    }

    pub(super) fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        self.stage_delete(&mut tx, key)?;
        self.commit(tx)
    }

    pub(super) fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError> {
        let mut tx = Tx::default();
        let Some(old) = self.stage_old(&mut tx, key)? else {
            return Ok(false);
        };
        if old.record.kind == Kind::Group {
            // Read first, so each member's tag rows go with it.
            for m in old.record.group_members() {
                let mut k = key.to_vec();
                k.extend_from_slice(&m);
                self.stage_old(&mut tx, &k)?;
            }
            self.drop_members(&mut tx, key, &old.record)?;
        }
        self.stage_delete(&mut tx, key)?;
        self.commit(tx)?;
        Ok(!old.record.is_expired(self.clock.now_ms()))
    }

    pub(super) fn incr(&mut self, key: Vec<u8>, delta: i64) -> Result<Incr, StoreError> {
        let Lookup::Hit(old) = self.get(&key)? else {
            return Ok(Incr::Missing);
        };
        let Some(n) = decimal(&old) else {
            return Ok(Incr::NotInteger);
        };
        let Some(new) = n.checked_add(delta) else {
            return Ok(Incr::Overflow);
        };
        let record = Record {
            body: Bytes::from(new.to_string()),
            ..old
        };
        self.put(key, record)?;
        Ok(Incr::Value(new))
    }

    pub(super) fn delete_if_body(
        &mut self,
        key: &[u8],
        expected: &[u8],
    ) -> Result<DeleteIf, StoreError> {
        match self.get(key)? {
            Lookup::Hit(rec) if rec.body == expected => {
                self.delete(key)?;
                Ok(DeleteIf::Deleted)
            }
            Lookup::Hit(_) => Ok(DeleteIf::Differs),
            Lookup::Miss | Lookup::Expired => Ok(DeleteIf::Missing),
        }
    }

    /// Gives a live entry a new deadline. The entry is written again, body
    /// and all: a blob entry holds its record, and a reader that finds it
    /// there (`store::direct`) must find the new deadline.
    pub(super) fn touch(
        &mut self,
        key: &[u8],
        expires_at: Option<u64>,
    ) -> Result<bool, StoreError> {
        let Lookup::Hit(old) = self.get(key)? else {
            return Ok(false);
        };
        let record = Record { expires_at, ..old };
        let mut tx = Tx::default();
        self.stage_write(&mut tx, key, &record)?;
        self.commit(tx)?;
        self.hot.remove(key);
        Ok(true)
    }
}

/// The integer a value holds as decimal text (an optional `-`, then
/// digits), which a JSON integer also is.
fn decimal(record: &Record) -> Option<i64> {
    if !matches!(record.kind, Kind::Bytes | Kind::Json) || record.body.first() == Some(&b'+') {
        return None;
    }
    std::str::from_utf8(&record.body).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::super::build::tests::assert_directory_matches;
    use super::super::tests::*;
    use super::*;
    use crate::store::record::Kind;

    fn put_of(key: &[u8], body: &[u8]) -> (Put, oneshot::Receiver<Result<(), StoreError>>) {
        let (reply, rx) = oneshot::channel();
        let put = Put {
            key: key.to_vec(),
            record: record(Kind::Bytes, body, None),
            _room: Room::unbounded(),
            reply,
        };
        (put, rx)
    }

    #[test]
    fn grouped_puts_are_written_and_counted_as_if_one_at_a_time() {
        let mut o = open();
        let keys: [&[u8]; 3] = [b"va", b"vb", b"vc"];
        let mut file = None;
        for round in [b'1', b'2'] {
            let (puts, replies): (Vec<_>, Vec<_>) =
                keys.iter().map(|k| put_of(k, &vec![round; 3_000])).unzip();
            o.shard.put_group(puts);
            for mut rx in replies {
                assert!(
                    matches!(rx.try_recv(), Ok(Ok(()))),
                    "every caller is answered"
                );
            }
            let mut entries = 0;
            for k in keys {
                let got = body(o.shard.get(k).unwrap()).expect("stored");
                assert_eq!(&got[..], &vec![round; 3_000][..]);
                let r = o.shard.db.stored(k).unwrap().unwrap().blob.unwrap();
                assert_eq!(*file.get_or_insert(r.file), r.file, "one blob file here");
                entries += r.entry_len(k.len());
            }
            // The second round's batch took the first round's bytes off.
            let live = o
                .shard
                .space
                .live_of(&mut o.shard.db, file.unwrap())
                .unwrap();
            assert_eq!(live, entries, "round {}", round as char);
        }
        let grouped = o
            .shard
            .counters
            .grouped_puts
            .load(std::sync::atomic::Ordering::Relaxed);
        assert_eq!(grouped, 6);
        assert_directory_matches(&mut o);
    }

    #[test]
    fn a_group_stops_at_a_repeated_key_and_keeps_the_order() {
        let (tx, mut rx) = mpsc::channel(16);
        let send = |c: Command| tx.try_send(c).map_err(|_| ()).unwrap();
        for (k, b) in [(b"k2", b"x"), (b"k3", b"x"), (b"k1", b"y"), (b"k4", b"x")] {
            let (p, _rx) = put_of(k, b);
            send(Command::Put {
                key: p.key,
                record: p.record,
                room: p._room,
                reply: p.reply,
            });
        }
        let (first, _rx) = put_of(b"k1", b"x");
        let mut next = None;
        let group = gather(first, &mut rx, &mut next);
        let keys: Vec<_> = group.iter().map(|p| p.key.clone()).collect();
        assert_eq!(keys, [b"k1".to_vec(), b"k2".to_vec(), b"k3".to_vec()]);
        assert!(
            matches!(&next, Some(Command::Put { key, .. }) if key == b"k1"),
            "the repeated key waits for the next batch"
        );
        assert!(matches!(rx.try_recv(), Ok(Command::Put { key, .. }) if key == b"k4"));
    }
}
