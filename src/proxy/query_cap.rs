//! `--max-query-variants`: at most N stored query strings per path, the
//! oldest purged when a new one is stored, so `/datasets/?page=1&z=<random>`
//! (a query Django ignores) cannot fill the cache with copies of one page.
//!
//! The variants of one path live on different shards (a key's shard is a
//! hash of the whole target), so they are tracked here, in RAM, in a table
//! bounded in bytes: a path that falls out of it (or every path, after a
//! restart) starts counting again from its next stored variant. The disk
//! budget still bounds what was stored before.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

/// Query strings seen per path, newest last.
type Seen = Arc<VecDeque<Box<str>>>;

#[derive(Clone)]
struct ByLen;

impl quick_cache::Weighter<Box<str>, Seen> for ByLen {
    fn weight(&self, path: &Box<str>, seen: &Seen) -> u64 {
        let queries: usize = seen.iter().map(|q| q.len() + 16).sum();
        (path.len() + queries + 64) as u64
    }
}

pub struct QueryCap {
    per_path: usize,
    paths: quick_cache::sync::Cache<Box<str>, Seen, ByLen>,
    /// Serialises read-modify-write of one path's list (page writes are
    /// misses: rare next to hits, and this is held for microseconds).
    update: Mutex<()>,
}

impl QueryCap {
    /// A cap of `per_path` query strings per path, tracked within `bytes`.
    pub fn new(per_path: usize, bytes: u64) -> QueryCap {
        QueryCap {
            per_path: per_path.max(1),
            paths: quick_cache::sync::Cache::with_weighter(
                (bytes / 1024).max(16) as usize,
                bytes.max(1),
                ByLen,
            ),
            update: Mutex::new(()),
        }
    }

    /// Notes that the page at canonical `target` was stored; returns the
    /// targets of the variants that now exceed the cap, oldest first.
    pub fn stored(&self, target: &str) -> Vec<String> {
        let Some((path, query)) = target.split_once('?') else {
            return Vec::new();
        };
        let Ok(_guard) = self.update.lock() else {
            return Vec::new();
        };
        let mut seen: VecDeque<Box<str>> = self
            .paths
            .get(path)
            .map(|s| (*s).clone())
            .unwrap_or_default();
        // Stored again (refreshed): it counts as the newest, so a flood of
        // new queries purges the stale variants first, not the one in use.
        if let Some(at) = seen.iter().position(|q| &**q == query) {
            let again = seen.remove(at);
            seen.extend(again);
            self.paths.insert(path.into(), Arc::new(seen));
            return Vec::new();
        }
        seen.push_back(query.into());
        let mut over = Vec::new();
        while seen.len() > self.per_path {
            if let Some(old) = seen.pop_front() {
                over.push(format!("{path}?{old}"));
            }
        }
        self.paths.insert(path.into(), Arc::new(seen));
        over
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_query_goes_past_the_cap() {
        let cap = QueryCap::new(2, 1 << 20);
        assert!(cap.stored("/d/?page=1").is_empty());
        assert!(cap.stored("/d/?page=2").is_empty());
        assert!(
            cap.stored("/d/?page=2").is_empty(),
            "stored again: no new variant"
        );
        assert!(cap.stored("/d/").is_empty(), "no query: not counted");
        assert!(cap.stored("/e/?page=1").is_empty(), "another path");
        assert_eq!(cap.stored("/d/?z=9"), ["/d/?page=1"]);
        // page=2 was stored again before z=9: z=9 is now the oldest.
        assert!(cap.stored("/d/?page=2").is_empty());
        assert_eq!(cap.stored("/d/?z=10"), ["/d/?z=9"]);
    }

    #[test]
    fn the_table_stays_within_its_bytes() {
        let cap = QueryCap::new(4, 64 << 10);
        for i in 0..10_000 {
            cap.stored(&format!("/p{i}/?q={i}"));
        }
        assert!(cap.paths.weight() <= 64 << 10);
    }
}
