//! The readable specification: one transcript per flow of the protocol and per row
//! of its error table, driven through the real machine and the real JWT verifier.
//!
//! Each transcript is a snapshot in `core/tests/spec/`; `docs/specification.md`
//! lists them. Reading a line:
//!
//! ```text
//! +12ms     A  <- {...}          the client (connection A) sends a frame
//! +12ms     A  -> {...}          the server sends a frame
//! +12ms     A  .. verify …       the machine asks its driver (verifier, store) and the answer
//! +12ms     A  == …              an event for logs and metrics
//! +0ms         ... 5s pass       virtual time passes; timers fire on the way
//! ```
//! Tokens are shown as `<labels>`; session ids and resume tokens are the simulated
//! store's (`s_1`, `r_2`).
//!
//! Every transcript also states what it guarantees (`sees`, `never`, `ends`: see
//! [`expect`]). They are checked in code against the machine's outputs and the
//! final state of each connection, so that a title cannot drift from its
//! recording, and shown as an `expects` block at the top of the snapshot.

mod support;

use serde_json::json;
use support::{T0, T0_S};
use wsauth_core::jwt::{KeySet, Verifier, VerifierConfig, sign_hs256};
use wsauth_core::upgrade::UpgradePolicy;
use wsauth_core::{Frame, PeerClose, Revocation, SessionConfig};
use wsauth_sim::{LimitPolicy, StoreSettings, World};

const SECRET: &[u8] = b"transcripts-secret-at-least-32-bytes!";
const OTHER_SECRET: &[u8] = b"someone-elses-secret-at-least-32-bytes";

fn verifier_fn() -> wsauth_sim::VerifyFn {
    let mut keys = KeySet::new();
    keys.add_hmac_secret(None, SECRET).expect("secret");
    let verifier = Verifier::new(keys, VerifierConfig::default()).expect("verifier");
    std::sync::Arc::new(move |token: &str, now: u64| verifier.verify(token, now))
}

fn world_with(config: SessionConfig, store: StoreSettings) -> World {
    World::new(T0, config, store, verifier_fn())
}

fn world() -> World {
    world_with(SessionConfig::default(), StoreSettings::default())
}

/// Mints a token for `sub` valid `ttl_s` seconds from the start, with extra claims,
/// and shows it as `<label>` in the transcript.
fn token(w: &mut World, label: &str, sub: &str, ttl_s: i64, extra: serde_json::Value) -> String {
    let mut claims = json!({"sub": sub, "exp": T0_S as i64 + ttl_s, "iat": T0_S});
    if let (Some(c), Some(e)) = (claims.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            c.insert(k.clone(), v.clone());
        }
    }
    let t = sign_hs256(SECRET, &claims);
    w.label(&t, label);
    t
}

