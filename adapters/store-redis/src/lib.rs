//! The Redis store for wsauth: several `wsauth-server` nodes share sessions,
//! resume tokens, the per-user index, revocations and channel fan-out through one
//! Redis (or Valkey) primary.
//!
//! Every decision that must be atomic across nodes (create under the per-user
//! limit, spend a resume token, revoke, assign `seq`) is one Lua script, so Redis
//! runs it as one step. A script that must reach a connection appends a notice to
//! the holding node's stream (`<prefix>in:<inbox>`); each node reads its own stream
//! and hands the notices to its [`Notify`]. A stream, not pub/sub: a node whose link
//! to Redis drops for a moment reads on from the last entry it saw, so neither a
//! revocation nor a message is missed silently, and entries leave in the order the
//! scripts ran, which is `seq` order for every session.
//!
//! A `wsauth-server` node uses it when `store.kind = "redis"`; an embedder builds
//! it like this (every node with the same `key_prefix`, each with its own
//! `node_id`) and hands it to the server library:
//!
//! ```no_run
//! use wsauth_store::hub::Hub;
//! use wsauth_store::StoreSettings;
//! use wsauth_store_redis::{RedisConfig, RedisStore};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), wsauth_store::StoreError> {
//! let config = RedisConfig::new("redis://127.0.0.1:6379/0", "wsauth:", "node-a");
//! let hub = Hub::new(256); // this node's connections
//! let store = RedisStore::connect(config, StoreSettings::default(), hub).await?;
//! # drop(store);
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{AsyncConnectionConfig, Client, RedisError, Script, Value};
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use wsauth_core::jwt::Claims;
use wsauth_core::{Delivery, Payload, ResumedSession, Revocation, Secret};
use wsauth_store::{
    CreateOutcome, LimitPolicy, Notice, NoticeStreamStats, Notify, RefreshOutcome, SessionInfo,
    Store, StoreError, StoreSettings, StoreStats, hash_resume_token, new_resume_token,
    new_session_id,
};

mod claims;

use claims::StoredClaims;

/// How a node reaches Redis.
#[derive(Clone)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port/db`, `rediss://…` or `unix://…`.
    pub url: String,
    /// Prefix of every key this store writes, e.g. `wsauth:`.
    pub key_prefix: String,
    /// This node's name, shown by the admin API next to its sessions.
    pub node_id: String,
    /// Longest wait for one Redis reply.
    pub response_timeout: Duration,
    /// Longest time this node may go without having read its notice stream up to
    /// date (`store.max_notice_lag_ms`). Past it the node's connections are closed
    /// resumable ([`Notify::notices_lost`]), and until the stream is read again
    /// [`Store::ping`] fails and no session is created or resumed on this node.
    pub max_notice_lag: Duration,
}

impl std::fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password.
        f.debug_struct("RedisConfig")
            .field("key_prefix", &self.key_prefix)
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl RedisConfig {
    /// A configuration with a 2 s reply timeout and a 10 s notice lag bound.
    pub fn new(
        url: impl Into<String>,
        key_prefix: impl Into<String>,
        node_id: impl Into<String>,
    ) -> Self {
        RedisConfig {
            url: url.into(),
            key_prefix: key_prefix.into(),
            node_id: node_id.into(),
            response_timeout: Duration::from_secs(2),
            max_notice_lag: Duration::from_secs(10),
        }
    }
}

const PRELUDE: &str = include_str!("lua/prelude.lua");

struct Scripts {
    create: Script,
    resume: Script,
    refresh: Script,
    session_ops: Script,
    publish: Script,
    revoke: Script,
    read: Script,
    purge: Script,
}

impl Scripts {
    fn new() -> Self {
        let with_prelude = |body: &str| Script::new(&format!("{PRELUDE}\n{body}"));
        Scripts {
            create: with_prelude(include_str!("lua/create.lua")),
            resume: with_prelude(include_str!("lua/resume.lua")),
            refresh: with_prelude(include_str!("lua/refresh.lua")),
            session_ops: with_prelude(include_str!("lua/session_ops.lua")),
            publish: with_prelude(include_str!("lua/publish.lua")),
            revoke: with_prelude(include_str!("lua/revoke.lua")),
            read: with_prelude(include_str!("lua/read.lua")),
            purge: with_prelude(include_str!("lua/purge.lua")),
        }
    }
}

/// Settle marks waiting for the stream reader.
type Marks = Mutex<HashMap<u64, oneshot::Sender<()>>>;

