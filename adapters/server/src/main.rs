//! `wsauth-server`: run the server, or mint a token with the configured HS256 key.

use std::process::ExitCode;

fn main() -> ExitCode {
    wsauth_server::cli::main(wsauth_server::App::new())
}