fn auth(w: &mut World, conn: &str, id: u64, token: &str) {
    w.send(
        conn,
        &format!(r#"{{"type":"auth","id":{id},"token":"{token}"}}"#),
    );
}

/// Opens `conn` and authenticates it as alice (1 h token, channels general and team:*).
fn alice_live(w: &mut World, conn: &str) -> String {
    let t = token(
        w,
        "alice, 1h, channels general team:*",
        "alice",
        3600,
        json!({"jti": "t-alice-1", "channels": ["general", "team:*"]}),
    );
    w.open(conn);
    auth(w, conn, 1, &t);
    t
}

/// `spec!(name, "title", [setup,] |w| { … }, sees: {…}, never: {…}, ends: {…})`: a
/// transcript and what it guarantees. `ends` is required (and must name every
/// connection); `sees` and `never` are optional. The expectations are checked
/// against the recording, then shown at the top of the snapshot.
macro_rules! spec {
    (@run $name:ident, $description:literal, $setup:expr, |$w:ident| $body:block,
        $(sees: { $($sc:literal => [$($ss:expr),* $(,)?]),* $(,)? },)?
        $(never: { $($nc:literal => [$($ns:expr),* $(,)?]),* $(,)? },)?
        ends: { $($ec:literal => $ee:expr),+ $(,)? } $(,)?
    ) => {
        #[test]
        fn $name() {
            use expect::*;
            let mut $w = Spec::new($setup);
            $body
            let mut expects = Expects::default();
            $($(expects.sees($sc, vec![$($ss),*]);)*)?
            $($(expects.never($nc, vec![$($ns),*]);)*)?
            $(expects.ends($ec, $ee);)+
            if let Err(failures) = expects.check(&mut $w) {
                panic!(
                    "{} does not show what it claims:\n  {}\n\n{}",
                    stringify!($name),
                    failures.join("\n  "),
                    $w.transcript()
                );
            }
            insta::with_settings!({
                description => $description,
                snapshot_path => "spec",
                prepend_module_to_snapshot => false,
                omit_expression => true,
            }, {
                insta::assert_snapshot!(
                    stringify!($name),
                    format!("{}\n{}", expects.render(), $w.transcript())
                );
            });
        }
    };
    ($name:ident, $description:literal, |$w:ident| $body:block, $($expects:tt)+) => {
        spec!(@run $name, $description, world(), |$w| $body, $($expects)+);
    };
    ($name:ident, $description:literal, $setup:expr, |$w:ident| $body:block, $($expects:tt)+) => {
        spec!(@run $name, $description, $setup, |$w| $body, $($expects)+);
    };
}

/// What a transcript guarantees, stated in code and checked against the recording:
/// the server's messages (`Output::Send`), its closes and the machine's `closed`
/// events, and the final state of every connection. Not against the rendered text.
///
/// - `sees`: an ordered subsequence of a connection's messages; other messages may
///   come in between.
/// - `never`: messages that must not appear on a connection at all.
/// - `ends`: the final state of a connection; every connection a transcript opens
///   must have one, and a close must say what became of the session.
mod expect {
    use std::collections::{BTreeMap, BTreeSet};
    use std::fmt::Write as _;
    use std::ops::{Deref, DerefMut};

    use super::T0;
    use wsauth_core::upgrade::{UpgradeDecision, UpgradePolicy, inspect_upgrade};
    use wsauth_core::{ErrorCode, Event, Output, ServerMessage, SessionFate};
    use wsauth_sim::World;

    /// A condition on one message, besides its type.
    #[derive(Clone, Debug, PartialEq)]
    enum Cond {
        Id(u64),
        NoId,
        Code(&'static str),
        Fatal(&'static str),
        NotFatal,
        Later,
        Current,
        InMs(u64),
        Seq(u64),
        Channel(&'static str),
        Reason(&'static str),
        Replayed(u64),
        Gap(bool),
        From(Option<&'static str>),
    }

    /// One server message to look for: its type (`None`: any) and conditions.
    #[derive(Clone, Debug, PartialEq)]
    pub struct Msg {
        kind: Option<&'static str>,
        conds: Vec<Cond>,
    }

    fn msg(kind: &'static str) -> Msg {
        Msg {
            kind: Some(kind),
            conds: Vec::new(),
        }
    }

    pub fn authenticated() -> Msg {
        msg("authenticated")
    }
    pub fn refreshed() -> Msg {
        msg("refreshed")
    }
    pub fn expiring() -> Msg {
        msg("expiring")
    }
    pub fn resumed() -> Msg {
        msg("resumed")
    }
    pub fn joined() -> Msg {
        msg("joined")
    }
    pub fn left() -> Msg {
        msg("left")
    }
    pub fn published() -> Msg {
        msg("published")
    }
    pub fn message() -> Msg {
        msg("message")
    }
    pub fn rpc_result() -> Msg {
        msg("rpc_result")
    }
    pub fn pong() -> Msg {
        msg("pong")
    }
    /// An error with this code (its wire name).
    pub fn error(code: &'static str) -> Msg {
        assert!(
            ErrorCode::from_name(code).is_some(),
            "{code} is not an error code"
        );
        msg("error").with(Cond::Code(code))
    }
    /// Any message.
    pub fn anything() -> Msg {
        Msg {
            kind: None,
            conds: Vec::new(),
        }
    }
    /// Any message that answers request `id`.
    pub fn reply_to(id: u64) -> Msg {
        anything().id(id)
    }

    impl Msg {
        fn with(mut self, cond: Cond) -> Self {
            self.conds.push(cond);
            self
        }
        /// Answers the request with this id.
        pub fn id(self, id: u64) -> Self {
            self.with(Cond::Id(id))
        }
        /// Carries no id.
        pub fn no_id(self) -> Self {
            self.with(Cond::NoId)
        }
        /// A fatal error with this retry hint.
        pub fn fatal(self, retry: &'static str) -> Self {
            self.with(Cond::Fatal(retry))
        }
        /// A non-fatal error.
        pub fn not_fatal(self) -> Self {
            self.with(Cond::NotFatal)
        }
        /// Its `expires_at` is later than the one announced before it on this
        /// connection (by `authenticated`, `resumed` or `refreshed`).
        pub fn later(self) -> Self {
            self.with(Cond::Later)
        }
        /// Its `expires_at` is the one last announced on this connection.
        pub fn current(self) -> Self {
            self.with(Cond::Current)
        }
        /// An `expiring` notice this many ms before `expires_at`.
        pub fn in_ms(self, ms: u64) -> Self {
            self.with(Cond::InMs(ms))
        }
        /// A channel message with this `seq`.
        pub fn seq(self, seq: u64) -> Self {
            self.with(Cond::Seq(seq))
        }
        /// About this channel.
        pub fn channel(self, channel: &'static str) -> Self {
            self.with(Cond::Channel(channel))
        }
        /// A `left` the server sent on its own, for this reason.
        pub fn reason(self, code: &'static str) -> Self {
            self.with(Cond::Reason(code))
        }
        /// A `resumed` announcing this many replayed messages.
        pub fn replayed(self, n: u64) -> Self {
            self.with(Cond::Replayed(n))
        }
        /// A `resumed` with this `gap`.
        pub fn gap(self, gap: bool) -> Self {
            self.with(Cond::Gap(gap))
        }
        /// A channel message this user published (`from` is their `sub`).
        pub fn by(self, sub: &'static str) -> Self {
            self.with(Cond::From(Some(sub)))
        }
        /// A channel message from the server (PROTOCOL §9): it has no `from`.
        pub fn by_the_server(self) -> Self {
            self.with(Cond::From(None))
        }

        fn matches(&self, m: &ServerMessage, announced_before: Option<u64>) -> bool {
            if self.kind.is_some_and(|k| k != kind_of(m)) {
                return false;
            }
            self.conds.iter().all(|c| match c {
                Cond::Id(id) => m.id() == Some(*id),
                Cond::NoId => m.id().is_none(),
                Cond::Code(code) => {
                    matches!(m, ServerMessage::Error { code: c, .. } if c.as_str() == *code)
                }
                Cond::Fatal(retry) => matches!(
                    m,
                    ServerMessage::Error { fatal: true, retry: Some(r), .. } if r.as_str() == *retry
                ),
                Cond::NotFatal => matches!(m, ServerMessage::Error { fatal: false, .. }),
                Cond::Later => matches!(
                    (expires_at(m), announced_before),
                    (Some(now), Some(before)) if now > before
                ),
                Cond::Current => expires_at(m).is_some() && expires_at(m) == announced_before,
                Cond::InMs(ms) => matches!(m, ServerMessage::Expiring { in_ms, .. } if in_ms == ms),
                Cond::Seq(seq) => matches!(m, ServerMessage::Message { seq: s, .. } if s == seq),
                Cond::Channel(channel) => match m {
                    ServerMessage::Joined { channel: c, .. }
                    | ServerMessage::Left { channel: c, .. } => c == channel,
                    ServerMessage::Message { channel: c, .. } => &**c == *channel,
                    _ => false,
                },
                Cond::Reason(code) => matches!(
                    m,
                    ServerMessage::Left { reason: Some(r), .. } if r.as_str() == *code
                ),
                Cond::Replayed(n) => {
                    matches!(m, ServerMessage::Resumed { replayed, .. } if replayed == n)
                }
                Cond::Gap(gap) => matches!(m, ServerMessage::Resumed { gap: g, .. } if g == gap),
                Cond::From(from) => {
                    matches!(m, ServerMessage::Message { from: f, .. } if f.as_deref() == *from)
                }
            })
        }

        fn render(&self) -> String {
            let reply_to = match (self.kind, self.conds.as_slice()) {
                (None, [Cond::Id(id)]) => Some(*id),
                _ => None,
            };
            if let Some(id) = reply_to {
                return format!("any reply to id {id}");
            }
            let mut out = String::from(self.kind.unwrap_or("any message"));
            let mut details = Vec::new();
            for c in &self.conds {
                match c {
                    Cond::Code(code) => {
                        let _ = write!(out, " {code}");
                    }
                    Cond::Id(id) => details.push(format!("id {id}")),
                    Cond::NoId => details.push("no id".to_owned()),
                    Cond::Fatal(retry) => details.push(format!("fatal, retry {retry}")),
                    Cond::NotFatal => details.push("not fatal".to_owned()),
                    Cond::Later => details.push("expires_at later than before".to_owned()),
                    Cond::Current => details.push("for the current token".to_owned()),
                    Cond::InMs(ms) => details.push(format!("in_ms {ms}")),
                    Cond::Seq(seq) => details.push(format!("seq {seq}")),
                    Cond::Channel(ch) => details.push(format!("channel {ch}")),
                    Cond::Reason(code) => details.push(format!("reason {code}")),
                    Cond::Replayed(n) => details.push(format!("{n} replayed")),
                    Cond::Gap(gap) => details.push(format!("gap {gap}")),
                    Cond::From(Some(sub)) => details.push(format!("from {sub}")),
                    Cond::From(None) => details.push("from the server: no from".to_owned()),
                }
            }
            if !details.is_empty() {
                let _ = write!(out, " ({})", details.join(", "));
            }
            out
        }
    }

    fn kind_of(m: &ServerMessage) -> &'static str {
        match m {
            ServerMessage::Authenticated { .. } => "authenticated",
            ServerMessage::Refreshed { .. } => "refreshed",
            ServerMessage::Expiring { .. } => "expiring",
            ServerMessage::Resumed { .. } => "resumed",
            ServerMessage::Joined { .. } => "joined",
            ServerMessage::Left { .. } => "left",
            ServerMessage::Published { .. } => "published",
            ServerMessage::Message { .. } => "message",
            ServerMessage::RpcResult { .. } => "rpc_result",
            ServerMessage::Pong { .. } => "pong",
            ServerMessage::Error { .. } => "error",
        }
    }

    fn expires_at(m: &ServerMessage) -> Option<u64> {
        match m {
            ServerMessage::Authenticated { expires_at, .. }
            | ServerMessage::Refreshed { expires_at, .. }
            | ServerMessage::Resumed { expires_at, .. }
            | ServerMessage::Expiring { expires_at, .. } => Some(*expires_at),
            _ => None,
        }
    }

    /// How a connection ends up.
    #[derive(Clone, Debug, PartialEq)]
    enum State {
        Live,
        AwaitingAuth,
        ClosedByServer(u16, &'static str),
        ClosedByClient(u16),
        Lost,
        Refused(u16),
    }

    /// The final state of a connection.
    #[derive(Clone, Debug, PartialEq)]
    pub struct End {
        state: State,
        session: Option<SessionFate>,
        channels: Option<Vec<&'static str>>,
        exp_s: Option<u64>,
    }

    fn end(state: State) -> End {
        End {
            state,
            session: None,
            channels: None,
            exp_s: None,
        }
    }

    /// Open with a session attached.
    pub fn live() -> End {
        end(State::Live)
    }
    /// Open, no session yet.
    pub fn awaiting_auth() -> End {
        end(State::AwaitingAuth)
    }
    /// The server closed it with this code and reason.
    pub fn closed(code: u16, reason: &'static str) -> End {
        end(State::ClosedByServer(code, reason))
    }
    /// The client closed it with this code.
    pub fn client_closed(code: u16) -> End {
        end(State::ClosedByClient(code))
    }
    /// The socket was lost, no close frame.
    pub fn lost() -> End {
        end(State::Lost)
    }
    /// The upgrade was refused with this HTTP status: no WebSocket.
    pub fn refused(status: u16) -> End {
        end(State::Refused(status))
    }

    impl End {
        fn session(mut self, fate: SessionFate) -> Self {
            self.session = Some(fate);
            self
        }
        /// Closed, the session kept for a resume.
        pub fn resumable(self) -> Self {
            self.session(SessionFate::Detached)
        }
        /// Closed, the session ended for good.
        pub fn ended(self) -> Self {
            self.session(SessionFate::Ended)
        }
        /// Closed, the session handed to another connection or evicted.
        pub fn taken_over(self) -> Self {
            self.session(SessionFate::Replaced)
        }
        /// Closed before it had a session.
        pub fn no_session(self) -> Self {
            self.session(SessionFate::None)
        }
        /// Live and joined to exactly these channels.
        pub fn channels<const N: usize>(mut self, channels: [&'static str; N]) -> Self {
            let mut v = channels.to_vec();
            v.sort_unstable();
            self.channels = Some(v);
            self
        }
        /// Live with a token whose `exp` is this many seconds after the start.
        pub fn token_exp(mut self, s: u64) -> Self {
            self.exp_s = Some(s);
            self
        }

        fn render(&self) -> String {
            let mut out = match &self.state {
                State::Live => "live".to_owned(),
                State::AwaitingAuth => "open, waiting for auth".to_owned(),
                State::ClosedByServer(code, reason) => {
                    format!("closed by the server: {code} {reason}")
                }
                State::ClosedByClient(code) => format!("closed by the client: {code}"),
                State::Lost => "connection lost".to_owned(),
                State::Refused(status) => {
                    format!("refused at the upgrade: HTTP {status}, no WebSocket")
                }
            };
            if let Some(fate) = self.session {
                out.push_str(match fate {
                    SessionFate::None => ", no session",
                    SessionFate::Detached => ", session resumable",
                    SessionFate::Ended => ", session ended",
                    SessionFate::Replaced => ", session taken over",
                });
            }
            if let Some(channels) = &self.channels {
                if channels.is_empty() {
                    out.push_str(", in no channel");
                } else {
                    let _ = write!(out, ", in {}", channels.join(" "));
                }
            }
            if let Some(s) = self.exp_s {
                let _ = write!(out, ", token exp at +{s}s");
            }
            out
        }
    }

    #[derive(Clone, Debug)]
    enum Item {
        Sees(Vec<Msg>),
        Never(Vec<Msg>),
        Ends(End),
    }

    /// A transcript's expectations, by connection.
    #[derive(Clone, Debug, Default)]
    pub struct Expects {
        items: Vec<(&'static str, Item)>,
    }

    impl Expects {
        pub fn sees(&mut self, conn: &'static str, msgs: Vec<Msg>) {
            self.items.push((conn, Item::Sees(msgs)));
        }
        pub fn never(&mut self, conn: &'static str, msgs: Vec<Msg>) {
            self.items.push((conn, Item::Never(msgs)));
        }
        pub fn ends(&mut self, conn: &'static str, end: End) {
            self.items.push((conn, Item::Ends(end)));
        }

        /// The expectations as the snapshot shows them, grouped by connection.
        pub fn render(&self) -> String {
            let mut out = String::from("expects (checked against the recording below):\n");
            let conns: BTreeSet<&str> = self.items.iter().map(|(c, _)| *c).collect();
            for conn in conns {
                for (_, item) in self.items.iter().filter(|(c, _)| *c == conn) {
                    let (verb, parts, sep) = match item {
                        Item::Sees(msgs) => ("sees ", msgs.iter().map(Msg::render).collect(), "→ "),
                        Item::Never(msgs) => {
                            ("never", msgs.iter().map(Msg::render).collect(), "or ")
                        }
                        Item::Ends(end) => ("ends ", vec![end.render()], ""),
                    };
                    // One line while it fits, then one step per line.
                    let line = parts.join(&format!(" {sep}"));
                    if line.chars().count() <= 90 {
                        let _ = writeln!(out, "  {conn:<2} {verb} {line}");
                    } else {
                        for (i, part) in parts.iter().enumerate() {
                            if i == 0 {
                                let _ = writeln!(out, "  {conn:<2} {verb} {part}");
                            } else {
                                let _ = writeln!(out, "           {sep}{part}");
                            }
                        }
                    }
                }
            }
            out
        }

        /// Checks every expectation against what `spec` recorded; each failure is
        /// one line.
        pub fn check(&self, spec: &mut Spec) -> Result<(), Vec<String>> {
            let outputs = spec.world.take_outputs();
            let mut failures = Vec::new();
            let mut opened: BTreeSet<String> = spec.world.conn_names().into_iter().collect();
            opened.extend(spec.refused.keys().cloned());
            opened.extend(outputs.iter().map(|(c, _)| c.clone()));
            for conn in &opened {
                if !self
                    .items
                    .iter()
                    .any(|(c, i)| c == conn && matches!(i, Item::Ends(_)))
                {
                    failures.push(format!("{conn}: no `ends` expectation for this connection"));
                }
            }
            for (conn, item) in &self.items {
                let mine: Vec<&Output> = outputs
                    .iter()
                    .filter(|(c, _)| c == conn)
                    .map(|(_, o)| o)
                    .collect();
                let sent = messages(&mine);
                match item {
                    Item::Sees(msgs) => {
                        let mut at = 0;
                        for want in msgs {
                            match sent[at..]
                                .iter()
                                .position(|(m, before)| want.matches(m, *before))
                            {
                                Some(i) => at += i + 1,
                                None => {
                                    failures.push(format!(
                                        "{conn}: expected {}, but no message from #{} on matches: [{}]",
                                        want.render(),
                                        at + 1,
                                        sent[at..]
                                            .iter()
                                            .map(|(m, _)| m.to_json())
                                            .collect::<Vec<_>>()
                                            .join(", ")
                                    ));
                                    break;
                                }
                            }
                        }
                    }
                    Item::Never(msgs) => {
                        for unwanted in msgs {
                            if let Some((m, _)) = sent.iter().find(|(m, b)| unwanted.matches(m, *b))
                            {
                                failures.push(format!(
                                    "{conn}: expected never {}, but got {}",
                                    unwanted.render(),
                                    m.to_json()
                                ));
                            }
                        }
                    }
                    Item::Ends(end) => {
                        if let Err(why) = check_end(spec, conn, end, &mine) {
                            failures.push(format!(
                                "{conn}: expected to end {}, but {why}",
                                end.render()
                            ));
                        }
                    }
                }
            }
            if failures.is_empty() {
                Ok(())
            } else {
                Err(failures)
            }
        }
    }

    /// The messages sent on a connection, each with the `expires_at` last announced
    /// before it.
    fn messages<'a>(outputs: &[&'a Output]) -> Vec<(&'a ServerMessage, Option<u64>)> {
        let mut announced = None;
        let mut out = Vec::new();
        for o in outputs {
            if let Output::Send(m) = o {
                out.push((m, announced));
                if !matches!(m, ServerMessage::Expiring { .. }) && expires_at(m).is_some() {
                    announced = expires_at(m);
                }
            }
        }
        out
    }

    fn check_end(spec: &Spec, name: &str, end: &End, outputs: &[&Output]) -> Result<(), String> {
        let conn = spec.world.conn(name);
        let close = outputs.iter().rev().find_map(|o| match o {
            Output::Close { code, reason } => Some((code.0, *reason)),
            _ => None,
        });
        let closed_event = outputs.iter().rev().find_map(|o| match o {
            Output::Event(Event::Closed {
                code,
                error,
                session,
                ..
            }) => Some((code.map(|c| c.0), *error, *session)),
            _ => None,
        });
        let rejected = outputs.iter().find_map(|o| match o {
            Output::RejectUpgrade { status, .. } => Some(*status),
            _ => None,
        });
        let describe = || match (conn, close, closed_event) {
            (None, ..) => "it was never opened".to_owned(),
            (Some(c), _, _) if !c.is_closed() && c.is_authenticated() => "it is live".to_owned(),
            (Some(c), _, _) if !c.is_closed() => "it is open without a session".to_owned(),
            (_, Some((code, reason)), _) => format!("the server closed it {code} {reason}"),
            (_, None, Some((Some(code), _, _))) => format!("the client closed it {code}"),
            (_, None, Some((None, _, _))) => "it was lost or refused".to_owned(),
            (_, None, None) => "it is closed".to_owned(),
        };
        let open = conn.is_some_and(|c| !c.is_closed());
        match &end.state {
            State::Live => {
                let Some(c) = conn.filter(|c| !c.is_closed() && c.is_authenticated()) else {
                    return Err(describe());
                };
                if let Some(want) = &end.channels {
                    let mut got: Vec<&str> = c.joined_channels().collect();
                    got.sort_unstable();
                    if got != *want {
                        return Err(format!("its channels are {got:?}"));
                    }
                }
                if let Some(s) = end.exp_s {
                    let got = c.claims().map(|c| c.exp_ms);
                    if got != Some(T0 + s * 1000) {
                        let shown = got.map_or_else(
                            || "none".to_owned(),
                            |ms| format!("+{}s", (ms.saturating_sub(T0)) / 1000),
                        );
                        return Err(format!("its token's exp is at {shown}"));
                    }
                }
            }
            State::AwaitingAuth => {
                if !open || conn.is_some_and(|c| c.is_authenticated()) {
                    return Err(describe());
                }
            }
            State::ClosedByServer(code, reason) => {
                if open || close != Some((*code, *reason)) {
                    return Err(describe());
                }
            }
            State::ClosedByClient(code) => {
                if open
                    || close.is_some()
                    || !matches!(closed_event, Some((Some(c), None, _)) if c == *code)
                {
                    return Err(describe());
                }
            }
            State::Lost => {
                if open || close.is_some() || !matches!(closed_event, Some((None, None, _))) {
                    return Err(describe());
                }
            }
            State::Refused(status) => {
                let got = rejected.or_else(|| spec.refused.get(name).copied());
                if got != Some(*status) {
                    return Err(match got {
                        Some(s) => format!("it was refused with HTTP {s}"),
                        None => describe(),
                    });
                }
                if open || close.is_some() {
                    return Err(describe());
                }
            }
        }
        let closes = !matches!(
            end.state,
            State::Live | State::AwaitingAuth | State::Refused(_)
        );
        if closes {
            let Some(want) = end.session else {
                return Err("the expectation does not say what became of the session \
                     (.resumable(), .ended(), .taken_over() or .no_session())"
                    .to_owned());
            };
            match closed_event {
                Some((_, _, got)) if got == want => {}
                Some((_, _, got)) => return Err(format!("its session fate was {got:?}")),
                None => return Err("no `closed` event was recorded".to_owned()),
            }
        }
        Ok(())
    }

    /// The world a transcript drives, plus what the world does not record: the
    /// upgrade requests refused before a connection existed.
    pub struct Spec {
        world: World,
        refused: BTreeMap<String, u16>,
    }

    impl Spec {
        pub fn new(world: World) -> Self {
            Spec {
                world,
                refused: BTreeMap::new(),
            }
        }

        /// [`World::open_upgrade`], remembering a refusal of the upgrade request.
        pub fn open_upgrade(
            &mut self,
            name: &str,
            headers: &[(&str, &str)],
            query: Option<&str>,
            policy: &UpgradePolicy,
        ) {
            let decision = inspect_upgrade(
                headers.iter().map(|(n, v)| (*n, v.as_bytes())),
                query,
                policy,
            );
            if let UpgradeDecision::Refuse { status, .. } = decision {
                self.refused.insert(name.to_owned(), status);
            }
            self.world.open_upgrade(name, headers, query, policy);
        }
    }

    impl Deref for Spec {
        type Target = World;
        fn deref(&self) -> &World {
            &self.world
        }
    }

    impl DerefMut for Spec {
        fn deref_mut(&mut self) -> &mut World {
            &mut self.world
        }
    }
}

// ----- §2 Authentication -------------------------------------------------------

spec!(
    auth_header_success,
    "A non-browser client sends its token in the Authorization header: the server verifies it before completing the upgrade, then sends `authenticated` without an id.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        w.open_upgrade(
            "A",
            &[
                ("Authorization", &format!("Bearer {t}")),
                ("Sec-WebSocket-Protocol", "wsauth.v1"),
            ],
            None,
            &UpgradePolicy::default(),
        );
    },
    sees: { "A" => [authenticated().no_id()] },
    ends: { "A" => live() },
);

spec!(
    auth_header_refused,
    "A bad header token refuses the upgrade with HTTP 401 and a JSON body; no WebSocket is opened.",
    |w| {
        let t = token(&mut w, "alice, expired 1h ago", "alice", -3600, json!({}));
        w.open_upgrade(
            "A",
            &[("Authorization", &format!("Bearer {t}"))],
            None,
            &UpgradePolicy::default(),
        );
    },
    never: { "A" => [anything()] },
    ends: { "A" => refused(401) },
);

spec!(
    auth_message_success,
    "A browser authenticates with its first message; `user_id` (or `userId`), when sent, must equal the token's `sub`.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        w.open("A");
        w.advance(12);
        w.send(
            "A",
            &format!(r#"{{"type":"auth","id":1,"token":"{t}","userId":"alice"}}"#),
        );
    },
    sees: { "A" => [authenticated().id(1)] },
    ends: { "A" => live() },
);

spec!(
    auth_query_token,
    "With `allow_query_token` on, `?access_token=` is treated like the header: verified before the upgrade. When off, the parameter is ignored and the client must send `auth`.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        let on = UpgradePolicy {
            allow_query_token: true,
            ..UpgradePolicy::default()
        };
        w.open_upgrade("A", &[], Some(&format!("access_token={t}")), &on);
        w.open_upgrade(
            "B",
            &[],
            Some(&format!("access_token={t}")),
            &UpgradePolicy::default(),
        );
        auth(&mut w, "B", 1, &t);
    },
    sees: {
        "A" => [authenticated().no_id()],
        "B" => [authenticated().id(1)],
    },
    ends: { "A" => live(), "B" => live() },
);

spec!(
    error_auth_failed_user_id_mismatch,
    "AUTH_FAILED: `user_id` differs from the token's `sub`. Fatal, retry reauth, close 4401.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        w.open("A");
        w.send(
            "A",
            &format!(r#"{{"type":"auth","id":1,"token":"{t}","user_id":"mallory"}}"#),
        );
    },
    sees: { "A" => [error("AUTH_FAILED").id(1).fatal("reauth")] },
    never: { "A" => [authenticated()] },
    ends: { "A" => closed(4401, "AUTH_FAILED").no_session() },
);

spec!(
    error_auth_failed_signature,
    "AUTH_FAILED: a token signed with a key the server does not have.",
    |w| {
        let t = sign_hs256(OTHER_SECRET, &json!({"sub": "alice", "exp": T0_S + 3600}));
        w.label(&t, "alice, signed with another key");
        w.open("A");
        auth(&mut w, "A", 1, &t);
    },
    sees: { "A" => [error("AUTH_FAILED").id(1).fatal("reauth")] },
    ends: { "A" => closed(4401, "AUTH_FAILED").no_session() },
);

spec!(
    error_invalid_token,
    "INVALID_TOKEN: not a JWT at all. Fatal, retry reauth, close 4401.",
    |w| {
        w.open("A");
        auth(&mut w, "A", 1, "not-a-jwt");
    },
    sees: { "A" => [error("INVALID_TOKEN").id(1).fatal("reauth")] },
    ends: { "A" => closed(4401, "INVALID_TOKEN").no_session() },
);

spec!(
    verification_that_answers_too_late,
    "A verifier that answers after the token's end (exp + leeway) is not believed: an `auth` fails TOKEN_EXPIRED, a `refresh` fails TOKEN_EXPIRED without harming the session.",
    |w| {
        let almost = token(&mut w, "alice, expired 29s ago", "alice", -29, json!({}));
        w.open("A");
        w.note("the verifier is slow (a token introspection service, say)");
        w.hold_replies = true;
        auth(&mut w, "A", 1, &almost);
        w.advance(2_000);
        w.hold_replies = false;
        w.release();
        alice_live(&mut w, "B");
        let refresh_token = token(&mut w, "alice, expired 27s ago", "alice", -27, json!({}));
        w.hold_replies = true;
        w.send(
            "B",
            &format!(r#"{{"type":"refresh","id":2,"token":"{refresh_token}"}}"#),
        );
        w.advance(2_000);
        w.hold_replies = false;
        w.release();
    },
    sees: {
        "A" => [error("TOKEN_EXPIRED").id(1).fatal("reauth")],
        "B" => [authenticated().id(1), error("TOKEN_EXPIRED").id(2).not_fatal()],
    },
    never: { "A" => [authenticated()], "B" => [refreshed()] },
    ends: {
        "A" => closed(4401, "TOKEN_EXPIRED").no_session(),
        "B" => live(),
    },
);

spec!(
    error_token_expired,
    "TOKEN_EXPIRED: the token is past `exp` plus the leeway (30 s) when presented.",
    |w| {
        let t = token(&mut w, "alice, expired 31s ago", "alice", -31, json!({}));
        w.open("A");
        auth(&mut w, "A", 1, &t);
    },
    sees: { "A" => [error("TOKEN_EXPIRED").id(1).fatal("reauth")] },
    ends: { "A" => closed(4401, "TOKEN_EXPIRED").no_session() },
);

spec!(
    error_token_not_yet_valid,
    "TOKEN_NOT_YET_VALID: `nbf` is further in the future than the leeway.",
    |w| {
        let t = token(
            &mut w,
            "alice, nbf in 60s",
            "alice",
            3600,
            json!({"nbf": T0_S + 60}),
        );
        w.open("A");
        auth(&mut w, "A", 1, &t);
    },
    sees: { "A" => [error("TOKEN_NOT_YET_VALID").id(1).fatal("reauth")] },
    ends: { "A" => closed(4401, "TOKEN_NOT_YET_VALID").no_session() },
);

spec!(
    error_token_revoked,
    "TOKEN_REVOKED: the token's `jti` was revoked before it was presented. Fatal, retry none, close 4403.",
    |w| {
        let t = token(
            &mut w,
            "alice, jti t-9",
            "alice",
            3600,
            json!({"jti": "t-9"}),
        );
        w.revoke(Revocation::Token { jti: "t-9".into() });
        w.open("A");
        auth(&mut w, "A", 1, &t);
    },
    sees: { "A" => [error("TOKEN_REVOKED").id(1).fatal("none")] },
    ends: { "A" => closed(4403, "TOKEN_REVOKED").no_session() },
);

spec!(
    error_not_authenticated,
    "NOT_AUTHENTICATED: anything but `auth` or `resume` before authentication is fatal.",
    |w| {
        w.open("A");
        w.send("A", r#"{"type":"join","id":1,"channel":"general"}"#);
    },
    sees: { "A" => [error("NOT_AUTHENTICATED").id(1).fatal("none")] },
    ends: { "A" => closed(4401, "NOT_AUTHENTICATED").no_session() },
);

spec!(
    error_already_authenticated,
    "ALREADY_AUTHENTICATED: a second `auth` (or `resume`) is refused, not fatally.",
    |w| {
        let t = alice_live(&mut w, "A");
        auth(&mut w, "A", 2, &t);
        w.send(
            "A",
            r#"{"type":"resume","id":3,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    },
    sees: {
        "A" => [
            authenticated().id(1),
            error("ALREADY_AUTHENTICATED").id(2).not_fatal(),
            error("ALREADY_AUTHENTICATED").id(3).not_fatal(),
        ],
    },
    ends: { "A" => live() },
);

spec!(
    error_auth_timeout,
    "AUTH_TIMEOUT: nothing within `auth_timeout_ms` (5 s). Fatal, retry reconnect, close 4408.",
    |w| {
        w.open("A");
        w.advance(6_000);
    },
    sees: { "A" => [error("AUTH_TIMEOUT").no_id().fatal("reconnect")] },
    ends: { "A" => closed(4408, "AUTH_TIMEOUT").no_session() },
);

spec!(
    error_bad_request_malformed,
    "BAD_REQUEST: a frame that is not a JSON object. Fatal, retry none, close 4400.",
    |w| {
        w.open("A");
        w.send("A", "{\"type\":\"auth\",");
    },
    sees: { "A" => [error("BAD_REQUEST").no_id().fatal("none")] },
    ends: { "A" => closed(4400, "BAD_REQUEST").no_session() },
);

spec!(
    error_bad_request_array,
    "BAD_REQUEST: a JSON array is not a message, even one whose elements line up with the fields of `auth`. No id is echoed. Fatal, close 4400.",
    |w| {
        let t = token(&mut w, "alice-token", "alice", 600, json!({}));
        w.open("A");
        w.send("A", &format!(r#"["auth", 6, "{t}"]"#));
    },
    sees: { "A" => [error("BAD_REQUEST").no_id().fatal("none")] },
    ends: { "A" => closed(4400, "BAD_REQUEST").no_session() },
);

spec!(
    error_bad_request_fields,
    "BAD_REQUEST: an unknown type, or a field of the wrong type. The id is echoed when it can be read; the message never quotes what was sent.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":7,"channel":42}"#);
        w.open("B");
        w.send("B", r#"{"type":"dance","id":3}"#);
    },
    sees: {
        "A" => [authenticated(), error("BAD_REQUEST").id(7).fatal("none")],
        "B" => [error("BAD_REQUEST").id(3).fatal("none")],
    },
    ends: {
        "A" => closed(4400, "BAD_REQUEST").ended(),
        "B" => closed(4400, "BAD_REQUEST").no_session(),
    },
);

spec!(
    error_bad_request_binary,
    "BAD_REQUEST: binary frames are not part of the protocol.",
    |w| {
        alice_live(&mut w, "A");
        w.send_frame("A", Frame::Binary(16));
    },
    sees: { "A" => [authenticated(), error("BAD_REQUEST").no_id().fatal("none")] },
    ends: { "A" => closed(4400, "BAD_REQUEST").ended() },
);

spec!(
    invalid_utf8_closes_1007,
    "A text frame that is not valid UTF-8 is closed 1007.",
    |w| {
        alice_live(&mut w, "A");
        w.send_frame("A", Frame::InvalidUtf8);
    },
    sees: { "A" => [authenticated(), error("BAD_REQUEST").fatal("none")] },
    ends: { "A" => closed(1007, "BAD_REQUEST").ended() },
);

spec!(
    protocol_violation_closes_1002,
    "A frame that breaks RFC 6455 framing (unmasked, a reserved bit, an unknown opcode, an oversized control frame) is BAD_REQUEST, closed 1002.",
    |w| {
        alice_live(&mut w, "A");
        w.send_frame("A", Frame::ProtocolViolation);
    },
    sees: { "A" => [authenticated(), error("BAD_REQUEST").no_id().fatal("none")] },
    ends: { "A" => closed(1002, "BAD_REQUEST").ended() },
);

spec!(
    error_bad_request_data_too_deep,
    "BAD_REQUEST: `data` nested deeper than 64 arrays and objects (`limits.max_json_depth`). The id is echoed. Fatal, close 4400.",
    |w| {
        alice_live(&mut w, "A");
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        w.send(
            "A",
            &format!(r#"{{"type":"publish","id":9,"channel":"general","data":{deep}}}"#),
        );
    },
    sees: { "A" => [authenticated(), error("BAD_REQUEST").id(9).fatal("none")] },
    ends: { "A" => closed(4400, "BAD_REQUEST").ended() },
);

spec!(
    error_message_too_large,
    "MESSAGE_TOO_LARGE: a message over the size limit (64 KiB). Fatal, retry reconnect, close 1009; the session stays resumable.",
    |w| {
        alice_live(&mut w, "A");
        w.send_frame("A", Frame::TooLarge(70_000));
    },
    sees: { "A" => [authenticated(), error("MESSAGE_TOO_LARGE").fatal("reconnect")] },
    ends: { "A" => closed(1009, "MESSAGE_TOO_LARGE").resumable() },
);

spec!(
    error_origin_not_allowed,
    "ORIGIN_NOT_ALLOWED: a browser from an origin outside the allow-list is refused at the upgrade with HTTP 403, never a close.",
    |w| {
        let policy = UpgradePolicy {
            allowed_origins: vec!["https://chat.example".into()],
            allow_query_token: false,
        };
        w.open_upgrade("A", &[("Origin", "https://evil.example")], None, &policy);
        w.open_upgrade("B", &[("Origin", "https://chat.example")], None, &policy);
    },
    never: { "A" => [anything()] },
    ends: { "A" => refused(403), "B" => awaiting_auth() },
);

spec!(
    pipelined_requests_are_answered_in_order,
    "A client may send `auth` and its first requests at once: they are answered in order.",
    |w| {
        let t = token(
            &mut w,
            "alice, 1h, channels general",
            "alice",
            3600,
            json!({"channels": ["general"]}),
        );
        w.open("A");
        w.hold_replies = true;
        auth(&mut w, "A", 1, &t);
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":3,"channel":"general","data":"hi"}"#,
        );
        w.hold_replies = false;
        w.release();
    },
    sees: {
        "A" => [
            authenticated().id(1),
            joined().id(2).channel("general"),
            published().id(3),
            message().channel("general").seq(1),
        ],
    },
    never: { "A" => [error("NOT_AUTHENTICATED")] },
    ends: { "A" => live().channels(["general"]) },
);

spec!(
    requests_queue_behind_a_slow_store_reply,
    "Requests sent while the store is slow to answer an earlier one wait behind it, and are answered in the order sent, each with its own id, once the reply comes.",
    |w| {
        alice_live(&mut w, "A");
        w.note("the store is slow: its replies are held");
        w.hold_replies = true;
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send("A", r#"{"type":"join","id":3,"channel":"team:7"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":4,"channel":"general","data":"hi"}"#,
        );
        w.advance(2_000);
        w.note("the store answers");
        w.hold_replies = false;
        w.release();
    },
    sees: {
        "A" => [
            authenticated().id(1),
            joined().id(2).channel("general"),
            joined().id(3).channel("team:7"),
            published().id(4),
            message().channel("general").seq(1),
        ],
    },
    never: { "A" => [error("RATE_LIMITED"), error("INTERNAL")] },
    ends: { "A" => live().channels(["general", "team:7"]) },
);

// ----- §3 Session lifetime -----------------------------------------------------

spec!(
    expiring_then_session_expired,
    "With a 10-minute token the `expiring` notice comes 60 s before `exp`; without a refresh the session ends at `exp` plus the leeway with SESSION_EXPIRED, close 4401.",
    |w| {
        let t = token(&mut w, "alice, 10min", "alice", 600, json!({}));
        w.show_timers = false;
        w.open("A");
        auth(&mut w, "A", 1, &t);
        w.note("the client answers pings, so only expiry matters");
        for _ in 0..12 {
            w.advance(50_000);
            w.pong("A");
        }
        w.advance(50_000);
    },
    sees: {
        "A" => [
            authenticated(),
            expiring().current().in_ms(60_000),
            error("SESSION_EXPIRED").no_id().fatal("reauth"),
        ],
    },
    ends: { "A" => closed(4401, "SESSION_EXPIRED").ended() },
);

spec!(
    expiring_lead_for_short_tokens,
    "The notice lead is min(refresh_notice_ms, lifetime / 2): a 40 s token gets it after 20 s.",
    |w| {
        let t = token(&mut w, "alice, 40s", "alice", 40, json!({}));
        w.open("A");
        auth(&mut w, "A", 1, &t);
        w.advance(20_000);
    },
    sees: { "A" => [authenticated(), expiring().current().in_ms(20_000)] },
    ends: { "A" => live() },
);

spec!(
    refresh_success,
    "A refresh with a new token of the same `sub` moves the expiry; the `expiring` notice is armed again for the new token.",
    |w| {
        let t1 = token(&mut w, "alice, 2min", "alice", 120, json!({}));
        let t2 = token(&mut w, "alice, 5min", "alice", 300, json!({}));
        w.show_timers = false;
        w.open("A");
        auth(&mut w, "A", 1, &t1);
        w.note("the client answers pings, so only the token's expiry matters");
        w.advance(50_000);
        w.pong("A");
        w.advance(10_000);
        w.send(
            "A",
            &format!(r#"{{"type":"refresh","id":7,"token":"{t2}"}}"#),
        );
        w.note("the old token's end (+120s, +150s with the leeway) passes unnoticed");
        for _ in 0..3 {
            w.advance(50_000);
            w.pong("A");
        }
        w.note("the notice comes 60 s before the new token's exp");
        w.advance(30_000);
    },
    sees: {
        "A" => [
            authenticated().id(1),
            expiring().current().in_ms(60_000),
            refreshed().id(7).later(),
            expiring().current().in_ms(60_000),
        ],
    },
    never: { "A" => [error("SESSION_EXPIRED"), error("IDLE_TIMEOUT")] },
    ends: { "A" => live().token_exp(300) },
);

spec!(
    refresh_cycle,
    "The central flow: each `expiring` notice is answered with a `refresh`, whose `refreshed` carries a later `expires_at` and arms the next notice; the session outlives every token it used.",
    |w| {
        let first = token(&mut w, "alice, exp +2min", "alice", 120, json!({}));
        w.show_timers = false;
        w.open("A");
        auth(&mut w, "A", 1, &first);
        w.note("each token lasts 2 minutes; the client answers pings and refreshes at each notice");
        for (id, exp_s) in [(2, 180), (3, 240), (4, 300)] {
            w.advance(30_000);
            w.pong("A");
            w.advance(30_000);
            let label = format!("alice, exp +{}min", exp_s / 60);
            let next = token(&mut w, &label, "alice", exp_s, json!({}));
            w.send(
                "A",
                &format!(r#"{{"type":"refresh","id":{id},"token":"{next}"}}"#),
            );
        }
        w.advance(30_000);
        w.pong("A");
        w.advance(30_000);
    },
    sees: {
        "A" => [
            authenticated().id(1),
            expiring().current().in_ms(60_000),
            refreshed().id(2).later(),
            expiring().current().in_ms(60_000),
            refreshed().id(3).later(),
            expiring().current().in_ms(60_000),
            refreshed().id(4).later(),
            expiring().current().in_ms(60_000),
        ],
    },
    never: { "A" => [error("SESSION_EXPIRED"), error("IDLE_TIMEOUT")] },
    ends: { "A" => live().token_exp(300) },
);

spec!(
    refresh_failures_are_not_fatal,
    "While the current token is valid a failed refresh is a non-fatal error and the session keeps its expiry: SUBJECT_MISMATCH, TOKEN_EXPIRED, INVALID_TOKEN, AUTH_FAILED, TOKEN_REVOKED, TOKEN_NOT_YET_VALID.",
    |w| {
        alice_live(&mut w, "A");
        let bob = token(&mut w, "bob, 1h", "bob", 3600, json!({}));
        let expired = token(&mut w, "alice, expired", "alice", -100, json!({}));
        let forged = sign_hs256(OTHER_SECRET, &json!({"sub": "alice", "exp": T0_S + 3600}));
        w.label(&forged, "alice, signed with another key");
        let revoked = token(
            &mut w,
            "alice, jti t-r",
            "alice",
            3600,
            json!({"jti": "t-r"}),
        );
        let future = token(
            &mut w,
            "alice, iat in 1h",
            "alice",
            7200,
            json!({"iat": T0_S + 3600}),
        );
        w.revoke(Revocation::Token { jti: "t-r".into() });
        for (id, t) in [
            (2, &bob),
            (3, &expired),
            (5, &forged),
            (6, &revoked),
            (7, &future),
        ] {
            w.send(
                "A",
                &format!(r#"{{"type":"refresh","id":{id},"token":"{t}"}}"#),
            );
        }
        w.send("A", r#"{"type":"refresh","id":4,"token":"garbage"}"#);
    },
    sees: {
        "A" => [
            authenticated(),
            error("SUBJECT_MISMATCH").id(2).not_fatal(),
            error("TOKEN_EXPIRED").id(3).not_fatal(),
            error("AUTH_FAILED").id(5).not_fatal(),
            error("TOKEN_REVOKED").id(6).not_fatal(),
            error("TOKEN_NOT_YET_VALID").id(7).not_fatal(),
            error("INVALID_TOKEN").id(4).not_fatal(),
        ],
    },
    never: { "A" => [refreshed()] },
    ends: { "A" => live().token_exp(3600) },
);

spec!(
    refresh_narrows_channels,
    "A refreshed token's claims replace the old ones: channels it no longer allows are left, each with a `left` and reason FORBIDDEN after `refreshed`.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send("A", r#"{"type":"join","id":3,"channel":"team:42"}"#);
        let narrower = token(
            &mut w,
            "alice, 1h, channels general",
            "alice",
            3600,
            json!({"channels": ["general"]}),
        );
        w.send(
            "A",
            &format!(r#"{{"type":"refresh","id":4,"token":"{narrower}"}}"#),
        );
    },
    sees: {
        "A" => [
            joined().id(2),
            joined().id(3),
            refreshed().id(4),
            left().no_id().channel("team:42").reason("FORBIDDEN"),
        ],
    },
    ends: { "A" => live().channels(["general"]) },
);

spec!(
    error_idle_timeout,
    "IDLE_TIMEOUT: pings go out every 25 s; a client that sends nothing, pongs included, for 60 s is closed 4408 and its session stays resumable.",
    |w| {
        alice_live(&mut w, "A");
        w.advance(30_000);
        w.pong("A");
        w.advance(61_000);
    },
    sees: { "A" => [authenticated(), error("IDLE_TIMEOUT").no_id().fatal("reconnect")] },
    ends: { "A" => closed(4408, "IDLE_TIMEOUT").resumable() },
);

spec!(
    frame_flood_ends_the_connection,
    "Every frame counts against a budget of 2000 at once, then 1000 a second, pings and continuation frames included (neither carries a message the rate limit would see): past it the connection ends RATE_LIMITED, closed 4429 once authenticated and 1008 before.",
    |w| {
        alice_live(&mut w, "A");
        w.pings("A", 1_500);
        w.advance(1_000);
        w.pings("A", 1_400);
        w.send("A", r#"{"type":"ping","id":2}"#);
        w.pings("A", 1_001);
        w.open("B");
        w.continuations("B", 2_001);
    },
    sees: {
        "A" => [authenticated(), pong().id(2), error("RATE_LIMITED").no_id()],
        "B" => [error("RATE_LIMITED").no_id()],
    },
    ends: {
        "A" => closed(4429, "RATE_LIMITED").resumable(),
        "B" => closed(1008, "RATE_LIMITED").no_session(),
    },
);

spec!(
    app_ping_keeps_a_browser_connection_alive,
    "A browser cannot see WebSocket pings: its `ping` message is answered `pong` with the same id and counts as activity, so a client that only pings is not closed IDLE_TIMEOUT.",
    |w| {
        alice_live(&mut w, "A");
        for id in 2..5 {
            w.advance(40_000);
            w.send("A", &format!(r#"{{"type":"ping","id":{id}}}"#));
        }
    },
    sees: { "A" => [authenticated(), pong().id(2), pong().id(3), pong().id(4)] },
    never: { "A" => [error("IDLE_TIMEOUT")] },
    ends: { "A" => live() },
);

spec!(
    app_ping_is_answered_behind_a_pending_request,
    "A `ping` measures the connection, not the store: while a `join` waits for a slow store its `pong` comes at once, before `joined`. Before `auth` a `ping` is NOT_AUTHENTICATED like any request.",
    |w| {
        alice_live(&mut w, "A");
        w.hold_replies = true;
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send("A", r#"{"type":"ping","id":3}"#);
        w.hold_replies = false;
        w.release();
        w.open("B");
        w.send("B", r#"{"type":"ping","id":1}"#);
    },
    sees: {
        "A" => [pong().id(3), joined().id(2)],
        "B" => [error("NOT_AUTHENTICATED").id(1).fatal("none")],
    },
    never: { "B" => [pong()] },
    ends: {
        "A" => live().channels(["general"]),
        "B" => closed(4401, "NOT_AUTHENTICATED").no_session(),
    },
);

spec!(
    logout_ends_the_session,
    "`logout` ends the session for good and closes 1000 with no other reply; the resume token is useless afterwards.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"logout","id":9}"#);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    },
    sees: { "B" => [error("SESSION_NOT_FOUND").id(1).fatal("reauth")] },
    never: { "A" => [reply_to(9)] },
    ends: {
        "A" => closed(1000, "logout").ended(),
        "B" => closed(4401, "SESSION_NOT_FOUND").no_session(),
    },
);

spec!(
    error_session_replaced_evict_oldest,
    "SESSION_REPLACED: with max_sessions_per_user = 1 and policy evict_oldest, a second login closes the first connection with 4409.",
    world_with(
        SessionConfig::default(),
        StoreSettings {
            max_sessions_per_user: Some(1),
            limit_policy: LimitPolicy::EvictOldest,
            ..StoreSettings::default()
        }
    ),
    |w| {
        let t = alice_live(&mut w, "A");
        w.open("B");
        auth(&mut w, "B", 1, &t);
    },
    sees: {
        "A" => [authenticated(), error("SESSION_REPLACED").no_id().fatal("none")],
        "B" => [authenticated().id(1)],
    },
    ends: {
        "A" => closed(4409, "SESSION_REPLACED").taken_over(),
        "B" => live(),
    },
);

spec!(
    error_too_many_sessions_reject_new,
    "TOO_MANY_SESSIONS: with policy reject_new the new connection is refused, close 4429, and the old one lives on.",
    world_with(
        SessionConfig::default(),
        StoreSettings {
            max_sessions_per_user: Some(1),
            limit_policy: LimitPolicy::RejectNew,
            ..StoreSettings::default()
        }
    ),
    |w| {
        let t = alice_live(&mut w, "A");
        w.open("B");
        auth(&mut w, "B", 1, &t);
    },
    sees: { "B" => [error("TOO_MANY_SESSIONS").id(1).fatal("none")] },
    never: { "A" => [error("TOO_MANY_SESSIONS")] },
    ends: {
        "A" => live(),
        "B" => closed(4429, "TOO_MANY_SESSIONS").no_session(),
    },
);

spec!(
    error_session_revoked,
    "SESSION_REVOKED: an operator revokes one session; its connection gets the error and close 4403, and it cannot be resumed.",
    |w| {
        alice_live(&mut w, "A");
        w.revoke(Revocation::Session {
            session_id: "s_1".into(),
        });
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    },
    sees: {
        "A" => [authenticated(), error("SESSION_REVOKED").no_id().fatal("none")],
        "B" => [error("SESSION_NOT_FOUND").id(1).fatal("reauth")],
    },
    ends: {
        "A" => closed(4403, "SESSION_REVOKED").ended(),
        "B" => closed(4401, "SESSION_NOT_FOUND").no_session(),
    },
);

spec!(
    revoke_user_refuses_older_tokens_only,
    "Revoking a user closes every live session of that user with TOKEN_REVOKED and refuses tokens issued at or before the revocation; a token issued later is accepted.",
    |w| {
        alice_live(&mut w, "A");
        let second = token(
            &mut w,
            "alice, 1h, jti t-alice-2",
            "alice",
            3600,
            json!({"jti": "t-alice-2"}),
        );
        w.open("B");
        auth(&mut w, "B", 1, &second);
        let bob = token(&mut w, "bob, 1h", "bob", 3600, json!({}));
        w.open("C");
        auth(&mut w, "C", 1, &bob);
        w.advance(2_000);
        w.revoke(Revocation::Subject {
            sub: "alice".into(),
            at_s: T0_S + 2,
        });
        let old = token(&mut w, "alice, issued at start", "alice", 3600, json!({}));
        w.open("D");
        auth(&mut w, "D", 1, &old);
        w.advance(1_000);
        let newer = json!({"sub": "alice", "exp": T0_S + 3600, "iat": T0_S + 3});
        let fresh = sign_hs256(SECRET, &newer);
        w.label(&fresh, "alice, issued after the revocation");
        w.open("E");
        auth(&mut w, "E", 1, &fresh);
    },
    sees: {
        "A" => [error("TOKEN_REVOKED").no_id().fatal("none")],
        "B" => [error("TOKEN_REVOKED").no_id().fatal("none")],
        "D" => [error("TOKEN_REVOKED").id(1).fatal("none")],
        "E" => [authenticated().id(1)],
    },
    never: { "C" => [error("TOKEN_REVOKED")] },
    ends: {
        "A" => closed(4403, "TOKEN_REVOKED").ended(),
        "B" => closed(4403, "TOKEN_REVOKED").ended(),
        "C" => live(),
        "D" => closed(4403, "TOKEN_REVOKED").no_session(),
        "E" => live(),
    },
);

spec!(
    revoke_token_by_jti,
    "Revoking a token by `jti` closes the connections using it (4403) and leaves others alone.",
    |w| {
        alice_live(&mut w, "A");
        let other = token(
            &mut w,
            "alice, jti t-2",
            "alice",
            3600,
            json!({"jti": "t-2"}),
        );
        w.open("B");
        auth(&mut w, "B", 1, &other);
        w.revoke(Revocation::Token {
            jti: "t-alice-1".into(),
        });
    },
    sees: { "A" => [error("TOKEN_REVOKED").no_id().fatal("none")] },
    never: { "B" => [error("TOKEN_REVOKED")] },
    ends: {
        "A" => closed(4403, "TOKEN_REVOKED").ended(),
        "B" => live(),
    },
);

// ----- §4 Reconnect and resume -------------------------------------------------

spec!(
    resume_with_replay,
    "After a TCP drop the session stays resumable: the client resumes with its last seen seq and gets the missed messages in order, with a new resume token.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.publish_external("general", "bob", r#"{"text":"one"}"#);
        w.peer_close("A", PeerClose::Lost);
        w.advance(2_000);
        w.publish_external("general", "bob", r#"{"text":"two"}"#);
        w.publish_external("general", "bob", r#"{"text":"three"}"#);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":1}"#,
        );
        w.publish_external("general", "bob", r#"{"text":"four"}"#);
    },
    sees: {
        "A" => [message().seq(1)],
        "B" => [
            resumed().id(1).replayed(2).gap(false),
            message().seq(2),
            message().seq(3),
            message().seq(4),
        ],
    },
    never: { "B" => [message().seq(1)] },
    ends: {
        "A" => lost().resumable(),
        "B" => live().channels(["general"]),
    },
);

/// `alice_live` on a named node of a two-node world.
fn alice_live_on(w: &mut World, conn: &str, node: &str) {
    let t = token(
        w,
        "alice, 1h, channels general team:*",
        "alice",
        3600,
        json!({"jti": "t-alice-1", "channels": ["general", "team:*"]}),
    );
    w.open_on(conn, node);
    auth(w, conn, 1, &t);
}

spec!(
    resume_on_the_other_node,
    "A session outlives its node's socket: after a drop on node-1 the client resumes on node-2, which shares the store, and gets what it missed in order, then live messages.",
    |w| {
        alice_live_on(&mut w, "A", "node-1");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.publish_external("general", "bob", r#"{"text":"one"}"#);
        w.peer_close("A", PeerClose::Lost);
        w.publish_external("general", "bob", r#"{"text":"two"}"#);
        w.open_on("B", "node-2");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":1}"#,
        );
        w.publish_external("general", "bob", r#"{"text":"three"}"#);
    },
    sees: {
        "A" => [authenticated().id(1), message().seq(1)],
        "B" => [resumed().id(1).replayed(1).gap(false), message().seq(2), message().seq(3)],
    },
    never: { "B" => [message().seq(1)] },
    ends: {
        "A" => lost().resumable(),
        "B" => live().channels(["general"]),
    },
);

spec!(
    takeover_from_the_other_node,
    "A half-open socket on node-1 is taken over by a resume on node-2: the store tells node-1, whose socket is closed SESSION_REPLACED (4409), and the session lives on node-2.",
    |w| {
        alice_live_on(&mut w, "A", "node-1");
        w.note("node-1 still holds A's socket: the client cannot tell it is gone");
        w.open_on("B", "node-2");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":0}"#,
        );
    },
    sees: {
        "A" => [authenticated().id(1), error("SESSION_REPLACED").no_id().fatal("none")],
        "B" => [resumed().id(1).replayed(0)],
    },
    ends: {
        "A" => closed(4409, "SESSION_REPLACED").taken_over(),
        "B" => live(),
    },
);

spec!(
    revocation_from_the_other_node,
    "A user revoked through node-2's admin API is closed TOKEN_REVOKED (4403) on node-1 at once, and the session can be resumed on no node.",
    |w| {
        alice_live_on(&mut w, "A", "node-1");
        w.note("the operator calls POST /admin/revoke on node-2");
        w.revoke(Revocation::Subject {
            sub: "alice".into(),
            at_s: T0_S,
        });
        w.open_on("B", "node-2");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":0}"#,
        );
    },
    sees: {
        "A" => [authenticated().id(1), error("TOKEN_REVOKED").no_id().fatal("none")],
        "B" => [error("SESSION_NOT_FOUND").id(1).fatal("reauth")],
    },
    never: { "B" => [resumed()] },
    ends: {
        "A" => closed(4403, "TOKEN_REVOKED").ended(),
        "B" => closed(4401, "SESSION_NOT_FOUND").no_session(),
    },
);

spec!(
    notices_lost_close_resumably,
    "A node that may have missed store notices (its stream was trimmed or wiped) closes its sockets INTERNAL (1011) with the session resumable: the client resumes elsewhere and is checked again.",
    |w| {
        alice_live_on(&mut w, "A", "node-1");
        w.lose_notices("node-1");
        w.open_on("B", "node-2");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":0}"#,
        );
    },
    sees: {
        "A" => [authenticated().id(1), error("INTERNAL").no_id().fatal("reconnect")],
        "B" => [resumed().id(1)],
    },
    ends: {
        "A" => closed(1011, "INTERNAL").resumable(),
        "B" => live(),
    },
);

spec!(
    resume_with_gap,
    "When more messages were missed than the buffer keeps (resume_buffer = 2 here), the oldest are gone and `gap` is true.",
    world_with(
        SessionConfig::default(),
        StoreSettings {
            resume_buffer: 2,
            ..StoreSettings::default()
        }
    ),
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.peer_close("A", PeerClose::Closed(Some(1001)));
        for n in 1..=4 {
            w.publish_external("general", "bob", &format!(r#"{{"n":{n}}}"#));
        }
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":0}"#,
        );
    },
    sees: {
        "B" => [
            resumed().id(1).replayed(2).gap(true),
            message().seq(3),
            message().seq(4),
        ],
    },
    never: { "B" => [message().seq(1), message().seq(2)] },
    ends: {
        "A" => client_closed(1001).resumable(),
        "B" => live().channels(["general"]),
    },
);

spec!(
    resume_with_a_last_seq_beyond_what_was_sent,
    "A `last_seq` larger than anything the session received replays nothing (gap false) and does not hold back later messages.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.publish_external("general", "bob", r#"{"n":1}"#);
        w.peer_close("A", PeerClose::Lost);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":50}"#,
        );
        w.publish_external("general", "bob", r#"{"n":2}"#);
    },
    sees: { "B" => [resumed().id(1).replayed(0).gap(false), message().seq(2)] },
    ends: {
        "A" => lost().resumable(),
        "B" => live().channels(["general"]),
    },
);

spec!(
    error_session_not_found_token_reuse,
    "SESSION_NOT_FOUND: a resume token is single-use; the second use fails, fatal, close 4401.",
    |w| {
        alice_live(&mut w, "A");
        w.peer_close("A", PeerClose::Lost);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
        w.peer_close("B", PeerClose::Lost);
        w.open("C");
        w.send(
            "C",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    },
    sees: {
        "B" => [resumed().id(1)],
        "C" => [error("SESSION_NOT_FOUND").id(1).fatal("reauth")],
    },
    ends: {
        "A" => lost().resumable(),
        "B" => lost().resumable(),
        "C" => closed(4401, "SESSION_NOT_FOUND").no_session(),
    },
);

spec!(
    resume_after_grace_fails,
    "A resume after resume_grace_ms (30 s) finds nothing: SESSION_NOT_FOUND.",
    |w| {
        alice_live(&mut w, "A");
        w.peer_close("A", PeerClose::Lost);
        w.advance(31_000);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    },
    sees: { "B" => [error("SESSION_NOT_FOUND").id(1).fatal("reauth")] },
    ends: {
        "A" => lost().resumable(),
        "B" => closed(4401, "SESSION_NOT_FOUND").no_session(),
    },
);

spec!(
    resume_takes_over_a_half_open_connection,
    "If the server still holds a connection for the session (a half-open socket), the resume wins and the old connection gets SESSION_REPLACED, close 4409.",
    |w| {
        alice_live(&mut w, "A");
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    },
    sees: {
        "A" => [authenticated(), error("SESSION_REPLACED").no_id().fatal("none")],
        "B" => [resumed().id(1)],
    },
    ends: {
        "A" => closed(4409, "SESSION_REPLACED").taken_over(),
        "B" => live(),
    },
);

spec!(
    resume_sends_a_missed_expiring_notice,
    "If the `expiring` notice time passed while the client was away, `expiring` follows `resumed` at once.",
    |w| {
        let t = token(&mut w, "alice, 2min", "alice", 120, json!({}));
        w.open("A");
        auth(&mut w, "A", 1, &t);
        w.advance(50_000);
        w.peer_close("A", PeerClose::Lost);
        w.advance(15_000);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    },
    sees: { "B" => [resumed().id(1), expiring().current()] },
    never: { "A" => [expiring()] },
    ends: {
        "A" => lost().resumable(),
        "B" => live(),
    },
);

spec!(
    resume_of_an_expired_session_fails,
    "A resume is a full re-authorization: when the session's token has expired meanwhile, SESSION_NOT_FOUND.",
    |w| {
        let t = token(&mut w, "alice, 20s", "alice", 20, json!({}));
        w.open("A");
        auth(&mut w, "A", 1, &t);
        w.advance(25_000);
        w.peer_close("A", PeerClose::Lost);
        w.note("the token ends at +50s (exp plus the 30 s leeway); the session stays resumable until +55s");
        w.advance(26_000);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    },
    sees: { "B" => [error("SESSION_NOT_FOUND").id(1).fatal("reauth")] },
    never: { "B" => [resumed()] },
    ends: {
        "A" => lost().resumable(),
        "B" => closed(4401, "SESSION_NOT_FOUND").no_session(),
    },
);

spec!(
    close_1000_ends_the_session,
    "A client close with 1000 ends the session for good; any other close keeps it resumable.",
    |w| {
        let t = alice_live(&mut w, "A");
        w.peer_close("A", PeerClose::Closed(Some(1000)));
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
        w.note("any other code, here 1001 (a browser leaving the page), keeps the session");
        w.open("C");
        auth(&mut w, "C", 1, &t);
        w.peer_close("C", PeerClose::Closed(Some(1001)));
        w.open("D");
        w.send(
            "D",
            r#"{"type":"resume","id":1,"session_id":"s_3","resume_token":"r_4"}"#,
        );
    },
    sees: {
        "B" => [error("SESSION_NOT_FOUND").id(1).fatal("reauth")],
        "D" => [resumed().id(1)],
    },
    ends: {
        "A" => client_closed(1000).ended(),
        "B" => closed(4401, "SESSION_NOT_FOUND").no_session(),
        "C" => client_closed(1001).resumable(),
        "D" => live(),
    },
);

spec!(
    shutdown_then_resume,
    "A server shutdown closes 1001 and keeps the session resumable.",
    |w| {
        alice_live(&mut w, "A");
        w.feed("A", wsauth_core::Input::Shutdown);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2"}"#,
        );
    },
    sees: { "B" => [resumed().id(1)] },
    ends: {
        "A" => closed(1001, "server shutting down").resumable(),
        "B" => live(),
    },
);

// ----- §5 Errors that the driver raises ----------------------------------------

spec!(
    error_rate_limited,
    "RATE_LIMITED: more than the burst (200 frames here at once, refilled 100/s). Fatal, retry reconnect, close 4429.",
    |w| {
        alice_live(&mut w, "A");
        w.record_transcript = false;
        for n in 0..199 {
            w.send(
                "A",
                &format!(r#"{{"type":"leave","id":{},"channel":"x"}}"#, n + 10),
            );
        }
        w.record_transcript = true;
        w.note("199 leave requests later (200 frames with the auth), one more:");
        w.send("A", r#"{"type":"leave","id":999,"channel":"x"}"#);
    },
    sees: { "A" => [authenticated(), error("RATE_LIMITED").no_id().fatal("reconnect")] },
    never: { "A" => [reply_to(999)] },
    ends: { "A" => closed(4429, "RATE_LIMITED").resumable() },
);

spec!(
    error_slow_consumer,
    "SLOW_CONSUMER: the driver reports that the client's outbound queue is full. Fatal, retry reconnect, close 1013.",
    |w| {
        alice_live(&mut w, "A");
        w.feed("A", wsauth_core::Input::OutboundFull);
    },
    sees: { "A" => [authenticated(), error("SLOW_CONSUMER").no_id().fatal("reconnect")] },
    ends: { "A" => closed(1013, "SLOW_CONSUMER").resumable() },
);

spec!(
    error_internal_at_auth,
    "INTERNAL: the store cannot be reached during authentication; fail closed, close 1011.",
    |w| {
        let t = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
        w.store_available = false;
        w.open("A");
        auth(&mut w, "A", 1, &t);
    },
    sees: { "A" => [error("INTERNAL").id(1).fatal("reconnect")] },
    never: { "A" => [authenticated()] },
    ends: { "A" => closed(1011, "INTERNAL").no_session() },
);

spec!(
    internal_at_resume_then_retry,
    "INTERNAL during a resume: the store cannot be reached, fail closed with close 1011 and retry reconnect. The session is untouched: once the store is back, a reconnect resumes it with the same resume token and replays what was missed.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.peer_close("A", PeerClose::Lost);
        w.publish_external("general", "bob", r#"{"text":"while you were away"}"#);
        w.advance(1_000);
        w.store_available = false;
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":0}"#,
        );
        w.note("retry reconnect: the client backs off and tries again; the store is still down");
        w.advance(2_000);
        w.open("C");
        w.send(
            "C",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":0}"#,
        );
        w.advance(4_000);
        w.store_available = true;
        w.note("the store is back");
        w.open("D");
        w.send(
            "D",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":0}"#,
        );
    },
    sees: {
        "B" => [error("INTERNAL").id(1).fatal("reconnect")],
        "C" => [error("INTERNAL").id(1).fatal("reconnect")],
        "D" => [resumed().id(1).replayed(1).gap(false), message().seq(1)],
    },
    never: { "B" => [resumed()], "C" => [resumed()] },
    ends: {
        "A" => lost().resumable(),
        "B" => closed(1011, "INTERNAL").no_session(),
        "C" => closed(1011, "INTERNAL").no_session(),
        "D" => live().channels(["general"]),
    },
);

spec!(
    internal_on_a_live_session_is_not_fatal,
    "A store fault while answering a live session's request fails that request only.",
    |w| {
        alice_live(&mut w, "A");
        w.store_available = false;
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":3,"channel":"general","data":1}"#,
        );
        w.store_available = true;
        w.send("A", r#"{"type":"join","id":4,"channel":"general"}"#);
    },
    sees: {
        "A" => [
            authenticated(),
            error("INTERNAL").id(2).not_fatal(),
            error("INTERNAL").id(3).not_fatal(),
            joined().id(4),
        ],
    },
    ends: { "A" => live().channels(["general"]) },
);

// ----- §6 Channels -------------------------------------------------------------

spec!(
    channels_join_publish_leave,
    "Join, publish and leave; every session joined to the channel gets `message` with its own `seq`, the sender too when it joined.",
    |w| {
        alice_live(&mut w, "A");
        let bob = token(
            &mut w,
            "bob, 1h, channels general",
            "bob",
            3600,
            json!({"channels": ["general"]}),
        );
        w.open("B");
        auth(&mut w, "B", 1, &bob);
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send("B", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":3,"channel":"general","data":{"text":"hi bob"}}"#,
        );
        w.send(
            "B",
            r#"{"type":"publish","id":3,"channel":"general","data":{"text":"hi alice"}}"#,
        );
        w.send("A", r#"{"type":"leave","id":4,"channel":"general"}"#);
        w.send(
            "B",
            r#"{"type":"publish","id":4,"channel":"general","data":{"text":"gone?"}}"#,
        );
    },
    sees: {
        "A" => [
            joined().id(2),
            published().id(3),
            message().seq(1),
            message().seq(2),
            left().id(4).channel("general"),
        ],
        "B" => [
            joined().id(2),
            message().seq(1),
            published().id(3),
            message().seq(2),
            published().id(4),
            message().seq(3),
        ],
    },
    never: { "A" => [message().seq(3)] },
    ends: {
        "A" => live().channels([]),
        "B" => live().channels(["general"]),
    },
);

spec!(
    error_forbidden_channels,
    "FORBIDDEN: a channel the token's `channels` claim does not allow, for join or publish (not fatal). `user:{sub}` is always allowed; publishing needs no join.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"admin"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":4,"channel":"team","data":1}"#,
        );
        w.send("A", r#"{"type":"join","id":5,"channel":"user:bob"}"#);
        w.send("A", r#"{"type":"join","id":6,"channel":"user:alice"}"#);
        w.send(
            "A",
            r#"{"type":"publish","id":7,"channel":"team:7","data":1}"#,
        );
    },
    sees: {
        "A" => [
            error("FORBIDDEN").id(2).not_fatal(),
            error("FORBIDDEN").id(4).not_fatal(),
            error("FORBIDDEN").id(5).not_fatal(),
            joined().id(6).channel("user:alice"),
            published().id(7),
        ],
    },
    ends: { "A" => live().channels(["user:alice"]) },
);

spec!(
    channel_patterns,
    "Patterns: exact names, a trailing `*` for one or more characters, `{sub}` replaced by the subject and matched literally; a `*` elsewhere grants nothing.",
    |w| {
        let t = token(
            &mut w,
            "carol*, channels dm:{sub}:* room:{sub} x*y",
            "carol*",
            3600,
            json!({"channels": ["dm:{sub}:*", "room:{sub}", "x*y"]}),
        );
        w.open("A");
        auth(&mut w, "A", 1, &t);
        for (id, channel) in (2..).zip([
            "dm:carol*:dave",
            "dm:carol*:",
            "dm:carolX:dave",
            "room:carol*",
            "room:carolX",
            "x*y",
            "xay",
            "user:carol*",
        ]) {
            w.send(
                "A",
                &format!(r#"{{"type":"join","id":{id},"channel":"{channel}"}}"#),
            );
        }
    },
    sees: {
        "A" => [
            joined().id(2),
            error("FORBIDDEN").id(3),
            error("FORBIDDEN").id(4),
            joined().id(5),
            error("FORBIDDEN").id(6),
            error("FORBIDDEN").id(7),
            error("FORBIDDEN").id(8),
            joined().id(9),
        ],
    },
    ends: { "A" => live().channels(["dm:carol*:dave", "room:carol*", "user:carol*"]) },
);

/// The expectations bite: the recording `refresh_success` had before issue 11 (the
/// client idles, is closed IDLE_TIMEOUT, and its refresh goes to a closed
/// connection) fails what that transcript now states, each with its reason.
#[test]
fn expectations_fail_when_the_recording_does_not_show_them() {
    use expect::*;
    let mut w = Spec::new(world());
    let t1 = token(&mut w, "alice, 2min", "alice", 120, json!({}));
    let t2 = token(&mut w, "alice, 1h", "alice", 3600, json!({}));
    w.open("A");
    auth(&mut w, "A", 1, &t1);
    w.advance(60_000);
    w.send(
        "A",
        &format!(r#"{{"type":"refresh","id":7,"token":"{t2}"}}"#),
    );
    let mut expects = Expects::default();
    expects.sees("A", vec![authenticated().id(1), refreshed().id(7).later()]);
    expects.never("A", vec![error("IDLE_TIMEOUT")]);
    expects.ends("A", live().token_exp(3600));
    let failures = expects
        .check(&mut w)
        .expect_err("the old recording must fail its title's expectations");
    assert_eq!(failures.len(), 3, "{failures:#?}");
    assert!(
        failures[0].starts_with(
            "A: expected refreshed (id 7, expires_at later than before), but no message from #2 on matches"
        ),
        "{failures:#?}"
    );
    assert!(
        failures[1]
            .starts_with("A: expected never error IDLE_TIMEOUT, but got {\"type\":\"error\""),
        "{failures:#?}"
    );
    assert_eq!(
        failures[2],
        "A: expected to end live, token exp at +3600s, but the server closed it 4408 IDLE_TIMEOUT"
    );
}

/// The other ways a recording can fail its expectations: a step out of order, an
/// `expires_at` that did not move, the wrong channels, a close that does not say what
/// became of the session, a connection without `ends`.
#[test]
fn expectations_report_order_expiry_channels_fate_and_missing_ends() {
    use expect::*;
    let mut w = Spec::new(world());
    let t = alice_live(&mut w, "A");
    w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
    w.send(
        "A",
        &format!(r#"{{"type":"refresh","id":3,"token":"{t}"}}"#),
    );
    w.open("B");
    w.advance(6_000);
    w.open("C");
    let mut expects = Expects::default();
    expects.sees("A", vec![joined().id(2), authenticated()]);
    expects.sees("A", vec![refreshed().id(3).later()]);
    expects.ends("A", live().channels(["team:1"]));
    expects.ends("B", closed(4408, "AUTH_TIMEOUT"));
    let failures = expects
        .check(&mut w)
        .expect_err("every one of these is wrong");
    let expected = [
        "C: no `ends` expectation for this connection",
        "A: expected authenticated, but no message from #3 on matches: [{\"type\":\"refreshed\"",
        "A: expected refreshed (id 3, expires_at later than before), but no message from #1 on matches",
        "A: expected to end live, in team:1, but its channels are [\"general\"]",
        "B: expected to end closed by the server: 4408 AUTH_TIMEOUT, but the expectation does not say what became of the session",
    ];
    assert_eq!(failures.len(), expected.len(), "{failures:#?}");
    for (got, want) in failures.iter().zip(expected) {
        assert!(got.starts_with(want), "{got}\ndoes not start with\n{want}");
    }
}

// ----- §8 Application calls ----------------------------------------------------

/// The application of the §8 transcripts: `chat.send` answers with who called,
/// `chat.delete` refuses with details, `report.huge` refuses with details over
/// the bound, `billing.charge` finds its backend down, `slow.op` never answers in
/// time (its result is held), and any other method is unknown.
fn app() -> wsauth_sim::CallFn {
    use wsauth_core::{CallResult, Payload};
    std::sync::Arc::new(|method, data, ctx| {
        let json = |v: serde_json::Value| Payload::from_json(&v.to_string()).expect("json");
        match method {
            "chat.send" => CallResult::Ok(json(json!({
                "sent": serde_json::from_str::<serde_json::Value>(data.get()).ok(),
                "by": ctx.sub,
                "session": ctx.session_id,
                "team": ctx.claims.extra.get("team"),
            }))),
            "chat.delete" => CallResult::AppError {
                message: "not your message".into(),
                details: Some(json(json!({"owner": "bob"}))),
            },
            "report.huge" => CallResult::AppError {
                message: "report too large".into(),
                details: Some(json(json!({"rows": "x".repeat(5000)}))),
            },
            "billing.charge" => CallResult::Unavailable,
            _ => CallResult::NotFound,
        }
    })
}

fn world_with_app() -> World {
    let mut w = world();
    w.set_call_handler(app());
    w
}

/// Opens `conn` as alice of team red (1 h token, jti `t-alice-rpc`).
fn alice_with_team(w: &mut World, conn: &str) {
    let t = token(
        w,
        "alice, 1h, team red",
        "alice",
        3600,
        json!({"jti": "t-alice-rpc", "team": "red", "channels": ["general"]}),
    );
    w.open(conn);
    auth(w, conn, 1, &t);
}

spec!(
    rpc_success_with_context,
    "An authenticated `rpc` reaches the application's handler with the session's context (`sub`, session id, verified claims, custom ones included); its answer comes back as `rpc_result` with the call's id. `data` absent is `null`.",
    world_with_app(),
    |w| {
        alice_with_team(&mut w, "A");
        w.send("A", r#"{"type":"rpc","id":5,"method":"chat.send","data":{"text":"hi"}}"#);
        w.send("A", r#"{"type":"rpc","id":6,"method":"chat.send"}"#);
    },
    sees: { "A" => [authenticated().id(1), rpc_result().id(5), rpc_result().id(6)] },
    never: { "A" => [error("METHOD_NOT_FOUND")] },
    ends: { "A" => live() },
);

spec!(
    error_rpc_bad_request,
    "BAD_REQUEST for an `rpc`: a `method` outside `A-Z a-z 0-9 . _ : / -` (or over 128 bytes), or a missing `id`. Fatal, retry none, close 4400; the reason names the field, never the value.",
    world_with_app(),
    |w| {
        alice_with_team(&mut w, "A");
        w.send("A", r#"{"type":"rpc","id":5,"method":"chat send!","data":1}"#);
        alice_with_team(&mut w, "B");
        w.send("B", r#"{"type":"rpc","method":"chat.send","data":1}"#);
    },
    sees: {
        "A" => [error("BAD_REQUEST").id(5).fatal("none")],
        "B" => [error("BAD_REQUEST").no_id().fatal("none")],
    },
    never: { "A" => [rpc_result()], "B" => [rpc_result()] },
    ends: {
        "A" => closed(4400, "BAD_REQUEST").ended(),
        "B" => closed(4400, "BAD_REQUEST").ended(),
    },
);

spec!(
    error_rpc_not_authenticated,
    "NOT_AUTHENTICATED: an `rpc` before `auth`, like any request; the handler is never called. Fatal, retry none, close 4401.",
    world_with_app(),
    |w| {
        w.open("A");
        w.send("A", r#"{"type":"rpc","id":5,"method":"chat.send","data":{}}"#);
    },
    sees: { "A" => [error("NOT_AUTHENTICATED").id(5).fatal("none")] },
    never: { "A" => [rpc_result()] },
    ends: { "A" => closed(4401, "NOT_AUTHENTICATED").no_session() },
);

spec!(
    error_rpc_method_not_found,
    "METHOD_NOT_FOUND: no handler for the method (without any handler, every method). Not fatal: the session goes on.",
    world_with_app(),
    |w| {
        alice_with_team(&mut w, "A");
        w.send("A", r#"{"type":"rpc","id":5,"method":"chat.unknown","data":null}"#);
        w.send("A", r#"{"type":"join","id":6,"channel":"general"}"#);
    },
    sees: { "A" => [error("METHOD_NOT_FOUND").id(5).not_fatal(), joined().id(6)] },
    ends: { "A" => live().channels(["general"]) },
);

spec!(
    error_rpc_app_error,
    "APP_ERROR: the handler refused; `message` and `details` are the application's. Details over 4 KiB (or not an object) are dropped and the message kept. Not fatal.",
    world_with_app(),
    |w| {
        alice_with_team(&mut w, "A");
        w.send("A", r#"{"type":"rpc","id":5,"method":"chat.delete","data":{"msg":"m_9"}}"#);
        w.send("A", r#"{"type":"rpc","id":6,"method":"report.huge","data":null}"#);
    },
    sees: { "A" => [error("APP_ERROR").id(5).not_fatal(), error("APP_ERROR").id(6).not_fatal()] },
    ends: { "A" => live() },
);

spec!(
    error_rpc_unavailable,
    "UNAVAILABLE: the handler's backend is unreachable, or the handler did not answer within `rpc_timeout_ms` (5 s): the call is answered at its deadline and the late result is ignored. Not fatal.",
    world_with_app(),
    |w| {
        alice_with_team(&mut w, "A");
        w.send("A", r#"{"type":"rpc","id":5,"method":"billing.charge","data":{"cents":100}}"#);
        w.hold_calls = true;
        w.send("A", r#"{"type":"rpc","id":6,"method":"chat.send","data":"slow"}"#);
        w.advance(5_000);
        w.release_calls(false);
    },
    sees: { "A" => [error("UNAVAILABLE").id(5).not_fatal(), error("UNAVAILABLE").id(6).not_fatal()] },
    never: { "A" => [rpc_result()] },
    ends: { "A" => live() },
);

spec!(
    error_rpc_busy,
    "BUSY: one call more than `max_rpc_in_flight` (2 here) is refused at once; the calls in flight go on. Not fatal.",
    {
        let mut w = world_with(
            SessionConfig {
                max_rpc_in_flight: 2,
                ..SessionConfig::default()
            },
            StoreSettings::default(),
        );
        w.set_call_handler(app());
        w
    },
    |w| {
        alice_with_team(&mut w, "A");
        w.hold_calls = true;
        w.send("A", r#"{"type":"rpc","id":5,"method":"chat.send","data":1}"#);
        w.send("A", r#"{"type":"rpc","id":6,"method":"chat.send","data":2}"#);
        w.send("A", r#"{"type":"rpc","id":7,"method":"chat.send","data":3}"#);
        w.release_calls(false);
    },
    sees: { "A" => [error("BUSY").id(7).not_fatal(), rpc_result().id(5), rpc_result().id(6)] },
    never: { "A" => [rpc_result().id(7)] },
    ends: { "A" => live() },
);

spec!(
    rpc_results_overtake,
    "Calls run side by side: two results released in reverse order arrive in that order, matched by `id`; a `join` sent while both are pending is answered first, since calls do not take the request slot.",
    world_with_app(),
    |w| {
        alice_with_team(&mut w, "A");
        w.hold_calls = true;
        w.send("A", r#"{"type":"rpc","id":5,"method":"chat.send","data":"first"}"#);
        w.send("A", r#"{"type":"rpc","id":6,"method":"chat.send","data":"second"}"#);
        w.send("A", r#"{"type":"join","id":7,"channel":"general"}"#);
        w.release_calls(true);
    },
    sees: { "A" => [joined().id(7), rpc_result().id(6), rpc_result().id(5)] },
    ends: { "A" => live().channels(["general"]) },
);

spec!(
    rpc_result_after_expiry_is_dropped,
    "A call still in flight when the session expires gets no result: the close wins, and the result the application computes later is dropped.",
    world_with_app(),
    |w| {
        let t = token(&mut w, "alice, 10s", "alice", 10, json!({}));
        w.open("A");
        auth(&mut w, "A", 1, &t);
        w.advance(38_000);
        w.hold_calls = true;
        w.send("A", r#"{"type":"rpc","id":5,"method":"chat.send","data":"late"}"#);
        w.advance(2_500);
        w.release_calls(false);
    },
    sees: { "A" => [error("SESSION_EXPIRED").fatal("reauth")] },
    never: { "A" => [rpc_result(), error("UNAVAILABLE")] },
    ends: { "A" => closed(4401, "SESSION_EXPIRED").ended() },
);

spec!(
    rpc_in_flight_when_revoked,
    "A call in flight when the session is revoked gets no result: the revocation closes the connection (4403) and the late result is dropped.",
    world_with_app(),
    |w| {
        alice_with_team(&mut w, "A");
        w.hold_calls = true;
        w.send("A", r#"{"type":"rpc","id":5,"method":"chat.send","data":"x"}"#);
        w.revoke(Revocation::Token { jti: "t-alice-rpc".into() });
        w.release_calls(false);
    },
    sees: { "A" => [error("TOKEN_REVOKED").fatal("none")] },
    never: { "A" => [rpc_result()] },
    ends: { "A" => closed(4403, "TOKEN_REVOKED").ended() },
);

/// The specification covers every row of the error table.
#[test]
fn every_error_code_has_a_transcript() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/spec");
    let mut all = String::new();
    for entry in std::fs::read_dir(&dir).expect("tests/spec") {
        let path = entry.expect("entry").path();
        all.push_str(&std::fs::read_to_string(path).expect("snapshot"));
    }
    for code in wsauth_core::ErrorCode::ALL {
        assert!(
            all.contains(&format!("\"code\":\"{}\"", code.as_str())),
            "no transcript shows {code}"
        );
    }
}

// ----- §9 The server API: publish and send ---------------------------------------

/// Opens `conn` and authenticates it as bob (1 h token, channel general).
fn bob_live(w: &mut World, conn: &str) {
    let t = token(
        w,
        "bob, 1h, channels general",
        "bob",
        3600,
        json!({"jti": "t-bob-1", "channels": ["general"]}),
    );
    w.open(conn);
    auth(w, conn, 1, &t);
}

spec!(
    server_publish_reaches_joined_sessions,
    "The application publishes to a channel through the server API: every session joined to it gets a `message` with no `from`, numbered in the same `seq` order as users' messages; a session not joined to it gets nothing.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        bob_live(&mut w, "B");
        w.publish_external("general", "carol", r#"{"text":"hi"}"#);
        w.server_publish("general", r#"{"text":"maintenance at 22:00"}"#);
        w.publish_external("general", "carol", r#"{"text":"noted"}"#);
    },
    sees: {
        "A" => [
            message().channel("general").seq(1).by("carol"),
            message().channel("general").seq(2).by_the_server(),
            message().channel("general").seq(3).by("carol"),
        ],
    },
    never: { "B" => [message()] },
    ends: {
        "A" => live().channels(["general"]),
        "B" => live().channels([]),
    },
);

spec!(
    server_send_reaches_a_live_session_that_never_joined_its_user_channel,
    "The application sends to a user through the server API: a live session of that user gets it on `user:<sub>`, with no `from`, though it never joined that channel; sending joins it to nothing.",
    |w| {
        alice_live(&mut w, "A");
        w.send("A", r#"{"type":"join","id":2,"channel":"general"}"#);
        w.publish_external("general", "bob", r#"{"text":"hi"}"#);
        w.server_send("alice", r#"{"notice":"your export is ready"}"#);
    },
    sees: {
        "A" => [
            message().channel("general").seq(1).by("bob"),
            message().channel("user:alice").seq(2).by_the_server(),
        ],
    },
    ends: { "A" => live().channels(["general"]) },
);

spec!(
    server_send_to_a_dropped_session_is_replayed_on_resume,
    "A session whose connection dropped still gets what the server sends to its user while it is resumable: the message waits in its buffer and the resume replays it on `user:<sub>`, with no `from`.",
    |w| {
        alice_live(&mut w, "A");
        w.peer_close("A", PeerClose::Lost);
        w.advance(2_000);
        w.server_send("alice", r#"{"notice":"your export is ready"}"#);
        w.open("B");
        w.send(
            "B",
            r#"{"type":"resume","id":1,"session_id":"s_1","resume_token":"r_2","last_seq":0}"#,
        );
    },
    sees: {
        "B" => [
            resumed().id(1).replayed(1).gap(false),
            message().channel("user:alice").seq(1).by_the_server(),
        ],
    },
    never: { "A" => [message()] },
    ends: {
        "A" => lost().resumable(),
        "B" => live().channels([]),
    },
);

spec!(
    server_send_reaches_only_that_user,
    "The server's send to alice reaches alice's session only: bob's session gets nothing of it, and a send to bob reaches bob's alone, on `user:bob`.",
    |w| {
        alice_live(&mut w, "A");
        bob_live(&mut w, "B");
        w.server_send("alice", r#"{"for":"alice"}"#);
        w.server_send("bob", r#"{"for":"bob"}"#);
    },
    sees: {
        "A" => [message().channel("user:alice").seq(1).by_the_server()],
        "B" => [message().channel("user:bob").seq(1).by_the_server()],
    },
    never: {
        "A" => [message().channel("user:bob")],
        "B" => [message().channel("user:alice")],
    },
    ends: {
        "A" => live().channels([]),
        "B" => live().channels([]),
    },
);
