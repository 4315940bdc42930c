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
//! A sitemap's URLs are absolute (`https://www.example.org/dataset/7/`);
//! each request goes to `--proxy` with that URL's path and query, its host
//! as `Host` and `X-Forwarded-Host`, and its scheme as `X-Forwarded-Proto`.
//! bigcache believes those only from a `--trusted-proxy` peer (behind nginx
//! it already trusts 127.0.0.1); otherwise Django renders the page as plain
//! `http`.

use std::collections::VecDeque;
use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http::{Method, Request, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Fill the cache from a sitemap or a list of paths.
#[derive(Debug, Parser)]
#[command(name = "bigcache warm")]
pub struct WarmArgs {
    /// Sitemaps (an http:// URL, or a file), or files listing one path or
    /// URL per line. A sitemap index is followed to its sitemaps.
    #[arg(required = true)]
    pub sources: Vec<String>,
    /// bigcache's proxy address.
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
    /// `Host` for paths given without a host (default: the proxy's).
    #[arg(long)]
    pub host: Option<String>,
    /// Time one page may take.
    #[arg(long, default_value = "120s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// Most sitemaps one run follows, and the most pages it takes: Django's
/// sitemaps hold at most 50,000 URLs each.
const MAX_SITEMAPS: usize = 1000;
const MAX_PAGES: usize = 10_000_000;

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

/// One page to request: where, and what the site calls it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub target: String,
    pub host: Option<String>,
    pub https: bool,
}

impl Page {
    fn from_text(text: &str) -> Result<Page, WarmError> {
        let bad = || WarmError::Target(text.to_string());
        if text.starts_with('/') {
            return Ok(Page {
                target: text.to_string(),
                host: None,
                https: false,
            });
        }
        let uri: Uri = text.parse().map_err(|_| bad())?;
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(bad()),
        };
        let target = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        Ok(Page {
            target,
            host: uri.authority().map(|a| a.to_string()),
            https,
        })
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Tally {
    /// Fetched from Django and stored (a stored `MISS`, or a stale copy
    /// refreshed).
    pub warmed: AtomicU64,
    /// Already fresh in the cache (`HIT`): Django was not asked.
    pub fresh: AtomicU64,
    /// Answered but not cacheable (a `BYPASS`, an error status).
    pub uncached: AtomicU64,
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

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Reads a source: a URL is fetched, anything else is a file.
async fn read_source(
    http: &HttpClient,
    source: &str,
    timeout: Duration,
) -> Result<Vec<u8>, WarmError> {
    if source.starts_with("http://") || source.starts_with("https://") {
        let uri: Uri = source
            .parse()
            .map_err(|_| WarmError::Target(source.to_string()))?;
        if uri.scheme_str() == Some("https") {
            return Err(WarmError::Fetch(
                source.to_string(),
                "https is not supported; fetch the sitemap from Django's or bigcache's http address".into(),
            ));
        }
        let req = Request::get(uri)
            .body(Empty::new())
            .map_err(|e| WarmError::Fetch(source.to_string(), e.to_string()))?;
        let fetched = tokio::time::timeout(timeout, async {
            let res = http.request(req).await.map_err(|e| e.to_string())?;
            if !res.status().is_success() {
                return Err(format!("HTTP {}", res.status()));
            }
            let body = res.into_body().collect().await.map_err(|e| e.to_string())?;
            Ok(body.to_bytes().to_vec())
        })
        .await
        .map_err(|_| "timed out".to_string());
        return fetched
            .and_then(|r| r)
            .map_err(|e| WarmError::Fetch(source.to_string(), e));
    }
    // A sitemap file is small; read it on this thread.
    std::fs::read(PathBuf::from(source)).map_err(|e| WarmError::Read(source.to_string(), e))
}

/// What a sitemap document lists: page URLs (`urlset`) or more sitemaps
/// (`sitemapindex`).
#[derive(Debug, PartialEq, Eq)]
pub enum Listed {
    Pages(Vec<String>),
    Sitemaps(Vec<String>),
}

/// Parses a sitemap (sitemaps.org 0.9): the text of every `<loc>`, and
/// whether the root is an index.
pub fn parse_sitemap(xml: &[u8]) -> Result<Listed, String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(xml);
    let mut index = None;
    let mut in_loc = false;
    let mut locs = Vec::new();
    let mut buf = Vec::new();
    loop {
        match reader
            .read_event_into(&mut buf)
            .map_err(|e| e.to_string())?
        {
            Event::Start(e) => {
                let name = e.local_name();
                let name = name.as_ref();
                if index.is_none() {
                    index = match name {
                        b"urlset" => Some(false),
                        b"sitemapindex" => Some(true),
                        other => {
                            return Err(format!(
                                "the root is <{}>, not <urlset> or <sitemapindex>",
                                String::from_utf8_lossy(other)
                            ));
                        }
                    };
                }
                in_loc = name == b"loc";
            }
            Event::Text(t) if in_loc => {
                let text = t.unescape().map_err(|e| e.to_string())?;
                locs.push(text.trim().to_string());
            }
            Event::CData(t) if in_loc => {
                locs.push(String::from_utf8_lossy(&t).trim().to_string());
            }
            Event::End(_) => in_loc = false,
            Event::Eof => break,
            _ => {}
        }
        buf.clear();
    }
    match index {
        Some(true) => Ok(Listed::Sitemaps(locs)),
        Some(false) => Ok(Listed::Pages(locs)),
        None => Err("empty document".into()),
    }
}

/// Every page the sources name, in order, each once.
pub async fn collect_pages(sources: &[String], timeout: Duration) -> Result<Vec<Page>, WarmError> {
    let http = client();
    let mut pages = Vec::new();
    let mut seen = std::collections::HashSet::new();
    let mut queue: VecDeque<String> = sources.iter().cloned().collect();
    let mut sitemaps = 0;
    while let Some(source) = queue.pop_front() {
        let text = read_source(&http, &source, timeout).await?;
        let listed = if text.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'<') {
            sitemaps += 1;
            if sitemaps > MAX_SITEMAPS {
                return Err(WarmError::Xml(
                    source,
                    format!("more than {MAX_SITEMAPS} sitemaps"),
                ));
            }
            parse_sitemap(&text).map_err(|e| WarmError::Xml(source.clone(), e))?
        } else {
            let lines = String::from_utf8_lossy(&text);
            Listed::Pages(
                lines
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_string)
                    .collect(),
            )
        };
        match listed {
            Listed::Sitemaps(more) => queue.extend(more),
            Listed::Pages(locs) => {
                for loc in locs {
                    let page = Page::from_text(&loc)?;
                    if seen.insert((page.host.clone(), page.target.clone())) {
                        pages.push(page);
                    }
                    if pages.len() > MAX_PAGES {
                        return Err(WarmError::Xml(
                            source,
                            format!("more than {MAX_PAGES} pages"),
                        ));
                    }
                }
            }
        }
    }
    Ok(pages)
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
    let proxy: Uri = args
        .proxy
        .parse()
        .map_err(|_| WarmError::Flag("proxy must be a URL like http://127.0.0.1:8080"))?;
    let Some(proxy_authority) = proxy.authority().cloned() else {
        return Err(WarmError::Flag(
            "proxy must be a URL like http://127.0.0.1:8080",
        ));
    };
    if proxy.scheme_str() != Some("http") {
        return Err(WarmError::Flag("proxy must be bigcache's http:// address"));
    }
    let pace = match args.rate {
        Some(r) if r.is_finite() && r > 0.0 => Some(Duration::from_secs_f64(1.0 / r)),
        Some(_) => {
            return Err(WarmError::Flag(
                "rate must be a positive number of requests per second",
            ));
        }
        None => None,
    };
    let default_host = args
        .host
        .clone()
        .unwrap_or_else(|| proxy_authority.to_string());
    let queue = Arc::new(Mutex::new(VecDeque::from(pages)));
    let next_start = Arc::new(tokio::sync::Mutex::new(Instant::now()));
    let http = client();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..args.concurrency {
        let (queue, next_start, http, tally, progress) = (
            queue.clone(),
            next_start.clone(),
            http.clone(),
            tally.clone(),
            progress.clone(),
        );
        let (proxy_authority, default_host, timeout) =
            (proxy_authority.clone(), default_host.clone(), args.timeout);
        workers.spawn(async move {
            while let Some(page) = queue.lock().map(|mut q| q.pop_front()).unwrap_or(None) {
                if let Some(pace) = pace {
                    let mut at = next_start.lock().await;
                    tokio::time::sleep_until((*at).into()).await;
                    *at = Instant::now().max(*at) + pace;
                }
                let outcome =
                    warm_one(&http, &proxy_authority, &default_host, &page, timeout).await;
                let counter = match outcome {
                    Outcome::Warmed => &tally.warmed,
                    Outcome::Fresh => &tally.fresh,
                    Outcome::Uncached => &tally.uncached,
                    Outcome::Failed(e) => {
                        tracing::warn!(target = %page.target, error = %e, "warming failed");
                        &tally.failed
                    }
                };
                counter.fetch_add(1, Relaxed);
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
    Uncached,
    Failed(String),
}

async fn warm_one(
    http: &HttpClient,
    proxy: &http::uri::Authority,
    default_host: &str,
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
    let host = page.host.as_deref().unwrap_or(default_host);
    let req = Request::builder()
        .method(Method::HEAD)
        .uri(uri)
        .header(header::HOST, host)
        .header("x-forwarded-host", host)
        .header(
            "x-forwarded-proto",
            if page.https { "https" } else { "http" },
        )
        .header(
            header::USER_AGENT,
            concat!("bigcache-warm/", env!("CARGO_PKG_VERSION")),
        )
        .body(Empty::new());
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
    // it says whether the page was stored.
    let stored = res
        .headers()
        .get_all("cache-status")
        .iter()
        .next_back()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.rsplit(',').next())
        .is_some_and(|entry| entry.split(';').any(|p| p.trim() == "stored"));
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
        _ => Outcome::Uncached,
    }
}

/// The subcommand's entry point: `argv` starts with `warm`.
pub fn main(argv: Vec<std::ffi::OsString>) -> ExitCode {
    let args = match WarmArgs::try_parse_from(argv) {
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
        let pages = match collect_pages(&args.sources, args.timeout).await {
            Ok(p) => p,
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
                println!("{}", tally.summary(total, started.elapsed(), stopped));
                if stopped {
                    ExitCode::from(130)
                } else if tally.failed.load(Relaxed) > 0 {
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
    fn sitemaps_and_indexes_as_django_writes_them() {
        let urlset = br#"<?xml version="1.0" encoding="UTF-8"?>
<urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9" xmlns:xhtml="http://www.w3.org/1999/xhtml">
<url><loc>https://www.example.org/dataset/1/</loc><lastmod>2026-11-30</lastmod></url>
<url><loc>https://www.example.org/datasets/?page=2&amp;sort=name</loc></url>
</urlset>"#;
        assert_eq!(
            parse_sitemap(urlset).unwrap(),
            Listed::Pages(vec![
                "https://www.example.org/dataset/1/".into(),
                "https://www.example.org/datasets/?page=2&sort=name".into()
            ])
        );
        let index = br#"<?xml version="1.0"?><sitemapindex xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">
<sitemap><loc>http://localhost/sitemap-datasets.xml?p=2</loc></sitemap></sitemapindex>"#;
        assert_eq!(
            parse_sitemap(index).unwrap(),
            Listed::Sitemaps(vec!["http://localhost/sitemap-datasets.xml?p=2".into()])
        );
        assert!(parse_sitemap(b"<html><body>no</body></html>").is_err());
        assert!(
            parse_sitemap(b"<urlset><url><loc>x</loc>")
                .is_ok_and(|l| l == Listed::Pages(vec!["x".into()]))
        );
    }

    #[test]
    fn page_targets_keep_path_query_host_and_scheme() {
        let p = Page::from_text("https://www.example.org/a/?b=1").unwrap();
        assert_eq!(
            (p.target.as_str(), p.host.as_deref(), p.https),
            ("/a/?b=1", Some("www.example.org"), true)
        );
        let p = Page::from_text("/only/path").unwrap();
        assert_eq!(
            (p.target.as_str(), p.host, p.https),
            ("/only/path", None, false)
        );
        assert!(Page::from_text("ftp://x/").is_err());
        assert!(Page::from_text("dataset/1").is_err());
    }
}