/// The Redis store. Cloning is not offered: one per node, shared behind an `Arc`.
pub struct RedisStore {
    settings: StoreSettings,
    prefix: String,
    node: String,
    inbox: String,
    conn: ConnectionManager,
    scripts: Scripts,
    marks: Arc<Marks>,
    next_mark: AtomicU64,
    stream: Arc<StreamHealth>,
    reader: tokio::task::JoinHandle<()>,
    health: tokio::task::JoinHandle<()>,
    watchdog: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        self.reader.abort();
        self.health.abort();
        self.watchdog.abort();
    }
}

fn unavailable(e: RedisError) -> StoreError {
    // A Redis error never carries the URL or a command's arguments; the kind and
    // the server's short text say what happened.
    let detail = if e.is_io_error() || e.is_timeout() {
        format!(": {e}")
    } else {
        e.detail().map(|d| format!(": {d}")).unwrap_or_default()
    };
    StoreError::Unavailable(format!("redis {}{detail}", e.category()))
}

fn protocol_error(what: &str) -> StoreError {
    StoreError::Unavailable(format!("redis: unexpected reply to {what}"))
}

/// Session ids come from clients and admins: anything that is not one of ours is
/// unknown without asking Redis.
fn plausible_session_id(id: &str) -> bool {
    id.len() <= 64
        && id.starts_with("s_")
        && id[2..]
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Checks `url` as [`RedisStore::connect`] reads it, without connecting (for
/// `wsauth-server check-config`); the error never shows the URL, which may hold
/// a password.
pub fn check_url(url: &str) -> Result<(), StoreError> {
    open_client(url).map(drop)
}

fn open_client(url: &str) -> Result<Client, StoreError> {
    Client::open(url).map_err(|e| {
        StoreError::Unavailable(format!(
            "store.url is not a valid Redis URL ({})",
            e.category()
        ))
    })
}

impl RedisStore {
    /// Connects, checks that Redis answers, and starts reading this node's stream.
    /// Fails (with a message that names no password) when Redis cannot be reached.
    pub async fn connect(
        config: RedisConfig,
        settings: StoreSettings,
        notify: Arc<dyn Notify>,
    ) -> Result<RedisStore, StoreError> {
        let client = open_client(&config.url)?;
        let manager_config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(config.response_timeout))
            .set_number_of_retries(3)
            .set_max_delay(Duration::from_secs(2));
        let mut conn = ConnectionManager::new_with_config(client.clone(), manager_config)
            .await
            .map_err(unavailable)?;
        let _: String = redis::cmd("PING")
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let inbox = format!("{}:{:016x}", config.node_id, rand::random::<u64>());
        let marks: Arc<Marks> = Arc::default();
        let stream_key = format!("{}in:{}", config.key_prefix, inbox);
        // The stream exists from the start, so that a stream found missing later
        // means it was lost.
        let first_id: String = redis::cmd("XADD")
            .arg(&stream_key)
            .arg("*")
            .arg("m")
            .arg(r#"{"kind":"hello"}"#)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let _: i64 = redis::cmd("PEXPIRE")
            .arg(&stream_key)
            .arg(INBOX_TTL_MS)
            .query_async(&mut conn)
            .await
            .map_err(unavailable)?;
        let stream = Arc::new(StreamHealth::new(config.max_notice_lag));
        let reader = tokio::spawn(read_inbox(
            client,
            stream_key,
            first_id,
            notify.clone(),
            marks.clone(),
            stream.clone(),
        ));
        let health = tokio::spawn(keep_link_fresh(conn.clone()));
        let watchdog = tokio::spawn(watch_notice_lag(stream.clone(), notify));
        Ok(RedisStore {
            settings,
            prefix: config.key_prefix,
            node: config.node_id,
            inbox,
            conn,
            scripts: Scripts::new(),
            marks,
            next_mark: AtomicU64::new(1),
            stream,
            reader,
            health,
            watchdog,
        })
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// Runs a script. A refused connection means the request was never sent (the
    /// link is being re-established after Redis came back), so it is tried once
    /// more; any other failure could have run the script and is reported.
    async fn invoke<T: redis::FromRedisValue>(
        &self,
        invocation: &redis::ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        match invocation.invoke_async(&mut self.conn()).await {
            Err(e) if e.is_connection_refusal() => invocation
                .invoke_async(&mut self.conn())
                .await
                .map_err(unavailable),
            other => other.map_err(unavailable),
        }
    }
}

impl RedisStore {
    /// Runs `publish.lua`: the message on `channel` to the sessions `to` names
    /// (`c`: the channel's members; `u:<sub>`: the user's live sessions), with
    /// `from` when a user published it. Returns the sessions reached.
    async fn fan_out(
        &self,
        channel: &str,
        to: &str,
        from: Option<&str>,
        data: Payload,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let body = delivery_body(channel, from, &data);
        let n: u64 = self
            .invoke(
                self.scripts
                    .publish
                    .arg(&self.prefix)
                    .arg(channel)
                    .arg(body)
                    .arg(self.settings.resume_buffer)
                    .arg(to)
                    .arg(now_ms)
                    .arg(self.settings.resume_grace_ms)
                    .arg(self.settings.leeway_ms)
                    .arg(self.settings.resume_buffer_bytes),
            )
            .await?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }
}

/// The JSON members of a delivery as `publish.lua` stores and sends them:
/// `"channel":…,"from":…,"data":…`, without `from` when the server sent it.
fn delivery_body(channel: &str, from: Option<&str>, data: &Payload) -> String {
    let encode = |s: &str| serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into());
    match from {
        Some(from) => format!(
            "\"channel\":{},\"from\":{},\"data\":{}",
            encode(channel),
            encode(from),
            data.get()
        ),
        None => format!("\"channel\":{},\"data\":{}", encode(channel), data.get()),
    }
}

async fn ping(conn: &ConnectionManager) -> Result<(), RedisError> {
    let attempt = async || {
        redis::cmd("PING")
            .query_async::<String>(&mut conn.clone())
            .await
    };
    match attempt().await {
        Err(e) if e.is_connection_refusal() => attempt().await.map(drop),
        other => other.map(drop),
    }
}

/// The connection manager finds a dead link only when a request fails on it. This
/// task is that request: it pings every second, and every 100 ms while Redis is
/// away, so that once Redis is back the link is re-established before a client's
/// request needs it.
async fn keep_link_fresh(conn: ConnectionManager) {
    let mut was_down = false;
    loop {
        let up = ping(&conn).await.is_ok();
        if up && was_down {
            tracing::info!("store: Redis answers again");
        } else if !up && !was_down {
            tracing::warn!("store: Redis does not answer; new authentications fail until it does");
        }
        was_down = !up;
        let pause = if up { 1000 } else { 100 };
        tokio::time::sleep(Duration::from_millis(pause)).await;
    }
}

/// A notice as a script writes it into a node's stream.
#[derive(Deserialize)]
struct InboxEntry<'a> {
    kind: &'a str,
    #[serde(default)]
    to: Vec<(String, u64, u64)>,
    #[serde(default)]
    channel: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default, borrow)]
    data: Option<&'a RawValue>,
    #[serde(default)]
    rev: Option<RevocationJson>,
    #[serde(default)]
    mark: Option<u64>,
    /// When a revocation was issued.
    #[serde(default)]
    at: Option<u64>,
}

