//! Operations over many entries: each shard walks its part in steps, the
//! shards in parallel, with other commands taking their turn between
//! steps (purges by prefix or tag, listings, counts, the expiry sweep).

use tokio::sync::oneshot;

use super::command::{Command, KeysPage, PrefixStep};
use super::{COLLECT_STEP, Namespace, Store, StoreError, keys};

/// Entries one step of a prefix purge deletes in one shard.
pub const PREFIX_STEP: usize = 2000;

/// Index rows one step of a tag purge takes per shard. Smaller than a
/// prefix step: each row costs a point read of its page (a prefix step
/// finds its entries by iteration), about 20 to 300 µs each measured.
pub const TAG_STEP: usize = 500;

/// Pages one soft purge lists for re-warming, at most: beyond it the rest
/// are refreshed by their next request, as without re-warming.
pub const MAX_MARKED: usize = 100_000;

/// Bytes of keys one soft purge lists, at most (keys are up to
/// `--max-target-length` each).
pub const MAX_MARKED_BYTES: usize = 32 << 20;

/// What a purge reached.
#[derive(Debug, Default)]
pub struct Purged {
    /// Live entries deleted, or (soft) pages marked stale.
    pub count: u64,
    /// A soft purge's pages (full keys) when asked to list them, at most
    /// [`MAX_MARKED`] and [`MAX_MARKED_BYTES`].
    pub marked: Vec<Vec<u8>>,
    marked_bytes: usize,
    /// Keep the pages the steps marked (for re-warming).
    listing: bool,
}

impl Purged {
    pub(super) fn listing(listing: bool) -> Purged {
        Purged {
            listing,
            ..Purged::default()
        }
    }

    pub(super) fn add(&mut self, step: PrefixStep) {
        self.count += step.count;
        if !self.listing {
            return;
        }
        for key in step.marked {
            if self.marked.len() >= MAX_MARKED || self.marked_bytes + key.len() > MAX_MARKED_BYTES {
                break;
            }
            self.marked_bytes += key.len();
            self.marked.push(key);
        }
    }
}

/// Entries one shard examines for one page of [`Store::keys`].
pub const KEYS_SCAN: usize = 20_000;

impl Store {
    /// Up to `limit` live keys of `ns` starting with `prefix`, in byte
    /// order, after `after` when given; and the cursor to pass as `after`
    /// for the next page (`None` after the last). Each shard examines at
    /// most [`KEYS_SCAN`] entries (expired ones included), so no call walks
    /// the whole store; a page can then be short, or empty, with a cursor.
    pub async fn keys(
        &self,
        ns: Namespace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), StoreError> {
        self.keys_scanning(ns, prefix, after, limit, KEYS_SCAN)
            .await
    }

    pub(super) async fn keys_scanning(
        &self,
        ns: Namespace,
        prefix: &[u8],
        after: Option<&[u8]>,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<Vec<u8>>, Option<Vec<u8>>), StoreError> {
        let prefix = keys::entry_key(ns, prefix);
        let after = after.map(|a| keys::entry_key(ns, a));
        let pages: Vec<KeysPage> = self
            .broadcast(|reply| Command::Keys {
                prefix: prefix.clone(),
                after: after.clone(),
                limit,
                scan,
                reply,
            })
            .await?;
        // Every shard has given all its live keys up to its stopping point,
        // so the merged list is complete up to the lowest of them.
        let boundary = pages.iter().filter_map(|p| p.stopped_at.clone()).min();
        let mut all: Vec<Vec<u8>> = pages.into_iter().flat_map(|p| p.keys).collect();
        all.sort_unstable();
        if let Some(b) = &boundary {
            all.retain(|k| k <= b);
        }
        let next = if all.len() > limit {
            all.truncate(limit);
            all.last().cloned()
        } else {
            boundary
        };
        let strip = |mut k: Vec<u8>| k.split_off(1);
        Ok((all.into_iter().map(strip).collect(), next.map(strip)))
    }

    /// Sends one command to every shard, then awaits all replies, so the
    /// shards work in parallel.
    async fn broadcast<T>(
        &self,
        make: impl Fn(oneshot::Sender<Result<T, StoreError>>) -> Command,
    ) -> Result<Vec<T>, StoreError> {
        let mut pending = Vec::with_capacity(self.shards.len());
        for s in self.shards.iter() {
            let (reply, rx) = oneshot::channel();
            s.tx.send(make(reply))
                .await
                .map_err(|_| StoreError::Unavailable)?;
            pending.push(rx);
        }
        let mut out = Vec::with_capacity(pending.len());
        for rx in pending {
            out.push(rx.await.map_err(|_| StoreError::Unavailable)??);
        }
        Ok(out)
    }

    /// Deletes every entry of `ns` whose key starts with `prefix`; returns
    /// how many live entries went.
    pub async fn delete_prefix(&self, ns: Namespace, prefix: &[u8]) -> Result<u64, StoreError> {
        Ok(self.purge_prefix(ns, prefix, false, false).await?.count)
    }

