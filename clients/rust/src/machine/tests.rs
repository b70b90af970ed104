//! The machine with fake time and scripted frames.

use super::Rng;
use super::*;
use proptest::prelude::*;

const T0: u64 = 1_767_225_600_000;
const EXP: u64 = T0 + 3_600_000;

/// Always the top of the range: waits equal their ceilings.
struct MaxRng;
impl Rng for MaxRng {
    fn next_u64(&mut self) -> u64 {
        u64::MAX
    }
}

struct H {
    m: Machine,
    now: u64,
    conn: u64,
    token: u64,
}

impl H {
    fn with(settings: Settings, rng: Box<dyn Rng>) -> H {
        H {
            m: Machine::new(settings, rng),
            now: T0,
            conn: 0,
            token: 0,
        }
    }

    fn new() -> H {
        H::with(Settings::default(), Box::new(SplitMix64(7)))
    }

    fn feed(&mut self, input: Input) -> Vec<Action> {
        self.m.handle(self.now, input);
        let mut out = Vec::new();
        while let Some(a) = self.m.poll_action() {
            if let Action::Open { conn, .. } = a {
                self.conn = conn;
            }
            if let Action::RequestToken(id) = a {
                self.token = id;
            }
            out.push(a);
        }
        out
    }

    fn frame(&mut self, v: Value) -> Vec<Action> {
        self.feed(Input::Frame(self.conn, v.to_string()))
    }

    /// Moves time forward by `ms`, firing due timers in order.
    fn advance(&mut self, ms: u64) -> Vec<Action> {
        let target = self.now + ms;
        let mut out = Vec::new();
        loop {
            let due = self
                .m
                .timers()
                .iter()
                .filter(|(_, at)| **at <= target)
                .min_by_key(|(_, at)| **at)
                .map(|(k, at)| (*k, *at));
            let Some((kind, at)) = due else { break };
            self.now = at.max(self.now);
            out.extend(self.feed(Input::Timer(kind)));
        }
        self.now = target;
        out
    }

    fn token_ok(&mut self) -> Vec<Action> {
        self.feed(Input::Token(self.token, Ok("jwt".into())))
    }

    fn authenticated(&mut self, session: &str) -> Vec<Action> {
        self.frame(json!({"type": "authenticated", "session_id": session,
            "resume_token": format!("r_{session}"), "user_id": "alice",
            "expires_at": EXP, "heartbeat_ms": 25000, "protocol": "wsauth.v1"}))
    }

    /// Start → token → open → authenticated.
    fn live(&mut self) -> Vec<Action> {
        let mut out = self.feed(Input::Start);
        out.extend(self.token_ok());
        out.extend(self.feed(Input::Opened(self.conn)));
        out.extend(self.authenticated("s1"));
        out
    }

    fn close(&mut self, code: Option<u16>) -> Vec<Action> {
        self.feed(Input::Closed(self.conn, code))
    }

    fn error(
        &mut self,
        id: Option<u64>,
        code: &str,
        fatal: bool,
        retry: Option<&str>,
    ) -> Vec<Action> {
        let mut v = json!({"type": "error", "code": code, "message": "m", "fatal": fatal});
        if let Some(id) = id {
            v["id"] = json!(id);
        }
        if let Some(r) = retry {
            v["retry"] = json!(r);
        }
        self.frame(v)
    }

    /// Waits out the reconnection backoff.
    fn retry(&mut self) -> Vec<Action> {
        let wait = self.reconnect_wait().expect("a backoff is running");
        self.advance(wait)
    }

    fn reconnect_wait(&self) -> Option<u64> {
        self.m
            .timers()
            .get(&TimerKind::Reconnect)
            .map(|at| at - self.now)
    }
}

fn sent(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Send(t) => Some(serde_json::from_str(t).expect("json")),
            _ => None,
        })
        .collect()
}

fn sent_types(actions: &[Action]) -> Vec<String> {
    sent(actions)
        .iter()
        .map(|v| v["type"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn events(actions: &[Action]) -> Vec<Event> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Emit(e) => Some(e.clone()),
            _ => None,
        })
        .collect()
}

fn closed(actions: &[Action]) -> Option<(Option<u16>, Option<Retry>)> {
    events(actions).into_iter().find_map(|e| match e {
        Event::Closed { code, retry } => Some((code, retry)),
        _ => None,
    })
}

fn token_requests(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::RequestToken(_)))
        .count()
}

