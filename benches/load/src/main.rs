//! `wsauth-load`: a load generator for the wsauth server.
//!
//! Scenarios: `connect` (open, authenticate and hold N connections), `resume` (unclean drop and
//! resume), `refresh` (token refreshes on live sessions), `fanout` (one publisher, N
//! subscribers), `rpc` (application calls on live sessions), `kid-flood` (valid RS256 auths
//! during a flood of unknown-`kid` tokens, against a server it starts with a JWKS URL),
//! `frame-flood` (ping or continuation floods against a server it starts) and `chaos` (nodes on
//! one Redis, SIGKILLed and restarted while sessions publish and resume; it prints an
//! accounting of its own). Each prints successes, failures by kind, latency percentiles, rate and
//! duration; `--json` prints them as one JSON line, `--svg` draws the latency distribution.

mod client;
mod progress;
mod report;
mod scenarios;
mod svg;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tokio_tungstenite::tungstenite::http::Uri;

use crate::client::{Signer, Target};
use crate::progress::Progress;
use crate::report::{Latency, Report, fmt_ms};
use crate::scenarios::{AuthMode, Ctx, Pace, Ramp};

#[derive(Parser)]
#[command(
    name = "wsauth-load",
    version,
    about = "Load generator for the wsauth server"
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Common {
    /// The server's WebSocket URL.
    #[arg(long, global = true, default_value = "ws://127.0.0.1:8080/ws")]
    url: String,
    /// HS256 secret for signing tokens [default: env WSAUTH_JWT__HS256_SECRET].
    #[arg(long, global = true)]
    secret: Option<String>,
    /// Print one JSON line with every figure on stdout (the text report goes to stderr).
    #[arg(long, global = true)]
    json: bool,
    /// Write an SVG chart of the latency distribution to this path.
    #[arg(long, global = true)]
    svg: Option<PathBuf>,
    /// The server's pid: report its RSS growth per connection (from `/proc/<pid>/status`).
    #[arg(long, global = true)]
    pid: Option<u32>,
    /// Seconds to wait for any one reply before counting a timeout.
    #[arg(long, global = true, default_value_t = 10.0)]
    timeout: f64,
    /// Allow a URL whose host is not a loopback address.
    #[arg(long, global = true)]
    allow_non_loopback: bool,
}

#[derive(Args, Clone, Copy)]
struct RampArgs {
    /// Connections (or sessions) started per second at most; 0 for no pacing.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Connections connecting or authenticating at once, at most.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
}

