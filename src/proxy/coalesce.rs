//! Request coalescing: when many clients miss on the same page at once,
//! one request goes upstream and everyone gets its answer.
//!
//! The first request for a key becomes the leader and holds a [`Permit`];
//! later ones wait on a watch channel and wake the moment the leader
//! publishes an [`Outcome`] (no polling interval, unlike nginx's 500 ms).
//! If the answer turned out uncacheable the outcome is [`Outcome::Pass`]
//! and the waiters go upstream themselves, all at once, not one after
//! another.
//!
//! A permit dropped without an outcome (its task panicked or was cancelled)
//! publishes `Pass` from `Drop`, so no waiter can hang on a dead leader.
//!
//! A leader that has a page to store [`Permit::announce`]s it first: the
//! waiters are served at once, and requests arriving while the page is
//! being written join the finished flight instead of missing in the store
//! and fetching it again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::decision::Reason;
use super::entry::Entry;
use super::error::ProxyError;

#[derive(Debug, Clone)]
pub enum Outcome {
    /// A response to serve, with the variant it was fetched for (`None`
    /// when it does not vary).
    Entry {
        entry: Arc<Entry>,
        variant: Option<String>,
        /// Served from a stale entry (the upstream failed within
        /// stale-if-error) rather than a fresh fetch.
        stale: bool,
        /// Refreshed by a 304 from the upstream.
        revalidated: bool,
        /// The copy already stored, re-encoded: nothing was fetched for
        /// it, so a waiter may use it only as it would use the store's
        /// (fresh, its own variant, not `no-cache`).
        recoded: bool,
    },
    /// Go upstream yourself: the page is not stored, for this reason.
    Pass(Reason),
    /// Nothing was fetched and the store holds what it held (a
    /// re-encoding that found its copy changed or gone): look there again.
    LookAgain,
    /// The upstream failed and there was nothing stale to serve.
    Error(Arc<ProxyError>),
}

pub type Slot = watch::Receiver<Option<Outcome>>;

#[derive(Default)]
pub struct Coalescer {
    /// Each flight's slot and the store's purge point when it started.
    flights: Mutex<HashMap<Vec<u8>, (Slot, u64)>>,
    /// Requests that joined a flight as waiters, ever: what a test waits
    /// on to know a request is waiting, instead of sleeping.
    joined: std::sync::atomic::AtomicU64,
}

pub enum Role {
    Leader(Permit),
    /// The flight's slot and its purge point: a page purged after it may
    /// not be served from this flight.
    Waiter(Slot, u64),
}

/// The right, and the duty, to fetch one key and publish the outcome.
pub struct Permit {
    key: Vec<u8>,
    tx: watch::Sender<Option<Outcome>>,
    owner: Arc<Coalescer>,
    done: bool,
    announced: bool,
    generation: u64,
}

impl Coalescer {
    /// Joins the flight for `key`, or starts one at purge point
    /// `generation` (`Store::purge_point`, read by the caller just before).
    pub fn join(self: &Arc<Self>, key: &[u8], generation: u64) -> Role {
        // A std mutex: held for a map lookup only, never across an await.
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((rx, started)) = flights.get(key) {
            self.joined
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            return Role::Waiter(rx.clone(), *started);
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key.to_vec(), (rx, generation));
        Role::Leader(Permit {
            key: key.to_vec(),
            tx,
            owner: self.clone(),
            done: false,
            announced: false,
            generation,
        })
    }

    /// Requests that have joined another's fetch so far.
    pub fn joined(&self) -> u64 {
        self.joined.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a fetch for `key` is under way.
    pub fn in_flight(&self, key: &[u8]) -> bool {
        self.flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(key)
    }

    fn remove(&self, key: &[u8]) {
        self.flights
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key);
    }
}

impl Permit {
    pub fn subscribe(&self) -> Slot {
        self.tx.subscribe()
    }

    /// The purge point the flight started at.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Publishes the outcome and ends the flight.
    pub fn finish(mut self, outcome: Outcome) {
        self.publish(outcome);
    }

    /// Publishes the outcome but keeps the flight open until [`Permit::end`]
    /// (or drop): later arrivals get this outcome immediately.
    pub fn announce(&mut self, outcome: Outcome) {
        self.announced = true;
        self.tx.send_replace(Some(outcome));
    }

    /// Ends an announced flight: from now on, requests read the store.
    pub fn end(mut self) {
        self.done = true;
        self.owner.remove(&self.key);
    }

    fn publish(&mut self, outcome: Outcome) {
        self.done = true;
        // Remove first: a request arriving after this point must see the
        // stored entry, not join a finished flight.
        self.owner.remove(&self.key);
        self.tx.send_replace(Some(outcome));
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if self.announced && !self.done {
            self.done = true;
            self.owner.remove(&self.key);
        } else if !self.done {
            self.publish(Outcome::Pass(Reason::LeaderGone));
        }
    }
}

/// Waits until a flight has ended (its leader is done storing, or gone).
pub async fn ended(mut slot: Slot) {
    while slot.changed().await.is_ok() {}
}

/// Waits for a flight's outcome; a vanished leader reads as `Pass`.
pub async fn wait(mut slot: Slot) -> Outcome {
    match slot.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Outcome::Pass(Reason::LeaderGone)),
        Err(_) => Outcome::Pass(Reason::LeaderGone),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_waiters() {
        let c = Arc::new(Coalescer::default());
        let Role::Leader(permit) = c.join(b"k", 0) else {
            panic!("first must lead")
        };
        let waiters: Vec<_> = (0..10)
            .map(|_| match c.join(b"k", 0) {
                Role::Waiter(s, _) => tokio::spawn(wait(s)),
                Role::Leader(_) => panic!("second leader"),
            })
            .collect();
        assert!(c.in_flight(b"k"));
        permit.finish(Outcome::Pass(Reason::Private));
        assert!(!c.in_flight(b"k"));
        for w in waiters {
            assert!(matches!(w.await.unwrap(), Outcome::Pass(Reason::Private)));
        }
        assert!(matches!(c.join(b"k", 0), Role::Leader(_)));
    }

    #[tokio::test]
    async fn dropped_leader_releases_waiters() {
        let c = Arc::new(Coalescer::default());
        let Role::Leader(permit) = c.join(b"k", 0) else {
            panic!()
        };
        let Role::Waiter(slot, _) = c.join(b"k", 0) else {
            panic!()
        };
        let waiter = tokio::spawn(wait(slot));
        drop(permit);
        assert!(matches!(
            waiter.await.unwrap(),
            Outcome::Pass(Reason::LeaderGone)
        ));
        assert!(!c.in_flight(b"k"));
    }

    #[tokio::test]
    async fn announced_outcomes_reach_late_arrivals_until_the_end() {
        let c = Arc::new(Coalescer::default());
        let Role::Leader(mut permit) = c.join(b"k", 0) else {
            panic!()
        };
        let Role::Waiter(early, _) = c.join(b"k", 0) else {
            panic!()
        };
        permit.announce(Outcome::Pass(Reason::Private));
        assert!(matches!(wait(early).await, Outcome::Pass(_)));
        // Still in flight (the leader is storing): a newcomer waits on it
        // and is answered at once.
        let Role::Waiter(late, _) = c.join(b"k", 0) else {
            panic!("a new leader would fetch the page again")
        };
        assert!(matches!(wait(late).await, Outcome::Pass(_)));
        permit.end();
        assert!(!c.in_flight(b"k"));
        assert!(matches!(c.join(b"k", 0), Role::Leader(_)));
    }
}