fn opens(actions: &[Action]) -> Vec<Option<String>> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Open { bearer, .. } => Some(bearer.clone()),
            _ => None,
        })
        .collect()
}

fn messages(actions: &[Action]) -> Vec<u64> {
    events(actions)
        .into_iter()
        .filter_map(|e| match e {
            Event::Message(m) => Some(m.seq),
            _ => None,
        })
        .collect()
}

fn msg(seq: u64) -> Value {
    json!({"type": "message", "channel": "general", "from": "bob", "seq": seq, "data": {"n": seq}})
}

#[test]
fn header_auth_gets_the_token_before_opening_and_goes_live() {
    let mut h = H::new();
    let a = h.feed(Input::Start);
    assert_eq!(token_requests(&a), 1);
    assert!(opens(&a).is_empty(), "no socket before the token");
    let a = h.token_ok();
    assert_eq!(opens(&a), vec![Some("jwt".to_owned())]);
    let a = h.feed(Input::Opened(h.conn));
    assert!(sent(&a).is_empty(), "header auth sends no auth message");
    let a = h.authenticated("s1");
    assert!(events(&a).contains(&Event::State(State::Live)));
    assert!(
        events(&a).iter().any(|e| matches!(e,
        Event::Session { kind: SessionKind::Authenticated, session_id, .. } if session_id == "s1"))
    );
}

#[test]
fn message_auth_sends_auth_after_opening() {
    let settings = Settings {
        auth: AuthMode::Message,
        ..Settings::default()
    };
    let mut h = H::with(settings, Box::new(SplitMix64(1)));
    h.feed(Input::Start);
    let a = h.token_ok();
    assert_eq!(opens(&a), vec![None]);
    let a = h.feed(Input::Opened(h.conn));
    let s = sent(&a);
    assert_eq!(s[0]["type"], "auth");
    assert_eq!(s[0]["token"], "jwt");
}

// ---- retry hints and close codes ----

/// What follows a connection end: "reconnect" (resume after a backoff), "reauth" (a
/// fresh token after a backoff, new session) or "stop".
fn outcome_after(setup: impl FnOnce(&mut H) -> Vec<Action>) -> &'static str {
    let mut h = H::new();
    h.live();
    let a = setup(&mut h);
    if let Some((_, _)) = closed(&a) {
        assert!(h.m.timers().is_empty(), "no timers after the stop");
        assert!(h.m.is_closed());
        return "stop";
    }
    assert!(
        h.reconnect_wait().is_some(),
        "a backoff before reconnecting"
    );
    assert!(opens(&a).is_empty(), "never at once: {a:?}");
    let a = h.retry();
    if token_requests(&a) == 1 {
        let a = h.token_ok();
        assert_eq!(opens(&a).len(), 1);
        let a = h.feed(Input::Opened(h.conn));
        assert!(sent_types(&a).is_empty());
        "reauth"
    } else {
        assert_eq!(opens(&a), vec![None], "a resume needs no token");
        let a = h.feed(Input::Opened(h.conn));
        let s = sent(&a);
        assert_eq!(s[0]["type"], "resume");
        assert_eq!(s[0]["session_id"], "s1");
        assert_eq!(s[0]["resume_token"], "r_s1");
        "reconnect"
    }
}

#[test]
fn every_retry_hint() {
    for (retry, close, want) in [
        ("reconnect", 4408, "reconnect"),
        ("reauth", 4401, "reauth"),
        ("none", 4403, "stop"),
    ] {
        let got = outcome_after(|h| {
            let mut a = h.error(None, "X", true, Some(retry));
            a.extend(h.close(Some(close)));
            a
        });
        assert_eq!(got, want, "retry {retry}");
    }
    // The hint wins over the close code: RATE_LIMITED reconnects, TOO_MANY_SESSIONS stops.
    let got = outcome_after(|h| {
        let mut a = h.error(None, "TOO_MANY_SESSIONS", true, Some("none"));
        a.extend(h.close(Some(4429)));
        a
    });
    assert_eq!(got, "stop");
    let got = outcome_after(|h| {
        let mut a = h.error(None, "NOT_AUTHENTICATED", true, Some("none"));
        a.extend(h.close(Some(4401)));
        a
    });
    assert_eq!(got, "stop");
}

