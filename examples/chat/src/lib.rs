//! `wsauth-chat`: a small chat on wsauth. One axum application on loopback serves
//! the page (`GET /`), the browser client's files (`GET /client/…`, from
//! `clients/js/dist`), a development login that mints short-lived tokens
//! (`POST /login`), and wsauth at `/ws`, whose `chat.send` and `chat.history`
//! calls the [`chat`] module answers.
//!
//! [`serve`] starts it all and returns a handle, for `main` and for the tests.

pub mod chat;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path as UrlPath, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::serve::Listener as _;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use wsauth_axum::WsAuth;

pub use chat::Chat;

/// The channels every chat token allows.
pub const CHANNELS: &[&str] = &["room:*"];

const INDEX_HTML: &str = include_str!("page/index.html");
const APP_JS: &str = include_str!("page/app.js");
const STYLE_CSS: &str = include_str!("page/style.css");

/// The page's policy: nothing but its own files, and WebSockets anywhere (the
/// `?ws=` parameter may point at another port).
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
                   img-src 'self' data:; connect-src 'self' ws: wss:; \
                   base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// How to run the chat.
#[derive(Clone, Debug)]
pub struct ChatConfig {
    /// Where the application listens (port 0: any free port).
    pub listen: SocketAddr,
    /// The lifetime of the tokens `/login` mints, in seconds.
    pub token_ttl_s: u64,
    /// The browser client's files, served at `/client/`.
    pub client_dir: PathBuf,
    /// wsauth's configuration; [`serve`] adds a generated HS256 secret and admin
    /// key, and on loopback, when no origin is configured, allows only the page's
    /// own origins.
    pub wsauth: wsauth_server::config::Config,
}

impl Default for ChatConfig {
    fn default() -> ChatConfig {
        ChatConfig {
            listen: ([127, 0, 0, 1], 3000).into(),
            token_ttl_s: 60,
            client_dir: default_client_dir(),
            wsauth: wsauth_server::config::Config::default(),
        }
    }
}

/// `<repo>/clients/js/dist`, where `npm ci` in `clients/js` builds the client.
pub fn default_client_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../clients/js/dist")
}

/// A name `/login` accepts: 1–32 of `A-Z a-z 0-9 _ -`.
pub fn valid_name(name: &str) -> bool {
    (1..=32).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Why the chat did not start.
#[derive(Debug)]
pub enum StartError {
    /// wsauth's configuration is not valid.
    Config(String),
    /// wsauth did not start.
    Wsauth(String),
    /// The listener could not be opened.
    Listen(std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Config(e) => write!(f, "wsauth configuration: {e}"),
            StartError::Wsauth(e) => write!(f, "wsauth did not start: {e}"),
            StartError::Listen(e) => write!(f, "cannot listen: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

#[derive(Clone)]
struct Web {
    secret: Arc<str>,
    token_ttl_s: u64,
    client_dir: Arc<Path>,
    logins: Arc<Mutex<HashMap<String, usize>>>,
}

/// The running chat.
pub struct Running {
    addr: SocketAddr,
    chat: Chat,
    logins: Arc<Mutex<HashMap<String, usize>>>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<std::io::Result<()>>,
    wsauth: WsAuth,
}

impl Running {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The page's URL.
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    /// The WebSocket URL.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    /// The rooms.
    pub fn chat(&self) -> &Chat {
        &self.chat
    }

    /// How many tokens `/login` has minted for `name`.
    pub fn logins(&self, name: &str) -> usize {
        let logins = self.logins.lock().unwrap_or_else(|e| e.into_inner());
        logins.get(name).copied().unwrap_or(0)
    }

    /// Stops accepting, closes the WebSockets with 1001 and waits for them.
    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        let _ = self.server.await;
        self.wsauth.shutdown().await;
    }

    /// Runs until the server stops on its own (an accept error) or `signal` ends.
    pub async fn run_until(mut self, signal: impl std::future::Future<Output = ()>) {
        tokio::select! {
            _ = signal => {}
            _ = &mut self.server => {}
        }
        self.shutdown().await;
    }
}

/// Starts the chat: wsauth with a generated HS256 secret, the application's
/// routes beside it, on `config.listen`.
pub async fn serve(config: ChatConfig) -> Result<Running, StartError> {
    let listener = wsauth_axum::listener(config.listen, 1024).map_err(StartError::Listen)?;
    let addr = listener.local_addr().map_err(StartError::Listen)?;
    let mut wsauth_config = config.wsauth;
    if wsauth_config.allowed_origins.is_empty() && addr.ip().is_loopback() {
        // Only this page may open WebSockets from a browser.
        wsauth_config.allowed_origins = page_origins(addr.port());
    }
    let secrets = wsauth_server::dev::prepare(&mut wsauth_config);
    wsauth_config
        .validate(true)
        .map_err(|e| StartError::Config(e.to_string()))?;
    let chat = Chat::new();
    let api = Arc::new(OnceLock::new());
    let wsauth = WsAuth::from_config_with_app(wsauth_config, chat.app(api.clone()))
        .await
        .map_err(|e| StartError::Wsauth(e.to_string()))?;
    let _ = api.set(wsauth.api());

    let logins = Arc::new(Mutex::new(HashMap::new()));
    let web = Web {
        secret: secrets.hs256_secret.into(),
        token_ttl_s: config.token_ttl_s,
        client_dir: config.client_dir.into(),
        logins: logins.clone(),
    };
    let app = router(web).route("/ws", wsauth.route());
    let (stop, stopped) = oneshot::channel::<()>();
    // The peer address feeds wsauth's per-IP cap of unauthenticated connections.
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    let server = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await
    });
    Ok(Running {
        addr,
        chat,
        logins,
        stop,
        server,
        wsauth,
    })
}

/// The origins of the page served on loopback at `port`.
pub fn page_origins(port: u16) -> Vec<String> {
    ["127.0.0.1", "localhost", "[::1]"]
        .iter()
        .map(|host| format!("http://{host}:{port}"))
        .collect()
}

fn router(web: Web) -> Router {
    Router::new()
        .route(
            "/",
            get(|| async { page(INDEX_HTML, "text/html; charset=utf-8") }),
        )
        .route(
            "/app.js",
            get(|| async { page(APP_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/style.css",
            get(|| async { page(STYLE_CSS, "text/css; charset=utf-8") }),
        )
        .route("/client/{*path}", get(client_file))
        .route("/login", post(login))
        .with_state(web)
}

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
        ],
        body,
    )
        .into_response()
}

fn content_type(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("map" | "json") => "application/json",
        Some("css") => "text/css; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        _ => "text/plain; charset=utf-8",
    }
}

