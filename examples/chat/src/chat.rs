//! The chat itself: rooms of messages kept in memory, and the `chat.send` and
//! `chat.history` calls that read and write them.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use wsauth_server::Api;
use wsauth_server::app::{App, AppError};

/// Messages kept per room; older ones are dropped.
pub const ROOM_CAPACITY: usize = 200;
/// Messages `chat.history` answers with at most.
pub const HISTORY_LEN: usize = 50;
/// The longest message, in characters.
pub const MAX_TEXT_CHARS: usize = 2000;

/// One message of a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Unique and increasing across all rooms: the order of the conversation.
    pub id: u64,
    /// The sender: the caller's verified `sub`, never a field of the call's data.
    pub from: String,
    /// The text, trimmed.
    pub text: String,
    /// The server's time when it was stored, Unix milliseconds.
    pub at: u64,
}

impl Message {
    /// The message as published to the room's channel and listed by `chat.history`.
    pub fn to_json(&self) -> Value {
        json!({ "kind": "chat", "id": self.id, "from": self.from, "text": self.text, "at": self.at })
    }
}

#[derive(Default)]
struct Rooms {
    next_id: u64,
    rooms: HashMap<String, VecDeque<Message>>,
}

/// The rooms, shared by every call. Cheap to clone.
#[derive(Clone, Default)]
pub struct Chat {
    rooms: Arc<Mutex<Rooms>>,
}

/// The channel of a room.
pub fn channel(room: &str) -> String {
    format!("room:{room}")
}

