//! The application's side of wsauth (PROTOCOL §8): handlers for its users'
//! calls (`rpc`), each run with the caller's verified identity, and hooks told
//! when a session starts and ends.
//!
//! ```rs
//! use serde_json::json;
//! use wsauth_server::app::{App, AppError};
//!
//! let app = App::new()
//!     .handle("chat.send", |ctx, data| async move {
//!         let text = data["text"].as_str().ok_or(AppError::new("text is required"))?;
//!         Ok(json!({ "from": ctx.sub, "text": text }))
//!     })
//!     .on_session_end(|end| async move { println!("{} left", end.sub) });
//! ```
//!
//! A method is routed to the handler registered for exactly that name, else to
//! the one with the longest matching prefix pattern (`"chat.*"`); with none, the
//! caller gets `METHOD_NOT_FOUND`. Handlers run on their own tasks: a handler
//! that panics, or is dropped at `app.rpc_timeout_ms`, answers `UNAVAILABLE` for
//! that call only.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::Value;
use wsauth_core::jwt::Claims;
use wsauth_core::protocol::{MAX_METHOD_BYTES, Payload};
use wsauth_core::{CallResult, ErrorCode};

use crate::config::{Config, method_allowed};
use crate::proxy::Proxy;

/// Who makes a call: the session's verified identity, never its token.
#[derive(Clone, Debug)]
pub struct CallContext {
    /// The caller's user (`sub`).
    pub sub: String,
    /// The caller's session.
    pub session_id: String,
    /// The session's current verified claims, custom claims in `claims.extra`.
    pub claims: Arc<Claims>,
    /// The node that holds the caller's socket (`node_id`).
    pub node: Arc<str>,
}

/// A handler's refusal: the client gets `APP_ERROR` with this message and, when
/// present, these details (a JSON object of at most 4 KiB; larger ones are
/// dropped, the message kept).
#[derive(Clone, Debug, PartialEq)]
pub struct AppError {
    /// For people.
    pub message: String,
    /// For programs.
    pub details: Option<Value>,
}

impl AppError {
    /// A refusal with a message.
    pub fn new(message: impl Into<String>) -> AppError {
        AppError {
            message: message.into(),
            details: None,
        }
    }

    /// The same refusal with details for the client's program.
    pub fn with_details(mut self, details: Value) -> AppError {
        self.details = Some(details);
        self
    }
}

/// A session started on this node: created by an authentication, or resumed.
#[derive(Clone, Debug)]
pub struct SessionStart {
    /// The user.
    pub sub: String,
    /// The session.
    pub session_id: String,
    /// Its verified claims.
    pub claims: Arc<Claims>,
    /// This node.
    pub node: Arc<str>,
    /// `true` when an earlier connection's session was resumed.
    pub resumed: bool,
}

/// A session's connection on this node ended.
#[derive(Clone, Debug)]
pub struct SessionEnd {
    /// The user.
    pub sub: String,
    /// The session.
    pub session_id: String,
    /// This node.
    pub node: Arc<str>,
    /// The error code that ended it (`None`: the client closed or logged out
    /// cleanly, or its socket dropped).
    pub reason: Option<ErrorCode>,
    /// `true` when the session stays resumable for `session.resume_grace_ms`: a
    /// later [`SessionStart`] with `resumed` may follow, on any node.
    pub resumable: bool,
}

/// What a call's handler returns.
pub type CallFuture = Pin<Box<dyn Future<Output = CallResult> + Send>>;
type Handler = Arc<dyn Fn(CallContext, String, Payload) -> CallFuture + Send + Sync>;
type Hook<E> = Arc<dyn Fn(E) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// A method name or a prefix pattern ending in `*` (a lone `*` matches every
/// method).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MethodPattern {
    /// This method only.
    Exact(String),
    /// Every method that starts with this prefix.
    Prefix(String),
}

impl MethodPattern {
    /// Parses a pattern: 1–128 of `A-Z a-z 0-9 . _ : / -`, optionally ending in `*`.
    pub fn parse(pattern: &str) -> Result<MethodPattern, String> {
        let (name, prefix) = match pattern.strip_suffix('*') {
            Some(prefix) => (prefix, true),
            None => (pattern, false),
        };
        let valid_chars = name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".:_/-".contains(&b));
        if pattern.len() > MAX_METHOD_BYTES || !valid_chars || (name.is_empty() && !prefix) {
            return Err(format!(
                "method pattern {pattern:?}: a method of 1–128 of A-Z a-z 0-9 . _ : / -, \
                 optionally ending in *"
            ));
        }
        Ok(if prefix {
            MethodPattern::Prefix(name.to_owned())
        } else {
            MethodPattern::Exact(name.to_owned())
        })
    }
}

