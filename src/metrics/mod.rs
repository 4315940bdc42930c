//! What bigcache counts, and `GET /metrics`: the Prometheus text format
//! (version 0.0.4), built with the `prometheus-client` crate.
//!
//! The counters stay where they are counted (`rest::Stats` for the REST
//! API, `proxy::stats::ProxyStats` for the proxy, fed by the one
//! `Decision` per response, so `X-Cache`, the log line, `/stat` and the
//! metrics agree), as plain atomics: a hit costs one relaxed add per
//! counter and no lock. Collectors read them at scrape time, with what the
//! store and the process report then (entries in the hot tier, bytes on
//! disk, resident memory, open files).

use std::sync::Arc;
use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use crate::access_log::AccessLog;
use crate::proxy::decision::{CacheStatus, Reason};
use crate::proxy::stats::{CLASSES, Packing, ProxyStats, UpstreamFailure};
use crate::store::Store;

mod rest;

pub use rest::{Endpoint, Stats, StatsSnapshot};

/// The registry behind `GET /metrics`.
pub fn registry(
    store: Store,
    rest: Arc<Stats>,
    proxy: Arc<ProxyStats>,
    access_log: Option<AccessLog>,
) -> Registry {
    let mut r = Registry::with_prefix("bigcache");
    r.register_collector(Box::new(Counters {
        rest,
        proxy,
        access_log,
        store: store.clone(),
    }));
    r.register_collector(Box::new(Gauges {
        store,
        started: Instant::now(),
    }));
    r
}

/// The registry as Prometheus text.
pub fn encode(r: &Registry) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, r);
    out
}

struct Counters {
    rest: Arc<Stats>,
    proxy: Arc<ProxyStats>,
    access_log: Option<AccessLog>,
    store: Store,
}