#[derive(serde::Serialize, Deserialize)]
#[serde(untagged)]
enum RevocationJson {
    Token { jti: String },
    Subject { sub: String, at_s: u64 },
    Session { session_id: String },
}

impl From<&Revocation> for RevocationJson {
    fn from(r: &Revocation) -> Self {
        match r {
            Revocation::Token { jti } => RevocationJson::Token { jti: jti.clone() },
            Revocation::Subject { sub, at_s } => RevocationJson::Subject {
                sub: sub.clone(),
                at_s: *at_s,
            },
            Revocation::Session { session_id } => RevocationJson::Session {
                session_id: session_id.clone(),
            },
        }
    }
}

impl From<RevocationJson> for Revocation {
    fn from(r: RevocationJson) -> Self {
        match r {
            RevocationJson::Token { jti } => Revocation::Token { jti },
            RevocationJson::Subject { sub, at_s } => Revocation::Subject { sub, at_s },
            RevocationJson::Session { session_id } => Revocation::Session { session_id },
        }
    }
}

/// Hands one stream entry to the node's connections.
fn dispatch(text: &str, notify: &dyn Notify, marks: &Marks) {
    let Ok(entry) = serde_json::from_str::<InboxEntry<'_>>(text) else {
        tracing::warn!("store: an unreadable notice in this node's stream was skipped");
        return;
    };
    match entry.kind {
        "deliver" => {
            // No `from`: the server published or sent it.
            let (Some(channel), Some(data)) = (entry.channel, entry.data) else {
                return;
            };
            let Ok(data) = Payload::from_json(data.get()) else {
                return;
            };
            let channel: Arc<str> = channel.into();
            let from: Option<Arc<str>> = entry.from.map(Arc::from);
            for (session_id, epoch, seq) in entry.to {
                let delivery = Delivery {
                    channel: channel.clone(),
                    from: from.clone(),
                    seq,
                    data: data.clone(),
                };
                notify.notify(&session_id, epoch, Notice::Deliver(delivery));
            }
        }
        "replaced" => {
            for (session_id, epoch, _) in entry.to {
                notify.notify(&session_id, epoch, Notice::Replaced);
            }
        }
        "revoked" => {
            let Some(rev) = entry.rev.map(Revocation::from) else {
                return;
            };
            let at_ms = entry.at.unwrap_or(0);
            for (session_id, epoch, _) in entry.to {
                let notice = Notice::Revoked {
                    revocation: rev.clone(),
                    at_ms,
                };
                notify.notify(&session_id, epoch, notice);
            }
        }
        "mark" => {
            if let Some(id) = entry.mark
                && let Some(tx) = marks.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
            {
                let _ = tx.send(());
            }
        }
        _ => {}
    }
}

