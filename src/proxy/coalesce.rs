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

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::ProxyError;
use super::entry::Entry;

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
    },
    /// Go upstream yourself.
    Pass,
    /// The upstream failed and there was nothing stale to serve.
    Error(Arc<ProxyError>),
}

type Slot = watch::Receiver<Option<Outcome>>;

#[derive(Default)]
pub struct Coalescer {
    flights: Mutex<HashMap<Vec<u8>, Slot>>,
}

pub enum Role {
    Leader(Permit),
    Waiter(Slot),
}

/// The right, and the duty, to fetch one key and publish the outcome.
pub struct Permit {
    key: Vec<u8>,
    tx: watch::Sender<Option<Outcome>>,
    owner: Arc<Coalescer>,
    done: bool,
}

impl Coalescer {
    /// Joins the flight for `key`, or starts one.
    pub fn join(self: &Arc<Self>, key: &[u8]) -> Role {
        // A std mutex: held for a map lookup only, never across an await.
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(rx) = flights.get(key) {
            return Role::Waiter(rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        flights.insert(key.to_vec(), rx);
        Role::Leader(Permit {
            key: key.to_vec(),
            tx,
            owner: self.clone(),
            done: false,
        })
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

    /// Publishes the outcome and ends the flight.
    pub fn finish(mut self, outcome: Outcome) {
        self.publish(outcome);
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
        if !self.done {
            self.publish(Outcome::Pass);
        }
    }
}

/// Waits for a flight's outcome; a vanished leader reads as `Pass`.
pub async fn wait(mut slot: Slot) -> Outcome {
    match slot.wait_for(Option::is_some).await {
        Ok(v) => v.clone().unwrap_or(Outcome::Pass),
        Err(_) => Outcome::Pass,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_leader_many_waiters() {
        let c = Arc::new(Coalescer::default());
        let Role::Leader(permit) = c.join(b"k") else {
            panic!("first must lead")
        };
        let waiters: Vec<_> = (0..10)
            .map(|_| match c.join(b"k") {
                Role::Waiter(s) => tokio::spawn(wait(s)),
                Role::Leader(_) => panic!("second leader"),
            })
            .collect();
        assert!(c.in_flight(b"k"));
        permit.finish(Outcome::Pass);
        assert!(!c.in_flight(b"k"));
        for w in waiters {
            assert!(matches!(w.await.unwrap(), Outcome::Pass));
        }
        assert!(matches!(c.join(b"k"), Role::Leader(_)));
    }

    #[tokio::test]
    async fn dropped_leader_releases_waiters() {
        let c = Arc::new(Coalescer::default());
        let Role::Leader(permit) = c.join(b"k") else {
            panic!()
        };
        let Role::Waiter(slot) = c.join(b"k") else {
            panic!()
        };
        let waiter = tokio::spawn(wait(slot));
        drop(permit);
        assert!(matches!(waiter.await.unwrap(), Outcome::Pass));
        assert!(!c.in_flight(b"k"));
    }
}
