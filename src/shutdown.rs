//! Signals: SIGTERM or SIGINT flips a watch channel that every
//! long-running task selects on; SIGHUP reopens the access log.

use tokio::sync::watch;

/// Resolves on the first SIGTERM or SIGINT.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

/// A watch channel that becomes `true` once shutdown starts.
pub fn channel() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    watch::channel(false)
}

/// Waits until `rx` reports shutdown.
pub async fn wait(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// Listens for SIGHUP for as long as the process runs, so it never ends
/// the process: each reopens the access log once one is set in the
/// returned cell (logrotate's `postrotate`), and does nothing before.
pub fn on_hangup() -> std::sync::Arc<std::sync::OnceLock<crate::access_log::AccessLog>> {
    let log: std::sync::Arc<std::sync::OnceLock<crate::access_log::AccessLog>> = Default::default();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(mut hup) => {
                let log = log.clone();
                tokio::spawn(async move {
                    while hup.recv().await.is_some() {
                        if let Some(log) = log.get() {
                            tracing::info!("SIGHUP: reopening the access log");
                            log.reopen();
                        }
                    }
                });
            }
            Err(e) => tracing::error!(error = %e, "cannot listen for SIGHUP"),
        }
    }
    log
}