/// Entries as `XRANGE` answers them: id, then field-value pairs.
type Entries = Vec<(String, Vec<(String, String)>)>;

type StreamReply = Option<Vec<(String, Entries)>>;

/// How long a node's stream lives after its last write; a node refreshes it while it
/// runs, so only a dead node's stream goes.
const INBOX_TTL_MS: u64 = 3_600_000;

/// Whether the entry `id` is still in the stream: streams are trimmed oldest first,
/// so if it is, nothing after it was trimmed.
async fn still_there(
    conn: &mut redis::aio::MultiplexedConnection,
    key: &str,
    id: &str,
) -> Result<bool, RedisError> {
    let entries: Entries = redis::cmd("XRANGE")
        .arg(key)
        .arg(id)
        .arg(id)
        .query_async(conn)
        .await?;
    Ok(!entries.is_empty())
}

/// What the reader knows of this node's notice stream, shared with the watchdog
/// ([`watch_notice_lag`]) and with the store's calls.
struct StreamHealth {
    /// `store.max_notice_lag_ms`.
    bound: Duration,
    started: Instant,
    /// When (ms after `started`) the stream was last read up to date.
    read_at_ms: AtomicU64,
    /// The bound was passed and the stream has not been read up to date since.
    stale: AtomicBool,
    /// Notices lost, by why: trimmed before they were read, the stream gone on a
    /// reconnect, the bound passed.
    lost_trimmed: AtomicU64,
    lost_gone: AtomicU64,
    lost_lag: AtomicU64,
}

impl StreamHealth {
    fn new(bound: Duration) -> Self {
        StreamHealth {
            bound,
            started: Instant::now(),
            read_at_ms: AtomicU64::new(0),
            stale: AtomicBool::new(false),
            lost_trimmed: AtomicU64::new(0),
            lost_gone: AtomicU64::new(0),
            lost_lag: AtomicU64::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// How long since the stream was last read up to date.
    fn lag(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.read_at_ms.load(Ordering::Acquire)),
        )
    }

    /// The reader has every entry the stream held when its read was answered.
    fn read_up_to_date(&self) {
        self.read_at_ms.store(self.now_ms(), Ordering::Release);
        if self.stale.swap(false, Ordering::AcqRel) {
            tracing::info!("store: this node reads its notice stream again");
        }
    }

    /// Fails while the stream is not read within the bound: a session attached
    /// now might miss its revocation.
    fn check(&self) -> Result<(), StoreError> {
        let lag = self.lag();
        if lag > self.bound {
            return Err(StoreError::Unavailable(format!(
                "redis: this node has not read its notice stream for {} ms \
                 (store.max_notice_lag_ms = {})",
                lag.as_millis(),
                self.bound.as_millis()
            )));
        }
        Ok(())
    }

