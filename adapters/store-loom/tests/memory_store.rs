//! loom models of the in-memory store's concurrent parts. Every interleaving of the
//! two threads in each model is explored.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p wsauth-store-loom --release`
#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use wsauth_core::jwt::Claims;
use wsauth_core::{Payload, Revocation};
use wsauth_store::{CreateOutcome, LimitPolicy, MemoryStore, Notice, Notify, Store, StoreSettings};

const T0: u64 = 1_767_225_600_000;

/// The in-memory store's futures never wait: poll once.
fn now<F: Future>(f: F) -> F::Output {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("the in-memory store never waits"),
    }
}

#[derive(Default)]
struct Recorder {
    notices: Mutex<Vec<(String, u64, Notice)>>,
    /// Set when a test's `unsubscribe` has returned: no delivery may follow.
    left: AtomicBool,
    late_deliveries: AtomicBool,
}

impl Notify for Recorder {
    fn notify(&self, session_id: &str, epoch: u64, notice: Notice) {
        if matches!(notice, Notice::Deliver(_)) && self.left.load(Ordering::SeqCst) {
            self.late_deliveries.store(true, Ordering::SeqCst);
        }
        self.notices
            .lock()
            .expect("lock")
            .push((session_id.to_owned(), epoch, notice));
    }
}

fn claims(jti: &str) -> Arc<Claims> {
    let mut c = Claims::new("alice", T0 + 3_600_000);
    c.jti = Some(jti.to_owned());
    Arc::new(c)
}

fn created(outcome: CreateOutcome) -> (String, wsauth_core::Secret, u64) {
    match outcome {
        CreateOutcome::Created {
            session_id,
            resume_token,
            epoch,
            ..
        } => (session_id, resume_token, epoch),
        other => panic!("expected a session, got {other:?}"),
    }
}

#[test]
fn two_racing_resumes_exactly_one_wins_and_the_token_is_spent() {
    loom::model(|| {
        let rec = Arc::new(Recorder::default());
        let store = Arc::new(MemoryStore::new(StoreSettings::default(), rec.clone()));
        let (id, token, epoch) =
            created(now(store.create_session(claims("j1"), T0)).expect("answers"));
        now(store.detach(&id, epoch, T0)).expect("detach");
        let racers: Vec<_> = (0..2)
            .map(|_| {
                let (store, id, token) = (store.clone(), id.clone(), token.clone());
                thread::spawn(move || {
                    now(store.resume_session(&id, &token, T0 + 1))
                        .expect("answers")
                        .is_some()
                })
            })
            .collect();
        let wins: usize = racers
            .into_iter()
            .map(|t| usize::from(t.join().expect("thread")))
            .sum();
        assert_eq!(wins, 1, "exactly one resume wins");
        assert!(
            now(store.resume_session(&id, &token, T0 + 2))
                .expect("answers")
                .is_none(),
            "the token is spent"
        );
    });
}

#[test]
fn concurrent_creation_never_exceeds_the_limit_and_the_evicted_is_told() {
    for policy in [LimitPolicy::EvictOldest, LimitPolicy::RejectNew] {
        loom::model(move || {
            let rec = Arc::new(Recorder::default());
            let settings = StoreSettings {
                max_sessions_per_user: Some(1),
                limit_policy: policy,
                ..StoreSettings::default()
            };
            let store = Arc::new(MemoryStore::new(settings, rec.clone()));
            let threads: Vec<_> = ["a", "b"]
                .into_iter()
                .map(|jti| {
                    let store = store.clone();
                    thread::spawn(move || {
                        now(store.create_session(claims(jti), T0)).expect("answers")
                    })
                })
                .collect();
            let outcomes: Vec<CreateOutcome> = threads
                .into_iter()
                .map(|t| t.join().expect("thread"))
                .collect();
            let live = now(store.sessions_of("alice")).expect("answers");
            assert_eq!(live.len(), 1, "{policy:?}: the limit holds");
            let created = outcomes
                .iter()
                .filter(|o| matches!(o, CreateOutcome::Created { .. }))
                .count();
            let told = rec.notices.lock().expect("lock").clone();
            match policy {
                LimitPolicy::RejectNew => {
                    assert_eq!(created, 1);
                    assert!(told.is_empty());
                }
                LimitPolicy::EvictOldest => {
                    assert_eq!(created, 2);
                    assert_eq!(told.len(), 1, "the evicted session is told");
                    assert_eq!(told[0].2, Notice::Replaced);
                    assert_ne!(
                        told[0].0, live[0].session_id,
                        "the survivor is not the one told"
                    );
                }
            }
        });
    }
}

#[test]
fn once_revocation_returns_the_token_is_never_accepted() {
    loom::model(|| {
        let rec = Arc::new(Recorder::default());
        let store = Arc::new(MemoryStore::new(StoreSettings::default(), rec.clone()));
        let auth = {
            let store = store.clone();
            thread::spawn(move || now(store.create_session(claims("j1"), T0)).expect("answers"))
        };
        now(store.revoke(Revocation::Token { jti: "j1".into() }, T0)).expect("revoke");
        // From here on, the token is refused...
        assert_eq!(
            now(store.create_session(claims("j1"), T0 + 1)).expect("answers"),
            CreateOutcome::Revoked
        );
        let outcome = auth.join().expect("thread");
        // ...and a creation that raced the revocation either lost, or was removed and told.
        let remaining = now(store.sessions_of("alice")).expect("answers");
        assert!(
            remaining.is_empty(),
            "a session of the revoked token survived"
        );
        if let CreateOutcome::Created { session_id, .. } = outcome {
            let told = rec.notices.lock().expect("lock").clone();
            assert!(
                told.iter()
                    .any(|(id, _, n)| *id == session_id && matches!(n, Notice::Revoked { .. })),
                "the racing session was removed without being told"
            );
        }
    });
}

#[test]
fn no_delivery_after_leave_returns() {
    loom::model(|| {
        let rec = Arc::new(Recorder::default());
        let store = Arc::new(MemoryStore::new(StoreSettings::default(), rec.clone()));
        let (id, _, epoch) = created(now(store.create_session(claims("j1"), T0)).expect("answers"));
        now(store.subscribe(&id, epoch, "general")).expect("join");
        let publisher = {
            let store = store.clone();
            thread::spawn(move || {
                let data = Payload::from_json("1").expect("json");
                now(store.publish("general", Some("bob"), data, T0)).expect("publish")
            })
        };
        now(store.unsubscribe(&id, epoch, "general")).expect("leave");
        rec.left.store(true, Ordering::SeqCst);
        publisher.join().expect("thread");
        assert!(
            !rec.late_deliveries.load(Ordering::SeqCst),
            "a delivery arrived after `left`"
        );
    });
}
