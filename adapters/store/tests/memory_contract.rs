//! The store contract against the in-memory store, and races on it.

use std::sync::Arc;

use wsauth_core::jwt::Claims;
use wsauth_store::contract::{Recorder, run_all};
use wsauth_store::{CreateOutcome, LimitPolicy, MemoryStore, Store, StoreSettings};

#[tokio::test]
async fn memory_store_keeps_the_contract() {
    run_all(async |settings, notify| MemoryStore::new(settings, notify)).await;
}

const T0: u64 = 1_767_225_600_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_resumes_exactly_one_wins() {
    for round in 0..50 {
        let store = Arc::new(MemoryStore::new(
            StoreSettings::default(),
            Arc::new(Recorder::default()),
        ));
        let CreateOutcome::Created {
            session_id,
            resume_token,
            epoch,
        } = store
            .create_session(Arc::new(Claims::new("alice", T0 + 3_600_000)), T0)
            .await
            .expect("answers")
        else {
            panic!("created")
        };
        store.detach(&session_id, epoch, T0).await.expect("detach");
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (store, id, token) = (store.clone(), session_id.clone(), resume_token.clone());
                tokio::spawn(async move {
                    store
                        .resume_session(&id, &token, T0 + 1)
                        .await
                        .expect("answers")
                        .is_some()
                })
            })
            .collect();
        let mut wins = 0;
        for t in tasks {
            wins += usize::from(t.await.expect("task"));
        }
        assert_eq!(wins, 1, "round {round}: exactly one resume wins");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_creations_never_exceed_the_limit() {
    for policy in [LimitPolicy::EvictOldest, LimitPolicy::RejectNew] {
        let settings = StoreSettings {
            max_sessions_per_user: Some(3),
            limit_policy: policy,
            ..StoreSettings::default()
        };
        let store = Arc::new(MemoryStore::new(settings, Arc::new(Recorder::default())));
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let store = store.clone();
                tokio::spawn(async move {
                    let mut c = Claims::new("alice", T0 + 3_600_000);
                    c.jti = Some(format!("j{i}"));
                    store
                        .create_session(Arc::new(c), T0)
                        .await
                        .expect("answers")
                })
            })
            .collect();
        let mut created = 0;
        for t in tasks {
            if matches!(t.await.expect("task"), CreateOutcome::Created { .. }) {
                created += 1;
            }
            let live = store.sessions_of("alice").await.expect("answers").len();
            assert!(live <= 3, "{policy:?}: {live} sessions");
        }
        let expected = if policy == LimitPolicy::RejectNew {
            3
        } else {
            64
        };
        assert_eq!(created, expected, "{policy:?}");
        assert_eq!(store.sessions_of("alice").await.expect("answers").len(), 3);
    }
}

/// Records deliveries per session, in arrival order.
#[derive(Default)]
struct Arrivals(std::sync::Mutex<Vec<u64>>);

impl wsauth_store::Notify for Arrivals {
    fn notify(&self, _session_id: &str, _epoch: u64, notice: wsauth_store::Notice) {
        if let wsauth_store::Notice::Deliver(d) = notice {
            self.0.lock().expect("lock").push(d.seq);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishers_deliver_in_seq_order() {
    let arrivals = Arc::new(Arrivals::default());
    let store = Arc::new(MemoryStore::new(StoreSettings::default(), arrivals.clone()));
    let CreateOutcome::Created {
        session_id, epoch, ..
    } = store
        .create_session(Arc::new(Claims::new("alice", T0 + 3_600_000)), T0)
        .await
        .expect("answers")
    else {
        panic!("created")
    };
    store
        .subscribe(&session_id, epoch, "general")
        .await
        .expect("subscribe");
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..500 {
                    let data = wsauth_core::Payload::from_json("1").expect("json");
                    store
                        .publish("general", "p", data, T0)
                        .await
                        .expect("publish");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task");
    }
    let seen = arrivals.0.lock().expect("lock").clone();
    assert_eq!(seen.len(), 4000);
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "deliveries left out of seq order"
    );
}
