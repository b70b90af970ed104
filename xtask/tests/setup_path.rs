//! The newcomer's path itself: `cargo xtask test --setup-only` in a scratch workspace
//! whose `PATH` holds only the Rust toolchain and a shell. Every missing piece is reported
//! on its own line and the set-up still succeeds; a piece that is there is reported found.

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;

const PIECES: [&str; 5] = [
    "redis-server",
    "chromium",
    "prometheus",
    "python venv",
    "node clients",
];

/// A scratch workspace with the requirements file and one Node client, and an empty
/// `bin/` for `PATH` with only the essentials linked in.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("a scratch directory");
        let root = dir.path().join("ws");
        std::fs::create_dir_all(root.join("tests")).unwrap();
        std::fs::copy(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/requirements.txt"),
            root.join("tests/requirements.txt"),
        )
        .expect("tests/requirements.txt is there to copy");
        std::fs::create_dir_all(root.join("clients/demo")).unwrap();
        std::fs::write(root.join("clients/demo/package-lock.json"), "{}").unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for essential in ["sh", "cargo", "rustc", "git"] {
            if let Some(found) = on_path(essential) {
                symlink(found, bin.join(essential)).unwrap();
            }
        }
        Scratch { dir }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("ws")
    }

    /// A stand-in for `program` in the scratch `PATH` that prints `version`.
    fn fake_tool(&self, program: &str, version: &str) {
        write_script(&self.dir.path().join("bin").join(program), version);
    }

    /// Runs the set-up with only the scratch `bin/` on `PATH`, asserts that it succeeded
    /// (a missing tool is never a failure), and returns its output.
    fn setup(&self, extra: &[&str]) -> String {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["test", "--setup-only", "--root"])
            .arg(self.root())
            .args(extra)
            .env_clear()
            .env("PATH", self.dir.path().join("bin"))
            .output()
            .expect("the xtask runs");
        let output = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the set-up failed:\n{output}");
        output
    }
}

fn write_script(path: &Path, version: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, format!("#!/bin/sh\necho '{version}'\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Asserts that the set-up printed exactly one line for `piece` and that it says `expected`.
fn assert_reported(output: &str, piece: &str, expected: &str) {
    let lines: Vec<&str> = output
        .lines()
        .filter(|line| {
            line.strip_prefix("setup: ")
                .is_some_and(|rest| rest.starts_with(piece))
        })
        .collect();
    assert_eq!(lines.len(), 1, "one line for {piece} in:\n{output}");
    assert!(
        lines[0].contains(expected),
        "{piece}: `{expected}` expected in:\n{output}"
    );
}

#[test]
fn with_no_tools_and_no_installing_every_piece_is_reported_missing_and_setup_succeeds() {
    let scratch = Scratch::new();
    let output = scratch.setup(&["--no-install"]);
    for piece in PIECES {
        assert_reported(&output, piece, "MISSING");
        assert_reported(&output, piece, "will skip");
    }
    assert!(
        !scratch.root().join(".venv").exists(),
        "--no-install created the venv"
    );
}

#[test]
fn with_no_tools_and_no_apt_get_installing_reports_each_piece_it_could_not_install() {
    let scratch = Scratch::new();
    let output = scratch.setup(&[]);
    for piece in PIECES {
        assert_reported(&output, piece, "MISSING");
    }
    assert_reported(&output, "redis-server", "no apt-get");
}

#[test]
fn pieces_that_are_there_are_reported_found_with_their_version() {
    let scratch = Scratch::new();
    scratch.fake_tool("redis-server", "Redis server v=9.9.9");
    scratch.fake_tool("chromium", "Chromium 999.0");
    scratch.fake_tool("prometheus", "prometheus, version 9.9.9");
    scratch.fake_tool("npm", "99.1.0");
    std::fs::create_dir_all(scratch.root().join("clients/demo/node_modules")).unwrap();
    // A venv whose recorded requirements match the file: the set-up keeps it as it is.
    let venv = scratch.root().join(".venv");
    write_script(&venv.join("bin/python3"), "Python 3.99.0");
    std::fs::copy(
        scratch.root().join("tests/requirements.txt"),
        venv.join("wsauth-requirements.txt"),
    )
    .unwrap();

    let output = scratch.setup(&["--no-install"]);
    assert_reported(&output, "redis-server", "found: Redis server v=9.9.9");
    assert_reported(&output, "chromium", "found: Chromium 999.0");
    assert_reported(&output, "prometheus", "found: prometheus, version 9.9.9");
    assert_reported(&output, "python venv", "found: .venv/ with websockets==");
    assert_reported(&output, "node clients", "found: npm 99.1.0");
}

#[test]
fn a_workspace_without_node_clients_needs_no_npm() {
    let scratch = Scratch::new();
    std::fs::remove_dir_all(scratch.root().join("clients")).unwrap();
    let output = scratch.setup(&["--no-install"]);
    assert_reported(&output, "node clients", "not needed");
}
