//! `cargo xtask test`: the project's one test command. It installs what the tests need
//! and is missing (Debian packages, the Python venv, the Node clients' packages), says in
//! one line per piece what it found or installed, runs `cargo test --workspace` and every
//! other suite, and ends with one line: `N passed, N failed, N skipped`.

mod setup;
mod summary;

use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask test [--setup-only] [--no-install] [--root DIR]

  --setup-only   find or install the test tools, then stop (no tests)
  --no-install   install nothing: report what is missing (its tests then skip)
  --root DIR     the workspace to set up and test (default: this one)";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || matches!(args[0].as_str(), "help" | "--help" | "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    match parse(&args) {
        Ok(options) => run(&options),
        Err(message) => {
            eprintln!("{message}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

struct Options {
    setup_only: bool,
    may_install: bool,
    root: PathBuf,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut args = args.iter();
    match args.next().map(String::as_str) {
        Some("test") => {}
        other => return Err(format!("unknown task `{}`", other.unwrap_or_default())),
    }
    let mut options = Options {
        setup_only: false,
        may_install: true,
        root: wsauth_test_support::workspace_root().to_owned(),
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--setup-only" => options.setup_only = true,
            "--no-install" => options.may_install = false,
            "--root" => {
                let dir = args.next().ok_or("--root needs a directory")?;
                options.root = PathBuf::from(dir);
            }
            other => return Err(format!("unknown option `{other}`")),
        }
    }
    Ok(options)
}

fn run(options: &Options) -> ExitCode {
    println!("== setup (one line per piece)");
    let tools = setup::run(&options.root, options.may_install);
    if options.setup_only {
        return ExitCode::SUCCESS;
    }
    let totals = summary::run_suites(&options.root, &tools);
    for line in &totals.skip_lines {
        println!("skipped: {line}");
    }
    println!("{}", totals.line());
    if totals.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
