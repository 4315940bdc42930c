//! Wiring: opens the store, serves on listeners bound by the caller, runs
//! the background tasks, and tears everything down in order on shutdown
//! (stop accepting, let in-flight requests finish, then flush and close
//! LevelDB). The binary binds the configured addresses and passes the
//! system clock; tests bind port 0 and pass a manual clock.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tower::ServiceExt;

use crate::api::{self, ApiState, Limits};
use crate::clock::Clock;
use crate::config::Config;
use crate::metrics::Stats;
use crate::proxy::stats::ProxyStats;
use crate::proxy::upstream::{UpstreamConfig, UpstreamUrlError};
use crate::proxy::{Proxy, ProxyConfig};
use crate::shutdown;
use crate::store::{self, Store, StoreConfig};

mod conn;
pub mod h1;
pub mod socket;
mod wire;

use conn::{ConnLimits, serve};
use socket::Listener;

/// Memory beyond the hot tier before free heap pages are handed back (see
/// `alloc`): four shards, their directories and the runtime use ~40 MB.
const BASE_MEMORY: u64 = 48 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("binding {addr}: {source}")]
    Bind {
        addr: socket::Listen,
        source: std::io::Error,
    },
    #[error("serving: {0}")]
    Serve(std::io::Error),
    #[error("proxy: {0}")]
    Proxy(#[from] UpstreamUrlError),
    #[error("opening the access log: {0}")]
    AccessLog(std::io::Error),
}

/// The two listening sockets, bound before [`run`] is called.
pub struct Listeners {
    pub api: Listener,
    pub proxy: Listener,
}

