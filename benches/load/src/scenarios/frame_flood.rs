//! `frame-flood` (issue 15, finding 4): sockets that write pings or empty non-final
//! continuation frames as fast as the kernel takes them, against a `wsauth-server` this
//! scenario starts, measuring the server's CPU from `/proc` while a well-behaved client on
//! the same server sends app-level `ping`s. A flooder whose socket is closed reconnects and
//! floods again: that is the attacker's best strategy against a per-connection budget.
//!
//! The flooders speak raw WebSocket over TCP (the upgrade, the `auth` message and every frame
//! are written by hand, frames pre-encoded into 64 KiB buffers), so that the client is not
//! what limits the flood.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::kid_flood::{Server, free_addr};
use super::*;
use crate::client::now_secs;

/// What a flooding socket writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FrameKind {
    /// Pings, each with an 8-byte sequence number the server's pong echoes.
    Ping,
    /// A text frame that never ends: its first frame, then empty non-final continuations.
    Continuation,
    /// Both, alternating (a control frame may come between a message's fragments).
    Both,
}

/// Whether the flooders authenticate before flooding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Authed {
    True,
    False,
    /// `--sockets` authenticated flooders and as many unauthenticated ones.
    Both,
}

/// `frame-flood`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct FrameFlood {
    /// Seconds of flood.
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    #[arg(long, value_enum, default_value_t = FrameKind::Ping)]
    pub kind: FrameKind,
    #[arg(long, value_enum, default_value_t = Authed::True)]
    pub authenticated: Authed,
    /// Flooding sockets at once (each reconnects when closed).
    #[arg(long, default_value_t = 1)]
    pub sockets: u64,
    /// The server's `limits.frames_per_second`.
    #[arg(long, default_value_t = 1000)]
    pub frames_per_second: u32,
    /// The server's `limits.frame_burst`.
    #[arg(long, default_value_t = 2000)]
    pub frame_burst: u32,
    /// The "before" comparison: both limits at u32::MAX, so no flood is ever over budget.
    #[arg(long)]
    pub budget_off: bool,
    /// App-level `ping`s a second from the well-behaved client.
    #[arg(long, default_value_t = 20.0)]
    pub probe_rate: f64,
    /// The `wsauth-server` binary [default: the one next to this tool].
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

impl FrameFlood {
    fn limits(&self) -> (u32, u32) {
        if self.budget_off {
            (u32::MAX, u32::MAX)
        } else {
            (self.frames_per_second.max(1), self.frame_burst.max(1))
        }
    }

    /// Flooding sockets at once, all groups.
    pub fn max_sockets(&self) -> u64 {
        match self.authenticated {
            Authed::Both => self.sockets * 2,
            _ => self.sockets,
        }
    }
}

/// The write buffer's size: big writes, so that a syscall carries thousands of frames.
const BUF: usize = 64 * 1024;