    fn stats(&self) -> NoticeStreamStats {
        NoticeStreamStats {
            lost_trimmed: self.lost_trimmed.load(Ordering::Relaxed),
            lost_gone: self.lost_gone.load(Ordering::Relaxed),
            lost_lag: self.lost_lag.load(Ordering::Relaxed),
            lag_ms: u64::try_from(self.lag().as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// Closes the node's connections (resumable) once its notice stream has gone
/// unread for longer than the bound, and again every bound for as long as it
/// stays unread (a session that slipped in meanwhile is closed too).
async fn watch_notice_lag(stream: Arc<StreamHealth>, notify: Arc<dyn Notify>) {
    let tick = (stream.bound / 4).clamp(Duration::from_millis(10), Duration::from_millis(250));
    let mut last_close: Option<Instant> = None;
    loop {
        tokio::time::sleep(tick).await;
        let lag = stream.lag();
        if lag <= stream.bound {
            last_close = None;
            continue;
        }
        if !stream.stale.swap(true, Ordering::AcqRel) {
            stream.lost_lag.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                lag_ms = u64::try_from(lag.as_millis()).unwrap_or(u64::MAX),
                bound_ms = u64::try_from(stream.bound.as_millis()).unwrap_or(u64::MAX),
                "store: this node has not read its notice stream for longer than \
                 store.max_notice_lag_ms: closing every connection (resumable); \
                 not ready until it reads the stream again"
            );
        } else if last_close.is_some_and(|at| at.elapsed() < stream.bound) {
            continue;
        }
        last_close = Some(Instant::now());
        notify.notices_lost();
    }
}

/// Compares two stream entry ids (`<ms>-<seq>`): whether `a` is newer than `b`.
fn newer(a: &str, b: &str) -> bool {
    let parse = |id: &str| {
        let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
        (
            ms.parse::<u64>().unwrap_or(0),
            seq.parse::<u64>().unwrap_or(0),
        )
    };
    parse(a) > parse(b)
}

/// The notice stream's longest wait between reconnects. Revocations reach sockets only through
/// this stream, so it must be back about as soon as Redis answers again: with 2 s, a revocation
/// answered right after a Redis restart closed its socket 1.1 s later (`wsauth-load chaos`).
const NOTICE_RECONNECT_MAX: Duration = Duration::from_millis(100);

/// Reads this node's stream for as long as the store lives, reconnecting with
/// backoff. After a reconnect it reads on from the last entry it handled; if that
/// entry is gone (trimmed, or Redis lost its data) notices may have been missed,
/// and every connection is closed resumable ([`Notify::notices_lost`]).
///
/// Every read also asks for the stream's oldest entry: newer than the last entry
/// read means entries were trimmed before this node read them (a node that fell
/// more than the stream's length behind), and every connection is closed
/// resumable as well.
async fn read_inbox(
    client: Client,
    key: String,
    mut last_id: String,
    notify: Arc<dyn Notify>,
    marks: Arc<Marks>,
    stream: Arc<StreamHealth>,
) {
    const COUNT: usize = 1024;
    // Well within the bound, so that an idle stream read up to date never looks late.
    let block = (stream.bound / 4).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(block + Duration::from_secs(2)));
    let mut backoff = Duration::from_millis(50);
    let mut reconnecting = false;
    loop {
        let mut conn = match client
            .get_multiplexed_async_connection_with_config(&config)
            .await
        {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e.category(), retry_in_ms = backoff.as_millis() as u64, "store: cannot read this node's notices");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(NOTICE_RECONNECT_MAX);
                continue;
            }
        };
        if reconnecting {
            match still_there(&mut conn, &key, &last_id).await {
                Ok(true) => tracing::info!("store: notice stream back; nothing was missed"),
                Ok(false) => {
                    stream.lost_gone.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(
                        "store: the last notice this node read is gone from its stream \
                         (trimmed, or Redis lost its data): closing every connection (resumable)"
                    );
                    notify.notices_lost();
                }
                Err(_) => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(NOTICE_RECONNECT_MAX);
                    continue;
                }
            }
        }
        reconnecting = true;
        let mut refreshed = Instant::now();
        loop {
            if refreshed.elapsed() > Duration::from_secs(60) {
                let _: Result<i64, RedisError> = redis::cmd("PEXPIRE")
                    .arg(&key)
                    .arg(INBOX_TTL_MS)
                    .query_async(&mut conn)
                    .await;
                refreshed = Instant::now();
            }
            // One round trip: Redis runs the XRANGE right after the XREAD answers.
            let reply: Result<(StreamReply, Entries), RedisError> = redis::pipe()
                .cmd("XREAD")
                .arg("COUNT")
                .arg(COUNT)
                .arg("BLOCK")
                .arg(u64::try_from(block.as_millis()).unwrap_or(1000))
                .arg("STREAMS")
                .arg(&key)
                .arg(&last_id)
                .cmd("XRANGE")
                .arg(&key)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut conn)
                .await;
            match reply {
                Ok((streams, oldest)) => {
                    backoff = Duration::from_millis(50);
                    if let Some((oldest, _)) = oldest.first()
                        && newer(oldest, &last_id)
                    {
                        stream.lost_trimmed.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(
                            last_read = %last_id,
                            oldest_kept = %oldest,
                            "store: notices for this node were trimmed from its stream \
                             before it read them: closing every connection (resumable)"
                        );
                        notify.notices_lost();
                    }
                    let mut read = 0;
                    for (_, entries) in streams.unwrap_or_default() {
                        read += entries.len();
                        for (id, fields) in entries {
                            for (_, text) in fields.iter().filter(|(f, _)| f == "m") {
                                dispatch(text, notify.as_ref(), &marks);
                            }
                            last_id = id;
                        }
                    }
                    if read < COUNT {
                        stream.read_up_to_date();
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e.category(), "store: lost the notice stream; reconnecting");
                    tokio::time::sleep(backoff).await;
                    break;
                }
            }
        }
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(i) => Some(i.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Int(i) => u64::try_from(*i).ok(),
        other => text(other)?.parse().ok(),
    }
}

