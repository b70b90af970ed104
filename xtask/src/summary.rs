//! The test phase: every suite runs with its output streamed as it comes, and the lines
//! that count (libtest's `test result:`, Node's totals, the tests' skip marker) are
//! summed into one line.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use wsauth_test_support::{MARKER, PYTHON_VAR};

use crate::setup::Tools;

#[derive(Debug, Default, PartialEq)]
pub struct Totals {
    pub passed: u64,
    pub failed: u64,
    pub skipped: u64,
    /// The skip lines, to list again before the summary.
    pub skip_lines: Vec<String>,
}

impl Totals {
    /// The closing line; CI's log reader reads it.
    pub fn line(&self) -> String {
        format!(
            "{} passed, {} failed, {} skipped",
            self.passed, self.failed, self.skipped
        )
    }

    /// A skipped test returned early and so counts as passed in libtest's own line.
    fn skip(&mut self, line: &str) {
        self.skipped += 1;
        self.passed = self.passed.saturating_sub(1);
        self.skip_lines.push(line.to_owned());
    }
}

/// Runs `cargo test --workspace`, then `npm test` of each Node client.
pub fn run_suites(root: &Path, tools: &Tools) -> Totals {
    let mut totals = Totals::default();

    println!("== cargo test --workspace");
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or("cargo".into()));
    // --no-fail-fast: a failing test binary must not hide the suites after it.
    cargo
        .args(["test", "--workspace", "--no-fail-fast"])
        .current_dir(root);
    if let Some(python) = &tools.python {
        cargo.env(PYTHON_VAR, python);
    }
    let (ok, lines) = run_streamed(&mut cargo);
    let before = totals.failed;
    for line in &lines {
        count_libtest(line, &mut totals);
    }
    if !ok && totals.failed == before {
        println!("cargo test failed before its tests could report (a build error?)");
        totals.failed += 1;
    }

    for client in &tools.node_clients {
        println!("== npm test in {}", client.display());
        if !tools.npm {
            let line = format!("{MARKER} npm test in {}: npm is missing", client.display());
            println!("{line}");
            totals.skip(&line);
            continue;
        }
        let mut npm = Command::new("npm");
        npm.arg("test").current_dir(client);
        let (ok, lines) = run_streamed(&mut npm);
        count_node(ok, &lines, &mut totals);
    }
    totals
}

