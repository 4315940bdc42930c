//! Restarts, crashes, corruption and disk-space reclaim, on real files.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::util::{Server, SmallDisk, client, du, get_json, noise_text, post_json, stored};

async fn set(s: &Server, key: &str, body: Value) -> reqwest::StatusCode {
    post_json(s, &format!("/cache/{key}"), body).await.0
}

async fn get(s: &Server, key: &str) -> (reqwest::StatusCode, Value) {
    get_json(s, &format!("/cache/{key}")).await
}

#[tokio::test]
async fn sigterm_closes_cleanly_and_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &[]);
    for i in 0..200 {
        assert_eq!(
            set(&s, &format!("k{i}"), json!({"value": i, "duration": "1h"})).await,
            200
        );
    }
    set(&s, "forever", json!({"value": "x"})).await;
    let status = s.stop();
    assert!(status.success(), "exit status {status}");

    let s = Server::start_in(dir.path(), &[]);
    for i in 0..200 {
        let (st, v) = get(&s, &format!("k{i}")).await;
        assert_eq!((st.as_u16(), &v["value"]), (200, &json!(i)));
    }
    let (st, v) = get(&s, "forever").await;
    assert_eq!((st.as_u16(), &v["expire"]), (200, &Value::Null));
}

/// Writers run flat out; the process is SIGKILLed mid-stream. After restart
/// every acknowledged write is intact, and no key returns anything but the
/// value written under it.
#[tokio::test]
async fn kill_9_loses_no_acknowledged_write_and_corrupts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = Arc::new(Server::start_in(dir.path(), &[]));
    let stop = Arc::new(AtomicBool::new(false));
    let acks = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut writers = Vec::new();
    for w in 0..8u64 {
        let (s, stop, acks) = (s.clone(), stop.clone(), acks.clone());
        writers.push(tokio::spawn(async move {
            let c = client();
            let mut acked = Vec::new();
            for i in 0..2_000u64 {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let key = format!("w{w}/{i}");
                let body = json!({"value": noise_text(w * 10_000 + i, 3000)});
                match c
                    .post(s.url(&format!("/cache/{key}")))
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        acked.push(i);
                        acks.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => break,
                }
            }
            acked
        }));
    }
    // Kill once writes are flowing (a few hundred acknowledged), not after
    // a guess at how long that takes.
    for _ in 0..3000 {
        if acks.load(Ordering::Relaxed) >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        acks.load(Ordering::Relaxed) >= 300,
        "writes never got going"
    );
    // Kill while requests are in flight: no waiting for the writers first.
    s.kill9_now();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for (w, t) in writers.into_iter().enumerate() {
        acked.push((w as u64, t.await.unwrap()));
    }
    drop(s);

    let s = Server::start_in(dir.path(), &[]);
    let mut total = 0;
    for (w, keys) in &acked {
        for &i in keys {
            let (st, v) = get(&s, &format!("w{w}/{i}")).await;
            assert_eq!(st, 200, "acknowledged w{w}/{i} lost");
            assert_eq!(v["value"], json!(noise_text(w * 10_000 + i, 3000)));
            total += 1;
        }
        // The next key may or may not have made it, but never garbled.
        let next = keys.last().map_or(0, |i| i + 1);
        let (st, v) = get(&s, &format!("w{w}/{next}")).await;
        if st == 200 {
            assert_eq!(v["value"], json!(noise_text(w * 10_000 + next, 3000)));
        }
    }
    assert!(
        total > 100,
        "only {total} writes before the kill; test proves little"
    );
}

/// Expired entries nobody reads again still give their disk space back:
/// the sweeper deletes them, reopens the shard (rusty-leveldb's snapshot
/// bug) and compacts.
#[tokio::test]
async fn sweeper_reclaims_space_of_unread_expired_entries() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::local_in(dir.path(), &["--sweep-interval", "1s"]).await;
    for i in 0..400u64 {
        let body = json!({"value": noise_text(i, 20_000), "duration": "2s"});
        assert_eq!(set(&s, &format!("page/{i}"), body).await, 200);
    }
    for i in 0..20u64 {
        set(
            &s,
            &format!("keep/{i}"),
            json!({"value": noise_text(i, 1000)}),
        )
        .await;
    }
    let full = du(dir.path());
    assert!(
        full > 6_000_000,
        "expected the pages on disk, found {full} bytes"
    );
    // Their lifetime runs out; nobody reads them again.
    s.advance(Duration::from_secs(3));
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now = full;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = du(dir.path());
        if now < full / 5 {
            break;
        }
    }
    assert!(now < full / 5, "disk went from {full} to only {now} bytes");
    for i in 0..20u64 {
        let (st, _) = get(&s, &format!("keep/{i}")).await;
        assert_eq!(st, 200, "the sweeper removed a live entry");
    }
}

