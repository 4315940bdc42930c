//! The disk budget: keeps the data directory under `--max-disk` and the
//! filesystem above `--min-free`, by evicting, a bounded step at a time.
//!
//! Policy: the blob files of each shard are a FIFO of segments (written
//! in order, ids ascending). When the directory is over its budget,
//! expired entries go first (an expiry sweep); then the evictor walks the
//! oldest file of the shard holding the most blob bytes: an entry read
//! since it was written or last reinserted (`store::hotness`) is copied to
//! the tail, anything else is deleted, and the walked file is removed.
//! This is the segment-FIFO with reinsertion of CacheLib's flash cache and
//! the lazy promotion of S3-FIFO: no disk write on a hit, no per-key RAM,
//! and one-hit wonders (a crawler, `?z=<random>` query spam) leave in the
//! order they came without pushing out what is read.
//!
//! Usage is measured by walking the data directory (a hard-linked file
//! counted once) at most every [`MEASURE_EVERY`], and estimated in between
//! from the bytes writes appended, so a burst is seen within a tick.

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::Store;
use super::layout;

/// How often the budget is checked against the estimate.
const TICK: Duration = Duration::from_millis(10);
/// How often the data directory is really measured while under budget.
const MEASURE_EVERY: Duration = Duration::from_secs(2);
/// Blob bytes walked per eviction step: a millisecond or two of a shard
/// thread, so requests queued behind it barely notice.
const EVICT_STEP: u64 = 256 << 10;
/// Expiry sweeps at most this often while over budget (each is a scan of
/// the expiry index up to now).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// Free space to keep on the data directory's filesystem (`--min-free`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MinFree {
    /// A share of the filesystem's size, in percent.
    Percent(f64),
    Bytes(u64),
}

impl MinFree {
    /// `5%`, or a size as `config::parse_size` reads it.
    pub fn parse(s: &str, size: impl Fn(&str) -> Result<u64, String>) -> Result<MinFree, String> {
        let t = s.trim();
        match t.strip_suffix('%') {
            Some(p) => match p.trim().parse::<f64>() {
                Ok(p) if (0.0..=100.0).contains(&p) => Ok(MinFree::Percent(p)),
                _ => Err(format!("{s:?}: expected a percentage from 0% to 100%")),
            },
            None => size(t).map(MinFree::Bytes),
        }
    }

    fn bytes(self, fs_total: u64) -> u64 {
        match self {
            MinFree::Percent(p) => (fs_total as f64 * p / 100.0) as u64,
            MinFree::Bytes(n) => n,
        }
    }
}

/// The limits in force, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// `None`: no limit on the directory's size.
    pub max_disk: Option<u64>,
    /// 0: no free-space floor.
    pub min_free: u64,
    /// Size at which blob files are rolled: the unit eviction frees.
    pub file_max: u64,
}

impl Limits {
    /// Resolves `--max-disk` (`None`: the directory's recorded default;
    /// `Some(0)`: none) and `--min-free` for the data directory `dir`.
    pub fn resolve(
        dir: &std::path::Path,
        shards: usize,
        max_disk: Option<u64>,
        min_free: MinFree,
    ) -> Result<Limits, super::StoreError> {
        let max_disk = match max_disk {
            Some(0) => None,
            Some(n) => Some(n),
            None => Some(layout::default_max_disk(dir)?).filter(|&n| n > 0),
        };
        let fs = layout::fs_space(dir);
        let min_free = fs.map_or(0, |s| min_free.bytes(s.total));
        // What the cache may take: its budget, or what the free-space floor
        // leaves it (what it has plus what is free above the floor; other
        // data and blocks reserved for root are not its), whichever is
        // less. Without the floor's share, a floor alone on a small
        // filesystem had 64 MiB files, a slack larger than the room, and
        // eviction emptied the cache.
        let above_floor = fs.filter(|_| min_free > 0).map(|s| {
            s.available
                .saturating_add(layout::disk_usage(dir))
                .saturating_sub(min_free)
        });
        let room = match (max_disk, above_floor) {
            (Some(m), Some(f)) => Some(m.min(f)),
            (m, f) => m.or(f),
        };
        // A file is 1/16 of a shard's share, so eviction frees the budget
        // in small pieces and the directory never overshoots by much.
        let file_max = room.map_or(super::blobs::FILE_MAX, |m| {
            (m / shards.max(1) as u64 / 16).clamp(256 << 10, super::blobs::FILE_MAX)
        });
        Ok(Limits {
            max_disk,
            min_free,
            file_max,
        })
    }