#[test]
fn every_close_code_of_the_table() {
    let table: &[(Option<u16>, &str)] = &[
        (Some(1000), "stop"),
        (Some(1001), "reconnect"),
        (None, "reconnect"), // 1006: no close frame
        (Some(1005), "reconnect"),
        (Some(1007), "stop"),
        (Some(1009), "reconnect"),
        (Some(1011), "reconnect"),
        (Some(1013), "reconnect"),
        (Some(4400), "stop"),
        (Some(4401), "reauth"),
        (Some(4403), "stop"),
        (Some(4408), "reconnect"),
        (Some(4409), "stop"),
        (Some(4429), "reconnect"),
    ];
    for (code, want) in table {
        let got = outcome_after(|h| h.close(*code));
        assert_eq!(got, *want, "close {code:?}");
    }
}

#[test]
fn the_stop_reports_the_code_and_hint() {
    let mut h = H::new();
    h.live();
    h.error(None, "SESSION_REPLACED", true, Some("none"));
    let a = h.close(Some(4409));
    assert_eq!(closed(&a), Some((Some(4409), Some(Retry::None))));
    assert!(events(&a).contains(&Event::State(State::Closed)));
    // Nothing afterwards opens a socket.
    let mut a = h.advance(120_000);
    a.extend(h.feed(Input::Start));
    a.extend(h.feed(Input::Command(Command::Reconnect)));
    assert!(opens(&a).is_empty());
}

#[test]
fn reauth_is_tried_once() {
    let mut h = H::new();
    h.live();
    h.error(None, "SESSION_EXPIRED", true, Some("reauth"));
    let a = h.close(Some(4401));
    assert!(closed(&a).is_none());
    h.retry();
    h.token_ok();
    h.feed(Input::Opened(h.conn));
    h.error(None, "TOKEN_EXPIRED", true, Some("reauth"));
    let a = h.close(Some(4401));
    assert_eq!(closed(&a), Some((Some(4401), Some(Retry::Reauth))));
    assert!(h.m.timers().is_empty());
}

#[test]
fn session_not_found_authenticates_anew_and_rejoins() {
    let mut h = H::new();
    h.live();
    h.feed(Input::Command(Command::Join(1, "general".into())));
    h.frame(json!({"type": "joined", "id": 1, "channel": "general"}));
    h.frame(msg(1));
    h.close(None);
    h.retry();
    let a = h.feed(Input::Opened(h.conn));
    let resume_id = sent(&a)[0]["id"].as_u64();
    h.error(resume_id, "SESSION_NOT_FOUND", true, Some("reauth"));
    h.close(Some(4401));
    let a = h.retry();
    assert_eq!(token_requests(&a), 1, "a fresh token");
    h.token_ok();
    h.feed(Input::Opened(h.conn));
    let a = h.authenticated("s2");
    assert_eq!(sent_types(&a), vec!["join"]);
    assert!(events(&a).contains(&Event::Gap(GapReason::NewSession)));
    assert!(events(&a).iter().any(|e| matches!(
        e,
        Event::Session {
            kind: SessionKind::Reauthenticated,
            ..
        }
    )));
    // The new session numbers from 1 again.
    let a = h.frame(msg(1));
    assert_eq!(messages(&a), vec![1]);
}

#[test]
fn a_drop_between_resume_and_resumed_spends_the_session() {
    let mut h = H::new();
    h.live();
    h.feed(Input::Command(Command::Join(1, "general".into())));
    h.frame(json!({"type": "joined", "id": 1, "channel": "general"}));
    h.close(None);
    h.retry();
    let a = h.feed(Input::Opened(h.conn));
    assert_eq!(sent_types(&a), vec!["resume"]);
    h.close(None); // no `resumed` read
    let a = h.retry();
    assert_eq!(token_requests(&a), 1, "authenticate anew, not resume");
    h.token_ok();
    let a = h.feed(Input::Opened(h.conn));
    assert!(sent_types(&a).is_empty());
    let a = h.authenticated("s2");
    assert_eq!(sent(&a)[0]["channel"], "general");
}

#[test]
fn a_refused_upgrade_follows_its_retry() {
    let mut h = H::new();
    h.feed(Input::Start);
    h.token_ok();
    let a = h.feed(Input::Refused {
        conn: h.conn,
        status: 401,
        code: Some("TOKEN_REVOKED".into()),
        retry: Some(Retry::None),
    });
    assert_eq!(closed(&a), Some((None, Some(Retry::None))));

    let mut h = H::new();
    h.feed(Input::Start);
    h.token_ok();
    let a = h.feed(Input::Refused {
        conn: h.conn,
        status: 503,
        code: Some("INTERNAL".into()),
        retry: Some(Retry::Reconnect),
    });
    assert!(closed(&a).is_none());
    assert!(h.reconnect_wait().is_some());
}

