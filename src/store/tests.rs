//! The store against real files: every layer below `Store` at once.

use super::*;
use std::path::Path;
use std::time::{Duration, Instant};

fn config(dir: &Path) -> StoreConfig {
    StoreConfig {
        dir: dir.to_path_buf(),
        shards: 1,
        // No hot tier: every read goes to the directory or the shard.
        hot_bytes: 0,
        queue_depth: 64,
        max_variants: 32,
        sync: false,
        clock: Clock::system(),
        max_disk: Some(0),
        min_free: budget::MinFree::Bytes(0),
    }
}

/// Every live shard thread of this process and its policy.
#[cfg(target_os = "linux")]
fn shard_policies() -> Vec<(String, libc::c_int)> {
    let mut seen = Vec::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let name = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if !name.starts_with("bigcache-shard") {
            continue;
        }
        let tid: libc::pid_t = task.file_name().unwrap().to_str().unwrap().parse().unwrap();
        // SAFETY: only reads the policy of a thread of this process.
        let policy = unsafe { libc::sched_getscheduler(tid) };
        // -1: the thread (another test's store) ended meanwhile.
        if policy != -1 {
            seen.push((name.trim().to_string(), policy));
        }
    }
    seen
}

/// Store threads run under `SCHED_BATCH` (see `crate::sched`): a
/// read queued by the runtime does not preempt it.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn store_threads_do_not_preempt_the_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    // A shard thread sets its policy as it starts, which may be just
    // after `open` returns: looked at until it has, for a while.
    let mut seen = Vec::new();
    for _ in 0..200 {
        seen = shard_policies();
        if !seen.is_empty() && seen.iter().all(|(_, p)| *p == libc::SCHED_BATCH) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // Tests run in parallel: other tests' stores may show up too.
    assert!(!seen.is_empty(), "a shard thread: {seen:?}");
    assert!(
        seen.iter().all(|(_, p)| *p == libc::SCHED_BATCH),
        "{seen:?}"
    );
    store.shutdown().await;
}

fn record(body: &[u8]) -> Record {
    Record {
        kind: Kind::Bytes,
        created_at: 1,
        expires_at: None,
        meta: Bytes::new(),
        body: Bytes::copy_from_slice(body),
        tags: Default::default(),
        stale_since: None,
        memo: Default::default(),
    }
}

/// Pages through every key with `limit` and `scan`, checking the
/// cursor always moves forward.
async fn all_keys(
    store: &Store,
    prefix: &[u8],
    limit: usize,
    scan: usize,
) -> (Vec<Vec<u8>>, usize) {
    let (mut out, mut pages, mut after) = (Vec::new(), 0, None::<Vec<u8>>);
    loop {
        let (keys, next) = store
            .keys_scanning(Namespace::Value, prefix, after.as_deref(), limit, scan)
            .await
            .unwrap();
        pages += 1;
        assert!(keys.len() <= limit);
        out.extend(keys);
        match next {
            Some(n) => {
                assert!(
                    after.as_ref().is_none_or(|a| n > *a),
                    "the cursor went back"
                );
                after = Some(n);
            }
            None => return (out, pages),
        }
        assert!(pages < 10_000);
    }
}

#[tokio::test]
async fn a_prefix_purge_of_many_steps_removes_exactly_its_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    let n = PREFIX_STEP * 3 + 17;
    for i in 0..n {
        let key = format!("p:{i:06}");
        store
            .put(Namespace::Value, key.as_bytes(), record(b"x"))
            .await
            .unwrap();
    }
    store
        .put(Namespace::Value, b"p", record(b"x"))
        .await
        .unwrap();
    store
        .put(Namespace::Value, b"q:1", record(b"x"))
        .await
        .unwrap();
    store
        .put(Namespace::Page, b"p:000001", record(b"x"))
        .await
        .unwrap();
    assert_eq!(
        store.delete_prefix(Namespace::Value, b"p:").await.unwrap(),
        n as u64
    );
    assert_eq!(
        store
            .count(&[Namespace::Value, Namespace::Page])
            .await
            .unwrap(),
        3
    );
    assert!(matches!(
        store.get(Namespace::Value, b"p:000005").await.unwrap(),
        Lookup::Miss
    ));
    assert!(matches!(
        store.get(Namespace::Page, b"p:000001").await.unwrap(),
        Lookup::Hit(_)
    ));
    store.shutdown().await;
}

