//! The pieces the tests need from outside Rust, as a table: each row finds its piece,
//! installs it when it can, and ends in one line saying which. A piece that can be neither
//! found nor installed is reported, never an error: the tests that need it skip visibly.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use wsauth_test_support::{VENV_DIR, venv_python};

/// One thing the tests need. A new test dependency is one more row of [`PIECES`].
struct Piece {
    name: &'static str,
    needed_by: &'static str,
    ensure: fn(&mut Setup) -> Status,
}

const PIECES: &[Piece] = &[
    Piece {
        name: "redis-server",
        needed_by: "the Redis store, the server suite on Redis, multi-node",
        ensure: |s| s.debian_tool("redis-server", "redis-server"),
    },
    Piece {
        name: "chromium",
        needed_by: "the dashboard in a browser",
        ensure: |s| s.debian_tool("chromium", "chromium"),
    },
    Piece {
        name: "systemd-analyze",
        needed_by: "the check of the systemd units (packaging/systemd)",
        ensure: |s| s.debian_tool("systemd-analyze", "systemd"),
    },
    Piece {
        name: "prometheus",
        needed_by: "`promtool test rules` of packaging/prometheus, a real Prometheus scraping a node",
        // Without its recommended node exporter: only the two programs are needed.
        ensure: |s| s.debian_tool_with("prometheus", "prometheus", false),
    },
    Piece {
        name: "python venv",
        needed_by: "the Python client, the dashboard (Playwright)",
        ensure: Setup::python_venv,
    },
    Piece {
        name: "node clients",
        needed_by: "`npm test` of clients/*, the OIDC provider tests (tests/oidc)",
        ensure: Setup::node_clients,
    },
];

/// Directories of Node packages that Rust tests run (`npm ci` there, no `npm test`).
const NODE_TEST_PACKAGES: &[&str] = &["tests/oidc"];

/// The Python packages, pinned; installed into `.venv/`.
pub const REQUIREMENTS: &str = "tests/requirements.txt";

/// What the test phase can use.
pub struct Tools {
    /// The venv's interpreter, when the venv is set up.
    pub python: Option<PathBuf>,
    /// The client directories with a `package-lock.json`, and whether `npm` runs.
    pub node_clients: Vec<PathBuf>,
    pub npm: bool,
}

enum Status {
    Found(String),
    Installed(String),
    /// Nothing to do (e.g. no Node client exists yet).
    NotNeeded(String),
    Missing(String),
}

struct Setup {
    root: PathBuf,
    may_install: bool,
    apt_updated: bool,
    tools: Tools,
}

/// Finds or installs every piece, printing one line for each.
pub fn run(root: &Path, may_install: bool) -> Tools {
    let mut setup = Setup {
        root: root.to_owned(),
        may_install,
        apt_updated: false,
        tools: Tools {
            python: None,
            node_clients: node_clients(root),
            npm: false,
        },
    };
    for piece in PIECES {
        let (word, detail) = match (piece.ensure)(&mut setup) {
            Status::Found(what) => ("found", what),
            Status::Installed(what) => ("installed", what),
            Status::NotNeeded(why) => ("not needed", why),
            Status::Missing(why) => (
                "MISSING",
                format!("{why}; these tests will skip: {}", piece.needed_by),
            ),
        };
        println!("setup: {:<13} {word}: {detail}", piece.name);
    }
    setup.tools
}

impl Setup {
    /// A program from a Debian package: found on `PATH`, else `apt-get install`ed.
    fn debian_tool(&mut self, program: &str, package: &str) -> Status {
        self.debian_tool_with(program, package, true)
    }

    /// [`Setup::debian_tool`], with or without the package's recommended packages.
    fn debian_tool_with(&mut self, program: &str, package: &str, recommends: bool) -> Status {
        if let Some(version) = version_of(program) {
            return Status::Found(version);
        }
        if let Err(why) = self.apt_install_with(&[package], recommends) {
            return Status::Missing(format!("`{program}` is not installed ({why})"));
        }
        match version_of(program) {
            Some(version) => Status::Installed(format!("{version} (Debian `{package}`)")),
            None => Status::Missing(format!("`{program}` does not run after installing it")),
        }
    }

