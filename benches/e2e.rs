//! End-to-end round trips over loopback against the real server, in-process:
//! connect + authenticate, refresh, and resume. Run with
//! `cargo bench -p wsauth --bench e2e`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use wsauth_server::config::Config;

const SECRET: &str = "bench-secret-of-at-least-32-bytes-long";

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(sub: &str) -> String {
    let claims = json!({"sub": sub, "exp": now_s() + 3600, "iat": now_s()});
    wsauth::jwt::sign_hs256(SECRET.as_bytes(), &claims)
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).expect("JSON"),
            Some(Ok(_)) => continue,
            other => panic!("connection ended: {other:?}"),
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.expect("send");
}

/// TCP connect (Nagle off, as a latency-minded client sets it) and upgrade.
async fn open(addr: SocketAddr) -> Ws {
    let (ws, _) =
        tokio_tungstenite::connect_async_with_config(format!("ws://{addr}/ws"), None, true)
            .await
            .expect("upgrade");
    ws
}

/// TCP connect, upgrade, `auth`, `authenticated`.
async fn connect_and_auth(addr: SocketAddr, token: &str) -> (Ws, Value) {
    let mut ws = open(addr).await;
    send(&mut ws, json!({"type": "auth", "id": 1, "token": token})).await;
    let reply = recv(&mut ws).await;
    assert_eq!(reply["type"], "authenticated", "{reply}");
    (ws, reply)
}

fn round_trips(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut config = Config {
        listen: "127.0.0.1:0".parse().expect("addr"),
        admin_listen: "127.0.0.1:0".parse().expect("addr"),
        admin_key: Some("bench-admin-key-long-enough".into()),
        ..Config::default()
    };
    config.jwt.hs256_secret = Some(SECRET.into());
    config.limits.messages_per_second = 1_000_000;
    config.limits.message_burst = 1_000_000;
    config.log.level = "warn".into();
    let server = rt
        .block_on(wsauth_server::start(config, None))
        .expect("server starts");
    let addr = server.ws_addr;
    let alice = token("alice");

    // A different user each time, as in real traffic (one user's thousands of
    // sessions within their resume grace would be a different benchmark).
    let users: Vec<String> = (0..50_000).map(|i| token(&format!("user-{i}"))).collect();
    let mut next = 0;
    c.bench_function("e2e/connect_auth", |b| {
        b.iter(|| {
            next = (next + 1) % users.len();
            let token = &users[next];
            rt.block_on(async {
                let (ws, reply) = connect_and_auth(addr, black_box(token)).await;
                black_box(reply);
                drop(ws);
            })
        })
    });

    let (mut ws, _) = rt.block_on(connect_and_auth(addr, &alice));
    let mut id = 1u64;
    c.bench_function("e2e/refresh", |b| {
        b.iter(|| {
            id += 1;
            let refresh = json!({"type": "refresh", "id": id, "token": alice});
            rt.block_on(async {
                send(&mut ws, refresh).await;
                let reply = recv(&mut ws).await;
                assert_eq!(reply["type"], "refreshed", "{reply}");
            })
        })
    });
    drop(ws);

    // Each iteration resumes the session the previous one held, over a new socket;
    // the old socket is dropped uncleanly (a network blip) just before.
    let (ws, reply) = rt.block_on(connect_and_auth(addr, &alice));
    let mut held = Some(ws);
    let session_id = reply["session_id"].clone();
    let mut resume_token = reply["resume_token"].clone();
    c.bench_function("e2e/resume", |b| {
        b.iter(|| {
            drop(held.take());
            let resume = json!({"type": "resume", "id": 1, "session_id": session_id, "resume_token": resume_token});
            rt.block_on(async {
                let mut ws = open(addr).await;
                send(&mut ws, resume).await;
                let reply = recv(&mut ws).await;
                assert_eq!(reply["type"], "resumed", "{reply}");
                resume_token = reply["resume_token"].clone();
                held = Some(ws);
            })
        })
    });
    rt.block_on(server.shutdown());
}

criterion_group!(benches, round_trips);
criterion_main!(benches);