fn texts(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().map(text).collect(),
        Value::Nil => Some(Vec::new()),
        _ => None,
    }
}

/// The claims fields the scripts compare: `sub`, `jti` ('' when none), `iat` in
/// seconds ('' when none), `exp` in ms.
fn claim_args(claims: &Claims) -> (String, String, String) {
    (
        claims.jti.clone().unwrap_or_default(),
        claims.iat_s().map(|s| s.to_string()).unwrap_or_default(),
        claims.exp_ms.to_string(),
    )
}

fn encode_claims(claims: &Claims) -> Result<String, StoreError> {
    serde_json::to_string(&StoredClaims::from(claims))
        .map_err(|_| StoreError::Unavailable("claims could not be encoded".into()))
}

/// A replay-buffer entry as `publish.lua` writes it.
#[derive(Deserialize)]
struct BufferedEntry<'a> {
    seq: u64,
    channel: String,
    /// Absent when the server published or sent it.
    #[serde(default)]
    from: Option<String>,
    #[serde(borrow)]
    data: &'a RawValue,
}

fn decode_buffered(text: &str) -> Option<Delivery> {
    let e: BufferedEntry<'_> = serde_json::from_str(text).ok()?;
    Some(Delivery {
        channel: e.channel.into(),
        from: e.from.map(Arc::from),
        seq: e.seq,
        data: Payload::from_json(e.data.get()).ok()?,
    })
}

impl Store for RedisStore {
    async fn create_session(
        &self,
        claims: Arc<Claims>,
        now_ms: u64,
    ) -> Result<CreateOutcome, StoreError> {
        self.stream.check()?;
        let (jti, iat, exp) = claim_args(&claims);
        let session_id = new_session_id();
        let resume_token = new_resume_token();
        let s = &self.settings;
        let reply: Value = self
            .invoke(
                self.scripts
                    .create
                    .arg(&self.prefix)
                    .arg(now_ms)
                    .arg(s.resume_grace_ms)
                    .arg(s.leeway_ms)
                    .arg(&claims.sub)
                    .arg(jti)
                    .arg(iat)
                    .arg(exp)
                    .arg(encode_claims(&claims)?)
                    .arg(&session_id)
                    .arg(&hash_resume_token(&resume_token)[..])
                    .arg(&self.node)
                    .arg(&self.inbox)
                    .arg(s.max_sessions_per_user.unwrap_or(0))
                    .arg(match s.limit_policy {
                        LimitPolicy::EvictOldest => "evict",
                        LimitPolicy::RejectNew => "reject",
                    }),
            )
            .await?;
        let Value::Array(items) = reply else {
            return Err(protocol_error("create"));
        };
        match items.first().and_then(text).as_deref() {
            Some("revoked") => Ok(CreateOutcome::Revoked),
            Some("too_many") => Ok(CreateOutcome::TooManySessions),
            Some("created") => {
                let epoch = items
                    .get(1)
                    .and_then(number)
                    .ok_or_else(|| protocol_error("create"))?;
                let evicted = items.get(2).and_then(number).unwrap_or(0);
                Ok(CreateOutcome::Created {
                    session_id,
                    resume_token,
                    epoch,
                    evicted: usize::try_from(evicted).unwrap_or(usize::MAX),
                })
            }
            _ => Err(protocol_error("create")),
        }
    }

    async fn resume_session(
        &self,
        session_id: &str,
        resume_token: &Secret,
        now_ms: u64,
    ) -> Result<Option<(ResumedSession, u64)>, StoreError> {
        if !plausible_session_id(session_id) {
            return Ok(None);
        }
        self.stream.check()?;
        let new_token = new_resume_token();
        let s = &self.settings;
        let reply: Value = self
            .invoke(
                self.scripts
                    .resume
                    .arg(&self.prefix)
                    .arg(now_ms)
                    .arg(s.resume_grace_ms)
                    .arg(s.leeway_ms)
                    .arg(session_id)
                    .arg(&hash_resume_token(resume_token)[..])
                    .arg(&hash_resume_token(&new_token)[..])
                    .arg(&self.node)
                    .arg(&self.inbox),
            )
            .await?;
        let items = match reply {
            Value::Nil => return Ok(None),
            Value::Array(items) if items.len() == 7 => items,
            _ => return Err(protocol_error("resume")),
        };
        let bad = || protocol_error("resume");
        let epoch = number(&items[0]).ok_or_else(bad)?;
        let claims: StoredClaims =
            serde_json::from_str(&text(&items[1]).ok_or_else(bad)?).map_err(|_| bad())?;
        let buffered = texts(&items[6])
            .ok_or_else(bad)?
            .iter()
            .map(|t| decode_buffered(t))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(bad)?;
        let mut channels = texts(&items[5]).ok_or_else(bad)?;
        channels.sort();
        let resumed = ResumedSession {
            session_id: session_id.to_owned(),
            resume_token: new_token,
            claims: Arc::new(claims.into()),
            authorized_at_ms: number(&items[2]).ok_or_else(bad)?,
            expiring_sent: text(&items[3]).as_deref() == Some("1"),
            channels,
            buffered,
            last_seq: number(&items[4]).ok_or_else(bad)?,
        };
        Ok(Some((resumed, epoch)))
    }

