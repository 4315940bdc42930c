//! Fetching for the cache: one upstream request per missing or stale page
//! (the coalesced flight's leader), deciding whether its response may be
//! stored, and storing it (a 304 for a stale page is `refresh`'s).

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Request, Response};
use hyper::body::Body as _;

use tokio::sync::oneshot;

use super::body::{self, Body, Collected};
use super::coalesce::{self, Outcome, Permit, Role};
use super::decision::{CacheStatus, Decision, Reason};
use super::entry::{self, Entry, Reuse};
use super::error::{ProxyError, chain};
use super::key::{self, PageKey};
use super::lookup::Found;
use super::stats::UpstreamFailure;
use super::verdict::{self, Verdict};
use super::{Answer, Proxy, answer, clone_parts, forward, revalidate};
use crate::store::backlog::Room;
use crate::store::{PageStore, Record, StoreError};

/// Whether `req` selects `variant` of `entry` (always, if it does not vary).
fn same_variant(key: &mut PageKey, entry: &Entry, variant: &Option<String>, req: &Parts) -> bool {
    variant.is_none() || key.variant(&key::vary_names(&entry.headers), &req.headers) == *variant
}

/// Where the leader of a flight gets a response that will not be stored,
/// still streaming, with the reason.
type Handoff = oneshot::Sender<(Response<Body>, Reason)>;

/// How long the client that led a fetch waits for its page's write before
/// its answer leaves without saying `stored`: a write takes a millisecond
/// or two, a shard busy with a compaction longer.
const WRITE_CONFIRM: std::time::Duration = std::time::Duration::from_millis(200);

/// What a fill tells the client that leads it, besides the flight's
/// outcome: a response it will not store, or whether the page it fetched
/// was written (the leader's `Cache-Status` says `stored` only then).
struct ToLeader {
    response: Handoff,
    written: oneshot::Sender<bool>,
}

/// The leader's wait: the response its fill hands over (one that will
/// not be stored, still streaming), or else the flight's outcome. A fill
/// that ends in a pass hands its response over just after, so a pass waits
/// for it too, unless the fill dropped the hand-off without one (an
/// upstream error, a stored page). The receiver is polled no more once it
/// has resolved: polling a completed oneshot panics.
async fn lead(
    slot: coalesce::Slot,
    mut handoff: oneshot::Receiver<(Response<Body>, Reason)>,
) -> Result<Outcome, (Response<Body>, Reason)> {
    let wait = coalesce::wait(slot);
    tokio::pin!(wait);
    let outcome = tokio::select! {
        biased;
        handed = &mut handoff => match handed {
            Ok(handed) => return Err(handed),
            // No response comes this way: the flight's outcome says it all.
            Err(_) => return Ok(wait.await),
        },
        outcome = &mut wait => outcome,
    };
    match outcome {
        Outcome::Pass(reason) => match handoff.await {
            Ok(handed) => Err(handed),
            Err(_) => Ok(Outcome::Pass(reason)),
        },
        other => Ok(other),
    }
}