// ---- backoff ----

/// The waits of `n` consecutive failed attempts (the token callback failing).
fn waits(rng: Box<dyn Rng>, n: usize) -> Vec<u64> {
    let mut h = H::with(Settings::default(), rng);
    h.feed(Input::Start);
    let mut out = Vec::new();
    for _ in 0..n {
        h.feed(Input::Token(h.token, Err("down".into())));
        out.push(h.reconnect_wait().expect("a backoff"));
        h.advance(h.reconnect_wait().unwrap_or(0));
    }
    out
}

#[test]
fn backoff_ceilings_double_up_to_the_cap() {
    let w = waits(Box::new(MaxRng), 10);
    assert_eq!(
        w,
        vec![250, 500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
    );
}

#[test]
fn backoff_is_full_jitter() {
    // Attempt 3 (ceiling 2000 ms) over many seeds: within bounds, spread over the range.
    let samples: Vec<u64> = (0..2000u64)
        .map(|seed| waits(Box::new(SplitMix64(seed * 7919 + 1)), 4)[3])
        .collect();
    assert!(samples.iter().all(|w| *w <= 2000));
    let mean = samples.iter().sum::<u64>() as f64 / samples.len() as f64;
    assert!((850.0..1150.0).contains(&mean), "mean {mean}");
    let low = samples.iter().filter(|w| **w < 200).count();
    let high = samples.iter().filter(|w| **w > 1800).count();
    assert!(low > 100 && high > 100, "low {low} high {high}");
    for n in 0..8 {
        let ceiling = (250u64 << n).min(30_000);
        let w = waits(Box::new(SplitMix64(n as u64 + 99)), n + 1)[n];
        assert!(w <= ceiling, "attempt {n}: {w} > {ceiling}");
    }
}

#[test]
fn backoff_resets_on_authenticated_not_on_open() {
    let mut h = H::with(Settings::default(), Box::new(MaxRng));
    h.live();
    h.close(None);
    assert_eq!(h.reconnect_wait(), Some(250));
    h.advance(250);
    h.feed(Input::Opened(h.conn)); // opens, but no `resumed`
    h.close(None); // resume sent, no answer: session spent
    assert_eq!(
        h.reconnect_wait(),
        Some(500),
        "an open socket resets nothing"
    );
    h.advance(500);
    h.token_ok();
    h.feed(Input::Opened(h.conn));
    h.close(None);
    assert_eq!(h.reconnect_wait(), Some(1000));
    h.advance(1000);
    h.token_ok();
    h.feed(Input::Opened(h.conn));
    h.authenticated("s2");
    h.close(None);
    assert_eq!(h.reconnect_wait(), Some(250), "reset by authenticated");
    h.advance(250);
    h.feed(Input::Opened(h.conn));
    h.frame(
        json!({"type": "resumed", "session_id": "s2", "resume_token": "r2",
        "expires_at": EXP, "channels": [], "replayed": 0, "gap": false}),
    );
    h.close(None);
    assert_eq!(h.reconnect_wait(), Some(250), "reset by resumed");
}

#[test]
fn first_wait_after_a_server_restart_close_is_up_to_5_s() {
    for code in [1001, 1011, 1013] {
        let mut h = H::with(Settings::default(), Box::new(MaxRng));
        h.live();
        h.close(Some(code));
        assert_eq!(h.reconnect_wait(), Some(5000), "close {code}");
        h.advance(5000);
        h.close(None);
        assert_eq!(h.reconnect_wait(), Some(500), "then the usual backoff");
        let spread: Vec<u64> = (0..500)
            .map(|seed| {
                let mut h = H::with(Settings::default(), Box::new(SplitMix64(seed)));
                h.live();
                h.close(Some(code));
                h.reconnect_wait().expect("wait")
            })
            .collect();
        assert!(spread.iter().all(|w| *w <= 5000));
        assert!(spread.iter().any(|w| *w > 4000) && spread.iter().any(|w| *w < 1000));
    }
    // Not after a drop.
    let mut h = H::with(Settings::default(), Box::new(MaxRng));
    h.live();
    h.close(None);
    assert_eq!(h.reconnect_wait(), Some(250));
}

#[test]
fn token_callback_error_and_timeout_back_off() {
    let mut h = H::new();
    h.feed(Input::Start);
    let a = h.feed(Input::Token(h.token, Err("boom".into())));
    assert!(opens(&a).is_empty());
    assert!(h.reconnect_wait().is_some());
    assert!(events(&a).iter().any(|e| matches!(e, Event::Error(ServerError { code, fatal: false, .. }) if code == "TOKEN_UNAVAILABLE")));
    let a = h.advance(h.reconnect_wait().unwrap_or(0));
    assert_eq!(token_requests(&a), 1);
    let slow = h.token;
    // The callback hangs: after the bound, a failed attempt, then a backoff.
    let a = h.advance(10_000);
    assert!(opens(&a).is_empty());
    assert!(h.reconnect_wait().is_some(), "{a:?}");
    let a = h.feed(Input::Token(slow, Ok("late".into())));
    assert!(opens(&a).is_empty(), "a late token is ignored");
}

// ---- refresh ----

#[test]
fn refresh_is_single_flight_under_three_coinciding_triggers() {
    let mut h = H::new();
    h.live();
    h.frame(json!({"type": "expiring", "expires_at": EXP, "in_ms": 60000}));
    // The token fails: a retry is scheduled.
    h.feed(Input::Token(h.token, Err("x".into())));
    let at = h.m.timers()[&TimerKind::RefreshRetry];
    // At that very moment: the retry timer, and two more `expiring` notices.
    h.now = at;
    let mut a = h.feed(Input::Timer(TimerKind::RefreshRetry));
    a.extend(h.frame(json!({"type": "expiring", "expires_at": EXP, "in_ms": 1000})));
    a.extend(h.frame(json!({"type": "expiring", "expires_at": EXP, "in_ms": 1000})));
    assert_eq!(token_requests(&a), 1);
    assert_eq!(h.m.refresh_in_flight(), 1);
    let a = h.token_ok();
    assert_eq!(sent_types(&a), vec!["refresh"]);
    // While the refresh is sent, a further trigger starts nothing.
    let a = h.frame(json!({"type": "expiring", "expires_at": EXP, "in_ms": 500}));
    assert_eq!(token_requests(&a), 0);
    assert_eq!(h.m.refresh_in_flight(), 1);
}

#[test]
fn refresh_failure_then_success_before_expiry() {
    let mut h = H::new();
    h.live();
    h.now = EXP - 60_000;
    h.frame(json!({"type": "expiring", "expires_at": EXP, "in_ms": 60000}));
    let a = h.token_ok();
    let id = sent(&a)[0]["id"].as_u64();
    let a = h.error(id, "INTERNAL", false, None);
    assert!(closed(&a).is_none());
    let at = h.m.timers()[&TimerKind::RefreshRetry];
    assert!(at <= EXP);
    let a = h.advance(at - h.now);
    assert_eq!(token_requests(&a), 1);
    let a = h.token_ok();
    let id = sent(&a)[0]["id"].as_u64();
    assert_eq!(sent(&a)[0]["type"], "refresh");
    let a = h.frame(json!({"type": "refreshed", "id": id, "expires_at": EXP + 3_600_000}));
    assert!(events(&a).contains(&Event::Refreshed {
        expires_at: EXP + 3_600_000
    }));
    assert!(!h.m.timers().contains_key(&TimerKind::RefreshRetry));
    assert_eq!(h.m.refresh_in_flight(), 0);
}

#[test]
fn a_refresh_due_while_disconnected_follows_the_resume() {
    let mut h = H::new();
    h.live();
    h.close(None);
    let a = h.frame(json!({"type": "expiring", "expires_at": EXP, "in_ms": 1}));
    assert!(a.is_empty(), "stale socket");
    h.retry();
    h.feed(Input::Opened(h.conn));
    let a = h.frame(
        json!({"type": "resumed", "session_id": "s1", "resume_token": "r2",
        "expires_at": EXP, "channels": [], "replayed": 0, "gap": false}),
    );
    assert_eq!(token_requests(&a), 0);
    // The server sends the missed `expiring` after `resumed`.
    let a = h.frame(json!({"type": "expiring", "expires_at": EXP, "in_ms": 1000}));
    assert_eq!(token_requests(&a), 1);
    // A refresh in flight when the connection drops is redone after the resume.
    let a = h.token_ok();
    assert_eq!(sent_types(&a), vec!["refresh"]);
    h.close(None);
    h.retry();
    let a = h.feed(Input::Opened(h.conn));
    assert_eq!(
        sent(&a)[0]["resume_token"],
        "r2",
        "the rotated resume token"
    );
    let a = h.frame(
        json!({"type": "resumed", "session_id": "s1", "resume_token": "r3",
        "expires_at": EXP, "channels": [], "replayed": 0, "gap": false}),
    );
    assert_eq!(token_requests(&a), 1);
}

// ---- messages ----

#[test]
fn duplicates_after_replay_are_dropped_and_gap_is_reported() {
    let mut h = H::new();
    h.live();
    let mut a = h.frame(msg(1));
    a.extend(h.frame(msg(2)));
    assert_eq!(messages(&a), vec![1, 2]);
    h.close(None);
    h.retry();
    let a = h.feed(Input::Opened(h.conn));
    assert_eq!(sent(&a)[0]["last_seq"], 2);
    let mut a = h.frame(
        json!({"type": "resumed", "session_id": "s1", "resume_token": "r2",
        "expires_at": EXP, "channels": ["general"], "replayed": 2, "gap": true}),
    );
    for seq in [5, 6, 6, 4, 7] {
        a.extend(h.frame(msg(seq)));
    }
    assert!(events(&a).contains(&Event::Gap(GapReason::Resume)));
    assert_eq!(messages(&a), vec![5, 6, 7]);
}

// ---- requests ----

#[test]
fn requests_while_not_live_and_on_drop() {
    let mut h = H::new();
    h.feed(Input::Start);
    let a = h.feed(Input::Command(Command::Publish(
        1,
        "general".into(),
        json!(1),
    )));
    assert!(matches!(&a[..], [Action::Fail(1, e)] if e.code == ErrorKind::Disconnected));
    let a = h.feed(Input::Command(Command::Rpc(
        2,
        "m".into(),
        json!(1),
        10_000,
    )));
    assert!(matches!(&a[..], [Action::Fail(2, e)] if e.code == ErrorKind::Disconnected));
    let a = h.feed(Input::Command(Command::Join(3, "general".into())));
    assert!(a.is_empty(), "the join waits for the connection");
    h.token_ok();
    h.feed(Input::Opened(h.conn));
    let a = h.authenticated("s1");
    let join = sent(&a);
    assert_eq!(join[0]["type"], "join");
    let a = h.frame(json!({"type": "joined", "id": join[0]["id"], "channel": "general"}));
    assert!(a.contains(&Action::Complete(3, Value::Null)));

    // In flight when the connection drops: DISCONNECTED, never resent.
    let a = h.feed(Input::Command(Command::Rpc(
        4,
        "m".into(),
        json!(1),
        10_000,
    )));
    assert_eq!(sent_types(&a), vec!["rpc"]);
    h.feed(Input::Command(Command::Publish(
        5,
        "general".into(),
        json!(1),
    )));
    let a = h.close(None);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Fail(4, e) if e.code == ErrorKind::Disconnected))
    );
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Fail(5, e) if e.code == ErrorKind::Disconnected))
    );
    h.retry();
    h.feed(Input::Opened(h.conn));
    let a = h.frame(
        json!({"type": "resumed", "session_id": "s1", "resume_token": "r2",
        "expires_at": EXP, "channels": ["general"], "replayed": 0, "gap": false}),
    );
    assert!(
        sent_types(&a).is_empty(),
        "nothing resent, general still joined"
    );
}

