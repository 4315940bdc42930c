//! bigcache: a long-lived, disk-backed cache server for Django sites.
//!
//! # Layout
//!
//! - [`store`]: sharded LevelDB, each shard owned by one thread; the
//!   versioned record format ([`store::record`]); the key layout and expiry
//!   index ([`store::keys`]); the hot tier; the expiry sweeper.
//! - [`api`]: the REST API on port 36379, compatible with the original
//!   Python server.
//! - [`ttl`]: lifetimes written as text (`28d`, `1h 30m`, the original's `28ds`).
//! - [`config`]: flags and environment, validated at startup.
//! - [`metrics`]: counters behind `/stat`.
//! - [`server`]: binds listeners, runs tasks, orders the shutdown.
//! - [`shutdown`]: SIGTERM/SIGINT handling.

pub mod api;
pub mod config;
pub mod metrics;
pub mod proxy;
pub mod server;
pub mod shutdown;
pub mod store;
pub mod ttl;