/// A client frame (FIN + `opcode`), masked with the all-zero key: legal, and the payload
/// goes out as it is, so a pre-encoded buffer can be rewritten in place.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(first);
    match payload.len() {
        n if n < 126 => out.push(0x80 | n as u8),
        n if n <= 0xffff => {
            out.push(0x80 | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(0x80 | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(payload);
    out
}

const PING_LEN: usize = 14;
#[cfg(test)]
const CONT_LEN: usize = 6;

/// Fills `buf` with whole flood frames; returns how many. Pings carry the numbers after `seq`.
fn fill(buf: &mut Vec<u8>, kind: FrameKind, seq: &mut u64) -> u64 {
    buf.clear();
    let mut n: u64 = 0;
    while buf.len() + PING_LEN <= BUF {
        let ping = match kind {
            FrameKind::Ping => true,
            FrameKind::Continuation => false,
            FrameKind::Both => n.is_multiple_of(2),
        };
        if ping {
            *seq += 1;
            buf.extend_from_slice(&frame(0x89, &seq.to_be_bytes()));
        } else {
            buf.extend_from_slice(&frame(0x00, &[]));
        }
        n += 1;
    }
    n
}

/// Server frames (unmasked) parsed out of the bytes read.
#[derive(Default)]
struct Frames {
    buf: Vec<u8>,
}

impl Frames {
    /// The next whole frame: opcode and payload.
    fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let (len, at) = match b[1] & 0x7f {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => (
                usize::try_from(u64::from_be_bytes(b[2..10].try_into().ok()?)).ok()?,
                10,
            ),
            126 | 127 => return None,
            n => (usize::from(n), 2),
        };
        if b.len() < at + len {
            return None;
        }
        let opcode = b[0] & 0x0f;
        let payload = b[at..at + len].to_vec();
        self.buf.drain(..at + len);
        Some((opcode, payload))
    }
}

/// How a flooding socket's life ended.
#[derive(Debug, Clone, PartialEq)]
enum End {
    /// The server's close frame, with its code.
    Close(Option<u16>),
    /// The TCP connection ended without one.
    Eof,
    /// A read or write failed (the server reset the connection) and no close frame came.
    Reset,
    /// Still open when the flood was over.
    Deadline,
}

impl End {
    fn key(&self) -> String {
        match self {
            End::Close(Some(c)) => format!("close:{c}"),
            End::Close(None) => "close:none".into(),
            End::Eof => "eof".into(),
            End::Reset => "reset".into(),
            End::Deadline => "open-at-end".into(),
        }
    }
}

/// One flooding socket's life.
struct Life {
    written: u64,
    /// Upgrade done → closed (or the end of the flood).
    lifetime: Duration,
    /// The highest ping sequence number a pong echoed: pings the server handled, at least.
    echoed: u64,
    end: End,
}

/// The upgrade by hand; returns the stream and the bytes read past the response.
async fn upgrade(target: &Target) -> Result<(TcpStream, Vec<u8>), Fail> {
    let mut tcp = TcpStream::connect(target.addr)
        .await
        .map_err(|e| Fail::Connect(e.kind()))?;
    let _ = tcp.set_nodelay(true);
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        target.addr
    );
    tcp.write_all(request.as_bytes())
        .await
        .map_err(|e| Fail::Transport(format!("io:{:?}", e.kind())))?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(at) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        match tcp.read(&mut buf).await {
            Ok(0) => return Err(Fail::Eof),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) => return Err(Fail::Transport(format!("io:{:?}", e.kind()))),
        }
    };
    let status = head.get(9..12).and_then(|s| std::str::from_utf8(s).ok());
    if status != Some("101") {
        let status = status.and_then(|s| s.parse().ok()).unwrap_or(0);
        return Err(Fail::Http(status, None));
    }
    Ok((tcp, head.split_off(end)))
}

/// Sends `auth` and reads frames until `authenticated`.
async fn authenticate(tcp: &mut TcpStream, frames: &mut Frames, token: &str) -> Result<(), Fail> {
    let io = |e: std::io::Error| Fail::Transport(format!("io:{:?}", e.kind()));
    tcp.write_all(&frame(0x81, auth_msg(token).to_string().as_bytes()))
        .await
        .map_err(io)?;
    let mut buf = [0u8; 4096];
    loop {
        while let Some((opcode, payload)) = frames.next() {
            match opcode {
                1 => {
                    let v: Value = serde_json::from_slice(&payload)
                        .map_err(|_| Fail::Unexpected("non-json".into()))?;
                    match v.get("type").and_then(Value::as_str) {
                        Some("authenticated") => return Ok(()),
                        Some("error") => {
                            let code = v.get("code").and_then(Value::as_str).unwrap_or("error");
                            return Err(Fail::Server(code.into()));
                        }
                        _ => {}
                    }
                }
                8 => return Err(Fail::Closed(close_code(&payload))),
                _ => {}
            }
        }
        match tcp.read(&mut buf).await {
            Ok(0) => return Err(Fail::Eof),
            Ok(n) => frames.buf.extend_from_slice(&buf[..n]),
            Err(e) => return Err(io(e)),
        }
    }
}

fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}

/// Reads the server's frames until its close frame or the end of the stream.
async fn read_until_closed(rd: &mut OwnedReadHalf, frames: &mut Frames, echoed: &mut u64) -> End {
    let mut buf = vec![0u8; BUF];
    loop {
        while let Some((opcode, payload)) = frames.next() {
            match opcode {
                0xA if payload.len() == 8 => {
                    let seq = u64::from_be_bytes(payload.try_into().unwrap_or_default());
                    *echoed = (*echoed).max(seq);
                }
                8 => return End::Close(close_code(&payload)),
                _ => {}
            }
        }
        match rd.read(&mut buf).await {
            Ok(0) => return End::Eof,
            Ok(n) => frames.buf.extend_from_slice(&buf[..n]),
            Err(_) => return End::Reset,
        }
    }
}