#[tokio::test]
async fn prefix_purge_gives_disk_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--sweep-interval", "1s"]);
    for i in 0..400u64 {
        let body = json!({"value": noise_text(i, 20_000)});
        assert_eq!(set(&s, &format!("dataset/{i}"), body).await, 200);
    }
    set(&s, "other", json!({"value": 1})).await;
    let full = du(dir.path());
    let r = client()
        .delete(s.url("/prefix/dataset/"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["message"], "prefix 'dataset/': 400 keys deleted.");
    // LevelDB's share comes back at once; the blob file the pages shared
    // with "other" at the next collection.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = du(dir.path());
    while after >= full / 5 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        after = du(dir.path());
    }
    assert!(
        after < full / 5,
        "disk went from {full} to only {after} bytes"
    );
    let (st, _) = get(&s, "other").await;
    assert_eq!(st, 200);
}

/// A record damaged on disk is reported and treated as a miss; it is never
/// served and never crashes the server.
#[tokio::test]
async fn corrupt_record_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &[]);
    set(&s, "good", json!({"value": "fine"})).await;
    set(&s, "victim", json!({"value": "will be damaged"})).await;
    assert!(s.stop().success());

    // Overwrite the victim's LevelDB value with a record whose bytes are
    // damaged, through LevelDB itself, as bit rot past its checksums would.
    let entry = b"vvictim";
    let shard = bigcache::store::keys::shard_of(entry, 4);
    let shard_dir = dir.path().join(format!("shard-{shard:02}"));
    {
        let mut db =
            rusty_leveldb::DB::open(&shard_dir, rusty_leveldb::Options::default()).unwrap();
        let mut raw = db.get(entry).unwrap().to_vec();
        let mid = raw.len() / 2;
        raw[mid] ^= 0x40;
        db.put(entry, &raw).unwrap();
        db.close().unwrap();
    }

    let s = Server::start_in(dir.path(), &[]);
    let (st, _) = get(&s, "victim").await;
    assert_eq!(st, 404);
    let (st, v) = get(&s, "good").await;
    assert_eq!((st.as_u16(), &v["value"]), (200, &json!("fine")));
    assert_eq!(set(&s, "victim", json!({"value": "rewritten"})).await, 200);
    let (_, v) = get(&s, "victim").await;
    assert_eq!(v["value"], "rewritten");
}

/// A shard whose files cannot be opened is moved aside and started empty:
/// the cache comes back up instead of refusing to start.
#[tokio::test]
async fn unopenable_shard_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &[]);
    for i in 0..50 {
        set(&s, &format!("k{i}"), json!({"value": i})).await;
    }
    assert!(s.stop().success());
    std::fs::write(dir.path().join("shard-01/CURRENT"), b"MANIFEST-999999\n").unwrap();

    let s = Server::start_in(dir.path(), &[]);
    let aside = std::fs::read_dir(dir.path()).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("shard-01.corrupt-")
    });
    assert!(aside, "damaged shard was not moved aside");
    let mut alive = 0;
    for i in 0..50 {
        let (st, v) = get(&s, &format!("k{i}")).await;
        if st == 200 {
            assert_eq!(v["value"], i);
            alive += 1;
        }
    }
    assert!(alive > 0 && alive < 50, "{alive} of 50 survived");
    assert_eq!(set(&s, "new", json!({"value": 1})).await, 200);
}

#[tokio::test]
async fn a_second_instance_on_the_same_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _s = Server::start_in(dir.path(), &[]);
    let out = std::process::Command::new(crate::util::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--api-listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("another bigcache"), "{err}");
}

