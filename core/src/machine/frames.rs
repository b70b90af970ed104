//! Frames in, the queue of messages behind the request being answered, and the
//! replies that answer it.

use super::phase::{Phase, Queued};
use super::{Connection, Event, Frame, Reply, RequestId};
use crate::error::{CloseCode, ErrorCode};
use crate::protocol::{ClientMessage, DecodeError, decode_client_message_limited};

impl Connection {
    /// `n` frames of any kind arrived (`activity`: a control frame, which also
    /// keeps the connection from idling). Past the frame budget the connection
    /// ends: `RATE_LIMITED`, closed 4429, or 1008 before authentication.
    pub(super) fn on_frames(&mut self, now: u64, n: u32, activity: bool) {
        if activity {
            self.note_activity(now);
        }
        let Some(open) = self.phase.open_mut() else {
            return;
        };
        if open.frames.try_take_n(n, now) {
            return;
        }
        self.outputs.event(Event::RateLimited);
        let close = if self.is_authenticated() {
            CloseCode::LIMIT
        } else {
            CloseCode::POLICY_VIOLATION
        };
        self.fail_with_close(
            None,
            ErrorCode::RateLimited,
            "too many frames".into(),
            close,
        );
    }

    pub(super) fn on_frame(&mut self, now: u64, frame: Frame<'_>) {
        self.note_activity(now);
        let Some(open) = self.phase.open_mut() else {
            return;
        };
        if !open.frames.try_take(now) || !open.rate.try_take(now) {
            self.outputs.event(Event::RateLimited);
            self.fail(None, ErrorCode::RateLimited);
            return;
        }
        let decoded = match frame {
            Frame::Text(text) => decode_client_message_limited(
                text,
                self.config.max_message_bytes,
                self.config.max_json_depth,
            ),
            Frame::TooLarge(_) => Err(DecodeError {
                code: ErrorCode::MessageTooLarge,
                id: None,
                reason: "message is larger than the size limit".into(),
            }),
            Frame::Binary(_) => Err(DecodeError {
                code: ErrorCode::BadRequest,
                id: None,
                reason: "binary frames are not part of the protocol".into(),
            }),
            Frame::ProtocolViolation => {
                self.fail_with_close(
                    None,
                    ErrorCode::BadRequest,
                    "frame breaks the WebSocket protocol".into(),
                    CloseCode::PROTOCOL_ERROR,
                );
                return;
            }
            Frame::InvalidUtf8 => {
                self.fail_with_close(
                    None,
                    ErrorCode::BadRequest,
                    "text frame is not valid UTF-8".into(),
                    CloseCode::INVALID_PAYLOAD,
                );
                return;
            }
        };
        self.enqueue(now, decoded);
    }

    /// Processes a message at once when no request is pending, else queues it
    /// behind the pending one (up to `max_queued_requests`).
    fn enqueue(&mut self, now: u64, decoded: Queued) {
        // A live session's calls and pings do not wait behind the pending request:
        // a ping measures the connection, not the store.
        let call = self.is_authenticated()
            && matches!(
                decoded,
                Ok(ClientMessage::Rpc { .. } | ClientMessage::Ping { .. })
            );
        if call || !self.phase.is_busy() {
            self.process(now, decoded);
            self.drain_queue(now);
            return;
        }
        let Some(open) = self.phase.open_mut() else {
            return;
        };
        if open.queue.len() >= self.config.max_queued_requests {
            self.outputs.event(Event::RateLimited);
            self.fail(None, ErrorCode::RateLimited);
        } else {
            open.queue.push_back(decoded);
        }
    }

    /// Continues the pending request with its reply; a reply to anything else (a
    /// late one, say) is ignored.
    pub(super) fn on_reply(&mut self, now: u64, request: RequestId, reply: Reply) {
        match &mut self.phase {
            Phase::AwaitingAuth(awaiting) => {
                let Some((_, step)) = awaiting.pending.take_if(|(id, _)| *id == request) else {
                    return;
                };
                self.continue_auth(now, step, reply);
            }
            Phase::Live(live) => {
                let Some((_, step)) = live.pending.take_if(|(id, _)| *id == request) else {
                    return;
                };
                self.continue_live(now, step, reply);
            }
            Phase::Closed => return,
        }
        self.drain_queue(now);
    }

    fn drain_queue(&mut self, now: u64) {
        while !self.phase.is_busy() {
            let Some(next) = self
                .phase
                .open_mut()
                .and_then(|open| open.queue.pop_front())
            else {
                return;
            };
            self.process(now, next);
        }
    }

    fn process(&mut self, now: u64, decoded: Queued) {
        let msg = match decoded {
            Ok(msg) => msg,
            Err(e) => {
                let close = e.code.close_code().unwrap_or(CloseCode::CLIENT_BUG);
                self.fail_with_close(e.id, e.code, e.reason, close);
                return;
            }
        };
        match self.phase {
            Phase::AwaitingAuth(_) => self.process_awaiting(msg),
            Phase::Live(_) => self.process_live(now, msg),
            Phase::Closed => {}
        }
    }
}