impl Listeners {
    /// Binds the addresses `cfg` names. A socket file of the REST API is
    /// its owner's and group's; the proxy's anyone's on the host, as a
    /// loopback port is.
    pub async fn bind(cfg: &Config) -> Result<Listeners, ServerError> {
        let bind = |addr: socket::Listen, mode| async move {
            Listener::bind(&addr, mode)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        Ok(Listeners {
            api: bind(cfg.api_listen.clone(), 0o660).await?,
            proxy: bind(cfg.proxy_listen.clone(), 0o666).await?,
        })
    }
}

/// How the start-up line names a listener: a URL, or the socket's path.
fn shown(at: &socket::Listen) -> String {
    match at {
        socket::Listen::Tcp(a) => format!("http://{a}"),
        unix => unix.to_string(),
    }
}

/// Runs bigcache on `listeners` until `stop` resolves, measuring every
/// lifetime against `clock`.
///
/// The REST listener answers from the start: `/livez` at once, `/readyz`
/// with 503 until every shard is open (and again from the
/// moment a shutdown begins), everything else with 503 until then. The
/// proxy listener is served once the store is open (connections wait in
/// the accept queue meanwhile). On shutdown the proxy drains first, while
/// the REST listener still says not ready, then the REST listener.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    clock: Clock,
    stop: impl Future<Output = ()>,
) -> Result<(), ServerError> {
    let Listeners {
        api: listener,
        proxy: proxy_listener,
    } = listeners;
    let api_addr = listener.local().map_err(ServerError::Serve)?;
    let proxy_addr = proxy_listener.local().map_err(ServerError::Serve)?;
    let limits = ConnLimits {
        max_connections: cfg.max_connections,
        client_timeout: cfg.client_timeout,
    };
    // From the start: SIGHUP's default action would end the process, and
    // logrotate (or `systemctl reload`) sends it whether or not there is
    // an access log to reopen.
    let reopen_on_hangup = shutdown::on_hangup();
    let health = Arc::new(Health::default());
    let app_cell: Arc<std::sync::OnceLock<axum::Router>> = Arc::default();
    let (api_stop_tx, api_stop_rx) = shutdown::channel();
    let api_task = {
        let (health, app_cell) = (health.clone(), app_cell.clone());
        tokio::spawn(serve(
            "api",
            listener,
            move |_peer| {
                let (health, app_cell) = (health.clone(), app_cell.clone());
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let early = health.answer(req.uri().path(), app_cell.get().is_some());
                    let app = app_cell.get().cloned();
                    async move {
                        match (early, app) {
                            (Some(res), _) => Ok(res),
                            (None, Some(app)) => app.oneshot(req).await,
                            (None, None) => Ok(Health::starting()),
                        }
                    }
                })
            },
            None::<Arc<h1::Never>>,
            limits,
            api_stop_rx,
        ))
    };

    let store_cfg = StoreConfig {
        dir: cfg.data_dir.clone(),
        shards: cfg.shards,
        hot_bytes: cfg.hot_cache_size,
        queue_depth: 1024,
        max_variants: cfg.max_variants,
        sync: cfg.sync,
        clock,
        max_disk: cfg.max_disk,
        min_free: cfg.min_free,
    };
    // The stop signal is listened to from here on: a SIGTERM while the
    // store opens waits for the open and then shuts down cleanly, instead
    // of killing the process before any handler is installed.
    let mut stop = std::pin::pin!(stop);
    let mut opening = tokio::task::spawn_blocking(move || Store::open(&store_cfg));
    let mut stopped_early = false;
    let opened = tokio::select! {
        opened = &mut opening => opened,
        () = &mut stop => {
            stopped_early = true;
            health.set(Health::DRAINING);
            tracing::info!("shutdown requested while the store opens; closing once it is open");
            opening.await
        }
    };
    let store = match opened {
        Ok(Ok(store)) if stopped_early => {
            stop_serving(api_stop_tx, api_task).await;
            store.shutdown().await;
            return Ok(());
        }
        Ok(Ok(store)) => store,
        failed => {
            stop_serving(api_stop_tx, api_task).await;
            return Err(match failed {
                Ok(Err(e)) => e.into(),
                _ => ServerError::Serve(std::io::Error::other("opening the store panicked")),
            });
        }
    };
    let (access_log, log_writer) = match &cfg.access_log {
        None => (None, None),
        Some(target) => match crate::access_log::AccessLog::open(target) {
            Ok((log, writer)) => (Some(log), Some(writer)),
            Err(e) => {
                stop_serving(api_stop_tx, api_task).await;
                store.shutdown().await;
                return Err(ServerError::AccessLog(e));
            }
        },
    };
    if let Some(log) = &access_log {
        let _ = reopen_on_hangup.set(log.clone());
    }
    let proxy_port = match &proxy_addr {
        socket::Listen::Tcp(a) => Some(a.port()),
        socket::Listen::Unix(_) => None,
    };
    let hosts = site_hosts(&cfg.hosts, proxy_port);
    let sites = match page_sites(&cfg, &hosts) {
        Ok(sites) => sites,
        Err(e) => {
            stop_serving(api_stop_tx, api_task).await;
            store.shutdown().await;
            return Err(e.into());
        }
    };
    let proxy_stats = Arc::new(ProxyStats::default());
    let proxy = Proxy::new(
        store.clone(),
        ProxyConfig {
            upstream: UpstreamConfig {
                base: cfg.upstream.clone(),
                connect_timeout: cfg.upstream_connect_timeout,
                timeout: cfg.upstream_timeout,
            },
            max_entry_size: cfg.max_entry_size,
            grace: cfg.grace,
            stale_if_error: cfg.stale_if_error,
            session_cookies: cfg.session_cookies.clone(),
            hit_for_pass: Duration::from_secs(120),
            trusted: cfg.trusted_proxies.clone(),
            max_target: cfg.max_target_length,
            cache_vary_cookie: cfg.cache_vary_cookie,
            keep_tag_headers: cfg.keep_tag_headers,
            encodings: cfg.encodings.clone(),
            hosts,
            sites,
            // The leader's fetch: the head, then the body, each bounded.
            flight_wait: cfg.upstream_timeout * 2,
            send_timeout: cfg.client_timeout,
            access_log: access_log.clone(),
            max_query_variants: cfg.max_query_variants,
            query: cfg.query.clone(),
            cookies: cfg.cookies.clone(),
            compress: cfg.compress,
            decoded_cache: cfg.decoded_cache_size,
        },
        proxy_stats.clone(),
    );
    let proxy = match proxy {
        Ok(p) => {
            let p = Arc::new(p);
            p.start_recoder();
            p
        }
        Err(e) => {
            stop_serving(api_stop_tx, api_task).await;
            store.shutdown().await;
            return Err(e.into());
        }
    };

    let (stop_tx, stop_rx) = shutdown::channel();
    let sweeper = tokio::spawn(store::sweeper::run(
        store.clone(),
        cfg.sweep_interval,
        cfg.sweep_batch,
        stop_rx.clone(),
    ));
    let evictor = tokio::spawn(store::budget::run(
        store.clone(),
        cfg.data_dir.clone(),
        stop_rx.clone(),
    ));
    let trimmer = tokio::spawn(crate::alloc::trim_over(
        cfg.hot_cache_size + BASE_MEMORY,
        stop_rx.clone(),
    ));
    let rest_stats = Arc::new(Stats::default());
    let metrics = crate::metrics::registry(
        store.clone(),
        rest_stats.clone(),
        proxy_stats.clone(),
        access_log.clone(),
    );
    let app = api::router(ApiState {
        store: store.clone(),
        stats: rest_stats,
        proxy_stats,
        metrics: Arc::new(metrics),
        limits: Limits {
            max_body: cfg.max_body_size,
            max_key: cfg.max_key_length,
            body_timeout: cfg.client_timeout,
        },
        token: cfg.api_token.as_deref().map(Arc::from),
        hosts: cfg.api_hosts.clone().into(),
        query: cfg.query.clone(),
        // Behind a trusted front without `--site-url` there is no
        // re-warming: the scheme pages are rendered for is not known.
        rewarm: cfg.site.is_some().then(|| {
            Arc::new(crate::proxy::rewarm::Rewarmer::new(
                proxy.clone(),
                cfg.rewarm_concurrency,
            ))
        }),
    });
    let _ = app_cell.set(app);
    let quick = proxy.clone();
    let proxy_task = tokio::spawn(serve(
        "proxy",
        proxy_listener,
        move |peer| {
            let proxy = proxy.clone();
            hyper::service::service_fn(move |req| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, peer).await) }
            })
        },
        cfg.fast_path.then_some(quick),
        limits,
        stop_rx.clone(),
    ));
    health.set(Health::READY);
    tracing::info!(
        api = %api_addr,
        proxy = %proxy_addr,
        upstream = %cfg.upstream,
        data_dir = %cfg.data_dir.display(),
        shards = store.shard_count(),
        "bigcache started"
    );
    // A stable line on stdout for scripts and tests that start bigcache on
    // port 0 and need the address; written once it is ready.
    println!(
        "bigcache listening api={} proxy={}",
        shown(&api_addr),
        shown(&proxy_addr)
    );
    crate::notify::ready();

    stop.as_mut().await;
    tracing::info!("shutting down");
    crate::notify::stopping();
    health.set(Health::DRAINING);
    let _ = stop_tx.send(true);
    let _ = proxy_task.await;
    stop_serving(api_stop_tx, api_task).await;
    let _ = sweeper.await;
    let _ = evictor.await;
    let _ = trimmer.await;
    store.shutdown().await;
    tracing::info!("store closed");
    if let Some(writer) = log_writer {
        // The lines of the last requests, written before the process ends.
        let _ = tokio::task::spawn_blocking(move || writer.close()).await;
    }
    Ok(())
}