/// Overwritten bodies leave dead bytes in the blob files; the collector
/// copies the live ones forward and deletes the old file, and every entry
/// still reads back as its latest value.
#[tokio::test]
async fn blob_files_give_overwritten_space_back() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--shards", "1"]);
    for round in 0..4u64 {
        for i in 0..200u64 {
            let body = json!({"value": noise_text(round * 1000 + i, 20_000)});
            assert_eq!(set(&s, &format!("page/{i}"), body).await, 200);
        }
    }
    let full = du(dir.path());
    assert!(full > 15_000_000, "expected 4 rounds on disk, found {full}");
    // Now with a sweeper (and so the collector) every second.
    assert!(s.stop().success());
    let s = Server::start_in(dir.path(), &["--sweep-interval", "1s", "--shards", "1"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut now = full;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(500)).await;
        now = du(dir.path());
        if now < full / 2 {
            break;
        }
    }
    assert!(now < full / 2, "disk went from {full} to only {now} bytes");
    for i in 0..200u64 {
        let (st, v) = get(&s, &format!("page/{i}")).await;
        assert_eq!(st, 200, "page/{i} lost by the collector");
        assert_eq!(v["value"], json!(noise_text(3000 + i, 20_000)));
    }
    // And after a restart, from the relocated entries on disk.
    assert!(s.stop().success());
    let s = Server::start_in(dir.path(), &["--shards", "1"]);
    for i in (0..200u64).step_by(7) {
        let (_, v) = get(&s, &format!("page/{i}")).await;
        assert_eq!(v["value"], json!(noise_text(3000 + i, 20_000)));
    }
}

/// A damaged body in a blob file is caught by its checksum: a miss, logged,
/// never served; the entries around it are unaffected.
#[tokio::test]
async fn damaged_blob_is_a_miss() {
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start_in(dir.path(), &["--shards", "1"]);
    set(&s, "victim", json!({"value": noise_text(1, 20_000)})).await;
    set(&s, "good", json!({"value": noise_text(2, 20_000)})).await;
    assert!(s.stop().success());

    let blobs = dir.path().join("shard-00").join("blobs");
    let file = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "blob"))
        .expect("a blob file");
    let mut bytes = std::fs::read(&file).unwrap();
    // Inside the victim's body: past the file magic, entry header and key.
    bytes[8 + 12 + "vvictim".len() + 5_000] ^= 0x01;
    std::fs::write(&file, bytes).unwrap();

    let s = Server::start_in(dir.path(), &["--shards", "1"]);
    let (st, _) = get(&s, "victim").await;
    assert_eq!(st, 404);
    let (st, v) = get(&s, "good").await;
    assert_eq!(st, 200);
    assert_eq!(v["value"], json!(noise_text(2, 20_000)));
    assert_eq!(set(&s, "victim", json!({"value": "rewritten"})).await, 200);
    let (_, v) = get(&s, "victim").await;
    assert_eq!(v["value"], "rewritten");
}

/// The newest file of `dir` ending in `ext` (LevelDB logs, blob files).
fn newest(dir: &std::path::Path, ext: &str) -> Option<std::path::PathBuf> {
    let mut found: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    found.sort();
    found.pop()
}

/// Overwrites `len` bytes of `path` at `at` with garbage, as a torn page
/// after a power loss leaves them.
fn garble(path: &std::path::Path, at: u64, len: usize) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.write_all_at(&vec![0xA5; len], at).unwrap();
}

/// Requests `path` through the proxy; its status, `X-Cache` and body.
async fn page(s: &Server, path: &str) -> (u16, String, bytes::Bytes) {
    // One site across restarts (the proxy's port changes between runs).
    let r = client()
        .get(s.page(path))
        .header("host", "localhost")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let cache = r
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string();
    (status, cache, r.bytes().await.unwrap())
}

fn page_path(i: usize) -> String {
    format!("/torn/{i}/?h=X-Bigcache-TTL:28d&fixed=1&size=3000")
}

