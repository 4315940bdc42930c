//! Pages are encoded in place, after they are stored as Django sent them:
//! a fetched page at once, at the quick first quality (`compress::FIRST`);
//! a page read again at `--compress-level`, one at a time, only while the
//! encoder is idle, whether it was stored at the first quality or as sent
//! though bigcache could keep it in brotli (the encoder was busy when it
//! was fetched, or an earlier release or `--no-compress` stored it). So no
//! request ever waits for an encoding, the pages a site keeps serving end
//! up in the best coding, and a page read once costs only its quick one.
//!
//! The encoded copy replaces the stored one only if that is still the
//! copy that was read: the worker takes the page's flight (`coalesce`), so
//! no fetch can store a newer copy meanwhile, reads the page again, and
//! writes with the purge point taken before it read, so a purge in between
//! wins.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::Proxy;
use super::coalesce::{Outcome, Role};
use super::compress::{self, Coding, Packed};
use super::entry::Entry;
use super::lookup::{self, Found};
use super::stats::Packing;
use crate::store::PageStore;

/// A page to encode: where it is stored, which copy was read, and the
/// quality to encode it at.
pub struct Recode {
    group: Vec<u8>,
    variant: Option<String>,
    stored_at: u64,
    /// The purge point before the copy was read (or its fetch began).
    since: u64,
    quality: u32,
    /// For a page just fetched (its first encoding) rather than read
    /// again: the copy as just stored. Read from the store only under the
    /// page's flight, after the encoding, and only when the encoder took
    /// it (mostly it is busy when misses come fast).
    stored: Option<Arc<Entry>>,
}

/// At most one page offered for encoding again per this many ms (4 a
/// second): measured behind the shipped nginx right after a warm-up of
/// 1,000 pages, re-encoding every page read as soon as the encoder was
/// idle took the fronted hit rate from 20.8k to 14.5k req/s while it
/// lasted.
pub const PACE_MS: u64 = 250;

/// Pages waiting for the worker: one is enough, since a page is only
/// offered while the encoder is idle.
pub fn channel() -> (mpsc::Sender<Recode>, mpsc::Receiver<Recode>) {
    mpsc::channel(1)
}

/// Whether `e` is a page bigcache would keep in brotli at `level` but
/// does not: as sent, or at a lower quality.
fn wants_recoding(e: &Entry, level: u32) -> bool {
    match e.coding {
        Coding::Identity => compress::compressible(&e.headers, e.body.len()),
        Coding::Br => u32::from(e.quality) < level,
    }
}

/// The key a page is stored under: its group's, or a member's, the group's
/// and the variant (`PageKey::member`).
pub(super) fn stored_key(group: &[u8], variant: Option<&str>) -> Vec<u8> {
    match variant {
        Some(v) => [group, v.as_bytes()].concat(),
        None => group.to_vec(),
    }
}

impl<S: PageStore> Proxy<S> {
    /// After a hit on `found`, stored under `group`: offers the page for
    /// encoding when it is text stored as sent and the encoder is idle.
    /// Costs a hit one check once every page it reads is encoded.
    pub(super) fn recode_later(&self, group: &[u8], found: &Found) {
        let Some(level) = self.cfg.compress else {
            return;
        };
        if (found.entry.coding != Coding::Identity && u32::from(found.entry.quality) >= level)
            || super::answer::is_shell(&found.entry)
            || !self.encoder.idle()
            || !wants_recoding(&found.entry, level)
        {
            return;
        }
        // A better coding of a page already in brotli: a few a second,
        // each a slow encoding and a rewrite, and after a warm-up every
        // page read is a candidate at once. A page still as sent (its first
        // encoding found the encoder busy) costs every hit seven times the
        // bytes and its encoding a fraction of a millisecond: whenever the
        // encoder is idle, one at a time (the recoder holds one).
        if found.entry.coding != Coding::Identity {
            let now = self.store.clock().now_ms();
            let next = self.next_recode.load(Relaxed);
            if now < next
                || self
                    .next_recode
                    .compare_exchange(next, now + PACE_MS, Relaxed, Relaxed)
                    .is_err()
            {
                return;
            }
        }
        let at = stored_key(group, found.variant.as_deref());
        if self.no_gain.get(&at) == Some(found.entry.stored_at) {
            return;
        }
        let _ = self.recodes.try_send(Recode {
            group: group.to_vec(),
            variant: found.variant.clone(),
            stored_at: found.entry.stored_at,
            since: self.store.purge_point(),
            // A page as sent gets the quick first coding; a better one
            // comes later, paced, as for any page in brotli.
            quality: if found.entry.coding == Coding::Identity {
                level.min(compress::FIRST)
            } else {
                level
            },
            stored: None,
        });
    }