/// The application: call handlers and session hooks, given to the server when it
/// starts. Cheap to clone.
#[derive(Clone, Default)]
pub struct App {
    exact: HashMap<String, Handler>,
    /// Longest prefix first.
    prefixes: Vec<(String, Handler)>,
    /// `app.rpc_methods`: when not empty, only these methods reach a handler.
    allowed: Vec<String>,
    on_start: Option<Hook<SessionStart>>,
    on_end: Option<Hook<SessionEnd>>,
    /// Takes the methods no handler takes (the standalone HTTP backend).
    fallback: Option<Handler>,
}

impl fmt::Debug for App {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut methods: Vec<String> = self.exact.keys().cloned().collect();
        methods.extend(self.prefixes.iter().map(|(p, _)| format!("{p}*")));
        methods.sort();
        f.debug_struct("App")
            .field("methods", &methods)
            .field("allowed", &self.allowed)
            .field("on_session_start", &self.on_start.is_some())
            .field("on_session_end", &self.on_end.is_some())
            .field("backend", &self.fallback.is_some())
            .finish()
    }
}

impl App {
    /// An application with no handler: every call is `METHOD_NOT_FOUND`.
    pub fn new() -> App {
        App::default()
    }

    /// Routes the methods `pattern` matches (a method, or a prefix ending in
    /// `*`) to `handler`, which gets the caller's context and the call's `data`
    /// (`null` when absent). A later registration of the same pattern replaces
    /// the earlier one.
    ///
    /// # Panics
    /// When `pattern` is not a method pattern (see [`MethodPattern::parse`]): a
    /// mistake in the application's code, found when it starts.
    pub fn handle<F, Fut>(self, pattern: &str, handler: F) -> App
    where
        F: Fn(CallContext, Value) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Value, AppError>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.route(pattern, move |ctx, _method, data| {
            let handler = handler.clone();
            Box::pin(async move {
                let data = serde_json::from_str(data.get()).unwrap_or(Value::Null);
                call_result(handler(ctx, data).await)
            })
        })
    }

    /// The handler of the methods no other handler takes, in the protocol's own
    /// terms (the standalone HTTP backend).
    fn fallback<F>(mut self, handler: F) -> App
    where
        F: Fn(CallContext, String, Payload) -> CallFuture + Send + Sync + 'static,
    {
        self.fallback = Some(Arc::new(handler));
        self
    }

    /// [`App::handle`] for a handler that answers in the protocol's own terms
    /// and gets the method.
    fn route<F>(mut self, pattern: &str, handler: F) -> App
    where
        F: Fn(CallContext, String, Payload) -> CallFuture + Send + Sync + 'static,
    {
        let handler: Handler = Arc::new(handler);
        match MethodPattern::parse(pattern).unwrap_or_else(|e| panic!("App::handle: {e}")) {
            MethodPattern::Exact(name) => {
                self.exact.insert(name, handler);
            }
            MethodPattern::Prefix(prefix) => {
                self.prefixes.retain(|(p, _)| *p != prefix);
                self.prefixes.push((prefix, handler));
                self.prefixes
                    .sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then(a.cmp(b)));
            }
        }
        self
    }

    /// Called on its own task each time a session starts on this node, new or
    /// resumed.
    pub fn on_session_start<F, Fut>(mut self, hook: F) -> App
    where
        F: Fn(SessionStart) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_start = Some(Arc::new(move |e| Box::pin(hook(e))));
        self
    }

    /// Called on its own task each time a session's connection on this node
    /// ends, with why.
    pub fn on_session_end<F, Fut>(mut self, hook: F) -> App
    where
        F: Fn(SessionEnd) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_end = Some(Arc::new(move |e| Box::pin(hook(e))));
        self
    }

    /// Only the methods these patterns match reach a handler (`app.rpc_methods`,
    /// already validated); the others are `METHOD_NOT_FOUND`. Empty: every method.
    pub(crate) fn allow_only(mut self, patterns: Vec<String>) -> App {
        self.allowed = patterns;
        self
    }

    /// The call of `method`, or `None` when no handler takes it.
    pub(crate) fn call(
        &self,
        method: String,
        data: Payload,
        context: CallContext,
    ) -> Option<CallFuture> {
        if !method_allowed(&self.allowed, &method) {
            return None;
        }
        let handler = self
            .exact
            .get(&method)
            .or_else(|| {
                self.prefixes
                    .iter()
                    .find(|(prefix, _)| method.starts_with(prefix.as_str()))
                    .map(|(_, handler)| handler)
            })
            .or(self.fallback.as_ref())?;
        Some(handler(context, method, data))
    }

    /// Runs the start hook, if any, on its own task.
    pub(crate) fn session_started(&self, start: SessionStart) {
        if let Some(hook) = &self.on_start {
            tokio::spawn(hook(start));
        }
    }

    /// Runs the end hook, if any, on its own task.
    pub(crate) fn session_ended(&self, end: SessionEnd) {
        if let Some(hook) = &self.on_end {
            tokio::spawn(hook(end));
        }
    }
}

