//! The operator listener: health, readiness, Prometheus metrics, the dashboard,
//! and the admin API (revocation, sessions, refusals, stats). Admin calls need
//! `Authorization: Bearer <admin key>`; a missing or wrong key gets 401 with an
//! empty body.

use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::Path;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::TcpListener;
use tracing::info;
use wsauth_core::Revocation;
use wsauth_store::Store;

use crate::state::{Shared, now_ms};

/// Every route the admin listener serves: (method, path), paths in OpenAPI style.
/// `docs/openapi.json` describes exactly these (checked by a test).
pub const ROUTES: &[(&str, &str)] = &[
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/dashboard"),
    ("GET", "/api/stats"),
    ("POST", "/admin/revoke"),
    ("GET", "/admin/sessions"),
    ("DELETE", "/admin/sessions/{session_id}"),
    ("GET", "/admin/refusals"),
    ("POST", "/admin/reload"),
    ("POST", "/api/publish"),
    ("POST", "/api/send"),
];

/// Serves the admin listener until the task is aborted.
pub async fn serve<S: Store>(listener: TcpListener, shared: Arc<Shared<S>>) {
    let _ = axum::serve(listener, router(shared)).await;
}

/// Every route of [`ROUTES`], for a listener of the application's choosing.
pub fn router<S: Store>(shared: Arc<Shared<S>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz::<S>))
        .route("/metrics", get(metrics::<S>))
        .route("/dashboard", get(dashboard::<S>))
        .route("/api/stats", get(stats::<S>))
        .route("/admin/revoke", post(revoke::<S>))
        .route("/admin/sessions", get(sessions::<S>))
        .route("/admin/sessions/{session_id}", delete(end_session::<S>))
        .route("/admin/refusals", get(refusals::<S>))
        .route("/admin/reload", post(reload::<S>))
        .with_state(shared.clone())
        .merge(crate::api::routes(shared))
}

/// Whether the request carries the admin key.
fn authorized<S: Store>(shared: &Shared<S>, headers: &HeaderMap) -> bool {
    presents(headers, shared.config.admin_key.as_deref())
}

/// Whether the request carries the API key or the admin key (the server API).
pub(crate) fn authorized_for_api<S: Store>(shared: &Shared<S>, headers: &HeaderMap) -> bool {
    // Both compared, so that the time taken does not say which one matched.
    let api = presents(headers, shared.config.api_key.as_deref());
    let admin = presents(headers, shared.config.admin_key.as_deref());
    api | admin
}

/// Compares the presented key with `expected` without leaking, by timing, how
/// much of it matched (hashing first also hides the length). No key configured:
/// nothing matches.
fn presents(headers: &HeaderMap, expected: Option<&str>) -> bool {
    let Some(expected) = expected else {
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
    if *shared.shutdown.borrow() {
        // Draining: the load balancer should stop sending new connections now.
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else if !shared.check_store().await {
        let lag_ms = shared.store.notice_stream().lag_ms;
        let body = if lag_ms > shared.config.store.max_notice_lag_ms {
            "notice stream unread for longer than store.max_notice_lag_ms\n"
        } else {
            "store unreachable\n"
        };
        (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
    } else if !crate::verify::TokenVerifier::ready(&shared.verifier) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "jwt.jwks_url: no good fetch within jwt.jwks_max_stale_s\n",
        )
            .into_response()
    } else {
        (StatusCode::OK, "ready\n").into_response()
    }
}

async fn metrics<S: Store>(State(shared): State<Arc<Shared<S>>>) -> Response {
    shared
        .metrics
        .set_notice_stream(shared.store.notice_stream());
    let body = shared.metrics.render(shared.hub.live_sessions());
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

const DASHBOARD: &str = include_str!("dashboard.html");

async fn dashboard<S: Store>(State(shared): State<Arc<Shared<S>>>) -> Response {
    if !shared.config.features.dashboard {
        return StatusCode::NOT_FOUND.into_response();
    }
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            // The page loads nothing from elsewhere; say so to the browser. No other
            // page may frame it (clickjacking the key field): `frame-ancestors`,
            // and `X-Frame-Options` for browsers that predate it.
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src 'self' data:; frame-ancestors 'none'",
            ),
            (axum::http::header::X_FRAME_OPTIONS, "DENY"),
        ],
        DASHBOARD,
    )
        .into_response()
}

