//! One shard: the OS thread that owns a LevelDB ([`Db`]), the blob space
//! beside it ([`BlobSpace`]), its directory and its slice of the hot tier,
//! and executes [`Command`]s from a bounded channel one at a time.
//!
//! Why a thread: rusty-leveldb's `DB` is `!Send` and compacts inside `put`
//! and `get`; on a thread of its own, async callers never block the tokio
//! runtime and a compaction stalls only this shard's queue.
//!
//! The thread is also the only writer of its hot-tier slice: every mutation
//! of a key (put, delete, purge, expiry) goes through it, so the LevelDB
//! entry and its hot copy change in one place and in order.
//!
//! Here: the thread loop, command dispatch, and opening, reopening and
//! clearing the shard. What it does with entries is split by kind of work:
//! `write` (reads, writes of entries), `vary` (Vary groups), `purge`, `listing`
//! (`/keys`, counts), `sweep` (expiry), `collect` (blob garbage), `evict`
//! (the disk budget); `exact` tests every decision on whether a key holds a
//! value. Each write is staged in a `Tx` and committed in one batch, and
//! the directory changed with it, before the caller is answered.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::mpsc;

use super::command::{Command, PrefixStep};
use super::counters::Counters;
use super::db::{self, Db, Op, Opened};
use super::direct::DirectReader;
use super::directory::{Change, Directory};
use super::error::StoreError;
use super::hot::{Admission, Hot};
use super::hotness::Hotness;
use super::keys;
use super::layout;
use super::purges::PurgeLog;
use super::space::BlobSpace;
use crate::clock::Clock;

mod build;
mod collect;
mod evict;
#[cfg(test)]
mod exact;
mod listing;
mod purge;
mod sweep;
mod vary;
mod write;

use build::Build;
use write::{Put, gather, groupable};

/// How long the directory's walk waits after a step failed.
const STEP_RETRY: std::time::Duration = std::time::Duration::from_millis(200);
/// A command taking longer than this is logged: it held up its shard.
const SLOW_COMMAND: std::time::Duration = std::time::Duration::from_millis(20);

pub struct ShardConfig {
    pub index: usize,
    pub dir: PathBuf,
    pub hot: Arc<Hot>,
    pub purges: Arc<PurgeLog>,
    pub max_variants: usize,
    /// fsync every write before it is acknowledged (`--sync`).
    pub sync: bool,
    pub clock: Clock,
    pub counters: Arc<super::counters::Counters>,
    /// Under a disk budget: new entries start in the small queue (see
    /// `store::budget`).
    pub budgeted: bool,
    /// Size at which a blob file is rolled.
    pub blob_file_max: u64,
    /// Reads per key, for the evictor (see `store::hotness`).
    pub hotness: Arc<Hotness>,
    /// Where every entry is (`store::directory`), shared with readers.
    pub directory: Arc<Directory>,
    /// Readers' direct access to the blob files, told which are deleted.
    pub direct: Arc<DirectReader>,
    /// Which cold reads earn a place in the hot tier, shared with readers.
    pub admission: Arc<Mutex<Admission>>,
}

/// State owned by the shard thread.
pub struct Shard {
    index: usize,
    db: Db,
    space: BlobSpace,
    hot: Arc<Hot>,
    admission: Arc<Mutex<Admission>>,
    direct: Arc<DirectReader>,
    purges: Arc<PurgeLog>,
    max_variants: usize,
    sync: bool,
    counters: Arc<super::counters::Counters>,
    budgeted: bool,
    hotness: Arc<Hotness>,
    clock: Clock,
    /// Key span deleted by the current sweep round, compacted when it ends.
    swept_span: Option<(Vec<u8>, Vec<u8>)>,
    /// When the DB was last (re)opened.
    opened_at: Instant,
    directory: Arc<Directory>,
    /// The directory's walk, until it is ready.
    build: Option<Build>,
    /// Walks begun since the last one that finished.
    build_tries: u32,
}

