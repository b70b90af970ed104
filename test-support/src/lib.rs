//! What wsauth's tests share about the tools they need from outside Rust (`redis-server`,
//! Python, Chromium): how a test skips when one is missing, which Python to run, and a
//! throwaway `redis-server` ([`redis::RedisServer`]).
//!
//! `cargo xtask test` installs every tool, counts the [`MARKER`] lines as skipped tests in
//! its summary, and points [`PYTHON_VAR`] at the project's virtual environment.

#![warn(missing_docs)]

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub mod redis;

/// Starts the line a skipped test prints: `WSAUTH-SKIPPED <test>: <reason>`.
pub const MARKER: &str = "WSAUTH-SKIPPED";

/// The Python interpreter the tests run, when set (`cargo xtask test` sets it).
pub const PYTHON_VAR: &str = "WSAUTH_PYTHON";

/// The project-local virtual environment, relative to the workspace root.
pub const VENV_DIR: &str = ".venv";

/// Reports that `test` skips because `reason`, or fails it when the environment variable
/// `require` is set (CI sets the `WSAUTH_REQUIRE_*` variables, so nothing skips there).
///
/// The line goes straight to the process's stderr, past libtest's output capture, so it
/// shows in a plain `cargo test`; it is printed once per test and reason.
#[track_caller]
pub fn skip(test: &str, reason: &str, require: &str) {
    assert!(
        std::env::var_os(require).is_none(),
        "{test}: {reason}, and {require} is set"
    );
    let line = skip_line(test, reason);
    static PRINTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let mut printed = PRINTED.lock().unwrap_or_else(|e| e.into_inner());
    if printed
        .get_or_insert_with(HashSet::new)
        .insert(line.clone())
    {
        // One write of the whole line, so that parallel tests never interleave in it.
        let _ = std::io::stderr().write_all(format!("{line}\n").as_bytes());
    }
}

/// The line [`skip`] prints.
pub fn skip_line(test: &str, reason: &str) -> String {
    format!("{MARKER} {test}: {reason}")
}

/// The running test's name: libtest names each test's thread after it.
pub fn current_test() -> String {
    std::thread::current()
        .name()
        .filter(|name| *name != "main")
        .unwrap_or("a test")
        .to_owned()
}

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ sits in the workspace root")
}

/// The Python to run: [`PYTHON_VAR`] when set, else the project's `.venv` when it exists,
/// else `python3` from `PATH`.
pub fn python() -> PathBuf {
    if let Some(python) = std::env::var_os(PYTHON_VAR) {
        return PathBuf::from(python);
    }
    let venv = venv_python(workspace_root());
    if venv.exists() {
        venv
    } else {
        PathBuf::from("python3")
    }
}

/// The interpreter of the virtual environment under `root`.
pub fn venv_python(root: &Path) -> PathBuf {
    root.join(VENV_DIR).join("bin").join("python3")
}

/// Whether [`python()`] runs and can import every module of `modules`.
pub fn python_has(modules: &[&str]) -> bool {
    std::process::Command::new(python())
        .arg("-c")
        .arg(format!("import {}", modules.join(", ")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skip_line_starts_with_the_marker_and_names_the_test() {
        assert_eq!(
            skip_line("t::x", "redis-server is not installed"),
            "WSAUTH-SKIPPED t::x: redis-server is not installed"
        );
    }

    #[test]
    fn a_required_tool_turns_the_skip_into_a_failure() {
        // PATH is always set: as the "require" variable it stands for a set WSAUTH_REQUIRE_*.
        let failed = std::panic::catch_unwind(|| skip("t", "missing", "PATH")).is_err();
        assert!(failed, "skip must panic when its require variable is set");
    }
}