impl std::fmt::Debug for Counters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Counters").finish_non_exhaustive()
    }
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: &[(&[(&str, &str)], u64)],
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in series {
        let labels: Vec<(&str, &str)> = labels.to_vec();
        ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A counter family with one label, `key`, taking each value in `series`.
fn by_label<V: AsRef<str>>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    key: &str,
    series: impl IntoIterator<Item = (V, u64)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in series {
        let labels = [(key, value.as_ref())];
        ConstCounter::new(n).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for Counters {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let p = self.proxy.counts();
        by_label(
            &mut enc,
            "proxy_requests",
            "Proxied requests by how they were answered (the X-Cache value)",
            "cache",
            CacheStatus::ALL
                .iter()
                .map(|s| (s.as_str().to_ascii_lowercase(), p.by_status[*s as usize])),
        )?;
        by_label(
            &mut enc,
            "proxy_not_cached",
            "Proxied responses not served from or not stored in the cache, by reason",
            "reason",
            Reason::ALL
                .iter()
                .map(|r| (r.as_str(), p.by_reason[*r as usize])),
        )?;
        counter(
            &mut enc,
            "upstream_requests",
            "Requests sent to the upstream",
            &[(&[], p.upstream_requests)],
        )?;
        by_label(
            &mut enc,
            "upstream_errors",
            "Upstream requests that failed, by kind (connect, timeout, broken, 5xx)",
            "kind",
            UpstreamFailure::ALL
                .iter()
                .map(|k| (k.as_str(), p.upstream_errors[*k as usize])),
        )?;
        counter(
            &mut enc,
            "proxy_collapsed",
            "Requests answered by another request's upstream fetch (coalesced)",
            &[(&[], p.collapsed)],
        )?;
        counter(
            &mut enc,
            "proxy_unstored",
            "Cacheable pages served but not stored: the store's write backlog was full (the disk behind) or the store failed",
            &[(&[], p.unstored)],
        )?;
        counter(
            &mut enc,
            "proxy_quick_hits",
            "Hits answered on the socket without hyper (plain HTTP/1.1 GETs of fresh pages in RAM); each is counted as a hit too",
            &[(&[], p.quick_hits)],
        )?;
        by_label(
            &mut enc,
            "proxy_compressed",
            "Text pages stored, by what became of bigcache's own compression: br (stored in brotli), no_gain (brotli would not save an eighth), busy (the encoder's queue was full)",
            "outcome",
            Packing::ALL
                .iter()
                .map(|k| (k.as_str(), p.packed[*k as usize])),
        )?;
        let m = enc.encode_descriptor(
            "upstream_response_time",
            "Time from sending a request upstream to its response head",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        self.proxy.upstream_latency.encode(m)?;
        let mut m = enc.encode_descriptor(
            "proxy_response_time",
            "Time from a request's arrival to its response head, by cache status and status class",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for s in CacheStatus::ALL {
            let cache = s.as_str().to_ascii_lowercase();
            for (i, class) in CLASSES.iter().enumerate() {
                let latency = &self.proxy.client_latency[s as usize][i];
                if latency.count() == 0 {
                    continue;
                }
                let labels = [("cache", cache.as_str()), ("class", *class)];
                latency.encode(m.encode_family(&labels)?)?;
            }
        }
        let s = self.rest.snapshot();
        counter(
            &mut enc,
            "rest_reads",
            "REST API reads by result",
            &[
                (&[("result", "hit")], s.hit),
                (&[("result", "miss")], s.miss),
                (&[("result", "expired")], s.expire),
            ],
        )?;
        counter(
            &mut enc,
            "rest_writes",
            "REST API values stored",
            &[(&[], s.set)],
        )?;
        counter(
            &mut enc,
            "rest_deletes",
            "REST API deletes",
            &[(&[], s.delete)],
        )?;
        let load = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
        let mut requests = Vec::new();
        for e in Endpoint::ALL {
            for (i, class) in CLASSES.iter().enumerate() {
                let n = load(&self.rest.requests[e as usize][i]);
                if n > 0 {
                    requests.push(([("endpoint", e.as_str()), ("class", *class)], n));
                }
            }
        }
        let requests: Vec<(&[(&str, &str)], u64)> =
            requests.iter().map(|(l, n)| (&l[..], *n)).collect();
        counter(
            &mut enc,
            "rest_requests",
            "REST API requests by endpoint and status class",
            &requests,
        )?;
        counter(
            &mut enc,
            "purges",
            "REST purge requests, by kind (path: DELETE /cache/<path>, prefix: DELETE /prefix/<prefix>, tag: DELETE /tag/<tag>)",
            &[
                (&[("kind", "path")], load(&self.rest.purges_path)),
                (&[("kind", "prefix")], load(&self.rest.purges_prefix)),
                (&[("kind", "tag")], load(&self.rest.purges_tag)),
            ],
        )?;
        counter(
            &mut enc,
            "soft_purges",
            "Purges that marked pages stale instead of deleting them",
            &[(&[], load(&self.rest.purges_soft))],
        )?;
        counter(
            &mut enc,
            "purged_entries",
            "Entries (values and pages) removed by purges",
            &[(&[], load(&self.rest.purged))],
        )?;
        let store = self.store.counters();
        counter(
            &mut enc,
            "store_slow_commands",
            "Store commands that held a shard thread 20 ms or more (compactions run inline)",
            &[(&[], load(&store.slow_commands))],
        )?;
        counter(
            &mut enc,
            "store_grouped_puts",
            "Writes that shared one LevelDB batch with others queued behind the same shard (group commit)",
            &[(&[], load(&store.grouped_puts))],
        )?;
        let m = enc.encode_descriptor(
            "store_slow_command_time",
            "How long those slow commands took",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        store.slow_command_time.encode(m)?;
        counter(
            &mut enc,
            "store_direct_reads",
            "Reads the hot tier did not answer, answered from the directory and the key's blob entry without the shard thread (read), or handed to the shard after a failed or ambiguous read (handed)",
            &[
                (&[("outcome", "read")], load(&store.direct_reads)),
                (&[("outcome", "handed")], load(&store.direct_fallbacks)),
            ],
        )?;
        counter(
            &mut enc,
            "store_point_read_misses",
            "LevelDB point reads that answered absent, by what an iterator then found: absent, or live (the crate's false absent, not believed)",
            &[
                (&[("found", "absent")], load(&store.misses_absent)),
                (&[("found", "live")], load(&store.misses_live)),
            ],
        )?;
        counter(
            &mut enc,
            "store_reopens",
            "LevelDB reopens of shards (after iterators, so compaction drops deleted data again)",
            &[(&[], load(&store.reopens))],
        )?;
        counter(
            &mut enc,
            "store_swept_entries",
            "Expired entries the sweeper removed",
            &[(&[], load(&store.swept))],
        )?;
        counter(
            &mut enc,
            "store_collected_bytes",
            "Blob-file bytes the collector gave back",
            &[(&[], load(&store.collected_bytes))],
        )?;
        counter(
            &mut enc,
            "store_evicted_entries",
            "Live entries evicted to keep the disk budget",
            &[(&[], load(&store.evicted))],
        )?;
        counter(
            &mut enc,
            "store_reinserted_entries",
            "Entries eviction kept because they were read since written (moved to the FIFO's tail)",
            &[(&[], load(&store.reinserted))],
        )?;
        counter(
            &mut enc,
            "store_evicted_bytes",
            "Blob-file bytes eviction gave back",
            &[(&[], load(&store.evicted_bytes))],
        )?;
        if let Some(log) = &self.access_log {
            counter(
                &mut enc,
                "access_log_dropped",
                "Access-log lines dropped because the writer fell behind",
                &[(&[], log.dropped())],
            )?;
        }
        Ok(())
    }
}

/// What the store and the process report at scrape time.
struct Gauges {
    store: Store,
    started: Instant,
}

impl std::fmt::Debug for Gauges {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gauges").finish_non_exhaustive()
    }
}

fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let m = enc.encode_descriptor(name, help, unit, MetricType::Gauge)?;
    ConstGauge::new(v).encode(m)
}

fn saturating(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Collector for Gauges {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let (hot_bytes, hot_entries) = self.store.hot_usage();
        gauge(
            &mut enc,
            "hot_tier",
            "Bytes the RAM tier holds",
            Some(&Unit::Bytes),
            saturating(hot_bytes),
        )?;
        gauge(
            &mut enc,
            "hot_tier_entries",
            "Entries the RAM tier holds",
            None,
            saturating(hot_entries),
        )?;
        let directory = self.store.directory_usage();
        gauge(
            &mut enc,
            "store_directory_entries",
            "Entries the in-RAM directory holds (one per stored value or page)",
            None,
            saturating(directory.entries),
        )?;
        gauge(
            &mut enc,
            "store_directory",
            "Bytes of RAM the directory's slots take",
            Some(&Unit::Bytes),
            saturating(directory.bytes),
        )?;
        gauge(
            &mut enc,
            "store_shards",
            "Shards of the data directory",
            None,
            saturating(self.store.shard_count() as u64),
        )?;
        gauge(
            &mut enc,
            "store_directory_ready_shards",
            "Shards whose directory is built (lookups exact without LevelDB's point read)",
            None,
            saturating(directory.ready_shards),
        )?;
        gauge(
            &mut enc,
            "disk",
            "Bytes of the data directory",
            Some(&Unit::Bytes),
            saturating(self.store.disk_bytes()),
        )?;
        let store = self.store.counters();
        let load = |a: &std::sync::atomic::AtomicU64| {
            saturating(a.load(std::sync::atomic::Ordering::Relaxed))
        };
        gauge(
            &mut enc,
            "disk_budget",
            "The data directory's budget (--max-disk); 0 when unlimited",
            Some(&Unit::Bytes),
            load(&store.disk_budget),
        )?;
        gauge(
            &mut enc,
            "disk_min_free",
            "Free space kept on the filesystem (--min-free)",
            Some(&Unit::Bytes),
            load(&store.disk_min_free),
        )?;
        gauge(
            &mut enc,
            "disk_free",
            "Free space on the data directory's filesystem at the last check",
            Some(&Unit::Bytes),
            load(&store.disk_free),
        )?;
        gauge(
            &mut enc,
            "uptime",
            "Seconds since the process started serving",
            Some(&Unit::Seconds),
            saturating(self.started.elapsed().as_secs()),
        )?;
        if let Some(rss) = resident_bytes() {
            gauge(
                &mut enc,
                "process_resident_memory",
                "Resident memory of the process",
                Some(&Unit::Bytes),
                saturating(rss),
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut enc,
                "process_open_fds",
                "Open file descriptors",
                None,
                saturating(fds.count() as u64),
            )?;
        }
        let m = enc.encode_descriptor(
            "build",
            "The running build (value 1)",
            None,
            MetricType::Info,
        )?;
        let version = [("version", env!("CARGO_PKG_VERSION"))];
        prometheus_client::metrics::info::Info::new(version.to_vec()).encode(m)?;
        Ok(())
    }
}

/// Resident set size from `/proc/self/statm` (Linux), in bytes.
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions; it reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).unwrap_or(4096))
}
