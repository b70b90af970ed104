//! An application that embeds wsauth and answers one call, `echo`.
//!
//! ```sh
//! cargo run --release -p wsauth-server --example app_echo -- --dev
//! # then, authenticated: {"type":"rpc","id":5,"method":"echo","data":{"n":1}}
//! # answer:              {"type":"rpc_result","id":5,"data":{"data":{"n":1},"sub":"alice"}}
//! ```
//!
//! It is the whole `wsauth-server` command (configuration file, `WSAUTH_*`
//! environment, flags, `--dev`, signals) with one handler, so every setting of
//! docs/configuration.md applies. The load tool's `rpc` scenario runs against it.

use std::process::ExitCode;

use serde_json::json;
use wsauth_server::App;

fn main() -> ExitCode {
    // Each handler gets the caller's verified identity and the call's `data`, and
    // answers a JSON value (or an `AppError`).
    let app = App::new().handle("echo", |ctx, data| async move {
        Ok(json!({ "sub": ctx.sub, "data": data }))
    });
    wsauth_server::cli::main(app)
}