/// Writes flood frames until the socket fails.
async fn write_flood(wr: &mut OwnedWriteHalf, kind: FrameKind, written: &mut u64) {
    if kind != FrameKind::Ping {
        // The message the continuations continue: a text frame, not final.
        if wr.write_all(&frame(0x01, b"{")).await.is_err() {
            return;
        }
        *written += 1;
    }
    let mut seq = 0;
    let mut buf = Vec::with_capacity(BUF);
    loop {
        let n = fill(&mut buf, kind, &mut seq);
        if wr.write_all(&buf).await.is_err() {
            return;
        }
        *written += n;
    }
}

/// One socket's flood: upgrade, maybe authenticate, then write until closed or `deadline`.
async fn flood_once(
    target: &Target,
    token: Option<&str>,
    kind: FrameKind,
    deadline: Instant,
) -> Result<Life, Fail> {
    let (mut tcp, rest) = upgrade(target).await?;
    let mut frames = Frames { buf: rest };
    if let Some(token) = token {
        authenticate(&mut tcp, &mut frames, token).await?;
    }
    let start = Instant::now();
    let (mut rd, mut wr) = tcp.into_split();
    let (mut written, mut echoed) = (0, 0);
    let end = {
        let reader = read_until_closed(&mut rd, &mut frames, &mut echoed);
        let writer = write_flood(&mut wr, kind, &mut written);
        tokio::pin!(reader, writer);
        let mut writer_done = false;
        let mut give_up = deadline;
        loop {
            tokio::select! {
                end = &mut reader => break end,
                () = &mut writer, if !writer_done => {
                    // A failed write: the close frame may still be on its way in.
                    writer_done = true;
                    give_up = give_up.min(Instant::now() + Duration::from_secs(1));
                }
                () = tokio::time::sleep_until(give_up.into()) => {
                    break if writer_done { End::Reset } else { End::Deadline };
                }
            }
        }
    };
    Ok(Life {
        written,
        lifetime: start.elapsed(),
        echoed,
        end,
    })
}