/// A torn record in a shard's log costs that record and the ones after it
/// in that log, once: rusty-leveldb reuses the recovered log and appends
/// after the damage, so every later start stopped reading at the old damage
/// and forgot everything the shard stored since. bigcache opens without
/// reusing logs (the recovered records go into a table, a new log starts).
#[tokio::test(flavor = "multi_thread")]
async fn a_torn_log_record_does_not_hide_later_writes() {
    let origin = crate::origin::Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // One write per page, as sent: bigcache's own encoding would add a
    // rewrite of each, at times of its own, to the log this test tears.
    let args = [
        "--upstream",
        &origin.url(),
        "--shards",
        "4",
        "--no-compress",
    ];
    let s = Server::start_in(dir.path(), &args);
    for i in 0..200 {
        assert_eq!(page(&s, &page_path(i)).await.1, "MISS");
    }
    stored(&s, 200).await;
    s.kill9_now();
    drop(s);
    let log = newest(&dir.path().join("shard-00"), "log").expect("a log in shard-00");
    let len = std::fs::metadata(&log).unwrap().len();
    assert!(
        len > 4_100,
        "log of {len} bytes: {:?}",
        std::fs::read_dir(dir.path().join("shard-00"))
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (e.file_name(), e.metadata().unwrap().len())
            })
            .collect::<Vec<_>>()
    );
    garble(&log, len - 4_000, 16);

    let s = Server::start_in(dir.path(), &args);
    let mut kept = 0;
    for i in 0..200 {
        let (status, cache, _) = page(&s, &page_path(i)).await;
        assert_eq!(status, 200);
        kept += usize::from(cache == "HIT");
    }
    assert!((150..200).contains(&kept), "{kept}/200 kept after the tear");
    for i in 200..300 {
        page(&s, &page_path(i)).await;
    }
    stored(&s, 300).await;
    s.kill9_now();
    drop(s);

    let s = Server::start_in(dir.path(), &args);
    for i in 200..300 {
        let (_, cache, body) = page(&s, &page_path(i)).await;
        assert_eq!(cache, "HIT", "page {i}, stored after the tear, was lost");
        assert!(body.starts_with(format!("target={}", page_path(i)).as_bytes()));
    }
}

/// Files in `dir` (not recursive), with their sizes.
fn files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    out.sort();
    out
}

/// Power loss, over and over: pages are written, the process is killed,
/// and the tail of the newest LevelDB log or blob file of one shard is torn
/// (cut at a random point in its last 8 KiB, a few bytes before the cut
/// garbled, or both). After every restart each page is its exact bytes, a
/// hit or refetched, the server is up at once, and every page whose copy
/// was stored before the last run (the one whose files were torn) is still
/// a hit: a tear costs only the records after it in its own file.
#[tokio::test(flavor = "multi_thread")]
async fn torn_tails_cost_only_themselves_cycle_after_cycle() {
    const CYCLES: usize = 20;
    const PER_CYCLE: usize = 30;
    const SHARDS: usize = 4;
    let origin = crate::origin::Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    // Pages stored as sent: bigcache's own encoding rewrites a page at a
    // hit in a later run, which this test would count as that run's write.
    let args = [
        "--upstream",
        &origin.url(),
        "--shards",
        "4",
        "--no-compress",
    ];
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n.max(1)
    };
    // Each page's exact bytes, and the run that stored its latest copy.
    let mut bodies: Vec<bytes::Bytes> = Vec::new();
    let mut stored_in: Vec<usize> = Vec::new();
    let (mut slowest, mut kept_total, mut checked_total) = (Duration::ZERO, 0, 0);
    for run in 0..=CYCLES {
        let started = Instant::now();
        let s = Server::start_in(dir.path(), &args);
        slowest = slowest.max(started.elapsed());
        let blobs_before: Vec<_> = (0..SHARDS)
            .map(|i| files(&dir.path().join(format!("shard-{i:02}/blobs"))))
            .collect();
        let mut kept = 0;
        for (id, body) in bodies.iter().enumerate() {
            let (status, cache, got) = page(&s, &page_path(id)).await;
            assert_eq!(status, 200);
            assert_eq!(
                &got, body,
                "page {id} came back with other bytes (run {run})"
            );
            if cache == "HIT" {
                kept += 1;
            } else {
                assert!(
                    stored_in[id] + 1 >= run,
                    "page {id}, stored in run {} before the torn run {}, was lost",
                    stored_in[id],
                    run - 1
                );
                stored_in[id] = run;
            }
        }
        kept_total += kept;
        checked_total += bodies.len();
        if run == CYCLES {
            eprintln!(
                "torn-write cycles: {CYCLES}, pages {}, checks {checked_total}, hits {kept_total}, slowest start {slowest:?}",
                bodies.len()
            );
            break;
        }
        for _ in 0..PER_CYCLE {
            let id = bodies.len();
            let (_, cache, body) = page(&s, &page_path(id)).await;
            assert_eq!(cache, "MISS");
            bodies.push(body);
            stored_in.push(run);
        }
        stored(&s, bodies.len() as u64).await;
        s.kill9_now();
        drop(s);

        // Tear one file this run wrote: a shard's log (always new at
        // open) or a blob file created during the run.
        let shard = next(SHARDS as u64) as usize;
        let shard_dir = dir.path().join(format!("shard-{shard:02}"));
        let new_blobs: Vec<_> = files(&shard_dir.join("blobs"))
            .into_iter()
            .filter(|p| !blobs_before[shard].contains(p))
            .collect();
        let target = match (next(2), new_blobs.last()) {
            (0, Some(blob)) => blob.clone(),
            _ => newest(&shard_dir, "log").expect("a log"),
        };
        let len = std::fs::metadata(&target).unwrap().len();
        if len == 0 {
            continue;
        }
        let cut = len - 1 - next(len.min(8192));
        let mode = next(3);
        if mode != 0 {
            let at = cut.saturating_sub(16);
            garble(&target, at, (cut - at) as usize);
        }
        if mode != 1 {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&target)
                .unwrap();
            f.set_len(cut).unwrap();
        }
    }
    // Up in well under a second on an idle machine; the bound leaves room
    // for a machine busy with other tests, not for a start that repairs
    // by rewriting the store or waits on something.
    assert!(
        slowest < Duration::from_secs(10),
        "a start took {slowest:?} after a tear"
    );
}