    /// `.venv/` with the packages of [`REQUIREMENTS`]; a copy of the file inside the venv
    /// says which pins it holds, so an unchanged venv costs nothing.
    fn python_venv(&mut self) -> Status {
        let requirements_path = self.root.join(REQUIREMENTS);
        let Ok(requirements) = std::fs::read_to_string(&requirements_path) else {
            return Status::Missing(format!("{} is missing", requirements_path.display()));
        };
        let pins = pins(&requirements);
        let venv = self.root.join(VENV_DIR);
        let python = venv_python(&self.root);
        let stamp = venv.join("wsauth-requirements.txt");
        let runs = version_of(&python.to_string_lossy()).is_some();
        if runs && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&requirements) {
            self.tools.python = Some(python);
            return Status::Found(format!("{VENV_DIR}/ with {pins}"));
        }
        if !self.may_install {
            return Status::Missing(format!("{VENV_DIR}/ is not set up (--no-install)"));
        }
        if !runs && let Err(why) = self.create_venv(&venv) {
            return Status::Missing(why);
        }
        let pip = Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg("--requirement")
            .arg(&requirements_path)
            .status();
        if !pip.is_ok_and(|s| s.success()) {
            return Status::Missing(format!("pip could not install {REQUIREMENTS}"));
        }
        if let Err(e) = std::fs::write(&stamp, &requirements) {
            return Status::Missing(format!("cannot write {}: {e}", stamp.display()));
        }
        self.tools.python = Some(python);
        Status::Installed(format!("{pins} into {VENV_DIR}/"))
    }

    /// `python3 -m venv`, installing Debian's `python3` and `python3-venv` (which
    /// brings `ensurepip`) when that fails.
    fn create_venv(&mut self, venv: &Path) -> Result<(), String> {
        let create = || {
            Command::new("python3")
                .args(["-m", "venv", "--clear"])
                .arg(venv)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if create() {
            return Ok(());
        }
        self.apt_install(&["python3", "python3-venv"])
            .map_err(|why| format!("`python3 -m venv` does not work ({why})"))?;
        if create() {
            Ok(())
        } else {
            Err("`python3 -m venv` fails even with python3-venv installed".into())
        }
    }

    /// `npm ci` in every client with a committed lockfile (`clients/*/package-lock.json`)
    /// and in each of [`NODE_TEST_PACKAGES`] that has one.
    fn node_clients(&mut self) -> Status {
        let dirs: Vec<PathBuf> = (self.tools.node_clients.iter().cloned())
            .chain(NODE_TEST_PACKAGES.iter().map(|dir| self.root.join(dir)))
            .filter(|dir| dir.join("package-lock.json").is_file())
            .collect();
        if dirs.is_empty() {
            return Status::NotNeeded("no clients/*/package-lock.json yet".into());
        }
        let mut status = match version_of("npm") {
            Some(version) => Status::Found(format!("npm {version}")),
            None => match self.apt_install(&["nodejs", "npm"]) {
                Err(why) => return Status::Missing(format!("`npm` is not installed ({why})")),
                Ok(()) => match version_of("npm") {
                    Some(version) => Status::Installed(format!("npm {version} (Debian `npm`)")),
                    None => {
                        return Status::Missing("`npm` does not run after installing it".into());
                    }
                },
            },
        };
        self.tools.npm = true;
        if !self.may_install {
            if dirs.iter().all(|c| c.join("node_modules").is_dir()) {
                return status;
            }
            self.tools.npm = false;
            return Status::Missing(
                "`npm ci` has not run in every client and test package (--no-install)".into(),
            );
        }
        for client in &dirs {
            let ci = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(client)
                .stdout(Stdio::null())
                .status();
            if !ci.is_ok_and(|s| s.success()) {
                self.tools.npm = false;
                return Status::Missing(format!("`npm ci` failed in {}", client.display()));
            }
        }
        if let Status::Found(what) | Status::Installed(what) = &mut status {
            what.push_str(&format!(
                ", `npm ci` in {} clients and {} test packages",
                self.tools.node_clients.len(),
                dirs.len() - self.tools.node_clients.len()
            ));
        }
        status
    }

    /// `apt-get install` as root, or through `sudo` when that needs no password.
    fn apt_install(&mut self, packages: &[&str]) -> Result<(), String> {
        self.apt_install_with(packages, true)
    }

    /// [`Setup::apt_install`], with or without the recommended packages.
    fn apt_install_with(&mut self, packages: &[&str], recommends: bool) -> Result<(), String> {
        if !self.may_install {
            return Err("--no-install".into());
        }
        if version_of("apt-get").is_none() {
            return Err("no apt-get on this machine".into());
        }
        let sudo = if is_root() {
            false
        } else if Command::new("sudo")
            .args(["-n", "true"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {
            true
        } else {
            return Err("installing needs root or password-less sudo".into());
        };
        let apt = |args: &[&str]| {
            let mut cmd = if sudo {
                let mut c = Command::new("sudo");
                c.args(["-n", "apt-get"]);
                c
            } else {
                Command::new("apt-get")
            };
            cmd.args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        };
        if !self.apt_updated {
            if !apt(&["update", "-qq"]) {
                return Err("apt-get update failed".into());
            }
            self.apt_updated = true;
        }
        let mut install = vec!["install", "-y", "-qq"];
        if !recommends {
            install.push("--no-install-recommends");
        }
        install.extend(packages);
        if apt(&install) {
            Ok(())
        } else {
            Err(format!("apt-get install {} failed", packages.join(" ")))
        }
    }
}

/// The first line `program --version` prints, or `None` when it does not run.
fn version_of(program: &str) -> Option<String> {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())?;
    let text = if out.stdout.is_empty() {
        out.stderr
    } else {
        out.stdout
    };
    let text = String::from_utf8_lossy(&text);
    Some(text.lines().next().unwrap_or("").trim().to_owned())
}

/// Whether this process runs as root (the effective uid in `/proc/self/status`).
fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|line| line.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1))
            == Some("0")
    })
}

/// `name==version` lines of a requirements file, joined for a report line.
fn pins(requirements: &str) -> String {
    let pins: Vec<&str> = requirements
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    pins.join(" ")
}

/// `clients/*` directories with a committed `package-lock.json`, sorted.
fn node_clients(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(root.join("clients")) else {
        return Vec::new();
    };
    let mut clients: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|dir| dir.join("package-lock.json").is_file())
        .collect();
    clients.sort();
    clients
}
