//! `bigcache warm`: fill the cache before visitors do. After a deploy, a
//! `clear` or a big purge, every visitor would wait for Django; this walks
//! a sitemap (as Django's sitemap framework serves it: a `urlset`, or a
//! `sitemapindex` of them) or a file of paths, and asks the proxy for each
//! page with a bounded number of requests at once, so Django is not
//! flattened.
//!
//! Each page is requested with `HEAD`: the proxy answers a fresh page
//! itself (`X-Cache: HIT`, the origin is not asked, no body crosses), and
//! fills a missing or stale one with a `GET` to Django and stores it. So a
//! second run over the same sitemap costs Django nothing.
//!
//! Every page is requested as a visitor of the site would request it:
//! `--site-url`'s host as `Host` (with its scheme as `X-Forwarded-Proto`),
//! or without it the proxy's own address, plain `http`. A sitemap URL's
//! scheme and host are never forwarded: Django renders sitemap links for
//! whoever fetched the sitemap (`http://127.0.0.1:8000` when it is read
//! from Django directly), and a page rendered for that is not the site's.
//! Only the path and query of a `<loc>` are taken, and only from the
//! sitemap's own host or the site's; an index is followed only to
//! sitemaps on its own host. `X-Forwarded-For` is `unknown`: a warm
//! request is no visitor, and Django must not take it for its own machine.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::server::socket::Dial;
use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

mod sitemap;

pub use sitemap::{Listed, Page, collect_pages, parse_sitemap};

/// Fill the cache from a sitemap or a list of paths.
#[derive(Debug, Parser)]
#[command(name = "bigcache warm")]
pub struct WarmArgs {
    /// Sitemaps (an http:// URL, or a file), or files listing one path or
    /// URL per line. A sitemap index is followed to its sitemaps.
    #[arg(required = true)]
    pub sources: Vec<String>,
    /// bigcache's proxy address, or `unix:/path/to.sock` when it listens
    /// on a Unix socket (the shipped systemd unit's
    /// `unix:/run/bigcache/proxy.sock`).
    #[arg(
        long,
        default_value = "http://127.0.0.1:8080",
        env = "BIGCACHE_WARM_PROXY"
    )]
    pub proxy: String,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 4)]
    pub concurrency: usize,
    /// Most requests started per second (none: as fast as the concurrency
    /// allows).
    #[arg(long)]
    pub rate: Option<f64>,
    /// The site's public URL (`https://www.example.org`): its host goes as
    /// `Host` and `X-Forwarded-Host`, its scheme as `X-Forwarded-Proto`.
    /// Needed behind nginx with TLS; bigcache believes these headers from
    /// a `--trusted-proxy` peer only.
    #[arg(long, env = "BIGCACHE_SITE_URL")]
    pub site_url: Option<String>,
    /// `Host` to send, plain `http` (default: the proxy's address). Use
    /// `--site-url` for a site served over https.
    #[arg(long, conflicts_with = "site_url")]
    pub host: Option<String>,
    /// Time one page may take.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Pages named one by one when they were not stored; the rest are counted.
const SHOWN_UNSTORED: usize = 20;