    /// Whether anything is enforced (otherwise no eviction runs).
    pub fn enforced(&self) -> bool {
        self.max_disk.is_some() || self.min_free > 0
    }

    /// A unit of room below the limits: eviction starts two of them below
    /// (so what writes and LevelDB's compactions add while a round runs
    /// stays under) and stops three below.
    fn slack(&self) -> u64 {
        self.max_disk.map_or(0, |m| m / 50).max(self.file_max)
    }
}

/// The data directory's usage: measured (a walk, off the async threads,
/// published for `/stat` and the metrics), and estimated between two
/// measurements from the bytes writes appended since the last.
struct Meter<'a> {
    dir: PathBuf,
    counters: &'a super::counters::Counters,
    last: Usage,
    at: Instant,
    appended_at: u64,
}

impl<'a> Meter<'a> {
    async fn start(dir: PathBuf, counters: &'a super::counters::Counters) -> Meter<'a> {
        let mut m = Meter {
            dir,
            counters,
            last: Usage {
                used: 0,
                free: u64::MAX,
            },
            at: Instant::now(),
            appended_at: 0,
        };
        m.measure().await;
        m
    }

    async fn measure(&mut self) -> Usage {
        let appended = self.counters.appended_bytes.load(Relaxed);
        let dir = self.dir.clone();
        self.last = tokio::task::spawn_blocking(move || Usage::measure(&dir))
            .await
            .unwrap_or(Usage {
                used: 0,
                free: u64::MAX,
            });
        self.at = Instant::now();
        self.appended_at = appended;
        self.counters.disk_used.store(self.last.used, Relaxed);
        let free = if self.last.free == u64::MAX {
            0
        } else {
            self.last.free
        };
        self.counters.disk_free.store(free, Relaxed);
        self.last
    }

    fn estimate(&self) -> Usage {
        let grown = self
            .counters
            .appended_bytes
            .load(Relaxed)
            .saturating_sub(self.appended_at);
        Usage {
            used: self.last.used.saturating_add(grown),
            free: self.last.free.saturating_sub(grown),
        }
    }

    /// Whether the estimate is old enough to measure again anyway.
    fn due(&self) -> bool {
        self.at.elapsed() >= MEASURE_EVERY
    }
}

/// Measured or estimated usage.
#[derive(Debug, Clone, Copy)]
struct Usage {
    used: u64,
    /// `u64::MAX` when the filesystem cannot say.
    free: u64,
}

impl Usage {
    fn measure(dir: &std::path::Path) -> Usage {
        Usage {
            used: layout::disk_usage(dir),
            free: layout::fs_space(dir).map_or(u64::MAX, |s| s.available),
        }
    }

