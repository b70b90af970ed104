//! The scenarios: connect, resume, refresh, fanout, rpc (in `scenarios/rpc.rs`), kid-flood
//! (in `scenarios/kid_flood.rs`), frame-flood (in `scenarios/frame_flood.rs`) and chaos (in
//! `scenarios/chaos.rs`).

mod chaos;
mod frame_flood;
mod kid_flood;
mod rpc;
pub use chaos::{Chaos, KillOrder, chaos};
pub use frame_flood::{FrameFlood, frame_flood};
pub use kid_flood::{Flood, FloodToken, kid_flood};
pub use rpc::{Pace, rpc};

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Fail, Signer, Target, Ws, close, expect, open, send, within};
use crate::progress::Progress;
use crate::report::{
    self, CpuMeter, Latency, Report, Rss, fmt_ms, new_histogram, read_rss_kib, record,
};

pub struct Ctx {
    pub target: Target,
    pub signer: Signer,
    pub timeout: Duration,
    pub run_id: String,
    pub progress: Arc<Progress>,
}

/// How the `connect` scenario authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// `{"type":"auth"}` as the first message.
    Message,
    /// `Authorization: Bearer` on the upgrade request.
    Header,
}

/// Pacing shared by every scenario's ramp-up.
#[derive(Debug, Clone, Copy)]
pub struct Ramp {
    /// Operations started per second at most (0: unpaced).
    pub rate: f64,
    /// Operations in flight at most.
    pub concurrency: usize,
}

/// Microseconds on one process-wide monotonic clock (publisher and subscribers share it).
fn clock_us() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    let origin = *ORIGIN.get_or_init(Instant::now);
    u64::try_from(origin.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// Latencies and failures of one phase, shared by its tasks.
struct Collector {
    hist: Mutex<Histogram<u64>>,
    failures: Mutex<BTreeMap<String, u64>>,
    origin: Instant,
    /// When the last operation settled, µs after `origin`.
    last_us: AtomicU64,
    progress: Arc<Progress>,
}

impl Collector {
    fn new(progress: Arc<Progress>) -> Arc<Self> {
        Arc::new(Self {
            hist: Mutex::new(new_histogram()),
            failures: Mutex::new(BTreeMap::new()),
            origin: Instant::now(),
            last_us: AtomicU64::new(0),
            progress,
        })
    }

    fn touch(&self) {
        let us = u64::try_from(self.origin.elapsed().as_micros()).unwrap_or(u64::MAX);
        self.last_us.fetch_max(us, Ordering::Relaxed);
    }

    fn ok(&self, d: Duration) {
        if let Ok(mut h) = self.hist.lock() {
            record(&mut h, d);
        }
        self.touch();
        self.progress.ok();
    }

    fn fail(&self, key: String) {
        if let Ok(mut f) = self.failures.lock() {
            report::count(&mut f, key);
        }
        self.touch();
        self.progress.fail();
    }

    fn last_instant(&self) -> Instant {
        self.origin + Duration::from_micros(self.last_us.load(Ordering::Relaxed))
    }

    fn take(&self) -> (Histogram<u64>, BTreeMap<String, u64>) {
        let h = self
            .hist
            .lock()
            .map(|mut h| std::mem::replace(&mut *h, new_histogram()))
            .unwrap_or_else(|_| new_histogram());
        let f = self
            .failures
            .lock()
            .map(|mut f| std::mem::take(&mut *f))
            .unwrap_or_default();
        (h, f)
    }
}

/// Starts `n` tasks at up to `rate` per second with at most `concurrency` holding a permit;
/// each task releases its permit when its in-flight part is over.
async fn ramp<F, Fut>(n: u64, r: Ramp, mut f: F) -> Vec<JoinHandle<Fut::Output>>
where
    F: FnMut(u64, OwnedSemaphorePermit) -> Fut,
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    let sem = Arc::new(Semaphore::new(r.concurrency.max(1)));
    let interval = if r.rate > 0.0 {
        Duration::from_secs_f64(1.0 / r.rate)
    } else {
        Duration::ZERO
    };
    // A late start may catch up by at most this much (timer granularity), never more.
    let max_lag = Duration::from_millis(50);
    let mut next = Instant::now();
    let mut handles = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    for i in 0..n {
        if !interval.is_zero() {
            tokio::time::sleep_until(next.into()).await;
        }
        let Ok(permit) = sem.clone().acquire_owned().await else {
            break;
        };
        let now = Instant::now();
        if now > next + max_lag {
            next = now;
        }
        next += interval;
        handles.push(tokio::spawn(f(i, permit)));
    }
    handles
}

