//! Counters kept in memory and reported by `GET /stat`. Relaxed atomics:
//! they are statistics, read without any ordering promise.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Stats {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    /// Reads that found an entry past its lifetime (and deleted it).
    pub expired: AtomicU64,
    pub sets: AtomicU64,
    pub deletes: AtomicU64,
}

/// A point-in-time copy for reporting.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct StatsSnapshot {
    pub hits: u64,
    pub misses: u64,
    pub expired: u64,
    pub sets: u64,
    pub deletes: u64,
    /// hits / (hits + misses + expired); 0 before any read.
    pub hit_rate: f64,
}

impl Stats {
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let hits = self.hits.load(Relaxed);
        let misses = self.misses.load(Relaxed);
        let expired = self.expired.load(Relaxed);
        let reads = hits + misses + expired;
        StatsSnapshot {
            hits,
            misses,
            expired,
            sets: self.sets.load(Relaxed),
            deletes: self.deletes.load(Relaxed),
            hit_rate: if reads == 0 {
                0.0
            } else {
                hits as f64 / reads as f64
            },
        }
    }
}

/// How the proxy answered a request: the `X-Cache` header, the log field
/// and the counter all come from this one enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    /// Served from the cache (or from a coalesced fetch it waited for).
    Hit,
    /// Fetched from the upstream by this request.
    Miss,
    /// Not eligible for the cache (method, credentials, session, range).
    Bypass,
    /// Stale copy served because the upstream failed (stale-if-error).
    Stale,
    /// Stale copy served while a background request refreshes it.
    Updating,
    /// Stale copy confirmed by the upstream with a 304, then served.
    Revalidated,
}

impl CacheStatus {
    pub const ALL: [CacheStatus; 6] = [
        CacheStatus::Hit,
        CacheStatus::Miss,
        CacheStatus::Bypass,
        CacheStatus::Stale,
        CacheStatus::Updating,
        CacheStatus::Revalidated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
            CacheStatus::Stale => "STALE",
            CacheStatus::Updating => "UPDATING",
            CacheStatus::Revalidated => "REVALIDATED",
        }
    }
}

/// Proxy counters, reported under `"proxy"` in `GET /stat`.
#[derive(Debug, Default)]
pub struct ProxyStats {
    by_status: [AtomicU64; 6],
    upstream_requests: AtomicU64,
    upstream_errors: AtomicU64,
}

impl ProxyStats {
    pub fn count(&self, s: CacheStatus) {
        self.by_status[s as usize].fetch_add(1, Relaxed);
    }

    pub fn upstream_request(&self) {
        self.upstream_requests.fetch_add(1, Relaxed);
    }

    pub fn upstream_error(&self) {
        self.upstream_errors.fetch_add(1, Relaxed);
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for s in CacheStatus::ALL {
            m.insert(
                s.as_str().to_ascii_lowercase(),
                self.by_status[s as usize].load(Relaxed).into(),
            );
        }
        m.insert(
            "upstream_requests".into(),
            self.upstream_requests.load(Relaxed).into(),
        );
        m.insert(
            "upstream_errors".into(),
            self.upstream_errors.load(Relaxed).into(),
        );
        m.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hit_rate_counts_expired_reads_as_misses() {
        let s = Stats::default();
        assert_eq!(s.snapshot().hit_rate, 0.0);
        Stats::bump(&s.hits);
        Stats::bump(&s.hits);
        Stats::bump(&s.misses);
        Stats::bump(&s.expired);
        assert_eq!(s.snapshot().hit_rate, 0.5);
    }
}
