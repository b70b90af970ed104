//! The server API (PROTOCOL §9): the application pushes messages to channels and
//! to users, through the same `seq`, replay buffer and resume replay as a user's
//! publish, on every node that shares the store. [`Api`] is the embedded form;
//! `POST /api/publish` and `POST /api/send` on the admin listener are the HTTP
//! form (`routes`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use wsauth_core::protocol::{
    CHANNEL_NAME_RULE, MAX_CHANNEL_BYTES, MAX_USER_ID_BYTES, Payload, is_channel_name,
};
use wsauth_store::{SessionInfo, Store, StoreError};

use crate::state::{Shared, now_ms};

/// Why an API call did nothing.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// The call itself is wrong (HTTP 400, `BAD_REQUEST`); the message says how.
    #[error("{0}")]
    BadRequest(String),
    /// The store did not answer (HTTP 503); nothing was delivered.
    #[error("the session store is unavailable")]
    Unavailable,
}

type Answer<T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send>>;

/// What the API needs of a node, whatever its store.
trait Node: Send + Sync {
    fn publish(&self, channel: String, data: Payload) -> Answer<usize>;
    fn send(&self, sub: String, data: Payload) -> Answer<usize>;
    fn sessions_of(&self, sub: String) -> Answer<Vec<SessionInfo>>;
    fn max_message_bytes(&self) -> usize;
}

impl<S: Store> Node for Arc<Shared<S>> {
    fn publish(&self, channel: String, data: Payload) -> Answer<usize> {
        let shared = self.clone();
        Box::pin(async move {
            let call = shared.store.publish(&channel, None, data, now_ms());
            within(shared.store_timeout, call).await
        })
    }

    fn send(&self, sub: String, data: Payload) -> Answer<usize> {
        let shared = self.clone();
        Box::pin(async move {
            let call = shared.store.send_to_user(&sub, data, now_ms());
            within(shared.store_timeout, call).await
        })
    }

    fn sessions_of(&self, sub: String) -> Answer<Vec<SessionInfo>> {
        let shared = self.clone();
        Box::pin(async move {
            let call = shared.store.sessions_of(&sub);
            within(shared.store_timeout, call).await
        })
    }

    fn max_message_bytes(&self) -> usize {
        self.config.limits.max_message_bytes
    }
}

async fn within<T>(
    limit: std::time::Duration,
    call: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| Err(StoreError::Unavailable("store call timed out".into())))
}

/// The server API of a running node, for the application that embeds it
/// ([`ServerHandle::api`](crate::ServerHandle::api)). Cheap to clone.
#[derive(Clone)]
pub struct Api {
    node: Arc<dyn Node>,
}

impl std::fmt::Debug for Api {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Api").finish_non_exhaustive()
    }
}

impl Api {
    /// The API of the node `shared` describes.
    pub fn new<S: Store>(shared: Arc<Shared<S>>) -> Api {
        Api {
            node: Arc::new(shared),
        }
    }

    /// Delivers `data` to every session joined to `channel`, on every node, as a
    /// `message` with no `from`. Returns how many sessions it reached (resumable
    /// ones included: they get it in their replay).
    pub async fn publish(&self, channel: &str, data: &Value) -> Result<usize, ApiError> {
        check_channel(channel)?;
        let data = self.payload(data)?;
        self.node
            .publish(channel.to_owned(), data)
            .await
            .map_err(unavailable)
    }

    /// Delivers `data` to every session of user `sub`, live or resumable, on
    /// channel `user:<sub>` (joined or not), with no `from`. Returns how many
    /// sessions it reached.
    pub async fn send(&self, sub: &str, data: &Value) -> Result<usize, ApiError> {
        check_sub(sub)?;
        let data = self.payload(data)?;
        self.node
            .send(sub.to_owned(), data)
            .await
            .map_err(unavailable)
    }

    /// The sessions of user `sub` a connection holds now, on any node.
    pub async fn live_sessions(&self, sub: &str) -> Result<Vec<SessionInfo>, ApiError> {
        let mut sessions = self.sessions(sub).await?;
        sessions.retain(|s| s.attached);
        Ok(sessions)
    }

