//! Decoded copies of brotli pages, for the clients that do not accept br
//! (scripts, HTTP libraries, monitoring; no browser over HTTPS). Decoding a
//! 20 KB page takes about 60 µs, ten times a hit's own work: a page such a
//! client reads again is decoded once and kept, within
//! `--decoded-cache-size`, least recently used out.
//!
//! A copy is kept under the key the page is stored at with the store time
//! of the stored copy it was decoded from, and used only for that copy: a
//! page fetched again (a new store time) is decoded again, never answered
//! with the old one's bytes.

use bytes::Bytes;

use super::Proxy;
use super::answer::{self, Rep};
use super::compress::Undecodable;
use super::entry::Entry;
use crate::store::PageStore;

#[derive(Clone)]
struct Copy {
    stored_at: u64,
    body: Bytes,
}

#[derive(Clone)]
struct ByLen;

impl quick_cache::Weighter<Vec<u8>, Copy> for ByLen {
    fn weight(&self, key: &Vec<u8>, copy: &Copy) -> u64 {
        // 64: the map's own bookkeeping per copy.
        (key.len() + copy.body.len() + 64) as u64
    }
}

/// The decoded copies, `None` when `--decoded-cache-size` is 0.
pub struct Decoded(Option<quick_cache::sync::Cache<Vec<u8>, Copy, ByLen>>);

impl Decoded {
    pub fn new(bytes: u64) -> Decoded {
        // Room for as many 20 KB pages as the bytes hold; the weight bounds.
        let pages = usize::try_from(bytes / 20_000)
            .unwrap_or(usize::MAX)
            .max(16);
        Decoded((bytes > 0).then(|| quick_cache::sync::Cache::with_weighter(pages, bytes, ByLen)))
    }
}

impl<S: PageStore> Proxy<S> {
    /// The body of `e`, stored under `group` (and `variant`), in `rep`.
    pub(super) fn body_in(
        &self,
        group: &[u8],
        variant: Option<&str>,
        e: &Entry,
        rep: Rep,
    ) -> Result<Bytes, Undecodable> {
        let Some(cache) = &self.decoded.0 else {
            return answer::body_of(e, rep);
        };
        if rep == Rep::Stored {
            return Ok(e.body.clone());
        }
        let key = super::recode::stored_key(group, variant);
        if let Some(copy) = cache.get(&key)
            && copy.stored_at == e.stored_at
            && copy.body.len() as u64 == e.identity_len
        {
            return Ok(copy.body);
        }
        let body = answer::body_of(e, rep)?;
        cache.insert(
            key,
            Copy {
                stored_at: e.stored_at,
                body: body.clone(),
            },
        );
        Ok(body)
    }
}