    async fn refresh_session(
        &self,
        session_id: &str,
        epoch: u64,
        claims: Arc<Claims>,
        now_ms: u64,
    ) -> Result<RefreshOutcome, StoreError> {
        let (jti, iat, exp) = claim_args(&claims);
        let reply: String = self
            .invoke(
                self.scripts
                    .refresh
                    .arg(&self.prefix)
                    .arg(now_ms)
                    .arg(self.settings.leeway_ms)
                    .arg(session_id)
                    .arg(epoch)
                    .arg(&claims.sub)
                    .arg(jti)
                    .arg(iat)
                    .arg(exp)
                    .arg(encode_claims(&claims)?),
            )
            .await?;
        Ok(if reply == "revoked" {
            RefreshOutcome::Revoked
        } else {
            RefreshOutcome::Refreshed
        })
    }

    async fn note_expiring_sent(&self, session_id: &str, epoch: u64) -> Result<(), StoreError> {
        self.session_op("expiring", session_id, epoch, 0, "").await
    }

    async fn subscribe(
        &self,
        session_id: &str,
        epoch: u64,
        channel: &str,
    ) -> Result<(), StoreError> {
        self.session_op("join", session_id, epoch, 0, channel).await
    }

    async fn unsubscribe(
        &self,
        session_id: &str,
        epoch: u64,
        channel: &str,
    ) -> Result<(), StoreError> {
        self.session_op("leave", session_id, epoch, 0, channel)
            .await
    }

    async fn publish(
        &self,
        channel: &str,
        from: Option<&str>,
        data: Payload,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        self.fan_out(channel, "c", from, data, now_ms).await
    }

    async fn send_to_user(
        &self,
        sub: &str,
        data: Payload,
        now_ms: u64,
    ) -> Result<usize, StoreError> {
        let channel = wsauth_core::rules::user_channel(sub);
        self.fan_out(&channel, &format!("u:{sub}"), None, data, now_ms)
            .await
    }

    async fn detach(&self, session_id: &str, epoch: u64, now_ms: u64) -> Result<(), StoreError> {
        self.session_op("detach", session_id, epoch, now_ms, "")
            .await
    }

    async fn end_session(&self, session_id: &str, epoch: u64) -> Result<(), StoreError> {
        self.session_op("end", session_id, epoch, 0, "").await
    }

    async fn revoke(&self, revocation: Revocation, now_ms: u64) -> Result<usize, StoreError> {
        let (kind, value, at_s) = match &revocation {
            Revocation::Token { jti } => ("jti", jti.clone(), 0),
            Revocation::Subject { sub, at_s } => ("sub", sub.clone(), *at_s),
            Revocation::Session { session_id } => {
                if !plausible_session_id(session_id) {
                    return Ok(0);
                }
                ("session", session_id.clone(), 0)
            }
        };
        let json = serde_json::to_string(&RevocationJson::from(&revocation))
            .map_err(|_| protocol_error("revoke"))?;
        let told: u64 = self
            .invoke(
                self.scripts
                    .revoke
                    .arg(&self.prefix)
                    .arg(now_ms)
                    .arg(self.settings.max_token_lifetime_ms)
                    .arg(self.settings.leeway_ms)
                    .arg(kind)
                    .arg(value)
                    .arg(at_s)
                    .arg(json),
            )
            .await?;
        Ok(usize::try_from(told).unwrap_or(usize::MAX))
    }

    async fn session(&self, session_id: &str) -> Result<Option<SessionInfo>, StoreError> {
        if !plausible_session_id(session_id) {
            return Ok(None);
        }
        Ok(self.read_sessions("session", session_id).await?.pop())
    }

    async fn sessions_of(&self, sub: &str) -> Result<Vec<SessionInfo>, StoreError> {
        self.read_sessions("sessions_of", sub).await
    }

