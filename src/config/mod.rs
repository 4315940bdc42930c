//! Command-line flags (each also readable from a `BIGCACHE_*` variable),
//! validated into a [`Config`] before anything starts: a bad flag fails at
//! startup with a message, never later.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;

use crate::proxy::forward::TrustedProxies;
pub use crate::server::socket::Listen;
use crate::store::budget::MinFree;

/// bigcache: a long-lived, disk-backed cache for Django sites.
///
/// Serves the REST cache API (compatible with the original Python bigcache)
/// and stores everything in LevelDB under --data-dir.
#[derive(Debug, Parser)]
#[command(version = crate::cli::VERSION, about, long_about = None)]
pub struct Args {
    /// Directory holding the LevelDB shards; created if missing.
    #[arg(
        long,
        help_heading = "Storage",
        env = "BIGCACHE_DATA_DIR",
        default_value = "./data"
    )]
    pub data_dir: PathBuf,

    /// Address of the REST API, or `unix:/path/to.sock` for a Unix socket
    /// (mode 0660: its owner and group may connect).
    #[arg(
        long,
        help_heading = "REST API",
        env = "BIGCACHE_API_LISTEN",
        default_value = "127.0.0.1:36379"
    )]
    pub api_listen: Listen,

    /// Require `Authorization: Bearer <token>` on the REST API (all but
    /// /docs, /openapi.json and /healthz).
    #[arg(
        long,
        help_heading = "REST API",
        env = "BIGCACHE_API_TOKEN",
        hide_env_values = true
    )]
    pub api_token: Option<String>,

    /// Allow the REST API on a non-loopback address without --api-token.
    /// Anyone who reaches it can then read, overwrite and purge the cache.
    #[arg(long, help_heading = "REST API", env = "BIGCACHE_API_ALLOW_PUBLIC")]
    pub api_allow_public: bool,

    /// Host names the REST API answers to without --api-token, beside IP
    /// addresses and localhost (any other name could be a DNS-rebinding web
    /// page). Repeat or separate with commas.
    #[arg(
        long,
        help_heading = "REST API",
        env = "BIGCACHE_API_HOST",
        value_delimiter = ','
    )]
    pub api_host: Vec<String>,

    /// Largest request body the REST API accepts (e.g. 16MiB, 512KiB, 1000000).
    #[arg(long, help_heading = "REST API", env = "BIGCACHE_MAX_BODY_SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub max_body_size: u64,

    /// Longest key, in bytes after percent-decoding.
    #[arg(
        long,
        help_heading = "REST API",
        env = "BIGCACHE_MAX_KEY_LENGTH",
        default_value_t = 4096
    )]
    pub max_key_length: usize,

    /// LevelDB shards (each with its own thread) for a new data directory;
    /// an existing directory keeps the count it was created with.
    #[arg(long, help_heading = "Storage", env = "BIGCACHE_SHARDS", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub shards: u16,

    /// fsync the blob file and LevelDB's files before acknowledging each
    /// write, so acknowledged writes survive a power loss (without it they
    /// survive a crash of the process, not of the machine). Costs a disk
    /// flush per write: see "Durability" in docs/storage.md.
    #[arg(long, help_heading = "Storage", env = "BIGCACHE_SYNC")]
    pub sync: bool,

    /// RAM budget for the hot tier of recently used entries (0 disables it).
    #[arg(long, help_heading = "Storage", env = "BIGCACHE_HOT_CACHE_SIZE", default_value = "128MiB", value_parser = parse_size)]
    pub hot_cache_size: u64,

    /// Most bytes the data directory may take on disk (e.g. 200GiB); over
    /// it, bigcache evicts (expired entries first, then what was not read
    /// lately). Default: half of the filesystem's size when the directory
    /// was first used (recorded in it). 0: no limit.
    #[arg(long, help_heading = "Storage", env = "BIGCACHE_MAX_DISK", value_parser = parse_size)]
    pub max_disk: Option<u64>,

    /// Free space to keep on the data directory's filesystem, as a share
    /// (5%) or a size (10GiB): below it, bigcache evicts. 0: none.
    #[arg(long, help_heading = "Storage", env = "BIGCACHE_MIN_FREE", default_value = "5%", value_parser = parse_min_free)]
    pub min_free: MinFree,

    /// How often the sweeper removes expired entries nobody read.
    #[arg(long, help_heading = "Storage", env = "BIGCACHE_SWEEP_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub sweep_interval: Duration,

    /// Expired entries removed per shard per sweep step; bounds the pause.
    #[arg(
        long,
        help_heading = "Storage",
        env = "BIGCACHE_SWEEP_BATCH",
        default_value_t = 1000
    )]
    pub sweep_batch: usize,

    /// Address of the caching reverse proxy (what users' browsers reach,
    /// usually through nginx), or `unix:/path/to.sock` for a Unix socket
    /// (mode 0666; its peer counts as 127.0.0.1 for --trusted-proxy).
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_PROXY_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub proxy_listen: Listen,

    /// The site behind the proxy (Django), as an http:// URL.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_UPSTREAM",
        default_value = "http://127.0.0.1:8000"
    )]
    pub upstream: http::Uri,

    /// Time allowed to connect to the upstream.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_UPSTREAM_CONNECT_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub upstream_connect_timeout: Duration,

    /// Time allowed for the upstream's response head, again for a
    /// cacheable body to arrive in full, and for any pause inside a body
    /// streamed through.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_UPSTREAM_TIMEOUT", default_value = "60s", value_parser = humantime::parse_duration)]
    pub upstream_timeout: Duration,

    /// Largest response body the proxy stores; larger ones stream through.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_MAX_ENTRY_SIZE", default_value = "8MiB", value_parser = parse_size)]
    pub max_entry_size: u64,

    /// How long past its lifetime a page is served stale while one request
    /// refreshes it, when the response has no stale-while-revalidate.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_GRACE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub grace: Duration,

    /// How long past its lifetime a page may be served when the upstream is
    /// down or answers 5xx, when the response has no stale-if-error.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_STALE_IF_ERROR", default_value = "1h", value_parser = humantime::parse_duration)]
    pub stale_if_error: Duration,

    /// Cookie names that mark a logged-in session: requests carrying one
    /// bypass the cache both ways. Repeat or separate with commas.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_SESSION_COOKIE",
        default_value = "sessionid",
        value_delimiter = ','
    )]
    pub session_cookie: Vec<String>,

    /// The site's hosts, as clients send them in `Host` (a port included
    /// when it is not the default: `localhost:8080`); each keeps its own
    /// copy of each page (see --host-alias). Requests for any other
    /// `Host` bypass the cache: a forged `Host` must not make Django render
    /// links to another site into a page everyone is then served. Repeat
    /// or separate with commas. Default: localhost, 127.0.0.1 and [::1],
    /// bare and with the proxy's port.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_HOST",
        value_delimiter = ','
    )]
    pub host: Vec<String>,

    /// Hosts whose pages are another host's, as `alias=host` (both as
    /// clients send them): Django renders the same page for both. Without
    /// one, every host, and each scheme, keeps its own copy of each page.
    /// Repeat or separate with commas.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_HOST_ALIAS",
        value_delimiter = ','
    )]
    pub host_alias: Vec<String>,

    /// Variants (one per distinct value of the headers a page varies on)
    /// kept per page; a new one beyond it replaces the oldest.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_MAX_VARIANTS",
        default_value_t = 32
    )]
    pub max_variants: usize,

    /// Query strings stored per path: storing another purges the oldest,
    /// so `?z=<random>` (a query the site ignores) cannot fill the cache
    /// with copies of one page. 0, the default: no cap.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_MAX_QUERY_VARIANTS",
        default_value_t = 0
    )]
    pub max_query_variants: usize,

    /// Query parameters that name no other page (campaign and click
    /// tracking): removed from the cache key and from the request Django
    /// is sent, so each campaign click is not a new render. `utm_*` names
    /// every parameter starting `utm_`. Repeat or separate with commas;
    /// empty (`--strip-query-params=`): none.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_STRIP_QUERY_PARAMS",
        value_delimiter = ',',
        default_values = crate::proxy::query::DEFAULT_STRIP
    )]
    pub strip_query_params: Vec<String>,

    /// Cookies set and read by scripts in the browser (analytics), left out
    /// of a cacheable request's `Cookie`: Django is not sent them and
    /// `Vary: Cookie` does not key on them, so anonymous visitors share a
    /// copy. `_ga_*` names every cookie starting `_ga_`. Repeat or separate
    /// with commas; empty (`--ignore-cookies=`): none.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_IGNORE_COOKIES",
        value_delimiter = ',',
        default_values = crate::proxy::cookies::DEFAULT_IGNORE
    )]
    pub ignore_cookies: Vec<String>,

    /// Put the query's other parameters in order by name, in the key and
    /// in the request Django is sent: `?b=2&a=1` and `?a=1&b=2` are one
    /// page. Safe only when no view reads the parameters' order (Django's
    /// `request.GET` does not, but `request.META["QUERY_STRING"]` does).
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_SORT_QUERY")]
    pub sort_query: bool,

    /// Cache `Vary: Cookie` responses per cookie value. Off by default:
    /// only the copy for requests without cookies is stored, since every
    /// visitor's cookies differ (one copy per visitor) and any client can
    /// mint cookie values at will.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_CACHE_VARY_COOKIE")]
    pub cache_vary_cookie: bool,

    /// Pass the upstream's `Surrogate-Key` and `xkey` headers on to
    /// clients (for a CDN in front that purges by the same tags). Off by
    /// default: tags name the site's internals, and bigcache indexes them
    /// either way.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_KEEP_TAG_HEADERS")]
    pub keep_tag_headers: bool,

    /// Brotli quality (0 to 11) text pages are stored at, and sent in to
    /// every client that accepts br (others get them decoded). A fetched
    /// page is stored as sent, then encoded on a thread of its own at this
    /// quality, 5 at most; above 5, a page read again is encoded once more
    /// at this quality, a few pages a second, on idle CPU.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_COMPRESS_LEVEL",
        default_value_t = 5,
        value_parser = clap::value_parser!(u32).range(0..=11)
    )]
    pub compress_level: u32,

    /// Store and send pages as Django sent them, never in bigcache's own
    /// coding (`--compress-level`).
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_NO_COMPRESS")]
    pub no_compress: bool,

    /// RAM for decoded copies of brotli pages, kept for clients that do not
    /// accept br (scripts, HTTP libraries) so a page they read again is not
    /// decoded again; besides `--hot-cache-size` (0 disables it).
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_DECODED_CACHE_SIZE", default_value = "32MiB", value_parser = parse_size)]
    pub decoded_cache_size: u64,

    /// Serve every proxied request through hyper, leaving out bigcache's
    /// own HTTP/1.1 path (which answers hits from borrowed request heads).
    /// For troubleshooting and comparison: the answers are the same, only
    /// slower.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_NO_FAST_PATH")]
    pub no_fast_path: bool,

    /// The site's public URL (`https://www.example.org`). Pages re-warmed
    /// after a soft purge (`X-Bigcache-Purge: soft, warm`) are requested
    /// as its visitors request them: its host as `Host`, its scheme as
    /// `X-Forwarded-Proto`. Default: `http://` and the first `--host`, or
    /// `localhost`; behind a `--trusted-proxy` there is none (the front's
    /// scheme cannot be guessed), and re-warming needs it set.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_SITE_URL")]
    pub site_url: Option<http::Uri>,

    /// Pages re-warmed at once after soft purges, over all of them.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_REWARM_CONCURRENCY",
        default_value_t = 4
    )]
    pub rewarm_concurrency: usize,

    /// Content codings the upstream can produce, preferred first (e.g.
    /// `br,gzip`). A cacheable request's Accept-Encoding is replaced by the
    /// first of them the client accepts (or removed), so a page varying on
    /// it is stored once per coding, not once per browser's spelling.
    /// Django's GZipMiddleware makes gzip. Empty: passed on as sent.
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_ACCEPT_ENCODING",
        value_delimiter = ',',
        default_value = "gzip"
    )]
    pub accept_encoding: Vec<String>,

    /// Peers whose X-Forwarded-For/-Host/-Proto and Forwarded headers are
    /// believed: the nginx in front, e.g. 127.0.0.1/32. Anyone else's are
    /// replaced. Repeat or separate with commas; none by default (not even
    /// loopback).
    #[arg(
        long,
        help_heading = "Proxy",
        env = "BIGCACHE_TRUSTED_PROXY",
        value_delimiter = ','
    )]
    pub trusted_proxy: Vec<String>,

    /// Longest request target (path and query) the proxy accepts; longer
    /// ones are answered 414.
    #[arg(long, help_heading = "Proxy", env = "BIGCACHE_MAX_TARGET_LENGTH", default_value = "8KiB", value_parser = parse_size)]
    pub max_target_length: u64,

    /// Time a client has to send a request's headers (both listeners), and
    /// a REST request's body; also how long an idle keep-alive connection
    /// stays open.
    #[arg(long, help_heading = "Limits", env = "BIGCACHE_CLIENT_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub client_timeout: Duration,

    /// Open connections per listener (REST API, proxy); beyond it new ones
    /// wait to be accepted.
    #[arg(
        long,
        help_heading = "Limits",
        env = "BIGCACHE_MAX_CONNECTIONS",
        default_value_t = 4096
    )]
    pub max_connections: usize,

    /// Log filter, e.g. `info`, `debug`, `bigcache=debug,info`.
    #[arg(
        long,
        help_heading = "Logging",
        env = "BIGCACHE_LOG",
        default_value = "info"
    )]
    pub log: String,

    /// Write one line per proxied request to this file (appending), or to
    /// stdout with `-`: the combined log's fields plus cache status,
    /// reason and time. Off by default.
    #[arg(long, help_heading = "Logging", env = "BIGCACHE_ACCESS_LOG")]
    pub access_log: Option<String>,

    /// Read settings from this TOML file: every flag as a key (`upstream =
    /// "http://127.0.0.1:8000"`, `max-variants = 16`, `sync = true`).
    /// Flags win over BIGCACHE_* variables, which win over the file.
    #[arg(long, help_heading = "Configuration", env = "BIGCACHE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Print the effective configuration (as a config file) and exit.
    #[arg(long, help_heading = "Configuration")]
    pub print_config: bool,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub api_listen: Listen,
    pub api_token: Option<String>,
    pub api_hosts: Vec<String>,
    pub max_body_size: usize,
    pub max_key_length: usize,
    pub shards: usize,
    pub hot_cache_size: u64,
    /// `None`: the data directory's recorded default; `Some(0)`: no limit.
    pub max_disk: Option<u64>,
    pub min_free: MinFree,
    pub sweep_interval: Duration,
    pub sweep_batch: usize,
    pub proxy_listen: Listen,
    pub upstream: http::Uri,
    pub upstream_connect_timeout: Duration,
    pub upstream_timeout: Duration,
    pub max_entry_size: usize,
    pub grace: Duration,
    pub stale_if_error: Duration,
    pub session_cookies: Vec<String>,
    pub trusted_proxies: TrustedProxies,
    pub max_target_length: usize,
    pub max_variants: usize,
    pub max_query_variants: usize,
    /// `--strip-query-params` and `--sort-query`.
    pub query: crate::proxy::query::QueryRules,
    /// `--ignore-cookies`.
    pub cookies: crate::proxy::cookies::CookieRules,
    /// `--compress-level`; `None` with `--no-compress`.
    pub compress: Option<u32>,
    pub decoded_cache_size: u64,
    pub sync: bool,
    pub access_log: Option<crate::access_log::Target>,
    pub cache_vary_cookie: bool,
    pub keep_tag_headers: bool,
    /// bigcache's own HTTP/1.1 path serves the proxy (`server::h1`).
    pub fast_path: bool,
    /// Where re-warm requests claim to come from (`--site-url`); `None`
    /// behind a trusted front without `--site-url`, whose scheme bigcache
    /// cannot guess: `warm` is then refused.
    pub site: Option<crate::proxy::rewarm::Site>,
    pub rewarm_concurrency: usize,
    pub encodings: Vec<String>,
    pub max_connections: usize,
    pub client_timeout: Duration,
    /// `--host`, in `proxy::key::host_name` form; empty means the defaults
    /// (`server::run` adds the proxy's bound port to them).
    pub hosts: Vec<String>,
    /// `--host-alias`, as (alias, host) in that form.
    pub host_aliases: Vec<(String, String)>,
}

