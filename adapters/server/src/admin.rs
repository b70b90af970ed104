//! The operator listener: health, readiness, and the admin API (revocation,
//! sessions). Admin calls need `Authorization: Bearer <admin key>`.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tracing::info;
use wsauth_core::Revocation;
use wsauth_store::Store;

use crate::server::Shared;

/// Serves the admin listener until the task is aborted.
pub async fn serve<S: Store>(listener: TcpListener, shared: Arc<Shared<S>>) {
    let app = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<S>))
        .route("/admin/revoke", post(revoke::<S>))
        .route("/admin/sessions", get(sessions::<S>))
        .with_state(shared);
    let _ = axum::serve(listener, app).await;
}

/// Compares the presented key with the configured one without leaking, by timing,
/// how much of it matched (hashing first also hides the length).
fn authorized<S: Store>(shared: &Shared<S>, headers: &HeaderMap) -> bool {
    let Some(expected) = shared.config.admin_key.as_deref() else {
        return false;
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let a = Sha256::digest(presented.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    bool::from(a.ct_eq(&b))
}

fn unauthorized() -> Response {
    StatusCode::UNAUTHORIZED.into_response()
}

async fn readyz<S: Store>(State(shared): State<Arc<Shared<S>>>) -> Response {
    match shared.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n").into_response(),
        Err(_) => (StatusCode::SERVICE_UNAVAILABLE, "store unreachable\n").into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeBody {
    jti: Option<String>,
    sub: Option<String>,
    session_id: Option<String>,
}

async fn revoke<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let bad = |msg: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": msg})),
        )
            .into_response()
    };
    let Ok(body) = serde_json::from_slice::<RevokeBody>(&body) else {
        return bad("expected {\"jti\":…}, {\"sub\":…} or {\"session_id\":…}");
    };
    let now = crate::conn::now_ms();
    let revocation = match (body.jti, body.sub, body.session_id) {
        (Some(jti), None, None) if !jti.is_empty() => Revocation::Token { jti },
        (None, Some(sub), None) if !sub.is_empty() => Revocation::Subject {
            sub,
            at_s: now / 1000,
        },
        (None, None, Some(session_id)) if !session_id.is_empty() => {
            Revocation::Session { session_id }
        }
        _ => return bad("give exactly one of jti, sub, session_id"),
    };
    let kind = match &revocation {
        Revocation::Token { .. } => "jti",
        Revocation::Subject { .. } => "sub",
        Revocation::Session { .. } => "session",
    };
    match shared.store.revoke(revocation, now).await {
        Ok(n) => {
            info!(kind, closed = n, "revoked");
            Json(serde_json::json!({ "revoked": n })).into_response()
        }
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({"error": "store unreachable"})),
        )
            .into_response(),
    }
}

async fn sessions<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let Some(sub) = query.get("sub").filter(|s| !s.is_empty()) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(serde_json::json!({"error": "sub is required"})),
        )
            .into_response();
    };
    match shared.store.sessions_of(sub).await {
        Ok(list) => {
            let sessions: Vec<serde_json::Value> = list
                .into_iter()
                .map(|s| {
                    serde_json::json!({
                        "session_id": s.session_id,
                        "attached": s.attached,
                        "created_at": s.created_at_ms,
                        "expires_at": s.expires_at_ms,
                        "channels": s.channels,
                    })
                })
                .collect();
            Json(serde_json::json!({ "sub": sub, "sessions": sessions })).into_response()
        }
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}