/// Waits until `total` operations of the current phase have settled.
async fn settled(progress: &Progress, total: u64) {
    while progress.settled() < total {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn join_all<T>(handles: Vec<JoinHandle<T>>) -> (Vec<T>, u64) {
    let mut out = Vec::with_capacity(handles.len());
    let mut panicked = 0;
    for h in handles {
        match h.await {
            Ok(v) => out.push(v),
            Err(_) => panicked += 1,
        }
    }
    (out, panicked)
}

fn auth_msg(token: &str) -> Value {
    json!({"type": "auth", "id": 1, "token": token})
}

/// Connects and authenticates with the first message; returns the `authenticated` reply.
async fn open_authenticated(ctx: &Ctx, token: &str) -> Result<(Ws, Value), Fail> {
    let mut ws = open(&ctx.target, None).await?;
    send(&mut ws, &auth_msg(token)).await?;
    let v = expect(&mut ws, "authenticated").await?;
    Ok((ws, v))
}

fn merge_failures(into: &mut BTreeMap<String, u64>, from: BTreeMap<String, u64>, prefix: &str) {
    for (k, v) in from {
        *into.entry(format!("{prefix}{k}")).or_insert(0) += v;
    }
}

fn latency_json(h: &Histogram<u64>) -> Value {
    let l = Latency::of(h);
    json!({
        "count": l.count,
        "p50": fmt_ms(l.p50),
        "p99": fmt_ms(l.p99),
        "max": fmt_ms(l.max),
    })
}

fn ramp_extra(report: &mut Report, r: Ramp) {
    report.extra.insert("target_rate".into(), json!(r.rate));
    report
        .extra
        .insert("concurrency".into(), json!(r.concurrency));
}

/// `connect`: open N connections, authenticate each, hold them all, close.
pub async fn connect(
    ctx: Arc<Ctx>,
    n: u64,
    r: Ramp,
    mode: AuthMode,
    hold: Duration,
    pid: Option<u32>,
) -> Report {
    let mut report = Report::new("connect", &ctx.target.url);
    report.attempted = n;
    ramp_extra(&mut report, r);
    report.extra.insert(
        "auth".into(),
        json!(match mode {
            AuthMode::Message => "message",
            AuthMode::Header => "header",
        }),
    );
    let col = Collector::new(ctx.progress.clone());
    ctx.progress.phase("connect", n);
    let rss_before = pid.and_then(read_rss_kib);
    let (release_tx, release_rx) = watch::channel(false);
    let dropped = Arc::new(AtomicU64::new(0));
    let close_hist = Arc::new(Mutex::new((new_histogram(), new_histogram())));
    let drop_reasons = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let cpu = CpuMeter::start(pid);
    let t0 = Instant::now();
    let handles = ramp(n, r, |i, permit| {
        let ctx = ctx.clone();
        let col = col.clone();
        let mut release = release_rx.clone();
        let dropped = dropped.clone();
        let close_hist = close_hist.clone();
        let drop_reasons = drop_reasons.clone();
        async move {
            let sub = format!("load-{}-{i}", ctx.run_id);
            let token = ctx.signer.token(&sub, &format!("{sub}-0"));
            let start = Instant::now();
            let res = within(ctx.timeout, "auth", async {
                match mode {
                    AuthMode::Header => {
                        let mut ws = open(&ctx.target, Some(&token)).await?;
                        expect(&mut ws, "authenticated").await?;
                        Ok(ws)
                    }
                    AuthMode::Message => Ok(open_authenticated(&ctx, &token).await?.0),
                }
            })
            .await;
            drop(permit);
            let mut ws = match res {
                Ok(ws) => {
                    col.ok(start.elapsed());
                    ws
                }
                Err(f) => {
                    col.fail(f.key());
                    return;
                }
            };
            // Hold: keep reading so that pings are answered, until released.
            loop {
                tokio::select! {
                    _ = release.wait_for(|v| *v) => break,
                    m = ws.next() => {
                        let reason = match m {
                            Some(Ok(Message::Close(f))) => Fail::Closed(f.map(|f| u16::from(f.code))),
                            Some(Err(e)) => Fail::from_ws(e),
                            None => Fail::Eof,
                            Some(Ok(_)) => continue,
                        };
                        dropped.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut d) = drop_reasons.lock() {
                            report::count(&mut d, reason.key());
                        }
                        return;
                    }
                }
            }
            let (reply, ended) = close(ws).await;
            if let Ok(mut h) = close_hist.lock() {
                if let Some(d) = reply {
                    record(&mut h.0, d);
                }
                if let Some(d) = ended {
                    record(&mut h.1, d);
                }
            }
        }
    })
    .await;
    settled(&ctx.progress, n).await;
    report
        .extra
        .insert("cpu".into(), cpu.finish(ctx.progress.ok_count()));
    ctx.progress.finish();
    report.duration = col.last_instant().saturating_duration_since(t0);
    let held = ctx
        .progress
        .ok_count()
        .saturating_sub(dropped.load(Ordering::Relaxed));
    if let (Some(pid), Some(before)) = (pid, rss_before)
        && let Some(after) = read_rss_kib(pid)
    {
        report.rss = Some(Rss {
            before_kib: before,
            after_kib: after,
            connections: held,
        });
    }
    eprintln!("holding {held} connections for {:.1} s", hold.as_secs_f64());
    tokio::time::sleep(hold).await;
    let _ = release_tx.send(true);
    let close_start = Instant::now();
    let (_, panicked) = join_all(handles).await;
    let (hist, failures) = col.take();
    report.hist = hist;
    report.failures = failures;
    if panicked > 0 {
        report.failures.insert("panic".into(), panicked);
    }
    report.successes = report.hist.len();
    report.extra.insert("held_after_ramp".into(), json!(held));
    report.extra.insert(
        "dropped_during_hold".into(),
        json!(dropped.load(Ordering::Relaxed)),
    );
    if let Ok(d) = drop_reasons.lock() {
        report
            .extra
            .insert("dropped_during_hold_by".into(), json!(*d));
    }
    report
        .extra
        .insert("hold_s".into(), json!(hold.as_secs_f64()));
    if let Ok(h) = close_hist.lock() {
        report
            .extra
            .insert("close_reply_latency_ms".into(), latency_json(&h.0));
        report
            .extra
            .insert("close_tcp_end_latency_ms".into(), latency_json(&h.1));
    }
    report.extra.insert(
        "close_s".into(),
        json!((close_start.elapsed().as_secs_f64() * 1000.0).round() / 1000.0),
    );
    report
}

/// `resume`: per session, authenticate, drop the TCP connection without a close frame,
/// reconnect and resume. Latency: connect start → `resumed`.
pub async fn resume(ctx: Arc<Ctx>, n: u64, r: Ramp) -> Report {
    let mut report = Report::new("resume", &ctx.target.url);
    report.attempted = n;
    ramp_extra(&mut report, r);
    let col = Collector::new(ctx.progress.clone());
    let auth_failures = Collector::new(ctx.progress.clone());
    ctx.progress.phase("resume", n);
    let t0 = Instant::now();
    let handles = ramp(n, r, |i, permit| {
        let ctx = ctx.clone();
        let col = col.clone();
        let auth_failures = auth_failures.clone();
        async move {
            let sub = format!("load-{}-{i}", ctx.run_id);
            let token = ctx.signer.token(&sub, &format!("{sub}-0"));
            let (ws, v) = match within(ctx.timeout, "auth", open_authenticated(&ctx, &token)).await
            {
                Ok(x) => x,
                Err(f) => {
                    auth_failures.fail(f.key());
                    return;
                }
            };
            let sid = v
                .get("session_id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let rt = v
                .get("resume_token")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            // Unclean drop: the TCP connection closes without a WebSocket close frame.
            drop(ws);
            let start = Instant::now();
            let res = within(ctx.timeout, "resume", async {
                let mut ws = open(&ctx.target, None).await?;
                send(
                    &mut ws,
                    &json!({"type": "resume", "id": 1, "session_id": sid, "resume_token": rt}),
                )
                .await?;
                let v = expect(&mut ws, "resumed").await?;
                Ok((ws, v))
            })
            .await;
            drop(permit);
            match res {
                Ok((ws, v)) => {
                    let elapsed = start.elapsed();
                    if v.get("session_id").and_then(Value::as_str) == Some(sid.as_str()) {
                        col.ok(elapsed);
                    } else {
                        col.fail("resumed-other-session".into());
                    }
                    close(ws).await;
                }
                Err(f) => col.fail(f.key()),
            }
        }
    })
    .await;
    settled(&ctx.progress, n).await;
    ctx.progress.finish();
    report.duration = col
        .last_instant()
        .max(auth_failures.last_instant())
        .saturating_duration_since(t0);
    let (_, panicked) = join_all(handles).await;
    let (hist, failures) = col.take();
    report.hist = hist;
    report.failures = failures;
    merge_failures(&mut report.failures, auth_failures.take().1, "auth:");
    if panicked > 0 {
        report.failures.insert("panic".into(), panicked);
    }
    report.successes = report.hist.len();
    report
}

/// `refresh`: N sessions authenticate; once all are in, each sends M refreshes one after the
/// other. Latency: send `refresh` → `refreshed`.
pub async fn refresh(ctx: Arc<Ctx>, n: u64, m: u64, r: Ramp) -> Report {
    let mut report = Report::new("refresh", &ctx.target.url);
    ramp_extra(&mut report, r);
    report.extra.insert("sessions".into(), json!(n));
    report
        .extra
        .insert("refreshes_per_session".into(), json!(m));
    let auth = Collector::new(ctx.progress.clone());
    let col = Collector::new(ctx.progress.clone());
    ctx.progress.phase("auth", n);
    let (go_tx, go_rx) = watch::channel(false);
    let handles = ramp(n, r, |i, permit| {
        let ctx = ctx.clone();
        let auth = auth.clone();
        let col = col.clone();
        let mut go = go_rx.clone();
        async move {
            let sub = format!("load-{}-{i}", ctx.run_id);
            let token = ctx.signer.token(&sub, &format!("{sub}-0"));
            let start = Instant::now();
            let res = within(ctx.timeout, "auth", open_authenticated(&ctx, &token)).await;
            drop(permit);
            let mut ws = match res {
                Ok((ws, _)) => {
                    auth.ok(start.elapsed());
                    ws
                }
                Err(f) => {
                    auth.fail(f.key());
                    return;
                }
            };
            let tokens: Vec<String> = (1..=m)
                .map(|k| ctx.signer.token(&sub, &format!("{sub}-{k}")))
                .collect();
            if go.wait_for(|v| *v).await.is_err() {
                return;
            }
            for (k, token) in tokens.iter().enumerate() {
                let id = k as u64 + 2;
                let start = Instant::now();
                let res = within(ctx.timeout, "refresh", async {
                    send(
                        &mut ws,
                        &json!({"type": "refresh", "id": id, "token": token}),
                    )
                    .await?;
                    let v = expect(&mut ws, "refreshed").await?;
                    if v.get("id").and_then(Value::as_u64) != Some(id) {
                        return Err(Fail::Unexpected("refreshed-id".into()));
                    }
                    Ok(())
                })
                .await;
                match res {
                    Ok(()) => col.ok(start.elapsed()),
                    Err(f) => {
                        let transport = f.is_transport();
                        col.fail(f.key());
                        if transport {
                            for _ in k + 1..tokens.len() {
                                col.fail(format!("skipped-after-{}", f.key()));
                            }
                            return;
                        }
                    }
                }
            }
            close(ws).await;
        }
    })
    .await;
    settled(&ctx.progress, n).await;
    let authed = ctx.progress.ok_count();
    let (auth_hist, auth_fail) = auth.take();
    ctx.progress.phase("refresh", authed * m);
    let go_at = Instant::now();
    let _ = go_tx.send(true);
    settled(&ctx.progress, authed * m).await;
    ctx.progress.finish();
    report.duration = col.last_instant().saturating_duration_since(go_at);
    let (_, panicked) = join_all(handles).await;
    let (hist, failures) = col.take();
    report.hist = hist;
    report.failures = failures;
    report.attempted = n * m;
    let missing_auth = (n - authed) * m;
    if missing_auth > 0 {
        report
            .failures
            .insert("not-attempted-auth-failed".into(), missing_auth);
    }
    merge_failures(&mut report.failures, auth_fail, "auth:");
    if panicked > 0 {
        report.failures.insert("panic".into(), panicked);
    }
    report.successes = report.hist.len();
    report.extra.insert("authenticated".into(), json!(authed));
    report
        .extra
        .insert("auth_latency_ms".into(), latency_json(&auth_hist));
    report
}

/// `fanout`: N subscribers join one channel; a publisher publishes M messages carrying their
/// send time. Latency per delivery: publish sent → message received.
pub async fn fanout(
    ctx: Arc<Ctx>,
    n: u64,
    m: u64,
    r: Ramp,
    interval: Duration,
    drain: Duration,
    pid: Option<u32>,
) -> Report {
    let mut report = Report::new("fanout", &ctx.target.url);
    ramp_extra(&mut report, r);
    report.extra.insert("subscribers".into(), json!(n));
    report.extra.insert("messages".into(), json!(m));
    report
        .extra
        .insert("interval_ms".into(), json!(interval.as_millis() as u64));
    let channel = format!("bench:fanout-{}", ctx.run_id);
    let subs = Collector::new(ctx.progress.clone());
    let lost = Collector::new(ctx.progress.clone());
    ctx.progress.phase("subscribe", n);
    let rss_before = pid.and_then(read_rss_kib);
    let (release_tx, release_rx) = watch::channel(false);
    let delivered = Arc::new(AtomicU64::new(0));
    let last_delivery_us = Arc::new(AtomicU64::new(0));
    let handles = ramp(n, r, |i, permit| {
        let ctx = ctx.clone();
        let subs = subs.clone();
        let lost = lost.clone();
        let channel = channel.clone();
        let mut release = release_rx.clone();
        let delivered = delivered.clone();
        let last_delivery_us = last_delivery_us.clone();
        async move {
            // (publish index, latency µs) per delivery received.
            let mut lats: Vec<(u64, u64)> = Vec::with_capacity(usize::try_from(m).unwrap_or(0));
            let sub = format!("load-{}-{i}", ctx.run_id);
            let token = ctx.signer.token(&sub, &format!("{sub}-0"));
            let start = Instant::now();
            let res = within(ctx.timeout, "subscribe", async {
                let (mut ws, _) = open_authenticated(&ctx, &token).await?;
                send(&mut ws, &json!({"type": "join", "id": 2, "channel": channel})).await?;
                expect(&mut ws, "joined").await?;
                Ok(ws)
            })
            .await;
            drop(permit);
            let mut ws = match res {
                Ok(ws) => {
                    subs.ok(start.elapsed());
                    ws
                }
                Err(f) => {
                    subs.fail(f.key());
                    return lats;
                }
            };
            while (lats.len() as u64) < m {
                tokio::select! {
                    _ = release.wait_for(|v| *v) => break,
                    res = client::recv(&mut ws) => match res {
                        Ok(v) => {
                            if v.get("type").and_then(Value::as_str) != Some("message") {
                                continue;
                            }
                            let now = clock_us();
                            let sent = v.pointer("/data/t_us").and_then(Value::as_u64).unwrap_or(now);
                            let k = v.pointer("/data/k").and_then(Value::as_u64).unwrap_or(0);
                            lats.push((k, now.saturating_sub(sent)));
                            delivered.fetch_add(1, Ordering::Relaxed);
                            last_delivery_us.fetch_max(now, Ordering::Relaxed);
                            ctx.progress.ok();
                        }
                        Err(f) => {
                            lost.fail(format!("subscriber:{}", f.key()));
                            return lats;
                        }
                    }
                }
            }
            // Close only once every subscriber is done: closes racing the last
            // publish's deliveries would slow them down and be measured.
            let _ = release.wait_for(|v| *v).await;
            close(ws).await;
            lats
        }
    })
    .await;
    settled(&ctx.progress, n).await;
    let subscribed = ctx.progress.ok_count();
    let expected = subscribed * m;
    if let (Some(pid), Some(before)) = (pid, rss_before)
        && let Some(after) = read_rss_kib(pid)
    {
        report.rss = Some(Rss {
            before_kib: before,
            after_kib: after,
            connections: subscribed,
        });
    }
    let (sub_hist, sub_fail) = subs.take();
    ctx.progress.phase("deliver", expected);
    let cpu = CpuMeter::start(pid);

    // The publisher.
    let mut pub_hist = new_histogram();
    let mut pub_failures: BTreeMap<String, u64> = BTreeMap::new();
    let pub_token = ctx
        .signer
        .token(&format!("load-{}-pub", ctx.run_id), "pub-0");
    let mut first_publish_us = None;
    match within(ctx.timeout, "auth", open_authenticated(&ctx, &pub_token)).await {
        Err(f) => report::count(&mut pub_failures, f.key()),
        Ok((mut publisher, _)) => {
            for k in 0..m {
                let id = k + 2;
                let t_us = clock_us();
                first_publish_us.get_or_insert(t_us);
                let start = Instant::now();
                let res = within(ctx.timeout, "publish", async {
                    send(
                        &mut publisher,
                        &json!({"type": "publish", "id": id, "channel": channel,
                                "data": {"k": k, "t_us": t_us}}),
                    )
                    .await?;
                    expect(&mut publisher, "published").await
                })
                .await;
                match res {
                    Ok(_) => record(&mut pub_hist, start.elapsed()),
                    Err(f) => {
                        let transport = f.is_transport();
                        report::count(&mut pub_failures, f.key());
                        if transport {
                            break;
                        }
                    }
                }
                if k + 1 < m {
                    tokio::time::sleep(interval).await;
                }
            }
            close(publisher).await;
        }
    }
    let published = pub_hist.len();
    // Wait for the deliveries of what was accepted, bounded by the drain time.
    let want = subscribed * published;
    let deadline = Instant::now() + drain;
    while delivered.load(Ordering::Relaxed) < want && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ctx.progress.finish();
    let delivered_now = delivered.load(Ordering::Relaxed);
    report.extra.insert("cpu".into(), cpu.finish(delivered_now));
    let _ = release_tx.send(true);
    let (lat_lists, panicked) = join_all(handles).await;
    let mut hist = new_histogram();
    // One histogram per publish, to tell a slow first publish from a steady state.
    let mut per_publish: Vec<Histogram<u64>> = (0..m).map(|_| new_histogram()).collect();
    for lats in &lat_lists {
        for &(k, us) in lats {
            hist.saturating_record(us.max(1));
            if let Some(h) = usize::try_from(k).ok().and_then(|k| per_publish.get_mut(k)) {
                h.saturating_record(us.max(1));
            }
        }
    }
    report.hist = hist;
    report.extra.insert(
        "per_publish_latency_ms".into(),
        Value::Array(per_publish.iter().map(latency_json).collect()),
    );
    report.attempted = expected;
    report.successes = report.hist.len();
    report.failures = lost.take().1;
    let missing = expected.saturating_sub(report.successes);
    if missing > 0 {
        report.failures.insert("missing-delivery".into(), missing);
    }
    merge_failures(&mut report.failures, sub_fail, "subscribe:");
    merge_failures(&mut report.failures, pub_failures, "publish:");
    if panicked > 0 {
        report.failures.insert("panic".into(), panicked);
    }
    if let Some(first) = first_publish_us {
        let last = last_delivery_us.load(Ordering::Relaxed).max(first);
        report.duration = Duration::from_micros(last - first);
    }
    report.extra.insert("subscribed".into(), json!(subscribed));
    report.extra.insert("published".into(), json!(published));
    report
        .extra
        .insert("deliveries_expected".into(), json!(expected));
    report
        .extra
        .insert("deliveries_received".into(), json!(report.successes));
    report
        .extra
        .insert("subscribe_latency_ms".into(), latency_json(&sub_hist));
    report
        .extra
        .insert("publish_ack_latency_ms".into(), latency_json(&pub_hist));
    report
}