/// A purge of a path reaches every site's copy of the page, however
/// many variants sort among them (any client can add variants).
#[tokio::test]
async fn a_path_purge_reaches_every_sites_copy() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    let page = |k: &[u8]| (Namespace::Page, k.to_vec());
    let mut keys = vec![page(b"/t\0"), page(b"/t\0@https://a.example\0")];
    keys.extend((0..1500).map(|i| page(format!("/t\0@https://a.example\0v={i:04}").as_bytes())));
    keys.push(page(b"/t\0@https://b.example\0"));
    keys.push(page(b"/t\0@https://c.example\0"));
    keys.push(page(b"/t2\0@https://a.example\0"));
    for (ns, k) in &keys {
        store.put(*ns, k, record(b"x")).await.unwrap();
    }
    let purged = store.purge_page(b"/t\0", false, false).await.unwrap();
    assert_eq!(purged.count, 4, "the bare copy and three sites'");
    for site in ["a", "b", "c"] {
        let k = format!("/t\0@https://{site}.example\0");
        let found = store.get(Namespace::Page, k.as_bytes()).await.unwrap();
        assert!(matches!(found, Lookup::Miss), "{k} outlived the purge");
    }
    let other = store
        .get(Namespace::Page, b"/t2\0@https://a.example\0")
        .await
        .unwrap();
    assert!(matches!(other, Lookup::Hit(_)), "another path's copy went");
    // A copy's own delete (a page found uncacheable for one site) is
    // that copy's only.
    store
        .put(Namespace::Page, b"/u\0", record(b"x"))
        .await
        .unwrap();
    store
        .put(Namespace::Page, b"/u\0@https://a.example\0", record(b"x"))
        .await
        .unwrap();
    assert!(store.delete(Namespace::Page, b"/u\0").await.unwrap());
    let kept = store
        .get(Namespace::Page, b"/u\0@https://a.example\0")
        .await
        .unwrap();
    assert!(matches!(kept, Lookup::Hit(_)));
    store.shutdown().await;
}

/// Listing keys and counting (Django paging through `iter_keys`) do
/// not reopen every shard per call: they leave it to the idle reopen.
#[tokio::test]
async fn listings_do_not_reopen_the_shards() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    for i in 0..20u32 {
        let key = format!("k:{i:02}");
        store
            .put(Namespace::Value, key.as_bytes(), record(b"x"))
            .await
            .unwrap();
    }
    for _ in 0..5 {
        let (keys, _) = store
            .keys(Namespace::Value, b"k:", None, 100)
            .await
            .unwrap();
        assert_eq!(keys.len(), 20);
        assert_eq!(store.count(&[Namespace::Value]).await.unwrap(), 20);
    }
    let reopens = store
        .counters()
        .reopens
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(reopens, 0);
    store.shutdown().await;
}

#[tokio::test]
async fn key_pages_are_complete_whatever_each_shard_stops_at() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreConfig {
        shards: 4,
        ..config(dir.path())
    })
    .unwrap();
    let mut expected = Vec::new();
    for i in 0..300u32 {
        let key = format!("k:{i:03}");
        let mut rec = record(b"x");
        // Every third entry is expired: skipped, but it counts as scanned.
        if i % 3 == 0 {
            rec.expires_at = Some(1);
        } else {
            expected.push(key.clone().into_bytes());
        }
        store
            .put(Namespace::Value, key.as_bytes(), rec)
            .await
            .unwrap();
    }
    store
        .put(Namespace::Value, b"j", record(b"x"))
        .await
        .unwrap();
    store
        .put(Namespace::Value, b"l", record(b"x"))
        .await
        .unwrap();
    for (limit, scan) in [(1000, 100_000), (7, 100_000), (7, 3), (1, 1), (50, 10)] {
        let (got, pages) = all_keys(&store, b"k:", limit, scan).await;
        assert_eq!(got, expected, "limit {limit}, scan {scan}");
        if scan >= 300 {
            assert_eq!(
                pages,
                expected.len().div_ceil(limit).max(1),
                "limit {limit}: pages"
            );
        }
    }
    store.shutdown().await;
}

