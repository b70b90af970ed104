//! The operator documentation against the real server: `docs/openapi.json` names
//! exactly the routes the admin router serves (and each admin route its bearer key
//! and its 401), every route is served and answers the documented shape, the
//! Grafana dashboard only queries series the server exposes, and
//! `docs/admin-api.md` mentions every route and every exposed metric.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "support/doc_metrics.rs"]
mod doc_metrics;

use std::collections::{BTreeMap, BTreeSet};

use common::{ADMIN_KEY, Client, http, token};
use doc_metrics::{dashboard_exprs, metric_names};
use serde_json::{Value, json};
use wsauth_server::admin::ROUTES;

const OPENAPI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../docs/grafana-dashboard.json"
);
const ADMIN_API_MD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/admin-api.md");

const HTTP_METHODS: &[&str] = &[
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn read_json(path: &str) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

/// Routes that need the admin key: everything under `/admin/` and `/api/`.
fn is_admin(path: &str) -> bool {
    path.starts_with("/admin/") || path.starts_with("/api/")
}

/// The (METHOD, path) pairs of an OpenAPI document, with their operation objects.
fn openapi_operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut ops = BTreeMap::new();
    let paths = doc["paths"].as_object().expect("openapi.json has paths");
    for (path, item) in paths {
        let item = item.as_object().expect("a path item is an object");
        for (method, op) in item {
            if HTTP_METHODS.contains(&method.as_str()) {
                ops.insert((method.to_uppercase(), path.clone()), op.clone());
            }
        }
    }
    ops
}

fn routes() -> BTreeSet<(String, String)> {
    ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect()
}

/// A concrete path for a template: every `{param}` becomes `value`.
fn fill(template: &str, value: &str) -> String {
    template
        .split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                value
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

// ---------------------------------------------------------------------------
// A small JSON Schema checker: enough of 2020-12 for the schemas in openapi.json.

fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local $ref");
            let target = root
                .pointer(pointer)
                .unwrap_or_else(|| panic!("dangling $ref {r}"));
            resolve(root, target)
        }
        None => schema,
    }
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "object" => v.is_object(),
        "array" => v.is_array(),
        "string" => v.is_string(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "boolean" => v.is_boolean(),
        "null" => v.is_null(),
        other => panic!("unknown schema type {other}"),
    }
}

/// The ways `value` departs from `schema`, as `where: what` lines.
fn violations(root: &Value, schema: &Value, value: &Value, at: &str) -> Vec<String> {
    let schema = resolve(root, schema);
    let mut out = Vec::new();
    if let Some(alternatives) = schema.get("oneOf").and_then(Value::as_array) {
        let matching = alternatives
            .iter()
            .filter(|s| violations(root, s, value, at).is_empty())
            .count();
        if matching != 1 {
            out.push(format!(
                "{at}: matches {matching} of the oneOf, not 1: {value}"
            ));
        }
    }
    match schema.get("type") {
        Some(Value::String(t)) if !type_matches(t, value) => {
            out.push(format!("{at}: expected {t}, got {value}"));
            return out;
        }
        Some(Value::Array(ts))
            if !ts
                .iter()
                .any(|t| type_matches(t.as_str().expect("type name"), value)) =>
        {
            out.push(format!("{at}: expected one of {ts:?}, got {value}"));
            return out;
        }
        _ => {}
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
        && !allowed.contains(value)
    {
        out.push(format!("{at}: {value} not in {allowed:?}"));
    }
    if let (Some(min), Some(n)) = (
        schema.get("minimum").and_then(Value::as_f64),
        value.as_f64(),
    ) && n < min
    {
        out.push(format!("{at}: {n} below the minimum {min}"));
    }
    if let (Some(min), Some(s)) = (
        schema.get("minLength").and_then(Value::as_u64),
        value.as_str(),
    ) && (s.chars().count() as u64) < min
    {
        out.push(format!("{at}: shorter than {min}"));
    }
    if let Some(obj) = value.as_object() {
        let props = schema.get("properties").and_then(Value::as_object);
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !obj.contains_key(key) {
                    out.push(format!("{at}: missing \"{key}\" in {value}"));
                }
            }
        }
        for (key, v) in obj {
            let here = format!("{at}.{key}");
            match props.and_then(|p| p.get(key)) {
                Some(s) => out.extend(violations(root, s, v, &here)),
                None => match schema.get("additionalProperties") {
                    Some(Value::Bool(false)) => {
                        out.push(format!("{at}: undocumented field \"{key}\""))
                    }
                    Some(s @ Value::Object(_)) => out.extend(violations(root, s, v, &here)),
                    _ => {}
                },
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64)
            && items.len() as u64 > max
        {
            out.push(format!("{at}: {} items, more than {max}", items.len()));
        }
        if let Some(s) = schema.get("items") {
            for (i, v) in items.iter().enumerate() {
                out.extend(violations(root, s, v, &format!("{at}[{i}]")));
            }
        }
    }
    out
}

