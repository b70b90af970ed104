//! The in-memory store: one node, everything behind one lock, notices sent after
//! the lock is released.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;

use subtle::ConstantTimeEq;
use wsauth_core::jwt::Claims;
use wsauth_core::rules::{self, LimitDecision, SubEntry};
use wsauth_core::{Delivery, Payload, ResumedSession, Revocation, Secret};

use crate::secret::{hash_resume_token, new_resume_token, new_session_id};
use crate::sync::{Mutex, lock};
use crate::{
    CreateOutcome, Notice, Notify, RefreshOutcome, SessionInfo, Store, StoreError, StoreSettings,
    StoreStats,
};

#[derive(Clone)]
struct Session {
    claims: Arc<Claims>,
    token_hash: [u8; 32],
    epoch: u64,
    /// When the last connection went; `None` while one holds the session.
    detached_at: Option<u64>,
    created_at_ms: u64,
    created_order: u64,
    authorized_at_ms: u64,
    expiring_sent: bool,
    joined: BTreeSet<String>,
    buffer: VecDeque<Delivery>,
    /// The bytes of the data in `buffer`.
    buffer_bytes: usize,
    last_seq: u64,
}

impl Session {
    fn attached(&self) -> bool {
        self.detached_at.is_none()
    }

    fn alive(&self, now: u64, settings: &StoreSettings) -> bool {
        rules::session_alive(
            now,
            self.detached_at,
            self.claims.exp_ms,
            settings.resume_grace_ms,
            settings.leeway_ms,
        )
    }

    fn info(&self, session_id: &str) -> SessionInfo {
        SessionInfo {
            session_id: session_id.to_owned(),
            attached: self.attached(),
            created_at_ms: self.created_at_ms,
            expires_at_ms: self.claims.exp_ms,
            channels: self.joined.iter().cloned().collect(),
            node: None,
        }
    }
}

/// Where session ids and resume tokens come from.
#[derive(Clone, Default)]
enum Ids {
    /// Random (≥ 128 and ≥ 256 bits): the only kind a deployment ever uses.
    #[default]
    Random,
    /// `s_1`, `r_2`, … from one counter, so that a simulation's transcripts and
    /// explored states are the same on every run. Never for a deployment: anyone
    /// could guess a resume token.
    #[cfg(feature = "simulation")]
    Counted(u64),
}

impl Ids {
    fn session_id(&mut self) -> String {
        match self {
            Ids::Random => new_session_id(),
            #[cfg(feature = "simulation")]
            Ids::Counted(n) => {
                *n += 1;
                format!("s_{n}")
            }
        }
    }

    fn resume_token(&mut self) -> Secret {
        match self {
            Ids::Random => new_resume_token(),
            #[cfg(feature = "simulation")]
            Ids::Counted(n) => {
                *n += 1;
                Secret::new(format!("r_{n}"))
            }
        }
    }
}

#[derive(Clone, Default)]
struct State {
    sessions: HashMap<String, Session>,
    /// sub → session ids, oldest first by creation order.
    by_user: HashMap<String, BTreeSet<(u64, String)>>,
    /// channel → session ids joined to it.
    members: HashMap<String, HashSet<String>>,
    /// jti → revoked until (ms).
    revoked_jtis: HashMap<String, u64>,
    /// sub → revocation time and end.
    revoked_subs: HashMap<String, SubEntry>,
    next_epoch: u64,
    next_order: u64,
    ids: Ids,
    /// The bytes in every session's replay buffer.
    buffered_bytes: usize,
}

type Notices = Vec<(String, u64, Notice)>;

/// Which sessions a message goes to.
#[derive(Clone, Copy)]
enum Recipients<'a> {
    /// The sessions joined to its channel (`publish`).
    Members,
    /// Every session of the user alive at `now_ms`, attached or within grace
    /// (`send_to_user`), joined to the channel or not.
    User { sub: &'a str, now_ms: u64 },
}

