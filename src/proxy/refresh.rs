//! A stale page refreshed by the upstream's 304: the stored response
//! takes the new headers and lifetime and keeps its body (RFC 9111 §4.3.4),
//! unless the 304 changed what the page may be.

use std::sync::Arc;

use http::HeaderMap;

use super::coalesce::Outcome;
use super::compress::{self, Coding};
use super::decision::Reason;
use super::entry::Entry;
use super::fill::stored_form;
use super::key::{self, PageKey};
use super::lookup::Found;
use super::{Proxy, policy, revalidate};
use crate::store::PageStore;

impl<S: PageStore> Proxy<S> {
    /// A 304 from the upstream: the stored response gets the new headers
    /// and a new lifetime, and keeps its body.
    pub(super) async fn refreshed(
        self: &Arc<Self>,
        key: &PageKey,
        stale: &Found,
        fresh: &HeaderMap,
        generation: u64,
    ) -> Outcome {
        let old = &stale.entry;
        let headers = revalidate::refreshed_headers(&old.headers, fresh);
        let clock = self.store.clock();
        match policy::response_policy(old.status, &headers, clock.now()) {
            // A 304 that changes what the page varies on cannot renew the
            // copy stored under the old variant rules.
            Ok(_) if key::vary_names(&headers) != key::vary_names(&old.headers) => {
                let _ = self.store.delete_page(&key.group, false).await;
                Outcome::Pass(Reason::VariantMismatch)
            }
            Ok(p) => {
                let now = clock.now_ms();
                let mut headers = headers;
                self.strip_tags(&mut headers);
                let mut e = Entry::new(
                    old.status,
                    headers,
                    old.body.clone(),
                    &p,
                    now,
                    self.windows(),
                );
                if old.synthetic_etag {
                    e.synthetic_etag = true;
                }
                // The body keeps its coding, unless the 304 made the page
                // one bigcache may not recode (`no-transform`, another
                // type, a digest: RFC 9110 §7.7).
                if old.coding != Coding::Identity {
                    if compress::compressible(&e.headers, old.identity_len as usize) {
                        (e.coding, e.quality) = (old.coding, old.quality);
                        e.identity_len = old.identity_len;
                    } else {
                        let Ok(body) = old.identity_body() else {
                            let _ = self.store.delete_page(&key.group, false).await;
                            return Outcome::Pass(Reason::StoreError);
                        };
                        e.identity_len = body.len() as u64;
                        e.body = body;
                    }
                }
                // A 304 without tags (or an empty tag header) keeps the
                // page's: they are stored apart from its headers unless
                // `--keep-tag-headers`.
                if e.tags.is_empty() {
                    e.tags = old.tags.clone();
                }
                let names = key::vary_names(&e.headers);
                let (entry, record) = stored_form(e);
                let room = self.store.reserve(&key.group, record.encoded_len()).await;
                // Purged meanwhile: the stored copy stays gone.
                let stored = self
                    .store_entry(
                        key,
                        &names,
                        stale.variant.as_deref(),
                        record,
                        generation,
                        room,
                    )
                    .await;
                // A page stored as sent (by an earlier release, say) is
                // encoded now.
                if stored {
                    self.encode_stored(&key.group, stale.variant.clone(), &entry, generation);
                }
                Outcome::Entry {
                    entry,
                    variant: stale.variant.clone(),
                    stale: false,
                    revalidated: true,
                    recoded: false,
                }
            }
            Err(reason) => {
                tracing::debug!(
                    reason = reason.as_str(),
                    "revalidated page no longer cacheable"
                );
                let _ = self.store.delete_page(&key.group, false).await;
                Outcome::Pass(reason)
            }
        }
    }
}
