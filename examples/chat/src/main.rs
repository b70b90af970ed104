//! `cargo run -p wsauth-chat`: the chat on http://127.0.0.1:3000/ with
//! development keys (see the README).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use wsauth_chat::{ChatConfig, default_client_dir, serve};

/// A chat on wsauth, for development: a login without passwords, keys generated
/// for this run only, everything in memory.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Where to listen (port 0: any free port).
    #[arg(long, env = "WSAUTH_CHAT_LISTEN", default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// The lifetime of the tokens /login mints, in seconds (short, so that refreshes happen).
    #[arg(long, env = "WSAUTH_CHAT_TOKEN_TTL", default_value_t = 60)]
    token_ttl: u64,
    /// The built browser client (default: clients/js/dist of this repository).
    #[arg(long, env = "WSAUTH_CHAT_CLIENT_DIR")]
    client_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let default_client = args.client_dir.is_none();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,wsauth_chat=info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();
    if args.token_ttl == 0 {
        eprintln!("--token-ttl must be at least 1 second");
        return ExitCode::FAILURE;
    }
    let config = ChatConfig {
        listen: args.listen,
        token_ttl_s: args.token_ttl,
        client_dir: args.client_dir.unwrap_or_else(default_client_dir),
        ..ChatConfig::default()
    };
    let mut client_built = config.client_dir.join("index.js").is_file();
    if !client_built && default_client {
        client_built = build_client(&config.client_dir);
    }
    let client_dir = config.client_dir.display().to_string();
    let running = match serve(config).await {
        Ok(running) => running,
        Err(e) => {
            eprintln!("wsauth-chat: {e}");
            return ExitCode::FAILURE;
        }
    };
    println!();
    println!("  wsauth chat (development: keys generated for this run, no passwords)");
    println!();
    println!("  Open       {}", running.url());
    println!("  WebSocket  {}", running.ws_url());
    println!("  Tokens     {} s, refreshed by the page", args.token_ttl);
    if !client_built {
        println!();
        println!("  The browser client is not built: run `npm ci` in clients/js");
        println!("  (looked in {client_dir})");
    }
    println!();
    println!("  Open it in two windows (one private) as two names. Ctrl-C stops.");
    println!();
    running
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    ExitCode::SUCCESS
}

/// Builds the browser client (`npm ci` in clients/js, whose `prepare` runs `tsc`)
/// so that one command starts the chat on a fresh clone; `true` when it is built.
fn build_client(dist: &std::path::Path) -> bool {
    let Some(package) = dist.parent() else {
        return false;
    };
    println!(
        "  Building the browser client: npm ci in {}",
        package.display()
    );
    let built = std::process::Command::new("npm")
        .arg("ci")
        .current_dir(package)
        .status()
        .is_ok_and(|status| status.success());
    if !built {
        eprintln!("  npm ci failed or npm is missing: the page needs Node and npm once");
    }
    built && dist.join("index.js").is_file()
}