/// The embedded single-node store.
pub struct MemoryStore {
    settings: StoreSettings,
    state: Mutex<State>,
    /// Taken before the state lock is released and held while notifying, so that
    /// notices leave in the order the state changed (seq 2 never overtakes seq 1).
    dispatch: Mutex<()>,
    notify: Arc<dyn Notify>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl State {
    /// The ids of `sub`'s sessions that `keep` keeps.
    fn sessions_of_user(&self, sub: &str, keep: impl Fn(&Session) -> bool) -> Vec<String> {
        self.by_user
            .get(sub)
            .into_iter()
            .flatten()
            .filter(|(_, id)| self.sessions.get(id).is_some_and(&keep))
            .map(|(_, id)| id.clone())
            .collect()
    }

    fn revoked(&self, claims: &Claims, now: u64) -> bool {
        rules::token_revoked(
            now,
            claims.iat_s(),
            claims
                .jti
                .as_ref()
                .and_then(|j| self.revoked_jtis.get(j))
                .copied(),
            self.revoked_subs.get(&claims.sub).copied(),
        )
    }

    fn remove(&mut self, session_id: &str, notices: &mut Notices, notice: Option<Notice>) -> bool {
        let Some(s) = self.sessions.remove(session_id) else {
            return false;
        };
        self.buffered_bytes -= s.buffer_bytes;
        if let Some(set) = self.by_user.get_mut(&s.claims.sub) {
            set.remove(&(s.created_order, session_id.to_owned()));
            if set.is_empty() {
                self.by_user.remove(&s.claims.sub);
            }
        }
        for channel in &s.joined {
            if let Some(m) = self.members.get_mut(channel) {
                m.remove(session_id);
                if m.is_empty() {
                    self.members.remove(channel);
                }
            }
        }
        match notice {
            Some(n) if s.attached() => {
                notices.push((session_id.to_owned(), s.epoch, n));
                true
            }
            _ => false,
        }
    }

    /// Removes the user's sessions that are no longer alive.
    fn prune_user(&mut self, sub: &str, now: u64, settings: &StoreSettings, notices: &mut Notices) {
        let dead: Vec<String> = self
            .by_user
            .get(sub)
            .into_iter()
            .flatten()
            .filter(|(_, id)| {
                self.sessions
                    .get(id)
                    .is_none_or(|s| !s.alive(now, settings))
            })
            .map(|(_, id)| id.clone())
            .collect();
        for id in dead {
            self.remove(&id, notices, None);
        }
    }

    fn current<'a>(&'a mut self, session_id: &str, epoch: u64) -> Option<&'a mut Session> {
        self.sessions
            .get_mut(session_id)
            .filter(|s| s.epoch == epoch)
    }
}

impl MemoryStore {
    /// A store reaching this node's connections through `notify`.
    pub fn new(settings: StoreSettings, notify: Arc<dyn Notify>) -> Self {
        MemoryStore {
            settings,
            state: Mutex::new(State::default()),
            dispatch: Mutex::new(()),
            notify,
        }
    }

    /// A store for simulations: ids and resume tokens are counted (`s_1`, `r_2`, …)
    /// instead of random, so that the same inputs give the same transcript.
    #[cfg(feature = "simulation")]
    pub fn simulated(settings: StoreSettings, notify: Arc<dyn Notify>) -> Self {
        let store = MemoryStore::new(settings, notify);
        lock(&store.state).ids = Ids::Counted(0);
        store
    }