/// A small tmpfs of its own, unmounted when dropped: a disk that fills up
/// (or turns read-only) for real. Needs root, as the test suite has.
/// A full disk: REST writes get 507 (nothing acknowledged is lost, nothing
/// half-written is served), the proxy serves pages uncached, reads go on,
/// and writes work again once there is room.
#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_is_507_loses_nothing_and_recovers() {
    let origin = crate::origin::Origin::start().await;
    let disk = SmallDisk::mount("24m");
    // A budget larger than the filesystem (or other files filling it):
    // the filesystem itself runs full.
    let args = [
        "--upstream",
        &origin.url(),
        "--max-disk",
        "1GiB",
        "--min-free",
        "0",
    ];
    let s = Server::start_in(&disk.path(), &args);
    let value = |i: usize| noise_text(i as u64, 256 << 10);
    let mut acked = Vec::new();
    let mut refused = None;
    for i in 0..400 {
        let st = set(
            &s,
            &format!("full{i}"),
            json!({"value": value(i), "duration": "1d"}),
        )
        .await;
        if st != 200 {
            refused = Some(st.as_u16());
            break;
        }
        acked.push(i);
    }
    assert_eq!(refused, Some(507), "after {} writes", acked.len());
    assert!(acked.len() > 10, "only {} writes fit", acked.len());
    // Small values: fill what is left to the last bytes.
    let mut small = Vec::new();
    let mut refused = None;
    for i in 0..200_000 {
        let st = set(
            &s,
            &format!("small{i}"),
            json!({"value": i, "duration": "1d"}),
        )
        .await;
        if st != 200 {
            refused = Some(st.as_u16());
            break;
        }
        small.push(i);
    }
    assert_eq!(refused, Some(507), "after {} small writes", small.len());
    for &i in &acked {
        let (st, v) = get(&s, &format!("full{i}")).await;
        assert_eq!(
            (st.as_u16(), v["value"].as_str()),
            (200, Some(value(i).as_str())),
            "full{i}"
        );
    }
    // The proxy still answers, from the upstream.
    let (status, cache, body) = page(&s, &page_path(9000)).await;
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    assert!(body.starts_with(format!("target={}", page_path(9000)).as_bytes()));

    // Room again: writes are taken, pages stored.
    disk.remount("size=256m");
    let mut ok = false;
    for _ in 0..50 {
        if set(&s, "after", json!({"value": "room", "duration": "1d"})).await == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "writes still refused once the disk had room");
    page(&s, &page_path(9001)).await;
    stored(&s, (acked.len() + small.len()) as u64 + 2).await;
    assert_eq!(page(&s, &page_path(9001)).await.1, "HIT");
    s.kill9_now();
    drop(s);
    let s = Server::start_in(&disk.path(), &args);
    for &i in &acked {
        let (st, v) = get(&s, &format!("full{i}")).await;
        assert_eq!(
            (st.as_u16(), v["value"].as_str()),
            (200, Some(value(i).as_str())),
            "full{i} after restart"
        );
    }
    for &i in &small {
        let (st, v) = get(&s, &format!("small{i}")).await;
        assert_eq!(
            (st.as_u16(), &v["value"]),
            (200, &json!(i)),
            "small{i} after restart"
        );
    }
    assert_eq!(get(&s, "after").await.1["value"], "room");
}

