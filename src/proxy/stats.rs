//! The proxy's counters, reported under `"proxy"` in `GET /stat`: one per
//! cache status and one per reason, both fed by the request's
//! [`Decision`], plus upstream requests and errors. Relaxed atomics: they
//! are statistics, read without any ordering promise.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::decision::{CacheStatus, Decision, Reason};
use crate::latency::Latency;

/// Why an upstream request failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Refused, reset, or no route: no response at all.
    Connect,
    Timeout,
    /// A response that broke off, or could not be read.
    Broken,
    /// A 5xx status.
    Status5xx,
}

impl UpstreamFailure {
    pub const ALL: [UpstreamFailure; 4] = [
        UpstreamFailure::Connect,
        UpstreamFailure::Timeout,
        UpstreamFailure::Broken,
        UpstreamFailure::Status5xx,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            UpstreamFailure::Connect => "connect",
            UpstreamFailure::Timeout => "timeout",
            UpstreamFailure::Broken => "broken",
            UpstreamFailure::Status5xx => "5xx",
        }
    }

    pub fn of(e: &super::error::ProxyError) -> UpstreamFailure {
        use super::error::ProxyError;
        match e {
            ProxyError::UpstreamTimeout => UpstreamFailure::Timeout,
            ProxyError::UpstreamUnreachable(_) => UpstreamFailure::Connect,
            _ => UpstreamFailure::Broken,
        }
    }
}

/// What became of a text page bigcache could keep in its own coding
/// (`proxy::compress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packing {
    /// Stored in brotli.
    Br,
    /// Encoded again at `--compress-level` at a later hit (`recode`).
    Recoded,
    /// Stored as sent: brotli would not save an eighth.
    NoGain,
    /// Stored as sent: the encoder had a full queue.
    Busy,
}

impl Packing {
    pub const ALL: [Packing; 4] = [
        Packing::Br,
        Packing::Recoded,
        Packing::NoGain,
        Packing::Busy,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Packing::Br => "br",
            Packing::Recoded => "recoded",
            Packing::NoGain => "no_gain",
            Packing::Busy => "busy",
        }
    }
}

/// Status classes for the latency histograms and request counts: 1xx-5xx.
pub const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The index in [`CLASSES`] of a status (anything out of range clamped).
pub fn class_of(status: u16) -> usize {
    usize::from(status / 100).clamp(1, CLASSES.len()) - 1
}

#[derive(Debug, Default)]
pub struct ProxyStats {
    by_status: [AtomicU64; CacheStatus::ALL.len()],
    by_reason: [AtomicU64; Reason::ALL.len()],
    upstream_requests: AtomicU64,
    upstream_errors: [AtomicU64; UpstreamFailure::ALL.len()],
    collapsed: AtomicU64,
    /// Cacheable pages served but not stored: the store was busy (its
    /// write backlog full) or failing.
    unstored: AtomicU64,
    /// Hits answered on the socket, without hyper (`server::quick`).
    quick_hits: AtomicU64,
    packed: [AtomicU64; Packing::ALL.len()],
    /// Upstream response time, to the response head.
    pub upstream_latency: Latency,
    /// Client response time, to the response head, by cache status and
    /// status class.
    pub client_latency: [[Latency; CLASSES.len()]; CacheStatus::ALL.len()],
}

/// A point-in-time copy of [`ProxyStats`].
pub struct Counts {
    pub by_status: [u64; CacheStatus::ALL.len()],
    pub by_reason: [u64; Reason::ALL.len()],
    pub upstream_requests: u64,
    pub upstream_errors: [u64; UpstreamFailure::ALL.len()],
    pub collapsed: u64,
    pub unstored: u64,
    pub quick_hits: u64,
    pub packed: [u64; Packing::ALL.len()],
}

impl ProxyStats {
    pub fn counts(&self) -> Counts {
        Counts {
            by_status: std::array::from_fn(|i| self.by_status[i].load(Relaxed)),
            by_reason: std::array::from_fn(|i| self.by_reason[i].load(Relaxed)),
            upstream_requests: self.upstream_requests.load(Relaxed),
            upstream_errors: std::array::from_fn(|i| self.upstream_errors[i].load(Relaxed)),
            collapsed: self.collapsed.load(Relaxed),
            unstored: self.unstored.load(Relaxed),
            quick_hits: self.quick_hits.load(Relaxed),
            packed: std::array::from_fn(|i| self.packed[i].load(Relaxed)),
        }
    }

