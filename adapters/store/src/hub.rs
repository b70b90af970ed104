//! The hub: the node-local registry of live sessions, the receiving end of a
//! store's notices that every driver (the server, or any other front end) needs.
//! The store's notices (channel deliveries, takeovers, revocations) find the
//! connection holding a session here. It lives beside the stores, not in the
//! server, so that it can be model-checked with loom (`adapters/store-loom`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::sync::{self, AtomicBool, AtomicUsize, Mutex, MutexGuard, Wake, lock};
use crate::{Notice, Notify};

/// What a connection task receives from the hub. Kept small (16 bytes): a
/// mailbox's queue allocates room for 32 of them per connection up front.
#[derive(Debug)]
pub enum ConnEvent {
    /// A channel message.
    Deliver(Box<wsauth_core::Delivery>),
    /// The session was taken over or evicted.
    Replaced,
    /// A revocation concerning the session, and when it was issued (ms).
    Revoked(Box<(wsauth_core::Revocation, u64)>),
    /// Deliveries were dropped because the connection's mailbox was full: the client
    /// does not keep up (`SLOW_CONSUMER`).
    Overflow,
    /// The store may have lost notices for this node: close, resumable (`INTERNAL`).
    NoticesLost,
}

impl From<Notice> for ConnEvent {
    fn from(notice: Notice) -> Self {
        match notice {
            Notice::Deliver(d) => ConnEvent::Deliver(Box::new(d)),
            Notice::Replaced => ConnEvent::Replaced,
            Notice::Revoked { revocation, at_ms } => {
                ConnEvent::Revoked(Box::new((revocation, at_ms)))
            }
        }
    }
}

/// One connection's queue of events. Lighter than a channel, which allocates a
/// block of slots up front: this allocates only while events wait. Only the wait
/// for a wake differs between the real build (async) and loom's (blocking).
#[derive(Default)]
struct Queue {
    events: Mutex<VecDeque<ConnEvent>>,
    wake: Wake,
}

impl Queue {
    fn send(&self, event: ConnEvent) {
        lock(&self.events).push_back(event);
        // Keeps a permit when no one waits yet, so no wake-up is lost.
        self.wake.wake();
    }

    fn try_recv(&self) -> Option<ConnEvent> {
        let mut events = lock(&self.events);
        let event = events.pop_front()?;
        if events.is_empty() && events.capacity() > 32 {
            // A burst is over: give its room back.
            events.shrink_to(4);
        }
        Some(event)
    }

    #[cfg(not(loom))]
    async fn recv(&self) -> ConnEvent {
        loop {
            if let Some(event) = self.try_recv() {
                return event;
            }
            self.wake.wait().await;
        }
    }

    #[cfg(loom)]
    fn recv_blocking(&self) -> ConnEvent {
        loop {
            if let Some(event) = self.try_recv() {
                return event;
            }
            self.wake.wait();
        }
    }
}

struct Entry {
    epoch: u64,
    tx: sync::Arc<Queue>,
    queued: sync::Arc<AtomicUsize>,
    overflowed: AtomicBool,
}

/// The registry. Deliveries beyond `mailbox_limit` waiting for one connection are
/// dropped and the connection is told once with [`ConnEvent::Overflow`], so a slow
/// client never makes the server's memory grow.
///
/// The hub itself is in a std `Arc` (`register` takes `self: &Arc<Self>`, which
/// loom's `Arc` does not allow); what it shares with connections is in
/// `sync::Arc`, loom's under `--cfg loom`, so that loom checks none of it leaks.
pub struct Hub {
    entries: Mutex<HashMap<String, sync::Arc<Entry>>>,
    /// Notices for an epoch whose connection has not registered yet: the store may
    /// notify a new attachment before the call that created it has returned.
    early: Mutex<HashMap<String, Early>>,
    mailbox_limit: usize,
}

struct Early {
    epoch: u64,
    since: std::time::Instant,
    events: Vec<ConnEvent>,
}

/// Early notices older than this belong to connections that never registered.
const EARLY_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection's end of the hub. Dropping it unregisters the session (unless a
/// newer connection registered it since).
pub struct Mailbox {
    hub: Arc<Hub>,
    session_id: String,
    epoch: u64,
    rx: sync::Arc<Queue>,
    queued: sync::Arc<AtomicUsize>,
}