/// Tells a listener's serve loop to stop and waits until its connections
/// have drained.
async fn stop_serving(stop: tokio::sync::watch::Sender<bool>, task: tokio::task::JoinHandle<()>) {
    let _ = stop.send(true);
    let _ = task.await;
}

/// Where the process is in its life, for `/livez` and `/readyz`.
#[derive(Default)]
struct Health(std::sync::atomic::AtomicU8);

impl Health {
    const READY: u8 = 1;
    const DRAINING: u8 = 2;

    fn set(&self, state: u8) {
        self.0.store(state, std::sync::atomic::Ordering::Release);
    }

    /// The answer to the health paths, or `None` to let the API answer.
    fn answer(&self, path: &str, open: bool) -> Option<http::Response<axum::body::Body>> {
        let text = |status: u16, body: &'static str| {
            let mut res = http::Response::new(axum::body::Body::from(body));
            *res.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
            Some(res)
        };
        match path {
            "/livez" => text(200, "ok"),
            "/readyz" => match self.0.load(std::sync::atomic::Ordering::Acquire) {
                Health::READY => text(200, "ready"),
                Health::DRAINING => text(503, "shutting down"),
                _ => text(503, "starting: opening the store"),
            },
            _ if !open => Some(Health::starting()),
            _ => None,
        }
    }

    fn starting() -> http::Response<axum::body::Body> {
        let mut res = http::Response::new(axum::body::Body::from(
            r#"{"detail": "starting: the store is being opened"}"#,
        ));
        *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        res
    }
}

