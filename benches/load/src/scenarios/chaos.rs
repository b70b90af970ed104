//! `chaos` (issue 15): several `wsauth-server` nodes on one Redis (AOF, fsync always) that this
//! scenario starts itself; sessions that publish and resume on their own while a node is
//! SIGKILLed and restarted every `kill_every_s`, Redis is restarted every
//! `redis_restart_every_s` and users are revoked at random times. At the end: an accounting of
//! what was accepted against what was delivered, revocations, lost sessions and RSS per node.
//!
//! Definitions used by the accounting:
//! - a publish is **accepted** when its `published` answer reached the publisher; a publish whose
//!   connection dropped before the answer is **uncertain** (delivering it is allowed, not owed);
//! - a **subscriber** is a session that was never revoked and never lost; it is **owed** every
//!   publish accepted on its channel that was sent after its `joined` arrived;
//! - an owed publish that never arrived is **covered by a gap** when the subscriber resumed with
//!   `gap: true` and the publish was sent between the start of the connection before that resume
//!   and the resume (a conservative window); otherwise it is **missing** (must be 0).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicU32;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use crate::client::recv;
use crate::svg;

/// Which node each kill takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KillOrder {
    /// Any node, at random: a node spared for long ends up holding most sessions.
    Random,
    /// Each node in turn, so that every node's sessions move again and again.
    RoundRobin,
}

/// What one `chaos` run does.
#[derive(Debug, Clone)]
pub struct Chaos {
    pub nodes: usize,
    pub sessions: usize,
    pub secs: f64,
    pub kill_every_s: f64,
    pub kill_order: KillOrder,
    pub redis_restart_every_s: f64,
    /// How long Redis stays down at each restart.
    pub redis_down_ms: u64,
    pub revocations: usize,
    /// Each session publishes once per interval (the first at a random offset).
    pub publish_interval_ms: u64,
    /// Session `i` joins channel `i % channels`.
    pub channels: usize,
    /// Seconds after the last publish (all nodes up) for replays and deliveries to settle.
    pub drain_s: f64,
    pub server_bin: PathBuf,
    /// Where the nodes' logs go (one file per node slot, appended across restarts).
    pub log_dir: PathBuf,
    pub secret: String,
}

/// Run phases, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ramp,
    Publish,
    Drain,
    Stop,
}

const ADMIN_KEY_PREFIX: &str = "chaos-admin-key-";
/// A revoked socket must close within this after the admin answer.
const REVOKE_CLOSE_BOUND: Duration = Duration::from_secs(1);

/// A tiny xorshift generator: the tool needs spread, not quality.
struct Rng(u64);

impl Rng {
    fn seeded(extra: u64) -> Self {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
        Rng((t ^ extra.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One node slot: fixed ports, a process that comes and goes.
struct Slot {
    ws: SocketAddr,
    admin: SocketAddr,
    child: Mutex<Option<Child>>,
    /// The running process's pid; 0 while down or not ready.
    ready_pid: AtomicU32,
    starts: AtomicU64,
}

/// The nodes, Redis and what happened to them.
struct Cluster {
    slots: Vec<Slot>,
    redis: Mutex<Redis>,
    /// Read once: the restarter holds the `redis` lock for seconds.
    redis_url: String,
    redis_up: std::sync::atomic::AtomicBool,
    admin_key: String,
    cfg: Chaos,
    origin: Instant,
    /// Starts that exited before becoming ready (Redis down at the time).
    failed_starts: AtomicU64,
    /// (seconds since the chaos began, what) for the picture and the report.
    events: Mutex<Vec<(f64, String)>>,
}

/// `redis-server` with an append-only file synced on every write, so that a SIGKILL loses
/// nothing (as `wsauth_test_support::redis` starts it for the tests; the tool does not depend
/// on the test support). Its files go when dropped.
struct Redis {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Redis {
    fn start(dir: PathBuf) -> Result<Redis, String> {
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let port = free_addr()
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut redis = Redis {
            child: None,
            port,
            dir,
        };
        redis.spawn()?;
        Ok(redis)
    }

    /// Starts the process on this port and directory; returns once it answers `PING`.
    fn spawn(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let dir = self
            .dir
            .to_str()
            .ok_or("the Redis directory is not UTF-8")?;
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port,
                "--dir",
                dir,
                "--save",
                "",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--protected-mode", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server: {e}"))?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("redis-server exited: {status}"));
            }
            if redis_answers(self.port) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        Err(format!(
            "redis-server did not answer on port {port} within 30 s"
        ))
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// SIGKILL: a crash, not a shutdown.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `PING` over a plain socket: whether Redis answers yet.
fn redis_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}

/// µs since `origin`.
fn us_since(origin: Instant) -> u64 {
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn free_addr() -> std::io::Result<SocketAddr> {
    std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()
}

/// One HTTP/1.1 request with `connection: close`; the status and body.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    key: Option<&str>,
    body: Option<&str>,
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("connect: {:?}", e.kind()))?;
        let mut req = format!("{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n");
        if let Some(key) = key {
            let _ = write!(req, "authorization: Bearer {key}\r\n");
        }
        let body = body.unwrap_or("");
        let _ = write!(
            req,
            "content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(req.as_bytes())
            .await
            .map_err(|e| format!("write: {:?}", e.kind()))?;
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer)
            .await
            .map_err(|e| format!("read: {:?}", e.kind()))?;
        let text = String::from_utf8_lossy(&answer);
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| "no status".to_string())?;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
        Ok((status, body))
    };
    tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .unwrap_or_else(|_| Err("timeout".into()))
}

impl Cluster {
    fn event(&self, what: String) {
        let t = self.origin.elapsed().as_secs_f64();
        if let Ok(mut e) = self.events.lock() {
            e.push((t, what));
        }
    }

