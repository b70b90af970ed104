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

#[tokio::test]
async fn past_the_replay_budget_new_sessions_are_refused_until_buffers_shrink() {
    use wsauth_core::Payload;
    use wsauth_core::jwt::Claims;
    use wsauth_store::contract::Recorder;
    use wsauth_store::{CreateOutcome, Store, StoreSettings};

    let settings = StoreSettings {
        replay_budget_bytes: 2_500,
        ..StoreSettings::default()
    };
    let store = MemoryStore::new(settings, Arc::new(Recorder::default()));
    let claims = |sub: &str| Arc::new(Claims::new(sub, u64::MAX / 4));
    let CreateOutcome::Created {
        session_id, epoch, ..
    } = store
        .create_session(claims("alice"), 0)
        .await
        .expect("create")
    else {
        panic!("alice refused")
    };
    store
        .subscribe(&session_id, epoch, "general")
        .await
        .expect("join");
    let data = Payload::from_json(&format!("\"{}\"", "x".repeat(998))).expect("json");
    for _ in 0..2 {
        store
            .publish("general", None, data.clone(), 1)
            .await
            .expect("publish");
    }
    // 2,000 bytes buffered: still under the budget.
    assert!(store.create_session(claims("bob"), 2).await.is_ok());
    store
        .publish("general", None, data.clone(), 3)
        .await
        .expect("publish");
    // 3,000 bytes: over it, a new session is refused (the client gets INTERNAL).
    assert!(store.create_session(claims("carol"), 4).await.is_err());
    // The session ends, its buffer goes: new sessions are admitted again.
    store.end_session(&session_id, epoch).await.expect("end");
    assert!(store.create_session(claims("carol"), 5).await.is_ok());
}