    /// After a fetched page `e` was stored under `group` (and `variant`)
    /// as sent, from a fetch begun at purge point `since`: encodes it at
    /// the first quality, in a task of its own, when it is text.
    pub(super) fn encode_stored(
        self: &Arc<Self>,
        group: &[u8],
        variant: Option<String>,
        e: &Arc<Entry>,
        since: u64,
    ) {
        let Some(level) = self.cfg.compress else {
            return;
        };
        if e.coding != Coding::Identity || !compress::compressible(&e.headers, e.body.len()) {
            return;
        }
        let job = Recode {
            group: group.to_vec(),
            variant,
            stored_at: e.stored_at,
            since,
            quality: level.min(compress::FIRST),
            stored: Some(e.clone()),
        };
        let this = self.clone();
        tokio::spawn(async move { this.recode(job).await });
    }

    /// Starts the worker that encodes the pages [`Proxy::recode_later`]
    /// offers; it ends with the proxy.
    pub fn start_recoder(self: &Arc<Self>) {
        let Some(mut rx) = self.recode_rx.lock().ok().and_then(|mut r| r.take()) else {
            return;
        };
        let proxy: Weak<Self> = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(job) = rx.recv().await {
                let Some(proxy) = proxy.upgrade() else {
                    return;
                };
                proxy.recode(job).await;
            }
        });
    }

    async fn recode(&self, mut job: Recode) {
        let at = stored_key(&job.group, job.variant.as_deref());
        let level = job.quality;
        let first = job.stored.is_some();
        let found = match job.stored.take() {
            Some(entry) => Found {
                entry,
                variant: job.variant.clone(),
            },
            None => match self.stored_copy(&at, &job, level).await {
                Some(found) => found,
                None => return,
            },
        };
        let Ok(identity) = found.entry.identity_body() else {
            return;
        };
        let was = found.entry.coding;
        // A better coding of a page already stored in one waits for idle
        // CPU; a first encoding (a page as sent) does not.
        let idle = was != Coding::Identity;
        let (packed, quality) = match self.encoder.pack(identity, level, idle).await {
            Packed::Br(b, q) if was == Coding::Identity || q > found.entry.quality => (b, q),
            // No better than the stored copy (a large body, or a busy
            // encoder, keeps the first quality): not tried again.
            Packed::Br(..) => {
                self.no_gain.insert(at, job.stored_at);
                return;
            }
            Packed::NoGain => {
                self.stats.packed(Packing::NoGain);
                self.no_gain.insert(at, job.stored_at);
                return;
            }
            Packed::Busy => {
                if first {
                    self.stats.packed(Packing::Busy);
                }
                return;
            }
        };
        // The page's flight: no fetch stores a newer copy until it ends.
        let Role::Leader(mut permit) = self.coalescer.join(&job.group, job.since) else {
            return;
        };
        // Anyone who joined meanwhile finds the page in the store as it is.
        let Some(now) = self.stored_copy(&at, &job, level).await else {
            permit.finish(Outcome::LookAgain);
            return;
        };
        if now.entry.quality != found.entry.quality {
            permit.finish(Outcome::LookAgain);
            return;
        }
        let e = Arc::new(now.entry.packed(Coding::Br, quality, packed));
        let record = e.to_record();
        permit.announce(Outcome::Entry {
            entry: e,
            variant: job.variant.clone(),
            stale: false,
            revalidated: false,
            recoded: true,
        });
        let Ok(room) = self.store.reserve(&job.group, record.encoded_len()).await else {
            return;
        };
        let member = job.variant.as_deref().map(|v| {
            let names = super::key::vary_names(&found.entry.headers).join(",");
            (v.as_bytes(), bytes::Bytes::from(names))
        });
        match self
            .store
            .put_page(&job.group, member, record, job.since, room)
            .await
        {
            Ok(true) if first => self.stats.packed(Packing::Br),
            Ok(true) => self.stats.packed(Packing::Recoded),
            Ok(false) => tracing::debug!("page purged while it was encoded; not replaced"),
            Err(e) => tracing::debug!(error = %e, "an encoded page was not stored"),
        }
        permit.end();
    }

    /// The page stored at `at`, if it is still the copy `job` was made
    /// for: the same store time, not soft-purged, not yet at `level`.
    async fn stored_copy(&self, at: &[u8], job: &Recode, level: u32) -> Option<Found> {
        let now = self.store.clock().now_ms();
        let rec = lookup::get(&self.store, at, now).await.ok().flatten()?;
        let entry = lookup::decoded(&rec).as_ref().as_ref().ok()?.clone();
        let same = entry.stored_at == job.stored_at
            && entry.soft_purged_at.is_none()
            && wants_recoding(&entry, level);
        same.then(|| Found {
            entry,
            variant: job.variant.clone(),
        })
    }
}
