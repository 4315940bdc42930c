//! bigcache: a long-lived, disk-backed cache server for Django sites.
//!
//! # Layout
//!
//! - [`store`]: sharded LevelDB, each shard owned by one thread, with page
//!   bodies in append-only blob files, a directory of every entry in RAM
//!   (reads skip the shard thread), a hot tier in RAM, the expiry sweeper and blob collector; the
//!   [`store::PageStore`] trait the proxy talks to, with an in-memory
//!   implementation for tests. Every on-disk byte is specified in
//!   `docs/format.md`.
//! - [`proxy`]: the caching reverse proxy in front of Django, one module
//!   per phase of a request (key, lookup, decide, fetch, store, answer) and
//!   one [`proxy::Decision`] per response.
//! - [`api`]: the REST API on port 36379, compatible with the original
//!   Python server.
//! - [`clock`]: the injected wall clock every lifetime is measured against.
//! - [`ttl`]: lifetimes written as text (`28d`, `1h 30m`, the original's `28ds`).
//! - [`config`]: flags, environment and the config file, validated at
//!   startup.
//! - [`metrics`]: the REST API's counters behind `/stat`, and `/metrics`
//!   (Prometheus) over every layer's counters; [`latency`]: the lock-free
//!   histogram they use.
//! - [`access_log`]: one line per proxied request, off the request path.
//! - [`server`]: serves on bound listeners (each connection's limits in
//!   `server::conn`), health and readiness, runs tasks, orders the
//!   shutdown; [`notify`]: systemd's readiness protocol.
//! - [`shutdown`]: SIGTERM/SIGINT handling.
//! - [`alloc`]: malloc tuning that keeps RSS at what is in use.

pub mod access_log;
pub mod alloc;
pub mod api;
pub mod cli;
pub mod clock;
pub mod config;
pub mod latency;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod sched;
pub mod server;
pub mod shutdown;
pub mod store;
#[cfg(test)]
mod test_alloc;
pub mod ttl;
pub mod warm;