/// Commands queued behind a busy shard run in the order they were
/// sent, whether or not their puts share a batch. (Reads are left out:
/// while the shard is busy they are answered from the directory and
/// the entries, with what was acknowledged so far.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_commands_keep_their_order_through_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    let big = |c: u8| record(&[c; 2_000]);
    stall(&store, 300).await;
    let mut tasks = Vec::new();
    // Sent one after another: each task is in the queue before the next.
    macro_rules! queue {
        ($e:expr) => {{
            let store = store.clone();
            tasks.push(tokio::spawn(async move { $e(store).await }));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }};
    }
    queue!(|s: Store| async move {
        s.put(Namespace::Value, b"a", big(b'1'))
            .await
            .map(|()| None)
    });
    queue!(|s: Store| async move {
        s.put(Namespace::Value, b"b", big(b'2'))
            .await
            .map(|()| None)
    });
    queue!(|s: Store| async move {
        s.put(Namespace::Value, b"a", big(b'3'))
            .await
            .map(|()| None)
    });
    queue!(|s: Store| async move {
        s.delete(Namespace::Value, b"b")
            .await
            .map(|d| d.then(Bytes::new))
    });
    queue!(|s: Store| async move {
        s.put(Namespace::Value, b"c", big(b'4'))
            .await
            .map(|()| None)
    });
    let mut got = Vec::new();
    for t in tasks {
        got.push(t.await.unwrap().unwrap());
    }
    assert_eq!(got[3], Some(Bytes::new()), "the delete found b");
    let now = |k: &'static [u8]| {
        let store = store.clone();
        async move {
            match store.get(Namespace::Value, k).await.unwrap() {
                Lookup::Hit(r) => Some(r.body[0]),
                _ => None,
            }
        }
    };
    assert_eq!(now(b"a").await, Some(b'3'));
    assert_eq!(now(b"b").await, None);
    assert_eq!(now(b"c").await, Some(b'4'));
    let grouped = store
        .counters()
        .grouped_puts
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(
        grouped, 2,
        "a then b shared a batch; the second a did not join it"
    );
    store.shutdown().await;
}

async fn stall(store: &Store, ms: u64) {
    store.shards[0]
        .tx
        .send(Command::Stall(Duration::from_millis(ms)))
        .await
        .unwrap();
    // Let the shard thread pick it up.
    tokio::time::sleep(Duration::from_millis(10)).await;
}

/// How long `read_while_stalled` holds the shard thread.
const STALLED: Duration = Duration::from_secs(2);

/// Reads a key while the shard thread is held for [`STALLED`]; returns
/// what was read and how long it took.
async fn read_while_stalled(store: &Store, key: &[u8]) -> (Option<Bytes>, Duration) {
    stall(store, STALLED.as_millis() as u64).await;
    let t = Instant::now();
    let found = match store.get(Namespace::Value, key).await.unwrap() {
        Lookup::Hit(r) => Some(r.body),
        _ => None,
    };
    (found, t.elapsed())
}

/// Waits until every shard's directory is built.
async fn directories_ready(store: &Store) {
    let t = Instant::now();
    while store.directory_usage().ready_shards < store.shard_count() as u64 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "directories not built"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A key the directory has no place for is a miss answered on the
/// caller's task: the stalled shard is not asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_key_is_a_miss_without_asking_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    store
        .put(Namespace::Value, b"gone", record(b"g"))
        .await
        .unwrap();
    assert!(store.delete(Namespace::Value, b"gone").await.unwrap());
    directories_ready(&store).await;
    for key in [&b"gone"[..], b"never"] {
        let (found, took) = read_while_stalled(&store, key).await;
        assert_eq!(found, None);
        assert!(took < STALLED / 4, "waited {took:?} for the shard");
    }
    store.shutdown().await;
}

fn direct_reads(store: &Store) -> (u64, u64) {
    let c = store.counters();
    (
        c.direct_reads.load(std::sync::atomic::Ordering::Relaxed),
        c.direct_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed),
    )
}