#[test]
fn rpc_results_errors_and_timeouts() {
    let mut h = H::new();
    h.live();
    let a = h.feed(Input::Command(Command::Rpc(1, "m".into(), json!(1), 2_000)));
    let id = sent(&a)[0]["id"].clone();
    let a = h.frame(json!({"type": "rpc_result", "id": id, "data": {"ok": true}}));
    assert!(a.contains(&Action::Complete(1, json!({"ok": true}))));
    for (code, kind) in [
        ("METHOD_NOT_FOUND", ErrorKind::MethodNotFound),
        ("APP_ERROR", ErrorKind::AppError),
        ("UNAVAILABLE", ErrorKind::Unavailable),
        ("BUSY", ErrorKind::Busy),
    ] {
        let a = h.feed(Input::Command(Command::Rpc(2, "m".into(), json!(1), 2_000)));
        let id = sent(&a)[0]["id"].as_u64();
        let mut v =
            json!({"type": "error", "id": id, "code": code, "message": "no", "fatal": false});
        v["details"] = json!({"owner": "bob"});
        let a = h.frame(v);
        let failed = a.iter().find_map(|x| match x {
            Action::Fail(2, e) => Some(e.clone()),
            _ => None,
        });
        let e = failed.expect("failed");
        assert_eq!(e.code, kind);
        assert_eq!(e.details, Some(json!({"owner": "bob"})));
    }
    h.feed(Input::Command(Command::Rpc(3, "m".into(), json!(1), 2_000)));
    let a = h.advance(2_000);
    assert!(
        a.iter()
            .any(|x| matches!(x, Action::Fail(3, e) if e.code == ErrorKind::Timeout))
    );
}

