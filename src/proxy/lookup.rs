//! Finding a request's page in the store, resolving `Vary` groups to the
//! variant the request selects.

use std::sync::Arc;

use super::entry::{Entry, MetaError};
use super::fields::Fields;
use super::key::PageKey;
use crate::store::{Kind, Lookup, PageStore, Record, StoreError};

/// A page found in the store.
#[derive(Clone)]
pub struct Found {
    pub entry: Arc<Entry>,
    /// The variant it was stored under; `None` when it does not vary.
    pub variant: Option<String>,
}

/// What the store had for a request.
pub enum Looked {
    Found(Found),
    Missing,
    /// The store failed. Logged; the request goes on as a miss (and its
    /// decision says why it was not a hit).
    Failed,
}

/// Finds the stored page for a request at `now` (unix ms: the time the
/// caller then decides with, so one reading serves both).
pub async fn lookup<S: PageStore, F: Fields + ?Sized>(
    store: &S,
    key: &mut PageKey,
    req: &F,
    now: u64,
) -> Looked {
    match find(store, key, req, now).await {
        Ok(Some(found)) => Looked::Found(found),
        Ok(None) => Looked::Missing,
        Err(e) => {
            tracing::warn!(error = %e, "store read failed; treating as a miss");
            Looked::Failed
        }
    }
}

async fn find<S: PageStore, F: Fields + ?Sized>(
    store: &S,
    key: &mut PageKey,
    req: &F,
    now: u64,
) -> Result<Option<Found>, StoreError> {
    let Some(rec) = get(store, &key.group, now).await? else {
        return Ok(None);
    };
    let (rec, variant) = if rec.kind == Kind::Group {
        let Ok(names) = std::str::from_utf8(&rec.meta) else {
            return Ok(None);
        };
        let names: Vec<String> = names
            .split(',')
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect();
        let Some(variant) = key.variant(&names, req) else {
            return Ok(None);
        };
        let Some(member) = get(store, &key.member(&variant), now).await? else {
            return Ok(None);
        };
        (member, Some(variant))
    } else {
        (rec, None)
    };
    match &*decoded(&rec) {
        Ok(entry) => Ok(Some(Found {
            entry: entry.clone(),
            variant,
        })),
        Err(e) => {
            tracing::warn!(error = %e, "unreadable cached response; treating as a miss");
            Ok(None)
        }
    }
}

/// The response a record holds, decoded once per stored record: a
/// hot-tier hit shares the entry the first reader (or the fill) built.
pub fn decoded(rec: &Record) -> Arc<Result<Arc<Entry>, MetaError>> {
    rec.memoized(|r| Entry::from_record(r).map(Arc::new))
}

/// The record at `key`, from the RAM tier if it holds it unexpired at
/// `now`.
pub(super) async fn get<S: PageStore>(
    store: &S,
    key: &[u8],
    now: u64,
) -> Result<Option<Record>, StoreError> {
    // The RAM tier without building the store's read: most hits end here.
    if let Some(rec) = store.hot_page(key, now) {
        return Ok(Some(rec));
    }
    // Boxed: the store's read is a large future, and every lookup, the
    // RAM tier's hits too, would carry (and move) its room.
    match Box::pin(store.get_page(key)).await? {
        Lookup::Hit(rec) => Ok(Some(rec)),
        Lookup::Miss | Lookup::Expired => Ok(None),
    }
}
