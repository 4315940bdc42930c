//! Integration tests: each drives the real `bigcache` binary over real HTTP.
//! One test binary (see `autotests = false` in Cargo.toml) so the crate and
//! its dependencies link once.

mod util;

mod api;
mod durability;
mod origin;
mod proxy;
