//! The store contract against the in-memory store, and races on it.

use std::sync::Arc;

use wsauth_store::MemoryStore;
use wsauth_store::contract::{run_all, run_races, run_rule_cases};

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    run_all(async |settings, notify| MemoryStore::new(settings, notify)).await;
}

#[tokio::test]
async fn memory_store_follows_the_rules_table() {
    run_rule_cases(async |settings, notify| MemoryStore::new(settings, notify)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_store_survives_the_races() {
    run_races(async |settings, notify, n| {
        let store = Arc::new(MemoryStore::new(settings, notify));
        vec![store; n]
    })
    .await;
}
