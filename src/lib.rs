//! bigcache: a long-lived, disk-backed cache server for Django sites.
//!
//! # Layout
//!
//! - [`store`]: sharded LevelDB, each shard owned by one thread, with page
//!   bodies in append-only blob files and a read mirror per shard; the
//!   versioned on-disk formats ([`store::record`]); the key layout and
//!   expiry index ([`store::keys`]); the hot tier; the expiry sweeper and
//!   blob collector.
//! - [`proxy`]: the caching reverse proxy in front of Django.
//! - [`api`]: the REST API on port 36379, compatible with the original
//!   Python server.
//! - [`ttl`]: lifetimes written as text (`28d`, `1h 30m`, the original's `28ds`).
//! - [`config`]: flags and environment, validated at startup.
//! - [`metrics`]: counters behind `/stat`.
//! - [`server`]: binds listeners, runs tasks, orders the shutdown.
//! - [`shutdown`]: SIGTERM/SIGINT handling.
//! - [`alloc`]: malloc tuning that keeps RSS at what is in use.

pub mod alloc;
pub mod api;
pub mod clock;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod ttl;
