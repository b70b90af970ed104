//! A connection's bounded outbound queue and the task that writes it to the socket.
//! A client that does not read fills the queue instead of the server's memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::Notify;

/// The queue's contents, in the transport's message type `M`.
struct State<M> {
    queue: VecDeque<M>,
    /// The bytes of the messages in `queue`, as `push` was told them.
    bytes: usize,
    /// The close frame, written after the queue.
    close: Option<M>,
    /// The connection is over without a close frame of ours to send (the peer
    /// closed first, or the socket is gone): write what is queued and stop.
    finished: bool,
}

impl<M> Default for State<M> {
    fn default() -> Self {
        State {
            queue: VecDeque::new(),
            bytes: 0,
            close: None,
            finished: false,
        }
    }
}

/// The queue. `push` refuses past the capacity, in messages or in bytes;
/// `push_final` never does (used for the error and close that end a connection,
/// which are bounded by that end). With the batch the writer has taken, a
/// connection holds at most twice the byte capacity, plus the WebSocket
/// library's own write buffer.
pub struct Outbound<M> {
    state: Mutex<State<M>>,
    wake: Notify,
    capacity: usize,
    byte_capacity: usize,
}

impl<M> Outbound<M> {
    /// A queue holding at most `capacity` messages and `byte_capacity` bytes
    /// (one message is always accepted into an empty queue, whatever its size).
    pub fn new(capacity: usize, byte_capacity: usize) -> Arc<Self> {
        Arc::new(Outbound {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            capacity: capacity.max(1),
            byte_capacity,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<M>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message of `bytes` bytes; `false` when the queue is full.
    pub fn push(&self, msg: M, bytes: usize) -> bool {
        let mut s = self.lock();
        let over_bytes = !s.queue.is_empty() && s.bytes.saturating_add(bytes) > self.byte_capacity;
        if s.queue.len() >= self.capacity || over_bytes {
            return false;
        }
        s.bytes += bytes;
        s.queue.push_back(msg);
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Queues a message whatever the queue's length.
    pub fn push_final(&self, msg: M) {
        self.lock().queue.push_back(msg);
        self.wake.notify_one();
    }

    /// Queues the close frame (the first one only); the writer stops after it.
    pub fn close(&self, frame: M) {
        self.lock().close.get_or_insert(frame);
        self.wake.notify_one();
    }

    /// Lets the writer stop once the queue is written, even without a close frame
    /// of ours (when the peer closed first, tungstenite has answered it already).
    pub fn finish(&self) {
        self.lock().finished = true;
        self.wake.notify_one();
    }

    /// Writes the queue to `sink` until the close frame is written (or the socket
    /// fails). Returns when done.
    pub async fn run_writer<S>(self: Arc<Self>, mut sink: S)
    where
        S: Sink<M> + Unpin,
    {
        loop {
            let (batch, close, finished) = {
                let mut s = self.lock();
                let batch = std::mem::take(&mut s.queue);
                s.bytes = 0;
                // The close goes out only once everything before it has.
                let close = if batch.is_empty() {
                    s.close.take()
                } else {
                    None
                };
                (batch, close, s.finished)
            };
            if batch.is_empty() {
                if let Some(frame) = close {
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.send(frame)).await;
                    return;
                }
                if finished {
                    let _ = tokio::time::timeout(Duration::from_secs(2), sink.flush()).await;
                    return;
                }
                self.wake.notified().await;
                continue;
            }
            for msg in batch {
                if sink.feed(msg).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_bounded_in_messages_and_in_bytes() {
        let by_count = Outbound::new(2, usize::MAX);
        assert!(by_count.push("a", 1));
        assert!(by_count.push("b", 1));
        assert!(!by_count.push("c", 1));

        let by_bytes = Outbound::new(100, 100_000);
        assert!(
            by_bytes.push("big", 200_000),
            "one message always fits an empty queue"
        );
        assert!(!by_bytes.push("more", 1));
        let by_bytes = Outbound::new(100, 100_000);
        for _ in 0..16 {
            assert!(by_bytes.push("60 KB / 10", 6_000));
        }
        assert!(!by_bytes.push("one too many", 6_000));
        by_bytes.push_final("the error that ends it");
    }
}
