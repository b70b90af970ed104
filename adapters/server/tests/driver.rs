//! The shared connection driver on a socket of the test's own: what the driver
//! does when the socket fails under it, whatever the WebSocket library.

#[path = "../../../tests/common/mod.rs"]
mod common;

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::{Sink, Stream};
use serde_json::json;
use tokio::sync::watch;
use wsauth_core::{Frame, Input};
use wsauth_server::App;
use wsauth_server::driver::{Driver, Transport};
use wsauth_server::state::Shared;
use wsauth_store::MemoryStore;
use wsauth_store::hub::Hub;

/// A socket that delivers the frames it is given, then waits forever, and
/// whose writes all fail (the peer's side of the TCP connection is gone, but
/// no read has noticed yet).
struct BrokenWrites {
    frames: Vec<String>,
}

impl Stream for BrokenWrites {
    type Item = Result<String, String>;

    fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match self.frames.pop() {
            Some(frame) => Poll::Ready(Some(Ok(frame))),
            None => Poll::Pending,
        }
    }
}

impl Sink<String> for BrokenWrites {
    type Error = String;

    fn poll_ready(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Err("broken pipe".to_owned()))
    }

    fn start_send(self: Pin<&mut Self>, _: String) -> Result<(), String> {
        Err("broken pipe".to_owned())
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Err("broken pipe".to_owned()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        Poll::Ready(Ok(()))
    }
}

/// Text frames as strings; control frames do not exist here.
struct TestTransport;

impl Transport for TestTransport {
    type Socket = BrokenWrites;
    type Message = String;
    type ReadError = String;

    fn text(json: String) -> String {
        json
    }

    fn ping() -> String {
        "ping".to_owned()
    }

    fn close(code: u16, _: &'static str) -> String {
        format!("close {code}")
    }

    fn input(frame: &Result<String, String>) -> Result<Input<'_>, &String> {
        match frame {
            Ok(text) => Ok(Input::Frame(Frame::Text(text))),
            Err(e) => Err(e),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_that_fails_ends_the_connection_as_a_lost_peer() {
    let config = common::test_config();
    let hub = Hub::new(config.limits.outbound_queue);
    let store = Arc::new(MemoryStore::new(
        wsauth_server::server::store_settings(&config),
        hub.clone() as Arc<dyn wsauth_store::Notify>,
    ));
    let keys = wsauth_server::KeySource::fixed(
        wsauth_server::server::build_verifier(&config, None).expect("verifier"),
        16,
    );
    let (_shutdown, shutdown_rx) = watch::channel(false);
    let shared = Arc::new(
        Shared::new(
            Arc::new(config),
            keys,
            hub.clone(),
            store,
            shutdown_rx,
            App::new(),
        )
        .expect("shared"),
    );
    let peer: std::net::SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let guard = shared.ip_limiter.try_acquire(peer.ip()).expect("guard");
    let driver = Driver::<_, TestTransport>::new(shared.clone(), peer, Instant::now(), guard, None);
    let auth = json!({"type": "auth", "id": 1, "token": common::token("alice", json!({}))});
    let socket = BrokenWrites {
        frames: vec![auth.to_string()],
    };
    // Before the fix the writer ended silently and the connection waited for
    // its idle timeout (60 s), deaf, with its session attached.
    tokio::time::timeout(Duration::from_secs(5), driver.run(socket))
        .await
        .expect("the connection ends when its writer fails");
    assert_eq!(hub.live_sessions(), 0, "the session is detached");
    // Authenticated, then ended without a close frame (a lost peer: close code 0).
    let metrics = shared.metrics.render(0);
    for series in [
        "wsauth_auth_total{method=\"message\",outcome=\"ok\",code=\"none\"} 1",
        "wsauth_closes_total{close_code=\"0\",error_code=\"none\"} 1",
    ] {
        assert!(metrics.contains(series), "no {series} in:\n{metrics}");
    }
}