/// `text` as an error may show it: at most 80 characters, escaped (a
/// sitemap is someone else's content).
fn shown(text: &str) -> String {
    let mut out: String = text.chars().take(80).flat_map(char::escape_debug).collect();
    if text.chars().nth(80).is_some() {
        out.push('…');
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("{0}: {1}")]
    Read(String, std::io::Error),
    #[error("{0}: {1}")]
    Fetch(String, String),
    #[error("{0}: not a sitemap: {1}")]
    Xml(String, String),
    #[error("{0}: not a URL or path bigcache can request")]
    Target(String),
    #[error("--{0}")]
    Flag(&'static str),
}

/// Who the pages are requested for.
#[derive(Debug, Clone)]
pub struct Site {
    /// Sent as `Host` (and `X-Forwarded-Host` with a scheme).
    pub host: String,
    /// `https` or `http`, sent as `X-Forwarded-Proto`: only when the site
    /// was named with `--site-url`.
    pub scheme: Option<&'static str>,
}

impl Site {
    /// From `--site-url`, `--host`, or the proxy's address.
    pub fn from_args(args: &WarmArgs, proxy: &http::uri::Authority) -> Result<Site, WarmError> {
        let Some(url) = &args.site_url else {
            let host = args.host.clone().unwrap_or_else(|| proxy.to_string());
            return Ok(Site { host, scheme: None });
        };
        let bad = WarmError::Flag("site-url must be like https://www.example.org (no path)");
        let uri: Uri = url
            .parse()
            .map_err(|_| WarmError::Flag("site-url must be a URL"))?;
        let scheme = match uri.scheme_str() {
            Some("https") => "https",
            Some("http") => "http",
            _ => return Err(bad),
        };
        match (uri.authority(), uri.path()) {
            (Some(a), "/" | "") if uri.query().is_none() => Ok(Site {
                host: a.as_str().to_ascii_lowercase(),
                scheme: Some(scheme),
            }),
            _ => Err(bad),
        }
    }
}

/// Pages not stored: (path, reason) for the first [`SHOWN_UNSTORED`], and
/// a count per reason.
#[derive(Debug, Default)]
struct Unstored {
    shown: Vec<(String, String)>,
    by_reason: std::collections::BTreeMap<String, u64>,
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Fetched from Django and stored (a stored `MISS`, or a stale copy
    /// refreshed).
    pub warmed: AtomicU64,
    /// Already fresh in the cache (`HIT`): Django was not asked.
    pub fresh: AtomicU64,
    /// Answered but not cacheable (a `BYPASS`, an error status), or
    /// skipped (a URL on another host).
    pub uncached: AtomicU64,
    /// Why pages were not stored.
    unstored: Mutex<Unstored>,
    /// No answer: refused, timed out, or the proxy failed.
    pub failed: AtomicU64,
}

impl Tally {
    fn done(&self) -> u64 {
        self.warmed.load(Relaxed)
            + self.fresh.load(Relaxed)
            + self.uncached.load(Relaxed)
            + self.failed.load(Relaxed)
    }

    /// Notes a page that was not stored, and why.
    fn not_stored(&self, target: &str, why: &str) {
        self.uncached.fetch_add(1, Relaxed);
        if let Ok(mut u) = self.unstored.lock() {
            if u.shown.len() < SHOWN_UNSTORED {
                u.shown.push((target.to_string(), why.to_string()));
            }
            *u.by_reason.entry(why.to_string()).or_default() += 1;
        }
    }

    /// A line per page not stored (the first few), then the count per
    /// reason.
    pub fn unstored_report(&self) -> String {
        let Ok(u) = self.unstored.lock() else {
            return String::new();
        };
        let mut out = String::new();
        for (target, why) in &u.shown {
            out.push_str(&format!("not stored: {target} ({why})\n"));
        }
        if !u.by_reason.is_empty() {
            let by: Vec<String> = u
                .by_reason
                .iter()
                .map(|(why, n)| format!("{n} {why}"))
                .collect();
            out.push_str(&format!("not stored, by reason: {}\n", by.join(", ")));
        }
        out
    }

    pub fn summary(&self, total: usize, took: Duration, stopped: bool) -> String {
        format!(
            "{}{} of {total} pages in {:.1}s: {} warmed, {} already fresh, {} not cacheable, {} failed",
            if stopped { "stopped: " } else { "" },
            self.done(),
            took.as_secs_f64(),
            self.warmed.load(Relaxed),
            self.fresh.load(Relaxed),
            self.uncached.load(Relaxed),
            self.failed.load(Relaxed),
        )
    }
}

type HttpClient = Client<Dial, Empty<Bytes>>;

fn client(dial: Dial) -> HttpClient {
    Client::builder(TokioExecutor::new()).build(dial)
}

/// Requests every page through the proxy; returns when all are done or
/// `stop` resolves (requests in flight finish first).
pub async fn run(
    args: &WarmArgs,
    pages: Vec<Page>,
    tally: Arc<Tally>,
    progress: Option<indicatif::ProgressBar>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<bool, WarmError> {
    if args.concurrency == 0 {
        return Err(WarmError::Flag("concurrency must be at least 1"));
    }
    // A Unix socket (`unix:/run/bigcache/proxy.sock`): requests name
    // `localhost`, one of the default hosts, unless `--host` or
    // `--site-url` says otherwise.
    let (dial, proxy_authority) = match args.proxy.strip_prefix("unix:") {
        Some(path) if !path.is_empty() => (
            Dial::unix(path.into()),
            http::uri::Authority::from_static("localhost"),
        ),
        _ => {
            let bad = "proxy must be a URL like http://127.0.0.1:8080 or unix:/path/to.sock";
            let proxy: Uri = args.proxy.parse().map_err(|_| WarmError::Flag(bad))?;
            let Some(authority) = proxy.authority().cloned() else {
                return Err(WarmError::Flag(bad));
            };
            if proxy.scheme_str() != Some("http") {
                return Err(WarmError::Flag("proxy must be bigcache's http:// address"));
            }
            (Dial::tcp(), authority)
        }
    };
    let pace = match args.rate {
        Some(r) if r.is_finite() && r > 0.0 => Some(Duration::from_secs_f64(1.0 / r)),
        Some(_) => {
            return Err(WarmError::Flag(
                "rate must be a positive number of requests per second",
            ));
        }
        None => None,
    };
    let site = Site::from_args(args, &proxy_authority)?;
    let queue = Arc::new(Mutex::new(VecDeque::from(pages)));
    let next_start = Arc::new(tokio::sync::Mutex::new(Instant::now()));
    let http = client(dial);
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (queue, next_start, http, tally, progress) = (
            queue.clone(),
            next_start.clone(),
            http.clone(),
            tally.clone(),
            progress.clone(),
        );
        let (proxy_authority, site, timeout) =
            (proxy_authority.clone(), site.clone(), args.timeout);
        workers.spawn(async move {
            while let Some(page) = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None) {
                if let Some(pace) = pace {
                    let mut at = next_start.lock().await;
                    tokio::time::sleep_until((*at).into()).await;
                    *at = Instant::now().max(*at) + pace;
                }
                match warm_one(&http, &proxy_authority, &site, &page, timeout).await {
                    Outcome::Warmed => tally.warmed.fetch_add(1, Relaxed),
                    Outcome::Fresh => tally.fresh.fetch_add(1, Relaxed),
                    Outcome::Uncached(why) => {
                        tally.not_stored(&page.target, &why);
                        0
                    }
                    Outcome::Failed(e) => {
                        tracing::warn!(target = %page.target, error = %e, "warming failed");
                        tally.failed.fetch_add(1, Relaxed)
                    }
                };
                if let Some(p) = &progress {
                    p.inc(1);
                }
            }
        });
    }
    let all_done = async { while workers.join_next().await.is_some() {} };
    tokio::pin!(all_done);
    tokio::select! {
        () = &mut all_done => return Ok(false),
        () = stop => {}
    }
    // Stopping: nothing new starts, what is in flight finishes.
    if let Ok(mut q) = queue.lock() {
        q.clear();
    }
    all_done.await;
    Ok(true)
}

enum Outcome {
    Warmed,
    Fresh,
    /// Not stored, and why (bigcache's `detail`, else its `X-Cache`).
    Uncached(String),
    Failed(String),
}

async fn warm_one(
    http: &HttpClient,
    proxy: &http::uri::Authority,
    site: &Site,
    page: &Page,
    timeout: Duration,
) -> Outcome {
    let uri = match Uri::builder()
        .scheme("http")
        .authority(proxy.clone())
        .path_and_query(page.target.as_str())
        .build()
    {
        Ok(u) => u,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let mut req = Request::builder()
        .method(Method::HEAD)
        .uri(uri)
        .header(header::HOST, site.host.as_str())
        .header("x-forwarded-for", "unknown")
        .header(
            header::USER_AGENT,
            concat!("bigcache-warm/", env!("CARGO_PKG_VERSION")),
        );
    if let Some(scheme) = site.scheme {
        req = req
            .header("x-forwarded-host", site.host.as_str())
            .header("x-forwarded-proto", scheme);
    }
    let req = req.body(Empty::new());
    let req = match req {
        Ok(r) => r,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    let res = match tokio::time::timeout(timeout, http.request(req)).await {
        Err(_) => return Outcome::Failed("timed out".into()),
        Ok(Err(e)) => return Outcome::Failed(e.to_string()),
        Ok(Ok(res)) => res,
    };
    let cache = res
        .headers()
        .get("x-cache")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // bigcache's own Cache-Status entry (RFC 9211) is the last; on a miss
    // it says whether the page was stored, and otherwise why not.
    let entry = res
        .headers()
        .get_all("cache-status")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .unwrap_or("")
        .to_string();
    let params = || entry.split(';').map(str::trim);
    let stored = params().any(|p| p == "stored");
    let detail = params()
        .find_map(|p| p.strip_prefix("detail="))
        .map(|d| d.trim_matches('"').to_string());
    let status = res.status();
    // Drain (a HEAD has no body) so the connection is reused.
    let _ = res.into_body().collect().await;
    if status.is_server_error() {
        return Outcome::Failed(format!("HTTP {status}"));
    }
    match cache.as_str() {
        "HIT" => Outcome::Fresh,
        "MISS" if stored => Outcome::Warmed,
        "UPDATING" | "REVALIDATED" => Outcome::Warmed,
        _ => Outcome::Uncached(detail.unwrap_or_else(|| {
            if status.is_success() {
                format!("X-Cache: {}", shown(&cache))
            } else {
                format!("HTTP {}", status.as_u16())
            }
        })),
    }
}

/// The subcommand's entry point: `argv` starts with `warm`.
pub fn main(argv: Vec<std::ffi::OsString>) -> ExitCode {
    let parsed = crate::cli::warm_command()
        .try_get_matches_from(argv)
        .and_then(|m| <WarmArgs as clap::FromArgMatches>::from_arg_matches(&m));
    let args = match parsed {
        Ok(a) => a,
        Err(e) => e.exit(),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bigcache warm: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let started = Instant::now();
        let site = args
            .proxy
            .parse::<Uri>()
            .ok()
            .and_then(|u| u.authority().cloned())
            .ok_or(WarmError::Flag("proxy must be a URL like http://127.0.0.1:8080"))
            .and_then(|proxy| Site::from_args(&args, &proxy));
        let collected = match site {
            Ok(site) => collect_pages(&args.sources, &site.host, args.timeout).await,
            Err(e) => Err(e),
        };
        let pages = match collected {
            Ok((pages, left_out)) => {
                for (what, why) in &left_out {
                    eprintln!("bigcache warm: left out {what}: {why}");
                }
                pages
            }
            Err(e) => {
                eprintln!("bigcache warm: {e}");
                return ExitCode::from(2);
            }
        };
        let total = pages.len();
        let progress = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(total as u64);
            if let Ok(style) = indicatif::ProgressStyle::with_template(
                "{bar:40} {pos}/{len} pages, {per_sec}, ETA {eta}",
            ) {
                bar.set_style(style);
            }
            bar
        });
        let tally = Arc::new(Tally::default());
        let stop = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        let result = run(&args, pages, tally.clone(), progress.clone(), stop).await;
        if let Some(p) = progress {
            p.finish_and_clear();
        }
        match result {
            Ok(stopped) => {
                eprint!("{}", tally.unstored_report());
                println!("{}", tally.summary(total, started.elapsed(), stopped));
                let cached = tally.warmed.load(Relaxed) + tally.fresh.load(Relaxed);
                if stopped {
                    ExitCode::from(130)
                } else if tally.failed.load(Relaxed) > 0 {
                    ExitCode::FAILURE
                } else if total > 0 && cached == 0 {
                    eprintln!(
                        "bigcache warm: no page could be stored (see the reasons above; \
                         unknown_host: pass --site-url, or --host, with a host bigcache's --host lists)"
                    );
                    ExitCode::FAILURE
                } else {
                    ExitCode::SUCCESS
                }
            }
            Err(e) => {
                eprintln!("bigcache warm: {e}");
                ExitCode::from(2)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_site_comes_from_site_url_or_host_or_the_proxy() {
        let args = |extra: &[&str]| {
            let mut argv = vec!["warm", "sitemap.xml"];
            argv.extend_from_slice(extra);
            WarmArgs::try_parse_from(argv).unwrap()
        };
        let proxy: http::uri::Authority = "127.0.0.1:8080".parse().unwrap();
        let s = Site::from_args(&args(&["--site-url", "https://WWW.example.org"]), &proxy).unwrap();
        assert_eq!(
            (s.host.as_str(), s.scheme),
            ("www.example.org", Some("https"))
        );
        let s = Site::from_args(&args(&["--host", "localhost:8080"]), &proxy).unwrap();
        assert_eq!((s.host.as_str(), s.scheme), ("localhost:8080", None));
        let s = Site::from_args(&args(&[]), &proxy).unwrap();
        assert_eq!((s.host.as_str(), s.scheme), ("127.0.0.1:8080", None));
        for bad in ["https://x.org/path", "ftp://x.org", "x.org"] {
            assert!(
                Site::from_args(&args(&["--site-url", bad]), &proxy).is_err(),
                "{bad}"
            );
        }
    }
}