/// Adds a libtest `test result:` line's counts, or a test's skip marker.
fn count_libtest(line: &str, totals: &mut Totals) {
    if line.starts_with(MARKER) {
        totals.skip(line);
    } else if let Some(result) = line.strip_prefix("test result: ") {
        // `ok. 3 passed; 1 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s`
        for part in result.split(['.', ';']) {
            match part.split_whitespace().collect::<Vec<_>>()[..] {
                [n, "passed"] => totals.passed += n.parse().unwrap_or(0),
                [n, "failed"] => totals.failed += n.parse().unwrap_or(0),
                [n, "ignored"] => totals.skipped += n.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
}

/// Adds the totals of Node's test runner (`ℹ pass 5` with the spec reporter, `# pass 5`
/// with TAP); a suite that prints none counts as one test that passed or failed.
fn count_node(ok: bool, lines: &[String], totals: &mut Totals) {
    let mut counted = false;
    let failed_before = totals.failed;
    // Skip lines come before the runner's totals: they are applied after them, so that the
    // skipped tests (which returned early and count as passed) move out of this suite's passes.
    let mut skips = Vec::new();
    for line in lines {
        let line = line.trim_start();
        let Some(rest) = line.strip_prefix("ℹ ").or_else(|| line.strip_prefix("# ")) else {
            if line.starts_with(MARKER) {
                skips.push(line);
            }
            continue;
        };
        let (word, n) = match rest.split_whitespace().collect::<Vec<_>>()[..] {
            [word, n] => match n.parse::<u64>() {
                Ok(n) => (word, n),
                Err(_) => continue,
            },
            _ => continue,
        };
        match word {
            "pass" => totals.passed += n,
            "fail" | "cancelled" => totals.failed += n,
            "skipped" | "todo" => totals.skipped += n,
            _ => continue,
        }
        counted = true;
    }
    for line in skips {
        totals.skip(line);
    }
    if !counted {
        if ok {
            totals.passed += 1;
        } else {
            totals.failed += 1;
        }
    } else if !ok && totals.failed == failed_before {
        totals.failed += 1;
    }
}

/// Runs `cmd`, copying its stdout and stderr through as they come; returns whether it
/// succeeded and every line it printed.
fn run_streamed(cmd: &mut Command) -> (bool, Vec<String>) {
    let mut child = match cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn() {
        Ok(child) => child,
        Err(e) => {
            println!("cannot run {:?}: {e}", cmd.get_program());
            return (false, Vec::new());
        }
    };
    let stderr = child.stderr.take().expect("piped stderr");
    let from_stderr = std::thread::spawn(move || copy_lines(stderr, &mut std::io::stderr()));
    let mut lines = copy_lines(
        child.stdout.take().expect("piped stdout"),
        &mut std::io::stdout(),
    );
    lines.extend(from_stderr.join().unwrap_or_default());
    let ok = child.wait().is_ok_and(|s| s.success());
    (ok, lines)
}

fn copy_lines(from: impl Read, to: &mut impl Write) -> Vec<String> {
    let mut lines = Vec::new();
    let mut reader = BufReader::new(from);
    let mut buf = Vec::new();
    while reader.read_until(b'\n', &mut buf).is_ok_and(|n| n > 0) {
        let _ = to.write_all(&buf);
        let _ = to.flush();
        lines.push(String::from_utf8_lossy(&buf).trim_end().to_owned());
        buf.clear();
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_lines_are_summed_and_skips_move_from_passed_to_skipped() {
        let mut totals = Totals::default();
        for line in [
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; finished in 0.51s",
            "WSAUTH-SKIPPED redis_store_keeps_the_contract: redis-server is not installed",
            "test result: FAILED. 3 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 1.00s",
            "test some::test ... ok",
        ] {
            count_libtest(line, &mut totals);
        }
        assert_eq!(
            (totals.passed, totals.failed, totals.skipped),
            (14, 2, 2),
            "12 + 3 passed less one skip; the ignored test and the skip are skipped"
        );
        assert_eq!(totals.line(), "14 passed, 2 failed, 2 skipped");
    }

    #[test]
    fn node_totals_are_read_from_the_spec_and_tap_reporters() {
        let spec: Vec<String> = [
            "ℹ tests 6",
            "ℹ pass 4",
            "ℹ fail 1",
            "ℹ skipped 1",
            "ℹ todo 0",
        ]
        .map(String::from)
        .into();
        let mut totals = Totals::default();
        count_node(false, &spec, &mut totals);
        assert_eq!((totals.passed, totals.failed, totals.skipped), (4, 1, 1));

        let tap: Vec<String> = ["# pass 7", "# fail 0"].map(String::from).into();
        count_node(true, &tap, &mut totals);
        assert_eq!((totals.passed, totals.failed, totals.skipped), (11, 1, 1));
    }

    #[test]
    fn node_skip_markers_printed_before_the_totals_move_passes_to_skipped() {
        let lines: Vec<String> = [
            "WSAUTH-SKIPPED (a) refreshes: target/debug/wsauth-server is missing",
            "WSAUTH-SKIPPED (c2) redis failover: redis-server is not on PATH",
            "✔ (a) refreshes (0.5ms)",
            "ℹ tests 23",
            "ℹ pass 23",
            "ℹ fail 0",
            "ℹ skipped 0",
        ]
        .map(String::from)
        .into();
        let mut totals = Totals::default();
        count_node(true, &lines, &mut totals);
        assert_eq!((totals.passed, totals.failed, totals.skipped), (21, 0, 2));
        assert_eq!(totals.skip_lines.len(), 2);
    }

    #[test]
    fn a_suite_without_totals_counts_by_its_exit_status() {
        let mut totals = Totals::default();
        count_node(
            false,
            &["Error: cannot find module".to_owned()],
            &mut totals,
        );
        count_node(true, &[], &mut totals);
        assert_eq!((totals.passed, totals.failed, totals.skipped), (1, 1, 0));
    }
}