/// A room name: 1–32 of `a-z 0-9 -`.
pub fn valid_room(room: &str) -> bool {
    (1..=32).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

fn invalid(field: &str, problem: &str) -> AppError {
    AppError::new(format!("{field}: {problem}"))
        .with_details(json!({ "field": field, "problem": problem }))
}

fn room_of(data: &Value) -> Result<String, AppError> {
    let Some(room) = data.get("room") else {
        return Err(invalid("room", "missing"));
    };
    match room.as_str() {
        Some(room) if valid_room(room) => Ok(room.to_owned()),
        Some(_) => Err(invalid("room", "must be 1-32 of a-z 0-9 -")),
        None => Err(invalid("room", "must be a string")),
    }
}

fn text_of(data: &Value) -> Result<String, AppError> {
    let Some(text) = data.get("text") else {
        return Err(invalid("text", "missing"));
    };
    let Some(text) = text.as_str() else {
        return Err(invalid("text", "must be a string"));
    };
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(invalid("text", "longer than 2000 characters"));
    }
    let text = text.trim();
    if text.is_empty() {
        return Err(invalid("text", "empty"));
    }
    Ok(text.to_owned())
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Chat {
    /// An empty chat.
    pub fn new() -> Chat {
        Chat::default()
    }

    /// Stores the message of `chat.send` `{room, text}` from `sender` (the
    /// caller's verified `sub`) and returns its room and the message.
    pub fn post(&self, sender: &str, data: &Value) -> Result<(String, Message), AppError> {
        let room = room_of(data)?;
        let text = text_of(data)?;
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.next_id += 1;
        let message = Message {
            id: rooms.next_id,
            from: sender.to_owned(),
            text,
            at: now_ms(),
        };
        let kept = rooms.rooms.entry(room.clone()).or_default();
        kept.push_back(message.clone());
        while kept.len() > ROOM_CAPACITY {
            kept.pop_front();
        }
        Ok((room, message))
    }

    /// The answer to `chat.history` `{room}`: the room's last
    /// [`HISTORY_LEN`] messages, oldest first.
    pub fn history(&self, data: &Value) -> Result<Value, AppError> {
        let room = room_of(data)?;
        Ok(json!({ "room": room, "messages": self.last(&room, HISTORY_LEN) }))
    }

    /// The last `n` messages of `room`, oldest first.
    pub fn last(&self, room: &str, n: usize) -> Vec<Value> {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        let Some(kept) = rooms.rooms.get(room) else {
            return Vec::new();
        };
        kept.iter()
            .skip(kept.len().saturating_sub(n))
            .map(Message::to_json)
            .collect()
    }

    /// How many messages `room` keeps.
    pub fn kept(&self, room: &str) -> usize {
        let rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.rooms.get(room).map_or(0, VecDeque::len)
    }

    /// The application's handlers: `chat.send` stores and publishes through
    /// `api` (set once wsauth has started), `chat.history` lists.
    pub fn app(&self, api: Arc<OnceLock<Api>>) -> App {
        let sends = self.clone();
        let lists = self.clone();
        App::new()
            .handle("chat.send", move |ctx, data| {
                let posted = sends.post(&ctx.sub, &data);
                let api = api.clone();
                async move {
                    let (room, message) = posted?;
                    let api = api.get().ok_or(AppError::new("the chat is starting"))?;
                    // Stored even when the publish fails: `chat.history` has it.
                    if let Err(e) = api.publish(&channel(&room), &message.to_json()).await {
                        return Err(AppError::new(format!("stored but not delivered: {e}"))
                            .with_details(json!({ "id": message.id })));
                    }
                    Ok(json!({ "id": message.id, "at": message.at }))
                }
            })
            .handle("chat.history", move |_ctx, data| {
                let answer = lists.history(&data);
                async move { answer }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(r: Result<(String, Message), AppError>) -> Value {
        let e = r.expect_err("refused");
        e.details.expect("details")
    }

    #[test]
    fn the_sender_is_the_caller_whatever_the_data_says() {
        let chat = Chat::new();
        let (room, m) = chat
            .post(
                "alice",
                &json!({"room": "lobby", "text": "  hi  ", "from": "mallory", "sub": "mallory"}),
            )
            .expect("stored");
        assert_eq!(
            (room.as_str(), m.from.as_str(), m.text.as_str()),
            ("lobby", "alice", "hi")
        );
        let listed = chat.history(&json!({"room": "lobby"})).expect("history");
        assert_eq!(listed["messages"][0]["from"], "alice");
        assert_eq!(listed["messages"][0]["kind"], "chat");
    }

    #[test]
    fn bad_input_is_refused_with_the_field_in_the_details() {
        let chat = Chat::new();
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        let cases = [
            (json!(null), "room", "missing"),
            (json!({"text": "hi"}), "room", "missing"),
            (json!({"room": 3, "text": "hi"}), "room", "must be a string"),
            (
                json!({"room": "", "text": "hi"}),
                "room",
                "must be 1-32 of a-z 0-9 -",
            ),
            (
                json!({"room": "Lobby", "text": "hi"}),
                "room",
                "must be 1-32 of a-z 0-9 -",
            ),
            (
                json!({"room": "a".repeat(33), "text": "hi"}),
                "room",
                "must be 1-32 of a-z 0-9 -",
            ),
            (json!({"room": "lobby"}), "text", "missing"),
            (
                json!({"room": "lobby", "text": ["hi"]}),
                "text",
                "must be a string",
            ),
            (json!({"room": "lobby", "text": " \n\t "}), "text", "empty"),
            (
                json!({"room": "lobby", "text": long}),
                "text",
                "longer than 2000 characters",
            ),
        ];
        for (data, field, what) in cases {
            let details = problem(chat.post("alice", &data));
            assert_eq!(details, json!({"field": field, "problem": what}), "{data}");
        }
        assert_eq!(chat.kept("lobby"), 0, "nothing refused is stored");
        // The limits themselves are allowed: 2000 characters (not bytes), 32-byte rooms.
        let most = "é".repeat(MAX_TEXT_CHARS);
        chat.post("alice", &json!({"room": "a".repeat(32), "text": most}))
            .expect("2000 characters and a 32-character room are fine");
        assert!(chat.history(&json!({"room": "no room"})).is_err());
    }

    #[test]
    fn a_room_keeps_200_messages_and_history_lists_the_last_50_in_order() {
        let chat = Chat::new();
        for i in 0..250 {
            chat.post("bob", &json!({"room": "dev", "text": format!("m{i}")}))
                .expect("stored");
        }
        chat.post("bob", &json!({"room": "random", "text": "elsewhere"}))
            .expect("stored");
        assert_eq!(chat.kept("dev"), ROOM_CAPACITY);
        assert_eq!(chat.last("dev", 1000).len(), ROOM_CAPACITY);
        assert_eq!(chat.last("dev", 1000)[0]["text"], "m50");
        let listed = chat.history(&json!({"room": "dev"})).expect("history");
        let texts: Vec<&str> = listed["messages"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|m| m["text"].as_str().expect("text"))
            .collect();
        let expected: Vec<String> = (200..250).map(|i| format!("m{i}")).collect();
        assert_eq!(texts, expected);
        let ids: Vec<u64> = listed["messages"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|m| m["id"].as_u64().expect("id"))
            .collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
        assert_eq!(
            chat.history(&json!({"room": "empty"})).expect("history")["messages"],
            json!([])
        );
    }
}
