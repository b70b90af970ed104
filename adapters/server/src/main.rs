//! `wsauth-server`: run the server, or mint a token with the configured HS256 key.

use std::process::ExitCode;

// The global allocator is the binary's choice, never the library's
// (docs/decisions.md §58). Only one of these features at a time.
#[cfg(all(feature = "mimalloc", feature = "jemalloc"))]
compile_error!("the `mimalloc` and `jemalloc` features are exclusive");

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    wsauth_server::cli::main(wsauth_server::App::new())
}
