//! One shard: the OS thread that owns a LevelDB ([`Db`]), the blob space
//! beside it ([`BlobSpace`]), its slice of the hot tier and the link to its
//! read mirror, and executes [`Command`]s from a bounded channel one at a
//! time.
//!
//! Why a thread: rusty-leveldb's `DB` is `!Send` and compacts inside `put`
//! and `get`; on a thread of its own, async callers never block the tokio
//! runtime and a compaction stalls only this shard's queue.
//!
//! The thread is also the only writer of its hot-tier slice: every mutation
//! of a key (put, delete, purge, expiry) goes through it, so the LevelDB
//! entry and its hot copy change in one place and in order.
//!
//! What lives here is what a shard does with entries: reads (deleting what
//! is expired or unreadable), writes of records and of Vary groups with
//! their members, purges, counts, the expiry sweep, and the steps of blob
//! collection. Each write is staged in a [`Tx`] and committed in one batch,
//! which the mirror gets too before the caller is answered.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::backlog::Room;
use super::busy::Busy;
use super::command::{Command, DeleteIf, Incr, KeysPage, PrefixStep};
use super::counters::Counters;
use super::db::{self, Db, Op, Opened};
use super::error::StoreError;
use super::hot::{Admission, Hot};
use super::hotness::Hotness;
use super::keys::{self, EXPIRY_TAG};
use super::layout;
use super::lookup::Lookup;
use super::mirror::{Mirror, MirrorCommand, MirrorHandle, MirrorLink};
use super::purges::PurgeLog;
use super::record::{INLINE_MAX, Kind, Record, Stored};
use super::space::{BlobSpace, Queue, Step};
use super::tx::Tx;
use crate::clock::Clock;

mod evict;
#[cfg(test)]
mod exact;

/// A command taking longer than this is logged: it held up its shard.
const SLOW_COMMAND: std::time::Duration = std::time::Duration::from_millis(20);
/// Batches the mirror may lag behind before the shard waits for it.
const MIRROR_QUEUE: usize = 4096;

pub struct ShardConfig {
    pub index: usize,
    pub dir: PathBuf,
    /// Where the read mirror keeps its copy of the LevelDB files.
    pub mirror_dir: PathBuf,
    /// Stamped while a command runs (see `store::busy`).
    pub busy: Busy,
    pub hot: Arc<Hot>,
    pub purges: Arc<PurgeLog>,
    pub max_variants: usize,
    /// fsync every write before it is acknowledged (`--sync`).
    pub sync: bool,
    pub clock: Clock,
    pub counters: Arc<super::counters::Counters>,
    /// Under a disk budget: every body goes to a blob file, so that every
    /// entry has a place in the FIFO the evictor walks.
    pub blob_all: bool,
    /// Size at which a blob file is rolled.
    pub blob_file_max: u64,
    /// Reads per key, for the evictor (see `store::hotness`).
    pub hotness: Arc<Hotness>,
}

/// State owned by the shard thread.
pub struct Shard {
    index: usize,
    db: Db,
    space: BlobSpace,
    hot: Arc<Hot>,
    admission: Admission,
    purges: Arc<PurgeLog>,
    max_variants: usize,
    sync: bool,
    counters: Arc<super::counters::Counters>,
    blob_all: bool,
    hotness: Arc<Hotness>,
    mirror: Option<MirrorLink>,
    busy: Busy,
    clock: Clock,
    /// Key span deleted by the current sweep round, compacted when it ends.
    swept_span: Option<(Vec<u8>, Vec<u8>)>,
    /// When the DB was last (re)opened.
    opened_at: Instant,
}

/// The most puts written as one batch: a group holds its callers no
/// longer than a batch this size takes to write.
const GROUP_MAX: usize = 32;

/// A `Command::Put`, taken apart to join a group.
struct Put {
    key: Vec<u8>,
    record: Record,
    /// Given back when the put is answered.
    _room: Room,
    reply: oneshot::Sender<Result<(), StoreError>>,
}

/// Whether a put may share a batch: a REST value. A page or a Vary group
/// replaces or drops other keys (a group's members) that another put in
/// the batch could be writing, and staging does not see a batch's own
/// writes.
fn groupable(record: &Record) -> bool {
    !matches!(record.kind, Kind::Http | Kind::Group)
}