    /// Every session of user `sub` the store holds: live, or resumable within
    /// the grace period.
    pub async fn sessions(&self, sub: &str) -> Result<Vec<SessionInfo>, ApiError> {
        check_sub(sub)?;
        self.node
            .sessions_of(sub.to_owned())
            .await
            .map_err(unavailable)
    }

    fn payload(&self, data: &Value) -> Result<Payload, ApiError> {
        let json = data.to_string();
        let limit = self.node.max_message_bytes();
        if json.len() > limit {
            return Err(ApiError::BadRequest(format!(
                "`data` is {} bytes; limits.max_message_bytes is {limit}",
                json.len()
            )));
        }
        Payload::from_json(&json).map_err(|_| ApiError::BadRequest("`data` is not JSON".into()))
    }
}

fn unavailable(e: StoreError) -> ApiError {
    tracing::warn!(error = %e, "server API: store unavailable");
    ApiError::Unavailable
}

fn check_channel(channel: &str) -> Result<(), ApiError> {
    if channel.len() > MAX_CHANNEL_BYTES {
        return Err(ApiError::BadRequest(format!(
            "`channel` is longer than {MAX_CHANNEL_BYTES} bytes"
        )));
    }
    if !is_channel_name(channel) {
        return Err(ApiError::BadRequest(CHANNEL_NAME_RULE.into()));
    }
    Ok(())
}

fn check_sub(sub: &str) -> Result<(), ApiError> {
    if sub.is_empty() || sub.len() > MAX_USER_ID_BYTES {
        return Err(ApiError::BadRequest(format!(
            "`sub` must be a user id of 1 to {MAX_USER_ID_BYTES} bytes"
        )));
    }
    Ok(())
}

/// The server API's routes, behind the API key (or the admin key).
pub(crate) fn routes<S: Store>(shared: Arc<Shared<S>>) -> Router {
    Router::new()
        .route("/api/publish", post(publish_route::<S>))
        .route("/api/send", post(send_route::<S>))
        .with_state(shared)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(default)]
    data: Option<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendBody<'a> {
    #[serde(borrow)]
    sub: std::borrow::Cow<'a, str>,
    #[serde(default)]
    data: Option<&'a RawValue>,
}

async fn publish_route<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = "/api/publish";
    let answer = async {
        let body: PublishBody = parse(&body)?;
        let data = raw_data(body.data)?;
        Api::new(shared.clone()).publish(&body.channel, &data).await
    };
    respond(&shared, route, &headers, answer).await
}

async fn send_route<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let route = "/api/send";
    let answer = async {
        let body: SendBody = parse(&body)?;
        let data = raw_data(body.data)?;
        Api::new(shared.clone()).send(&body.sub, &data).await
    };
    respond(&shared, route, &headers, answer).await
}

fn parse<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::BadRequest(format!("bad body: {e}")))
}

fn raw_data(data: Option<&RawValue>) -> Result<Value, ApiError> {
    match data {
        None => Ok(Value::Null),
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|e| ApiError::BadRequest(format!("bad `data`: {e}"))),
    }
}

/// Checks the key, runs the call, answers and counts it.
async fn respond<S: Store>(
    shared: &Shared<S>,
    route: &'static str,
    headers: &HeaderMap,
    answer: impl Future<Output = Result<usize, ApiError>>,
) -> Response {
    let (status, body) = if !crate::admin::authorized_for_api(shared, headers) {
        (StatusCode::UNAUTHORIZED, None)
    } else {
        match answer.await {
            Ok(sessions) => (StatusCode::OK, Some(json!({ "sessions": sessions }))),
            Err(e @ ApiError::BadRequest(_)) => (
                StatusCode::BAD_REQUEST,
                Some(json!({"code": "BAD_REQUEST", "message": e.to_string()})),
            ),
            Err(e @ ApiError::Unavailable) => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(json!({"code": "INTERNAL", "message": e.to_string()})),
            ),
        }
    };
    shared.metrics.api_request(route, status.as_u16());
    match body {
        Some(body) => (status, axum::Json(body)).into_response(),
        None => status.into_response(),
    }
}
