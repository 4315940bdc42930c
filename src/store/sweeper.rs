//! The background task that removes expired entries nobody reads again and
//! collects dead blob space, so disk space comes back on its own.

use std::time::Duration;

use super::Store;

/// Runs until `shutdown` fires: every `interval`, each shard removes its
/// expired entries in batches of `batch`, then collects blob files.
pub async fn run(
    store: Store,
    interval: Duration,
    batch: usize,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        match store.sweep(batch).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(removed = n, "expiry sweep"),
            Err(e) => tracing::warn!(error = %e, "expiry sweep failed"),
        }
    }
}
