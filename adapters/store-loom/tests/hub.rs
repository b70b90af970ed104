//! loom models of the hub (`wsauth_store::hub`), the node-local registry every
//! connection and the store's notices share. Every interleaving of the threads in
//! each model is explored; loom also fails a model whose threads deadlock (a wake
//! that never comes) or that leaks one of the hub's shared `Arc`s.
//!
//! `RUSTFLAGS="--cfg loom" cargo test -p wsauth-store-loom --release --test hub`
#![cfg(loom)]

use std::sync::Arc;

use loom::sync::Mutex;
use loom::sync::atomic::{AtomicBool, Ordering};
use loom::thread;
use wsauth_core::{Delivery, Payload};
use wsauth_store::hub::{ConnEvent, Hub, Mailbox};
use wsauth_store::{Notice, Notify};

fn delivery(seq: u64) -> Notice {
    Notice::Deliver(Delivery {
        channel: "c".into(),
        from: Some("x".into()),
        seq,
        data: Payload::from_json("1").expect("json"),
    })
}

/// An event as something comparable: the delivery's `seq`, or the event's name.
#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Deliver(u64),
    Replaced,
    Revoked,
    Overflow,
    NoticesLost,
}

fn seen(event: ConnEvent) -> Seen {
    match event {
        ConnEvent::Deliver(d) => Seen::Deliver(d.seq),
        ConnEvent::Replaced => Seen::Replaced,
        ConnEvent::Revoked(_) => Seen::Revoked,
        ConnEvent::Overflow => Seen::Overflow,
        ConnEvent::NoticesLost => Seen::NoticesLost,
    }
}

/// Everything waiting in the mailbox now.
fn drain(mailbox: &mut Mailbox) -> Vec<Seen> {
    std::iter::from_fn(|| mailbox.try_recv().map(seen)).collect()
}

/// The store may notify a new attachment before the call that created it has
/// returned, so its notices race the connection's registration: whether each one
/// is delivered directly or handed over from the early stash, the connection gets
/// each exactly once and in order — and its blocking receive is woken for them.
#[test]
fn notices_racing_the_registration_arrive_once_and_in_order() {
    loom::model(|| {
        let hub = Hub::new(8);
        let notifier = {
            let hub = hub.clone();
            thread::spawn(move || {
                hub.notify("s", 1, delivery(1));
                hub.notify("s", 1, delivery(2));
            })
        };
        let mut mailbox = hub.register("s", 1);
        let first = seen(mailbox.recv_blocking());
        let second = seen(mailbox.recv_blocking());
        notifier.join().expect("notifier");
        assert_eq!(first, Seen::Deliver(1));
        assert_eq!(second, Seen::Deliver(2));
        assert_eq!(drain(&mut mailbox), [], "nothing is delivered twice");
        hub.notify("s", 1, delivery(3));
        assert_eq!(drain(&mut mailbox), [Seen::Deliver(3)]);
    });
}

/// A delivery racing the connection's end never panics, and the hub is left with
/// no entry for the session (loom also checks the mailbox's queue is freed).
#[test]
fn a_delivery_racing_the_mailbox_drop_leaves_no_entry() {
    loom::model(|| {
        let hub = Hub::new(8);
        let mailbox = hub.register("s", 1);
        let notifier = {
            let hub = hub.clone();
            thread::spawn(move || hub.notify("s", 1, delivery(1)))
        };
        let dropper = thread::spawn(move || drop(mailbox));
        notifier.join().expect("notifier");
        dropper.join().expect("dropper");
        assert_eq!(hub.live_sessions(), 0);
    });
}

