//! Application calls (`rpc`, PROTOCOL §8): they run side by side, outside the one
//! pending request, each with its own deadline; one timer slot is armed at the
//! earliest of them.

use std::borrow::Cow;

use super::phase::{PendingCall, Phase};
use super::timers::Timer;
use super::{CallContext, CallOutcome, CallResult, Connection, Event, Output, RequestId};
use crate::error::ErrorCode;
use crate::protocol::{MAX_APP_MESSAGE_BYTES, MAX_DETAILS_BYTES, Payload, ServerMessage};

impl Connection {
    /// An `rpc` from the live session: emitted at once, or refused `BUSY`.
    pub(super) fn call(&mut self, now: u64, id: u64, method: String, data: Payload) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        if live.calls.len() >= self.config.max_rpc_in_flight {
            let busy = ServerMessage::error(ErrorCode::Busy, Some(id), false);
            self.outputs.send(busy);
            self.outputs.event(Event::CallEnded {
                outcome: CallOutcome::Busy,
            });
            return;
        }
        let request = self.request_ids.next();
        let deadline = now.saturating_add(self.config.rpc_timeout_ms);
        live.calls.insert(request, PendingCall { id, deadline });
        let context = CallContext {
            sub: live.claims.sub.clone(),
            session_id: live.attachment.session_id.clone(),
            claims: live.claims.clone(),
        };
        self.arm_call_deadline();
        self.outputs.push(Output::Call {
            request,
            method,
            data,
            context,
        });
    }

    /// A call's result; one for a call no longer in flight is ignored.
    pub(super) fn on_call_result(&mut self, request: RequestId, result: CallResult) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        let Some(call) = live.calls.remove(&request) else {
            return;
        };
        self.arm_call_deadline();
        let outcome = match &result {
            CallResult::Ok(_) => CallOutcome::Ok,
            CallResult::AppError { .. } => CallOutcome::AppError,
            CallResult::NotFound => CallOutcome::NotFound,
            CallResult::Unavailable => CallOutcome::Unavailable,
        };
        let reply = match result {
            CallResult::Ok(data) => ServerMessage::RpcResult { id: call.id, data },
            CallResult::AppError { message, details } => ServerMessage::Error {
                id: Some(call.id),
                code: ErrorCode::AppError,
                message: Cow::Owned(bounded_message(message)),
                fatal: false,
                retry: None,
                details: details.filter(passable_details),
            },
            CallResult::NotFound => {
                ServerMessage::error(ErrorCode::MethodNotFound, Some(call.id), false)
            }
            CallResult::Unavailable => {
                ServerMessage::error(ErrorCode::Unavailable, Some(call.id), false)
            }
        };
        self.outputs.send(reply);
        self.outputs.event(Event::CallEnded { outcome });
    }

    /// The calls whose deadline passed are answered `UNAVAILABLE`, oldest first.
    pub(super) fn calls_past_deadline(&mut self, now: u64) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        let late: Vec<RequestId> = live
            .calls
            .iter()
            .filter(|(_, call)| call.deadline <= now)
            .map(|(request, _)| *request)
            .collect();
        for request in late {
            if let Some(call) = live.calls.remove(&request) {
                let unavailable =
                    ServerMessage::error(ErrorCode::Unavailable, Some(call.id), false);
                self.outputs.send(unavailable);
                self.outputs.event(Event::CallEnded {
                    outcome: CallOutcome::TimedOut,
                });
            }
        }
        self.arm_call_deadline();
    }

    /// The one call timer follows the earliest deadline in flight.
    fn arm_call_deadline(&mut self) {
        let Phase::Live(live) = &mut self.phase else {
            return;
        };
        match live.calls.values().map(|call| call.deadline).min() {
            Some(at) => live.open.timers.set(Timer::CallDeadline, at),
            None => live.open.timers.stop(Timer::CallDeadline),
        }
    }
}

/// The application's message, cut to [`MAX_APP_MESSAGE_BYTES`]: a backend that
/// answers with a page of text does not send it to every caller.
fn bounded_message(mut message: String) -> String {
    if message.len() <= MAX_APP_MESSAGE_BYTES {
        return message;
    }
    let ellipsis = "…";
    let mut end = MAX_APP_MESSAGE_BYTES - ellipsis.len();
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    message.truncate(end);
    message.push_str(ellipsis);
    message
}

/// The application's `details` reach the client only as a JSON object of at most
/// [`MAX_DETAILS_BYTES`]; otherwise they are dropped and the message kept.
fn passable_details(details: &Payload) -> bool {
    let json = details.get();
    json.len() <= MAX_DETAILS_BYTES && json.trim_start().starts_with('{')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_message_is_cut_at_a_character_boundary() {
        assert_eq!(bounded_message("room is full".into()), "room is full");
        let exact = "m".repeat(MAX_APP_MESSAGE_BYTES);
        assert_eq!(bounded_message(exact.clone()), exact);
        // 'é' is two bytes: the cut may not fall inside one.
        let cut = bounded_message("é".repeat(MAX_APP_MESSAGE_BYTES));
        assert!(
            cut.len() <= MAX_APP_MESSAGE_BYTES && cut.ends_with('…'),
            "{}",
            cut.len()
        );
        assert_eq!(
            cut.trim_end_matches('…')
                .chars()
                .filter(|c| *c != 'é')
                .count(),
            0
        );
        assert!(
            cut.len() > MAX_APP_MESSAGE_BYTES - 8,
            "cut no shorter than needed"
        );
    }

    #[test]
    fn details_pass_only_as_an_object_within_the_bound() {
        let json = |text: &str| Payload::from_json(text).expect("json");
        let pad = |n: usize| format!(r#"{{"x":"{}"}}"#, "a".repeat(n - 8));
        assert!(passable_details(&json(r#"{"owner":"bob"}"#)));
        assert!(passable_details(&json(&pad(MAX_DETAILS_BYTES))));
        assert!(!passable_details(&json(&pad(MAX_DETAILS_BYTES + 1))));
        for not_an_object in ["[1]", "\"text\"", "3", "null"] {
            assert!(!passable_details(&json(not_an_object)), "{not_an_object}");
        }
    }
}
