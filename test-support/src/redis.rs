//! A throwaway `redis-server` for tests: its own random port and directory, no
//! state shared between runs, killed when dropped.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` child process on `127.0.0.1`.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    persistent: bool,
    /// Runs under a shell that kills it when the test process's end of its stdin
    /// closes, i.e. when the test process exits (a static is never dropped).
    tied_to_process: bool,
}

/// Whether `redis-server` is installed; when not, reports `test` as skipped (a visible
/// `WSAUTH-SKIPPED` line, see [`crate::skip`]). With `WSAUTH_REQUIRE_REDIS`
/// set (CI sets it), a missing server is a failure.
pub fn available(test: &str) -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        crate::skip(
            test,
            "redis-server is not installed (`cargo xtask test` installs it)",
            "WSAUTH_REQUIRE_REDIS",
        );
    }
    found
}

impl RedisServer {
    /// Starts a server that keeps nothing on disk.
    pub fn start() -> RedisServer {
        Self::launch(false)
    }

    /// Starts a server with an append-only file synced on every write, so that a
    /// stop and [`RedisServer::restart`] lose nothing.
    pub fn start_persistent() -> RedisServer {
        Self::launch(true)
    }

    /// One server for the whole test binary, stopped when the process exits. Give
    /// each store its own key prefix.
    pub fn shared() -> &'static RedisServer {
        static SHARED: std::sync::OnceLock<RedisServer> = std::sync::OnceLock::new();
        SHARED.get_or_init(|| Self::launch_with(false, true))
    }

    fn launch(persistent: bool) -> RedisServer {
        Self::launch_with(persistent, false)
    }

    fn launch_with(persistent: bool, tied_to_process: bool) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            persistent,
            tied_to_process,
        };
        for _ in 0..10 {
            if server.spawn() {
                return server;
            }
            server.port = free_port();
        }
        panic!("redis-server did not start on any of 10 ports");
    }

    /// Starts the process on this server's port; false when it did not come up.
    fn spawn(&mut self) -> bool {
        let port = self.port.to_string();
        let mut args = vec!["--bind", "127.0.0.1", "--port", &port];
        args.extend(["--dir", path(self.dir.path()), "--save", ""]);
        args.extend(["--protected-mode", "no", "--loglevel", "warning"]);
        if self.persistent {
            args.extend(["--appendonly", "yes", "--appendfsync", "always"]);
        } else {
            args.extend(["--appendonly", "no"]);
        }
        let mut cmd = if self.tied_to_process {
            let mut sh = Command::new("sh");
            sh.arg("-c")
                .arg(r#"redis-server "$@" & pid=$!; cat >/dev/null; kill $pid; wait $pid"#)
                .arg("sh")
                .args(&args)
                .stdin(Stdio::piped());
            sh
        } else {
            let mut direct = Command::new("redis-server");
            direct.args(&args);
            direct
        };
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let child = cmd.spawn().expect("redis-server runs");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && child.try_wait().ok().flatten().is_some()
            {
                self.child = None;
                return false;
            }
            if ping(self.port) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
        false
    }

    /// The URL to give a store: `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stops the server (SIGKILL: a crash, not a shutdown) and waits for it.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts it again on the same port and directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop it first");
        assert!(self.spawn(), "redis-server restarts on port {}", self.port);
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 temporary path")
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("an ephemeral port");
    listener.local_addr().expect("its address").port()
}

/// A `PING` over a plain socket: whether the server answers yet.
fn ping(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"+PONG"))
}