impl<S: PageStore> Proxy<S> {
    /// A miss or a stale entry that needs the upstream: coalesced, unless
    /// the page was recently found uncacheable.
    pub(super) async fn fetch(
        self: &Arc<Self>,
        parts: Parts,
        mut key: PageKey,
        stale: Option<Found>,
    ) -> Answer {
        let now = self.store.clock().now_ms();
        if self.passes(now, &mut key, &parts.headers) {
            let res = self.pass_through(parts, body::empty()).await?;
            return Ok((res, Decision::uncached(Reason::HitForPass)));
        }
        match self.coalescer.join(&key.group, self.store.purge_point()) {
            Role::Leader(permit) => {
                let slot = permit.subscribe();
                let (handoff_tx, handoff_rx) = oneshot::channel();
                let (written_tx, written_rx) = oneshot::channel();
                let to_leader = ToLeader {
                    response: handoff_tx,
                    written: written_tx,
                };
                let this = self.clone();
                let fill_parts = clone_parts(&parts);
                let fill_key = key.clone();
                // A task of its own: the fill completes, and the waiters are
                // answered, even if this client goes away.
                tokio::spawn(async move {
                    this.fill(fill_parts, fill_key, stale, permit, Some(to_leader))
                        .await;
                });
                let handed = |mut res: Response<Body>, reason| {
                    if parts.method == Method::HEAD {
                        *res.body_mut() = body::empty();
                    }
                    Ok((res, Decision::uncached(reason)))
                };
                let waited =
                    tokio::time::timeout(self.cfg.flight_wait, lead(slot, handoff_rx)).await;
                match waited {
                    Ok(Err((res, reason))) => handed(res, reason),
                    Ok(Ok(outcome)) => {
                        // A page fetched to be stored: its write decides
                        // whether this answer may say `stored`.
                        let fetched = matches!(
                            outcome,
                            Outcome::Entry {
                                stale: false,
                                revalidated: false,
                                ..
                            }
                        );
                        let mut answer = self.answer(outcome, parts, key, true).await?;
                        if fetched {
                            match tokio::time::timeout(WRITE_CONFIRM, written_rx).await {
                                Ok(Ok(true)) => {}
                                Ok(_) => super::not_stored(&mut answer, true),
                                Err(_) => super::not_stored(&mut answer, false),
                            }
                        }
                        Ok(answer)
                    }
                    Err(_) => self.gave_up_waiting(parts).await,
                }
            }
            Role::Waiter(slot, generation) => {
                // Joined after the page was announced, while it is being
                // written: to this request the page is already stored.
                let late = slot.borrow().is_some();
                let deadline = tokio::time::Instant::now() + self.cfg.flight_wait;
                let Ok(outcome) =
                    tokio::time::timeout_at(deadline, coalesce::wait(slot.clone())).await
                else {
                    return self.gave_up_waiting(parts).await;
                };
                // A flight that re-encodes the stored copy fetched nothing:
                // its copy is the store's, whenever this request joined.
                if let Outcome::Entry {
                    entry,
                    variant,
                    stale: false,
                    recoded,
                    ..
                } = &outcome
                    && (late || *recoded)
                {
                    let now = self.store.clock().now_ms();
                    let usable = entry::reuse(entry, now, &self.windows()) == Reuse::Fresh
                        && same_variant(&mut key, entry, variant, &parts);
                    if !usable {
                        // A stored page that must be revalidated, is stale,
                        // or is another variant: wait for the write, then
                        // go on as with any stored page.
                        if tokio::time::timeout_at(deadline, coalesce::ended(slot))
                            .await
                            .is_err()
                        {
                            return self.gave_up_waiting(parts).await;
                        }
                        return Box::pin(self.from_cache(parts, key, None)).await;
                    }
                }
                if matches!(outcome, Outcome::LookAgain) {
                    return Box::pin(self.from_cache(parts, key, None)).await;
                }
                // Purged since the flight began (it may have been announced
                // before the purge): its page must not be served any more.
                if let Outcome::Entry { entry, .. } = &outcome
                    && (self.store.purged_since(&key.group, generation)
                        || entry
                            .tags
                            .iter()
                            .any(|t| self.store.tag_purged_since(t, generation)))
                {
                    let res = self.pass_through(parts, body::empty()).await?;
                    return Ok((res, Decision::uncached(Reason::Purged)));
                }
                self.answer(outcome, parts, key, false).await
            }
        }
    }

    /// A request whose flight outlasted `flight_wait` (a stuck leader or
    /// store write) is answered by the upstream, uncached.
    async fn gave_up_waiting(&self, parts: Parts) -> Answer {
        tracing::warn!(target = %parts.uri, "a coalesced fetch outlasted its deadline; passing");
        let res = self.pass_through(parts, body::empty()).await?;
        Ok((res, Decision::uncached(Reason::WaitTimedOut)))
    }

