//! The store contract as one test suite that every [`Store`] must pass: the
//! in-memory store's tests run it, and so do the Redis store's.
//!
//! ```text
//! wsauth_store::contract::run_all(async |settings, notify| MemoryStore::new(settings, notify)).await;
//! wsauth_store::contract::run_rule_cases(async |settings, notify| MemoryStore::new(settings, notify)).await;
//! ```
//!
//! [`RULE_CASES`] is the one table of rule edges both stores go through: each
//! case's verdict from [`wsauth_core::rules`] must be the one the table states, and
//! the store's must be the same. It is what keeps the Redis store's Lua mirror of
//! the rules in step with the Rust.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};

use wsauth_core::jwt::Claims;
use wsauth_core::rules::{self, LimitDecision, SubEntry};
use wsauth_core::{Delivery, Payload, Revocation, Secret};

use crate::{CreateOutcome, LimitPolicy, Notice, Notify, RefreshOutcome, Store, StoreSettings};

/// Records every notice, for the checks.
#[derive(Default)]
pub struct Recorder {
    notices: Mutex<Vec<(String, u64, Notice)>>,
    lost: std::sync::atomic::AtomicUsize,
}

impl Recorder {
    /// Takes what was recorded.
    pub fn take(&self) -> Vec<(String, u64, Notice)> {
        std::mem::take(&mut *self.notices.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// How many times the store said notices may have been lost.
    pub fn lost(&self) -> usize {
        self.lost.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl Notify for Recorder {
    fn notify(&self, session_id: &str, epoch: u64, notice: Notice) {
        self.notices
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((session_id.to_owned(), epoch, notice));
    }

    fn notices_lost(&self) {
        self.lost.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

const T0: u64 = 1_767_225_600_000;

fn claims(sub: &str, jti: &str, iat_s: Option<u64>) -> Arc<Claims> {
    let mut c = Claims::new(sub, T0 + 3_600_000);
    c.jti = Some(jti.to_owned());
    c.iat_ms = iat_s.map(|s| s * 1000);
    Arc::new(c)
}

/// Creates a session that must be created: (session id, resume token, epoch).
pub async fn create<S: Store>(store: &S, c: Arc<Claims>, now: u64) -> (String, Secret, u64) {
    match store.create_session(c, now).await.expect("store answers") {
        CreateOutcome::Created {
            session_id,
            resume_token,
            epoch,
            ..
        } => (session_id, resume_token, epoch),
        other => panic!("expected a session, got {other:?}"),
    }
}

/// What was recorded once the store's notices have all arrived.
pub async fn settled<S: Store>(store: &S, rec: &Recorder) -> Vec<(String, u64, Notice)> {
    store.settle().await.expect("the store settles");
    rec.take()
}

/// Runs every check against stores made by `make`.
pub async fn run_all<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn(StoreSettings, Arc<dyn Notify>) -> Fut,
    Fut: Future<Output = S>,
{
    let fresh = async |settings: StoreSettings| {
        let recorder = Arc::new(Recorder::default());
        let store = make(settings, recorder.clone()).await;
        (store, recorder)
    };

    // ids and tokens: random, prefixed, long enough.
    {
        let (store, _) = fresh(StoreSettings::default()).await;
        let (a, ta, _) = create(&store, claims("alice", "j1", None), T0).await;
        let (b, tb, _) = create(&store, claims("alice", "j2", None), T0).await;
        assert!(a.starts_with("s_") && a.len() >= 2 + 22, "session id {a}");
        assert!(ta.expose().starts_with("r_") && ta.expose().len() >= 2 + 43);
        assert_ne!(a, b);
        assert_ne!(ta, tb);
    }

    // Resume: rotation, single use, wrong token.
    {
        let (store, rec) = fresh(StoreSettings::default()).await;
        let (id, token, epoch) = create(&store, claims("alice", "j1", None), T0).await;
        store.detach(&id, epoch, T0 + 10).await.expect("detach");
        let wrong = Secret::new("r_wrong");
        assert!(
            store
                .resume_session(&id, &wrong, T0 + 20)
                .await
                .expect("answers")
                .is_none(),
            "wrong token"
        );
        let (resumed, epoch2) = store
            .resume_session(&id, &token, T0 + 30)
            .await
            .expect("answers")
            .expect("resumes");
        assert!(epoch2 > epoch);
        assert_ne!(resumed.resume_token, token, "rotated");
        assert!(
            store
                .resume_session(&id, &token, T0 + 40)
                .await
                .expect("answers")
                .is_none(),
            "single use"
        );
        assert!(
            settled(&store, &rec).await.is_empty(),
            "nothing was attached when resumed"
        );
        // A live attachment is told Replaced, at its own epoch.
        let (_, epoch3) = store
            .resume_session(&id, &resumed.resume_token, T0 + 50)
            .await
            .expect("answers")
            .expect("resumes again");
        assert_eq!(
            settled(&store, &rec).await,
            vec![(id.clone(), epoch2, Notice::Replaced)]
        );
        assert!(epoch3 > epoch2);
        // A stale epoch can no longer detach or end it.
        store.end_session(&id, epoch2).await.expect("answers");
        assert_eq!(
            store.sessions_of("alice").await.expect("answers").len(),
            1,
            "stale end ignored"
        );
        store.detach(&id, epoch2, T0 + 60).await.expect("answers");
        let info = store.sessions_of("alice").await.expect("answers");
        assert!(info[0].attached, "stale detach ignored");
        store.end_session(&id, epoch3).await.expect("answers");
        assert!(
            store
                .sessions_of("alice")
                .await
                .expect("answers")
                .is_empty()
        );
    }

    // Grace period and expired tokens.
    {
        let settings = StoreSettings {
            resume_grace_ms: 1_000,
            ..StoreSettings::default()
        };
        let (store, _) = fresh(settings).await;
        let (id, token, epoch) = create(&store, claims("alice", "j1", None), T0).await;
        store.detach(&id, epoch, T0).await.expect("detach");
        assert!(
            store
                .resume_session(&id, &token, T0 + 1_000)
                .await
                .expect("answers")
                .is_none(),
            "grace over"
        );
        let mut short = Claims::new("bob", T0 + 100);
        short.jti = Some("b".into());
        let (id, token, epoch) = create(&store, Arc::new(short), T0).await;
        store.detach(&id, epoch, T0).await.expect("detach");
        let past = T0 + 100 + StoreSettings::default().leeway_ms;
        assert!(
            store
                .resume_session(&id, &token, past)
                .await
                .expect("answers")
                .is_none(),
            "token expired"
        );
    }

    // Per-user limit: evict_oldest tells the oldest; detached sessions count.
    {
        let settings = StoreSettings {
            max_sessions_per_user: Some(2),
            ..StoreSettings::default()
        };
        let (store, rec) = fresh(settings).await;
        let (a, _, ea) = create(&store, claims("alice", "j1", None), T0).await;
        let (b, _, eb) = create(&store, claims("alice", "j2", None), T0 + 1).await;
        store.detach(&b, eb, T0 + 2).await.expect("detach");
        let outcome = store
            .create_session(claims("alice", "j3", None), T0 + 3)
            .await
            .expect("answers");
        assert!(
            matches!(outcome, CreateOutcome::Created { evicted: 1, .. }),
            "one eviction reported: {outcome:?}"
        );
        assert_eq!(
            settled(&store, &rec).await,
            vec![(a.clone(), ea, Notice::Replaced)],
            "the oldest is evicted"
        );
        let ids: Vec<String> = store
            .sessions_of("alice")
            .await
            .expect("answers")
            .into_iter()
            .map(|s| s.session_id)
            .collect();
        assert_eq!(ids.len(), 2);
        assert!(
            !ids.contains(&a) && ids.contains(&b),
            "the detached one counts and stays"
        );
        // Other users are not affected.
        create(&store, claims("bob", "k1", None), T0 + 4).await;
        assert!(settled(&store, &rec).await.is_empty());
    }
    {
        let settings = StoreSettings {
            max_sessions_per_user: Some(1),
            limit_policy: LimitPolicy::RejectNew,
            resume_grace_ms: 1_000,
            ..StoreSettings::default()
        };
        let (store, _) = fresh(settings).await;
        let (a, _, ea) = create(&store, claims("alice", "j1", None), T0).await;
        assert_eq!(
            store
                .create_session(claims("alice", "j2", None), T0)
                .await
                .expect("answers"),
            CreateOutcome::TooManySessions
        );
        store.detach(&a, ea, T0).await.expect("detach");
        assert_eq!(
            store
                .create_session(claims("alice", "j2", None), T0 + 500)
                .await
                .expect("answers"),
            CreateOutcome::TooManySessions,
            "a detached session within grace counts"
        );
        create(&store, claims("alice", "j3", None), T0 + 1_000).await;
    }

    // Revocation by jti, by sub (iat rule), by session.
    {
        let (store, rec) = fresh(StoreSettings::default()).await;
        let (a, ta, ea) = create(&store, claims("alice", "j1", Some(T0 / 1000)), T0).await;
        let told = store
            .revoke(Revocation::Token { jti: "j1".into() }, T0 + 1)
            .await
            .expect("answers");
        assert_eq!(told, 1);
        assert_eq!(
            settled(&store, &rec).await,
            vec![(
                a.clone(),
                ea,
                Notice::Revoked {
                    revocation: Revocation::Token { jti: "j1".into() },
                    at_ms: T0 + 1
                }
            )]
        );
        assert_eq!(
            store
                .create_session(claims("alice", "j1", None), T0 + 2)
                .await
                .expect("answers"),
            CreateOutcome::Revoked
        );
        assert!(
            store
                .resume_session(&a, &ta, T0 + 2)
                .await
                .expect("answers")
                .is_none()
        );
        let (b, _, eb) = create(&store, claims("alice", "j2", Some(T0 / 1000)), T0 + 3).await;
        assert_eq!(
            store
                .refresh_session(&b, eb, claims("alice", "j1", None), T0 + 4)
                .await
                .expect("answers"),
            RefreshOutcome::Revoked
        );
        let at_s = T0 / 1000 + 10;
        let told = store
            .revoke(
                Revocation::Subject {
                    sub: "alice".into(),
                    at_s,
                },
                T0 + 10_000,
            )
            .await
            .expect("answers");
        assert_eq!(told, 1, "b is told");
        settled(&store, &rec).await;
        assert_eq!(
            store
                .create_session(claims("alice", "j5", Some(at_s)), T0 + 11_000)
                .await
                .expect("answers"),
            CreateOutcome::Revoked,
            "iat at the revocation time is refused"
        );
        assert_eq!(
            store
                .create_session(claims("alice", "j6", None), T0 + 11_000)
                .await
                .expect("answers"),
            CreateOutcome::Revoked,
            "no iat is refused"
        );
        create(&store, claims("alice", "j7", Some(at_s + 1)), T0 + 11_000).await;
        assert!(
            store
                .is_revoked(&claims("alice", "j8", Some(at_s)), T0 + 12_000)
                .await
                .expect("answers")
        );
        let (c, _, ec) = create(&store, claims("carol", "c1", None), T0).await;
        let told = store
            .revoke(
                Revocation::Session {
                    session_id: c.clone(),
                },
                T0 + 1,
            )
            .await
            .expect("answers");
        assert_eq!(told, 1);
        assert_eq!(
            settled(&store, &rec).await,
            vec![(
                c.clone(),
                ec,
                Notice::Revoked {
                    revocation: Revocation::Session { session_id: c },
                    at_ms: T0 + 1
                }
            )]
        );
        // Entries expire: after the max token lifetime the user may log in with old tokens.
        let later = T0 + 10_000 + StoreSettings::default().max_token_lifetime_ms;
        store.purge_expired(later).await.expect("purge");
        assert_eq!(
            store.stats().await.expect("stats").revocations,
            0,
            "revocations purged"
        );
    }

    // Publish: seq per session, buffer cap, joined sessions only, current epoch.
    {
        let settings = StoreSettings {
            resume_buffer: 2,
            ..StoreSettings::default()
        };
        let (store, rec) = fresh(settings).await;
        let (a, ta, ea) = create(&store, claims("alice", "j1", None), T0).await;
        let (b, _, eb) = create(&store, claims("bob", "k1", None), T0).await;
        store.subscribe(&a, ea, "general").await.expect("sub");
        store.subscribe(&b, eb, "general").await.expect("sub");
        let data = Payload::from_json(r#"{"n":1}"#).expect("json");
        assert_eq!(
            store
                .publish("general", Some("carol"), data.clone(), T0)
                .await
                .expect("publish"),
            2
        );
        assert_eq!(
            store
                .publish("other", Some("carol"), data.clone(), T0)
                .await
                .expect("publish"),
            0
        );
        let seen = settled(&store, &rec).await;
        assert_eq!(seen.len(), 2);
        for (id, epoch, notice) in &seen {
            let Notice::Deliver(d) = notice else {
                panic!("a delivery")
            };
            assert_eq!(d.seq, 1);
            assert_eq!(
                d.from.as_deref(),
                Some("carol"),
                "a user's publish names them"
            );
            assert_eq!(*epoch, if *id == a { ea } else { eb });
        }
        store.unsubscribe(&b, eb, "general").await.expect("unsub");
        store.detach(&a, ea, T0).await.expect("detach");
        for _ in 0..3 {
            store
                .publish("general", Some("carol"), data.clone(), T0)
                .await
                .expect("publish");
        }
        assert!(
            settled(&store, &rec).await.is_empty(),
            "detached and unsubscribed sessions get no notice"
        );
        let (resumed, _) = store
            .resume_session(&a, &ta, T0 + 1)
            .await
            .expect("answers")
            .expect("resumes");
        assert_eq!(resumed.last_seq, 4);
        let seqs: Vec<u64> = resumed.buffered.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, vec![3, 4], "the buffer keeps the last two");
        assert_eq!(resumed.channels, vec!["general".to_owned()]);
    }

    // The replay buffer is bounded in bytes too: the oldest messages go first.
    {
        let settings = StoreSettings {
            resume_buffer_bytes: 2_500,
            ..StoreSettings::default()
        };
        let (store, _rec) = fresh(settings).await;
        let (a, ta, ea) = create(&store, claims("alice", "j1", None), T0).await;
        store.subscribe(&a, ea, "general").await.expect("sub");
        store.detach(&a, ea, T0).await.expect("detach");
        // 1,000 bytes of data each: two fit in 2,500 bytes (with what a store
        // keeps beside the data), three do not.
        let data = Payload::from_json(&format!("\"{}\"", "x".repeat(998))).expect("json");
        for _ in 0..5 {
            store
                .publish("general", Some("carol"), data.clone(), T0)
                .await
                .expect("publish");
        }
        let (resumed, _) = store
            .resume_session(&a, &ta, T0 + 1)
            .await
            .expect("answers")
            .expect("resumes");
        assert_eq!(resumed.last_seq, 5);
        let seqs: Vec<u64> = resumed.buffered.iter().map(|d| d.seq).collect();
        assert_eq!(seqs, vec![4, 5], "the buffer keeps what fits in its bytes");
    }

    // The server's publish (PROTOCOL §9): joined sessions only, no `from`, and the
    // same per-session seq, buffer and notices as a user's publish.
    {
        let (store, rec) = fresh(StoreSettings::default()).await;
        let (a, ta, ea) = create(&store, claims("alice", "j1", None), T0).await;
        let (b, _, eb) = create(&store, claims("bob", "k1", None), T0).await;
        let (c, _, _) = create(&store, claims("carol", "c1", None), T0).await;
        store.subscribe(&a, ea, "general").await.expect("sub");
        store.subscribe(&b, eb, "general").await.expect("sub");
        let data = |n: u32| Payload::from_json(&n.to_string()).expect("json");
        let publish = async |from: Option<&str>, n: u32| {
            store
                .publish("general", from, data(n), T0)
                .await
                .expect("publish")
        };
        assert_eq!(publish(Some("carol"), 1).await, 2);
        assert_eq!(publish(None, 2).await, 2, "the server reaches both");
        assert_eq!(publish(Some("bob"), 3).await, 2);
        let seen = settled(&store, &rec).await;
        for (id, epoch) in [(&a, ea), (&b, eb)] {
            let got: Vec<(u64, Option<&str>, &Payload)> = seen
                .iter()
                .filter(|(i, e, _)| i == id && *e == epoch)
                .map(|(_, _, n)| match n {
                    Notice::Deliver(d) => (d.seq, d.from.as_deref(), &d.data),
                    other => panic!("a delivery, not {other:?}"),
                })
                .collect();
            assert_eq!(
                got,
                vec![
                    (1, Some("carol"), &data(1)),
                    (2, None, &data(2)),
                    (3, Some("bob"), &data(3)),
                ],
                "one seq order for the user's and the server's messages"
            );
        }
        assert_eq!(seen.len(), 6, "carol joined nothing: {c} got nothing");
        store.detach(&a, ea, T0).await.expect("detach");
        assert_eq!(publish(None, 4).await, 2, "a detached session is reached");
        assert_eq!(
            settled(&store, &rec).await.len(),
            1,
            "only bob, attached, is notified"
        );
        let (resumed, _) = store
            .resume_session(&a, &ta, T0 + 1)
            .await
            .expect("answers")
            .expect("resumes");
        let last = resumed.buffered.last().expect("buffered");
        assert_eq!((last.seq, last.from.as_deref()), (4, None));
        assert_eq!(&*last.channel, "general");
        assert_eq!(last.data, data(4));
        assert_eq!(resumed.last_seq, 4);
    }

    // The server's send to a user: every session of that user alive in the store,
    // attached or within grace, joined to `user:<sub>` or not; nobody else's, and
    // none past grace. It returns the sessions reached.
    {
        let settings = StoreSettings {
            resume_grace_ms: 1_000,
            ..StoreSettings::default()
        };
        let (store, rec) = fresh(settings).await;
        let now = T0 + 1_000;
        // a1: attached, joined `general` only. a2: detached within grace at `now`.
        // a3: detached exactly a grace before `now`, so past it.
        let (a1, _, e1) = create(&store, claims("alice", "j1", None), T0).await;
        let (a2, t2, e2) = create(&store, claims("alice", "j2", None), T0).await;
        let (a3, t3, e3) = create(&store, claims("alice", "j3", None), T0).await;
        store.detach(&a3, e3, T0).await.expect("detach");
        store.detach(&a2, e2, T0 + 500).await.expect("detach");
        store.subscribe(&a1, e1, "general").await.expect("sub");
        // bob: attached, and joined to alice's user channel (a `user:*` token).
        let (b, _, eb) = create(&store, claims("bob", "k1", None), T0).await;
        store.subscribe(&b, eb, "user:alice").await.expect("sub");
        let data = Payload::from_json(r#"{"note":"hi"}"#).expect("json");
        let published = store
            .publish("general", Some("carol"), data.clone(), now)
            .await
            .expect("publish");
        assert_eq!(published, 1);
        settled(&store, &rec).await;
        let reached = store
            .send_to_user("alice", data.clone(), now)
            .await
            .expect("send");
        assert_eq!(reached, 2, "a1 and a2; not a3, past grace, nor bob");
        let expected = Delivery {
            channel: "user:alice".into(),
            from: None,
            seq: 2,
            data: data.clone(),
        };
        assert_eq!(
            settled(&store, &rec).await,
            vec![(a1.clone(), e1, Notice::Deliver(expected))],
            "the attached one is told, on user:alice it never joined, after \
             the user's publish (seq 2); not the detached one nor bob"
        );
        let (resumed, _) = store
            .resume_session(&a2, &t2, now + 1)
            .await
            .expect("answers")
            .expect("a2 resumes within grace");
        assert_eq!(
            resumed.buffered,
            vec![Delivery {
                channel: "user:alice".into(),
                from: None,
                seq: 1,
                data: data.clone(),
            }],
            "the detached one's buffer has it"
        );
        assert_eq!(resumed.last_seq, 1);
        assert!(resumed.channels.is_empty(), "sending joins nothing");
        let (kept, _) = rules::replay(resumed.buffered, 0, 1, "alice", &BTreeSet::new());
        assert_eq!(kept.len(), 1, "and its resume replays it");
        assert!(
            store
                .resume_session(&a3, &t3, now + 1)
                .await
                .expect("answers")
                .is_none(),
            "a3 is past grace"
        );
        assert_eq!(
            store
                .send_to_user("nobody", data.clone(), now)
                .await
                .expect("send"),
            0
        );
        assert_eq!(
            store.send_to_user("bob", data, now).await.expect("send"),
            1,
            "bob's own"
        );
        let seen = settled(&store, &rec).await;
        assert_eq!(seen.len(), 1);
        let (id, _, Notice::Deliver(d)) = &seen[0] else {
            panic!("a delivery")
        };
        assert_eq!((id, &*d.channel, d.seq), (&b, "user:bob", 1));
    }

    // Refresh, expiring note and stale epochs.
    {
        let (store, _) = fresh(StoreSettings::default()).await;
        let (a, ta, ea) = create(&store, claims("alice", "j1", None), T0).await;
        store.note_expiring_sent(&a, ea).await.expect("note");
        store.detach(&a, ea, T0).await.expect("detach");
        let (r, e2) = store
            .resume_session(&a, &ta, T0)
            .await
            .expect("answers")
            .expect("resumes");
        assert!(r.expiring_sent);
        let mut newer = Claims::new("alice", T0 + 7_200_000);
        newer.jti = Some("j2".into());
        assert_eq!(
            store
                .refresh_session(&a, e2, Arc::new(newer), T0 + 5)
                .await
                .expect("answers"),
            RefreshOutcome::Refreshed
        );
        let info = store.sessions_of("alice").await.expect("answers");
        assert_eq!(info[0].expires_at_ms, T0 + 7_200_000);
        store.detach(&a, e2, T0 + 6).await.expect("detach");
        let (r, _) = store
            .resume_session(&a, &r.resume_token, T0 + 7)
            .await
            .expect("answers")
            .expect("resumes");
        assert!(!r.expiring_sent, "a refresh resets the notice");
        assert_eq!(r.authorized_at_ms, T0 + 5);
        assert_eq!(r.claims.jti.as_deref(), Some("j2"));
    }

    // Purge: sessions past grace and past their token go.
    {
        let settings = StoreSettings {
            resume_grace_ms: 1_000,
            ..StoreSettings::default()
        };
        let (store, _) = fresh(settings).await;
        let (a, _, ea) = create(&store, claims("alice", "j1", None), T0).await;
        create(&store, claims("bob", "k1", None), T0).await;
        store.subscribe(&a, ea, "general").await.expect("sub");
        store
            .publish(
                "general",
                Some("x"),
                Payload::from_json("1").expect("json"),
                T0,
            )
            .await
            .expect("pub");
        store.detach(&a, ea, T0).await.expect("detach");
        assert_eq!(store.stats().await.expect("stats").sessions, 2);
        store.purge_expired(T0 + 1_000).await.expect("purge");
        let stats = store.stats().await.expect("stats");
        assert_eq!(stats.sessions, 1, "the detached one is gone after grace");
        assert_eq!(stats.buffered, 0);
        store
            .purge_expired(T0 + 3_600_000 + 30_000)
            .await
            .expect("purge");
        assert_eq!(
            store.stats().await.expect("stats").sessions,
            0,
            "the expired one is gone"
        );
    }
}

/// Records the `seq` of every delivery, in arrival order.
#[derive(Default)]
struct Arrivals(Mutex<Vec<u64>>);

impl Notify for Arrivals {
    fn notify(&self, _session_id: &str, _epoch: u64, notice: Notice) {
        if let Notice::Deliver(d) = notice {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).push(d.seq);
        }
    }
}

/// Races across the nodes of one deployment. `make_nodes(settings, notify, n)`
/// returns `n` handles on one shared state: the same store `n` times for a
/// single-node store, `n` separate stores (connections, streams) for a shared one.
/// Run it on a multi-threaded runtime.
pub async fn run_races<S, F, Fut>(make_nodes: F)
where
    S: Store,
    F: Fn(StoreSettings, Arc<dyn Notify>, usize) -> Fut,
    Fut: Future<Output = Vec<Arc<S>>>,
{
    // Racing resumes of one session on several nodes: exactly one wins.
    {
        let nodes = make_nodes(StoreSettings::default(), Arc::new(Recorder::default()), 4).await;
        for round in 0..25 {
            let (id, token, epoch) = create(&*nodes[0], claims("alice", "j", None), T0).await;
            nodes[0].detach(&id, epoch, T0).await.expect("detach");
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let (node, id, token) =
                        (nodes[i % nodes.len()].clone(), id.clone(), token.clone());
                    tokio::spawn(async move {
                        node.resume_session(&id, &token, T0 + 1)
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

    // Racing creations for one user never pass the limit, under both policies.
    for policy in [LimitPolicy::EvictOldest, LimitPolicy::RejectNew] {
        let settings = StoreSettings {
            max_sessions_per_user: Some(3),
            limit_policy: policy,
            ..StoreSettings::default()
        };
        let nodes = make_nodes(settings, Arc::new(Recorder::default()), 3).await;
        let tasks: Vec<_> = (0..64)
            .map(|i| {
                let node = nodes[i % nodes.len()].clone();
                tokio::spawn(async move {
                    node.create_session(claims("alice", &format!("j{i}"), None), T0)
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
            let live = nodes[0].sessions_of("alice").await.expect("answers").len();
            assert!(live <= 3, "{policy:?}: {live} sessions");
        }
        let expected = if policy == LimitPolicy::RejectNew {
            3
        } else {
            64
        };
        assert_eq!(created, expected, "{policy:?}");
        assert_eq!(
            nodes[1].sessions_of("alice").await.expect("answers").len(),
            3
        );
    }

    // The server API called on another node than the session's: a server publish
    // and a send reach it there, without `from`, in one seq order.
    {
        let rec = Arc::new(Recorder::default());
        let nodes = make_nodes(StoreSettings::default(), rec.clone(), 2).await;
        let (id, _, epoch) = create(&*nodes[0], claims("alice", "j", None), T0).await;
        nodes[0]
            .subscribe(&id, epoch, "general")
            .await
            .expect("subscribe");
        let data = Payload::from_json("1").expect("json");
        let published = nodes[1].publish("general", None, data.clone(), T0).await;
        assert_eq!(published, Ok(1));
        assert_eq!(nodes[1].send_to_user("alice", data, T0).await, Ok(1));
        let got: Vec<(String, u64, String, u64, bool)> = settled(&*nodes[0], &rec)
            .await
            .into_iter()
            .map(|(i, e, n)| match n {
                Notice::Deliver(d) => (i, e, d.channel.to_string(), d.seq, d.from.is_none()),
                other => panic!("a delivery, not {other:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                (id.clone(), epoch, "general".to_owned(), 1, true),
                (id, epoch, "user:alice".to_owned(), 2, true),
            ]
        );
    }

    // Publishers on every node: one session sees one gap-free seq order.
    {
        let arrivals = Arc::new(Arrivals::default());
        let nodes = make_nodes(StoreSettings::default(), arrivals.clone(), 4).await;
        let (id, _, epoch) = create(&*nodes[0], claims("alice", "j", None), T0).await;
        nodes[0]
            .subscribe(&id, epoch, "general")
            .await
            .expect("subscribe");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let node = nodes[i % nodes.len()].clone();
                tokio::spawn(async move {
                    for _ in 0..250 {
                        let data = Payload::from_json("1").expect("json");
                        node.publish("general", Some("p"), data, T0)
                            .await
                            .expect("publish");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task");
        }
        nodes[0].settle().await.expect("settles");
        let seen = arrivals.0.lock().unwrap_or_else(|e| e.into_inner()).clone();
        assert_eq!(seen.len(), 2000, "every delivery arrives once");
        assert!(
            seen.windows(2).all(|w| w[1] == w[0] + 1),
            "deliveries left out of seq order"
        );
    }
}

/// The settings every rule case runs with (the policy aside).
const RULE_GRACE_MS: u64 = 600_000;
const RULE_LEEWAY_MS: u64 = 30_000;
const RULE_LIFETIME_MS: u64 = 86_400_000;
const RULE_MAX_SESSIONS: usize = 2;
const RULE_BUFFER: u64 = 3;
/// Long-lived enough that grace, not the token, decides; and the reverse below.
const RULE_LONG_EXP: u64 = T0 + 3_600_000;
const RULE_SHORT_EXP: u64 = T0 + 60_000;
/// When revocations are issued: a whole second, 10 s after T0.
const RULE_REVOKED_AT: u64 = T0 + 10_000;

/// One edge of a store rule, as a client of the store meets it.
#[derive(Clone, Copy, Debug)]
pub enum Edge {
    /// A session (token valid for an hour) detached at T0 is resumed `after_ms` later.
    Grace {
        /// Since the detach.
        after_ms: u64,
    },
    /// A session whose token expires at T0 + 60 s, detached at T0 (grace 10 min),
    /// is resumed at `exp` + leeway + `offset_ms`.
    TokenEnd {
        /// From `exp` + leeway.
        offset_ms: i64,
    },
    /// The user is revoked at T0 + 10 s (`at_s` that second); a token whose `iat`
    /// is `at_s` + `iat_offset_s` (`None`: no `iat`) is checked `after_ms` later.
    SubRevocation {
        /// The token's `iat` relative to the revocation time, in s.
        iat_offset_s: Option<i64>,
        /// Since the revocation.
        after_ms: u64,
    },
    /// A `jti` is revoked at T0 + 10 s, known to a stored session (whose token
    /// expires at T0 + 60 s) or not; a token with it is checked at the end of the
    /// entry + `offset_ms`.
    JtiRevocation {
        /// Whether a stored session holds the token.
        known: bool,
        /// From the end of the entry.
        offset_ms: i64,
    },
    /// A user with `live` attached sessions (limit 2) asks for one more.
    Limit {
        /// Sessions the user has.
        live: usize,
        /// The limit's policy.
        policy: rules::LimitPolicy,
    },
    /// A session joined to `a` and `b` gets `published` messages (odd `seq` on
    /// `a`, even on `b`; the buffer keeps 3), drops, and resumes with `last_seq`,
    /// keeping only `a`.
    Replay {
        /// Messages published.
        published: u64,
        /// The client's `last_seq`.
        last_seq: u64,
    },
}

/// What a rule says about an [`Edge`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Whether the session is alive (a resume succeeds).
    Alive(bool),
    /// Whether the token is refused as revoked.
    Refused(bool),
    /// The per-user limit's decision.
    Limit(LimitDecision),
    /// The `seq`s replayed and whether there is a gap.
    Replay {
        /// Replayed, in order.
        seqs: Cow<'static, [u64]>,
        /// Whether the client missed messages no longer buffered.
        gap: bool,
    },
}

/// A named edge and the verdict the rules must give on it.
#[derive(Clone, Debug)]
pub struct RuleCase {
    /// What the case shows.
    pub name: &'static str,
    /// The situation.
    pub edge: Edge,
    /// What the rules and every store say.
    pub verdict: Verdict,
}

const fn case(name: &'static str, edge: Edge, verdict: Verdict) -> RuleCase {
    RuleCase {
        name,
        edge,
        verdict,
    }
}

const fn replayed(seqs: &'static [u64], gap: bool) -> Verdict {
    Verdict::Replay {
        seqs: Cow::Borrowed(seqs),
        gap,
    }
}

const fn sub_revoked(iat_offset_s: Option<i64>, after_ms: u64) -> Edge {
    Edge::SubRevocation {
        iat_offset_s,
        after_ms,
    }
}

const fn limit(live: usize, policy: rules::LimitPolicy) -> Edge {
    Edge::Limit { live, policy }
}

const fn resume_after(published: u64, last_seq: u64) -> Edge {
    Edge::Replay {
        published,
        last_seq,
    }
}

/// The shared table: every store's verdicts on these edges are those of
/// [`wsauth_core::rules`].
#[rustfmt::skip] // a table reads best one case a line
pub const RULE_CASES: &[RuleCase] = {
    use Edge::{Grace, JtiRevocation as Jti, TokenEnd};
    use Verdict::{Alive, Limit, Refused};
    use rules::LimitPolicy::{EvictOldest, RejectNew};
    const ADMIT: Verdict = Limit(LimitDecision::Admit { evict_oldest: 0 });
    const EVICT_ONE: Verdict = Limit(LimitDecision::Admit { evict_oldest: 1 });
    const MAX: usize = RULE_MAX_SESSIONS;
    &[
        case("grace: 1 ms before its end", Grace { after_ms: RULE_GRACE_MS - 1 }, Alive(true)),
        case("grace: exactly at its end", Grace { after_ms: RULE_GRACE_MS }, Alive(false)),
        case("token: 1 ms before exp + leeway", TokenEnd { offset_ms: -1 }, Alive(true)),
        case("token: exactly at exp + leeway", TokenEnd { offset_ms: 0 }, Alive(false)),
        case("sub: iat 1 s before", sub_revoked(Some(-1), 1), Refused(true)),
        case("sub: iat equal", sub_revoked(Some(0), 1), Refused(true)),
        case("sub: iat 1 s after", sub_revoked(Some(1), 1), Refused(false)),
        case("sub: no iat", sub_revoked(None, 1), Refused(true)),
        case("sub: 1 ms before the entry ends", sub_revoked(None, RULE_LIFETIME_MS - 1), Refused(true)),
        case("sub: exactly when the entry ends", sub_revoked(None, RULE_LIFETIME_MS), Refused(false)),
        case("jti known: 1 ms before exp + leeway", Jti { known: true, offset_ms: -1 }, Refused(true)),
        case("jti known: at exp + leeway", Jti { known: true, offset_ms: 0 }, Refused(false)),
        case("jti unknown: 1 ms before the lifetime", Jti { known: false, offset_ms: -1 }, Refused(true)),
        case("jti unknown: when the lifetime ends", Jti { known: false, offset_ms: 0 }, Refused(false)),
        case("limit: max - 1, evict_oldest", limit(MAX - 1, EvictOldest), ADMIT),
        case("limit: max - 1, reject_new", limit(MAX - 1, RejectNew), ADMIT),
        case("limit: max, evict_oldest", limit(MAX, EvictOldest), EVICT_ONE),
        case("limit: max, reject_new", limit(MAX, RejectNew), Limit(LimitDecision::Refuse)),
        case("replay: trimmed, last_seq before the buffer", resume_after(5, 0), replayed(&[3, 5], true)),
        case("replay: last_seq just before the buffer", resume_after(5, 2), replayed(&[3, 5], false)),
        case("replay: last_seq in the buffer, channel left", resume_after(5, 3), replayed(&[5], false)),
        case("replay: last_seq at the end", resume_after(5, 5), replayed(&[], false)),
        case("replay: last_seq after the store's", resume_after(5, 7), replayed(&[], false)),
        case("replay: untrimmed", resume_after(2, 0), replayed(&[1], false)),
    ]
};

fn rule_settings(edge: Edge) -> StoreSettings {
    StoreSettings {
        resume_grace_ms: RULE_GRACE_MS,
        resume_buffer: RULE_BUFFER as usize,
        resume_buffer_bytes: 0,
        replay_budget_bytes: 0,
        max_sessions_per_user: Some(RULE_MAX_SESSIONS),
        limit_policy: match edge {
            Edge::Limit { policy, .. } => policy,
            _ => LimitPolicy::default(),
        },
        max_token_lifetime_ms: RULE_LIFETIME_MS,
        leeway_ms: RULE_LEEWAY_MS,
    }
}

fn delivery(seq: u64) -> Delivery {
    Delivery {
        channel: if seq % 2 == 1 { "a" } else { "b" }.into(),
        from: Some("p".into()),
        seq,
        data: Payload::from_json("1").expect("json"),
    }
}

fn replay_verdict(buffered: Vec<Delivery>, last_seq: u64, last_assigned: u64) -> Verdict {
    let kept = BTreeSet::from(["a".to_owned()]);
    let (replay, gap) = rules::replay(buffered, last_seq, last_assigned, "alice", &kept);
    Verdict::Replay {
        seqs: replay.iter().map(|d| d.seq).collect(),
        gap,
    }
}

/// When an [`Edge::JtiRevocation`] entry ends, and when its check runs.
fn jti_check_at(known: bool, offset_ms: i64) -> (u64, u64) {
    let known_exp = known.then_some(RULE_SHORT_EXP);
    let until =
        rules::jti_revocation_until(RULE_REVOKED_AT, known_exp, RULE_LEEWAY_MS, RULE_LIFETIME_MS);
    (until, until.saturating_add_signed(offset_ms))
}

fn sub_check(iat_offset_s: Option<i64>, after_ms: u64) -> (u64, Option<u64>, u64) {
    let at_s = RULE_REVOKED_AT / 1000;
    let iat_s = iat_offset_s.map(|d| at_s.saturating_add_signed(d));
    (at_s, iat_s, RULE_REVOKED_AT + after_ms)
}

/// The verdict of [`wsauth_core::rules`] on an edge.
pub fn rule_verdict(edge: Edge) -> Verdict {
    match edge {
        Edge::Grace { after_ms } => Verdict::Alive(rules::session_alive(
            T0 + after_ms,
            Some(T0),
            RULE_LONG_EXP,
            RULE_GRACE_MS,
            RULE_LEEWAY_MS,
        )),
        Edge::TokenEnd { offset_ms } => Verdict::Alive(rules::session_alive(
            (RULE_SHORT_EXP + RULE_LEEWAY_MS).saturating_add_signed(offset_ms),
            Some(T0),
            RULE_SHORT_EXP,
            RULE_GRACE_MS,
            RULE_LEEWAY_MS,
        )),
        Edge::SubRevocation {
            iat_offset_s,
            after_ms,
        } => {
            let (at_s, iat_s, now) = sub_check(iat_offset_s, after_ms);
            let entry = SubEntry {
                at_s,
                until_ms: rules::sub_revocation_until(RULE_REVOKED_AT, RULE_LIFETIME_MS),
            };
            Verdict::Refused(rules::token_revoked(now, iat_s, None, Some(entry)))
        }
        Edge::JtiRevocation { known, offset_ms } => {
            let (until, now) = jti_check_at(known, offset_ms);
            Verdict::Refused(rules::token_revoked(now, None, Some(until), None))
        }
        Edge::Limit { live, policy } => {
            Verdict::Limit(rules::limit_decision(live, RULE_MAX_SESSIONS, policy))
        }
        Edge::Replay {
            published,
            last_seq,
        } => {
            let kept = (published.saturating_sub(RULE_BUFFER) + 1..=published).map(delivery);
            replay_verdict(kept.collect(), last_seq, published)
        }
    }
}

/// The verdict of a store on an edge, from what it does.
pub async fn store_verdict<S: Store>(store: &S, edge: Edge) -> Verdict {
    let resumes = async |exp_ms: u64, now: u64| {
        let mut c = Claims::new("alice", exp_ms);
        c.jti = Some("j1".into());
        let (id, token, epoch) = create(store, Arc::new(c), T0).await;
        store.detach(&id, epoch, T0).await.expect("detach");
        let resumed = store.resume_session(&id, &token, now).await;
        Verdict::Alive(resumed.expect("answers").is_some())
    };
    // Whether the store refuses the token, asked both ways; they must agree.
    let refuses = async |c: Arc<Claims>, now: u64| {
        let asked = store.is_revoked(&c, now).await.expect("answers");
        let created = store.create_session(c, now).await.expect("answers");
        assert_eq!(
            asked,
            created == CreateOutcome::Revoked,
            "is_revoked and create_session disagree"
        );
        Verdict::Refused(asked)
    };
    match edge {
        Edge::Grace { after_ms } => resumes(RULE_LONG_EXP, T0 + after_ms).await,
        Edge::TokenEnd { offset_ms } => {
            let now = (RULE_SHORT_EXP + RULE_LEEWAY_MS).saturating_add_signed(offset_ms);
            resumes(RULE_SHORT_EXP, now).await
        }
        Edge::SubRevocation {
            iat_offset_s,
            after_ms,
        } => {
            let (at_s, iat_s, now) = sub_check(iat_offset_s, after_ms);
            let revocation = Revocation::Subject {
                sub: "alice".into(),
                at_s,
            };
            store
                .revoke(revocation, RULE_REVOKED_AT)
                .await
                .expect("revoke");
            refuses(claims("alice", "j2", iat_s), now).await
        }
        Edge::JtiRevocation { known, offset_ms } => {
            if known {
                let mut c = Claims::new("alice", RULE_SHORT_EXP);
                c.jti = Some("j1".into());
                create(store, Arc::new(c), T0).await;
            }
            let revocation = Revocation::Token { jti: "j1".into() };
            store
                .revoke(revocation, RULE_REVOKED_AT)
                .await
                .expect("revoke");
            let (_, now) = jti_check_at(known, offset_ms);
            refuses(claims("bob", "j1", None), now).await
        }
        Edge::Limit { live, .. } => {
            for i in 0..live {
                create(store, claims("alice", &format!("j{i}"), None), T0).await;
            }
            let c = claims("alice", "new", None);
            match store.create_session(c, T0 + 1).await.expect("answers") {
                CreateOutcome::Created { evicted, .. } => Verdict::Limit(LimitDecision::Admit {
                    evict_oldest: evicted,
                }),
                CreateOutcome::TooManySessions => Verdict::Limit(LimitDecision::Refuse),
                CreateOutcome::Revoked => panic!("nothing is revoked"),
            }
        }
        Edge::Replay {
            published,
            last_seq,
        } => {
            let (id, token, epoch) = create(store, claims("alice", "j1", None), T0).await;
            for channel in ["a", "b"] {
                store.subscribe(&id, epoch, channel).await.expect("join");
            }
            for seq in 1..=published {
                let d = delivery(seq);
                let n = store
                    .publish(&d.channel, d.from.as_deref(), d.data, T0)
                    .await;
                assert_eq!(n, Ok(1), "published");
            }
            store.detach(&id, epoch, T0).await.expect("detach");
            let (resumed, _) = store
                .resume_session(&id, &token, T0 + 1)
                .await
                .expect("answers")
                .expect("resumes");
            replay_verdict(resumed.buffered, last_seq, resumed.last_seq)
        }
    }
}

/// Runs [`RULE_CASES`] through stores made by `make`, a fresh one per case: the
/// rules must give the table's verdict, and the store the rules' verdict.
pub async fn run_rule_cases<S, F, Fut>(make: F)
where
    S: Store,
    F: Fn(StoreSettings, Arc<dyn Notify>) -> Fut,
    Fut: Future<Output = S>,
{
    for case in RULE_CASES {
        let ruled = rule_verdict(case.edge);
        assert_eq!(ruled, case.verdict, "{}: wsauth_core::rules", case.name);
        let store = make(rule_settings(case.edge), Arc::new(Recorder::default())).await;
        let seen = store_verdict(&store, case.edge).await;
        assert_eq!(
            seen, ruled,
            "{}: the store disagrees with the rules",
            case.name
        );
    }
}