/// The sites pages are keyed for (`proxy::site`): the data directory's
/// own, recorded the first time it was opened with site keys as the site
/// configured then (`--site-url`, else the first host, https behind a
/// trusted front), and the aliases.
fn page_sites(
    cfg: &Config,
    hosts: &[String],
) -> Result<crate::proxy::site::Sites, crate::store::StoreError> {
    let configured = match &cfg.site {
        Some(site) => format!("{}://{}", site.scheme, site.host),
        // Behind a trusted front without `--site-url`: its usual TLS.
        None => format!(
            "https://{}",
            hosts.first().map_or("localhost", String::as_str)
        ),
    };
    let recorded = crate::store::layout::page_site(&cfg.data_dir, &configured)?;
    if recorded != configured {
        tracing::info!(%recorded, %configured, "the data directory's own site keeps its pages' keys");
    }
    Ok(crate::proxy::site::Sites::new(
        &recorded,
        cfg.host_aliases.clone(),
    ))
}

/// `--host`, or when none was given the loopback names, bare (as a
/// front on the default port sends them) and with the proxy's port.
fn site_hosts(configured: &[String], proxy_port: Option<u16>) -> Vec<String> {
    if !configured.is_empty() {
        return configured.to_vec();
    }
    ["localhost", "127.0.0.1", "[::1]"]
        .iter()
        .flat_map(|h| {
            let with_port = proxy_port.map(|p| format!("{h}:{p}"));
            std::iter::once(h.to_string()).chain(with_port)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(dir: &std::path::Path) -> Config {
        crate::config::Args::try_parse_from([
            "bigcache",
            "--data-dir",
            dir.to_str().unwrap(),
            "--api-listen",
            "127.0.0.1:0",
            "--proxy-listen",
            "127.0.0.1:0",
            "--upstream",
            "http://127.0.0.1:9",
        ])
        .unwrap()
        .validate()
        .unwrap()
    }

    /// Serves on listeners it was given, stops when its stop future
    /// resolves, and releases the data directory: a second run on it works.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn runs_on_given_listeners_until_stopped_and_releases_its_data() {
        let dir = tempfile::tempdir().unwrap();
        for round in 0..2 {
            let cfg = config(dir.path());
            let listeners = Listeners::bind(&cfg).await.unwrap();
            let api = listeners.api.local_addr().unwrap();
            let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
            let server = tokio::spawn(run(cfg, listeners, Clock::system(), async move {
                let _ = stopped.await;
            }));
            // Live at once; ready, and answering, once the store is open.
            let live = reqwest::get(format!("http://{api}/livez")).await.unwrap();
            assert_eq!(live.status(), 200);
            let mut ready = false;
            for _ in 0..200 {
                let r = reqwest::get(format!("http://{api}/readyz")).await.unwrap();
                if r.status() == 200 {
                    ready = true;
                    break;
                }
                assert_eq!(r.status(), 503);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(ready, "round {round}: never ready");
            let health = reqwest::get(format!("http://{api}/healthz"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            assert_eq!(health, "ok", "round {round}");
            stop.send(()).unwrap();
            server.await.unwrap().unwrap();
        }
    }

    /// The REST port answers while the store opens: `/livez` at once,
    /// `/readyz` and everything else 503 until every shard is open.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn not_ready_until_the_store_is_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        // Many shards, each with its LevelDB: a slow start.
        cfg.shards = 128;
        let listeners = Listeners::bind(&cfg).await.unwrap();
        let api = listeners.api.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(run(cfg, listeners, Clock::system(), async move {
            let _ = stopped.await;
        }));
        let get = |path: &'static str| async move {
            reqwest::get(format!("http://{api}{path}"))
                .await
                .unwrap()
                .status()
                .as_u16()
        };
        assert_eq!(get("/livez").await, 200);
        assert_eq!(get("/readyz").await, 503, "ready before the store was open");
        assert_eq!(get("/stat").await, 503);
        let mut ready = false;
        for _ in 0..1000 {
            if get("/readyz").await == 200 {
                ready = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(ready);
        assert_eq!(get("/stat").await, 200);
        stop.send(()).unwrap();
        server.await.unwrap().unwrap();
    }
}
