//! # wsauth-sim
//!
//! A deterministic, single-threaded world for driving [`wsauth_core::Connection`]s
//! without I/O: a virtual clock, the real [`wsauth_store::MemoryStore`] (with
//! counted ids), the notice routing each node's hub does, and a transcript of
//! everything that crosses the machine's boundary.
//!
//! The project's transcripts (the readable specification), the model-based test,
//! the exhaustive exploration and the state-machine fuzz target all drive the
//! machine through it, and an embedder can use it to test a custom verifier or
//! configuration the same way. It is a development crate: nothing of it is in the
//! production build.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod checker;
pub mod fuzzing;
mod world;

pub use checker::{INVARIANTS, InvariantChecker, Violation};
pub use world::{CallFn, VerifyFn, World};
pub use wsauth_store::{LimitPolicy, StoreSettings};
