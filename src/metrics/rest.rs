//! The REST API's counters, reported by `GET /stat` and `GET /metrics`
//! (the proxy's are in `proxy::stats`). Relaxed atomics: they are
//! statistics, read without any ordering promise.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Reads that found an entry past its lifetime (and deleted it).
    pub expired: AtomicU64,
    pub sets: AtomicU64,
    pub deletes: AtomicU64,
    /// `DELETE /cache/<path>` requests (page purges by path).
    pub purges_path: AtomicU64,
    /// `DELETE /prefix/<prefix>` requests.
    pub purges_prefix: AtomicU64,
    /// `DELETE /tag/<tag>` requests (and tags in `POST /purge`).
    pub purges_tag: AtomicU64,
    /// Purges of any kind that were soft (pages marked stale).
    pub purges_soft: AtomicU64,
    /// Entries (values and pages) those purges removed.
    pub purged: AtomicU64,
    /// Requests by endpoint and status class.
    pub requests: [[AtomicU64; crate::proxy::stats::CLASSES.len()]; Endpoint::ALL.len()],
}

/// The REST API's endpoints, for counting requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    Cache,
    Pickle,
    Incr,
    Many,
    Keys,
    Purge,
    Prefix,
    Tag,
    Stat,
    StatCount,
    Metrics,
    Clear,
    Other,
}

impl Endpoint {
    pub const ALL: [Endpoint; 13] = [
        Endpoint::Cache,
        Endpoint::Pickle,
        Endpoint::Incr,
        Endpoint::Many,
        Endpoint::Keys,
        Endpoint::Purge,
        Endpoint::Prefix,
        Endpoint::Tag,
        Endpoint::Stat,
        Endpoint::StatCount,
        Endpoint::Metrics,
        Endpoint::Clear,
        Endpoint::Other,
    ];

    pub fn of(path: &str) -> Endpoint {
        match path {
            p if p.starts_with("/cache/") => Endpoint::Cache,
            p if p.starts_with("/pickle/") => Endpoint::Pickle,
            p if p.starts_with("/incr/") => Endpoint::Incr,
            p if p.starts_with("/many/") => Endpoint::Many,
            p if p.starts_with("/prefix") => Endpoint::Prefix,
            p if p.starts_with("/tag/") => Endpoint::Tag,
            "/keys" => Endpoint::Keys,
            "/purge" => Endpoint::Purge,
            "/stat" => Endpoint::Stat,
            "/stat/count" => Endpoint::StatCount,
            "/metrics" => Endpoint::Metrics,
            "/clear" => Endpoint::Clear,
            _ => Endpoint::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Cache => "cache",
            Endpoint::Pickle => "pickle",
            Endpoint::Incr => "incr",
            Endpoint::Many => "many",
            Endpoint::Keys => "keys",
            Endpoint::Purge => "purge",
            Endpoint::Prefix => "prefix",
            Endpoint::Tag => "tag",
            Endpoint::Stat => "stat",
            Endpoint::StatCount => "stat_count",
            Endpoint::Metrics => "metrics",
            Endpoint::Clear => "clear",
            Endpoint::Other => "other",
        }
    }
}

/// A point-in-time copy for reporting, in the original Python server's
/// `/stat` shape (`{"stats": {...}}`, these names, the rate as text), so
/// its dashboards keep working; `set` is bigcache's, beside them.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    pub hit: u64,
    pub miss: u64,
    pub expire: u64,
    pub delete: u64,
    pub set: u64,
    /// hit / (hit + miss + expire) as a percentage with two decimals,
    /// `"0.00%"` before any read.
    pub hit_rate: String,
}

impl Stats {
    pub fn request(&self, endpoint: Endpoint, status: u16) {
        let class = crate::proxy::stats::class_of(status);
        self.requests[endpoint as usize][class].fetch_add(1, Relaxed);
    }

    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let hits = self.hits.load(Relaxed);
        let misses = self.misses.load(Relaxed);
        let expired = self.expired.load(Relaxed);
        let reads = hits + misses + expired;
        let rate = if reads == 0 {
            0.0
        } else {
            hits as f64 * 100.0 / reads as f64
        };
        StatsSnapshot {
            hit: hits,
            miss: misses,
            expire: expired,
            delete: self.deletes.load(Relaxed),
            set: self.sets.load(Relaxed),
            hit_rate: format!("{rate:.2}%"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_counts_expired_reads_as_misses() {
        let s = Stats::default();
        assert_eq!(s.snapshot().hit_rate, "0.00%");
        Stats::bump(&s.hits);
        Stats::bump(&s.hits);
        Stats::bump(&s.misses);
        Stats::bump(&s.expired);
        assert_eq!(s.snapshot().hit_rate, "50.00%");
        Stats::bump(&s.misses);
        assert_eq!(s.snapshot().hit_rate, "40.00%");
    }
}