/// Two attachments of one session (epochs 1 and 2) register on this node at once.
/// Whatever the order, the hub ends holding epoch 2; epoch 1 hears `Replaced`
/// exactly when it registered first; epoch 2 never hears it.
#[test]
fn racing_epochs_leave_the_newer_one_registered() {
    loom::model(|| {
        let hub = Hub::new(8);
        // Each registration records its turn under one lock, so that the model
        // knows the order the hub saw (`register` does its work under the hub's
        // lock, so this hides no interleaving of interest).
        let order = Arc::new(Mutex::new(Vec::new()));
        let register = |epoch: u64| {
            let hub = hub.clone();
            let order = order.clone();
            thread::spawn(move || {
                let mut order = order.lock().expect("order");
                let mailbox = hub.register("s", epoch);
                order.push(epoch);
                mailbox
            })
        };
        let older = register(1);
        let newer = register(2);
        let mut older = older.join().expect("epoch 1");
        let mut newer = newer.join().expect("epoch 2");
        let first = order.lock().expect("order")[0];

        assert_eq!(hub.live_sessions(), 1);
        hub.notify("s", 2, delivery(1));
        hub.notify("s", 1, delivery(2));
        assert_eq!(
            drain(&mut newer),
            [Seen::Deliver(1)],
            "epoch 2 holds the session, never told Replaced"
        );
        let expected: &[Seen] = if first == 1 { &[Seen::Replaced] } else { &[] };
        assert_eq!(
            drain(&mut older),
            expected,
            "epoch 1 registered first: {}",
            first == 1
        );
        drop(older);
        assert_eq!(hub.live_sessions(), 1, "dropping epoch 1 leaves epoch 2");
        drop(newer);
        assert_eq!(hub.live_sessions(), 0);
    });
}

/// A mailbox of one: two deliveries race the connection taking one. The connection
/// sees both deliveries, or one and exactly one `Overflow`; a delivery is never
/// dropped without `Overflow`.
#[test]
fn a_full_mailbox_never_drops_a_delivery_silently() {
    loom::model(|| {
        let hub = Hub::new(1);
        let mut mailbox = hub.register("s", 1);
        let notifiers: Vec<_> = [1, 2]
            .map(|seq| {
                let hub = hub.clone();
                thread::spawn(move || hub.notify("s", 1, delivery(seq)))
            })
            .into_iter()
            .collect();
        let mut events = vec![seen(mailbox.recv_blocking())];
        for notifier in notifiers {
            notifier.join().expect("notifier");
        }
        events.extend(drain(&mut mailbox));

        let delivered = events
            .iter()
            .filter(|e| matches!(e, Seen::Deliver(_)))
            .count();
        let overflows = events.iter().filter(|e| **e == Seen::Overflow).count();
        assert_eq!(events.len(), delivered + overflows, "{events:?}");
        assert!(
            (delivered, overflows) == (2, 0) || (delivered, overflows) == (1, 1),
            "{events:?}"
        );
    });
}

/// `notices_lost` racing a registration. Guaranteed: a connection whose
/// registration returned before `notices_lost` was called gets `NoticesLost`
/// (and so does one registered before the race began); one registering while
/// `notices_lost` runs may or may not. Either way at most once.
#[test]
fn lost_notices_reach_every_connection_registered_before() {
    loom::model(|| {
        let hub = Hub::new(8);
        let mut settled = hub.register("a", 1);
        let registered = Arc::new(AtomicBool::new(false));
        let registrar = {
            let hub = hub.clone();
            let registered = registered.clone();
            thread::spawn(move || {
                let mailbox = hub.register("s", 1);
                registered.store(true, Ordering::SeqCst);
                mailbox
            })
        };
        let registered_before = registered.load(Ordering::SeqCst);
        hub.notices_lost();
        let mut racing = registrar.join().expect("registrar");

        assert_eq!(drain(&mut settled), [Seen::NoticesLost]);
        let events = drain(&mut racing);
        if registered_before {
            assert_eq!(events, [Seen::NoticesLost]);
        } else {
            assert!(
                events.is_empty() || events == [Seen::NoticesLost],
                "{events:?}"
            );
        }
    });
}