/// Checks a JSON body against the schema `openapi.json` gives for that response.
fn assert_documented_body(doc: &Value, method: &str, path: &str, status: u16, body: &str) {
    let op = &doc["paths"][path][method.to_lowercase()];
    let response = resolve(doc, &op["responses"][status.to_string()]);
    assert!(
        response.is_object(),
        "{method} {path} answered {status}, which openapi.json does not list ({body})"
    );
    let Some(schema) = response
        .get("content")
        .and_then(|c| c.get("application/json"))
        .and_then(|c| c.get("schema"))
    else {
        return;
    };
    let value: Value = serde_json::from_str(body)
        .unwrap_or_else(|e| panic!("{method} {path} {status}: not JSON ({e}): {body:?}"));
    let problems = violations(doc, schema, &value, "$");
    assert!(
        problems.is_empty(),
        "{method} {path} {status} departs from openapi.json:\n  {}\nbody: {body}",
        problems.join("\n  ")
    );
}

// ---------------------------------------------------------------------------
// The Prometheus exposition.

/// The metric families of an exposition: name → type (from the `# TYPE` lines).
/// Counters are declared without `_total` in OpenMetrics, with it in the classic format.
fn families(exposition: &str) -> BTreeMap<String, String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let mut parts = l.split_whitespace();
            let name = parts.next().expect("family name").to_owned();
            let kind = parts.next().expect("family type").to_owned();
            (name, kind)
        })
        .collect()
}

/// The samples of an exposition: (series name, labels, value).
fn samples(exposition: &str) -> Vec<(String, BTreeMap<String, String>, String)> {
    let mut out = Vec::new();
    for line in exposition.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line has a value");
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => {
                let inner = rest.strip_suffix('}').expect("closing brace");
                let mut labels = BTreeMap::new();
                // Label values here are codes and names: no commas or quotes inside.
                for pair in inner.split(',').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').expect("label=value");
                    labels.insert(k.to_owned(), v.trim_matches('"').to_owned());
                }
                (name, labels)
            }
            None => (series, BTreeMap::new()),
        };
        out.push((name.to_owned(), labels, value.to_owned()));
    }
    out
}

/// The family a series name belongs to, and that family's type, if it is exposed:
/// `x_total` → counter `x` (or `x_total`), `x_bucket|_sum|_count` → histogram `x`.
fn family_of(families: &BTreeMap<String, String>, series: &str) -> Option<(String, String)> {
    if let Some(kind) = families.get(series) {
        return Some((series.to_owned(), kind.clone()));
    }
    for (suffix, kinds) in [
        ("_total", &["counter"][..]),
        ("_bucket", &["histogram"][..]),
        ("_sum", &["histogram", "summary"][..]),
        ("_count", &["histogram", "summary"][..]),
    ] {
        if let Some(base) = series.strip_suffix(suffix)
            && let Some(kind) = families.get(base)
            && kinds.contains(&kind.as_str())
        {
            return Some((base.to_owned(), kind.clone()));
        }
    }
    None
}

/// The name an operator queries for a family: counters with `_total`.
fn exposed_name(family: &str, kind: &str) -> String {
    if kind == "counter" && !family.ends_with("_total") {
        format!("{family}_total")
    } else {
        family.to_owned()
    }
}

