//! Integration tests: the real `bigcache` binary (or its server, in this
//! process, on a manual clock) over real HTTP, and property tests of the
//! parsers a request goes through.
//! One test binary (see `autotests = false` in Cargo.toml) so the crate and
//! its dependencies link once.

mod util;

mod api;
mod budget;
mod cli;
mod coding;
mod config;
mod docs;
mod durability;
mod esi;
mod faults;
mod normalise;
mod origin;
mod paths;
mod props;
mod proxy;
mod quick;
mod sites;
mod tags;
mod warm;
