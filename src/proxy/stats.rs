//! The proxy's counters, reported under `"proxy"` in `GET /stat`: one per
//! cache status and one per reason, both fed by the request's
//! [`Decision`], plus upstream requests and errors. Relaxed atomics: they
//! are statistics, read without any ordering promise.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::decision::{CacheStatus, Decision, Reason};

#[derive(Debug, Default)]
pub struct ProxyStats {
    by_status: [AtomicU64; CacheStatus::ALL.len()],
    by_reason: [AtomicU64; Reason::ALL.len()],
    upstream_requests: AtomicU64,
    upstream_errors: AtomicU64,
}

/// A point-in-time copy of [`ProxyStats`].
pub struct Counts {
    pub by_status: [u64; CacheStatus::ALL.len()],
    pub by_reason: [u64; Reason::ALL.len()],
    pub upstream_requests: u64,
    pub upstream_errors: u64,
}

impl ProxyStats {
    pub fn counts(&self) -> Counts {
        Counts {
            by_status: std::array::from_fn(|i| self.by_status[i].load(Relaxed)),
            by_reason: std::array::from_fn(|i| self.by_reason[i].load(Relaxed)),
            upstream_requests: self.upstream_requests.load(Relaxed),
            upstream_errors: self.upstream_errors.load(Relaxed),
        }
    }

    pub fn count(&self, d: Decision) {
        self.by_status[d.status as usize].fetch_add(1, Relaxed);
        if let Some(r) = d.reason {
            self.by_reason[r as usize].fetch_add(1, Relaxed);
        }
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
        let mut reasons = serde_json::Map::new();
        for r in Reason::ALL {
            let n = self.by_reason[r as usize].load(Relaxed);
            if n > 0 {
                reasons.insert(r.as_str().into(), n.into());
            }
        }
        m.insert("not_cached".into(), reasons.into());
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