/// The longest `--upstream-timeout`: a request that takes longer is not a
/// page render but a stuck upstream, and holds a connection meanwhile.
pub const MAX_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "--api-listen {0} is reachable from other machines and no --api-token is set: \
         anyone could read, overwrite and purge the cache. Set --api-token \
         (BIGCACHE_API_TOKEN), or pass --api-allow-public if a firewall guards the port"
    )]
    PublicWithoutToken(Listen),
    #[error("--api-token must not be empty")]
    EmptyToken,
    #[error("--{0} must be greater than zero")]
    Zero(&'static str),
    #[error("--upstream {0}: expected an http:// URL with a host, like http://127.0.0.1:8000")]
    Upstream(String),
    #[error(
        "--site-url {0}: expected http:// or https:// and a host (one of --host, when given), without a path, like https://www.example.org"
    )]
    SiteUrl(String),
    #[error("--trusted-proxy {0}")]
    TrustedProxy(String),
    #[error("--host {0:?}: expected a host name or address, with an optional :port")]
    Host(String),
    #[error("--host-alias {0:?}: expected alias=host, like example.org=www.example.org")]
    HostAlias(String),
    #[error(
        "--upstream-timeout must be at most {}",
        humantime::format_duration(MAX_UPSTREAM_TIMEOUT)
    )]
    UpstreamTimeoutTooLong,
}

