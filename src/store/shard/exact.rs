//! Every decision the shard takes on whether a key holds a value, tested
//! on the table layout that makes rusty-leveldb's point read call a live
//! key absent (`db::tests::lying_layout`). Each of these failed while the
//! decision trusted the point read.
//!
//! Each runs twice: before the shard's directory is built (decisions go to
//! LevelDB, misses confirmed by an iterator) and after (the directory
//! says which keys hold a value), in `leveldb` and `directory` below.

use bytes::Bytes;
use tokio::sync::oneshot;

use super::tests::{Open, body, open, record};
use super::*;
use crate::store::backlog::Room;
use crate::store::command::{DeleteIf, Incr};
use crate::store::db::tests::lying_layout;
use crate::store::record::{Kind, Record};

std::thread_local! {
    /// Whether this test walks the directory once its layout is written.
    static WALKED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Builds the directory from LevelDB, as a start does.
fn walk(o: &mut Open) {
    o.shard.rebuild_directory();
    while o.shard.build.is_some() {
        o.shard.build_step().unwrap();
    }
    assert!(o.shard.directory.ready());
}

/// Leaves the directory unbuilt, as in the first seconds after a start:
/// every decision goes to LevelDB.
fn unbuilt(o: &mut Open) {
    o.shard.directory.set_ready(false);
    o.shard.directory.clear();
    o.shard.build = None;
}

/// Values under `v/held/` written straight to LevelDB as `rec` (the hot
/// tier does not have them, as after a restart); returns the live ones the
/// point read calls absent. The directory is walked afterwards in the
/// `directory` runs.
fn hidden(o: &mut Open, rec: &Record) -> Vec<Vec<u8>> {
    let key = |i: u32| format!("v/held/{i:06}").into_bytes();
    let held = lying_layout(&mut o.shard.db, 20_000, key, &rec.encode());
    if WALKED.get() {
        walk(o);
    } else {
        unbuilt(o);
    }
    held
}

/// Executes a command on the shard thread's code and waits for its reply.
fn ask<T>(o: &mut Open, make: impl FnOnce(oneshot::Sender<Result<T, StoreError>>) -> Command) -> T {
    let (reply, rx) = oneshot::channel();
    o.shard.execute(make(reply));
    rx.blocking_recv().unwrap().unwrap()
}

fn raw_body(o: &mut Open, key: &[u8]) -> Option<Bytes> {
    o.shard.db.stored(key).unwrap().map(|s| s.record.body)
}

/// `X-Bigcache-Mode: add`: a lock held is not granted again.
fn add_does_not_take_a_held_key() {
    let mut o = open();
    let held = hidden(&mut o, &record(Kind::Bytes, b"holder", None));
    for key in &held[..5] {
        let added = ask(&mut o, |reply| Command::PutIfAbsent {
            key: key.clone(),
            record: record(Kind::Bytes, b"thief", None),
            room: Room::unbounded(),
            reply,
        });
        assert!(!added, "add took a held key");
        assert_eq!(raw_body(&mut o, key).as_deref(), Some(&b"holder"[..]));
    }
}

/// A counter is incremented, not reported missing.
fn incr_finds_a_hidden_counter() {
    let mut o = open();
    let held = hidden(&mut o, &record(Kind::Bytes, b"41", None));
    let key = held[0].clone();
    let n = ask(&mut o, |reply| Command::Incr {
        key: key.clone(),
        delta: 1,
        reply,
    });
    assert_eq!(n, Incr::Value(42));
}

/// A lock's release (compare-and-delete) deletes it.
fn compare_and_delete_releases_a_hidden_lock() {
    let mut o = open();
    let held = hidden(&mut o, &record(Kind::Bytes, b"token", None));
    let key = held[0].clone();
    let done = ask(&mut o, |reply| Command::DeleteIfBody {
        key: key.clone(),
        expected: Bytes::from_static(b"token"),
        reply,
    });
    assert_eq!(done, DeleteIf::Deleted);
    assert_eq!(raw_body(&mut o, &key), None);
}

/// `touch` gives a hidden value its new deadline.
fn touch_reaches_a_hidden_value() {
    let mut o = open();
    let held = hidden(&mut o, &record(Kind::Bytes, b"v", None));
    let at = o.clock.now_ms() + 60_000;
    let key = held[0].clone();
    let touched = ask(&mut o, |reply| Command::Touch {
        key: key.clone(),
        expires_at: Some(at),
        reply,
    });
    assert!(touched);
    let stored = o.shard.db.stored(&key).unwrap().unwrap();
    assert_eq!(stored.record.expires_at, Some(at));
}

/// A read (REST `GET`, a cold page) finds it: no false 404.
fn a_read_finds_a_hidden_value() {
    let mut o = open();
    let held = hidden(&mut o, &record(Kind::Bytes, b"v", None));
    for key in &held[..5] {
        let found = ask(&mut o, |reply| Command::Get {
            key: key.clone(),
            reply,
        });
        assert_eq!(body(found).as_deref(), Some(&b"v"[..]));
    }
}

/// A soft prefix purge marks every page under the prefix stale, hidden
/// ones included (they would otherwise stay fresh and be served).
fn a_soft_prefix_purge_marks_hidden_pages() {
    let mut o = open();
    let held = hidden(&mut o, &record(Kind::Http, b"page", None));
    let mut from = b"v/held/".to_vec();
    let mut count = 0;
    loop {
        let step = ask(&mut o, |reply| Command::DeletePrefix {
            prefix: b"v/held/".to_vec(),
            from: from.clone(),
            limit: 2000,
            continued: count > 0,
            soft: true,
            reply,
        });
        count += step.count;
        match step.next {
            Some(next) => from = next,
            None => break,
        }
    }
    assert_eq!(count, 10_000, "every live page under the prefix");
    for key in &held {
        let stored = o.shard.db.stored(key).unwrap().unwrap();
        assert!(stored.record.stale_since.is_some(), "left fresh");
    }
}

/// The sweep deletes a hidden entry whose deadline passed, rather than
/// dropping its expiry row and leaving the entry for good.
fn the_sweep_removes_a_hidden_expired_entry() {
    let mut o = open();
    let at = o.clock.now_ms() + 1_000;
    let held = hidden(&mut o, &record(Kind::Bytes, b"v", Some(at)));
    let rows: Vec<Op> = held
        .iter()
        .map(|k| (keys::expiry_key(at, k), Some(Vec::new())))
        .collect();
    o.shard.db.write(&rows).unwrap();
    o.clock.advance(std::time::Duration::from_secs(2));
    while o.shard.sweep(100_000).unwrap().1 {}
    for key in &held {
        assert_eq!(o.shard.db.get(key).unwrap(), None, "left behind");
    }
}

/// A blob file's live count is read exactly: a count row the point read
/// hides is not taken for "nothing live".
#[test]
fn a_hidden_live_count_is_not_zero() {
    let mut o = open();
    unbuilt(&mut o);
    let count = keys::encode_live(12_345);
    let key = |i: u32| keys::blob_live_key(i).to_vec();
    let held = lying_layout(&mut o.shard.db, 20_000, key, &count);
    for row in &held[..5] {
        let id = u32::from_be_bytes(row[1..5].try_into().unwrap());
        let live = o.shard.space.live_of(&mut o.shard.db, id).unwrap();
        assert_eq!(live, 12_345, "file {id}");
    }
}

/// A blob file counted empty that still holds a live entry (a count an
/// earlier release wrote from a false "absent") is kept and recounted,
/// not deleted with the page in it.
fn a_file_counted_empty_is_deleted_only_when_nothing_points_into_it() {
    let mut o = open();
    o.shard
        .put(b"pkept\0".to_vec(), record(Kind::Http, &[7; 4000], None))
        .unwrap();
    o.shard
        .put(b"pgone\0".to_vec(), record(Kind::Http, &[8; 4000], None))
        .unwrap();
    let kept = o
        .shard
        .db
        .stored(b"pkept\0")
        .unwrap()
        .unwrap()
        .blob
        .unwrap();
    o.shard.remove(b"pgone\0").unwrap();
    if WALKED.get() {
        walk(&mut o);
    } else {
        unbuilt(&mut o);
    }
    let wrong = vec![(
        keys::blob_live_key(kept.file).to_vec(),
        Some(keys::encode_live(0)),
    )];
    o.shard.write(wrong, &[]).unwrap();
    o.shard.space.forget_counts();
    let (freed, _) = o.shard.drop_dead_files().unwrap();
    assert_eq!(freed, 0, "a file with a live page was deleted");
    o.shard.hot.clear();
    let found = body(o.shard.get(b"pkept\0").unwrap());
    assert_eq!(found.as_deref(), Some(&[7u8; 4000][..]));
    let live = o.shard.space.live_of(&mut o.shard.db, kept.file).unwrap();
    assert_eq!(live, kept.entry_len(b"pkept\0".len()), "recounted");
    // Once the page goes, so does its file.
    o.shard.remove(b"pkept\0").unwrap();
    let (freed, _) = o.shard.drop_dead_files().unwrap();
    assert!(freed > 0, "the empty file stayed");
}

/// Each decision test, run as named in `$mode` with the directory walked
/// or not.
macro_rules! runs {
    ($mode:ident, $walked:expr, $($name:ident),+ $(,)?) => {
        mod $mode {
            $(
                #[test]
                fn $name() {
                    super::WALKED.set($walked);
                    super::$name();
                }
            )+
        }
    };
}

runs!(
    leveldb,
    false,
    add_does_not_take_a_held_key,
    incr_finds_a_hidden_counter,
    compare_and_delete_releases_a_hidden_lock,
    touch_reaches_a_hidden_value,
    a_read_finds_a_hidden_value,
    a_soft_prefix_purge_marks_hidden_pages,
    the_sweep_removes_a_hidden_expired_entry,
    a_file_counted_empty_is_deleted_only_when_nothing_points_into_it,
);
runs!(
    directory,
    true,
    add_does_not_take_a_held_key,
    incr_finds_a_hidden_counter,
    compare_and_delete_releases_a_hidden_lock,
    touch_reaches_a_hidden_value,
    a_read_finds_a_hidden_value,
    a_soft_prefix_purge_marks_hidden_pages,
    the_sweep_removes_a_hidden_expired_entry,
    a_file_counted_empty_is_deleted_only_when_nothing_points_into_it,
);
