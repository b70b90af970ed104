//! A connection's bounded outbound queue and the task that writes it to the socket.
//! A client that does not read fills the queue instead of the server's memory.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{Sink, SinkExt};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;

#[derive(Default)]
struct State {
    queue: VecDeque<Message>,
    close: Option<(u16, &'static str)>,
    /// The connection is over without a close frame of ours to send (the peer
    /// closed first, or the socket is gone): write what is queued and stop.
    finished: bool,
}

/// The queue. `push` refuses past the capacity; `push_final` never does (used for the
/// error and close that end a connection, which are bounded by that end).
pub struct Outbound {
    state: Mutex<State>,
    wake: Notify,
    capacity: usize,
}

impl Outbound {
    /// A queue holding at most `capacity` messages.
    pub fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Outbound {
            state: Mutex::new(State::default()),
            wake: Notify::new(),
            capacity: capacity.max(1),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a message; `false` when the queue is full.
    pub fn push(&self, msg: Message) -> bool {
        let mut s = self.lock();
        if s.queue.len() >= self.capacity {
            return false;
        }
        s.queue.push_back(msg);
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Queues a message whatever the queue's length.
    pub fn push_final(&self, msg: Message) {
        self.lock().queue.push_back(msg);
        self.wake.notify_one();
    }

    /// Queues the close frame; the writer stops after it.
    pub fn close(&self, code: u16, reason: &'static str) {
        self.lock().close.get_or_insert((code, reason));
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
        S: Sink<Message> + Unpin,
    {
        loop {
            let (batch, close, finished) = {
                let mut s = self.lock();
                (std::mem::take(&mut s.queue), s.close, s.finished)
            };
            if batch.is_empty() {
                if let Some((code, reason)) = close {
                    let frame = CloseFrame {
                        code: WsCloseCode::from(code),
                        reason: reason.into(),
                    };
                    let _ = tokio::time::timeout(
                        Duration::from_secs(2),
                        sink.send(Message::Close(Some(frame))),
                    )
                    .await;
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