#[test]
fn server_left_channels_are_no_longer_wanted() {
    let mut h = H::new();
    h.live();
    h.feed(Input::Command(Command::Join(1, "general".into())));
    h.frame(json!({"type": "joined", "id": 1, "channel": "general"}));
    let a = h.frame(json!({"type": "left", "channel": "general", "reason": "FORBIDDEN"}));
    assert!(
        events(&a)
            .iter()
            .any(|e| matches!(e, Event::Left { channel, .. } if channel == "general"))
    );
    assert_eq!(h.m.channels().count(), 0);
}

// ---- logout, close, disconnect ----

#[test]
fn logout_stops_for_good() {
    let mut h = H::new();
    h.live();
    let a = h.feed(Input::Command(Command::Logout(9)));
    assert_eq!(sent_types(&a), vec!["logout"]);
    let a = h.close(Some(1000));
    assert!(a.contains(&Action::Complete(9, Value::Null)));
    assert_eq!(closed(&a), Some((Some(1000), None)));
    assert!(h.m.timers().is_empty());
    let a = h.advance(600_000);
    assert!(a.is_empty());
}

#[test]
fn close_sends_1000_and_disconnect_4000_keeping_the_session() {
    let mut h = H::new();
    h.live();
    let a = h.feed(Input::Command(Command::Close));
    assert!(a.contains(&Action::Close(1000)));
    assert!(h.m.timers().is_empty());

    let mut h = H::new();
    h.live();
    let a = h.feed(Input::Command(Command::Disconnect));
    assert!(a.contains(&Action::Close(4000)));
    assert!(events(&a).contains(&Event::State(State::Offline)));
    assert!(h.m.timers().is_empty(), "offline: no timers");
    assert!(h.advance(600_000).is_empty(), "and no reconnection");
    let a = h.feed(Input::Command(Command::Reconnect));
    assert_eq!(opens(&a), vec![None]);
    let a = h.feed(Input::Opened(h.conn));
    assert_eq!(sent(&a)[0]["type"], "resume");
}

