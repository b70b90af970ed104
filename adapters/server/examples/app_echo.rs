//! An application that embeds wsauth and answers one call, `echo`.
//!
//! ```sh
//! cargo run --release -p wsauth-server --example app_echo -- --dev
//! # then, authenticated: {"type":"rpc","id":5,"method":"echo","data":{"n":1}}
//! # answer:              {"type":"rpc_result","id":5,"data":{"data":{"n":1},"sub":"alice"}}
//! ```
//!
//! It takes its configuration exactly as `wsauth-server` does (file, `WSAUTH_*`
//! environment, the same flags, `--dev`), so every setting of
//! docs/configuration.md applies. The load tool's `rpc` scenario runs against it.

use std::process::ExitCode;

use clap::Parser;
use serde_json::json;
use wsauth_server::config::{self, ServeArgs};
use wsauth_server::{App, dev};

#[derive(Parser)]
#[command(name = "app_echo", about = "wsauth with an embedded `echo` handler")]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn main() -> ExitCode {
    let args = Cli::parse().serve;
    let mut config = match config::load(&args) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    // Development mode as the binary has it: with no key configured (on loopback
    // only), generate an HS256 secret and an admin key, and print them.
    let dev_mode = args.dev || dev::has_no_keys(&config);
    if dev_mode && dev::has_no_keys(&config) && !config.listen.ip().is_loopback() {
        return fail("no JWT key is configured; development mode only runs on loopback");
    }
    let secrets = (dev_mode && dev::has_no_keys(&config)).then(|| dev::prepare(&mut config));
    if let Err(e) = config.validate(secrets.is_some()) {
        return fail(e);
    }
    wsauth_server::logging::init(&config);
    // Before the runtime's threads exist: grow the descriptor table once.
    wsauth_server::fdlimit::prepare(config.limits.max_connections as u64 + 1024);

    // The application: each handler gets the caller's verified identity and the
    // call's `data`, and answers a JSON value (or an `AppError`).
    let app = App::new().handle("echo", |ctx, data| async move {
        Ok(json!({ "sub": ctx.sub, "data": data }))
    });

    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => return fail(e),
    };
    runtime.block_on(async move {
        let banner_config = config.clone();
        // The dev secret is already in `config`: no separate key to pass.
        let handle = match wsauth_server::start_with_app(config, None, app).await {
            Ok(h) => h,
            Err(e) => return fail(e),
        };
        if let Some(secrets) = &secrets {
            let (ws, admin) = (handle.ws_addr.port(), handle.admin_addr.port());
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            println!("{}", dev::banner(&banner_config, ws, admin, secrets, now));
        }
        // Ctrl-C drains the connections and stops (SIGTERM ends the process).
        let trigger = handle.shutdown_trigger();
        tokio::spawn(async move {
            let _ = tokio::signal::ctrl_c().await;
            let _ = trigger.send(true);
        });
        handle.wait().await;
        ExitCode::SUCCESS
    })
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("app_echo: {e}");
    ExitCode::from(2)
}