impl Shard {
    /// Opens the shard; runs on the caller's thread so a startup failure is
    /// reported before the server accepts anything.
    pub fn open(cfg: ShardConfig) -> Result<Shard, StoreError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| StoreError::open(&cfg.dir, e))?;
        let (db, _) = Db::open(
            cfg.index,
            cfg.dir.clone(),
            cfg.counters.clone(),
            cfg.directory.clone(),
        )?;
        let blobs_dir = layout::blobs_dir(&cfg.dir);
        let space = BlobSpace::open(
            cfg.index,
            blobs_dir.clone(),
            cfg.blob_file_max,
            cfg.directory.clone(),
        )
        .map_err(|e| StoreError::open(&blobs_dir, e))?;
        let mut shard = Shard {
            index: cfg.index,
            db,
            space,
            admission: cfg.admission,
            direct: cfg.direct,
            hot: cfg.hot,
            purges: cfg.purges,
            max_variants: cfg.max_variants,
            sync: cfg.sync,
            counters: cfg.counters,
            budgeted: cfg.budgeted,
            hotness: cfg.hotness,
            clock: cfg.clock,
            swept_span: None,
            opened_at: Instant::now(),
            directory: cfg.directory,
            build: None,
            build_tries: 0,
        };
        shard.rebuild_directory();
        Ok(shard)
    }

    /// The thread body: executes commands until shutdown or until every
    /// sender is gone. A panic inside one command is contained: that caller
    /// gets an error, the DB is reopened, and the shard keeps serving.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // A command taken from the channel while gathering a group of puts
        // that could not join it: the next to execute.
        let mut next: Option<Command> = None;
        loop {
            if let Some(b) = &mut self.build {
                // Walked between commands, and every few commands anyway.
                b.since_step += 1;
                if next.is_none() && rx.is_empty() || b.since_step > build::STEP_EVERY {
                    self.step_build();
                    continue;
                }
            }
            let cmd = match next.take() {
                Some(cmd) => cmd,
                None => match rx.blocking_recv() {
                    Some(cmd) => cmd,
                    None => break,
                },
            };
            if let Command::Shutdown { reply } = cmd {
                self.shut_down();
                let _ = reply.send(());
                return;
            }
            let name = cmd.name();
            let started = Instant::now();
            let outcome = match cmd {
                Command::Put {
                    key,
                    record,
                    room,
                    reply,
                } if groupable(&record) => {
                    let first = Put {
                        key,
                        record,
                        _room: room,
                        reply,
                    };
                    let puts = gather(first, &mut rx, &mut next);
                    catch_unwind(AssertUnwindSafe(|| self.put_group(puts)))
                }
                cmd => catch_unwind(AssertUnwindSafe(|| self.execute(cmd))),
            };
            let took = started.elapsed();
            if took >= SLOW_COMMAND {
                self.counters.slow(took);
                // Usually a LevelDB compaction run inline: everything queued
                // for this shard waited this long.
                tracing::warn!(
                    shard = self.index,
                    command = name,
                    took_ms = took.as_millis() as u64,
                    "slow store command"
                );
            }
            if outcome.is_err() {
                tracing::error!(
                    shard = self.index,
                    "panic inside LevelDB; reopening the shard"
                );
                self.db.abandon();
                self.hot.clear();
                self.space.forget_counts();
                self.ensure_open();
                // A batch may be written and its changes not applied.
                self.rebuild_directory();
            }
            let idle = next.is_none() && rx.is_empty();
            if self.db.iterated && db::reopen_due(self.opened_at, idle) && self.reopen().is_err() {
                tracing::warn!(shard = self.index, "reopening after an iterator failed");
            }
        }
        self.shut_down();
    }

    /// One step of the directory's walk, a panic in it contained as one
    /// in a command is.
    fn step_build(&mut self) {
        self.ensure_open();
        match catch_unwind(AssertUnwindSafe(|| self.build_step())) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                // Say the DB cannot be opened for lack of descriptors: the
                // walk waits a little rather than spin on it.
                tracing::warn!(shard = self.index, error = %e, "directory walk step failed");
                std::thread::sleep(STEP_RETRY);
            }
            Err(_) => {
                tracing::error!(shard = self.index, "panic walking the directory; reopening");
                self.db.abandon();
                self.ensure_open();
                self.rebuild_directory();
            }
        }
    }

    /// Closes the DB: the end of the shard.
    fn shut_down(&mut self) {
        self.db.close();
    }

    /// Opens the DB if the last (re)open failed, say for lack of file
    /// descriptors, so the shard recovers once the cause passes. Commands
    /// on a shard that stays closed fail with `Unavailable`.
    fn ensure_open(&mut self) {
        let opened = self.db.ensure_open().and_then(|o| self.after_open(o));
        if let Err(e) = opened {
            tracing::error!(shard = self.index, error = %e, "shard is unavailable");
        }
    }

    /// Closes and reopens the DB (see `Db::reopen`). If it does not open
    /// again the shard is unavailable until a later command reopens it.
    fn reopen(&mut self) -> Result<(), StoreError> {
        self.opened_at = Instant::now();
        Counters::bump(&self.counters.reopens);
        match self.db.reopen() {
            Ok(opened) => self.after_open(opened),
            Err(e) => {
                tracing::error!(shard = self.index, error = %e, "shard is unavailable");
                Err(StoreError::Unavailable)
            }
        }
    }

    /// When the old files had to be moved aside, the blob files went with
    /// them: fresh blob files, an empty hot tier and directory.
    fn after_open(&mut self, opened: Opened) -> Result<(), StoreError> {
        match opened {
            Opened::Intact => Ok(()),
            Opened::StartedOver => self.started_over(),
        }
    }

    fn started_over(&mut self) -> Result<(), StoreError> {
        self.hot.clear();
        self.directory.clear();
        self.direct.forget_all();
        self.space.reset()?;
        Ok(())
    }

    /// Writes `ops` in one batch, and changes the directory with it,
    /// before the caller acknowledges anything: a read after an
    /// acknowledged write sees it.
    ///
    /// With `--sync` the blob bytes reach the disk before the records that
    /// point at them, and the records before the write is acknowledged.
    ///
    /// The directory takes `changes` as soon as LevelDB has the batch
    /// (a failed write is refused whole, see `Db::write`): a failed fsync
    /// after it leaves the batch in place, and the directory with it.
    fn write(&mut self, ops: Vec<Op>, changes: &[Change]) -> Result<(), StoreError> {
        if self.sync {
            self.space.sync()?;
        }
        self.db.write(&ops)?;
        self.note_written(changes);
        self.directory.apply(changes);
        if self.sync {
            self.db.sync()?;
        }
        Ok(())
    }

    fn execute(&mut self, cmd: Command) {
        self.ensure_open();
        match cmd {
            Command::Get { key, reply } => {
                let _ = reply.send(self.get(&key));
            }
            Command::Put {
                key,
                record,
                room: _room,
                reply,
            } => {
                let _ = reply.send(self.put(key, record));
            }
            Command::PutPage {
                key,
                member,
                record,
                since,
                room: _room,
                reply,
            } => {
                // Purged since the fetch began, by its key, a prefix of it,
                // or one of its tags: the purge wins.
                let purged = self.purges.purged_since(&key, since)
                    || record
                        .tags
                        .iter()
                        .any(|t| self.purges.purged_since(&keys::tag_prefix(t), since));
                let result = if purged {
                    Ok(false)
                } else {
                    match member {
                        None => self.put(key, record),
                        Some((suffix, meta)) => self.put_member(key, &suffix, meta, record),
                    }
                    .map(|()| true)
                };
                let _ = reply.send(result);
            }
            Command::Delete { key, soft, reply } => {
                let done = if soft {
                    self.soft_purge(&key)
                } else {
                    self.delete(&key).map(|live| PrefixStep {
                        count: u64::from(live),
                        ..PrefixStep::default()
                    })
                };
                if key.first() == Some(&keys::Namespace::Page.tag()) {
                    self.purges.key(&key);
                }
                let _ = reply.send(done);
            }
            Command::Admit { key, place, record } => {
                if self.directory.holds(&key, place) {
                    self.hot.insert(bytes::Bytes::from(key), record);
                }
            }
            Command::DeleteIfExpired { key } => {
                if let Err(e) = self.get(&key) {
                    tracing::warn!(shard = self.index, error = %e, "deleting expired entry");
                }
            }
            Command::DeletePrefix {
                prefix,
                from,
                limit,
                continued,
                soft,
                reply,
            } => {
                let done = self.delete_prefix(&prefix, &from, limit, continued, soft);
                if prefix.first() == Some(&keys::Namespace::Page.tag()) {
                    self.purges.prefix(&prefix);
                }
                let _ = reply.send(done);
            }
            Command::PurgeTag {
                tag,
                from,
                limit,
                soft,
                reply,
            } => {
                let done = self.purge_tag(&tag, &from, limit, soft);
                self.purges.key(&keys::tag_prefix(&tag));
                let _ = reply.send(done);
            }
            Command::TagRows { reply } => {
                let _ = reply.send(self.tag_rows());
            }
            Command::Count { prefixes, reply } => {
                let _ = reply.send(self.count(&prefixes));
            }
            Command::Clear { reply } => {
                let done = self.clear();
                self.purges.all();
                let _ = reply.send(done);
            }
            Command::PutIfAbsent {
                key,
                record,
                room: _room,
                reply,
            } => {
                let result = match self.live_at(&key) {
                    Ok(Some(_)) => Ok(false),
                    Ok(None) => self.put(key, record).map(|()| true),
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Command::Incr { key, delta, reply } => {
                let _ = reply.send(self.incr(key, delta));
            }
            Command::DeleteIfBody {
                key,
                expected,
                reply,
            } => {
                let _ = reply.send(self.delete_if_body(&key, &expected));
            }
            Command::Keys {
                prefix,
                after,
                limit,
                scan,
                reply,
            } => {
                let _ = reply.send(self.keys(&prefix, after.as_deref(), limit, scan));
            }
            Command::Touch {
                key,
                expires_at,
                reply,
            } => {
                let _ = reply.send(self.touch(&key, expires_at));
            }
            Command::Sweep { batch, reply } => {
                let _ = reply.send(self.sweep(batch));
            }
            Command::Collect { budget, reply } => {
                let _ = reply.send(self.collect(budget));
            }
            Command::Evict {
                budget,
                force,
                reply,
            } => {
                let _ = reply.send(self.evict(budget, force));
            }
            Command::Shutdown { .. } => unreachable!("handled by run"),
            #[cfg(test)]
            Command::Stall(d) => std::thread::sleep(d),
        }
    }

    /// Empties the shard: its directory is replaced, its blob files, hot
    /// tier and directory start over.
    pub(super) fn clear(&mut self) -> Result<(), StoreError> {
        self.hot.clear();
        let replaced = self.db.replace_dir();
        self.started_over()?;
        if replaced.is_err() {
            // The old files may still be there (the rename failed), or a
            // new empty DB: the directory is walked from whichever it is.
            self.rebuild_directory();
        }
        replaced.map_err(|e| match e {
            StoreError::Open { .. } => {
                tracing::error!(shard = self.index, error = %e, "shard is unavailable");
                StoreError::Unavailable
            }
            other => other,
        })
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use bytes::Bytes;

    use crate::store::hot;
    use crate::store::lookup::Lookup;
    use crate::store::record::{Kind, Record};
    use std::time::SystemTime;

    pub(super) struct Open {
        pub(super) shard: Shard,
        pub(super) clock: Clock,
        pub(super) _dir: tempfile::TempDir,
    }

    pub(super) fn open() -> Open {
        open_in(
            tempfile::tempdir().unwrap(),
            Clock::manual(SystemTime::now()),
        )
    }

    /// Closes the shard and opens it again on the same files, as a
    /// restart does.
    pub(super) fn reopen(o: Open) -> Open {
        let Open {
            mut shard,
            clock,
            _dir,
        } = o;
        shard.shut_down();
        drop(shard);
        open_in(_dir, clock)
    }

    fn open_in(dir: tempfile::TempDir, clock: Clock) -> Open {
        let hotness = Arc::new(Hotness::new(16));
        let shard = Shard::open(ShardConfig {
            index: 0,
            dir: dir.path().join("shard-00"),
            hot: Arc::new(hot::slice(0, hotness.clone())),
            purges: Arc::new(PurgeLog::default()),
            max_variants: 2,
            sync: true,
            clock: clock.clone(),
            counters: Default::default(),
            budgeted: true,
            blob_file_max: 1 << 16,
            hotness: hotness.clone(),
            directory: Default::default(),
            direct: Arc::new(DirectReader::new(dir.path().join("shard-00/blobs"))),
            admission: Arc::new(Mutex::new(Admission::for_slice(&hot::slice(0, hotness)))),
        })
        .unwrap();
        let mut o = Open {
            shard,
            clock,
            _dir: dir,
        };
        while o.shard.build.is_some() {
            o.shard.build_step().unwrap();
        }
        o
    }

    pub(super) fn record(kind: Kind, body: &[u8], expires_at: Option<u64>) -> Record {
        Record {
            kind,
            created_at: 1,
            expires_at,
            meta: Bytes::new(),
            body: Bytes::copy_from_slice(body),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        }
    }

    pub(super) fn body_of(lookup: Lookup) -> Option<Vec<u8>> {
        body(lookup).map(|b| b.to_vec())
    }

    pub(super) fn body(lookup: Lookup) -> Option<Bytes> {
        match lookup {
            Lookup::Hit(r) => Some(r.body),
            _ => None,
        }
    }
}
