//! Wiring: opens the store, binds the listeners, runs the background tasks,
//! and tears everything down in order on shutdown (stop accepting, let
//! in-flight requests finish, then flush and close LevelDB).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::api::{self, ApiState, Limits};
use crate::config::Config;
use crate::metrics::Stats;
use crate::shutdown;
use crate::store::{self, Store, StoreConfig};

/// How long in-flight requests get to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
}

/// Runs bigcache until `stop` resolves.
pub async fn run(cfg: Config, stop: impl Future<Output = ()>) -> Result<(), ServerError> {
    let store = Store::open(&StoreConfig {
        dir: cfg.data_dir.clone(),
        shards: cfg.shards,
        hot_bytes: cfg.hot_cache_size,
        queue_depth: 1024,
    })?;
    let listener = TcpListener::bind(cfg.api_listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cfg.api_listen,
            source,
        })?;
    let api_addr = listener.local_addr().map_err(ServerError::Serve)?;
    tracing::info!(
        api = %api_addr,
        data_dir = %cfg.data_dir.display(),
        shards = store.shard_count(),
        "bigcache started"
    );
    // A stable line on stdout for scripts and tests that start bigcache on
    // port 0 and need the address.
    println!("bigcache listening api=http://{api_addr}");

    let (stop_tx, stop_rx) = shutdown::channel();
    let sweeper = tokio::spawn(store::run_sweeper(
        store.clone(),
        cfg.sweep_interval,
        cfg.sweep_batch,
        stop_rx.clone(),
    ));
    let app = api::router(ApiState {
        store: store.clone(),
        stats: Arc::new(Stats::default()),
        limits: Limits {
            max_body: cfg.max_body_size,
            max_key: cfg.max_key_length,
        },
        token: cfg.api_token.as_deref().map(Arc::from),
    });
    let server = axum::serve(listener, app).with_graceful_shutdown(shutdown::wait(stop_rx));
    let mut server = std::pin::pin!(server.into_future());

    let result = tokio::select! {
        r = &mut server => r,
        _ = stop => {
            tracing::info!("shutting down");
            let _ = stop_tx.send(true);
            match tokio::time::timeout(DRAIN_TIMEOUT, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!("requests still running after {DRAIN_TIMEOUT:?}; closing anyway");
                    Ok(())
                }
            }
        }
    };
    let _ = stop_tx.send(true);
    let _ = sweeper.await;
    store.shutdown().await;
    tracing::info!("store closed");
    result.map_err(ServerError::Serve)
}