/// The labels each family carries, as documented (besides `le` on buckets).
fn documented_labels() -> BTreeMap<&'static str, &'static [&'static str]> {
    BTreeMap::from([
        ("wsauth_connections_open", &[][..]),
        ("wsauth_sessions_live", &[][..]),
        ("wsauth_store_up", &[][..]),
        ("wsauth_store_notice_lag_seconds", &[][..]),
        ("wsauth_store_notices_lost", &["reason"][..]),
        ("wsauth_upgrades_refused", &["code"][..]),
        ("wsauth_auth", &["method", "outcome", "code"][..]),
        ("wsauth_refresh", &["outcome", "code"][..]),
        ("wsauth_resume", &["outcome", "code"][..]),
        ("wsauth_resume_replayed_messages", &[][..]),
        ("wsauth_resume_gaps", &[][..]),
        ("wsauth_sessions_expired", &[][..]),
        ("wsauth_sessions_replaced", &[][..]),
        ("wsauth_evictions", &[][..]),
        ("wsauth_expiring_sent", &[][..]),
        ("wsauth_revocations", &["kind"][..]),
        ("wsauth_revocation_closes", &[][..]),
        ("wsauth_rate_limited", &[][..]),
        ("wsauth_slow_consumer_closes", &[][..]),
        ("wsauth_messages_in", &[][..]),
        ("wsauth_messages_out", &[][..]),
        ("wsauth_closes", &["close_code", "error_code"][..]),
        ("wsauth_store_errors", &["op"][..]),
        ("wsauth_auth_duration_seconds", &[][..]),
        ("wsauth_token_verify_duration_seconds", &[][..]),
        ("wsauth_refresh_duration_seconds", &[][..]),
        ("wsauth_refresh_time_left_seconds", &[][..]),
        ("wsauth_revocation_propagation_seconds", &[][..]),
        ("wsauth_store_duration_seconds", &["op"][..]),
        ("wsauth_rpc", &["outcome"][..]),
        ("wsauth_rpc_duration_seconds", &[][..]),
        ("wsauth_api_requests", &["route", "status"][..]),
        ("wsauth_jwks_fetch", &["outcome"][..]),
        ("wsauth_introspection_requests", &["outcome"][..]),
        ("wsauth_jwks_keys", &[][..]),
        ("wsauth_jwks_age_seconds", &[][..]),
        ("wsauth_config_reloads", &["outcome"][..]),
        ("wsauth_build_info", &["version", "commit"][..]),
        ("process_cpu_seconds", &[][..]),
        ("process_resident_memory_bytes", &[][..]),
        ("process_virtual_memory_bytes", &[][..]),
        ("process_open_fds", &[][..]),
        ("process_max_fds", &[][..]),
        ("process_threads", &[][..]),
        ("process_start_time_seconds", &[][..]),
    ])
}

/// Strips a trailing `_total` so that both exposition styles name a counter alike.
fn family_key(family: &str) -> &str {
    family.strip_suffix("_total").unwrap_or(family)
}

/// Drives one successful and one failed authentication over a WebSocket.
async fn drive_auths(ws: std::net::SocketAddr) -> Client {
    let (ok, _) = Client::authed(ws, &token("metrics-user", json!({}))).await;
    let mut bad = Client::connect(ws).await;
    bad.send(json!({"type": "auth", "id": 1, "token": "not-a-jwt"}))
        .await;
    bad.expect_fatal("INVALID_TOKEN", 4401).await;
    ok
}

