//! `wsauth-server`: run the server, or mint a token with the configured HS256 key.

use std::process::ExitCode;

// The global allocator is the binary's choice, never the library's. The default
// is the system's (glibc's) malloc: it gave memory back best after a burst of
// slow readers (docs/decisions.md §63, docs/performance.md). The features are
// there to measure the others again; with both, jemalloc wins.
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    wsauth_server::cli::main(wsauth_server::App::new())
}