impl Hub {
    /// An empty hub.
    pub fn new(mailbox_limit: usize) -> Arc<Self> {
        Arc::new(Hub {
            entries: Mutex::new(HashMap::new()),
            early: Mutex::new(HashMap::new()),
            mailbox_limit: mailbox_limit.max(1),
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, sync::Arc<Entry>>> {
        lock(&self.entries)
    }

    /// Registers the connection that now holds `session_id` at `epoch`.
    pub fn register(self: &Arc<Self>, session_id: &str, epoch: u64) -> Mailbox {
        let rx = sync::Arc::new(Queue::default());
        let tx = rx.clone();
        let queued = sync::Arc::new(AtomicUsize::new(0));
        let entry = sync::Arc::new(Entry {
            epoch,
            tx,
            queued: queued.clone(),
            overflowed: AtomicBool::new(false),
        });
        let mut entries = self.lock();
        let keep_newer = entries
            .get(session_id)
            .is_some_and(|existing| existing.epoch > epoch);
        if !keep_newer {
            // Hand over what arrived for this epoch before it registered, in order.
            let early = self.early_lock().remove(session_id);
            if let Some(early) = early.filter(|e| e.epoch == epoch) {
                for event in early.events {
                    if let ConnEvent::Deliver(_) = &event {
                        entry.queued.fetch_add(1, Ordering::AcqRel);
                    }
                    entry.tx.send(event);
                }
            }
            // An older connection of the session on this node was taken over. A store
            // that notifies later (Redis) would find its entry gone: tell it now.
            if let Some(older) = entries.insert(session_id.to_owned(), entry) {
                older.tx.send(ConnEvent::Replaced);
            }
        }
        Mailbox {
            hub: self.clone(),
            session_id: session_id.to_owned(),
            epoch,
            rx,
            queued,
        }
    }

    /// How many sessions have a live connection on this node.
    pub fn live_sessions(&self) -> usize {
        self.lock().len()
    }
}

impl Hub {
    fn early_lock(&self) -> MutexGuard<'_, HashMap<String, Early>> {
        lock(&self.early)
    }

    /// Keeps a notice for an epoch that has not registered yet (bounded).
    fn stash(&self, session_id: &str, epoch: u64, notice: Notice) {
        let mut early = self.early_lock();
        if early.len() > 4096 {
            early.retain(|_, e| e.since.elapsed() < EARLY_TTL);
        }
        let slot = early.entry(session_id.to_owned()).or_insert_with(|| Early {
            epoch,
            since: std::time::Instant::now(),
            events: Vec::new(),
        });
        if slot.epoch != epoch {
            if slot.epoch > epoch {
                return;
            }
            *slot = Early {
                epoch,
                since: std::time::Instant::now(),
                events: Vec::new(),
            };
        }
        if slot.events.len() < self.mailbox_limit {
            slot.events.push(ConnEvent::from(notice));
        } else if !matches!(slot.events.last(), Some(ConnEvent::Overflow)) {
            slot.events.push(ConnEvent::Overflow);
        }
    }
}

impl Notify for Hub {
    fn notify(&self, session_id: &str, epoch: u64, notice: Notice) {
        let entry = {
            // The entries lock is held while stashing, so a registration cannot slip
            // in between the look-up and the stash.
            let entries = self.lock();
            match entries.get(session_id) {
                Some(e) if e.epoch == epoch => e.clone(),
                Some(e) if e.epoch > epoch => return,
                _ => {
                    self.stash(session_id, epoch, notice);
                    return;
                }
            }
        };
        let event = match notice {
            Notice::Deliver(d) => {
                if entry.queued.load(Ordering::Acquire) >= self.mailbox_limit {
                    if entry.overflowed.swap(true, Ordering::AcqRel) {
                        return;
                    }
                    ConnEvent::Overflow
                } else {
                    entry.queued.fetch_add(1, Ordering::AcqRel);
                    ConnEvent::Deliver(Box::new(d))
                }
            }
            other => ConnEvent::from(other),
        };
        entry.tx.send(event);
    }

    fn notices_lost(&self) {
        let entries: Vec<sync::Arc<Entry>> = self.lock().values().cloned().collect();
        tracing::warn!(
            connections = entries.len(),
            "the store may have lost notices for this node: closing every connection (resumable)"
        );
        for entry in entries {
            entry.tx.send(ConnEvent::NoticesLost);
        }
    }
}

impl Mailbox {
    /// The next event (`None` never comes: the hub outlives its mailboxes).
    #[cfg(not(loom))]
    pub async fn recv(&mut self) -> Option<ConnEvent> {
        let event = self.rx.recv().await;
        Some(self.took(event))
    }

    /// The next event, waiting for it (loom's models have threads, not tasks).
    #[cfg(loom)]
    pub fn recv_blocking(&mut self) -> ConnEvent {
        let event = self.rx.recv_blocking();
        self.took(event)
    }

    /// The next event if one waits (loom's models check what is left).
    #[cfg(loom)]
    pub fn try_recv(&mut self) -> Option<ConnEvent> {
        let event = self.rx.try_recv()?;
        Some(self.took(event))
    }

    /// A delivery taken out frees its room in the mailbox.
    fn took(&self, event: ConnEvent) -> ConnEvent {
        if let ConnEvent::Deliver(_) = &event {
            self.queued.fetch_sub(1, Ordering::AcqRel);
        }
        event
    }
}

impl Drop for Mailbox {
    fn drop(&mut self) {
        let mut entries = self.hub.lock();
        if entries
            .get(&self.session_id)
            .is_some_and(|e| e.epoch == self.epoch)
        {
            entries.remove(&self.session_id);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use wsauth_core::{Delivery, Payload};

    fn delivery(seq: u64) -> Notice {
        Notice::Deliver(Delivery {
            channel: "c".into(),
            from: Some("x".into()),
            seq,
            data: Payload::from_json("1").expect("json"),
        })
    }

    fn seq_of(event: Option<ConnEvent>) -> Option<u64> {
        match event {
            Some(ConnEvent::Deliver(d)) => Some(d.seq),
            _ => None,
        }
    }

    #[tokio::test]
    async fn notices_that_beat_the_registration_are_handed_over_in_order() {
        let hub = Hub::new(16);
        hub.notify("s", 2, delivery(7));
        hub.notify("s", 2, delivery(8));
        hub.notify("s", 1, delivery(99)); // an older epoch: never delivered to epoch 2
        let mut mailbox = hub.register("s", 2);
        assert_eq!(seq_of(mailbox.recv().await), Some(7));
        assert_eq!(seq_of(mailbox.recv().await), Some(8));
        hub.notify("s", 2, delivery(9));
        assert_eq!(seq_of(mailbox.recv().await), Some(9));
        hub.notify("s", 1, delivery(100));
        hub.notify("s", 2, delivery(10));
        assert_eq!(
            seq_of(mailbox.recv().await),
            Some(10),
            "the stale epoch's notice was dropped"
        );
    }

    #[tokio::test]
    async fn a_full_mailbox_overflows_once() {
        let hub = Hub::new(2);
        let mut mailbox = hub.register("s", 1);
        for seq in 1..=5 {
            hub.notify("s", 1, delivery(seq));
        }
        assert_eq!(seq_of(mailbox.recv().await), Some(1));
        assert_eq!(seq_of(mailbox.recv().await), Some(2));
        assert!(matches!(mailbox.recv().await, Some(ConnEvent::Overflow)));
        drop(mailbox);
        assert_eq!(hub.live_sessions(), 0, "dropping the mailbox unregisters");
    }

    #[tokio::test]
    async fn lost_notices_reach_every_live_connection() {
        let hub = Hub::new(4);
        let mut a = hub.register("a", 1);
        let mut b = hub.register("b", 7);
        hub.notices_lost();
        assert!(matches!(a.recv().await, Some(ConnEvent::NoticesLost)));
        assert!(matches!(b.recv().await, Some(ConnEvent::NoticesLost)));
    }

    #[tokio::test]
    async fn a_newer_epoch_on_the_same_node_replaces_the_older_connection() {
        let hub = Hub::new(4);
        let mut old = hub.register("s", 1);
        let _new = hub.register("s", 2);
        assert!(matches!(old.recv().await, Some(ConnEvent::Replaced)));
    }
}