    /// Answers a request from a flight's outcome.
    async fn answer(
        &self,
        outcome: Outcome,
        parts: Parts,
        mut key: PageKey,
        leader: bool,
    ) -> Answer {
        match outcome {
            Outcome::Entry {
                entry,
                variant,
                stale,
                revalidated,
                ..
            } => {
                let now = self.store.clock().now_ms();
                // A request that joined the flight while its page was being
                // written may come after the page's lifetime: it must not be
                // served as fresh. (`no-cache` pages are stale from the
                // start; those waiting for one share its fetch.)
                if !leader && !stale && !entry.no_cache && !entry.is_fresh(now) {
                    let res = self.pass_through(parts, body::empty()).await?;
                    return Ok((res, Decision::uncached(Reason::ExpiredInFlight)));
                }
                // A waiter whose request varies differently cannot use it
                // (the leader's own request is the one it was fetched for).
                if !leader && !same_variant(&mut key, &entry, &variant, &parts) {
                    let res = self.pass_through(parts, body::empty()).await?;
                    return Ok((res, Decision::uncached(Reason::VariantMismatch)));
                }
                let status = match (stale, revalidated, leader) {
                    (true, _, _) => CacheStatus::Stale,
                    (_, true, true) => CacheStatus::Revalidated,
                    (_, _, true) => CacheStatus::Miss,
                    _ => CacheStatus::Hit,
                };
                let mut decision = Decision::new(status).with_ttl(entry.fresh_until, now);
                if !leader {
                    decision = decision.collapsed();
                }
                let body = |rep| self.body_in(&key.group, variant.as_deref(), &entry, rep);
                Ok(answer::for_request(&entry, &parts, now, decision, body))
            }
            Outcome::Error(e) => Err((*e).clone()),
            // `LookAgain` is taken up by a waiter before this (`fetch`),
            // and a leader's own fill never says it.
            pass => {
                let reason = match pass {
                    Outcome::Pass(reason) => reason,
                    _ => Reason::LeaderGone,
                };
                let res = self.pass_through(parts, body::empty()).await?;
                Ok((res, Decision::uncached(reason)))
            }
        }
    }

    /// Starts one background refresh of a stale entry unless one runs.
    pub(super) fn refresh_in_background(
        self: &Arc<Self>,
        parts: &Parts,
        key: &PageKey,
        found: &Found,
    ) {
        if let Role::Leader(permit) = self.coalescer.join(&key.group, self.store.purge_point()) {
            let this = self.clone();
            let parts = clone_parts(parts);
            let key = key.clone();
            let stale = found.clone();
            tokio::spawn(async move {
                this.fill(parts, key, Some(stale), permit, None).await;
            });
        }
    }