/// One flooder: floods, and when its socket is closed, reconnects and floods again.
async fn flooder(
    target: Arc<Target>,
    signer: Arc<Signer>,
    name: String,
    authed: bool,
    kind: FrameKind,
    deadline: Instant,
    progress: Arc<Progress>,
) -> (Vec<Life>, BTreeMap<String, u64>) {
    let mut lives = Vec::new();
    let mut failures = BTreeMap::new();
    let mut k = 0u64;
    while Instant::now() < deadline {
        k += 1;
        let token = authed.then(|| signer.token(&name, &format!("{name}-{k}")));
        // `flood_once` stops at the deadline itself; this bounds a stuck upgrade or auth.
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
        match tokio::time::timeout(left, flood_once(&target, token.as_deref(), kind, deadline))
            .await
        {
            Ok(Ok(life)) => {
                progress.ok();
                lives.push(life);
            }
            Ok(Err(f)) => {
                progress.fail();
                report::count(&mut failures, f.key());
                // Not a spin on a refusing server.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => break,
        }
    }
    (lives, failures)
}

/// The well-behaved client: app-level `ping` → `pong` at `rate` a second until `until`.
async fn probe(target: &Target, token: &str, rate: f64, until: Instant, col: &Collector) {
    let interval = Duration::from_secs_f64(1.0 / rate.max(0.1));
    let mut ws = match async {
        let mut ws = open(target, None).await?;
        send(&mut ws, &auth_msg(token)).await?;
        expect(&mut ws, "authenticated").await?;
        Ok::<_, Fail>(ws)
    }
    .await
    {
        Ok(ws) => ws,
        Err(f) => {
            col.fail(format!("probe-auth:{}", f.key()));
            return;
        }
    };
    let mut id = 1u64;
    let mut next = Instant::now();
    while Instant::now() < until {
        id += 1;
        let start = Instant::now();
        let res = within(Duration::from_secs(5), "pong", async {
            send(&mut ws, &json!({"type": "ping", "id": id})).await?;
            expect(&mut ws, "pong").await
        })
        .await;
        match res {
            Ok(_) => col.ok(start.elapsed()),
            Err(f) => {
                col.fail(format!("probe:{}", f.key()));
                if f.is_transport() {
                    return;
                }
            }
        }
        next += interval;
        tokio::time::sleep_until(next.into()).await;
    }
    close(ws).await;
}

/// Starts `wsauth-server` on `listen` with the HS256 `secret` and the frame budget.
async fn start_server(
    bin: &Path,
    listen: SocketAddr,
    secret: &str,
    f: &FrameFlood,
) -> Result<Server, String> {
    let admin = free_addr().map_err(|e| format!("no free port: {e}"))?;
    let (rate, burst) = f.limits();
    let child = Command::new(bin)
        .args(["--listen", &listen.to_string()])
        .args(["--admin-listen", &admin.to_string()])
        .env("WSAUTH_JWT__HS256_SECRET", secret)
        .env("WSAUTH_ADMIN_KEY", format!("frame-flood-{}", now_secs()))
        .env("WSAUTH_LIMITS__FRAMES_PER_SECOND", rate.to_string())
        .env("WSAUTH_LIMITS__FRAME_BURST", burst.to_string())
        .env("WSAUTH_LOG__LEVEL", "error")
        .stdout(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let server = Server(child);
    for _ in 0..300 {
        if TcpStream::connect(listen).await.is_ok() {
            return Ok(server);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(format!(
        "{} did not listen on {listen} within 15 s",
        bin.display()
    ))
}

/// The figures of one group of flooders (authenticated or not).
fn group_json(
    lives: &[Life],
    failures: &BTreeMap<String, u64>,
    flood_secs: f64,
    limits: Option<(u32, u32)>,
    sockets: u64,
) -> Value {
    let n = lives.len() as u64;
    let written: u64 = lives.iter().map(|l| l.written).sum();
    let lifetime_s: f64 = lives.iter().map(|l| l.lifetime.as_secs_f64()).sum();
    let mut ends = BTreeMap::new();
    for l in lives {
        report::count(&mut ends, l.end.key());
    }
    let closed: Vec<&Life> = lives.iter().filter(|l| l.end != End::Deadline).collect();
    let mean = |f: &dyn Fn(&Life) -> f64| {
        (!closed.is_empty())
            .then(|| closed.iter().map(|&l| f(l)).sum::<f64>() / closed.len() as f64)
    };
    // The budget a socket had: its burst, plus the rate over its life (the auth message and
    // the first fragment are frames too, but two frames are noise here).
    let budget = |(rate, burst): (u32, u32)| {
        mean(&|l| f64::from(burst) + f64::from(rate) * l.lifetime.as_secs_f64())
    };
    let round = |v: f64| (v * 10.0).round() / 10.0;
    json!({
        "flooders": sockets,
        "connections": n,
        "closed_by_server": closed.len(),
        "ends": ends,
        "failures": failures,
        "frames_written": written,
        "frames_written_per_s": round(written as f64 / flood_secs.max(1e-9)),
        "socket_seconds": round(lifetime_s),
        "closed_mean_lifetime_ms": mean(&|l| l.lifetime.as_secs_f64() * 1000.0).map(round),
        "closed_mean_frames_written": mean(&|l| l.written as f64).map(round),
        "closed_max_ping_echoed": closed.iter().map(|l| l.echoed).max(),
        "closed_mean_ping_echoed": mean(&|l| l.echoed as f64).map(round),
        "closed_mean_budget": limits.and_then(budget).map(round),
    })
}

/// `frame-flood`. Latency: the well-behaved client's `ping` sent → `pong`, during the flood.
pub async fn frame_flood(ctx: Arc<Ctx>, f: FrameFlood) -> Result<Report, String> {
    let bin = f.server_bin.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .map(|exe| exe.with_file_name("wsauth-server"))
            .unwrap_or_else(|_| "wsauth-server".into())
    });
    // The scenario's own secret: it starts the server, so none need be given.
    let secret = format!(
        "frame-flood-{}-0123456789abcdef0123456789abcdef",
        ctx.run_id
    );
    let signer = Arc::new(Signer::new(&secret));
    let listen = free_addr().map_err(|e| format!("no free port: {e}"))?;
    let server = start_server(&bin, listen, &secret, &f).await?;
    let pid = server.0.id();
    let target = Arc::new(Target {
        url: format!("ws://{listen}/ws"),
        addr: listen,
    });
    let secs = f.secs.max(0.1);
    let (rate, burst) = f.limits();
    let mut report = Report::new("frame-flood", &target.url);

    // The well-behaved client's latency with no flood, for comparison.
    let idle = Collector::new(ctx.progress.clone());
    ctx.progress.phase("probe-idle", 0);
    let probe_token = signer.token(&format!("probe-{}", ctx.run_id), "probe-idle");
    probe(
        &target,
        &probe_token,
        f.probe_rate,
        Instant::now() + Duration::from_secs(2),
        &idle,
    )
    .await;

    ctx.progress.phase("frame-flood", 0);
    let groups: Vec<bool> = match f.authenticated {
        Authed::True => vec![true],
        Authed::False => vec![false],
        Authed::Both => vec![true, false],
    };
    let probe_col = Collector::new(ctx.progress.clone());
    let cpu = CpuMeter::start(Some(pid));
    let t0 = Instant::now();
    let deadline = t0 + Duration::from_secs_f64(secs);
    let mut handles = Vec::new();
    for &authed in &groups {
        for i in 0..f.sockets {
            let name = format!(
                "flood-{}-{}-{i}",
                ctx.run_id,
                if authed { "a" } else { "u" }
            );
            handles.push(tokio::spawn(flooder(
                target.clone(),
                signer.clone(),
                name,
                authed,
                f.kind,
                deadline,
                ctx.progress.clone(),
            )));
        }
    }
    let probe_token = signer.token(&format!("probe-{}", ctx.run_id), "probe-flood");
    probe(&target, &probe_token, f.probe_rate, deadline, &probe_col).await;
    let (results, panicked) = join_all(handles).await;
    let flood_secs = t0.elapsed().as_secs_f64();
    let cpu = cpu.finish(results.iter().map(|(l, _)| l.len() as u64).sum());
    ctx.progress.finish();
    drop(server);

    let server_ms = cpu["server_ms"].as_u64();
    let mut by_group = serde_json::Map::new();
    let mut it = results.into_iter();
    for &authed in &groups {
        let mut lives = Vec::new();
        let mut failures = BTreeMap::new();
        for (l, fl) in it.by_ref().take(f.sockets as usize) {
            lives.extend(l);
            for (k, v) in fl {
                *failures.entry(k).or_insert(0) += v;
            }
        }
        let name = if authed {
            "authenticated"
        } else {
            "unauthenticated"
        };
        by_group.insert(
            name.into(),
            group_json(
                &lives,
                &failures,
                flood_secs,
                (!f.budget_off).then_some((rate, burst)),
                f.sockets,
            ),
        );
    }
    let connections: u64 = by_group
        .values()
        .map(|g| g["connections"].as_u64().unwrap_or(0))
        .sum();
    let round = |v: f64| (v * 100.0).round() / 100.0;
    let server_cpu_per_s = server_ms.map(|ms| round(ms as f64 / 1000.0 / flood_secs));
    let server_ms_per_conn = server_ms
        .filter(|_| connections > 0)
        .map(|ms| round(ms as f64 / connections as f64));

    let (idle_hist, idle_fail) = idle.take();
    let (hist, failures) = probe_col.take();
    report.hist = hist;
    report.failures = failures;
    merge_failures(&mut report.failures, idle_fail, "idle:");
    if panicked > 0 {
        report.failures.insert("panic".into(), panicked);
    }
    report.successes = report.hist.len();
    report.attempted = report.successes + report.failures_total();
    report.duration = Duration::from_secs_f64(flood_secs);
    for (k, v) in [
        ("kind", json!(format!("{:?}", f.kind).to_lowercase())),
        (
            "authenticated",
            json!(format!("{:?}", f.authenticated).to_lowercase()),
        ),
        ("sockets", json!(f.sockets)),
        ("frames_per_second", json!(rate)),
        ("frame_burst", json!(burst)),
        ("budget_off", json!(f.budget_off)),
        ("flood_s", json!(round(flood_secs))),
        ("cpu", cpu),
        ("server_cpu_s_per_s", json!(server_cpu_per_s)),
        ("server_cpu_ms_per_connection", json!(server_ms_per_conn)),
        ("probe_idle_latency_ms", latency_json(&idle_hist)),
        ("groups", Value::Object(by_group.clone())),
    ] {
        report.extra.insert(k.into(), v);
    }
    eprint!(
        "{}",
        table(
            &f,
            flood_secs,
            server_cpu_per_s,
            server_ms_per_conn,
            &by_group,
            &report
        )
    );
    Ok(report)
}

/// The run as a small text table, one row per group.
fn table(
    f: &FrameFlood,
    flood_secs: f64,
    cpu_per_s: Option<f64>,
    ms_per_conn: Option<f64>,
    groups: &serde_json::Map<String, Value>,
    report: &Report,
) -> String {
    let l = Latency::of(&report.hist);
    let mut s = String::new();
    let (rate, burst) = f.limits();
    let budget = if f.budget_off {
        "off".to_string()
    } else {
        format!("{burst} + {rate}/s")
    };
    let _ = writeln!(
        s,
        "frame-flood: {:?} × {} sockets, {:.1} s, budget {budget}: server CPU {} s/s, {} ms per connection; probe p50 {} ms p99 {} ms",
        f.kind,
        f.sockets,
        flood_secs,
        cpu_per_s.map_or("-".into(), |v| format!("{v:.2}")),
        ms_per_conn.map_or("-".into(), |v| format!("{v:.2}")),
        fmt_ms(l.p50),
        fmt_ms(l.p99),
    );
    let _ = writeln!(
        s,
        "  {:<16} {:>6} {:>8} {:>12} {:>11} {:>12} {:>12} {:>11}  ends",
        "group", "conns", "closed", "frames/s", "life ms", "written/conn", "echoed/conn", "budget"
    );
    for (name, g) in groups {
        let num = |k: &str| g[k].as_f64().map_or("-".into(), |v| format!("{v:.0}"));
        let _ = writeln!(
            s,
            "  {:<16} {:>6} {:>8} {:>12} {:>11} {:>12} {:>12} {:>11}  {}",
            name,
            num("connections"),
            num("closed_by_server"),
            num("frames_written_per_s"),
            num("closed_mean_lifetime_ms"),
            num("closed_mean_frames_written"),
            num("closed_mean_ping_echoed"),
            num("closed_mean_budget"),
            g["ends"],
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flood_buffers_hold_whole_masked_frames() {
        let mut seq = 0;
        let mut buf = Vec::new();
        let n = fill(&mut buf, FrameKind::Ping, &mut seq);
        assert_eq!(buf.len(), n as usize * PING_LEN);
        assert_eq!(&buf[..6], &[0x89, 0x88, 0, 0, 0, 0]);
        assert_eq!(&buf[6..14], &1u64.to_be_bytes());
        assert_eq!(seq, n);
        let n = fill(&mut buf, FrameKind::Continuation, &mut seq);
        assert_eq!(buf.len(), n as usize * CONT_LEN);
        assert_eq!(&buf[..6], &[0x00, 0x80, 0, 0, 0, 0]);
        let n = fill(&mut buf, FrameKind::Both, &mut seq);
        assert_eq!(
            buf.len(),
            (n as usize).div_ceil(2) * PING_LEN + (n as usize / 2) * CONT_LEN
        );
    }

    #[test]
    fn server_frames_are_parsed_across_reads() {
        let mut f = Frames::default();
        let mut bytes = vec![0x8a, 8];
        bytes.extend_from_slice(&7u64.to_be_bytes());
        bytes.extend_from_slice(&[0x88, 2, 0x11, 0x5d]);
        f.buf.extend_from_slice(&bytes[..5]);
        assert_eq!(f.next(), None);
        f.buf.extend_from_slice(&bytes[5..]);
        assert_eq!(f.next(), Some((0xA, 7u64.to_be_bytes().to_vec())));
        let (op, payload) = f.next().unwrap();
        assert_eq!((op, close_code(&payload)), (8, Some(4445)));
        assert_eq!(f.next(), None);
    }
}