    /// An independent copy of this store's whole state, reaching its connections
    /// through `notify`: a simulation explores several futures from one state.
    #[cfg(feature = "simulation")]
    pub fn fork(&self, notify: Arc<dyn Notify>) -> Self {
        MemoryStore {
            settings: self.settings.clone(),
            state: Mutex::new(lock(&self.state).clone()),
            dispatch: Mutex::new(()),
            notify,
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &StoreSettings {
        &self.settings
    }

    fn send(&self, notices: Notices) {
        for (session_id, epoch, notice) in notices {
            self.notify.notify(&session_id, epoch, notice);
        }
    }

    fn create(&self, claims: Arc<Claims>, now: u64) -> CreateOutcome {
        let _order = lock(&self.dispatch);
        let mut notices = Vec::new();
        let outcome = {
            let mut st = lock(&self.state);
            if st.revoked(&claims, now) {
                return CreateOutcome::Revoked;
            }
            let mut evicted = 0;
            if let Some(max) = self.settings.max_sessions_per_user {
                // Only a limit needs the user's live sessions counted now; without one
                // the periodic purge drops the dead, and a user with thousands of
                // sessions does not make each new one cost thousands of checks.
                st.prune_user(&claims.sub, now, &self.settings, &mut notices);
                let mine: Vec<String> = st
                    .by_user
                    .get(&claims.sub)
                    .into_iter()
                    .flatten()
                    .map(|(_, id)| id.clone())
                    .collect();
                match rules::limit_decision(mine.len(), max, self.settings.limit_policy) {
                    LimitDecision::Refuse => return CreateOutcome::TooManySessions,
                    LimitDecision::Admit { evict_oldest } => {
                        for id in mine.into_iter().take(evict_oldest) {
                            st.remove(&id, &mut notices, Some(Notice::Replaced));
                            evicted += 1;
                        }
                    }
                }
            }
            let session_id = st.ids.session_id();
            let resume_token = st.ids.resume_token();
            st.next_epoch += 1;
            st.next_order += 1;
            let (epoch, order) = (st.next_epoch, st.next_order);
            st.by_user
                .entry(claims.sub.clone())
                .or_default()
                .insert((order, session_id.clone()));
            st.sessions.insert(
                session_id.clone(),
                Session {
                    claims,
                    token_hash: hash_resume_token(&resume_token),
                    epoch,
                    detached_at: None,
                    created_at_ms: now,
                    created_order: order,
                    authorized_at_ms: now,
                    expiring_sent: false,
                    joined: BTreeSet::new(),
                    buffer: VecDeque::new(),
                    buffer_bytes: 0,
                    last_seq: 0,
                },
            );
            CreateOutcome::Created {
                session_id,
                resume_token,
                epoch,
                evicted,
            }
        };
        self.send(notices);
        outcome
    }

    fn resume(&self, session_id: &str, token: &Secret, now: u64) -> Option<(ResumedSession, u64)> {
        let _order = lock(&self.dispatch);
        let presented = hash_resume_token(token);
        let mut notices = Vec::new();
        let result = {
            let mut st = lock(&self.state);
            let ok = st.sessions.get(session_id).map(|s| {
                let token_ok = bool::from(s.token_hash.ct_eq(&presented));
                token_ok && s.alive(now, &self.settings) && !st.revoked(&s.claims, now)
            });
            match ok {
                None => None,
                Some(false) => {
                    // A wrong token says nothing about the session; a dead one goes.
                    let dead = st.sessions.get(session_id).is_some_and(|s| {
                        !s.alive(now, &self.settings) || st.revoked(&s.claims, now)
                    });
                    if dead {
                        st.remove(session_id, &mut notices, Some(Notice::Replaced));
                    }
                    None
                }
                Some(true) => {
                    st.next_epoch += 1;
                    let epoch = st.next_epoch;
                    let new_token = st.ids.resume_token();
                    let s = st.sessions.get_mut(session_id)?;
                    if s.attached() {
                        notices.push((session_id.to_owned(), s.epoch, Notice::Replaced));
                    }
                    s.token_hash = hash_resume_token(&new_token);
                    s.epoch = epoch;
                    s.detached_at = None;
                    let resumed = ResumedSession {
                        session_id: session_id.to_owned(),
                        resume_token: new_token,
                        claims: s.claims.clone(),
                        authorized_at_ms: s.authorized_at_ms,
                        expiring_sent: s.expiring_sent,
                        channels: s.joined.iter().cloned().collect(),
                        buffered: s.buffer.iter().cloned().collect(),
                        last_seq: s.last_seq,
                    };
                    Some((resumed, epoch))
                }
            }
        };
        self.send(notices);
        result
    }

    /// Appends a message on `channel` to the buffer of every session `to` names, with
    /// that session's next `seq`, and tells the attached ones: a user's or the
    /// server's publish (the channel's members) and the server's send to a user (the
    /// user's live sessions, on `user:<sub>`) share it. Returns the sessions reached.
    fn do_publish(
        &self,
        channel: &str,
        to: Recipients<'_>,
        from: Option<&str>,
        data: Payload,
    ) -> usize {
        let _order = lock(&self.dispatch);
        let mut notices = Vec::new();
        let n = {
            let mut st = lock(&self.state);
            let recipients: Vec<String> = match to {
                Recipients::Members => st
                    .members
                    .get(channel)
                    .map(|m| m.iter().cloned().collect())
                    .unwrap_or_default(),
                Recipients::User { sub, now_ms } => {
                    st.sessions_of_user(sub, |s| s.alive(now_ms, &self.settings))
                }
            };
            let cap = self.settings.resume_buffer;
            let cap_bytes = self.settings.resume_buffer_bytes;
            let mut n = 0;
            let (mut added, mut dropped) = (0, 0);
            // Shared by every copy of the delivery: a fan-out copies no names.
            let channel_name: Arc<str> = channel.into();
            let publisher: Option<Arc<str>> = from.map(Arc::from);
            for id in recipients {
                let Some(s) = st.sessions.get_mut(&id) else {
                    continue;
                };
                n += 1;
                s.last_seq += 1;
                let delivery = Delivery {
                    channel: channel_name.clone(),
                    from: publisher.clone(),
                    seq: s.last_seq,
                    data: data.clone(),
                };
                if cap > 0 {
                    added += delivery.data.get().len();
                    s.buffer_bytes += delivery.data.get().len();
                    s.buffer.push_back(delivery.clone());
                    while s.buffer.len() > cap || (cap_bytes > 0 && s.buffer_bytes > cap_bytes) {
                        let Some(oldest) = s.buffer.pop_front() else {
                            break;
                        };
                        s.buffer_bytes -= oldest.data.get().len();
                        dropped += oldest.data.get().len();
                    }
                }
                if s.attached() {
                    notices.push((id, s.epoch, Notice::Deliver(delivery)));
                }
            }
            st.buffered_bytes = st.buffered_bytes + added - dropped;
            n
        };
        self.send(notices);
        n
    }

    fn do_revoke(&self, revocation: Revocation, now: u64) -> usize {
        let _order = lock(&self.dispatch);
        let mut notices = Vec::new();
        {
            let mut st = lock(&self.state);
            let lifetime = self.settings.max_token_lifetime_ms;
            let concerned: Vec<String> = match &revocation {
                Revocation::Session { session_id } => vec![session_id.clone()],
                Revocation::Token { jti } => {
                    let ids: Vec<String> = st
                        .sessions
                        .iter()
                        .filter(|(_, s)| revocation.refuses_token(&s.claims))
                        .map(|(id, _)| id.clone())
                        .collect();
                    let known_exp = ids
                        .iter()
                        .filter_map(|id| st.sessions.get(id))
                        .map(|s| s.claims.exp_ms)
                        .max();
                    let until = rules::jti_revocation_until(
                        now,
                        known_exp,
                        self.settings.leeway_ms,
                        lifetime,
                    );
                    let entry = st.revoked_jtis.entry(jti.clone()).or_insert(0);
                    *entry = (*entry).max(until);
                    ids
                }
                Revocation::Subject { sub, at_s } => {
                    let entry = st.revoked_subs.entry(sub.clone()).or_insert(SubEntry {
                        at_s: 0,
                        until_ms: 0,
                    });
                    entry.at_s = entry.at_s.max(*at_s);
                    entry.until_ms = entry
                        .until_ms
                        .max(rules::sub_revocation_until(now, lifetime));
                    st.sessions_of_user(sub, |s| revocation.refuses_token(&s.claims))
                }
            };
            for id in concerned {
                st.remove(
                    &id,
                    &mut notices,
                    Some(Notice::Revoked {
                        revocation: revocation.clone(),
                        at_ms: now,
                    }),
                );
            }
        }
        let told = notices.len();
        self.send(notices);
        told
    }
}

impl Store for MemoryStore {
    async fn create_session(
        &self,
        claims: Arc<Claims>,
        now_ms: u64,
    ) -> Result<CreateOutcome, StoreError> {
        let budget = self.settings.replay_budget_bytes;
        if budget > 0 && lock(&self.state).buffered_bytes > budget {
            // Refused before the process is at risk; the client retries later.
            return Err(StoreError::Unavailable(
                "the replay buffers are over session.replay_budget_bytes".to_owned(),
            ));
        }
        Ok(self.create(claims, now_ms))
    }

    async fn resume_session(
        &self,
        session_id: &str,
        resume_token: &Secret,
        now_ms: u64,
    ) -> Result<Option<(ResumedSession, u64)>, StoreError> {
        Ok(self.resume(session_id, resume_token, now_ms))
    }

    async fn refresh_session(
        &self,
        session_id: &str,
        epoch: u64,
        claims: Arc<Claims>,
        now_ms: u64,
    ) -> Result<RefreshOutcome, StoreError> {
        let mut st = lock(&self.state);
        if st.revoked(&claims, now_ms) {
            return Ok(RefreshOutcome::Revoked);
        }
        if let Some(s) = st.current(session_id, epoch) {
            s.claims = claims;
            s.authorized_at_ms = now_ms;
            s.expiring_sent = false;
        }
        Ok(RefreshOutcome::Refreshed)
    }

    async fn note_expiring_sent(&self, session_id: &str, epoch: u64) -> Result<(), StoreError> {
        if let Some(s) = lock(&self.state).current(session_id, epoch) {
            s.expiring_sent = true;
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        session_id: &str,
        epoch: u64,
        channel: &str,
    ) -> Result<(), StoreError> {
        // Ordered with publishes: once this returns, every message published after it
        // reaches the session.
        let _order = lock(&self.dispatch);
        let mut st = lock(&self.state);
        if let Some(s) = st.current(session_id, epoch) {
            s.joined.insert(channel.to_owned());
            st.members
                .entry(channel.to_owned())
                .or_default()
                .insert(session_id.to_owned());
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        session_id: &str,
        epoch: u64,
        channel: &str,
    ) -> Result<(), StoreError> {
        // Ordered with publishes: once this returns, no delivery for the channel is
        // still on its way to the session.
        let _order = lock(&self.dispatch);
        let mut st = lock(&self.state);
        if let Some(s) = st.current(session_id, epoch) {
            s.joined.remove(channel);
            if let Some(m) = st.members.get_mut(channel) {
                m.remove(session_id);
                if m.is_empty() {
                    st.members.remove(channel);
                }
            }
        }
        Ok(())
    }

    async fn publish(
        &self,
        channel: &str,
        from: Option<&str>,
        data: Payload,
        _now_ms: u64,
    ) -> Result<usize, StoreError> {
        Ok(self.do_publish(channel, Recipients::Members, from, data))
    }

    async fn send_to_user(
        &self,
        sub: &str,
        data: Payload,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let to = Recipients::User { sub, now_ms };
        Ok(self.do_publish(&rules::user_channel(sub), to, None, data))
    }

    async fn detach(&self, session_id: &str, epoch: u64, now_ms: u64) -> Result<(), StoreError> {
        if let Some(s) = lock(&self.state).current(session_id, epoch) {
            s.detached_at = Some(now_ms);
        }
        Ok(())
    }

    async fn end_session(&self, session_id: &str, epoch: u64) -> Result<(), StoreError> {
        let mut st = lock(&self.state);
        if st.current(session_id, epoch).is_some() {
            st.remove(session_id, &mut Vec::new(), None);
        }
        Ok(())
    }

    async fn revoke(&self, revocation: Revocation, now_ms: u64) -> Result<usize, StoreError> {
        Ok(self.do_revoke(revocation, now_ms))
    }

    async fn session(&self, session_id: &str) -> Result<Option<SessionInfo>, StoreError> {
        let st = lock(&self.state);
        Ok(st.sessions.get(session_id).map(|s| s.info(session_id)))
    }

    async fn sessions_of(&self, sub: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let st = lock(&self.state);
        Ok(st
            .by_user
            .get(sub)
            .into_iter()
            .flatten()
            .filter_map(|(_, id)| st.sessions.get(id).map(|s| s.info(id)))
            .collect())
    }

    async fn is_revoked(&self, claims: &Claims, now_ms: u64) -> Result<bool, StoreError> {
        Ok(lock(&self.state).revoked(claims, now_ms))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<(), StoreError> {
        let mut st = lock(&self.state);
        let dead: Vec<String> = st
            .sessions
            .iter()
            .filter(|(_, s)| !s.alive(now_ms, &self.settings))
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            st.remove(&id, &mut Vec::new(), None);
        }
        st.revoked_jtis
            .retain(|_, until| rules::entry_in_force(now_ms, *until));
        st.revoked_subs
            .retain(|_, e| rules::entry_in_force(now_ms, e.until_ms));
        Ok(())
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let st = lock(&self.state);
        Ok(StoreStats {
            sessions: st.sessions.len(),
            revocations: st.revoked_jtis.len() + st.revoked_subs.len(),
            buffered: st.sessions.values().map(|s| s.buffer.len()).sum(),
        })
    }
}