    async fn is_revoked(&self, claims: &Claims, now_ms: u64) -> Result<bool, StoreError> {
        let (jti, iat, _) = claim_args(claims);
        let revoked: u64 = self
            .invoke(
                self.scripts
                    .read
                    .arg(&self.prefix)
                    .arg("revoked")
                    .arg(now_ms)
                    .arg(&claims.sub)
                    .arg(jti)
                    .arg(iat),
            )
            .await?;
        Ok(revoked == 1)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        ping(&self.conn).await.map_err(unavailable)?;
        self.stream.check()
    }

    fn notice_stream(&self) -> NoticeStreamStats {
        self.stream.stats()
    }

    async fn purge_expired(&self, now_ms: u64) -> Result<(), StoreError> {
        // Redis's TTLs drop keys on its own clock; this drops them on the nodes'
        // clock, in batches so that no script runs long.
        const BATCH: u64 = 500;
        loop {
            let handled: u64 = self
                .invoke(
                    self.scripts
                        .purge
                        .arg(&self.prefix)
                        .arg(now_ms)
                        .arg(self.settings.resume_grace_ms)
                        .arg(self.settings.leeway_ms)
                        .arg(BATCH),
                )
                .await?;
            if handled < BATCH {
                return Ok(());
            }
        }
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let sessions = self.scan(&["s:"]).await?;
        let revocations = self.scan(&["rj:", "rs:"]).await?;
        let mut buffered = 0;
        for key in self.scan(&["sb:"]).await? {
            let len: u64 = redis::cmd("LLEN")
                .arg(&key)
                .query_async(&mut self.conn())
                .await
                .map_err(unavailable)?;
            buffered += usize::try_from(len).unwrap_or(usize::MAX);
        }
        Ok(StoreStats {
            sessions: sessions.len(),
            revocations: revocations.len(),
            buffered,
        })
    }

    async fn settle(&self) -> Result<(), StoreError> {
        let mark = self.next_mark.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.marks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(mark, tx);
        let key = format!("{}in:{}", self.prefix, self.inbox);
        let _: String = redis::cmd("XADD")
            .arg(&key)
            .arg("*")
            .arg("m")
            .arg(format!("{{\"kind\":\"mark\",\"mark\":{mark}}}"))
            .query_async(&mut self.conn())
            .await
            .map_err(unavailable)?;
        match tokio::time::timeout(Duration::from_secs(5), rx).await {
            Ok(Ok(())) => Ok(()),
            _ => {
                self.marks
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&mark);
                Err(StoreError::Unavailable(
                    "redis: this node's notice stream is not being read".into(),
                ))
            }
        }
    }
}

impl RedisStore {
    async fn session_op(
        &self,
        op: &str,
        session_id: &str,
        epoch: u64,
        now_ms: u64,
        channel: &str,
    ) -> Result<(), StoreError> {
        let _: u64 = self
            .invoke(
                self.scripts
                    .session_ops
                    .arg(&self.prefix)
                    .arg(op)
                    .arg(session_id)
                    .arg(epoch)
                    .arg(now_ms)
                    .arg(self.settings.resume_grace_ms)
                    .arg(self.settings.leeway_ms)
                    .arg(channel),
            )
            .await?;
        Ok(())
    }

    /// Sessions as `read.lua` lists them (`op`: `session` or `sessions_of`).
    async fn read_sessions(&self, op: &str, key: &str) -> Result<Vec<SessionInfo>, StoreError> {
        let reply: Value = self
            .invoke(self.scripts.read.arg(&self.prefix).arg(op).arg(key))
            .await?;
        let bad = || protocol_error("sessions");
        let Value::Array(rows) = reply else {
            return Ok(Vec::new());
        };
        rows.iter()
            .map(|row| {
                let Value::Array(f) = row else {
                    return Err(bad());
                };
                if f.len() != 6 {
                    return Err(bad());
                }
                let mut channels = texts(&f[4]).ok_or_else(bad)?;
                channels.sort();
                Ok(SessionInfo {
                    session_id: text(&f[0]).ok_or_else(bad)?,
                    attached: text(&f[1]).as_deref() == Some("1"),
                    created_at_ms: number(&f[2]).ok_or_else(bad)?,
                    expires_at_ms: number(&f[3]).ok_or_else(bad)?,
                    channels,
                    node: text(&f[5]),
                })
            })
            .collect()
    }

    /// Keys under `<prefix><kind>` for each kind, by SCAN (for stats, not the hot path).
    async fn scan(&self, kinds: &[&str]) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        for kind in kinds {
            let pattern = format!("{}{kind}*", glob_escape(&self.prefix));
            let mut cursor = 0u64;
            loop {
                let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(1000)
                    .query_async(&mut self.conn())
                    .await
                    .map_err(unavailable)?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }
}

fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