pub mod file;

impl Args {
    pub fn validate(self) -> Result<Config, ConfigError> {
        if self.api_token.as_deref() == Some("") {
            return Err(ConfigError::EmptyToken);
        }
        if !self.api_listen.is_local() && self.api_token.is_none() && !self.api_allow_public {
            return Err(ConfigError::PublicWithoutToken(self.api_listen));
        }
        for (name, v) in [
            ("max-body-size", self.max_body_size as usize),
            ("max-key-length", self.max_key_length),
            ("sweep-batch", self.sweep_batch),
            ("max-variants", self.max_variants),
            ("max-connections", self.max_connections),
            ("rewarm-concurrency", self.rewarm_concurrency),
        ] {
            if v == 0 {
                return Err(ConfigError::Zero(name));
            }
        }
        for (name, d) in [
            ("sweep-interval", self.sweep_interval),
            ("upstream-connect-timeout", self.upstream_connect_timeout),
            ("upstream-timeout", self.upstream_timeout),
            ("client-timeout", self.client_timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if self.upstream.scheme_str() != Some("http") || self.upstream.host().is_none() {
            return Err(ConfigError::Upstream(self.upstream.to_string()));
        }
        if self.upstream_timeout > MAX_UPSTREAM_TIMEOUT {
            return Err(ConfigError::UpstreamTimeoutTooLong);
        }
        if self.max_target_length == 0 {
            return Err(ConfigError::Zero("max-target-length"));
        }
        let hosts = self
            .host
            .iter()
            .map(|h| h.trim())
            .filter(|h| !h.is_empty())
            .map(|h| {
                crate::proxy::key::host_name(h)
                    .map(|n| n.into_owned())
                    .ok_or_else(|| ConfigError::Host(h.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut hosts = hosts;
        let mut host_aliases = Vec::new();
        for pair in self.host_alias.iter().filter(|a| !a.trim().is_empty()) {
            let named = pair.split_once('=').and_then(|(a, h)| {
                let a = crate::proxy::key::host_name(a.trim())?.into_owned();
                let h = crate::proxy::key::host_name(h.trim())?.into_owned();
                Some((a, h))
            });
            let Some((alias, host)) = named else {
                return Err(ConfigError::HostAlias(pair.clone()));
            };
            // An alias is one of the site's hosts too.
            if !hosts.is_empty() && !hosts.contains(&alias) {
                hosts.push(alias.clone());
            }
            host_aliases.push((alias, host));
        }
        let trusted_proxies = self
            .trusted_proxy
            .iter()
            .filter(|c| !c.trim().is_empty())
            .map(|c| c.parse())
            .collect::<Result<Vec<_>, _>>()
            .map_err(ConfigError::TrustedProxy)?;
        let site = match &self.site_url {
            Some(u) => {
                let scheme = u.scheme_str().filter(|s| *s == "http" || *s == "https");
                let host = u
                    .authority()
                    .and_then(|a| crate::proxy::key::host_name(a.as_str()))
                    .map(|h| h.into_owned());
                match (scheme, host) {
                    // Re-warm requests must be ones the site serves: its
                    // host one of `--host`, when those are named.
                    (Some(scheme), Some(host))
                        if (u.path() == "/" || u.path().is_empty())
                            && (hosts.is_empty() || hosts.contains(&host)) =>
                    {
                        Some(crate::proxy::rewarm::Site {
                            scheme: scheme.to_string(),
                            host,
                        })
                    }
                    _ => return Err(ConfigError::SiteUrl(u.to_string())),
                }
            }
            None if !trusted_proxies.is_empty() => None,
            None => Some(crate::proxy::rewarm::Site {
                scheme: "http".into(),
                host: hosts.first().cloned().unwrap_or_else(|| "localhost".into()),
            }),
        };
        Ok(Config {
            data_dir: self.data_dir,
            api_listen: self.api_listen.clone(),
            api_token: self.api_token,
            api_hosts: self
                .api_host
                .into_iter()
                .map(|h| h.trim().trim_end_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            max_body_size: usize::try_from(self.max_body_size).unwrap_or(usize::MAX),
            max_key_length: self.max_key_length,
            shards: usize::from(self.shards),
            hot_cache_size: self.hot_cache_size,
            max_disk: self.max_disk,
            min_free: self.min_free,
            sweep_interval: self.sweep_interval,
            sweep_batch: self.sweep_batch,
            proxy_listen: self.proxy_listen.clone(),
            upstream: self.upstream,
            upstream_connect_timeout: self.upstream_connect_timeout,
            upstream_timeout: self.upstream_timeout,
            max_entry_size: usize::try_from(self.max_entry_size).unwrap_or(usize::MAX),
            grace: self.grace,
            stale_if_error: self.stale_if_error,
            session_cookies: self
                .session_cookie
                .into_iter()
                .map(|c| c.trim().to_string())
                .filter(|c| !c.is_empty())
                .collect(),
            trusted_proxies: TrustedProxies(trusted_proxies),
            max_target_length: usize::try_from(self.max_target_length).unwrap_or(usize::MAX),
            max_variants: self.max_variants,
            max_query_variants: self.max_query_variants,
            query: crate::proxy::query::QueryRules::new(&self.strip_query_params, self.sort_query),
            cookies: crate::proxy::cookies::CookieRules::new(&self.ignore_cookies),
            compress: (!self.no_compress).then_some(self.compress_level),
            decoded_cache_size: self.decoded_cache_size,
            sync: self.sync,
            access_log: self
                .access_log
                .as_deref()
                .map(crate::access_log::Target::parse),
            cache_vary_cookie: self.cache_vary_cookie,
            keep_tag_headers: self.keep_tag_headers,
            fast_path: !self.no_fast_path,
            site,
            rewarm_concurrency: self.rewarm_concurrency,
            encodings: self
                .accept_encoding
                .iter()
                .map(|c| c.trim().to_ascii_lowercase())
                .filter(|c| !c.is_empty())
                .collect(),
            max_connections: self.max_connections,
            client_timeout: self.client_timeout,
            hosts,
            host_aliases,
        })
    }
}

/// A byte size: a plain number, or a number with B, KB/KiB, MB/MiB, GB/GiB
/// (decimal and binary suffixes both mean powers of 1024 here, as in nginx).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size like 16MiB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (use KiB, MiB, GiB or TiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// `--min-free`: a percentage or a size.
fn parse_min_free(s: &str) -> Result<MinFree, String> {
    MinFree::parse(s, parse_size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100"), Ok(100));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("2GB"), Ok(2 << 30));
        assert!(parse_size("lots").is_err());
        assert_eq!(parse_size("2TiB"), Ok(2 << 40));
        assert!(parse_size("5PB").is_err());
    }

    fn args(extra: &[&str]) -> Args {
        let mut v = vec!["bigcache"];
        v.extend_from_slice(extra);
        Args::try_parse_from(v).unwrap()
    }

    #[test]
    fn public_api_needs_a_token() {
        assert!(matches!(
            args(&["--api-listen", "0.0.0.0:36379"]).validate(),
            Err(ConfigError::PublicWithoutToken(_))
        ));
        assert!(
            args(&["--api-listen", "0.0.0.0:36379", "--api-token", "s3cret"])
                .validate()
                .is_ok()
        );
        assert!(
            args(&["--api-listen", "0.0.0.0:36379", "--api-allow-public"])
                .validate()
                .is_ok()
        );
        assert!(args(&[]).validate().is_ok());
    }

    #[test]
    fn upstream_must_be_plain_http() {
        assert!(matches!(
            args(&["--upstream", "https://example.org"]).validate(),
            Err(ConfigError::Upstream(_))
        ));
        assert!(matches!(
            args(&["--upstream", "/just/a/path"]).validate(),
            Err(ConfigError::Upstream(_))
        ));
        let cfg = args(&["--session-cookie", "sessionid, my_session"])
            .validate()
            .unwrap();
        assert_eq!(cfg.session_cookies, ["sessionid", "my_session"]);
    }

    #[test]
    fn trusted_proxies_and_bounds() {
        let cfg = args(&["--trusted-proxy", "127.0.0.1/32, ::1"])
            .validate()
            .unwrap();
        assert!(cfg.trusted_proxies.trusts("127.0.0.1".parse().unwrap()));
        assert!(cfg.trusted_proxies.trusts("::1".parse().unwrap()));
        assert!(!cfg.trusted_proxies.trusts("127.0.0.2".parse().unwrap()));
        assert!(
            !args(&[])
                .validate()
                .unwrap()
                .trusted_proxies
                .trusts("127.0.0.1".parse().unwrap())
        );
        assert!(matches!(
            args(&["--trusted-proxy", "nginx"]).validate(),
            Err(ConfigError::TrustedProxy(_))
        ));
        assert!(matches!(
            args(&["--upstream-timeout", "2h"]).validate(),
            Err(ConfigError::UpstreamTimeoutTooLong)
        ));
        assert_eq!(args(&[]).validate().unwrap().max_target_length, 8192);
    }
}