    /// [`Store::delete_prefix`], or with `soft` the pages under `prefix`
    /// marked stale instead; how many live pages (or entries) it reached.
    pub async fn purge_prefix(
        &self,
        ns: Namespace,
        prefix: &[u8],
        soft: bool,
        list: bool,
    ) -> Result<Purged, StoreError> {
        let prefix = keys::entry_key(ns, prefix);
        if ns == Namespace::Page {
            self.purges.prefix(&prefix);
        }
        self.in_steps(&prefix, list, |from, continued, reply| {
            Command::DeletePrefix {
                prefix: prefix.clone(),
                from,
                limit: PREFIX_STEP,
                continued,
                soft,
                reply,
            }
        })
        .await
    }

    /// Purges every page tagged `tag` (every variant that carries it);
    /// with `soft`, marks them stale instead. Returns how many live pages
    /// it reached. `tag` must pass `record::check_tag`.
    pub async fn purge_tag(
        &self,
        tag: &[u8],
        soft: bool,
        list: bool,
    ) -> Result<Purged, StoreError> {
        let start = keys::tag_prefix(tag);
        // Logged first, as key purges are: a page with this tag whose
        // fetch began before now is not stored after it.
        self.purges.key(&start);
        self.in_steps(&start, list, |from, _, reply| Command::PurgeTag {
            tag: tag.to_vec(),
            from,
            limit: TAG_STEP,
            soft,
            reply,
        })
        .await
    }

    /// Rows in the tag index, over every shard.
    pub async fn tag_rows(&self) -> Result<u64, StoreError> {
        let n = self.broadcast(|reply| Command::TagRows { reply }).await?;
        Ok(n.iter().sum())
    }

    /// Runs a stepped walk on every shard at once, starting at `start`:
    /// each shard's step replies (count, where its next step starts), and
    /// between two steps of a shard its other commands (reads that missed
    /// the hot tier, writes) get their turn. `make` builds a step from
    /// (where it starts, whether an earlier step ran, reply); with `list`,
    /// the pages the steps marked are kept.
    async fn in_steps(
        &self,
        start: &[u8],
        list: bool,
        make: impl Fn(Vec<u8>, bool, oneshot::Sender<Result<PrefixStep, StoreError>>) -> Command,
    ) -> Result<Purged, StoreError> {
        let mut total = Purged::listing(list);
        let mut active: Vec<(usize, Vec<u8>)> = (0..self.shards.len())
            .map(|i| (i, start.to_vec()))
            .collect();
        let mut continued = false;
        while !active.is_empty() {
            let mut pending = Vec::with_capacity(active.len());
            for (i, from) in active {
                let (reply, rx) = oneshot::channel();
                self.shards[i]
                    .tx
                    .send(make(from, continued, reply))
                    .await
                    .map_err(|_| StoreError::Unavailable)?;
                pending.push((i, rx));
            }
            let mut next = Vec::new();
            for (i, rx) in pending {
                let mut step = rx.await.map_err(|_| StoreError::Unavailable)??;
                if let Some(from) = step.next.take() {
                    next.push((i, from));
                }
                total.add(step);
            }
            active = next;
            continued = true;
        }
        Ok(total)
    }

    /// Live entries in the given namespaces. Walks every entry: an admin
    /// operation, not a hot path.
    pub async fn count(&self, namespaces: &[Namespace]) -> Result<u64, StoreError> {
        let prefixes: Vec<Vec<u8>> = namespaces.iter().map(|ns| vec![ns.tag()]).collect();
        let counts = self
            .broadcast(|reply| Command::Count {
                prefixes: prefixes.clone(),
                reply,
            })
            .await?;
        Ok(counts.iter().sum())
    }

    /// Empties the whole store.
    pub async fn clear(&self) -> Result<(), StoreError> {
        self.purges.all();
        self.broadcast(|reply| Command::Clear { reply }).await?;
        Ok(())
    }

    /// One full sweep of every shard in batches of `batch`, then blob
    /// garbage collection in steps; returns the number of expired entries
    /// removed.
    pub async fn sweep(&self, batch: usize) -> Result<u64, StoreError> {
        let mut total = 0;
        for s in self.shards.iter() {
            loop {
                let (removed, more) = s.call(|reply| Command::Sweep { batch, reply }).await?;
                total += removed;
                self.counters
                    .swept
                    .fetch_add(removed, std::sync::atomic::Ordering::Relaxed);
                if !more {
                    break;
                }
                // Let queued requests through between batches.
                tokio::task::yield_now().await;
            }
            let mut freed = 0;
            loop {
                let (n, more) = s
                    .call(|reply| Command::Collect {
                        budget: COLLECT_STEP,
                        reply,
                    })
                    .await?;
                freed += n;
                self.counters
                    .collected_bytes
                    .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                if !more {
                    break;
                }
                tokio::task::yield_now().await;
            }
            if freed > 0 {
                tracing::info!(freed, "blob files collected");
            }
        }
        Ok(total)
    }
}
