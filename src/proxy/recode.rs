//! Pages stored as Django sent them though bigcache could keep them in
//! brotli (the encoder was busy when they were fetched, or an earlier
//! release stored them) are encoded at a later hit, one at a time, when
//! the encoder is idle, at the encoder's catch-up quality (there may be
//! many: a burst's worth, or a whole data directory): so every text page
//! a site keeps reading ends up stored, and sent, in brotli.
//!
//! The encoded copy replaces the stored one only if that is still the
//! copy that was read: the worker takes the page's flight (`coalesce`), so
//! no fetch can store a newer copy meanwhile, reads the page again, and
//! writes with the purge point taken before it read, so a purge in between
//! wins.

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::Proxy;
use super::coalesce::{Outcome, Role};
use super::compress::{self, Coding, Packed};
use super::entry::Entry;
use super::lookup::{self, Found};
use super::stats::Packing;
use crate::store::PageStore;

/// A page to encode: where it is stored, and which copy was read.
pub struct Recode {
    group: Vec<u8>,
    variant: Option<String>,
    stored_at: u64,
    /// The purge point before the hit that found it.
    since: u64,
}

/// Pages waiting for the worker: one is enough, since a page is only
/// offered while the encoder is idle.
pub fn channel() -> (mpsc::Sender<Recode>, mpsc::Receiver<Recode>) {
    mpsc::channel(1)
}

/// Whether `e` is a page bigcache would store in brotli but did not.
fn wants_recoding(e: &Entry) -> bool {
    e.coding == Coding::Identity && compress::compressible(&e.headers, e.body.len())
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
        if found.entry.coding != Coding::Identity
            || !self.encoder.idle()
            || !wants_recoding(&found.entry)
        {
            return;
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
        });
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

    async fn recode(&self, job: Recode) {
        let at = stored_key(&job.group, job.variant.as_deref());
        let Some(found) = self.stored_copy(&at, &job).await else {
            return;
        };
        let packed = match self.encoder.pack_quickly(found.entry.body.clone()).await {
            Packed::Br(b) => b,
            Packed::NoGain => {
                self.stats.packed(Packing::NoGain);
                self.no_gain.insert(at, job.stored_at);
                return;
            }
            Packed::Busy => return,
        };
        // The page's flight: no fetch stores a newer copy until it ends.
        let Role::Leader(mut permit) = self.coalescer.join(&job.group, job.since) else {
            return;
        };
        let Some(found) = self.stored_copy(&at, &job).await else {
            return;
        };
        let e = Arc::new(found.entry.packed(Coding::Br, packed));
        let record = e.to_record();
        permit.announce(Outcome::Entry {
            entry: e,
            variant: job.variant.clone(),
            stale: false,
            revalidated: false,
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
            Ok(true) => self.stats.packed(Packing::Br),
            Ok(false) => tracing::debug!("page purged while it was encoded; not replaced"),
            Err(e) => tracing::debug!(error = %e, "an encoded page was not stored"),
        }
        permit.end();
    }

    /// The page stored at `at`, if it is still the copy `job` was made
    /// for: the same store time, as sent, not soft-purged.
    async fn stored_copy(&self, at: &[u8], job: &Recode) -> Option<Found> {
        let rec = lookup::get(&self.store, at).await.ok().flatten()?;
        let entry = lookup::decoded(&rec).as_ref().as_ref().ok()?.clone();
        let same = entry.stored_at == job.stored_at
            && entry.soft_purged_at.is_none()
            && wants_recoding(&entry);
        same.then(|| Found {
            entry,
            variant: job.variant.clone(),
        })
    }
}
