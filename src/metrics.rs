//! The REST API's counters, reported by `GET /stat` (the proxy's are in
//! `proxy::stats`). Relaxed atomics:
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