    /// Starts the node of `slot` on its ports (its log appended to its file).
    fn spawn(&self, slot: usize) -> Result<(), String> {
        let s = &self.slots[slot];
        let log_path = self.cfg.log_dir.join(format!("node-{slot}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let redis_url = &self.redis_url;
        let child = Command::new(&self.cfg.server_bin)
            .args(["--listen", &s.ws.to_string()])
            .args(["--admin-listen", &s.admin.to_string()])
            .env("WSAUTH_ADMIN_KEY", &self.admin_key)
            .env("WSAUTH_JWT__HS256_SECRET", &self.cfg.secret)
            .env("WSAUTH_NODE_ID", format!("chaos-{slot}"))
            .env("WSAUTH_STORE__KIND", "redis")
            .env("WSAUTH_STORE__URL", redis_url)
            .env("WSAUTH_STORE__KEY_PREFIX", "chaos:")
            .env("WSAUTH_LOG__LEVEL", "warn")
            .env("WSAUTH_SHUTDOWN_DRAIN_MS", "0")
            // Every client of the benchmark comes from 127.0.0.1 and reconnects at once.
            .env("WSAUTH_LIMITS__MAX_UNAUTHENTICATED_PER_IP", "100000")
            .env("WSAUTH_LIMITS__MAX_UNAUTHENTICATED", "100000")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.cfg.server_bin.display()))?;
        s.starts.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut c) = s.child.lock() {
            *c = Some(child);
        }
        Ok(())
    }

    /// Waits until `/readyz` of `slot` answers 200 (Redis may be down meanwhile), then marks
    /// it up.
    async fn await_ready(&self, slot: usize, within: Duration) -> Result<(), String> {
        let s = &self.slots[slot];
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok((200, _)) = http(s.admin, "GET", "/readyz", None, None).await {
                let pid = s
                    .child
                    .lock()
                    .ok()
                    .and_then(|c| c.as_ref().map(Child::id))
                    .unwrap_or(0);
                s.ready_pid.store(pid, Ordering::Relaxed);
                return Ok(());
            }
            let exited = s
                .child
                .lock()
                .ok()
                .and_then(|mut c| c.as_mut().and_then(|c| c.try_wait().ok().flatten()));
            if let Some(status) = exited {
                return Err(format!("node {slot} exited: {status}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("node {slot} not ready within {within:?}"))
    }

    /// (Re)starts the node of `slot` until `/readyz` says 200, as an orchestrator would: a node
    /// started while Redis is down exits 1 (docs/operations.md, Failure modes).
    async fn start_until_ready(&self, slot: usize, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            self.spawn(slot)?;
            let left = deadline.saturating_duration_since(Instant::now());
            match self.await_ready(slot, left).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() < deadline => {
                    self.kill(slot);
                    self.failed_starts.fetch_add(1, Ordering::Relaxed);
                    self.event(format!("node {slot} start failed ({e}); again"));
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// SIGKILL and wait.
    fn kill(&self, slot: usize) {
        let s = &self.slots[slot];
        s.ready_pid.store(0, Ordering::Relaxed);
        if let Ok(mut c) = s.child.lock()
            && let Some(mut child) = c.take()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn up_slots(&self) -> Vec<usize> {
        (0..self.slots.len())
            .filter(|&i| self.slots[i].ready_pid.load(Ordering::Relaxed) != 0)
            .collect()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.slots.len() {
            self.kill(i);
        }
    }
}

/// Per session: when its revocation was asked for and answered (µs since origin + 1; 0: not).
#[derive(Default)]
struct RevokeMark {
    requested_us: AtomicU64,
    answered_us: AtomicU64,
}

/// What every session task shares.
struct Shared {
    cluster: Arc<Cluster>,
    phase: watch::Receiver<Phase>,
    revoked: Vec<RevokeMark>,
    signer: Signer,
    run_id: String,
    timeout: Duration,
    joined: AtomicU64,
    accepted: AtomicU64,
    delivered: AtomicU64,
    reconnects: AtomicU64,
    lost: AtomicU64,
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// Still running when the run stopped.
    Running,
    /// Its socket closed 4403 at this µs.
    RevokedClosed(u64),
    /// It was revoked while detached and its resume was refused (as it must be).
    RevokedRefused,
    /// Resume refused without a revocation, or a close that ends a session for good.
    Lost(String),
}

/// One accepted publish.
#[derive(Debug, Clone, Copy)]
struct Accepted {
    counter: u32,
    sent_us: u64,
    acked_us: u64,
}

/// Everything one session saw.
struct SessionLog {
    index: usize,
    channel: usize,
    session_id: Option<String>,
    resume_token: Option<String>,
    joined: bool,
    joined_us: Option<u64>,
    last_seq: u64,
    delivered: HashSet<u64>,
    duplicates: u64,
    seq_regressions: u64,
    order_regressions: u64,
    last_counter_from: HashMap<u32, u32>,
    accepted: Vec<Accepted>,
    next_counter: u32,
    uncertain: u64,
    publish_refused: BTreeMap<String, u64>,
    /// (start of the previous connection, resume) windows of `gap: true` resumes.
    gaps: Vec<(u64, u64)>,
    attached_us: u64,
    drops: BTreeMap<String, u64>,
    resumes: u64,
    retries: BTreeMap<String, u64>,
    /// The last resume attempt broke before its answer: the token may be spent.
    resume_interrupted: bool,
    resumed_after_revoke: u64,
    unexpected_4403: u64,
    end: End,
}

/// Why the live loop stopped.
enum Stopped {
    Phase,
    Drop(Fail),
}

/// The key a delivery is known by: publisher index and its counter.
fn delivery_key(publisher: u32, counter: u32) -> u64 {
    (u64::from(publisher) << 32) | u64::from(counter)
}

impl SessionLog {
    fn new(index: usize, channels: usize) -> Self {
        Self {
            index,
            channel: index % channels.max(1),
            session_id: None,
            resume_token: None,
            joined: false,
            joined_us: None,
            last_seq: 0,
            delivered: HashSet::new(),
            duplicates: 0,
            seq_regressions: 0,
            order_regressions: 0,
            last_counter_from: HashMap::new(),
            accepted: Vec::new(),
            next_counter: 1,
            uncertain: 0,
            publish_refused: BTreeMap::new(),
            gaps: Vec::new(),
            attached_us: 0,
            drops: BTreeMap::new(),
            resumes: 0,
            retries: BTreeMap::new(),
            resume_interrupted: false,
            resumed_after_revoke: 0,
            unexpected_4403: 0,
            end: End::Running,
        }
    }

    fn channel_name(&self) -> String {
        format!("bench:chaos:{}", self.channel)
    }

    /// Records a `message` frame.
    fn on_message(&mut self, v: &Value, sh: &Shared) {
        let seq = v.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let data = v.get("data");
        let publisher = data
            .and_then(|d| d.get("p"))
            .and_then(Value::as_u64)
            .unwrap_or(u64::MAX);
        let counter = data
            .and_then(|d| d.get("n"))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        let (Ok(publisher), Ok(counter)) = (u32::try_from(publisher), u32::try_from(counter))
        else {
            return;
        };
        if seq <= self.last_seq {
            self.seq_regressions += 1;
        } else {
            self.last_seq = seq;
        }
        if !self.delivered.insert(delivery_key(publisher, counter)) {
            self.duplicates += 1;
            return;
        }
        sh.delivered.fetch_add(1, Ordering::Relaxed);
        let last = self.last_counter_from.entry(publisher).or_insert(0);
        if counter < *last {
            self.order_regressions += 1;
        }
        *last = (*last).max(counter);
    }

    fn revoke_answered_us(&self, sh: &Shared) -> u64 {
        sh.revoked[self.index].answered_us.load(Ordering::Relaxed)
    }

    fn revoke_requested(&self, sh: &Shared) -> bool {
        sh.revoked[self.index].requested_us.load(Ordering::Relaxed) != 0
    }

    /// Reads frames until one of type `want` (answering request `id`) arrives; messages on the
    /// way are recorded.
    async fn await_reply(&mut self, ws: &mut Ws, want: &str, sh: &Shared) -> Result<Value, Fail> {
        loop {
            let v = recv(ws).await?;
            match v.get("type").and_then(Value::as_str) {
                Some("message") => self.on_message(&v, sh),
                Some(t) if t == want => return Ok(v),
                Some("error") => {
                    let code = v.get("code").and_then(Value::as_str).unwrap_or("error");
                    return Err(Fail::Server(code.to_string()));
                }
                _ => {}
            }
        }
    }

    /// Authenticates a new session on `ws`.
    async fn authenticate(&mut self, ws: &mut Ws, sh: &Shared) -> Result<(), Fail> {
        let sub = format!("chaos-{}-u{}", sh.run_id, self.index);
        let jti = format!("chaos-{}-j{}", sh.run_id, self.index);
        let token = sh.signer.token(&sub, &jti);
        send(ws, &json!({"type": "auth", "id": 1, "token": token})).await?;
        let v = within(
            sh.timeout,
            "auth",
            self.await_reply(ws, "authenticated", sh),
        )
        .await?;
        self.session_id = v
            .get("session_id")
            .and_then(Value::as_str)
            .map(str::to_string);
        self.resume_token = v
            .get("resume_token")
            .and_then(Value::as_str)
            .map(str::to_string);
        Ok(())
    }

    /// Resumes the session on `ws`.
    async fn resume(&mut self, ws: &mut Ws, sh: &Shared) -> Result<(), Fail> {
        let msg = json!({"type": "resume", "id": 1,
            "session_id": self.session_id, "resume_token": self.resume_token,
            "last_seq": self.last_seq});
        send(ws, &msg).await?;
        self.resume_interrupted = true;
        let res = within(sh.timeout, "resume", self.await_reply(ws, "resumed", sh)).await;
        if matches!(res, Err(Fail::Server(_))) {
            // An answer came: the token was not spent by an exchange we never saw.
            self.resume_interrupted = false;
        }
        let v = res?;
        self.resume_interrupted = false;
        let now = us_since(sh.cluster.origin) + 1;
        let answered = self.revoke_answered_us(sh);
        if answered != 0 && answered <= now {
            self.resumed_after_revoke += 1;
        }
        self.resume_token = v
            .get("resume_token")
            .and_then(Value::as_str)
            .map(str::to_string);
        if v.get("gap").and_then(Value::as_bool) == Some(true) {
            self.gaps.push((self.attached_us, now));
        }
        self.resumes += 1;
        Ok(())
    }

    async fn join(&mut self, ws: &mut Ws, sh: &Shared) -> Result<(), Fail> {
        let channel = self.channel_name();
        send(ws, &json!({"type": "join", "id": 2, "channel": channel})).await?;
        within(sh.timeout, "join", self.await_reply(ws, "joined", sh)).await?;
        self.joined = true;
        self.joined_us = Some(us_since(sh.cluster.origin) + 1);
        sh.joined.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Connected and attached: publish on schedule, record deliveries, until the connection
    /// drops or the run stops.
    async fn live(
        &mut self,
        ws: &mut Ws,
        sh: &Shared,
        rng: &mut Rng,
        phase: &mut watch::Receiver<Phase>,
        next_publish: &mut tokio::time::Instant,
    ) -> Stopped {
        let interval = Duration::from_millis(sh.cluster.cfg.publish_interval_ms.max(1));
        let mut in_flight: Option<(u32, u64)> = None;
        let channel = self.channel_name();
        loop {
            let current = *phase.borrow();
            if current == Phase::Stop {
                return Stopped::Phase;
            }
            let due = current == Phase::Publish && in_flight.is_none();
            tokio::select! {
                changed = phase.changed() => {
                    if changed.is_err() {
                        return Stopped::Phase;
                    }
                }
                _ = tokio::time::sleep_until(*next_publish), if due => {
                    let counter = self.next_counter;
                    self.next_counter += 1;
                    let msg = json!({"type": "publish", "id": u64::from(counter) + 100,
                        "channel": channel, "data": {"p": self.index, "n": counter}});
                    let sent = us_since(sh.cluster.origin) + 1;
                    in_flight = Some((counter, sent));
                    // Spread: the next one an interval later, ±10 %.
                    let jitter = 0.9 + 0.2 * rng.unit();
                    *next_publish = tokio::time::Instant::now() + interval.mul_f64(jitter);
                    if let Err(f) = send(ws, &msg).await {
                        self.uncertain += 1;
                        return Stopped::Drop(f);
                    }
                }
                frame = recv(ws) => {
                    let v = match frame {
                        Ok(v) => v,
                        Err(f) => {
                            if in_flight.is_some() {
                                self.uncertain += 1;
                            }
                            return Stopped::Drop(f);
                        }
                    };
                    let id = v.get("id").and_then(Value::as_u64);
                    match v.get("type").and_then(Value::as_str) {
                        Some("message") => self.on_message(&v, sh),
                        Some("published") => {
                            if let Some((counter, sent_us)) = in_flight.take()
                                && id == Some(u64::from(counter) + 100)
                            {
                                self.accepted.push(Accepted {
                                    counter,
                                    sent_us,
                                    acked_us: us_since(sh.cluster.origin) + 1,
                                });
                                sh.accepted.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        Some("error") => {
                            let code = v.get("code").and_then(Value::as_str).unwrap_or("error");
                            if id.is_some() && in_flight.is_some() {
                                in_flight = None;
                                report::count(&mut self.publish_refused, code.to_string());
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// A close that ends the session here: revocation, or a loss.
    fn on_drop(&mut self, f: &Fail, sh: &Shared) -> bool {
        match f {
            Fail::Closed(Some(4403)) => {
                if self.revoke_requested(sh) {
                    self.end = End::RevokedClosed(us_since(sh.cluster.origin) + 1);
                } else {
                    self.unexpected_4403 += 1;
                    self.end = End::Lost("close:4403 without a revocation".into());
                }
                true
            }
            // Closes after which the session cannot be resumed.
            Fail::Closed(Some(code @ (4400 | 4401 | 4409 | 1000 | 1007 | 1002))) => {
                self.end = End::Lost(format!("close:{code}"));
                true
            }
            _ => false,
        }
    }

    /// Runs the session until the run stops or the session ends.
    async fn run(mut self, sh: Arc<Shared>, start_delay: Duration) -> SessionLog {
        let mut rng = Rng::seeded(self.index as u64 + 1);
        let mut phase = sh.phase.clone();
        tokio::time::sleep(start_delay).await;
        let interval = sh.cluster.cfg.publish_interval_ms.max(1);
        let mut next_publish = tokio::time::Instant::now()
            + Duration::from_millis(rng.next() % interval)
            + Duration::from_secs(1);
        let mut failures_in_a_row = 0u32;
        let mut first = true;
        loop {
            if *phase.borrow() == Phase::Stop {
                break;
            }
            if !first {
                // Backoff while nodes or Redis are down: 50 ms doubling to 2 s, with jitter.
                let base = 50u64 << failures_in_a_row.min(6);
                let wait = Duration::from_millis(base.min(2000)).mul_f64(0.5 + rng.unit());
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = phase.changed() => {}
                }
                if *phase.borrow() == Phase::Stop {
                    break;
                }
            }
            first = false;
            let up = sh.cluster.up_slots();
            let slot = if up.is_empty() {
                rng.below(sh.cluster.slots.len())
            } else {
                up[rng.below(up.len())]
            };
            let addr = sh.cluster.slots[slot].ws;
            let target = Target {
                url: format!("ws://{addr}/ws"),
                addr,
            };
            let mut ws = match within(sh.timeout, "connect", open(&target, None)).await {
                Ok(ws) => ws,
                Err(f) => {
                    failures_in_a_row += 1;
                    report::count(&mut self.retries, format!("open:{}", f.key()));
                    continue;
                }
            };
            let attached = if self.session_id.is_none() {
                self.authenticate(&mut ws, &sh).await
            } else {
                sh.reconnects.fetch_add(1, Ordering::Relaxed);
                self.resume(&mut ws, &sh).await
            };
            if let Err(f) = attached {
                failures_in_a_row += 1;
                if let Fail::Server(code) = &f
                    && code == "TOKEN_REVOKED"
                    && self.revoke_requested(&sh)
                {
                    self.end = End::RevokedRefused;
                    break;
                }
                if let Fail::Server(code) = &f
                    && code == "SESSION_NOT_FOUND"
                {
                    if self.revoke_requested(&sh) {
                        self.end = End::RevokedRefused;
                    } else {
                        let why = if self.resume_interrupted {
                            "SESSION_NOT_FOUND after an interrupted resume"
                        } else {
                            "SESSION_NOT_FOUND"
                        };
                        self.end = End::Lost(why.into());
                        sh.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                if self.on_drop(&f, &sh) {
                    if matches!(self.end, End::Lost(_)) {
                        sh.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                report::count(&mut self.retries, format!("attach:{}", f.key()));
                continue;
            }
            self.attached_us = us_since(sh.cluster.origin) + 1;
            if !self.joined
                && let Err(f) = self.join(&mut ws, &sh).await
            {
                failures_in_a_row += 1;
                if self.on_drop(&f, &sh) {
                    if matches!(self.end, End::Lost(_)) {
                        sh.lost.fetch_add(1, Ordering::Relaxed);
                    }
                    break;
                }
                report::count(&mut self.retries, format!("join:{}", f.key()));
                continue;
            }
            failures_in_a_row = 0;
            match self
                .live(&mut ws, &sh, &mut rng, &mut phase, &mut next_publish)
                .await
            {
                Stopped::Phase => break,
                Stopped::Drop(f) => {
                    report::count(&mut self.drops, f.key());
                    if self.on_drop(&f, &sh) {
                        if matches!(self.end, End::Lost(_)) {
                            sh.lost.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                }
            }
        }
        // Secrets are not kept past the run.
        self.resume_token = None;
        self.session_id = None;
        self
    }
}

/// RSS samples: (seconds since the chaos began, slot, KiB).
type RssSamples = Vec<(f64, usize, u64)>;

/// Revokes user `index` through a live node's admin API, retrying while nodes or Redis are down.
async fn revoke(cluster: &Cluster, shared: &Shared, index: usize, rng: &mut Rng) -> u32 {
    let body = json!({"sub": format!("chaos-{}-u{index}", shared.run_id)}).to_string();
    let mark = &shared.revoked[index];
    let mut attempts = 0;
    loop {
        attempts += 1;
        let up = cluster.up_slots();
        let slot = if up.is_empty() {
            rng.below(cluster.slots.len())
        } else {
            up[rng.below(up.len())]
        };
        mark.requested_us
            .store(us_since(cluster.origin) + 1, Ordering::Relaxed);
        let res = http(
            cluster.slots[slot].admin,
            "POST",
            "/admin/revoke",
            Some(&cluster.admin_key),
            Some(&body),
        )
        .await;
        if let Ok((200, _)) = res {
            mark.answered_us
                .store(us_since(cluster.origin) + 1, Ordering::Relaxed);
            return attempts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Seconds as a `Duration`, clamped at 0.
fn secs_f(s: f64) -> Duration {
    Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 })
}

/// The whole run.
pub async fn chaos(ctx: Arc<Ctx>, cfg: Chaos) -> Result<ChaosReport, String> {
    std::fs::create_dir_all(&cfg.log_dir)
        .map_err(|e| format!("cannot create {}: {e}", cfg.log_dir.display()))?;
    eprintln!(
        "chaos: starting redis (AOF, fsync always) and {} nodes; node logs in {}",
        cfg.nodes,
        cfg.log_dir.display()
    );
    let redis_dir = cfg.log_dir.join("redis");
    let redis = tokio::task::spawn_blocking(move || Redis::start(redis_dir))
        .await
        .map_err(|e| format!("redis did not start: {e}"))??;
    let mut slots = Vec::new();
    for _ in 0..cfg.nodes.max(1) {
        slots.push(Slot {
            ws: free_addr().map_err(|e| format!("no free port: {e}"))?,
            admin: free_addr().map_err(|e| format!("no free port: {e}"))?,
            child: Mutex::new(None),
            ready_pid: AtomicU32::new(0),
            starts: AtomicU64::new(0),
        });
    }
    let cluster = Arc::new(Cluster {
        slots,
        redis_url: redis.url(),
        redis: Mutex::new(redis),
        redis_up: std::sync::atomic::AtomicBool::new(true),
        admin_key: format!("{ADMIN_KEY_PREFIX}{}-{}", ctx.run_id, client::now_secs()),
        cfg: cfg.clone(),
        origin: Instant::now(),
        events: Mutex::new(Vec::new()),
        failed_starts: AtomicU64::new(0),
    });
    for slot in 0..cluster.slots.len() {
        cluster.spawn(slot)?;
    }
    for slot in 0..cluster.slots.len() {
        cluster.await_ready(slot, Duration::from_secs(30)).await?;
    }
    let (phase_tx, phase_rx) = watch::channel(Phase::Ramp);
    let shared = Arc::new(Shared {
        cluster: cluster.clone(),
        phase: phase_rx,
        revoked: (0..cfg.sessions).map(|_| RevokeMark::default()).collect(),
        signer: ctx.signer.clone(),
        run_id: ctx.run_id.clone(),
        timeout: ctx.timeout,
        joined: AtomicU64::new(0),
        accepted: AtomicU64::new(0),
        delivered: AtomicU64::new(0),
        reconnects: AtomicU64::new(0),
        lost: AtomicU64::new(0),
    });

    // Ramp: sessions start at 200 a second, spread over the nodes by chance.
    ctx.progress.phase("chaos:ramp", cfg.sessions as u64);
    let handles: Vec<JoinHandle<SessionLog>> = (0..cfg.sessions)
        .map(|i| {
            let log = SessionLog::new(i, cfg.channels);
            let delay = Duration::from_millis(i as u64 * 5);
            tokio::spawn(log.run(shared.clone(), delay))
        })
        .collect();
    let ramp_deadline =
        Instant::now() + Duration::from_secs(60) + Duration::from_millis(cfg.sessions as u64 * 5);
    let mut reported = 0;
    while Instant::now() < ramp_deadline {
        let joined = shared.joined.load(Ordering::Relaxed);
        for _ in reported..joined {
            ctx.progress.ok();
        }
        reported = joined;
        if joined >= cfg.sessions as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ctx.progress.finish();
    let joined_at_ramp = shared.joined.load(Ordering::Relaxed);
    eprintln!(
        "chaos: {joined_at_ramp}/{} sessions joined; chaos for {:.0} s",
        cfg.sessions, cfg.secs
    );

    let chaos_t0 = Instant::now();
    let chaos_offset = cluster.origin.elapsed().as_secs_f64();
    let _ = phase_tx.send(Phase::Publish);
    cluster.event("chaos begins".into());
    let end = chaos_t0 + secs_f(cfg.secs);

    // Node kills.
    let killer = {
        let cluster = cluster.clone();
        let mut rng = Rng::seeded(7);
        let every = secs_f(cfg.kill_every_s);
        tokio::spawn(async move {
            let mut kills = 0u64;
            if every.is_zero() {
                return kills;
            }
            let mut at = chaos_t0 + every;
            while at < end {
                tokio::time::sleep_until(at.into()).await;
                let slot = match cluster.cfg.kill_order {
                    KillOrder::Random => rng.below(cluster.slots.len()),
                    KillOrder::RoundRobin => kills as usize % cluster.slots.len(),
                };
                cluster.kill(slot);
                cluster.event(format!("SIGKILL node {slot}"));
                kills += 1;
                if let Err(e) = cluster
                    .start_until_ready(slot, Duration::from_secs(60))
                    .await
                {
                    eprintln!("chaos: {e}");
                }
                at += every;
            }
            kills
        })
    };
    // Redis restarts.
    let redis_restarter = {
        let cluster = cluster.clone();
        let every = secs_f(cfg.redis_restart_every_s);
        let down = Duration::from_millis(cfg.redis_down_ms);
        tokio::spawn(async move {
            let mut restarts = 0u64;
            if every.is_zero() {
                return restarts;
            }
            let mut at = chaos_t0 + every;
            while at < end {
                tokio::time::sleep_until(at.into()).await;
                cluster.redis_up.store(false, Ordering::Relaxed);
                cluster.event("redis SIGKILL".into());
                let c = cluster.clone();
                let res = tokio::task::spawn_blocking(move || {
                    let mut r = c
                        .redis
                        .lock()
                        .map_err(|_| "redis lock poisoned".to_string())?;
                    r.kill();
                    std::thread::sleep(down);
                    r.spawn()
                })
                .await;
                if let Err(e) = res.map_err(|e| e.to_string()).and_then(|r| r) {
                    eprintln!("chaos: redis did not restart: {e}");
                    break;
                }
                cluster.redis_up.store(true, Ordering::Relaxed);
                cluster.event("redis up".into());
                restarts += 1;
                at += every;
            }
            restarts
        })
    };
    // Revocations at random times within the middle 80 % of the chaos.
    let revoker = {
        let cluster = cluster.clone();
        let shared = shared.clone();
        let mut rng = Rng::seeded(11);
        let n = cfg.revocations.min(cfg.sessions);
        let secs = cfg.secs;
        tokio::spawn(async move {
            let mut pool: Vec<usize> = (0..shared.revoked.len()).collect();
            let mut plan: Vec<(f64, usize)> = (0..n)
                .map(|_| {
                    let who = pool.swap_remove(rng.below(pool.len()));
                    (secs * (0.1 + 0.8 * rng.unit()), who)
                })
                .collect();
            plan.sort_by(|a, b| a.0.total_cmp(&b.0));
            let mut attempts = 0u64;
            for (t, who) in plan {
                tokio::time::sleep_until((chaos_t0 + secs_f(t)).into()).await;
                attempts += u64::from(revoke(&cluster, &shared, who, &mut rng).await);
            }
            attempts
        })
    };
    // RSS every 10 s per slot, and a status line.
    let sampler = {
        let cluster = cluster.clone();
        let shared = shared.clone();
        let mut phase = shared.phase.clone();
        tokio::spawn(async move {
            let mut samples: RssSamples = Vec::new();
            // Halfway between kills (which fall on whole multiples of their period from the
            // start), so that a sample rarely finds its node restarting.
            let mut tick = tokio::time::interval_at(
                (chaos_t0 + Duration::from_secs(5)).into(),
                Duration::from_secs(10),
            );
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = phase.wait_for(|p| *p == Phase::Stop) => break,
                }
                let t = chaos_t0.elapsed().as_secs_f64();
                let mut rss = Vec::new();
                for (i, s) in cluster.slots.iter().enumerate() {
                    let pid = s.ready_pid.load(Ordering::Relaxed);
                    let kib = (pid != 0).then(|| read_rss_kib(pid)).flatten();
                    if let Some(kib) = kib {
                        samples.push((t, i, kib));
                    }
                    rss.push(kib.map_or("down".to_string(), |k| format!("{} MiB", k / 1024)));
                }
                let revoked = shared
                    .revoked
                    .iter()
                    .filter(|m| m.answered_us.load(Ordering::Relaxed) != 0)
                    .count();
                eprintln!(
                    "[chaos {t:>5.0}s] nodes up {}/{} redis {} · accepted {} delivered {} \
                     resume attempts {} revoked {revoked} lost {} · rss {}",
                    cluster.up_slots().len(),
                    cluster.slots.len(),
                    if cluster.redis_up.load(Ordering::Relaxed) {
                        "up"
                    } else {
                        "down"
                    },
                    shared.accepted.load(Ordering::Relaxed),
                    shared.delivered.load(Ordering::Relaxed),
                    shared.reconnects.load(Ordering::Relaxed),
                    shared.lost.load(Ordering::Relaxed),
                    rss.join(", "),
                );
            }
            samples
        })
    };

    tokio::time::sleep_until(end.into()).await;
    let kills = killer.await.unwrap_or(0);
    let redis_restarts = redis_restarter.await.unwrap_or(0);
    let revoke_attempts = revoker.await.unwrap_or(0);
    // Stop publishing; make sure every node is up before the drain.
    let _ = phase_tx.send(Phase::Drain);
    cluster.event("drain begins".into());
    for slot in 0..cluster.slots.len() {
        if cluster.slots[slot].ready_pid.load(Ordering::Relaxed) == 0 {
            cluster.kill(slot);
            cluster
                .start_until_ready(slot, Duration::from_secs(60))
                .await?;
        }
    }
    eprintln!("chaos: publishing stopped; draining {:.0} s", cfg.drain_s);
    tokio::time::sleep(secs_f(cfg.drain_s)).await;
    let _ = phase_tx.send(Phase::Stop);
    let mut logs = Vec::new();
    let mut panicked = 0u64;
    for h in handles {
        match h.await {
            Ok(log) => logs.push(log),
            Err(_) => panicked += 1,
        }
    }
    let samples = sampler.await.unwrap_or_default();
    let events = cluster
        .events
        .lock()
        .map(|e| {
            e.iter()
                .map(|(t, w)| (t - chaos_offset, w.clone()))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let starts: Vec<u64> = cluster
        .slots
        .iter()
        .map(|s| s.starts.load(Ordering::Relaxed))
        .collect();
    let revoke_marks: Vec<(u64, u64)> = shared
        .revoked
        .iter()
        .map(|m| {
            (
                m.requested_us.load(Ordering::Relaxed),
                m.answered_us.load(Ordering::Relaxed),
            )
        })
        .collect();
    drop(shared);
    let mut report = account(&cfg, &logs, &revoke_marks);
    report.kills = kills;
    report.redis_restarts = redis_restarts;
    report.revoke_attempts = revoke_attempts;
    report.panicked = panicked;
    for entry in &mut report.revocation_log {
        entry.0 -= chaos_offset;
    }
    report.revocation_log.sort_by(|a, b| a.0.total_cmp(&b.0));
    report.node_starts = starts;
    report.failed_starts = cluster.failed_starts.load(Ordering::Relaxed);
    report.rss = samples;
    report.events = events;
    report.joined_at_ramp = joined_at_ramp;
    Ok(report)
}

/// The accounting and what the run did.
#[derive(Debug, Default)]
pub struct ChaosReport {
    pub cfg_line: String,
    pub sessions: u64,
    pub joined_at_ramp: u64,
    pub subscribers: u64,
    pub accepted: u64,
    pub uncertain: u64,
    pub publish_refused: BTreeMap<String, u64>,
    pub owed: u64,
    pub delivered_owed: u64,
    pub delivered_unowed: u64,
    pub missing_without_gap: u64,
    pub missing_covered_by_gap: u64,
    pub gap_announcements: u64,
    pub duplicates: u64,
    pub seq_regressions: u64,
    pub order_regressions: u64,
    /// Subscribers missing at least one owed message with no gap.
    pub subscribers_with_missing: u64,
    pub revocations: u64,
    pub revoke_attempts: u64,
    pub revoked_closed: u64,
    pub revoked_refused_resume: u64,
    pub revoked_close_late: u64,
    pub revoked_stayed_open: u64,
    pub revoked_resumed: u64,
    pub revoke_close_ms: Vec<f64>,
    /// Per revocation: answered at (s since the chaos began), 4403 seen after (ms), outcome.
    pub revocation_log: Vec<(f64, Option<f64>, &'static str)>,
    pub lost: BTreeMap<String, u64>,
    pub unexpected_4403: u64,
    pub resumes: u64,
    pub drops: BTreeMap<String, u64>,
    pub retries: BTreeMap<String, u64>,
    pub kills: u64,
    pub redis_restarts: u64,
    pub node_starts: Vec<u64>,
    pub failed_starts: u64,
    pub panicked: u64,
    pub rss: RssSamples,
    pub events: Vec<(f64, String)>,
}

/// Compares what was accepted with what each subscriber received.
fn account(cfg: &Chaos, logs: &[SessionLog], revoke_marks: &[(u64, u64)]) -> ChaosReport {
    let mut r = ChaosReport {
        cfg_line: format!(
            "{} nodes, {} sessions on {} channels, {:.0} s, SIGKILL a node ({:?}) every {:.0} s, \
             redis restart every {:.0} s (down {} ms), {} revocations, a publish per session \
             every {} ms",
            cfg.nodes,
            cfg.sessions,
            cfg.channels,
            cfg.secs,
            cfg.kill_order,
            cfg.kill_every_s,
            cfg.redis_restart_every_s,
            cfg.redis_down_ms,
            cfg.revocations,
            cfg.publish_interval_ms
        ),
        sessions: logs.len() as u64,
        ..ChaosReport::default()
    };
    // Accepted publishes by channel: (publisher, accepted).
    let mut by_channel: HashMap<usize, Vec<(u32, Accepted)>> = HashMap::new();
    for log in logs {
        r.accepted += log.accepted.len() as u64;
        r.uncertain += log.uncertain;
        for (k, v) in &log.publish_refused {
            *r.publish_refused.entry(k.clone()).or_insert(0) += v;
        }
        for a in &log.accepted {
            by_channel
                .entry(log.channel)
                .or_default()
                .push((log.index as u32, *a));
        }
        r.duplicates += log.duplicates;
        r.seq_regressions += log.seq_regressions;
        r.order_regressions += log.order_regressions;
        r.gap_announcements += log.gaps.len() as u64;
        r.resumes += log.resumes;
        r.unexpected_4403 += log.unexpected_4403;
        r.revoked_resumed += log.resumed_after_revoke;
        for (k, v) in &log.drops {
            *r.drops.entry(k.clone()).or_insert(0) += v;
        }
        for (k, v) in &log.retries {
            *r.retries.entry(k.clone()).or_insert(0) += v;
        }
        if let End::Lost(why) = &log.end {
            *r.lost.entry(why.clone()).or_insert(0) += 1;
        }
    }
    for log in logs {
        let (requested, answered) = revoke_marks.get(log.index).copied().unwrap_or((0, 0));
        if requested != 0 {
            r.revocations += 1;
            let answered_s = answered as f64 / 1e6;
            let entry = match log.end {
                End::RevokedClosed(at) => {
                    r.revoked_closed += 1;
                    let ms = at.saturating_sub(answered) as f64 / 1000.0;
                    r.revoke_close_ms.push(ms);
                    if answered != 0 && ms > REVOKE_CLOSE_BOUND.as_secs_f64() * 1000.0 {
                        r.revoked_close_late += 1;
                    }
                    (answered_s, Some(ms), "closed 4403")
                }
                End::RevokedRefused => {
                    r.revoked_refused_resume += 1;
                    (answered_s, None, "refused at resume")
                }
                // Still attached at the end, never closed 4403.
                End::Running => {
                    r.revoked_stayed_open += 1;
                    (answered_s, None, "never closed")
                }
                End::Lost(_) => (answered_s, None, "lost"),
            };
            r.revocation_log.push(entry);
            continue;
        }
        if matches!(log.end, End::Lost(_)) {
            continue;
        }
        let Some(joined_us) = log.joined_us else {
            continue;
        };
        r.subscribers += 1;
        let mut missing_here = 0;
        let mut owed_keys = HashSet::new();
        for (publisher, a) in by_channel.get(&log.channel).into_iter().flatten() {
            if a.sent_us < joined_us {
                continue;
            }
            r.owed += 1;
            let key = delivery_key(*publisher, a.counter);
            owed_keys.insert(key);
            if log.delivered.contains(&key) {
                r.delivered_owed += 1;
            } else if log
                .gaps
                .iter()
                .any(|&(from, to)| a.acked_us >= from && a.sent_us <= to)
            {
                r.missing_covered_by_gap += 1;
            } else {
                missing_here += 1;
            }
        }
        r.delivered_unowed += log
            .delivered
            .iter()
            .filter(|k| !owed_keys.contains(k))
            .count() as u64;
        r.missing_without_gap += missing_here;
        if missing_here > 0 {
            r.subscribers_with_missing += 1;
        }
    }
    r.revoke_close_ms.sort_by(f64::total_cmp);
    r
}

fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted.get(i).copied()
}

fn map_text(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One node slot's RSS: samples, then first, min, max and last in KiB.
type RssSummary = (usize, u64, u64, u64, u64);

fn rss_summary(rss: &RssSamples, slots: usize) -> Vec<Option<RssSummary>> {
    (0..slots)
        .map(|slot| {
            let v: Vec<u64> = rss.iter().filter(|s| s.1 == slot).map(|s| s.2).collect();
            let (first, last) = (*v.first()?, *v.last()?);
            let min = *v.iter().min()?;
            let max = *v.iter().max()?;
            Some((v.len(), first, min, max, last))
        })
        .collect()
}

impl ChaosReport {
    /// The must-be-0 counts, by name.
    pub fn violations(&self) -> Vec<(&'static str, u64)> {
        [
            ("missing without gap", self.missing_without_gap),
            ("duplicates", self.duplicates),
            ("seq out of order", self.seq_regressions),
            ("publisher order broken", self.order_regressions),
            ("revoked socket open > 1 s", self.revoked_close_late),
            ("revoked socket never closed", self.revoked_stayed_open),
            ("revoked session resumed", self.revoked_resumed),
            ("sessions lost", self.lost.values().sum()),
            ("task panics", self.panicked),
        ]
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect()
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "wsauth-load chaos  {}", self.cfg_line);
        let _ = writeln!(
            s,
            "  chaos done     {} node SIGKILLs (starts per slot {:?}, of which {} exited: Redis was down), {} redis restarts",
            self.kills, self.node_starts, self.failed_starts, self.redis_restarts
        );
        let _ = writeln!(
            s,
            "  sessions       {} ({} joined at the ramp); {} subscribers accounted (not revoked, not lost)",
            self.sessions, self.joined_at_ramp, self.subscribers
        );
        let _ = writeln!(
            s,
            "  resumes        {} ok; drops {}",
            self.resumes,
            map_text(&self.drops)
        );
        let _ = writeln!(s, "  retries        {}", map_text(&self.retries));
        let _ = writeln!(
            s,
            "  publishes      {} accepted, {} uncertain (connection lost before the answer), refused: {}",
            self.accepted,
            self.uncertain,
            map_text(&self.publish_refused)
        );
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "  | accounting                                   |      count | must be |"
        );
        let _ = writeln!(
            s,
            "  |----------------------------------------------|-----------:|--------:|"
        );
        let mut row = |what: &str, n: u64, must: &str| {
            let _ = writeln!(s, "  | {what:<44} | {n:>10} | {must:>7} |");
        };
        row("deliveries owed to subscribers", self.owed, "");
        row("delivered exactly once", self.delivered_owed, "= owed");
        row(
            "missing, covered by an announced gap",
            self.missing_covered_by_gap,
            "",
        );
        row("missing without a gap", self.missing_without_gap, "0");
        row(
            "subscribers missing any without a gap",
            self.subscribers_with_missing,
            "0",
        );
        row("duplicates", self.duplicates, "0");
        row("seq not increasing", self.seq_regressions, "0");
        row("publisher's order broken", self.order_regressions, "0");
        row("gap announcements", self.gap_announcements, "");
        row(
            "delivered, not owed (uncertain publishes)",
            self.delivered_unowed,
            "",
        );
        row("revocations answered", self.revocations, "");
        row("  closed 4403", self.revoked_closed, "");
        row(
            "  refused at resume (revoked while detached)",
            self.revoked_refused_resume,
            "",
        );
        row(
            "  socket open > 1 s after the answer",
            self.revoked_close_late,
            "0",
        );
        row("  socket never closed", self.revoked_stayed_open, "0");
        row("  resumed after the answer", self.revoked_resumed, "0");
        row(
            "sessions lost (not revoked, not expired)",
            self.lost.values().sum(),
            "0",
        );
        let _ = writeln!(s);
        let q = |p| quantile(&self.revoke_close_ms, p).map_or("-".into(), |v| format!("{v:.1}"));
        let _ = writeln!(
            s,
            "  revocation answered → 4403 seen, ms (0: seen first): p50 {}  p99 {}  max {}  (n={}; admin calls {})",
            q(0.5),
            q(0.99),
            q(1.0),
            self.revoke_close_ms.len(),
            self.revoke_attempts
        );
        if !self.lost.is_empty() {
            let _ = writeln!(s, "  lost by reason: {}", map_text(&self.lost));
        }
        let _ = writeln!(
            s,
            "  RSS per node slot (MiB, sampled every 10 s across restarts):"
        );
        for (slot, sum) in rss_summary(&self.rss, self.node_starts.len())
            .iter()
            .enumerate()
        {
            match sum {
                Some((n, first, min, max, last)) => {
                    let _ = writeln!(
                        s,
                        "    node {slot}: {n} samples, first {:.1}, min {:.1}, max {:.1}, last {:.1}",
                        *first as f64 / 1024.0,
                        *min as f64 / 1024.0,
                        *max as f64 / 1024.0,
                        *last as f64 / 1024.0
                    );
                }
                None => {
                    let _ = writeln!(s, "    node {slot}: no samples");
                }
            }
        }
        let v = self.violations();
        if v.is_empty() {
            let _ = writeln!(s, "  verdict        PASS: every must-be-0 count is 0");
        } else {
            let list = v
                .iter()
                .map(|(k, n)| format!("{k}={n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let _ = writeln!(s, "  verdict        FAIL: {list}");
        }
        s
    }

    pub fn to_json(&self) -> Value {
        let q = |p| quantile(&self.revoke_close_ms, p);
        json!({
            "scenario": "chaos",
            "config": self.cfg_line,
            "sessions": self.sessions,
            "joined_at_ramp": self.joined_at_ramp,
            "subscribers": self.subscribers,
            "kills": self.kills,
            "redis_restarts": self.redis_restarts,
            "node_starts": self.node_starts,
            "failed_starts": self.failed_starts,
            "resumes": self.resumes,
            "drops": self.drops,
            "retries": self.retries,
            "accepted": self.accepted,
            "uncertain": self.uncertain,
            "publish_refused": self.publish_refused,
            "owed": self.owed,
            "delivered_owed": self.delivered_owed,
            "missing_covered_by_gap": self.missing_covered_by_gap,
            "missing_without_gap": self.missing_without_gap,
            "subscribers_with_missing": self.subscribers_with_missing,
            "duplicates": self.duplicates,
            "seq_regressions": self.seq_regressions,
            "order_regressions": self.order_regressions,
            "gap_announcements": self.gap_announcements,
            "delivered_unowed": self.delivered_unowed,
            "revocations": self.revocations,
            "revoke_attempts": self.revoke_attempts,
            "revoked_closed": self.revoked_closed,
            "revoked_refused_resume": self.revoked_refused_resume,
            "revoked_close_late": self.revoked_close_late,
            "revoked_stayed_open": self.revoked_stayed_open,
            "revoked_resumed": self.revoked_resumed,
            "revoke_close_ms": {"p50": q(0.5), "p99": q(0.99), "max": q(1.0)},
            "revocation_log": self.revocation_log.iter().map(|(t, ms, what)| json!([(t * 1000.0).round() / 1000.0, ms, what])).collect::<Vec<_>>(),
            "lost": self.lost,
            "unexpected_4403": self.unexpected_4403,
            "panicked": self.panicked,
            "rss_kib": self.rss.iter().map(|(t, slot, kib)| json!([(t * 10.0).round() / 10.0, slot, kib])).collect::<Vec<_>>(),
            "events": self.events.iter().map(|(t, w)| json!([(t * 10.0).round() / 10.0, w])).collect::<Vec<_>>(),
            "violations": self.violations().into_iter().map(|(k, n)| (k.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
        })
    }

    /// RSS per node slot over time, with the kills and Redis restarts marked.
    pub fn svg(&self) -> String {
        const W: f64 = 960.0;
        const H: f64 = 480.0;
        const L: f64 = 80.0;
        const R: f64 = 30.0;
        const T: f64 = 80.0;
        const B: f64 = 60.0;
        let colors = [
            "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b",
        ];
        let t_max = self
            .rss
            .iter()
            .map(|s| s.0)
            .chain(self.events.iter().map(|e| e.0))
            .fold(1.0f64, f64::max);
        let mib = |k: u64| k as f64 / 1024.0;
        let y_max = self.rss.iter().map(|s| mib(s.2)).fold(1.0f64, f64::max) * 1.1;
        let x = |t: f64| L + (t / t_max).clamp(0.0, 1.0) * (W - L - R);
        let y = |v: f64| H - B - (v / y_max).clamp(0.0, 1.0) * (H - T - B);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12"><rect width="100%" height="100%" fill="white"/>"#
        );
        let _ = write!(
            s,
            r#"<text x="{L}" y="28" font-size="16">{}</text><text x="{L}" y="48">{}</text>"#,
            svg::escape("wsauth-load chaos: RSS per node slot (across SIGKILL restarts)"),
            svg::escape(&self.cfg_line)
        );
        let step = svg::nice_step(y_max, 6);
        let mut v = 0.0;
        while v <= y_max {
            let _ = write!(
                s,
                r##"<line x1="{L}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{v}</text>"##,
                W - R,
                L - 6.0,
                y(v) + 4.0,
                y = y(v)
            );
            v += step;
        }
        let tstep = svg::nice_step(t_max, 10);
        let mut t = 0.0;
        while t <= t_max {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" text-anchor="middle">{t}</text>"#,
                x(t),
                H - B + 18.0
            );
            t += tstep;
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">seconds since the chaos began</text><text x="20" y="{}" transform="rotate(-90 20 {})" text-anchor="middle">RSS MiB</text>"#,
            (L + W - R) / 2.0,
            H - 15.0,
            H / 2.0,
            H / 2.0
        );
        for (t, what) in &self.events {
            let color = if what.starts_with("redis") {
                "#999"
            } else if what.starts_with("SIGKILL") || what.contains("start failed") {
                "#f3a0a0"
            } else {
                "#9cc"
            };
            let _ = write!(
                s,
                r#"<line x1="{x:.1}" x2="{x:.1}" y1="{T}" y2="{}" stroke="{color}" stroke-dasharray="3,3"><title>{}</title></line>"#,
                H - B,
                svg::escape(what),
                x = x(*t)
            );
        }
        for slot in 0..self.node_starts.len() {
            let color = colors[slot % colors.len()];
            // One line per process: a kill of this slot between two samples breaks it.
            let killed = format!("SIGKILL node {slot}");
            let mut lines: Vec<Vec<String>> = vec![Vec::new()];
            let mut prev_t = f64::NEG_INFINITY;
            for p in self.rss.iter().filter(|p| p.1 == slot) {
                let restarted = self
                    .events
                    .iter()
                    .any(|(t, what)| *what == killed && *t > prev_t && *t <= p.0);
                if restarted && lines.last().is_some_and(|l| !l.is_empty()) {
                    lines.push(Vec::new());
                }
                if let Some(line) = lines.last_mut() {
                    line.push(format!("{:.1},{:.1}", x(p.0), y(mib(p.2))));
                }
                prev_t = p.0;
            }
            for pts in lines.iter().filter(|l| !l.is_empty()) {
                let _ = write!(
                    s,
                    r#"<polyline fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
                    pts.join(" ")
                );
            }
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" fill="{color}">node {slot}</text>"#,
                W - R - 60.0,
                T + 16.0 * (slot as f64 + 1.0)
            );
        }
        let _ = write!(
            s,
            r##"<text x="{L}" y="{}" fill="#999">dashed: pink = node SIGKILL (or a failed start), grey = Redis down/up, teal = chaos begins/drain begins</text></svg>"##,
            T - 8.0
        );
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Chaos {
        Chaos {
            nodes: 3,
            sessions: 4,
            secs: 10.0,
            kill_every_s: 5.0,
            kill_order: KillOrder::Random,
            redis_restart_every_s: 5.0,
            redis_down_ms: 0,
            revocations: 1,
            publish_interval_ms: 1000,
            channels: 2,
            drain_s: 1.0,
            server_bin: PathBuf::new(),
            log_dir: PathBuf::new(),
            secret: String::new(),
        }
    }

    fn accepted(counter: u32, sent_us: u64) -> Accepted {
        Accepted {
            counter,
            sent_us,
            acked_us: sent_us + 10,
        }
    }

    #[test]
    fn the_accounting_tells_delivered_missing_gaps_and_revocations_apart() {
        let c = cfg();
        let mut logs: Vec<SessionLog> = (0..4).map(|i| SessionLog::new(i, 2)).collect();
        for log in &mut logs {
            log.joined_us = Some(100);
        }
        // Session 0 (channel 0) publishes three; session 2 (channel 0) gets 1, misses 2 inside
        // a gap window, misses 3 outside one, and gets 1 again (a duplicate).
        logs[0].accepted = vec![accepted(1, 200), accepted(2, 300), accepted(3, 400)];
        logs[0]
            .delivered
            .extend([delivery_key(0, 1), delivery_key(0, 2), delivery_key(0, 3)]);
        logs[2].delivered.insert(delivery_key(0, 1));
        logs[2].duplicates = 1;
        logs[2].gaps.push((250, 350));
        // Session 1 was revoked and closed 300 ms after the answer; session 3 was lost.
        logs[1].end = End::RevokedClosed(1_000 + 300_000);
        logs[3].end = End::Lost("SESSION_NOT_FOUND".into());
        let marks = vec![(0, 0), (900, 1_000), (0, 0), (0, 0)];
        let r = account(&c, &logs, &marks);
        assert_eq!(r.accepted, 3);
        assert_eq!(r.subscribers, 2);
        assert_eq!(r.owed, 6);
        assert_eq!(r.delivered_owed, 4);
        assert_eq!(r.missing_covered_by_gap, 1);
        assert_eq!(r.missing_without_gap, 1);
        assert_eq!(r.subscribers_with_missing, 1);
        assert_eq!(r.duplicates, 1);
        assert_eq!(r.revocations, 1);
        assert_eq!(r.revoked_closed, 1);
        assert_eq!(r.revoked_close_late, 0);
        assert_eq!(r.revoke_close_ms, vec![300.0]);
        assert_eq!(r.lost.get("SESSION_NOT_FOUND"), Some(&1));
        let names: Vec<_> = r.violations().into_iter().map(|v| v.0).collect();
        assert_eq!(
            names,
            vec!["missing without gap", "duplicates", "sessions lost"]
        );
    }

    #[test]
    fn publishes_sent_before_the_join_are_not_owed() {
        let c = cfg();
        let mut logs: Vec<SessionLog> = (0..2).map(|i| SessionLog::new(i, 1)).collect();
        logs[0].joined_us = Some(100);
        logs[1].joined_us = Some(500);
        logs[0].accepted = vec![accepted(1, 200)];
        logs[0].delivered.insert(delivery_key(0, 1));
        let r = account(&c, &logs, &[(0, 0), (0, 0)]);
        assert_eq!((r.owed, r.delivered_owed, r.missing_without_gap), (1, 1, 0));
        assert!(r.violations().is_empty());
    }

    #[test]
    fn the_svg_is_well_formed_with_one_line_per_process() {
        let r = ChaosReport {
            node_starts: vec![1, 2],
            rss: vec![(0.0, 0, 10_000), (10.0, 0, 11_000), (10.0, 1, 9_000)],
            events: vec![
                (5.0, "SIGKILL node 0".into()),
                (5.0, "SIGKILL node 1".into()),
                (7.0, "redis SIGKILL".into()),
            ],
            cfg_line: "a & b".into(),
            ..ChaosReport::default()
        };
        let svg = r.svg();
        let doc = roxmltree::Document::parse(&svg).unwrap();
        let lines = doc
            .descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count();
        // Node 0's kill at 5 s splits its two samples; node 1's came before its only one.
        assert_eq!(lines, 3);
    }
}