/// `first` and the puts queued right behind it, for distinct keys (a key
/// twice in one batch would stage its second value against a first that
/// is not written yet), up to [`GROUP_MAX`]. Whatever else comes first is
/// left in `next`, so commands still run in the order they were sent.
fn gather(first: Put, rx: &mut mpsc::Receiver<Command>, next: &mut Option<Command>) -> Vec<Put> {
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
    /// Opens the shard; runs on the caller's thread so a startup failure is
    /// reported before the server accepts anything.
    pub fn open(cfg: ShardConfig) -> Result<(Shard, MirrorHandle), StoreError> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| StoreError::open(&cfg.dir, e))?;
        let (db, _) = Db::open(cfg.index, cfg.dir.clone(), cfg.counters.clone())?;
        let blobs_dir = layout::blobs_dir(&cfg.dir);
        let space = BlobSpace::open(cfg.index, blobs_dir.clone(), cfg.blob_file_max)
            .map_err(|e| StoreError::open(&blobs_dir, e))?;
        // Built while the shard is open and idle, from its files.
        let healthy = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::channel(MIRROR_QUEUE);
        // Without its mirror a shard still serves everything, only reads
        // then wait out its compactions: worth a loud log, not a refusal
        // to start.
        let mirror = Mirror::open(
            cfg.index,
            cfg.dir.clone(),
            cfg.mirror_dir,
            blobs_dir,
            healthy.clone(),
            cfg.clock.clone(),
            cfg.counters.clone(),
        )
        .and_then(|m| {
            std::thread::Builder::new()
                .name(format!("bigcache-mirror-{:02}", cfg.index))
                .spawn(move || {
                    crate::sched::batch_this_thread();
                    m.run(rx)
                })
                .map_err(StoreError::from)
        });
        let link = match mirror {
            Ok(thread) => Some(MirrorLink {
                tx: tx.clone(),
                thread: Some(thread),
            }),
            Err(e) => {
                tracing::error!(shard = cfg.index, error = %e, "no read mirror for this shard");
                None
            }
        };
        let shard = Shard {
            index: cfg.index,
            db,
            space,
            admission: Admission::for_slice(&cfg.hot),
            hot: cfg.hot,
            purges: cfg.purges,
            max_variants: cfg.max_variants,
            sync: cfg.sync,
            counters: cfg.counters,
            blob_all: cfg.blob_all,
            hotness: cfg.hotness,
            mirror: link,
            busy: cfg.busy,
            clock: cfg.clock,
            swept_span: None,
            opened_at: Instant::now(),
        };
        Ok((shard, MirrorHandle { tx, healthy }))
    }

    /// The thread body: executes commands until shutdown or until every
    /// sender is gone. A panic inside one command is contained: that caller
    /// gets an error, the DB is reopened, and the shard keeps serving.
    pub fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // A command taken from the channel while gathering a group of puts
        // that could not join it: the next to execute.
        let mut next: Option<Command> = None;
        loop {
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
            self.busy.start();
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
            self.busy.idle();
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
            }
            let idle = next.is_none() && rx.is_empty();
            if self.db.iterated && db::reopen_due(self.opened_at, idle) && self.reopen().is_err() {
                tracing::warn!(shard = self.index, "reopening after an iterator failed");
            }
        }
        self.shut_down();
    }

    /// Closes the DB and stops the mirror: the end of the shard.
    fn shut_down(&mut self) {
        self.db.close();
        if let Some(mut m) = self.mirror.take() {
            m.shutdown();
        }
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
    /// them: fresh blob files, an empty hot tier, a rebuilt mirror.
    fn after_open(&mut self, opened: Opened) -> Result<(), StoreError> {
        match opened {
            Opened::Intact => Ok(()),
            Opened::StartedOver => self.started_over(),
        }
    }

    fn started_over(&mut self) -> Result<(), StoreError> {
        self.hot.clear();
        self.space.reset()?;
        if let Some(m) = &self.mirror {
            m.reset();
        }
        Ok(())
    }

    /// Writes `ops` in one batch, then forwards them to the mirror, before
    /// the caller acknowledges anything: a read the mirror answers after an
    /// acknowledged write sees it.
    ///
    /// With `--sync` the blob bytes reach the disk before the records that
    /// point at them, and the records before the write is acknowledged.
    fn write(&mut self, ops: Vec<Op>) -> Result<(), StoreError> {
        if self.sync {
            self.space.sync()?;
        }
        self.db.write(&ops)?;
        if self.sync {
            self.db.sync()?;
        }
        if let Some(m) = &self.mirror {
            m.send(MirrorCommand::Apply(ops));
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
                let _ = reply.send(if soft {
                    self.soft_purge(&key)
                } else {
                    self.delete(&key).map(|live| PrefixStep {
                        count: u64::from(live),
                        ..PrefixStep::default()
                    })
                });
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
                let _ = reply.send(self.delete_prefix(&prefix, &from, limit, continued, soft));
            }
            Command::PurgeTag {
                tag,
                from,
                limit,
                soft,
                reply,
            } => {
                let _ = reply.send(self.purge_tag(&tag, &from, limit, soft));
            }
            Command::TagRows { reply } => {
                let _ = reply.send(self.tag_rows());
            }
            Command::Count { prefixes, reply } => {
                let _ = reply.send(self.count(&prefixes));
            }
            Command::Clear { reply } => {
                let _ = reply.send(self.clear());
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

    /// The unexpired value at `key`, body not loaded.
    fn live_at(&mut self, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        let now = self.clock.now_ms();
        Ok(self.db.stored(key)?.filter(|s| !s.record.is_expired(now)))
    }

    /// Reads an entry; an expired one is deleted here, a corrupt one (in
    /// LevelDB or in its blob file) is logged and deleted. Either way the
    /// caller sees no value.
    fn get(&mut self, key: &[u8]) -> Result<Lookup, StoreError> {
        let Some(raw) = self.db.get(key)? else {
            return Ok(Lookup::Miss);
        };
        let problem = match self.space.load(key, &raw, self.clock.now_ms()) {
            Ok(Lookup::Hit(record)) => {
                if self.admission.admit(key) {
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
        self.remove(key)?;
        Ok(Lookup::Miss)
    }

    /// Reads the value `key` holds before `tx` changes it (exactly: see
    /// `Db::get`) and takes its blob bytes off the live count. Once per key
    /// per transaction: a later call for the same key returns `None`
    /// without reading.
    fn stage_old(&mut self, tx: &mut Tx, key: &[u8]) -> Result<Option<Stored>, StoreError> {
        if tx.has_seen(key) {
            return Ok(None);
        }
        let old = self.db.stored(key)?;
        tx.replaces(key, old.as_ref());
        Ok(old)
    }

    /// Stages writing `record` at `key`: a large body is appended to a blob
    /// file now and referenced from the record.
    fn stage_write(&mut self, tx: &mut Tx, key: &[u8], record: &Record) -> Result<(), StoreError> {
        self.stage_old(tx, key)?;
        let blob =
            if record.kind != Kind::Group && (self.blob_all || record.body.len() > INLINE_MAX) {
                // Under a budget a new entry starts in the small queue, unless
                // it replaces one in the main queue or was evicted unread
                // lately (it is wanted again: S3-FIFO's ghost hit).
                let queue = if !self.blob_all
                    || tx
                        .old_file(key)
                        .is_some_and(|f| self.space.queue_of(f) == Queue::Main)
                    || self.hotness.was_evicted(key)
                {
                    Queue::Main
                } else {
                    Queue::Small
                };
                let blob = self.space.append(queue, key, &record.body)?;
                self.counters.appended_bytes.fetch_add(
                    blob.entry_len(key.len()),
                    std::sync::atomic::Ordering::Relaxed,
                );
                Some(blob)
            } else {
                None
            };
        tx.put_record(key, record, blob);
        Ok(())
    }

    /// Stages marking `old`, the page at `key` (already passed to
    /// `stage_old`), stale as of `now`: the record is rewritten with its
    /// body where it is. An entry soft-purged before keeps its first time.
    fn stage_soft(&mut self, tx: &mut Tx, key: &[u8], old: Stored, now: u64) {
        let record = Record {
            stale_since: Some(old.record.stale_since.unwrap_or(now)),
            ..old.record
        };
        // Its body is not loaded here: the next read goes to disk.
        self.hot.remove(key);
        tx.put_record(key, &record, old.blob);
    }

    /// Soft purge of the page at `key`: it (or each member of the group
    /// there) is marked stale; a value is deleted. Whether a live one was
    /// there.
    fn soft_purge(&mut self, key: &[u8]) -> Result<PrefixStep, StoreError> {
        let now = self.clock.now_ms();
        let mut tx = Tx::default();
        let mut step = PrefixStep::default();
        let Some(old) = self.stage_old(&mut tx, key)? else {
            return Ok(step);
        };
        if old.record.is_expired(now) {
            return Ok(step);
        }
        step.count = 1;
        match old.record.kind {
            Kind::Http => {
                self.stage_soft(&mut tx, key, old, now);
                step.marked.push(key.to_vec());
            }
            Kind::Group => {
                for m in old.record.group_members() {
                    let mut k = key.to_vec();
                    k.extend_from_slice(&m);
                    match self.stage_old(&mut tx, &k)? {
                        Some(member)
                            if member.record.kind == Kind::Http
                                && !member.record.is_expired(now) =>
                        {
                            self.stage_soft(&mut tx, &k, member, now);
                            step.marked.push(k);
                        }
                        // Left as it was (its rows back with it).
                        Some(other) => tx.put_record(&k, &other.record, other.blob),
                        None => {}
                    }
                }
                // The group record itself is unchanged: write it back as
                // it was (`stage_old` took its rows off).
                tx.put_record(key, &old.record, old.blob);
            }
            Kind::Json | Kind::Bytes => self.stage_delete(&mut tx, key)?,
        }
        self.commit(tx)?;
        Ok(step)
    }

    /// One step of a tag purge: up to `limit` of the tag's index rows from
    /// `from` on. A row whose entry no longer carries the tag (none should
    /// exist: rows are written and deleted with their entries) is dropped.
    fn purge_tag(
        &mut self,
        tag: &[u8],
        from: &[u8],
        limit: usize,
        soft: bool,
    ) -> Result<PrefixStep, StoreError> {
        let prefix = keys::tag_prefix(tag);
        let rows = self.db.keys_with_prefix(&prefix, from, limit)?;
        let now = self.clock.now_ms();
        let mut purged = 0;
        let mut marked = Vec::new();
        let mut tx = Tx::default();
        let mut variants: std::collections::HashMap<Vec<u8>, Vec<Vec<u8>>> = Default::default();
        let entries: Vec<&[u8]> = rows.iter().map(|r| &r[prefix.len()..]).collect();
        let mut found = self.db.stored_many(&entries)?.into_iter();
        for row in &rows {
            let entry = &row[prefix.len()..];
            let old = found.next().flatten();
            let old = if tx.replaces(entry, old.as_ref()) {
                old
            } else {
                None
            };
            let Some(old) = old.filter(|s| s.record.tags.contains(tag)) else {
                tx.delete(row);
                continue;
            };
            let live = !old.record.is_expired(now);
            purged += u64::from(live);
            if soft && old.record.kind == Kind::Http {
                self.stage_soft(&mut tx, entry, old, now);
                if live {
                    marked.push(entry.to_vec());
                }
                continue;
            }
            self.stage_delete(&mut tx, entry)?;
            // A variant leaves its group's list (as eviction does).
            evict::note_variant(&mut variants, entry);
        }
        for (group, gone) in variants {
            self.stage_unlist(&mut tx, &group, &gone)?;
        }
        if !rows.is_empty() {
            self.commit(tx)?;
        }
        let next = next_step(&rows, limit);
        if next.is_none() && !rows.is_empty() {
            // As after a prefix purge: what the iterator saw deleted is
            // only dropped from disk after a reopen; blob files left with
            // nothing live go now (the pages are scattered over the key
            // space, so no span is compacted: the sweep's and LevelDB's
            // own compactions take the rest).
            self.reopen()?;
            if !soft {
                self.drop_dead_files()?;
            }
        }
        Ok(PrefixStep {
            count: purged,
            next,
            marked,
        })
    }

    fn tag_rows(&mut self) -> Result<u64, StoreError> {
        let mut n = 0;
        let scanned = self.db.scan(&[keys::TAG_TAG], |k, _| {
            let under = k.first() == Some(&keys::TAG_TAG);
            n += u64::from(under);
            under
        });
        scanned.map(|()| n)
    }

    fn stage_delete(&mut self, tx: &mut Tx, key: &[u8]) -> Result<(), StoreError> {
        self.stage_old(tx, key)?;
        self.hot.remove(key);
        tx.delete(key);
        Ok(())
    }

    /// Writes `tx` with the blob files' new live counts, in one batch.
    fn commit(&mut self, tx: Tx) -> Result<(), StoreError> {
        let (space, db) = (&mut self.space, &mut self.db);
        let batch = tx.finish(|id| space.live_of(db, id))?;
        if let Err(e) = self.write(batch.ops) {
            // The batch may be on disk even so (its fsync failed, with
            // --sync): the live counts kept in RAM are no longer known to
            // match the rows, so they are read again when next needed.
            self.space.forget_counts();
            return Err(e);
        }
        self.space.counted(batch.counts);
        Ok(())
    }

    /// Stages deleting a group's members.
    fn drop_members(
        &mut self,
        tx: &mut Tx,
        group_key: &[u8],
        group: &Record,
    ) -> Result<(), StoreError> {
        for m in group.group_members() {
            let mut k = group_key.to_vec();
            k.extend_from_slice(&m);
            self.stage_delete(tx, &k)?;
        }
        Ok(())
    }

    fn put(&mut self, key: Vec<u8>, record: Record) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        self.stage_put(&mut tx, &key, &record)?;
        self.commit(tx)?;
        self.hot.insert(Bytes::from(key), record);
        Ok(())
    }

    /// Stages storing `record` at `key`, replacing what is there.
    fn stage_put(&mut self, tx: &mut Tx, key: &[u8], record: &Record) -> Result<(), StoreError> {
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
    /// one log write and one batch for the mirror instead of one each.
    /// If any of them cannot be staged or the batch cannot be written, each
    /// is retried alone, so every caller gets its own put's outcome (a blob
    /// appended for the group is then left unreferenced, as after any
    /// failed write, for the collector to reclaim).
    fn put_group(&mut self, puts: Vec<Put>) {
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

    /// Stores `record` as variant `member` of the group at `group_key`,
    /// listing it in the group record (created, or replaced when the
    /// group's meta, the Vary header names, changed).
    fn put_member(
        &mut self,
        group_key: Vec<u8>,
        member: &[u8],
        group_meta: Bytes,
        record: Record,
    ) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        let mut members = Vec::new();
        let mut expires_at = record.expires_at;
        let old = self.stage_old(&mut tx, &group_key)?;
        if let Some(old) = old.map(|s| s.record).filter(|r| r.kind == Kind::Group) {
            if old.meta == group_meta {
                members = old.group_members();
                // The group lives as long as its longest-lived member.
                expires_at = match (old.expires_at, expires_at) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    _ => None,
                };
            } else {
                // Members keyed by other header names can never match again.
                self.drop_members(&mut tx, &group_key, &old)?;
            }
        }
        if !members.iter().any(|m| m.as_ref() == member) {
            // Full: variants that expired (or the sweep removed) make room
            // first, then the oldest, so no client can grow the group
            // record (read on every lookup) without bound.
            if members.len() >= self.max_variants {
                let mut live = Vec::with_capacity(members.len());
                for m in members {
                    let mut k = group_key.clone();
                    k.extend_from_slice(&m);
                    if self.live_at(&k)?.is_some() {
                        live.push(m);
                    } else {
                        self.stage_delete(&mut tx, &k)?;
                    }
                }
                members = live;
            }
            while members.len() >= self.max_variants {
                let oldest = members.remove(0);
                let mut k = group_key.clone();
                k.extend_from_slice(&oldest);
                self.stage_delete(&mut tx, &k)?;
            }
            members.push(Bytes::copy_from_slice(member));
        }
        let group = Record {
            kind: Kind::Group,
            created_at: record.created_at,
            expires_at,
            meta: group_meta,
            body: Record::encode_group_members(members.iter().map(|m| m.as_ref())),
            tags: Default::default(),
            stale_since: None,
            memo: Default::default(),
        };
        let mut member_key = group_key.clone();
        member_key.extend_from_slice(member);
        self.stage_write(&mut tx, &group_key, &group)?;
        self.stage_write(&mut tx, &member_key, &record)?;
        self.commit(tx)?;
        self.hot.insert(Bytes::from(group_key), group);
        self.hot.insert(Bytes::from(member_key), record);
        Ok(())
    }

    fn remove(&mut self, key: &[u8]) -> Result<(), StoreError> {
        let mut tx = Tx::default();
        self.stage_delete(&mut tx, key)?;
        self.commit(tx)
    }

    fn delete(&mut self, key: &[u8]) -> Result<bool, StoreError> {
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

    fn incr(&mut self, key: Vec<u8>, delta: i64) -> Result<Incr, StoreError> {
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

    fn delete_if_body(&mut self, key: &[u8], expected: &[u8]) -> Result<DeleteIf, StoreError> {
        match self.get(key)? {
            Lookup::Hit(rec) if rec.body == expected => {
                self.delete(key)?;
                Ok(DeleteIf::Deleted)
            }
            Lookup::Hit(_) => Ok(DeleteIf::Differs),
            Lookup::Miss | Lookup::Expired => Ok(DeleteIf::Missing),
        }
    }

    fn keys(
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

    /// Gives a live entry a new deadline, keeping its body where it is.
    fn touch(&mut self, key: &[u8], expires_at: Option<u64>) -> Result<bool, StoreError> {
        let Some(old) = self.live_at(key)? else {
            return Ok(false);
        };
        let record = Record {
            expires_at,
            ..old.record.clone()
        };
        let mut tx = Tx::default();
        tx.replaces(key, Some(&old));
        tx.put_record(key, &record, old.blob);
        self.commit(tx)?;
        self.hot.remove(key);
        Ok(true)
    }

    /// One step of a prefix purge: up to `limit` entries; the span is
    /// compacted (the deleted data dropped from disk) after the last step.
    fn delete_prefix(
        &mut self,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
        continued: bool,
        soft: bool,
    ) -> Result<PrefixStep, StoreError> {
        let found = self.db.keys_with_prefix(prefix, from, limit)?;
        let now = self.clock.now_ms();
        let mut deleted = 0;
        let mut marked = Vec::new();
        let mut tx = Tx::default();
        for key in &found {
            // Only live entries count; expired ones go too but quietly.
            let old = self.stage_old(&mut tx, key)?;
            let live = old.as_ref().is_some_and(|s| !s.record.is_expired(now));
            if soft {
                // Pages are marked; groups (rewritten as they were) and
                // expired entries are left to their own course.
                if let Some(old) = old {
                    if live && old.record.kind == Kind::Http {
                        deleted += 1;
                        self.stage_soft(&mut tx, key, old, now);
                        marked.push(key.clone());
                    } else {
                        tx.put_record(key, &old.record, old.blob);
                    }
                }
                continue;
            }
            deleted += u64::from(live);
            self.stage_delete(&mut tx, key)?;
        }
        if !found.is_empty() {
            self.commit(tx)?;
        }
        let next = next_step(&found, limit);
        if next.is_none() {
            // Once, after the last step: reopening is what makes
            // rusty-leveldb drop deleted data after an iterator existed
            // (the span is compacted right after), and it costs a close
            // and a replay of the log.
            self.reopen()?;
            if !soft && (continued || !found.is_empty()) {
                let end = keys::prefix_end(prefix).unwrap_or_else(|| vec![0xff; prefix.len() + 1]);
                self.db.compact_span(prefix, &end)?;
                self.drop_dead_files()?;
            }
        }
        Ok(PrefixStep {
            count: deleted,
            next,
            marked,
        })
    }

    fn count(&mut self, prefixes: &[Vec<u8>]) -> Result<u64, StoreError> {
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

    /// Empties the shard: its directory is replaced, its blob files, hot
    /// tier and mirror start over.
    fn clear(&mut self) -> Result<(), StoreError> {
        self.hot.clear();
        let replaced = self.db.replace_dir();
        self.started_over()?;
        replaced.map_err(|e| match e {
            StoreError::Open { .. } => {
                tracing::error!(shard = self.index, error = %e, "shard is unavailable");
                StoreError::Unavailable
            }
            other => other,
        })
    }

    /// Reads the expiry index from its start up to now and deletes up to
    /// `batch` entries whose own deadline has passed. When a round ends (no
    /// more due rows), the shard is reopened and the deleted span compacted
    /// so the disk space really comes back.
    fn sweep(&mut self, batch: usize) -> Result<(u64, bool), StoreError> {
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
            tx.delete(row);
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

    /// Deletes the blob files no record references any more (checked
    /// exactly, see `BlobSpace::dead_files`), and puts right any count
    /// found wrong on the way. Whether files are left to check.
    fn drop_dead_files(&mut self) -> Result<(u64, bool), StoreError> {
        let dead = self.space.dead_files(&mut self.db)?;
        if !dead.recounted.is_empty() {
            let ops = dead
                .recounted
                .iter()
                .map(|&(id, n)| (keys::blob_live_key(id).to_vec(), Some(keys::encode_live(n))))
                .collect();
            self.write(ops)?;
            self.space.counted(dead.recounted);
        }
        let mut freed = 0;
        for id in dead.files {
            freed += self.drop_file(id)?;
        }
        Ok((freed, dead.more))
    }

    /// Deletes blob file `id` and its live-byte row. The mirror deletes the
    /// file, after the batches that moved entries out of it, so it never
    /// reads a vanished file.
    fn drop_file(&mut self, id: u32) -> Result<u64, StoreError> {
        let len = self.space.forget_file(id);
        self.write(vec![(keys::blob_live_key(id).to_vec(), None)])?;
        let handed = self
            .mirror
            .as_ref()
            .is_some_and(|m| m.send(MirrorCommand::DropBlobFile(id)));
        if !handed {
            self.space.remove_file(id)?;
        }
        Ok(len)
    }

    /// One bounded step of blob garbage collection (see `store::space`);
    /// returns (bytes freed, more to do).
    fn collect(&mut self, budget: u64) -> Result<(u64, bool), StoreError> {
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

/// Where the next step of a stepped purge starts, after one that took
/// `taken` of at most `limit` keys: the smallest key after the last one
/// (so no step walks over those already done); `None` when it took fewer,
/// the end of the range.
fn next_step(taken: &[Vec<u8>], limit: usize) -> Option<Vec<u8>> {
    (taken.len() == limit)
        .then(|| taken.last().map(|k| [k.as_slice(), &[0]].concat()))
        .flatten()
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
    use super::*;
    use crate::store::command::Evicted;
    use crate::store::hot;
    use crate::store::record::Kind;
    use std::time::{Duration, SystemTime};

    pub(super) struct Open {
        pub(super) shard: Shard,
        pub(super) clock: Clock,
        _dir: tempfile::TempDir,
    }

    pub(super) fn open() -> Open {
        let dir = tempfile::tempdir().unwrap();
        let clock = Clock::manual(SystemTime::now());
        let (shard, _mirror) = Shard::open(ShardConfig {
            index: 0,
            dir: dir.path().join("shard-00"),
            mirror_dir: dir.path().join("mirror-00"),
            busy: Busy::default(),
            hot: Arc::new(hot::slice(0)),
            purges: Arc::new(PurgeLog::default()),
            max_variants: 2,
            sync: true,
            clock: clock.clone(),
            counters: Default::default(),
            blob_all: true,
            blob_file_max: 1 << 16,
            hotness: Arc::new(Hotness::new(16)),
        })
        .unwrap();
        Open {
            shard,
            clock,
            _dir: dir,
        }
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

    pub(super) fn body(lookup: Lookup) -> Option<Bytes> {
        match lookup {
            Lookup::Hit(r) => Some(r.body),
            _ => None,
        }
    }

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
    }

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

    #[test]
    fn a_group_goes_with_its_members_and_changed_vary_names_drop_them() {
        let mut o = open();
        let meta = Bytes::from_static(b"accept-language");
        for v in ["accept-language=ko", "accept-language=en"] {
            let rec = record(Kind::Http, v.as_bytes(), None);
            o.shard
                .put_member(b"pv\0".to_vec(), v.as_bytes(), meta.clone(), rec)
                .unwrap();
        }
        let ko = b"pv\0accept-language=ko";
        assert_eq!(body(o.shard.get(ko).unwrap()).as_deref(), Some(&ko[3..]));
        // Past --max-variants (2 here) the oldest variant makes room.
        let rec = record(Kind::Http, b"fr", None);
        o.shard
            .put_member(b"pv\0".to_vec(), b"accept-language=fr", meta.clone(), rec)
            .unwrap();
        assert_eq!(body(o.shard.get(ko).unwrap()), None, "the oldest stayed");
        let fr = b"pv\0accept-language=fr";
        assert!(body(o.shard.get(fr).unwrap()).is_some());
        let group = o.shard.db.stored(b"pv\0").unwrap().unwrap().record;
        assert_eq!(group.group_members().len(), 2);
        // An expired variant makes room before the oldest live one.
        let soon = o.clock.now_ms() + 1_000;
        let rec = record(Kind::Http, b"de", Some(soon));
        o.shard
            .put_member(b"pv\0".to_vec(), b"accept-language=de", meta.clone(), rec)
            .unwrap();
        assert_eq!(
            body(o.shard.get(&b"pv\0accept-language=en"[..]).unwrap()),
            None
        );
        o.clock.advance(Duration::from_secs(2));
        let rec = record(Kind::Http, b"it", None);
        o.shard
            .put_member(b"pv\0".to_vec(), b"accept-language=it", meta.clone(), rec)
            .unwrap();
        assert!(
            body(o.shard.get(fr).unwrap()).is_some(),
            "a live variant went while an expired one stayed"
        );
        // Stored again under other Vary names: the old members can never
        // match and are gone.
        let rec = record(Kind::Http, b"x", None);
        o.shard
            .put_member(
                b"pv\0".to_vec(),
                b"accept=x",
                Bytes::from_static(b"accept"),
                rec,
            )
            .unwrap();
        assert_eq!(body(o.shard.get(ko).unwrap()), None);
        assert!(o.shard.delete(b"pv\0").unwrap());
        assert_eq!(body(o.shard.get(b"pv\0accept=x").unwrap()), None);
    }

    /// Steps eviction until the shard has nothing left to evict or `stop`
    /// says enough; returns the summed steps.
    fn evict_until(o: &mut Open, mut stop: impl FnMut(&Evicted) -> bool) -> Evicted {
        let mut sum = Evicted::default();
        for _ in 0..100_000 {
            // One entry per step, so `stop` sees each.
            let s = o.shard.evict(1, false).unwrap();
            sum.evicted += s.evicted;
            sum.reinserted += s.reinserted;
            sum.expired += s.expired;
            sum.freed += s.freed;
            if !s.more || stop(&sum) {
                return sum;
            }
        }
        panic!("eviction never ended");
    }

    #[test]
    fn eviction_walks_the_oldest_file_and_keeps_what_was_read() {
        let mut o = open();
        let now = o.clock.now_ms();
        // Incompressible, so 3 KB on disk each.
        let page: Vec<u8> = (0..3_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        // 60 pages over several 64 KiB files; every third one is read, one
        // is expired, one is a Vary variant, one a small REST value.
        for i in 0..60u32 {
            let key = format!("p/page/{i}\0").into_bytes();
            let expires = (i == 1).then_some(now + 1_000);
            o.shard
                .put(key, record(Kind::Http, &page, expires))
                .unwrap();
        }
        let meta = Bytes::from_static(b"accept-language");
        o.shard
            .put_member(
                b"p/v\0".to_vec(),
                b"accept-language=ko",
                meta,
                record(Kind::Http, &page, None),
            )
            .unwrap();
        o.shard
            .put(b"vsmall".to_vec(), record(Kind::Bytes, b"s", None))
            .unwrap();
        assert!(
            o.shard
                .db
                .stored(b"vsmall")
                .unwrap()
                .unwrap()
                .blob
                .is_some(),
            "under a budget even a small body has its place in the FIFO"
        );
        for i in (0..60u32).step_by(3) {
            o.shard.hotness.touch(format!("p/page/{i}\0").as_bytes());
        }
        o.clock.advance(Duration::from_secs(2));
        let before = o.shard.space.file_bytes();
        // One round over everything: each read page is reinserted once.
        let first = evict_until(&mut o, |s| s.reinserted + s.evicted + s.expired >= 62);
        assert_eq!(first.expired, 1);
        assert_eq!(first.reinserted, 20, "pages 0, 3, ... 57 were read");
        assert!(first.freed > 0 && o.shard.space.file_bytes() < before);
        for i in 0..60u32 {
            let key = format!("p/page/{i}\0");
            let kept = body(o.shard.get(key.as_bytes()).unwrap()).is_some();
            assert_eq!(kept, i % 3 == 0 && i != 1, "{key}");
        }
        // The variant went with its place in the group's list.
        assert_eq!(o.shard.db.stored(b"p/v\0").unwrap(), None);
        assert_eq!(body(o.shard.get(b"vsmall").unwrap()), None);
        // Not read again: the next round takes the rest.
        let second = evict_until(&mut o, |_| false);
        assert_eq!(second.reinserted, 0);
        assert_eq!(second.evicted, 20);
        assert_eq!(o.shard.count(&[b"p".to_vec(), b"v".to_vec()]).unwrap(), 0);
    }

    #[test]
    fn probation_ends_with_a_read_or_a_ghost_hit() {
        let mut o = open();
        let page: Vec<u8> = (0..3_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let queue = |o: &mut Open, key: &[u8]| {
            let blob = o.shard.db.stored(key).unwrap().unwrap().blob.unwrap();
            o.shard.space.queue_of(blob.file)
        };
        let put = |o: &mut Open, key: &[u8]| {
            o.shard
                .put(key.to_vec(), record(Kind::Http, &page, None))
                .unwrap()
        };
        put(&mut o, b"p/a\0");
        assert_eq!(queue(&mut o, b"p/a\0"), Queue::Small, "new: on probation");
        let gone = evict_until(&mut o, |_| false);
        assert_eq!((gone.evicted, gone.reinserted), (1, 0));
        // Wanted back soon after: the ghost sends it to the main queue.
        put(&mut o, b"p/a\0");
        assert_eq!(queue(&mut o, b"p/a\0"), Queue::Main);
        // Rewritten while in the main queue: stays there.
        put(&mut o, b"p/a\0");
        assert_eq!(queue(&mut o, b"p/a\0"), Queue::Main);
        // Read while on probation: promoted when its file is walked.
        put(&mut o, b"p/b\0");
        assert_eq!(queue(&mut o, b"p/b\0"), Queue::Small);
        o.shard.hotness.touch(b"p/b\0");
        let walked = evict_until(&mut o, |s| s.reinserted > 0);
        assert_eq!((walked.evicted, walked.reinserted), (0, 1));
        assert_eq!(queue(&mut o, b"p/b\0"), Queue::Main);
        assert!(body(o.shard.get(b"p/b\0").unwrap()).is_some());
        // Forced (what is read does not fit the budget): read or not, out.
        o.shard.hotness.touch(b"p/b\0");
        let mut forced = Evicted::default();
        while let Ok(s) = o.shard.evict(1 << 20, true) {
            forced.evicted += s.evicted;
            forced.reinserted += s.reinserted;
            if !s.more {
                break;
            }
        }
        assert_eq!((forced.evicted, forced.reinserted), (2, 0));
        assert_eq!(body(o.shard.get(b"p/b\0").unwrap()), None);
    }

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
    }
}
