//! The store contract against the Redis store (the same suite the in-memory store
//! passes), and the races that must hold across nodes: each "node" here is its own
//! `RedisStore` with its own connection and notice stream.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wsauth_store::contract::{run_all, run_races};
use wsauth_store_redis::testing::{RedisServer, available};
use wsauth_store_redis::{RedisConfig, RedisStore};

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

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    if !available("redis_store_keeps_the_contract") {
        return;
    }
    let redis = RedisServer::start();
    run_all(async |settings, notify| {
        let prefix = format!("t{}:", PREFIXES.fetch_add(1, Ordering::Relaxed));
        store_on(&redis, "n1", &prefix, settings, notify).await
    })
    .await;
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