    pub fn count(&self, d: Decision) {
        self.by_status[d.status as usize].fetch_add(1, Relaxed);
        if let Some(r) = d.reason {
            self.by_reason[r as usize].fetch_add(1, Relaxed);
        }
        if d.collapsed {
            self.collapsed.fetch_add(1, Relaxed);
        }
    }

    /// A response's time to its head, by decision and status.
    pub fn answered(&self, d: Decision, status: u16, took: std::time::Duration) {
        self.client_latency[d.status as usize][class_of(status)].observe(took);
    }

    pub fn upstream_request(&self) {
        self.upstream_requests.fetch_add(1, Relaxed);
    }

    /// A cacheable page the store did not take.
    pub fn unstored(&self) {
        self.unstored.fetch_add(1, Relaxed);
    }

    /// A hit answered on the socket (it is counted as a hit too).
    pub fn quick_hit(&self) {
        self.quick_hits.fetch_add(1, Relaxed);
    }

    /// A text page stored, in brotli or (why not) as sent.
    pub fn packed(&self, p: Packing) {
        self.packed[p as usize].fetch_add(1, Relaxed);
    }

    pub fn upstream_error(&self, kind: UpstreamFailure) {
        self.upstream_errors[kind as usize].fetch_add(1, Relaxed);
    }

    /// The share of the responses that could have come from the cache
    /// (all but `BYPASS`) that did: `HIT`, `STALE`, `UPDATING` and
    /// `REVALIDATED` (a stored body confirmed by Django), as `"93.50%"`,
    /// the REST section's form.
    fn hit_rate(&self) -> String {
        let n = |s: CacheStatus| self.by_status[s as usize].load(Relaxed);
        let served = [
            CacheStatus::Hit,
            CacheStatus::Stale,
            CacheStatus::Updating,
            CacheStatus::Revalidated,
        ]
        .into_iter()
        .map(n)
        .sum::<u64>();
        let eligible = served + n(CacheStatus::Miss);
        let rate = if eligible == 0 {
            0.0
        } else {
            served as f64 * 100.0 / eligible as f64
        };
        format!("{rate:.2}%")
    }

    pub fn snapshot(&self) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for s in CacheStatus::ALL {
            m.insert(
                s.as_str().to_ascii_lowercase(),
                self.by_status[s as usize].load(Relaxed).into(),
            );
        }
        let mut reasons = serde_json::Map::new();
        for r in Reason::ALL {
            let n = self.by_reason[r as usize].load(Relaxed);
            if n > 0 {
                reasons.insert(r.as_str().into(), n.into());
            }
        }
        m.insert("hit_rate".into(), self.hit_rate().into());
        m.insert("not_cached".into(), reasons.into());
        m.insert(
            "upstream_requests".into(),
            self.upstream_requests.load(Relaxed).into(),
        );
        let errors: u64 = self.upstream_errors.iter().map(|e| e.load(Relaxed)).sum();
        m.insert("upstream_errors".into(), errors.into());
        m.insert("unstored".into(), self.unstored.load(Relaxed).into());
        m.insert("quick_hits".into(), self.quick_hits.load(Relaxed).into());
        let packed: serde_json::Map<_, _> = Packing::ALL
            .iter()
            .map(|p| {
                (
                    p.as_str().into(),
                    self.packed[*p as usize].load(Relaxed).into(),
                )
            })
            .collect();
        m.insert("compressed".into(), packed.into());
        m.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hit_rate_counts_what_the_cache_served_and_leaves_bypasses_out() {
        let s = ProxyStats::default();
        assert_eq!(s.snapshot()["hit_rate"], "0.00%", "nothing yet");
        for status in [
            CacheStatus::Hit,
            CacheStatus::Hit,
            CacheStatus::Stale,
            CacheStatus::Revalidated,
            CacheStatus::Updating,
            CacheStatus::Miss,
            CacheStatus::Miss,
            CacheStatus::Miss,
            CacheStatus::Bypass,
            CacheStatus::Bypass,
        ] {
            s.count(Decision::new(status));
        }
        assert_eq!(s.snapshot()["hit_rate"], "62.50%", "5 of 8, bypasses aside");
    }
}