/// `--sync` (an fsync per write) keeps everything a plain run keeps, and
/// its writes are acknowledged only once on disk (the cost is measured by
/// `bench/run.sh sync`; a power loss cannot be staged in a test).
#[tokio::test(flavor = "multi_thread")]
async fn sync_mode_keeps_every_acknowledged_write() {
    let origin = crate::origin::Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--upstream", &origin.url(), "--sync"];
    let s = Server::start_in(dir.path(), &args);
    for i in 0..100 {
        let v = json!({"value": noise_text(i, 4 << 10), "duration": "1d"});
        assert_eq!(set(&s, &format!("sync{i}"), v).await, 200);
        page(&s, &page_path(i as usize)).await;
    }
    stored(&s, 200).await;
    s.kill9_now();
    drop(s);
    let s = Server::start_in(dir.path(), &args);
    for i in 0..100 {
        let (st, v) = get(&s, &format!("sync{i}")).await;
        assert_eq!(
            (st.as_u16(), v["value"].as_str()),
            (200, Some(noise_text(i, 4 << 10).as_str()))
        );
        assert_eq!(page(&s, &page_path(i as usize)).await.1, "HIT");
    }
}

/// A read that fails with an I/O error (here a blob file that has become
/// a directory, so every read of it is `EISDIR`: no hook, a real error
/// from the kernel) is a miss: a REST read gets 404, the proxy refetches
/// the page and stores it anew, and the server stays up.
#[tokio::test(flavor = "multi_thread")]
async fn failing_reads_are_misses_and_the_page_is_stored_again() {
    let origin = crate::origin::Origin::start().await;
    let dir = tempfile::tempdir().unwrap();
    let args = ["--upstream", &origin.url(), "--shards", "1"];
    let s = Server::start_in(dir.path(), &args);
    set(&s, "value", json!({"value": noise_text(1, 20_000)})).await;
    let (_, _, body) = page(&s, &page_path(7)).await;
    stored(&s, 2).await;
    assert!(s.stop().success());
    let blobs = dir.path().join("shard-00").join("blobs");
    for f in files(&blobs) {
        std::fs::remove_file(&f).unwrap();
        std::fs::create_dir(&f).unwrap();
    }

    let s = Server::start_in(dir.path(), &args);
    assert_eq!(get(&s, "value").await.0, 404);
    let (status, cache, again) = page(&s, &page_path(7)).await;
    assert_eq!((status, cache.as_str(), &again), (200, "MISS", &body));
    stored(&s, 1).await;
    assert_eq!(page(&s, &page_path(7)).await.1, "HIT");
    let health = client().get(s.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// SIGTERM while the store is still opening (a big data directory) is a
/// clean shutdown once it is open: exit 0, not a kill before any signal
/// handler was installed.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_while_opening_is_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let api = format!("127.0.0.1:{port}");
    let mut child = std::process::Command::new(crate::util::BIN)
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--api-listen", &api, "--proxy-listen", "127.0.0.1:0"])
        .args(["--shards", "256", "--log", "warn"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Up (the REST port answers) and still opening the store.
    let status = |path: &'static str| {
        let url = format!("http://{api}{path}");
        async move {
            client()
                .get(url)
                .send()
                .await
                .map(|r| r.status().as_u16())
                .ok()
        }
    };
    let mut up = false;
    for _ in 0..500 {
        if status("/livez").await == Some(200) {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(up, "the REST port never answered");
    assert_eq!(
        status("/readyz").await,
        Some(503),
        "opened before the signal: nothing tested"
    );
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(30), "still running");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "{status}");
}
