//! The node-local registry of live sessions: where the store's notices (channel
//! deliveries, takeovers, revocations) find the connection task holding a session.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use wsauth_store::{Notice, Notify};

/// What a connection task receives from the hub.
#[derive(Debug)]
pub enum ConnEvent {
    /// A notice from the store.
    Notice(Notice),
    /// Deliveries were dropped because the connection's mailbox was full: the client
    /// does not keep up (`SLOW_CONSUMER`).
    Overflow,
}

struct Entry {
    epoch: u64,
    tx: mpsc::UnboundedSender<ConnEvent>,
    queued: Arc<AtomicUsize>,
    overflowed: AtomicBool,
}

/// The registry. Deliveries beyond `mailbox_limit` waiting for one connection are
/// dropped and the connection is told once with [`ConnEvent::Overflow`], so a slow
/// client never makes the server's memory grow.
pub struct Hub {
    entries: Mutex<HashMap<String, Arc<Entry>>>,
    mailbox_limit: usize,
}

/// A connection's end of the hub. Dropping it unregisters the session (unless a
/// newer connection registered it since).
pub struct Mailbox {
    hub: Arc<Hub>,
    session_id: String,
    epoch: u64,
    rx: mpsc::UnboundedReceiver<ConnEvent>,
    queued: Arc<AtomicUsize>,
}

impl Hub {
    /// An empty hub.
    pub fn new(mailbox_limit: usize) -> Arc<Self> {
        Arc::new(Hub {
            entries: Mutex::new(HashMap::new()),
            mailbox_limit: mailbox_limit.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers the connection that now holds `session_id` at `epoch`.
    pub fn register(self: &Arc<Self>, session_id: &str, epoch: u64) -> Mailbox {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let entry = Arc::new(Entry {
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
            entries.insert(session_id.to_owned(), entry);
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

impl Notify for Hub {
    fn notify(&self, session_id: &str, epoch: u64, notice: Notice) {
        let entry = {
            let entries = self.lock();
            match entries.get(session_id) {
                Some(e) if e.epoch == epoch => e.clone(),
                _ => return,
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
                    ConnEvent::Notice(Notice::Deliver(d))
                }
            }
            other => ConnEvent::Notice(other),
        };
        // A closed receiver means the connection is ending: nothing to do.
        let _ = entry.tx.send(event);
    }
}

impl Mailbox {
    /// The next event.
    pub async fn recv(&mut self) -> Option<ConnEvent> {
        let event = self.rx.recv().await;
        if let Some(ConnEvent::Notice(Notice::Deliver(_))) = &event {
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