    /// Fetches a page from the upstream for the cache and publishes the
    /// outcome. A response that cannot be stored goes to the leading client
    /// through `handoff`, streaming, and the waiters are told to pass.
    async fn fill(
        self: Arc<Self>,
        parts: Parts,
        mut key: PageKey,
        stale: Option<Found>,
        permit: Permit,
        leader: Option<ToLeader>,
    ) {
        let generation = permit.generation();
        let mut up = clone_parts(&parts);
        up.method = Method::GET;
        revalidate::for_upstream(&mut up.headers, stale.as_ref().map(|s| &*s.entry));
        let sent = self
            .send_upstream(Request::from_parts(up, body::empty()))
            .await;
        let clock = self.store.clock();
        let now = (clock.now_ms(), clock.now());
        let rules = verdict::Rules {
            stale_if_error: self.cfg.stale_if_error,
            max_entry_size: self.cfg.max_entry_size,
            cache_vary_cookie: self.cfg.cache_vary_cookie,
        };
        let old = stale.as_ref().map(|s| &*s.entry);
        let served_stale = |s: Option<Found>| {
            s.map_or(Outcome::Pass(Reason::Status), |s| Outcome::Entry {
                entry: s.entry,
                variant: s.variant,
                stale: true,
                revalidated: false,
                recoded: false,
            })
        };
        let res = match sent {
            Ok(res) => res,
            Err(e) => {
                tracing::warn!(error = %e, upstream = %self.cfg.upstream.base, "upstream request failed");
                let outcome = match verdict::judge(None, &parts.headers, &mut key, old, now, &rules)
                {
                    Verdict::Stale => served_stale(stale),
                    _ => Outcome::Error(Arc::new(e)),
                };
                permit.finish(outcome);
                return;
            }
        };
        let (mut rp, body) = res.into_parts();
        let close_delimited = !rp.headers.contains_key(http::header::CONTENT_LENGTH)
            && !rp
                .headers
                .get_all(http::header::TRANSFER_ENCODING)
                .iter()
                .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"))
            && !body.is_end_stream();
        forward::strip_hop_by_hop(&mut rp.headers);
        let answered = verdict::Answered {
            status: rp.status,
            headers: &rp.headers,
            close_delimited,
            length: body.size_hint().exact(),
        };
        let (storable, names, variant) =
            match verdict::judge(Some(&answered), &parts.headers, &mut key, old, now, &rules) {
                Verdict::Store {
                    storable,
                    names,
                    variant,
                } => (storable, names, variant),
                Verdict::Stale | Verdict::Failed => {
                    tracing::warn!(status = %rp.status, "upstream error; serving stale");
                    permit.finish(served_stale(stale));
                    return;
                }
                Verdict::Refresh => {
                    let outcome = match &stale {
                        Some(s) => self.refreshed(&key, s, &rp.headers, generation).await,
                        None => Outcome::Pass(Reason::Status),
                    };
                    permit.finish(outcome);
                    return;
                }
                Verdict::Pass {
                    reason,
                    mark,
                    drop_stale,
                } => {
                    if mark {
                        self.mark_pass(&mut key, &parts.headers, &rp.headers, reason);
                    }
                    if drop_stale {
                        let _ = self.store.delete_page(&key.group, false).await;
                    }
                    // The flight ends before its leader is answered: a
                    // request sent after that answer never joins it.
                    permit.finish(Outcome::Pass(reason));
                    self.hand_off(leader.map(|l| l.response), rp, body::boxed(body), reason);
                    return;
                }
            };

        let limit = self.cfg.max_entry_size;
        let collected =
            tokio::time::timeout(self.upstream.timeout, body::collect_limited(body, limit)).await;
        let bytes = match collected {
            Ok(Ok(Collected::Whole(b))) => b,
            Ok(Ok(Collected::TooBig(prefix, rest))) => {
                self.mark_pass(&mut key, &parts.headers, &rp.headers, Reason::TooLarge);
                permit.finish(Outcome::Pass(Reason::TooLarge));
                let handoff = leader.map(|l| l.response);
                self.hand_off(handoff, rp, body::chain(prefix, rest), Reason::TooLarge);
                return;
            }
            Ok(Err(e)) => {
                self.stats.upstream_error(UpstreamFailure::Broken);
                let e = ProxyError::UpstreamBroken(chain(&e));
                permit.finish(Outcome::Error(Arc::new(e)));
                return;
            }
            Err(_) => {
                self.stats.upstream_error(UpstreamFailure::Timeout);
                permit.finish(Outcome::Error(Arc::new(ProxyError::UpstreamTimeout)));
                return;
            }
        };

        // Indexed from the headers already (`storable.tags`).
        let mut headers = rp.headers;
        self.strip_tags(&mut headers);
        let (entry, record) = stored_form(Entry::new(
            rp.status,
            headers,
            bytes,
            &storable,
            now.0,
            self.windows(),
        ));
        // Room for the write before anyone is served: with the disk behind,
        // fetched pages wait here (a moment, then go unstored) instead of
        // piling up in RAM behind the shard threads.
        let room = self.store.reserve(&key.group, record.encoded_len()).await;
        self.pass.remove(&key.group);
        // Everyone waiting is served now; nobody waits for the disk write
        // (only, with the backlog full, for room in it).
        let mut permit = permit;
        permit.announce(Outcome::Entry {
            entry: entry.clone(),
            variant: variant.clone(),
            stale: false,
            revalidated: false,
            recoded: false,
        });
        // If this page was purged while it was being fetched, the copy may
        // be the very content the purge meant to remove: it is served to
        // those waiting for it, and not stored (decided in the store).
        let stored = self
            .store_entry(&key, &names, variant.as_deref(), record, generation, room)
            .await;
        if let Some(l) = leader {
            let _ = l.written.send(stored);
        }
        permit.end();
        // Stored as sent, encoded next, off every request's path.
        if stored {
            self.encode_stored(&key.group, variant, &entry, generation);
        }
    }