#[test]
fn no_timers_left_after_close_in_any_state() {
    type Step = fn(&mut H);
    let states: &[Step] = &[
        |h| {
            h.feed(Input::Start);
        },
        |h| {
            h.live();
        },
        |h| {
            h.live();
            h.close(None);
        },
        |h| {
            h.live();
            h.frame(json!({"type": "expiring", "expires_at": EXP, "in_ms": 1}));
            h.feed(Input::Command(Command::Rpc(1, "m".into(), json!(1), 5_000)));
            h.advance(25_000);
        },
    ];
    for step in states {
        let mut h = H::new();
        step(&mut h);
        assert!(!h.m.timers().is_empty(), "something was set");
        let a = h.feed(Input::Command(Command::Close));
        assert!(h.m.timers().is_empty(), "{a:?}");
        assert!(h.advance(600_000).is_empty());
    }
}

// ---- half-open ----

#[test]
fn silence_sends_a_ping_and_a_missing_pong_drops_the_connection() {
    let mut h = H::new();
    h.live();
    let a = h.advance(24_999);
    assert!(sent(&a).is_empty());
    h.feed(Input::Heard(h.conn)); // a WebSocket ping from the server
    let a = h.advance(24_999);
    assert!(sent(&a).is_empty(), "hearing anything restarts the silence");
    let a = h.advance(1);
    let ping = sent(&a);
    assert_eq!(ping[0]["type"], "ping");
    h.frame(json!({"type": "pong", "id": ping[0]["id"]}));
    assert!(!h.m.timers().contains_key(&TimerKind::PongDeadline));
    let a = h.advance(25_000);
    assert_eq!(sent_types(&a), vec!["ping"]);
    let a = h.advance(10_000);
    assert!(a.contains(&Action::Drop), "{a:?}");
    assert!(events(&a).contains(&Event::State(State::Reconnecting)));
    h.retry();
    let a = h.feed(Input::Opened(h.conn));
    assert_eq!(sent_types(&a), vec!["resume"]);
}