/// A stored value is read from its entry on the caller's task, the
/// shard thread held meanwhile; what a later
/// write, a touch or a delete changed is what the next read sees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_are_read_from_their_entries_without_the_shard() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    directories_ready(&store).await;
    let page = vec![b'x'; 20_000];
    store
        .put(Namespace::Value, b"big", record(&page))
        .await
        .unwrap();
    store
        .put(Namespace::Value, b"small", record(b"s"))
        .await
        .unwrap();
    // A touch writes the entry again: a read from it sees the new
    // deadline, not the one the old entry held.
    let soon = store.clock().now_ms() + 200;
    let expiring = Record {
        expires_at: Some(soon),
        ..record(b"t")
    };
    store
        .put(Namespace::Value, b"touched", expiring)
        .await
        .unwrap();
    let later = store.clock().now_ms() + 3_600_000;
    assert!(
        store
            .touch(Namespace::Value, b"touched", Some(later))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let Lookup::Hit(r) = store.get(Namespace::Value, b"touched").await.unwrap() else {
        panic!("a touched value read as gone");
    };
    assert_eq!(r.expires_at, Some(later));
    let before = direct_reads(&store);
    let (found, took) = read_while_stalled(&store, b"big").await;
    assert_eq!(found.as_deref(), Some(&page[..]));
    assert!(took < STALLED / 4, "waited {took:?} for the shard");
    let (found, _) = read_while_stalled(&store, b"small").await;
    assert_eq!(found.as_deref(), Some(&b"s"[..]));
    let after = direct_reads(&store);
    assert_eq!((after.0 - before.0, after.1 - before.1), (2, 0));
    // The writes below wait out the stall; the reads after them do not.

    store
        .put(Namespace::Value, b"small", record(b"t"))
        .await
        .unwrap();
    let (found, _) = read_while_stalled(&store, b"small").await;
    assert_eq!(found.as_deref(), Some(&b"t"[..]), "the new value");
    assert!(store.delete(Namespace::Value, b"small").await.unwrap());
    let (found, _) = read_while_stalled(&store, b"small").await;
    assert_eq!(found, None);
    store.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reads_follow_clears_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    directories_ready(&store).await;
    store
        .put(Namespace::Value, b"a", record(b"1"))
        .await
        .unwrap();
    store.clear().await.unwrap();
    let (found, _) = read_while_stalled(&store, b"a").await;
    assert_eq!(found, None, "cleared");
    store
        .put(Namespace::Value, b"b", record(&[b'y'; 5_000]))
        .await
        .unwrap();
    store.shutdown().await;

    let store = Store::open(&config(dir.path())).unwrap();
    directories_ready(&store).await;
    let (found, took) = read_while_stalled(&store, b"b").await;
    assert_eq!(
        found.as_deref(),
        Some(&[b'y'; 5_000][..]),
        "the directory rebuilt at start"
    );
    // Far below the 2 s stall: read from its entry, not by the shard.
    assert!(took < STALLED / 2, "waited {took:?}");
    store.shutdown().await;
}

/// A copy read before a purge's delete and written back after it, with a
/// purge point read after the purge was first recorded (a re-encoding
/// offered at a hit while a long purge walks), is dropped: the shard
/// records the purge again as it deletes. By key, prefix and tag; each
/// shard command is sent as the purge sends it, after its first record.
#[tokio::test]
async fn a_copy_read_before_a_purges_delete_is_not_written_back_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&config(dir.path())).unwrap();
    for how in ["key", "prefix", "tag"] {
        let group = format!("/{how}/page\0");
        let tag = format!("t-{how}");
        let mut old = record(b"old copy");
        old.tags = record::Tags::new([tag.as_bytes()]);
        let room = store.reserve(group.as_bytes(), 64).await.unwrap();
        let since = store.purge_point();
        let put = store.put_page(group.as_bytes(), None, old.clone(), since, room);
        assert!(put.await.unwrap(), "{how}");
        // The copy is offered for writing back, its number read after
        // the purge recorded itself...
        let since = store.purge_point();
        // ...then the purge's delete runs on the page's shard...
        let key = keys::entry_key(Namespace::Page, group.as_bytes());
        let prefix = keys::entry_key(Namespace::Page, format!("/{how}/").as_bytes());
        let step = store
            .shard(&key)
            .call(|reply| match how {
                "key" => Command::Delete {
                    key: key.clone(),
                    soft: false,
                    reply,
                },
                "prefix" => Command::DeletePrefix {
                    prefix: prefix.clone(),
                    from: prefix.clone(),
                    limit: PREFIX_STEP,
                    continued: false,
                    soft: false,
                    reply,
                },
                _ => Command::PurgeTag {
                    tag: tag.as_bytes().to_vec(),
                    from: keys::tag_prefix(tag.as_bytes()),
                    limit: TAG_STEP,
                    soft: false,
                    reply,
                },
            })
            .await
            .unwrap();
        assert_eq!(step.count, 1, "{how}");
        // ...and the write-back comes last: dropped.
        let room = store.reserve(group.as_bytes(), 64).await.unwrap();
        let put = store.put_page(group.as_bytes(), None, old, since, room);
        assert!(
            !put.await.unwrap(),
            "{how}: the purged copy was written back"
        );
        let found = store.get(Namespace::Page, group.as_bytes()).await.unwrap();
        assert!(
            matches!(found, Lookup::Miss),
            "{how}: the purged page is back"
        );
    }
    store.shutdown().await;
}
