//! The `embed` example's application, served: its own route answers, and wsauth
//! beside it authenticates by header and by message, and closes with 1001 at
//! shutdown.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../examples/embed.rs"]
#[allow(dead_code)]
mod embed;

use std::net::SocketAddr;

use common::{Client, Ended, http, http_raw, now_s};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_serves_its_own_route_and_wsauth_beside_it() {
    let (wsauth, secret) = embed::dev_wsauth().await;
    let listener =
        wsauth_axum::listener("127.0.0.1:0".parse().expect("addr"), 128).expect("listen");
    let addr = axum::serve::Listener::local_addr(&listener).expect("addr");
    let service = embed::app(&wsauth).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        let _ = axum::serve(listener, service).await;
    });

    let (status, body) = http(addr, "GET", "/", None, None).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello from the application\n")
    );

    let claims = json!({"sub": "alice", "exp": now_s() + 60, "channels": ["general"]});
    let token = wsauth_core::jwt::sign_hs256(secret.as_bytes(), &claims);
    let (mut by_message, reply) = Client::authed(addr, &token).await;
    assert_eq!(reply["user_id"], "alice");
    let bearer = format!("Bearer {token}");
    let mut by_header = Client::connect_with(addr, &[("Authorization", &bearer)])
        .await
        .expect("upgrade accepted");
    assert_eq!(by_header.recv().await["type"], "authenticated");
    by_message
        .send(json!({"type": "join", "id": 2, "channel": "general"}))
        .await;
    assert_eq!(by_message.recv().await["type"], "joined");

    // The application's handler answers with the caller's identity...
    by_message
        .send(json!({"type": "rpc", "id": 3, "method": "chat.send", "data": {"text": "hi"}}))
        .await;
    assert_eq!(
        by_message.recv().await,
        json!({"type": "rpc_result", "id": 3, "data": {"from": "alice", "text": "hi"}})
    );
    // ...and its own route pushes through wsauth's API.
    let (status, body) = http_raw(addr, "POST", "/announce", None, "maintenance at 5").await;
    assert_eq!((status, body.as_str()), (200, "sent to 1 sessions\n"));
    let pushed = by_message.recv().await;
    assert_eq!(
        (
            pushed["channel"].as_str(),
            &pushed["data"],
            pushed.get("from")
        ),
        (
            Some("general"),
            &json!({"announcement": "maintenance at 5"}),
            None
        )
    );

    // The application's route still answers while wsauth holds connections.
    let (status, _) = http(addr, "GET", "/", None, None).await;
    assert_eq!(status, 200);

    let stopping = tokio::spawn(wsauth.shutdown());
    for client in [&mut by_message, &mut by_header] {
        let (_, ended) = client.until_closed().await;
        assert_eq!(ended, Ended::Close(1001));
    }
    stopping.await.expect("shutdown");
}

/// `docs/app-integration.md` shows lines of the example: each is in it.
#[test]
fn the_integration_guide_shows_lines_of_the_example() {
    let doc = include_str!("../../../docs/app-integration.md");
    assert_block_lines_in_example(doc, "## Embedded in an axum application");
}

/// `docs/architecture.md` shows the example's core lines: each is in the example.
#[test]
fn the_architecture_doc_shows_lines_of_the_example() {
    let doc = include_str!("../../../docs/architecture.md");
    assert_block_lines_in_example(doc, "## Embed wsauth in your axum app");
}

/// Every line of the first code block under `heading` in `doc` is a line of the
/// example. The blocks are fenced `rs`: the docs are also crate documentation,
/// where a `rust` block would be a doctest that cannot see wsauth-axum.
fn assert_block_lines_in_example(doc: &str, heading: &str) {
    let example = include_str!("../examples/embed.rs");
    let section = doc.split(heading).nth(1).expect("the section");
    let block = section
        .split("```rs\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a code block");
    let lines: Vec<&str> = example.lines().map(str::trim).collect();
    for line in block.lines().map(str::trim).filter(|l| !l.is_empty()) {
        assert!(lines.contains(&line), "not in the example: {line}");
    }
}
