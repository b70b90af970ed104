//! The chat application over real sockets, without a browser: `/login`, the page
//! and client routes, and the `chat.*` calls through wsauth with tokens from
//! `/login`.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsauth_chat::{ChatConfig, Running, serve};

const WAIT: Duration = Duration::from_secs(5);

async fn chat() -> Running {
    serve(ChatConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        token_ttl_s: 60,
        client_dir: std::env::temp_dir().join("wsauth-chat-no-client-here"),
        ..ChatConfig::default()
    })
    .await
    .expect("the chat starts")
}

/// One HTTP/1.1 request; the status, the head and the body.
async fn http(running: &Running, method: &str, path: &str, body: &str) -> (u16, String, String) {
    let mut tcp = TcpStream::connect(running.addr()).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        running.addr(),
        body.len()
    );
    tcp.write_all(request.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .expect("read");
    let answer = String::from_utf8(answer).expect("utf-8");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a head");
    let status = head[9..12].parse().expect("a status");
    (status, head.to_ascii_lowercase(), body.to_owned())
}

async fn token(running: &Running, name: &str) -> String {
    let (status, _, body) = http(
        running,
        "POST",
        "/login",
        &json!({ "name": name }).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).expect("json");
    body["token"].as_str().expect("a token").to_owned()
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn recv(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("json");
        }
    }
}

/// Receives until a frame with `id`, or a message when `id` is `None`.
async fn answer(ws: &mut Ws, id: Option<u64>) -> Value {
    loop {
        let frame = recv(ws).await;
        match id {
            Some(id) if frame["id"] == id => return frame,
            None if frame["type"] == "message" => return frame,
            _ => {}
        }
    }
}

async fn send(ws: &mut Ws, frame: Value) {
    ws.send(Message::text(frame.to_string()))
        .await
        .expect("send");
}

async fn signed_in(running: &Running, name: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(running.ws_url())
        .await
        .expect("the WebSocket opens");
    let token = token(running, name).await;
    send(&mut ws, json!({"type": "auth", "id": 1, "token": token})).await;
    let reply = answer(&mut ws, Some(1)).await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
    assert_eq!(reply["user_id"], name);
    ws
}

async fn call(ws: &mut Ws, id: u64, method: &str, data: Value) -> Value {
    send(
        ws,
        json!({"type": "rpc", "id": id, "method": method, "data": data}),
    )
    .await;
    answer(ws, Some(id)).await
}