// ---- properties ----

#[derive(Clone, Debug)]
enum Step {
    Frame(u8),
    Close(u8),
    Opened,
    TokenOk,
    TokenErr,
    Advance(u32),
    Cmd(u8),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0u8..12).prop_map(Step::Frame),
        2 => (2u8..4).prop_map(Step::Frame), // more `expiring`
        1 => (0u8..8).prop_map(Step::Close),
        2 => Just(Step::Opened),
        3 => Just(Step::TokenOk),
        1 => Just(Step::TokenErr),
        2 => (0u32..70_000).prop_map(Step::Advance),
        1 => (0u8..8).prop_map(Step::Cmd),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn never_two_refreshes_nor_a_reconnect_after_the_stop(steps in proptest::collection::vec(step(), 1..80), seed in any::<u64>()) {
        let mut h = H::with(Settings::default(), Box::new(SplitMix64(seed)));
        h.feed(Input::Start);
        let mut stopped = false;
        let mut req = 100;
        for s in steps {
            let a = match s {
                Step::Frame(k) => h.frame(match k {
                    0 => json!({"type": "authenticated", "session_id": "s", "resume_token": "r",
                        "expires_at": EXP, "heartbeat_ms": 25000}),
                    1 => json!({"type": "resumed", "session_id": "s", "resume_token": "r",
                        "expires_at": EXP, "channels": ["a"], "replayed": 0, "gap": false}),
                    2 | 3 => json!({"type": "expiring", "expires_at": EXP, "in_ms": 100}),
                    4 => json!({"type": "refreshed", "id": h.m.next_id, "expires_at": EXP}),
                    5 => json!({"type": "error", "id": h.m.next_id, "code": "INTERNAL", "fatal": false}),
                    6 => json!({"type": "error", "code": "SESSION_NOT_FOUND", "fatal": true, "retry": "reauth"}),
                    7 => json!({"type": "error", "code": "SESSION_REVOKED", "fatal": true, "retry": "none"}),
                    8 => json!({"type": "error", "code": "RATE_LIMITED", "fatal": true, "retry": "reconnect"}),
                    9 => msg(u64::from(k)),
                    10 => json!({"type": "pong", "id": h.m.next_id}),
                    _ => json!({"type": "left", "channel": "a", "reason": "FORBIDDEN"}),
                }),
                Step::Close(k) => h.close([None, Some(1000), Some(1001), Some(4401), Some(4403),
                    Some(4408), Some(1011), Some(4409)][usize::from(k)]),
                Step::Opened => h.feed(Input::Opened(h.conn)),
                Step::TokenOk => h.token_ok(),
                Step::TokenErr => h.feed(Input::Token(h.token, Err("x".into()))),
                Step::Advance(ms) => h.advance(u64::from(ms)),
                Step::Cmd(k) => {
                    req += 1;
                    h.feed(Input::Command(match k {
                        0 => Command::Join(req, "a".into()),
                        1 => Command::Leave(req, "a".into()),
                        2 => Command::Publish(req, "a".into(), json!(1)),
                        3 => Command::Rpc(req, "m".into(), json!(1), 1000),
                        4 => Command::Logout(req),
                        5 => Command::Disconnect,
                        6 => Command::Reconnect,
                        _ => Command::Close,
                    }))
                }
            };
            if stopped {
                prop_assert!(opens(&a).is_empty(), "an open after the stop: {:?}", a);
                prop_assert!(token_requests(&a) == 0);
                prop_assert!(h.m.timers().is_empty());
            }
            if closed(&a).is_some() {
                stopped = true;
                prop_assert!(h.m.timers().is_empty());
            }
            prop_assert!(h.m.refresh_in_flight() <= 1);
            let refreshes = sent_types(&a).iter().filter(|t| *t == "refresh").count();
            prop_assert!(refreshes <= 1);
        }
    }
}
