//! Allocator tuning: keeps the process's RSS at what it actually uses.
//!
//! Measured with glibc malloc: page bodies are allocated on shard threads
//! and freed on runtime threads, and LevelDB's small allocations sit
//! between them. Freed memory then stays in malloc's free lists instead of
//! going back to the OS: with a 128 MiB hot tier, RSS reached 322 MB with
//! glibc's default arenas, and without a hot tier it grew with the number
//! of pages written (68 MB after 200,000 pages, of which `malloc_trim`
//! returned 29 MB). Two fixes, both no-ops on other platforms:
//! - two arenas instead of up to eight per core ([`limit_arenas`]);
//! - handing free pages back every few seconds ([`trim_periodically`]).

use std::time::Duration;

/// How often free memory is returned to the OS. `malloc_trim` takes a few
/// milliseconds on a heap of a few hundred MB, during which other
/// allocations wait: rarely enough not to show in latencies.
pub const TRIM_INTERVAL: Duration = Duration::from_secs(10);

/// Caps glibc at two malloc arenas. Must run before any other thread
/// starts (first thing in `main`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn limit_arenas() {
    // SAFETY: mallopt only sets a glibc tunable; called while single-threaded.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn limit_arenas() {}

/// Returns free heap pages to the OS every [`TRIM_INTERVAL`] until
/// `shutdown` fires.
pub async fn trim_periodically(mut shutdown: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(TRIM_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => trim(),
            _ = shutdown.changed() => return,
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim is thread-safe and only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}
