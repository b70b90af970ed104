//! The store contract against the Redis store (the same suite the in-memory store
//! passes), and the races that must hold across nodes: each "node" here is its own
//! `RedisStore` with its own connection and notice stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use std::time::Duration;

use wsauth_core::jwt::Claims;
use wsauth_core::{Payload, Revocation, Secret};
use wsauth_store::contract::{Recorder, create, run_all, run_races, run_rule_cases};
use wsauth_store::{Notice, Store, StoreError, StoreSettings};
use wsauth_store_redis::{RedisConfig, RedisStore};
use wsauth_test_support::redis::{RedisServer, available};

static PREFIXES: AtomicU64 = AtomicU64::new(0);

/// A store on `redis` under a prefix no other store in this run uses.
async fn store_on(
    redis: &RedisServer,
    node: &str,
    prefix: &str,
    settings: wsauth_store::StoreSettings,
    notify: Arc<dyn wsauth_store::Notify>,
) -> RedisStore {
    RedisStore::connect(
        RedisConfig::new(redis.url(), prefix, node),
        settings,
        notify,
    )
    .await
    .expect("redis answers")
}

/// A single-node store on `redis` under a fresh prefix.
async fn fresh_store(
    redis: &RedisServer,
    settings: wsauth_store::StoreSettings,
    notify: Arc<dyn wsauth_store::Notify>,
) -> RedisStore {
    let prefix = format!("t{}:", PREFIXES.fetch_add(1, Ordering::Relaxed));
    store_on(redis, "n1", &prefix, settings, notify).await
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    if !available("redis_store_keeps_the_contract") {
        return;
    }
    let redis = RedisServer::start();
    run_all(async |settings, notify| fresh_store(&redis, settings, notify).await).await;
}

/// The Lua prelude's mirror of `wsauth_core::rules` gives the same verdicts.
#[tokio::test]
async fn redis_store_follows_the_rules_table() {
    if !available("redis_store_follows_the_rules_table") {
        return;
    }
    let redis = RedisServer::start();
    run_rule_cases(async |settings, notify| fresh_store(&redis, settings, notify).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_survives_the_races_across_nodes() {
    if !available("redis_store_survives_the_races_across_nodes") {
        return;
    }
    let redis = RedisServer::start();
    run_races(async |settings, notify, n| {
        let prefix = format!("race{}:", PREFIXES.fetch_add(1, Ordering::Relaxed));
        let mut nodes = Vec::new();
        for i in 0..n {
            let name = format!("n{i}");
            let node = store_on(&redis, &name, &prefix, settings.clone(), notify.clone()).await;
            nodes.push(Arc::new(node));
        }
        nodes
    })
    .await;
}

const T0: u64 = 1_767_225_600_000;

fn claims(sub: &str, jti: &str) -> Arc<Claims> {
    let mut c = Claims::new(sub, T0 + 3_600_000);
    c.jti = Some(jti.to_owned());
    Arc::new(c)
}

async fn created(store: &RedisStore, c: Arc<Claims>) -> (String, Secret, u64) {
    create(store, c, T0).await
}

/// Kills every client connection Redis has (both nodes' command links and stream
/// readers), as a network blip would.
async fn drop_every_link(redis: &RedisServer) {
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("normal")
        .arg("SKIPME")
        .arg("yes")
        .query_async(&mut conn)
        .await
        .expect("client kill");
}

#[tokio::test]
async fn a_revocation_during_a_link_blip_still_reaches_the_node() {
    if !available("a_revocation_during_a_link_blip_still_reaches_the_node") {
        return;
    }
    let redis = RedisServer::start();
    let settings = StoreSettings::default();
    let on_a = Arc::new(Recorder::default());
    let a = store_on(&redis, "a", "blip:", settings.clone(), on_a.clone()).await;
    let b = store_on(
        &redis,
        "b",
        "blip:",
        settings,
        Arc::new(Recorder::default()),
    )
    .await;
    let (id, _, epoch) = created(&a, claims("alice", "j1")).await;
    drop_every_link(&redis).await;
    // Node B's link reconnects on its next call; node A's reader has not yet.
    let mut told = None;
    for _ in 0..50 {
        if let Ok(n) = b
            .revoke(Revocation::Token { jti: "j1".into() }, T0 + 1)
            .await
        {
            told = Some(n);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(told, Some(1), "the revocation reaches one connection");
    let mut seen = Vec::new();
    for _ in 0..50 {
        if a.settle().await.is_ok() {
            seen = on_a.take();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        seen,
        vec![(
            id,
            epoch,
            Notice::Revoked {
                revocation: Revocation::Token { jti: "j1".into() },
                at_ms: T0 + 1
            }
        )],
        "node A reads on from where it was and misses nothing"
    );
    assert_eq!(on_a.lost(), 0, "and knows it missed nothing");
}

#[tokio::test]
async fn a_node_whose_stream_was_wiped_closes_its_connections() {
    if !available("a_node_whose_stream_was_wiped_closes_its_connections") {
        return;
    }
    let redis = RedisServer::start();
    let on_a = Arc::new(Recorder::default());
    let a = store_on(&redis, "a", "wipe:", StoreSettings::default(), on_a.clone()).await;
    created(&a, claims("alice", "j1")).await;
    // Redis restarted without its data: the stream, and whatever was in it, is gone.
    let client = redis::Client::open(redis.url()).expect("url");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("connects");
    let _: () = redis::cmd("FLUSHALL")
        .query_async(&mut conn)
        .await
        .expect("flush");
    drop_every_link(&redis).await;
    for _ in 0..100 {
        if on_a.lost() > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        on_a.lost(),
        1,
        "the node cannot rule out a missed revocation: it closes its connections"
    );
}

#[tokio::test]
async fn redis_down_fails_calls_fast_and_a_restart_loses_no_stored_session() {
    if !available("redis_down_fails_calls_fast_and_a_restart_loses_no_stored_session") {
        return;
    }
    let mut redis = RedisServer::start_persistent();
    let rec = Arc::new(Recorder::default());
    let store = store_on(
        &redis,
        "a",
        "restart:",
        StoreSettings::default(),
        rec.clone(),
    )
    .await;
    let (id, token, epoch) = created(&store, claims("alice", "j1")).await;
    store.subscribe(&id, epoch, "general").await.expect("join");
    let data = Payload::from_json(r#"{"n":1}"#).expect("json");
    assert_eq!(store.publish("general", Some("bob"), data, T0).await, Ok(1));
    store.detach(&id, epoch, T0 + 10).await.expect("detach");

    redis.stop();
    let started = std::time::Instant::now();
    let down = store.create_session(claims("carol", "c1"), T0 + 20).await;
    assert!(
        matches!(down, Err(StoreError::Unavailable(_))),
        "an error, not a guess: {down:?}"
    );
    assert!(store.ping().await.is_err(), "not ready while Redis is down");
    eprintln!(
        "a call with Redis down failed after {:?}",
        started.elapsed()
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "fails within the timeout"
    );

    redis.restart();
    let mut resumed = None;
    for _ in 0..100 {
        if let Ok(r) = store.resume_session(&id, &token, T0 + 30).await {
            resumed = r;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (session, _) = resumed.expect("the session stored before the fault resumes");
    assert_eq!(session.channels, vec!["general".to_owned()]);
    assert_eq!(session.buffered.len(), 1, "the buffered message survived");
    assert_eq!(session.buffered[0].data.get(), r#"{"n":1}"#);
    assert!(store.ping().await.is_ok(), "ready again");
    created(&store, claims("carol", "c2")).await;
}