/// `app` as the configuration completes it: `app.rpc_methods` limits the methods
/// that reach a handler, and `app.rpc_url` takes the methods no embedded handler
/// takes.
pub(crate) fn configured(app: App, config: &Config, node: &Arc<str>) -> Result<App, String> {
    let app = app.allow_only(config.app.rpc_methods.clone());
    let Some(proxy) = Proxy::new(&config.app, node)? else {
        return Ok(app);
    };
    if app.prefixes.iter().any(|(prefix, _)| prefix.is_empty()) {
        tracing::warn!(
            "app.rpc_url is set but an embedded handler takes every method (\"*\"): the backend gets no call"
        );
    }
    let proxy = Arc::new(proxy);
    // Below every embedded handler: the backend takes what they do not.
    Ok(app.fallback(move |ctx, method, data| {
        let proxy = proxy.clone();
        Box::pin(async move {
            let context = wsauth_core::CallContext {
                sub: ctx.sub,
                session_id: ctx.session_id,
                claims: ctx.claims,
            };
            proxy.call(&method, &data, &context).await
        })
    }))
}

/// A handler's answer in the core's terms.
fn call_result(answer: Result<Value, AppError>) -> CallResult {
    let payload = |value: &Value| {
        serde_json::to_string(value)
            .ok()
            .and_then(|json| Payload::from_json(&json).ok())
    };
    match answer {
        Ok(value) => payload(&value).map_or(CallResult::Unavailable, CallResult::Ok),
        Err(AppError { message, details }) => CallResult::AppError {
            message,
            details: details.as_ref().and_then(payload),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context() -> CallContext {
        CallContext {
            sub: "alice".into(),
            session_id: "s_1".into(),
            claims: Arc::new(Claims::new("alice", 0)),
            node: "n1".into(),
        }
    }

    fn named(name: &'static str) -> impl Fn(CallContext, Value) -> CallAnswer + Clone {
        move |_, _| Box::pin(async move { Ok(Value::from(name)) })
    }

    type CallAnswer = Pin<Box<dyn Future<Output = Result<Value, AppError>> + Send>>;

    async fn route(app: &App, method: &str) -> Option<CallResult> {
        let call = app.call(method.into(), Payload::null(), context())?;
        Some(call.await)
    }

    fn answered(name: &str) -> Option<CallResult> {
        Some(CallResult::Ok(
            Payload::from_json(&format!("{name:?}")).expect("json"),
        ))
    }

    #[tokio::test]
    async fn an_exact_name_wins_then_the_longest_prefix() {
        let app = App::new()
            .handle("*", named("any"))
            .handle("chat.*", named("chat"))
            .handle("chat.admin.*", named("admin"))
            .handle("chat.send", named("send"));
        assert_eq!(route(&app, "chat.send").await, answered("send"));
        assert_eq!(route(&app, "chat.admin.kick").await, answered("admin"));
        assert_eq!(route(&app, "chat.edit").await, answered("chat"));
        assert_eq!(route(&app, "game.move").await, answered("any"));
        let only_chat = App::new().handle("chat.*", named("chat"));
        assert_eq!(route(&only_chat, "chatter").await, None);
        assert_eq!(route(&only_chat, "chat.").await, answered("chat"));
    }

    #[tokio::test]
    async fn the_allow_list_hides_every_other_method() {
        let app = App::new()
            .handle("*", named("any"))
            .allow_only(vec!["chat.*".into()]);
        assert_eq!(route(&app, "chat.send").await, answered("any"));
        assert_eq!(route(&app, "admin.drop").await, None);
    }

    #[tokio::test]
    async fn the_handler_gets_the_data_and_its_refusal_keeps_details() {
        let app = App::new().handle("echo", |ctx, data| async move {
            if data.is_null() {
                return Err(AppError::new("no data").with_details(serde_json::json!({"f": 1})));
            }
            Ok(serde_json::json!({ "sub": ctx.sub, "node": &*ctx.node, "data": data }))
        });
        let data = Payload::from_json(r#"{"x":[1,2]}"#).expect("json");
        let ok = app.call("echo".into(), data, context()).expect("routed");
        assert_eq!(
            ok.await,
            CallResult::Ok(
                Payload::from_json(r#"{"data":{"x":[1,2]},"node":"n1","sub":"alice"}"#)
                    .expect("json")
            )
        );
        let refused = app.call("echo".into(), Payload::null(), context());
        assert_eq!(
            refused.expect("routed").await,
            CallResult::AppError {
                message: "no data".into(),
                details: Some(Payload::from_json(r#"{"f":1}"#).expect("json")),
            }
        );
    }

    #[test]
    fn patterns_follow_the_method_charset() {
        for good in ["chat.send", "a", "*", "chat.*", "x/y:z_w-1"] {
            assert!(MethodPattern::parse(good).is_ok(), "{good}");
        }
        let long = "m".repeat(129);
        for bad in ["", "chat send", "ch*at", "chat.*.*", "é", long.as_str()] {
            assert!(MethodPattern::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    #[should_panic(expected = "method pattern")]
    fn registering_a_bad_pattern_stops_the_application_at_start() {
        let _ = App::new().handle("no spaces", named("x"));
    }
}
