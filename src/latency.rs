//! A latency histogram of atomics: observing is two relaxed adds (a
//! bucket, the sum), no lock, so it can sit on the hit path; it is read at
//! scrape time into the Prometheus histogram form.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{MetricEncoder, NoLabelSet};

/// Upper bounds in seconds: a hit from RAM is tens of microseconds, a
/// Django render seconds.
pub const BOUNDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// When an answer began, for its latency: read from `CLOCK_MONOTONIC` as
/// one number (`clock::read_clock` says why not `Instant`).
#[derive(Debug, Clone, Copy)]
pub struct Stopwatch(u64);

impl Stopwatch {
    pub fn start() -> Stopwatch {
        Stopwatch(monotonic_ns())
    }

    pub fn elapsed(self) -> Duration {
        Duration::from_nanos(monotonic_ns().saturating_sub(self.0))
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn monotonic_ns() -> u64 {
    // It cannot fail for CLOCK_MONOTONIC on Linux; if it did, the zeroes
    // read as no time passing.
    let (secs, nanos) = crate::clock::read_clock(libc::CLOCK_MONOTONIC).unwrap_or((0, 0));
    secs.saturating_mul(1_000_000_000).saturating_add(nanos)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn monotonic_ns() -> u64 {
    static ORIGIN: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    let since = ORIGIN.get_or_init(std::time::Instant::now).elapsed();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug, Default)]
pub struct Latency {
    /// One per bound, and one past the last.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    sum_ns: AtomicU64,
}

impl Latency {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = BOUNDS.partition_point(|b| *b < secs);
        self.buckets[i].fetch_add(1, Relaxed);
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_ns.fetch_add(ns, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    pub fn encode(&self, mut m: MetricEncoder) -> Result<(), std::fmt::Error> {
        let counts: Vec<u64> = self.buckets.iter().map(|b| b.load(Relaxed)).collect();
        let mut buckets: Vec<(f64, u64)> =
            BOUNDS.iter().copied().zip(counts.iter().copied()).collect();
        buckets.push((f64::INFINITY, counts[BOUNDS.len()]));
        let count = counts.iter().sum();
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        m.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let l = Latency::default();
        l.observe(Duration::from_micros(50));
        l.observe(Duration::from_micros(100));
        l.observe(Duration::from_millis(3));
        l.observe(Duration::from_secs(60));
        let b: Vec<u64> = l.buckets.iter().map(|b| b.load(Relaxed)).collect();
        assert_eq!(b[0], 2, "≤ 100 µs");
        assert_eq!(b[5], 1, "≤ 5 ms");
        assert_eq!(b[BOUNDS.len()], 1, "past the last bound");
        assert_eq!(l.count(), 4);
    }

    #[test]
    fn a_stopwatch_measures_what_instant_does() {
        let (instant, watch) = (std::time::Instant::now(), Stopwatch::start());
        std::thread::sleep(Duration::from_millis(20));
        let (by_watch, by_instant) = (watch.elapsed(), instant.elapsed());
        assert!(by_watch >= Duration::from_millis(20), "{by_watch:?}");
        assert!(by_watch <= by_instant, "{by_watch:?} > {by_instant:?}");
    }
}
