//! The `wsauth-server` command line: serve (the default) or mint a token.

use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::app::App;
use crate::config::{self, ServeArgs};
use crate::{dev, server};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wsauth-server",
    version,
    about = "WebSocket authentication and session server"
)]
#[command(args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(ServeArgs),
    /// Mint a token signed with the configured HS256 secret.
    Token(TokenArgs),
    /// Check the configuration as a start would (files, keys, TLS, the store
    /// URL; no network) and print the effective settings, secrets redacted,
    /// with where each value came from. Exits non-zero with the start's message.
    CheckConfig(ServeArgs),
}

#[derive(Args)]
struct TokenArgs {
    /// The token's subject (`sub`).
    #[arg(long)]
    sub: String,
    /// Lifetime, e.g. `1h`, `15m`, `90s`.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    ttl: std::time::Duration,
    /// Channel patterns for the `channels` claim (repeat or separate with commas).
    #[arg(long, value_delimiter = ',')]
    channels: Vec<String>,
    #[command(flatten)]
    config: ServeArgs,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The `wsauth-server` command, with `app` answering its users' calls: what the
/// binary runs (with an empty [`App`]), and what an application that embeds the
/// server can run as its whole `main`, getting the same configuration sources,
/// `--dev` mode, `token` subcommand, signals and graceful shutdown.
pub fn main(app: App) -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Token(args)) => token(args),
        Some(Command::CheckConfig(args)) => check_config(&args),
        Some(Command::Serve(args)) => serve(args, app),
        None => serve(cli.serve, app),
    }
}

fn check_config(args: &ServeArgs) -> ExitCode {
    match crate::check::check_config(args, std::env::vars_os()) {
        Ok(report) => {
            print!("{report}");
            ExitCode::SUCCESS
        }
        Err(refusal) => {
            eprintln!("wsauth-server: {refusal}");
            ExitCode::from(refusal.exit_code())
        }
    }
}

fn token(args: TokenArgs) -> ExitCode {
    let config = match config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsauth-server: {e}");
            return ExitCode::from(2);
        }
    };
    let secret = match (&config.jwt.hs256_secret, &config.jwt.hs256_secret_file) {
        (Some(s), _) => s.clone(),
        (None, Some(path)) => match std::fs::read_to_string(path) {
            Ok(s) => s.trim_end().to_owned(),
            Err(e) => {
                eprintln!(
                    "wsauth-server: jwt.hs256_secret_file {}: {e}",
                    path.display()
                );
                return ExitCode::from(2);
            }
        },
        (None, None) => {
            eprintln!(
                "wsauth-server: no HS256 secret configured (jwt.hs256_secret or WSAUTH_JWT__HS256_SECRET; a development start prints one)"
            );
            return ExitCode::from(2);
        }
    };
    if secret.len() < 32 {
        eprintln!("wsauth-server: jwt.hs256_secret must be at least 32 bytes");
        return ExitCode::from(2);
    }
    println!(
        "{}",
        dev::mint(
            &secret,
            &args.sub,
            args.ttl.as_secs(),
            &args.channels,
            now_s()
        )
    );
    ExitCode::SUCCESS
}

fn serve(args: ServeArgs, app: App) -> ExitCode {
    let mut config = match config::load(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("wsauth-server: {e}");
            return ExitCode::from(2);
        }
    };
    let dev_mode = match crate::check::development_mode(&args, &config) {
        Ok(dev_mode) => dev_mode,
        Err(refusal) => {
            eprintln!("wsauth-server: {refusal}");
            return ExitCode::from(refusal.exit_code());
        }
    };
    let secrets = if dev_mode && dev::has_no_keys(&config) {
        Some(dev::prepare(&mut config))
    } else {
        None
    };
    if let Err(e) = config.validate(secrets.is_some()) {
        eprintln!("wsauth-server: {e}");
        return ExitCode::from(2);
    }
    crate::logging::init(&config);
    // Before the runtime's threads exist (see `fdlimit`). Listeners, the admin API
    // and the store need a few descriptors beside the connections.
    let want = config.limits.max_connections as u64 + 1024;
    let fds = crate::fdlimit::prepare(want);
    if fds.falls_short_of(want) {
        tracing::warn!(
            soft_limit = fds.soft_limit,
            hard_limit = fds.hard_limit,
            max_connections = config.limits.max_connections,
            "the open-file limit is below limits.max_connections: past it the system refuses connections (raise `ulimit -n` or LimitNOFILE)"
        );
    } else {
        tracing::debug!(
            soft_limit = fds.soft_limit,
            reserved = fds.reserved,
            "file descriptors"
        );
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("wsauth-server: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        // Listened for before the server starts: once it listens, a SIGHUP must
        // reload, not end the process (the signal's default).
        #[cfg(unix)]
        let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
        let banner_config = config.clone();
        let handle = match server::start_with_app(config, None, app).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("wsauth-server: {e}");
                return ExitCode::FAILURE;
            }
        };
        if let Some(secrets) = &secrets {
            println!(
                "{}",
                dev::banner(
                    &banner_config,
                    handle.ws_addr.port(),
                    handle.admin_addr.port(),
                    secrets,
                    now_s()
                )
            );
        }
        crate::systemd::ready(handle.ws_addr, handle.admin_addr);
        #[cfg(unix)]
        match hangups {
            Ok(hangups) => {
                tokio::spawn(reload_on_hangup(hangups, handle.reloader()));
            }
            Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP: no reload by signal"),
        }
        let trigger = handle.shutdown_trigger();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("signal received: graceful shutdown");
            crate::systemd::stopping();
            let _ = trigger.send(true);
        });
        handle.wait().await;
        ExitCode::SUCCESS
    })
}

/// Reloads the key and certificate files at each SIGHUP.
#[cfg(unix)]
async fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    reloader: crate::reload::Reloader,
) {
    while hangups.recv().await.is_some() {
        let reloader = reloader.clone();
        crate::systemd::reloading();
        let _ = tokio::task::spawn_blocking(move || reloader.reload("SIGHUP")).await;
        crate::systemd::reloaded();
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