/// `GET /client/<path>`: a file of the built client, read from disk.
async fn client_file(State(web): State<Web>, UrlPath(path): UrlPath<String>) -> Response {
    let relative = Path::new(&path);
    if !relative
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return (StatusCode::NOT_FOUND, "not found\n").into_response();
    }
    let file = web.client_dir.join(relative);
    match tokio::fs::read(&file).await {
        Ok(body) => (
            [
                (header::CONTENT_TYPE, content_type(&file)),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            body,
        )
            .into_response(),
        Err(_) if !web.client_dir.join("index.js").is_file() => (
            StatusCode::NOT_FOUND,
            format!(
                "the browser client is not built: run `npm ci` in clients/js \
                 (looked for {})\n",
                web.client_dir.join("index.js").display()
            ),
        )
            .into_response(),
        Err(_) => (StatusCode::NOT_FOUND, format!("no client file {path}\n")).into_response(),
    }
}

fn refused(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(json!({ "error": message }))).into_response()
}

/// `POST /login {"name": …}`: a development login, no password: a token for
/// that name, valid `token_ttl_s`, allowing every room.
async fn login(State(web): State<Web>, body: Bytes) -> Response {
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return refused(
            StatusCode::BAD_REQUEST,
            "the body must be JSON: {\"name\": …}",
        );
    };
    let Some(name) = body.get("name").and_then(Value::as_str) else {
        return refused(StatusCode::BAD_REQUEST, "name is required");
    };
    if !valid_name(name) {
        return refused(StatusCode::BAD_REQUEST, "a name is 1-32 of A-Z a-z 0-9 _ -");
    }
    let now_s = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let channels: Vec<String> = CHANNELS.iter().map(|c| (*c).to_owned()).collect();
    let token = wsauth_server::dev::mint(&web.secret, name, web.token_ttl_s, &channels, now_s);
    *web.logins
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .entry(name.to_owned())
        .or_default() += 1;
    (
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({ "token": token, "expires_in": web.token_ttl_s })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_1_to_32_of_letters_digits_underscore_and_dash() {
        for good in ["alice", "Bob_2", "a", "x-y", &"n".repeat(32)] {
            assert!(valid_name(good), "{good:?}");
        }
        for bad in [
            "",
            "al ice",
            "alice!",
            "élise",
            "a/b",
            &"n".repeat(33),
            "{sub}",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_client_dir_is_clients_js_dist_of_the_repository() {
        let dir = default_client_dir();
        assert!(dir.ends_with("clients/js/dist"), "{}", dir.display());
        // Two levels above this crate: the workspace root, whose manifest names it.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).expect("root manifest");
        assert!(manifest.contains("\"examples/chat\""), "{}", root.display());
        assert_eq!(dir, root.join("clients/js/dist"));
    }
}