/// Starts a server, drives one successful and one failed authentication, then one
/// of each event behind a labelled family (a refusal at the upgrade, a refresh, a
/// resume, a revocation, a store error): the server exposes a labelled family only
/// once it has a series. Returns the `/metrics` text.
async fn scrape_after_traffic() -> String {
    let (server, store) = common::server_with_switchable_store(common::test_config()).await;
    let ws = server.ws_addr;
    let admin = server.admin_addr;
    let first = drive_auths(ws).await;
    first.close(1000).await;

    // wsauth_upgrades_refused_total: a bad token in the upgrade's header.
    let refused = Client::connect_with(ws, &[("Authorization", "Bearer not-a-jwt")]).await;
    assert!(
        refused.is_err(),
        "a bad header token is refused at the upgrade"
    );

    // wsauth_refresh_total and wsauth_resume_total.
    let (mut c, reply) = Client::authed(ws, &token("metrics-user", json!({}))).await;
    c.send(json!({"type": "refresh", "id": 2, "token": token("metrics-user", json!({}))}))
        .await;
    let refreshed = c.recv().await;
    assert_eq!(refreshed["type"], "refreshed", "{refreshed}");
    c.drop_connection();
    let mut again = Client::connect(ws).await;
    again
        .send(
            json!({"type": "resume", "id": 1, "session_id": reply["session_id"],
                     "resume_token": reply["resume_token"], "last_seq": 0}),
        )
        .await;
    let resumed = again.recv().await;
    assert_eq!(resumed["type"], "resumed", "{resumed}");

    // wsauth_revocations_total.
    let (status, text) = http(
        admin,
        "POST",
        "/admin/revoke",
        Some(ADMIN_KEY),
        Some(json!({"sub": "metrics-nobody"})),
    )
    .await;
    assert_eq!(status, 200, "{text}");

    // wsauth_store_errors_total: the store is away for one readiness check.
    store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    let (status, _) = http(admin, "GET", "/readyz", None, None).await;
    store.down.store(false, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(status, 503);

    let (status, exposition) = http(admin, "GET", "/metrics", None, None).await;
    assert_eq!(status, 200, "{exposition}");
    again.close(1000).await;
    server.shutdown().await;
    exposition
}

// ---------------------------------------------------------------------------
// (a) openapi.json against the router.

#[test]
fn openapi_lists_exactly_the_routes_the_router_serves() {
    let doc = read_json(OPENAPI);
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "OpenAPI 3.1 expected, got {}",
        doc["openapi"]
    );
    let ops = openapi_operations(&doc);
    let documented: BTreeSet<(String, String)> = ops.keys().cloned().collect();
    let served = routes();
    assert_eq!(
        documented,
        served,
        "openapi.json and admin::ROUTES differ.\n only in openapi.json: {:?}\n only in ROUTES: {:?}",
        documented.difference(&served).collect::<Vec<_>>(),
        served.difference(&documented).collect::<Vec<_>>()
    );

    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("components.securitySchemes");
    let bearer: BTreeSet<&str> = schemes
        .iter()
        .filter(|(_, s)| {
            s["type"] == "http"
                && s["scheme"]
                    .as_str()
                    .is_some_and(|v| v.eq_ignore_ascii_case("bearer"))
        })
        .map(|(name, _)| name.as_str())
        .collect();
    assert!(!bearer.is_empty(), "no http bearer security scheme");

    let root_security = doc.get("security").cloned().unwrap_or(json!([]));
    for ((method, path), op) in &ops {
        let security = op.get("security").unwrap_or(&root_security);
        let requirements = security.as_array().expect("security is an array");
        let requires_bearer = !requirements.is_empty()
            && requirements.iter().all(|req| {
                req.as_object()
                    .expect("a security requirement is an object")
                    .keys()
                    .any(|k| bearer.contains(k.as_str()))
            });
        assert!(
            op["responses"]["200"].is_object(),
            "{method} {path} documents no 200"
        );
        if is_admin(path) {
            assert!(
                requires_bearer,
                "{method} {path} must require the bearer key"
            );
            assert!(
                op["responses"]["401"].is_object(),
                "{method} {path} must document its 401"
            );
        } else {
            assert!(
                requirements.is_empty(),
                "{method} {path} needs no key but openapi.json says {security}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// (b) every route is served, answers the documented shape, and nothing else is.

#[tokio::test]
async fn every_route_is_served_as_documented_and_nothing_else() {
    let doc = read_json(OPENAPI);
    let server = common::server(common::test_config()).await;
    let admin = server.admin_addr;

    // Something to list, to refuse and to end.
    let (mut alice, reply) = Client::authed(
        server.ws_addr,
        &token("doc-alice", json!({"channels": ["team:*"]})),
    )
    .await;
    let session_id = reply["session_id"]
        .as_str()
        .expect("authenticated carries session_id")
        .to_owned();
    alice
        .send(json!({"type": "join", "id": 2, "channel": "team:1"}))
        .await;
    let joined = alice.recv().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let revoked_jti = "doc-revoked-jti";
    let revoked_token = token("doc-mallory", json!({"jti": revoked_jti}));
    let (status, body) = http(
        admin,
        "POST",
        "/admin/revoke",
        Some(ADMIN_KEY),
        Some(json!({"jti": revoked_jti})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut mallory = Client::connect(server.ws_addr).await;
    mallory
        .send(json!({"type": "auth", "id": 1, "token": revoked_token}))
        .await;
    mallory.expect_fatal("TOKEN_REVOKED", 4403).await;

    for (method, template) in ROUTES {
        let path = fill(template, "s_doc_unknown_session");
        let (path, body) = match (*method, *template) {
            ("GET", "/admin/sessions") => (format!("{path}?sub=doc-alice"), None),
            ("POST", "/admin/revoke") => (path, Some(json!({"sub": "doc-nobody"}))),
            ("POST", "/api/publish") => (path, Some(json!({"channel": "team:1", "data": 1}))),
            ("POST", "/api/send") => (path, Some(json!({"sub": "doc-alice", "data": 2}))),
            _ => (path, None),
        };

        // With the key: served, and in the documented shape.
        let (status, text) = http(admin, method, &path, Some(ADMIN_KEY), body.clone()).await;
        assert!(
            status != 404 && status != 405,
            "{method} {path} is in ROUTES but answers {status}"
        );
        assert_eq!(status, 200, "{method} {path}: {text}");
        assert_documented_body(&doc, method, template, status, &text);

        // Without a key, or with a wrong one: admin routes answer 401 and say nothing.
        if is_admin(template) {
            for key in [None, Some("wrong-key-of-sufficient-length")] {
                let (status, text) = http(admin, method, &path, key, body.clone()).await;
                assert_eq!(status, 401, "{method} {path} with key {key:?}: {text}");
                assert_eq!(text, "", "{method} {path}: a 401 reveals nothing");
                assert_documented_body(&doc, method, template, status, &text);
            }
        }
    }

    // The plain-text and HTML routes, as documented.
    assert_eq!(
        http(admin, "GET", "/healthz", None, None).await,
        (200, "ok\n".to_owned())
    );
    assert_eq!(
        http(admin, "GET", "/readyz", None, None).await,
        (200, "ready\n".to_owned())
    );
    let (_, page) = http(admin, "GET", "/dashboard", None, None).await;
    let lower = page.to_ascii_lowercase();
    assert!(
        lower.starts_with("<!doctype html") || lower.contains("<html"),
        "/dashboard is an HTML page: {page:.200}"
    );
    let (_, exposition) = http(admin, "GET", "/metrics", None, None).await;
    assert!(exposition.contains("# TYPE wsauth_"), "{exposition:.500}");

    // The bodies the description gives.
    let (_, text) = http(
        admin,
        "GET",
        "/admin/sessions?sub=doc-alice",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    let listed: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(listed["sub"], "doc-alice", "{listed}");
    let sessions = listed["sessions"].as_array().expect("sessions");
    assert_eq!(sessions.len(), 1, "{listed}");
    assert_eq!(sessions[0]["session_id"], session_id.as_str(), "{listed}");
    assert_eq!(sessions[0]["attached"], true, "{listed}");
    assert_eq!(sessions[0]["channels"], json!(["team:1"]), "{listed}");
    assert!(
        !text.contains("eyJ"),
        "no token in a session listing: {text}"
    );

    let (_, text) = http(admin, "GET", "/admin/refusals", Some(ADMIN_KEY), None).await;
    let refusals: Value = serde_json::from_str(&text).expect("JSON");
    assert!(
        refusals["users"]
            .as_array()
            .expect("users")
            .contains(&json!({"sub": "doc-mallory", "count": 1})),
        "{refusals}"
    );
    assert!(
        refusals["jtis"]
            .as_array()
            .expect("jtis")
            .contains(&json!({"jti": revoked_jti, "count": 1})),
        "{refusals}"
    );
    assert!(
        !exposition.contains("doc-mallory") && !exposition.contains(revoked_jti),
        "a user or a jti in the metrics"
    );

    // The key is checked first: without it a bad request learns nothing either.
    let (status, text) = http(admin, "GET", "/admin/sessions", None, None).await;
    assert_eq!((status, text.as_str()), (401, ""));
    let (status, text) = http(admin, "POST", "/admin/revoke", None, Some(json!({}))).await;
    assert_eq!((status, text.as_str()), (401, ""));
    let (status, text) = http(admin, "GET", "/admin/sessions", Some(ADMIN_KEY), None).await;
    assert_eq!(status, 400, "{text}");
    assert_documented_body(&doc, "GET", "/admin/sessions", status, &text);
    for bad in [
        json!({}),
        json!({"jti": "a", "sub": "b"}),
        json!({"jti": ""}),
        json!({"user": "a"}),
    ] {
        let (status, text) = http(admin, "POST", "/admin/revoke", Some(ADMIN_KEY), Some(bad)).await;
        assert_eq!(status, 400, "{text}");
        assert_documented_body(&doc, "POST", "/admin/revoke", status, &text);
    }

    let (_, text) = http(admin, "GET", "/api/stats", Some(ADMIN_KEY), None).await;
    let stats: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(stats["sessions"]["live"], 1, "{stats}");
    assert_eq!(stats["features"]["dashboard"], true, "{stats}");

    // Ending alice's session closes her socket, as documented.
    let path = fill("/admin/sessions/{session_id}", &session_id);
    let (status, text) = http(admin, "DELETE", &path, Some(ADMIN_KEY), None).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&text).ok()),
        (200, Some(json!({"ended": true}))),
        "{text}"
    );
    alice.expect_fatal("SESSION_REVOKED", 4403).await;

    // Nothing but ROUTES: an unknown path is 404, a known path with another method 405.
    for path in [
        "/admin/nope",
        "/api/nope",
        "/admin",
        "/nope",
        "/metrics/x",
        "/admin/sessions/",
    ] {
        let (status, text) = http(admin, "GET", path, Some(ADMIN_KEY), None).await;
        assert_eq!(status, 404, "GET {path} is not a route: {text}");
    }
    let served = routes();
    for (_, template) in ROUTES {
        let path = fill(template, "s_doc_unknown_session");
        for method in ["GET", "POST", "PUT", "DELETE", "PATCH"] {
            if served.contains(&(method.to_owned(), template.to_string())) {
                continue;
            }
            let (status, _) = http(admin, method, &path, Some(ADMIN_KEY), None).await;
            assert_eq!(status, 405, "{method} {path} is not in ROUTES");
        }
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_dashboard_page_is_404_when_switched_off() {
    let mut config = common::test_config();
    config.features.dashboard = false;
    let server = common::server(config).await;
    let (status, body) = http(server.admin_addr, "GET", "/dashboard", None, None).await;
    assert_eq!((status, body.as_str()), (404, ""));
    let (_, text) = http(
        server.admin_addr,
        "GET",
        "/api/stats",
        Some(ADMIN_KEY),
        None,
    )
    .await;
    let stats: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(stats["features"]["dashboard"], false, "{stats}");
    server.shutdown().await;
}

#[tokio::test]
async fn a_store_outage_answers_as_documented() {
    let doc = read_json(OPENAPI);
    let (server, store) = common::server_with_switchable_store(common::test_config()).await;
    let admin = server.admin_addr;
    store.down.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        http(admin, "GET", "/readyz", None, None).await,
        (503, "store unreachable\n".to_owned())
    );
    for (method, path, template, body) in [
        (
            "POST",
            "/admin/revoke",
            "/admin/revoke",
            Some(json!({"jti": "x"})),
        ),
        ("GET", "/admin/sessions?sub=alice", "/admin/sessions", None),
        (
            "DELETE",
            "/admin/sessions/s_x",
            "/admin/sessions/{session_id}",
            None,
        ),
    ] {
        let (status, text) = http(admin, method, path, Some(ADMIN_KEY), body).await;
        assert_eq!(status, 503, "{method} {path}: {text}");
        assert_eq!(
            serde_json::from_str::<Value>(&text).ok(),
            Some(json!({"error": "store unreachable"})),
            "{method} {path}"
        );
        assert_documented_body(&doc, method, template, status, &text);
    }
    let (status, text) = http(admin, "GET", "/api/stats", Some(ADMIN_KEY), None).await;
    assert_eq!(status, 200, "{text}");
    assert_documented_body(&doc, "GET", "/api/stats", status, &text);
    let stats: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(stats["store"]["ready"], false, "{stats}");
    store.down.store(false, std::sync::atomic::Ordering::SeqCst);
    server.shutdown().await;
}

// ---------------------------------------------------------------------------
// (c) the Grafana dashboard queries only series the server exposes.

#[tokio::test]
async fn every_metric_the_grafana_dashboard_queries_is_exposed() {
    let dashboard = read_json(DASHBOARD);
    assert!(
        dashboard["__inputs"]
            .as_array()
            .expect("__inputs")
            .iter()
            .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"),
        "the dashboard takes a DS_PROMETHEUS input"
    );
    let exprs = dashboard_exprs(&dashboard);
    assert!(!exprs.is_empty(), "no panel expression");
    let referenced: BTreeSet<String> = exprs.iter().flat_map(|e| metric_names(e)).collect();

    let exposition = scrape_after_traffic().await;
    let families = families(&exposition);
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|name| family_of(&families, name).is_none())
        .collect();
    assert!(
        missing.is_empty(),
        "the dashboard queries series /metrics does not expose: {missing:?}\nexposed families: {:?}",
        families.keys().collect::<Vec<_>>()
    );

    // Every documented family is on the dashboard.
    let on_dashboard: BTreeSet<String> = referenced
        .iter()
        .filter_map(|n| family_of(&families, n))
        .map(|(f, _)| family_key(&f).to_owned())
        .collect();
    for family in documented_labels().keys() {
        assert!(
            on_dashboard.contains(*family),
            "{family} is on no dashboard panel"
        );
    }

    // The traffic shows, with exactly the documented labels.
    let samples = samples(&exposition);
    let auth = |outcome: &str, code: &str| {
        samples.iter().any(|(name, labels, value)| {
            name == "wsauth_auth_total"
                && labels.get("method").map(String::as_str) == Some("message")
                && labels.get("outcome").map(String::as_str) == Some(outcome)
                && labels.get("code").map(String::as_str) == Some(code)
                && value.parse::<f64>().is_ok_and(|v| v >= 1.0)
        })
    };
    assert!(auth("ok", "none"), "no successful auth in:\n{exposition}");
    assert!(
        auth("refused", "INVALID_TOKEN"),
        "no refused auth in:\n{exposition}"
    );
    let documented = documented_labels();
    for (name, labels, _) in &samples {
        let (family, _) = family_of(&families, name)
            .unwrap_or_else(|| panic!("sample {name} of no declared family"));
        let Some(expected) = documented.get(family_key(&family)) else {
            panic!("{family} is exposed but not documented");
        };
        let mut keys: BTreeSet<&str> = labels.keys().map(String::as_str).collect();
        if name.ends_with("_bucket") {
            keys.remove("le");
        }
        let expected: BTreeSet<&str> = expected.iter().copied().collect();
        assert_eq!(keys, expected, "labels of {name} {labels:?}");
    }
    assert!(
        !exposition.contains("metrics-user"),
        "a user in the metrics"
    );
}

/// The strict reading: after nothing but one good and one bad authentication,
/// every family the dashboard queries is in the exposition (at zero if need be),
/// so that its panels and alerts show 0 rather than "No data".
#[tokio::test]
async fn every_dashboard_family_is_exposed_before_its_first_event() {
    let referenced: BTreeSet<String> = dashboard_exprs(&read_json(DASHBOARD))
        .iter()
        .flat_map(|e| metric_names(e))
        .collect();
    let server = common::server(common::test_config()).await;
    let c = drive_auths(server.ws_addr).await;
    let (_, exposition) = http(server.admin_addr, "GET", "/metrics", None, None).await;
    c.close(1000).await;
    server.shutdown().await;
    let families = families(&exposition);
    let missing: Vec<&String> = referenced
        .iter()
        .filter(|name| family_of(&families, name).is_none())
        .collect();
    assert!(missing.is_empty(), "absent from /metrics: {missing:?}");
}

/// `wsauth_store_up` on a node whose store works, before anyone called `/readyz`.
#[tokio::test]
async fn store_up_is_1_on_a_fresh_node_with_a_working_store() {
    let server = common::server(common::test_config()).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let (_, exposition) = http(server.admin_addr, "GET", "/metrics", None, None).await;
    server.shutdown().await;
    let up = samples(&exposition)
        .into_iter()
        .find(|(name, _, _)| name == "wsauth_store_up")
        .map(|(_, _, value)| value);
    assert_eq!(up.as_deref(), Some("1"), "{exposition}");
}

// ---------------------------------------------------------------------------
// (d) admin-api.md mentions every route and every exposed metric.

#[tokio::test]
async fn admin_api_md_mentions_every_route_and_every_metric() {
    let md = std::fs::read_to_string(ADMIN_API_MD).expect("docs/admin-api.md");
    for (method, path) in ROUTES {
        let mention = format!("{method} {path}");
        assert!(
            md.contains(&mention),
            "admin-api.md does not mention `{mention}`"
        );
    }

    let exposition = scrape_after_traffic().await;
    let families = families(&exposition);
    assert!(!families.is_empty(), "no family in:\n{exposition}");
    let in_md = metric_names(&md);
    for (family, kind) in &families {
        let name = exposed_name(family, kind);
        assert!(
            in_md.contains(&name),
            "admin-api.md does not mention {name} ({kind})"
        );
    }
    // …and names nothing the server does not expose.
    let unknown: Vec<&String> = in_md
        .iter()
        .filter(|n| family_of(&families, n).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "admin-api.md names series /metrics does not expose: {unknown:?}"
    );
    assert!(
        md.contains("/admin/refusals"),
        "admin-api.md points to /admin/refusals"
    );
}

/// `wsauth_build_info` names this build: the crate's version, and the commit
/// `git` reports for this checkout (when the tests run in one).
#[tokio::test]
async fn build_info_names_the_version_and_the_commit() {
    let exposition = scrape_after_traffic().await;
    let info: Vec<_> = samples(&exposition)
        .into_iter()
        .filter(|(name, _, _)| name == "wsauth_build_info")
        .collect();
    assert_eq!(info.len(), 1, "one build_info series in:\n{exposition}");
    let (_, labels, value) = &info[0];
    assert_eq!(value, "1");
    assert_eq!(labels["version"], env!("CARGO_PKG_VERSION"));
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    match head {
        Some(head) => assert_eq!(labels["commit"], head, "the commit built"),
        None => assert_eq!(labels["commit"], "unknown"),
    }
    // The process series come from the operating system: plausible, not zero.
    let value_of = |series: &str| {
        samples(&exposition)
            .into_iter()
            .find(|(name, _, _)| name == series)
            .and_then(|(_, _, v)| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("{series} in:\n{exposition}"))
    };
    assert!(value_of("process_resident_memory_bytes") > 1e6);
    assert!(value_of("process_open_fds") >= 3.0);
    assert!(value_of("process_cpu_seconds_total") > 0.0);
}

#[test]
fn the_helpers_read_expositions_of_both_styles() {
    let text = "# HELP a_total x\n# TYPE a counter\na_total{code=\"X\"} 1\n# TYPE b_total counter\nb_total 2\n# TYPE h histogram\nh_bucket{le=\"0.1\"} 1\nh_sum 0.1\nh_count 1\n# TYPE g gauge\ng 3\n# EOF\n";
    let f = families(text);
    assert_eq!(family_of(&f, "a_total").map(|x| x.0), Some("a".into()));
    assert_eq!(
        family_of(&f, "b_total").map(|x| x.0),
        Some("b_total".into())
    );
    assert_eq!(family_of(&f, "h_bucket").map(|x| x.0), Some("h".into()));
    assert_eq!(family_of(&f, "h_count").map(|x| x.0), Some("h".into()));
    assert_eq!(family_of(&f, "g").map(|x| x.0), Some("g".into()));
    assert_eq!(family_of(&f, "g_total"), None);
    assert_eq!(family_of(&f, "a"), Some(("a".into(), "counter".into())));
    assert_eq!(exposed_name("a", "counter"), "a_total");
    assert_eq!(samples(text).len(), 6);
    assert_eq!(
        metric_names("rate(wsauth_a_total{x=\"y\"}[5m]) / xwsauth_b + wsauth_c_bucket"),
        BTreeSet::from(["wsauth_a_total".to_owned(), "wsauth_c_bucket".to_owned()])
    );
}