impl From<RampArgs> for Ramp {
    fn from(r: RampArgs) -> Self {
        Ramp {
            rate: r.rate,
            concurrency: r.concurrency,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Open N connections, authenticate each (latency: TCP connect → `authenticated`), hold
    /// them all, then close.
    Connect {
        #[arg(long, short = 'n', default_value_t = 1000)]
        connections: u64,
        #[command(flatten)]
        ramp: RampArgs,
        /// First-message `auth`, or `Authorization: Bearer` on the upgrade.
        #[arg(long, value_enum, default_value_t = AuthMode::Message)]
        auth: AuthMode,
        /// Seconds to hold all connections open after the ramp-up.
        #[arg(long, default_value_t = 5.0)]
        hold: f64,
    },
    /// Authenticate N sessions, drop each TCP connection without a close frame, reconnect and
    /// resume (latency: connect → `resumed`).
    Resume {
        #[arg(long, short = 'n', default_value_t = 1000)]
        sessions: u64,
        #[command(flatten)]
        ramp: RampArgs,
    },
    /// Authenticate N sessions, then each sends M refreshes in turn (latency: `refresh` sent →
    /// `refreshed`).
    Refresh {
        #[arg(long, short = 'n', default_value_t = 1000)]
        sessions: u64,
        /// Refreshes per session.
        #[arg(long, short = 'm', default_value_t = 5)]
        refreshes: u64,
        #[command(flatten)]
        ramp: RampArgs,
    },
    /// N subscribers join one channel; a publisher publishes M messages (latency per delivery:
    /// publish sent → message received).
    Fanout {
        #[arg(long, short = 'n', default_value_t = 1000)]
        subscribers: u64,
        #[arg(long, short = 'm', default_value_t = 10)]
        messages: u64,
        /// Milliseconds between two publishes.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
        /// Seconds to wait for outstanding deliveries after the last publish.
        #[arg(long, default_value_t = 10.0)]
        drain: f64,
        #[command(flatten)]
        ramp: RampArgs,
    },
    /// Authenticate N sessions, then each calls `--method` with `{"k": counter}`: M calls back
    /// to back, or `--per-second` R calls a second for `--secs` S seconds on schedule (latency:
    /// `rpc` sent → its `rpc_result`; a result must echo the counter).
    Rpc {
        #[arg(long, short = 'n', default_value_t = 1)]
        sessions: u64,
        /// Calls per session, each sent when the previous one's answer came [default: 1000].
        #[arg(long, short = 'm', conflicts_with = "per_second")]
        calls: Option<u64>,
        /// Calls per second per session, sent on schedule whatever the answers.
        #[arg(long)]
        per_second: Option<f64>,
        /// Seconds of paced calls (with `--per-second`).
        #[arg(long, default_value_t = 10.0, requires = "per_second")]
        secs: f64,
        /// Unanswered calls per session at most (paced; the server's `app.max_rpc_in_flight`).
        #[arg(long, default_value_t = 16, requires = "per_second")]
        max_in_flight: usize,
        /// The method called; its result must echo the call's data (`app_echo`'s `echo`).
        #[arg(long, default_value = "echo")]
        method: String,
        #[command(flatten)]
        ramp: RampArgs,
    },
    /// Start `wsauth-server` with `jwt.jwks_url` on a JWKS this tool serves, then for `--secs`
    /// seconds authenticate valid RS256 tokens at `--valid-rate` while `--flood-rate` tokens a
    /// second with unknown `kid`s arrive, each on a fresh connection (latency: a valid token's
    /// `auth` sent → `authenticated`). `--url` is ignored: the server listens on a free port.
    KidFlood {
        /// Seconds of load.
        #[arg(long, default_value_t = 10.0)]
        secs: f64,
        /// Tokens with an unknown `kid` per second (0: the baseline).
        #[arg(long, default_value_t = 10_000.0)]
        flood_rate: f64,
        /// Flood connections in flight at most.
        #[arg(long, default_value_t = 256)]
        flood_concurrency: usize,
        /// What the flood sends: unknown-`kid` JWTs, or (a control) no JWT at all.
        #[arg(long, value_enum, default_value_t = scenarios::FloodToken::UnknownKid)]
        flood_token: scenarios::FloodToken,
        /// Valid RS256 auths per second.
        #[arg(long, default_value_t = 200.0)]
        valid_rate: f64,
        /// The server's `jwt.jwks_min_refetch_s`.
        #[arg(long, default_value_t = 10)]
        min_refetch_s: u64,
        /// The `wsauth-server` binary [default: the one next to this tool].
        #[arg(long)]
        server_bin: Option<PathBuf>,
    },
    /// Start `wsauth-server`, then for `--secs` seconds `--sockets` sockets write pings or empty
    /// continuation frames as fast as they can, reconnecting when closed, while a well-behaved
    /// client sends app-level `ping`s (latency: `ping` sent → `pong`). Reports the server's CPU
    /// per second and per flooding connection. `--url` is ignored.
    FrameFlood(scenarios::FrameFlood),
    /// Start `--nodes` `wsauth-server` processes on one Redis (AOF, fsync always), open
    /// `--sessions` sessions that publish and resume on their own, and for `--secs` seconds
    /// SIGKILL and restart a node every `--kill-every-s`, restart Redis every
    /// `--redis-restart-every-s` and revoke `--revocations` users at random times. Prints an
    /// accounting (accepted vs delivered per subscriber, revocations, lost sessions, RSS per
    /// node); exits 1 when a must-be-0 count is not 0. `--url` and `--secret` are ignored;
    /// `--svg` draws RSS per node over time.
    Chaos {
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        #[arg(long, default_value_t = 2000)]
        sessions: usize,
        /// Seconds of chaos (publishing, kills, restarts, revocations).
        #[arg(long, default_value_t = 900.0)]
        secs: f64,
        /// SIGKILL a random node and restart it this often (0: never).
        #[arg(long, default_value_t = 60.0)]
        kill_every_s: f64,
        /// Which node each kill takes.
        #[arg(long, value_enum, default_value_t = scenarios::KillOrder::Random)]
        kill_order: scenarios::KillOrder,
        /// SIGKILL Redis and restart it on its AOF this often (0: never).
        #[arg(long, default_value_t = 300.0)]
        redis_restart_every_s: f64,
        /// Milliseconds Redis stays down at each restart.
        #[arg(long, default_value_t = 2000)]
        redis_down_ms: u64,
        /// Users revoked (`POST /admin/revoke {"sub"}`) at random times.
        #[arg(long, default_value_t = 100)]
        revocations: usize,
        /// Each session publishes once per this many ms (±10 %).
        #[arg(long, default_value_t = 15_000)]
        publish_interval_ms: u64,
        /// Channels; session i joins channel i % channels (with the defaults: 20 subscribers
        /// per channel, about 133 publishes and 2,700 deliveries a second).
        #[arg(long, default_value_t = 100)]
        channels: usize,
        /// Seconds after the last publish for replays and deliveries to settle.
        #[arg(long, default_value_t = 20.0)]
        drain_s: f64,
        /// Directory for the nodes' logs [default: a new one under the temp directory].
        #[arg(long)]
        log_dir: Option<PathBuf>,
        /// The `wsauth-server` binary [default: the one next to this tool].
        #[arg(long)]
        server_bin: Option<PathBuf>,
    },
}

/// The `wsauth-server` next to this tool, or on the PATH.
fn default_server_bin() -> PathBuf {
    std::env::current_exe()
        .map(|exe| exe.with_file_name("wsauth-server"))
        .unwrap_or_else(|_| "wsauth-server".into())
}

/// Parses a `ws://host:port/path` URL and resolves its host.
async fn resolve(url: &str, allow_non_loopback: bool) -> Result<Target, String> {
    let uri: Uri = url.parse().map_err(|e| format!("bad --url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("ws") {
        return Err(format!("--url must start with ws:// (got {url:?})"));
    }
    let host = uri
        .host()
        .ok_or_else(|| format!("--url {url:?} has no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri.port_u16().unwrap_or(80);
    let addr: SocketAddr = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .next()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    if !addr.ip().is_loopback() && !allow_non_loopback {
        return Err(format!(
            "{addr} is not a loopback address; pass --allow-non-loopback to load it anyway"
        ));
    }
    Ok(Target {
        url: url.to_string(),
        addr,
    })
}

fn svg_subtitle(r: &Report) -> Vec<String> {
    let l = Latency::of(&r.hist);
    vec![
        format!(
            "{} · {} ok, {} failed · {:.0} ops/s over {:.2} s",
            r.url,
            r.successes,
            r.failures_total(),
            r.rate(),
            r.duration.as_secs_f64()
        ),
        format!(
            "p50 {} ms · p90 {} ms · p99 {} ms · p99.9 {} ms · max {} ms",
            fmt_ms(l.p50),
            fmt_ms(l.p90),
            fmt_ms(l.p99),
            fmt_ms(l.p999),
            fmt_ms(l.max),
        ),
    ]
}

fn svg_title(r: &Report) -> String {
    let what = match r.scenario {
        "connect" => "TCP connect → authenticated",
        "resume" => "connect → resumed",
        "refresh" => "refresh → refreshed",
        "fanout" => "publish → message delivered",
        "rpc" => "rpc sent → rpc_result",
        "kid-flood" => "valid RS256 auth sent → authenticated, during an unknown-kid flood",
        other => other,
    };
    format!("wsauth-load {}: {what} latency", r.scenario)
}

impl Cmd {
    /// How many connections the scenario holds at once, at most.
    fn connections(&self) -> u64 {
        match self {
            Cmd::Connect { connections, .. } => *connections,
            Cmd::Resume { sessions, .. }
            | Cmd::Refresh { sessions, .. }
            | Cmd::Rpc { sessions, .. } => *sessions,
            Cmd::Fanout { subscribers, .. } => subscribers + 1,
            Cmd::KidFlood {
                flood_concurrency, ..
            } => *flood_concurrency as u64 + 64,
            Cmd::FrameFlood(f) => f.max_sockets() * 2 + 64,
            // A reconnecting session may briefly hold two sockets.
            Cmd::Chaos { sessions, .. } => *sessions as u64 * 2,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Before the runtime's threads exist: a growing descriptor table would stall the
    // ramp at every power of two (see `wsauth_server::fdlimit`).
    let fds = wsauth_server::fdlimit::prepare(cli.cmd.connections() + 1024);
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(cli, fds.soft_limit)),
        Err(e) => {
            eprintln!("wsauth-load: cannot start the runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli, nofile: Option<u64>) -> ExitCode {
    let c = &cli.common;
    let secret = c
        .secret
        .clone()
        .or_else(|| std::env::var("WSAUTH_JWT__HS256_SECRET").ok());
    let run_id = format!(
        "{:x}{:x}",
        std::process::id(),
        client::now_secs() & 0xff_ffff
    );
    // `kid-flood` signs RS256 tokens with the test key, `frame-flood` with a secret of its own
    // server's: they need no secret. `chaos` configures the servers it starts with a secret of
    // its own.
    let secret = match cli.cmd {
        Cmd::KidFlood { .. } | Cmd::FrameFlood(_) => Some(String::new()),
        Cmd::Chaos { .. } => Some(format!(
            "chaos-{run_id}-{:x}-hs256-secret-of-at-least-32-bytes",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        )),
        _ => secret,
    };
    let Some(secret) = secret else {
        eprintln!("wsauth-load: no secret: pass --secret or set WSAUTH_JWT__HS256_SECRET");
        return ExitCode::from(2);
    };
    let target = match resolve(&c.url, c.allow_non_loopback).await {
        Ok(t) => t,
        Err(e) => {
            eprintln!("wsauth-load: {e}");
            return ExitCode::from(2);
        }
    };
    if !(c.timeout.is_finite() && c.timeout > 0.0) {
        eprintln!("wsauth-load: --timeout must be positive");
        return ExitCode::from(2);
    }
    let ctx = Arc::new(Ctx {
        target,
        signer: Signer::new(&secret),
        timeout: Duration::from_secs_f64(c.timeout),
        run_id,
        progress: Progress::start(),
    });
    let secs = |s: f64| Duration::from_secs_f64(if s.is_finite() { s.max(0.0) } else { 0.0 });
    let pace = match &cli.cmd {
        Cmd::Rpc {
            calls,
            per_second,
            secs,
            max_in_flight,
            ..
        } => match per_second {
            None => Some(Pace::BackToBack {
                calls: calls.unwrap_or(1000),
            }),
            Some(r) if r.is_finite() && *r > 0.0 && secs.is_finite() && *secs > 0.0 => {
                Some(Pace::Paced {
                    per_second: *r,
                    secs: *secs,
                    max_in_flight: *max_in_flight,
                })
            }
            Some(_) => {
                eprintln!("wsauth-load: --per-second and --secs must be positive");
                return ExitCode::from(2);
            }
        },
        _ => None,
    };
    if let Cmd::Chaos {
        nodes,
        sessions,
        secs: chaos_secs,
        kill_every_s,
        kill_order,
        redis_restart_every_s,
        redis_down_ms,
        revocations,
        publish_interval_ms,
        channels,
        drain_s,
        log_dir,
        server_bin,
    } = cli.cmd
    {
        let cfg = scenarios::Chaos {
            nodes: nodes.max(1),
            sessions: sessions.max(1),
            secs: secs(chaos_secs).as_secs_f64(),
            kill_every_s: secs(kill_every_s).as_secs_f64(),
            kill_order,
            redis_restart_every_s: secs(redis_restart_every_s).as_secs_f64(),
            redis_down_ms,
            revocations,
            publish_interval_ms: publish_interval_ms.max(1),
            channels: channels.max(1),
            drain_s: secs(drain_s).as_secs_f64(),
            server_bin: server_bin.unwrap_or_else(default_server_bin),
            log_dir: log_dir.unwrap_or_else(|| {
                std::env::temp_dir().join(format!("wsauth-chaos-{}", ctx.run_id))
            }),
            secret,
        };
        return run_chaos(ctx, cfg, c).await;
    }
    let mut report = match cli.cmd {
        Cmd::Connect {
            connections,
            ramp,
            auth,
            hold,
        } => scenarios::connect(ctx, connections, ramp.into(), auth, secs(hold), c.pid).await,
        Cmd::Resume { sessions, ramp } => scenarios::resume(ctx, sessions, ramp.into()).await,
        Cmd::Refresh {
            sessions,
            refreshes,
            ramp,
        } => scenarios::refresh(ctx, sessions, refreshes, ramp.into()).await,
        Cmd::Fanout {
            subscribers,
            messages,
            interval_ms,
            drain,
            ramp,
        } => {
            scenarios::fanout(
                ctx,
                subscribers,
                messages,
                ramp.into(),
                Duration::from_millis(interval_ms),
                secs(drain),
                c.pid,
            )
            .await
        }
        Cmd::Rpc {
            sessions,
            method,
            ramp,
            ..
        } => {
            let pace = pace.unwrap_or(Pace::BackToBack { calls: 1000 });
            scenarios::rpc(ctx, sessions, method, pace, ramp.into(), c.pid).await
        }
        Cmd::KidFlood {
            secs,
            flood_rate,
            flood_concurrency,
            flood_token,
            valid_rate,
            min_refetch_s,
            server_bin,
        } => {
            let server_bin = server_bin.unwrap_or_else(default_server_bin);
            let flood = scenarios::Flood {
                secs: secs.max(0.1),
                flood_rate: flood_rate.max(0.0),
                flood_concurrency,
                flood_token,
                valid_rate: valid_rate.max(1.0),
                min_refetch_s,
                server_bin,
            };
            match scenarios::kid_flood(ctx, flood).await {
                Ok(report) => report,
                Err(e) => {
                    eprintln!("wsauth-load: kid-flood: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        Cmd::FrameFlood(f) => match scenarios::frame_flood(ctx, f).await {
            Ok(report) => report,
            Err(e) => {
                eprintln!("wsauth-load: frame-flood: {e}");
                return ExitCode::FAILURE;
            }
        },
        Cmd::Chaos { .. } => unreachable!("handled above"),
    };
    report.extra.insert("client_nofile".into(), json!(nofile));
    if let Some(path) = &c.svg {
        let svg = svg::render(&svg_title(&report), &svg_subtitle(&report), &report.hist);
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::write(path, svg) {
            Ok(()) => {
                report
                    .extra
                    .insert("svg".into(), json!(path.display().to_string()));
            }
            Err(e) => eprintln!("wsauth-load: cannot write {}: {e}", path.display()),
        }
    }
    if c.json {
        eprint!("{}", report.to_text());
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    if report.successes == 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// `chaos`: runs it, prints its accounting (and JSON, SVG); 1 when a must-be-0 count is not 0.
async fn run_chaos(ctx: Arc<Ctx>, cfg: scenarios::Chaos, c: &Common) -> ExitCode {
    let report = match scenarios::chaos(ctx, cfg).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wsauth-load: chaos: {e}");
            return ExitCode::from(2);
        }
    };
    let mut json = report.to_json();
    if let Some(path) = &c.svg {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            let _ = std::fs::create_dir_all(dir);
        }
        match std::fs::write(path, report.svg()) {
            Ok(()) => json["svg"] = json!(path.display().to_string()),
            Err(e) => eprintln!("wsauth-load: cannot write {}: {e}", path.display()),
        }
    }
    if c.json {
        eprint!("{}", report.to_text());
        println!("{json}");
    } else {
        print!("{}", report.to_text());
    }
    if report.violations().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
