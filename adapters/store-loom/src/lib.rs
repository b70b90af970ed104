//! loom models of the in-memory store and the hub live in `tests/`; build and run them with
//! `RUSTFLAGS="--cfg loom" cargo test -p wsauth-store-loom --release`.