async fn stats<S: Store>(State(shared): State<Arc<Shared<S>>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let ready = shared.check_store().await;
    let config = &shared.config;
    let mut body = shared.metrics.snapshot();
    let figures = body.as_object_mut().expect("the snapshot is an object");
    let store_latency = figures.remove("store_latency_ms").unwrap_or_default();
    let store_errors = figures.remove("store_errors").unwrap_or_default();
    figures.insert("node".into(), json!(config.effective_node_id()));
    figures.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    figures.insert("time_ms".into(), json!(now_ms()));
    figures.insert(
        "features".into(),
        json!({
            "session_limits": config.features.session_limits,
            "resume": config.features.resume,
            "query_token": config.allow_query_token,
            "dashboard": config.features.dashboard,
        }),
    );
    figures.insert(
        "store".into(),
        json!({
            "kind": match config.store.kind {
                crate::config::StoreKind::Memory => "memory",
                crate::config::StoreKind::Redis => "redis",
            },
            "ready": ready,
            "errors": store_errors,
            "latency_ms": store_latency,
        }),
    );
    figures.insert(
        "sessions".into(),
        json!({"live": shared.hub.live_sessions()}),
    );
    Json(body).into_response()
}

async fn refusals<S: Store>(State(shared): State<Arc<Shared<S>>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let (users, jtis) = shared.metrics.refusals(20);
    let users: Vec<_> = users
        .into_iter()
        .map(|(sub, count)| json!({"sub": sub, "count": count}))
        .collect();
    let jtis: Vec<_> = jtis
        .into_iter()
        .map(|(jti, count)| json!({"jti": jti, "count": count}))
        .collect();
    Json(json!({"users": users, "jtis": jtis})).into_response()
}

async fn end_session<S: Store>(
    State(shared): State<Arc<Shared<S>>>,
    headers: HeaderMap,
    Path(session_id): Path<String>,
) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let now = now_ms();
    let known = match shared.store.session(&session_id).await {
        Ok(info) => info.is_some(),
        Err(_) => return store_unreachable(),
    };
    if !known {
        return Json(json!({"ended": false})).into_response();
    }
    match shared
        .store
        .revoke(Revocation::Session { session_id }, now)
        .await
    {
        Ok(closed) => {
            shared.metrics.revocation_issued("session");
            info!(closed, "session ended by the admin API");
            Json(json!({"ended": true})).into_response()
        }
        Err(_) => store_unreachable(),
    }
}

/// Re-reads the key and certificate files (see [`crate::reload`]): 200 with
/// what was reloaded, or 500 with the refused parts named in `error` (the
/// others reloaded all the same).
async fn reload<S: Store>(State(shared): State<Arc<Shared<S>>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return unauthorized();
    }
    let reloader = shared.reloader();
    let Ok(reloaded) = tokio::task::spawn_blocking(move || reloader.reload("admin")).await else {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": "the reload did not finish"})),
        )
            .into_response();
    };
    let parts = json!({
        "keys": matches!(reloaded.keys, Ok(true)),
        "tls": matches!(reloaded.tls, Ok(true)),
    });
    let refused: Vec<String> = [("keys", &reloaded.keys), ("tls", &reloaded.tls)]
        .into_iter()
        .filter_map(|(part, result)| result.as_ref().err().map(|e| format!("{part}: {e}")))
        .collect();
    if refused.is_empty() {
        Json(json!({ "reloaded": parts })).into_response()
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({ "error": refused.join("; "), "reloaded": parts })),
        )
            .into_response()
    }
}

fn store_unreachable() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(json!({"error": "store unreachable"})),
    )
        .into_response()
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
    let now = now_ms();
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
            shared.metrics.revocation_issued(kind);
            info!(kind, closed = n, "revoked");
            Json(serde_json::json!({ "revoked": n })).into_response()
        }
        Err(_) => store_unreachable(),
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
                        "node": s.node.clone().unwrap_or_else(|| shared.config.effective_node_id()),
                        "created_at": s.created_at_ms,
                        "expires_at": s.expires_at_ms,
                        "channels": s.channels,
                    })
                })
                .collect();
            Json(serde_json::json!({ "sub": sub, "sessions": sessions })).into_response()
        }
        Err(_) => store_unreachable(),
    }
}