    /// How many bytes must go for the usage to be `margin` under limits.
    fn excess(&self, limits: &Limits, margin: u64) -> u64 {
        let over_budget = limits
            .max_disk
            .map_or(0, |m| self.used.saturating_add(margin).saturating_sub(m));
        let under_free = limits
            .min_free
            .saturating_add(margin)
            .saturating_sub(self.free);
        if limits.min_free == 0 {
            over_budget
        } else {
            over_budget.max(under_free)
        }
    }
}

/// Runs until `shutdown` fires, keeping `store` within its limits.
pub async fn run(store: Store, dir: PathBuf, mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let limits = store.limits();
    if !limits.enforced() {
        return;
    }
    let counters = store.counters();
    let mut meter = Meter::start(dir, counters).await;
    let mut last_sweep: Option<Instant> = None;
    let mut warned: Option<Instant> = None;
    // After a round that found nothing left to evict, the next waits: what
    // remains is LevelDB's, and walking empty queues would only spin.
    let mut rest_until: Option<Instant> = None;
    let slack = limits.slack();
    let mut blob_bytes = vec![u64::MAX; store.shard_count()];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        if rest_until.is_some_and(|t| Instant::now() < t) {
            continue;
        }
        if meter.estimate().excess(&limits, 2 * slack) == 0 && !meter.due() {
            continue;
        }
        let mut usage = meter.measure().await;
        if usage.excess(&limits, 2 * slack) == 0 {
            continue;
        }
        // Expired entries first: they cost no hit to anyone.
        if last_sweep.is_none_or(|t| t.elapsed() >= SWEEP_EVERY) {
            last_sweep = Some(Instant::now());
            if let Err(e) = store.sweep(1_000).await {
                tracing::warn!(error = %e, "expiry sweep before eviction failed");
            }
            usage = meter.measure().await;
            if usage.excess(&limits, 2 * slack) == 0 {
                continue;
            }
        }
        // Evict until three units are free, so writes have room until the
        // next round.
        let want = usage.excess(&limits, 3 * slack);
        let mut round = Round::default();
        // Steps for one pass over everything: if a round takes more, what
        // is read fills the budget (each pass copies it back), and the rest
        // of the round evicts regardless of reads.
        let pass = (usage.used / EVICT_STEP).max(16);
        let mut steps = 0;
        let mut force = false;
        while round.net() < want {
            let Some(shard) = fullest(&blob_bytes) else {
                break;
            };
            steps += 1;
            if !force && steps > pass {
                force = true;
                tracing::warn!(
                    "what is read does not fit the disk budget; evicting regardless of reads"
                );
            }
            match store.evict_step(shard, EVICT_STEP, force).await {
                Ok(step) => {
                    blob_bytes[shard] = if step.more { step.blob_bytes } else { 0 };
                    round.add(&step);
                }
                Err(e) => {
                    tracing::warn!(shard, error = %e, "eviction step failed");
                    blob_bytes[shard] = 0;
                }
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::task::yield_now().await;
        }
        counters.evicted.fetch_add(round.evicted, Relaxed);
        counters.reinserted.fetch_add(round.reinserted, Relaxed);
        counters.evicted_bytes.fetch_add(round.freed, Relaxed);
        counters.swept.fetch_add(round.expired, Relaxed);
        if round.evicted + round.reinserted > 0 {
            tracing::info!(
                evicted = round.evicted,
                reinserted = round.reinserted,
                expired = round.expired,
                freed = round.freed,
                "disk budget: evicted"
            );
        }
        usage = meter.measure().await;
        if blob_bytes.iter().all(|&b| b == 0) {
            // Nothing left to evict, or everything failed: start over from
            // every shard next round, and say so now and then.
            blob_bytes.fill(u64::MAX);
            rest_until = Some(Instant::now() + REST_AFTER_EMPTY);
            if usage.excess(&limits, 0) > 0 && warned.is_none_or(|t| t.elapsed() > WARN_EVERY) {
                warned = Some(Instant::now());
                tracing::warn!(
                    used = usage.used,
                    free = usage.free,
                    max_disk = limits.max_disk,
                    min_free = limits.min_free,
                    "over the disk budget with nothing left to evict"
                );
            }
        }
    }
}

const WARN_EVERY: Duration = Duration::from_secs(60);
const REST_AFTER_EMPTY: Duration = Duration::from_secs(1);

/// The shard with the most blob bytes still to evict (`u64::MAX`: not yet
/// asked this round).
fn fullest(blob_bytes: &[u64]) -> Option<usize> {
    blob_bytes
        .iter()
        .enumerate()
        .filter(|(_, b)| **b > 0)
        .max_by_key(|(_, b)| **b)
        .map(|(i, _)| i)
}

#[derive(Default)]
struct Round {
    evicted: u64,
    reinserted: u64,
    expired: u64,
    freed: u64,
    copied: u64,
}

impl Round {
    fn add(&mut self, s: &super::command::Evicted) {
        self.evicted += s.evicted;
        self.reinserted += s.reinserted;
        self.expired += s.expired;
        self.freed += s.freed;
        self.copied += s.copied;
    }

    /// Bytes the round gave back: files deleted, less what was copied
    /// out of them to be kept.
    fn net(&self) -> u64 {
        self.freed.saturating_sub(self.copied)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_free_reads_a_share_or_a_size() {
        let size = |s: &str| s.parse::<u64>().map_err(|e| e.to_string());
        assert_eq!(MinFree::parse("5%", size), Ok(MinFree::Percent(5.0)));
        assert_eq!(MinFree::parse("1024", size), Ok(MinFree::Bytes(1024)));
        assert!(MinFree::parse("120%", size).is_err());
        assert!(MinFree::parse("lots", size).is_err());
        assert_eq!(MinFree::Percent(5.0).bytes(1000), 50);
    }

    #[test]
    fn excess_counts_both_limits() {
        let limits = Limits {
            max_disk: Some(1000),
            min_free: 100,
            file_max: 10,
        };
        let u = Usage {
            used: 900,
            free: 500,
        };
        assert_eq!(u.excess(&limits, 0), 0);
        assert_eq!(u.excess(&limits, 150), 50);
        let low = Usage { used: 10, free: 40 };
        assert_eq!(low.excess(&limits, 0), 60, "the free-space floor");
        let none = Limits {
            max_disk: None,
            min_free: 0,
            file_max: 10,
        };
        assert!(!none.enforced());
        assert_eq!(low.excess(&none, 0), 0);
    }
}
