//! How much Redis memory sessions take, and how fast one node creates them.
//!
//! ```text
//! cargo run --release -p wsauth-store-redis --example sizing -- 100000
//! ```
//!
//! Starts its own `redis-server`, creates N sessions (one channel each), measures
//! `used_memory`, then publishes 10 messages of 100 bytes to every session's channel
//! and measures again.

use std::sync::Arc;
use std::time::Instant;

use wsauth_core::Payload;
use wsauth_core::jwt::Claims;
use wsauth_store::contract::Recorder;
use wsauth_store::{CreateOutcome, Store, StoreSettings};
use wsauth_store_redis::{RedisConfig, RedisStore};
use wsauth_test_support::redis::RedisServer;

async fn used_memory(url: &str) -> u64 {
    let client = redis::Client::open(url).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(&mut conn)
        .await
        .expect("info");
    info.lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("used_memory")
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse().expect("a number of sessions"))
        .unwrap_or(100_000);
    let redis = RedisServer::start();
    let store = Arc::new(
        RedisStore::connect(
            RedisConfig::new(redis.url(), "wsauth:", "sizing"),
            StoreSettings::default(),
            Arc::new(Recorder::default()),
        )
        .await
        .expect("redis answers"),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as u64;
    let before = used_memory(&redis.url()).await;
    let started = Instant::now();
    let created = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let progress = {
        let created = created.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let done = created.load(std::sync::atomic::Ordering::Relaxed);
                eprint!("\rcreating sessions: {done}/{n}");
            }
        })
    };
    let concurrency = 64;
    let per_task = n.div_ceil(concurrency);
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (store, created) = (store.clone(), created.clone());
            tokio::spawn(async move {
                for i in (t * per_task)..((t + 1) * per_task).min(n) {
                    let mut c = Claims::new(format!("user-{i}"), now + 3_600_000);
                    c.jti = Some(format!("jti-{i}"));
                    c.iat_ms = Some(now);
                    c.channels = Some(vec!["room:*".into()]);
                    let CreateOutcome::Created {
                        session_id, epoch, ..
                    } = store
                        .create_session(Arc::new(c), now)
                        .await
                        .expect("create")
                    else {
                        panic!("created");
                    };
                    store
                        .subscribe(&session_id, epoch, &format!("room:{}", i % 1000))
                        .await
                        .expect("join");
                    created.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    progress.abort();
    eprintln!("\rcreating sessions: {n}/{n}");
    let create_secs = started.elapsed().as_secs_f64();
    let after_sessions = used_memory(&redis.url()).await;
    let data = Payload::from_json(&format!("\"{}\"", "x".repeat(98))).expect("json");
    let started = Instant::now();
    for round in 0..10 {
        for room in 0..1000 {
            store
                .publish(&format!("room:{room}"), Some("sizing"), data.clone(), now)
                .await
                .expect("publish");
        }
        eprint!("\rpublishing: round {}/10", round + 1);
    }
    eprintln!();
    let publish_secs = started.elapsed().as_secs_f64();
    let after_buffers = used_memory(&redis.url()).await;
    let per = |bytes: u64| bytes as f64 / n as f64;
    println!(
        "{{\"sessions\":{n},\"create_and_join_per_s\":{:.0},\"bytes_per_session\":{:.0},\"bytes_per_session_with_10_buffered\":{:.0},\"deliveries_per_s\":{:.0}}}",
        n as f64 / create_secs,
        per(after_sessions - before),
        per(after_buffers - before),
        (10 * n) as f64 / publish_secs,
    );
}