    /// Gives an uncacheable response to the client that led the fetch (a
    /// background refresh has none: the response is dropped).
    fn hand_off(
        &self,
        handoff: Option<Handoff>,
        parts: http::response::Parts,
        body: Body,
        reason: Reason,
    ) {
        if let Some(tx) = handoff {
            let _ = tx.send((self.streamed(parts, body), reason));
        }
    }

    /// Puts the page, or the variant `request` selects when `response`
    /// varies, into hit-for-pass.
    fn mark_pass(
        &self,
        key: &mut PageKey,
        request: &HeaderMap,
        response: &HeaderMap,
        reason: Reason,
    ) {
        let names = key::vary_names(response);
        let hit_for_pass = u64::try_from(self.cfg.hit_for_pass.as_millis()).unwrap_or(u64::MAX);
        let until = self.store.clock().now_ms().saturating_add(hit_for_pass);
        if names.is_empty() {
            let mark = super::PassMark { until, names: None };
            self.pass.insert(key.group.clone(), mark);
        } else {
            // A variant too long to key is not marked at all.
            let Some(v) = key.variant(&names, request) else {
                return;
            };
            let variant = super::PassMark { until, names: None };
            self.pass.insert(key.member(&v), variant);
            // The page's entry lasts as long as its latest variant mark.
            let page = super::PassMark {
                until,
                names: Some(Arc::new(names)),
            };
            self.pass.insert(key.group.clone(), page);
        }
        tracing::debug!(reason = reason.as_str(), "not storing; hit-for-pass");
    }

    /// Writes a fetched page's record, given room for it in the store's
    /// write backlog (`PageStore::reserve`); whether it was written.
    pub(super) async fn store_entry(
        &self,
        key: &PageKey,
        names: &[String],
        variant: Option<&str>,
        record: Record,
        since: u64,
        room: Result<Room, StoreError>,
    ) -> bool {
        let member = variant.map(|v| (v.as_bytes(), Bytes::from(names.join(","))));
        let stored = match room {
            Ok(room) => {
                self.store
                    .put_page(&key.group, member, record, since, room)
                    .await
            }
            Err(e) => Err(e),
        };
        match stored {
            Ok(true) => {
                self.cap_query_variants(key).await;
                return true;
            }
            Ok(false) => tracing::debug!("page purged during its fetch; not stored"),
            Err(e) => {
                self.stats.unstored();
                // A disk that is behind turns away every page for a while:
                // the counter says how many, the log only that it happens.
                if matches!(e, StoreError::Busy) {
                    tracing::debug!("the store is behind on writes; page served unstored");
                } else {
                    tracing::warn!(error = %e, "storing a page failed; served uncached");
                }
            }
        }
        false
    }

    /// Purges the oldest query variants of the page's path past
    /// `--max-query-variants`.
    async fn cap_query_variants(&self, key: &PageKey) {
        let Some(cap) = &self.query_cap else { return };
        // Counted per path over every site (a purge reaches each copy).
        let Ok(target) = std::str::from_utf8(key.target()) else {
            return;
        };
        for old in cap.stored(target) {
            match self
                .store
                .delete_page(&super::key::page_key(&old), true)
                .await
            {
                Ok(_) => tracing::debug!(target = old, "query variant over the cap; purged"),
                Err(e) => tracing::warn!(error = %e, "purging a query variant over the cap failed"),
            }
        }
    }
}

/// A fetched entry as it is stored, and the entry decoded back from that
/// record, which is the one served. Its header values point into the
/// record's compact head rather than into the upstream connection's read
/// buffer (a header value slice keeps that whole buffer, tens of KiB, alive
/// for as long as the page is served or waits for the disk), and the
/// record carries the decoding to the hot tier, so its first hit does not
/// decode it again.
pub(super) fn stored_form(e: Entry) -> (Arc<Entry>, Record) {
    let record = e.to_record();
    let entry = match &*super::lookup::decoded(&record) {
        Ok(decoded) => decoded.clone(),
        // Not reached: a record decodes as it was encoded. Serving the
        // fetched entry is still right.
        Err(_) => Arc::new(e),
    };
    (entry, record)
}
