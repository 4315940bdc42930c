//! When a shard thread's current command started, so readers can tell a
//! thread stuck in a compaction from one that is merely working, and ask
//! the mirror instead (`store::handle`).

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Shared between a shard thread (which stamps it) and its handle (which
/// reads it). Microseconds on a process-wide monotonic clock, plus one;
/// 0 while idle.
#[derive(Clone, Default)]
pub struct Busy(Arc<AtomicU64>);

fn now_us() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64 + 1
}

impl Busy {
    /// A command starts.
    pub fn start(&self) {
        self.0.store(now_us(), Ordering::Release);
    }

    /// The command is done.
    pub fn idle(&self) {
        self.0.store(0, Ordering::Release);
    }

    /// How long the current command has run, in microseconds; 0 if none.
    pub fn for_us(&self) -> u64 {
        match self.0.load(Ordering::Acquire) {
            0 => 0,
            since => now_us().saturating_sub(since),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_counts_only_while_a_command_runs() {
        let b = Busy::default();
        assert_eq!(b.for_us(), 0);
        b.start();
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert!(b.for_us() >= 2_000);
        b.idle();
        assert_eq!(b.for_us(), 0);
    }
}