#[tokio::test]
async fn login_mints_a_short_token_for_a_valid_name_only() {
    let running = chat().await;
    let (status, head, body) = http(&running, "POST", "/login", r#"{"name":"alice_2-x"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("cache-control: no-store"), "{head}");
    let body: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(body["expires_in"], 60);
    // The claims: the name, every room, 60 s.
    let token = body["token"].as_str().expect("token");
    let claims = token.split('.').nth(1).expect("a JWT");
    let claims = base64_url(claims);
    let claims: Value = serde_json::from_slice(&claims).expect("claims");
    assert_eq!(claims["sub"], "alice_2-x");
    assert_eq!(claims["channels"], json!(["room:*"]));
    assert_eq!(
        claims["exp"].as_u64().expect("exp") - claims["iat"].as_u64().expect("iat"),
        60
    );
    assert_eq!(running.logins("alice_2-x"), 1);

    let long = "n".repeat(33);
    for bad in [
        json!({"name": ""}).to_string(),
        json!({"name": "al ice"}).to_string(),
        json!({"name": "élise"}).to_string(),
        json!({"name": long}).to_string(),
        json!({"name": 7}).to_string(),
        json!({}).to_string(),
        "not json".to_owned(),
    ] {
        let (status, _, answer) = http(&running, "POST", "/login", &bad).await;
        assert_eq!(status, 400, "{bad} -> {answer}");
        let answer: Value = serde_json::from_str(&answer).expect("a JSON refusal");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let (status, _, _) = http(&running, "GET", "/login", "").await;
    assert_eq!(status, 405);
    running.shutdown().await;
}

fn base64_url(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in text.bytes() {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64url") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[tokio::test]
async fn the_page_its_assets_and_a_clear_404_for_a_missing_client() {
    let running = chat().await;
    let (status, head, body) = http(&running, "GET", "/", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(body.contains(r#"<script type="module" src="/app.js">"#));
    let (status, head, body) = http(&running, "GET", "/app.js", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/javascript"), "{head}");
    assert!(body.contains("/client/index.js"));
    let (status, _, _) = http(&running, "GET", "/style.css", "").await;
    assert_eq!(status, 200);
    let (status, _, body) = http(&running, "GET", "/client/index.js", "").await;
    assert_eq!(status, 404);
    assert!(body.contains("run `npm ci` in clients/js"), "{body}");
    let (status, _, _) = http(&running, "GET", "/client/../Cargo.toml", "").await;
    assert_eq!(status, 404);
    running.shutdown().await;
}

#[tokio::test]
async fn client_files_come_from_the_client_dir() {
    let dir = std::env::temp_dir().join(format!("wsauth-chat-client-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("sub")).expect("dir");
    std::fs::write(dir.join("index.js"), "export const x = 1;\n").expect("write");
    std::fs::write(dir.join("sub/a.js.map"), "{}").expect("write");
    let running = serve(ChatConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        client_dir: dir.clone(),
        ..ChatConfig::default()
    })
    .await
    .expect("the chat starts");
    let (status, head, body) = http(&running, "GET", "/client/index.js", "").await;
    assert_eq!((status, body.as_str()), (200, "export const x = 1;\n"));
    assert!(head.contains("content-type: text/javascript"), "{head}");
    let (status, head, _) = http(&running, "GET", "/client/sub/a.js.map", "").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json"), "{head}");
    let (status, _, body) = http(&running, "GET", "/client/nothing.js", "").await;
    assert_eq!(status, 404);
    assert!(!body.contains("npm ci"), "the client is built: {body}");
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn a_message_is_sent_as_the_caller_and_reaches_the_room() {
    let running = chat().await;
    let mut alice = signed_in(&running, "alice").await;
    let mut bob = signed_in(&running, "bob").await;
    send(
        &mut bob,
        json!({"type": "join", "id": 2, "channel": "room:lobby"}),
    )
    .await;
    assert_eq!(answer(&mut bob, Some(2)).await["type"], "joined");

    // The data claims to be from mallory: the sender is the token's sub.
    let sent = call(
        &mut alice,
        3,
        "chat.send",
        json!({"room": "lobby", "text": " hello bob ", "from": "mallory", "sub": "mallory"}),
    )
    .await;
    assert_eq!(sent["type"], "rpc_result", "{sent}");
    let id = sent["data"]["id"].as_u64().expect("an id");
    let at = sent["data"]["at"].as_u64().expect("a time");

    let got = answer(&mut bob, None).await;
    assert_eq!(got["channel"], "room:lobby");
    assert!(
        got.get("from").is_none(),
        "a server message has no from: {got}"
    );
    assert_eq!(
        got["data"],
        json!({"kind": "chat", "id": id, "from": "alice", "text": "hello bob", "at": at})
    );

    let history = call(&mut bob, 4, "chat.history", json!({"room": "lobby"})).await;
    assert_eq!(
        history["data"]["messages"],
        json!([got["data"]]),
        "{history}"
    );
    let other = call(&mut bob, 5, "chat.history", json!({"room": "dev"})).await;
    assert_eq!(other["data"]["messages"], json!([]));
    running.shutdown().await;
}

#[tokio::test]
async fn bad_calls_are_app_errors_with_details_and_the_session_goes_on() {
    let running = chat().await;
    let mut alice = signed_in(&running, "alice").await;
    let refused = call(
        &mut alice,
        2,
        "chat.send",
        json!({"room": "Lobby!", "text": "hi"}),
    )
    .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["code"], "APP_ERROR");
    assert_eq!(refused["fatal"], false);
    assert_eq!(refused["details"]["field"], "room");
    let refused = call(
        &mut alice,
        3,
        "chat.send",
        json!({"room": "lobby", "text": "   "}),
    )
    .await;
    assert_eq!(refused["code"], "APP_ERROR");
    assert_eq!(
        refused["details"],
        json!({"field": "text", "problem": "empty"})
    );
    let refused = call(&mut alice, 4, "chat.history", json!({})).await;
    assert_eq!(refused["code"], "APP_ERROR");
    assert_eq!(refused["details"]["field"], "room");
    let unknown = call(&mut alice, 5, "chat.delete", json!({})).await;
    assert_eq!(unknown["code"], "METHOD_NOT_FOUND");
    assert_eq!(running.chat().kept("lobby"), 0);
    let sent = call(
        &mut alice,
        6,
        "chat.send",
        json!({"room": "lobby", "text": "ok"}),
    )
    .await;
    assert_eq!(sent["type"], "rpc_result", "{sent}");
    assert_eq!(running.chat().kept("lobby"), 1);
    running.shutdown().await;
}

#[tokio::test]
async fn only_the_pages_origin_may_open_a_websocket() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let running = chat().await;
    let with_origin = |origin: &str| {
        let mut request = running.ws_url().into_client_request().expect("request");
        request
            .headers_mut()
            .insert("origin", origin.parse().expect("header"));
        request
    };
    let page = format!("http://localhost:{}", running.addr().port());
    tokio_tungstenite::connect_async(with_origin(&page))
        .await
        .expect("the page's origin may connect");
    let refused = tokio_tungstenite::connect_async(with_origin("http://evil.example"))
        .await
        .expect_err("another origin may not");
    assert!(refused.to_string().contains("403"), "{refused}");
    running.shutdown().await;
}
