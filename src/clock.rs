//! Wall-clock time, injected.
//!
//! Every lifetime bigcache keeps (REST durations, page freshness, grace and
//! stale windows, hit-for-pass, the expiry sweep) is measured against one
//! [`Clock`] handed down from `server::run`. In production it is the system
//! clock; tests build a [`Clock::manual`] one and [`Clock::advance`] it, so a
//! 28-day lifetime runs out in a microsecond instead of a test sleeping.
//!
//! Durations of work (slow-command logging, hedged reads, timeouts) are not
//! wall-clock questions and use `Instant` or tokio's timers instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A cheap-to-clone source of "now", in unix milliseconds.
#[derive(Debug, Clone, Default)]
pub struct Clock {
    /// `None`: the system clock. `Some`: a manual clock that only moves
    /// when told to.
    manual: Option<Arc<AtomicU64>>,
}

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock frozen at `start` that moves only by [`Clock::advance`].
    pub fn manual(start: SystemTime) -> Clock {
        Clock {
            manual: Some(Arc::new(AtomicU64::new(unix_ms(start)))),
        }
    }

    /// Now, in unix milliseconds.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            None => system_ms(),
            Some(ms) => ms.load(Ordering::Acquire),
        }
    }

    /// Now, as a `SystemTime` (for HTTP dates).
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(self.now_ms())
    }

    /// Moves a manual clock forward; returns `false` (and does nothing) on
    /// the system clock, which nobody may move.
    pub fn advance(&self, by: Duration) -> bool {
        match &self.manual {
            None => false,
            Some(ms) => {
                let by = u64::try_from(by.as_millis()).unwrap_or(u64::MAX);
                ms.fetch_add(by, Ordering::AcqRel);
                true
            }
        }
    }
}

/// Clock `id` as (seconds, nanoseconds), read straight from
/// `clock_gettime`: std's `SystemTime::duration_since` and
/// `Instant::elapsed` check and normalise two timespecs, 80 to 90
/// instructions of a hit's 12,000 for each read. `None` if the read
/// failed; a time before 1970 reads as 0 s.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub(crate) fn read_clock(id: libc::clockid_t) -> Option<(u64, u64)> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime only writes the timespec it is given.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return None;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    Some((secs, nanos))
}

/// The system clock in unix milliseconds.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn system_ms() -> u64 {
    match read_clock(libc::CLOCK_REALTIME) {
        Some((secs, nanos)) => secs.saturating_mul(1000).saturating_add(nanos / 1_000_000),
        None => unix_ms(SystemTime::now()),
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn system_ms() -> u64 {
    unix_ms(SystemTime::now())
}

fn unix_ms(t: SystemTime) -> u64 {
    // Seconds and their milliseconds, not `as_millis`: its 128-bit
    // division was a tenth of a hit's clock reads.
    t.duration_since(UNIX_EPOCH).map_or(0, |d| {
        d.as_secs()
            .saturating_mul(1000)
            .saturating_add(u64::from(d.subsec_millis()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_advanced_and_clones_share_it() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let c = Clock::manual(start);
        let seen_by_a_shard = c.clone();
        assert_eq!(c.now(), start);
        assert!(c.advance(Duration::from_secs(28 * 86_400)));
        assert_eq!(
            seen_by_a_shard.now_ms(),
            1_800_000_000_000 + 28 * 86_400_000
        );
    }

    #[test]
    fn unix_ms_counts_whole_milliseconds() {
        for ms in [0u64, 1, 999, 1_000, 1_796_626_800_123, 253_402_300_799_999] {
            let t = UNIX_EPOCH + Duration::from_millis(ms) + Duration::from_micros(999);
            assert_eq!(unix_ms(t), ms);
        }
        assert_eq!(
            unix_ms(UNIX_EPOCH - Duration::from_secs(1)),
            0,
            "before 1970"
        );
    }

    #[test]
    fn the_system_clock_cannot_be_moved() {
        let c = Clock::system();
        assert!(!c.advance(Duration::from_secs(3600)));
        let skew = c.now_ms().abs_diff(unix_ms(SystemTime::now()));
        assert!(skew < 5_000, "{skew} ms from the system clock");
        // Read apart, the two readings agree to the millisecond they
        // share (or the next one, if it turned between them).
        let (before, read, after) = (
            unix_ms(SystemTime::now()),
            system_ms(),
            unix_ms(SystemTime::now()),
        );
        assert!(before <= read && read <= after, "{before} {read} {after}");
    }
}
