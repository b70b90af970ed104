//! The systemd units (`packaging/systemd/`) and what the server tells a service
//! manager: the units pass `systemd-analyze verify`, and the binary, started with
//! a `NOTIFY_SOCKET` this test plays, says READY=1 once it listens, RELOADING=1
//! then READY=1 around a SIGHUP, and STOPPING=1 on SIGTERM.
#![cfg(unix)]

use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_wsauth-server");
const UNITS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../packaging/systemd");

/// The next notification, as its `KEY=value` lines.
fn next(socket: &UnixDatagram) -> Vec<String> {
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("a notification in time");
    String::from_utf8_lossy(&buf[..n])
        .lines()
        .map(str::to_owned)
        .collect()
}

fn signal(pid: u32, name: &str) {
    let sent = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("kill");
    assert!(sent.success());
}

#[test]
fn the_server_tells_the_service_manager_when_it_is_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket
        .set_read_timeout(Some(Duration::from_secs(15)))
        .expect("timeout");
    let mut child = Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("NOTIFY_SOCKET", &path)
        .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the binary starts");

    let ready = next(&socket);
    assert!(ready.contains(&"READY=1".to_owned()), "{ready:?}");
    let status = ready
        .iter()
        .find_map(|l| l.strip_prefix("STATUS=listening on "))
        .unwrap_or_else(|| panic!("a status naming the listeners: {ready:?}"));
    // Ready means bound: both addresses accept at once.
    let addrs: Vec<SocketAddr> = status
        .split(' ')
        .filter_map(|word| word.parse().ok())
        .collect();
    assert_eq!(addrs.len(), 2, "{status}");
    for addr in addrs {
        TcpStream::connect(addr).unwrap_or_else(|e| panic!("{addr} accepts when ready: {e}"));
    }

    signal(child.id(), "HUP");
    let reloading = next(&socket);
    assert!(
        reloading.contains(&"RELOADING=1".to_owned()),
        "{reloading:?}"
    );
    assert!(
        reloading.iter().any(|l| l.starts_with("MONOTONIC_USEC=")),
        "{reloading:?}"
    );
    assert_eq!(next(&socket), ["READY=1"]);

    signal(child.id(), "TERM");
    assert_eq!(next(&socket), ["STOPPING=1"]);
    let status = child.wait().expect("exits");
    assert!(status.success(), "a drained stop exits 0: {status}");
}

#[test]
fn the_units_pass_systemd_analyze_verify() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        wsauth_test_support::skip(
            "the_units_pass_systemd_analyze_verify",
            "systemd-analyze is not installed (Debian package systemd)",
            "WSAUTH_REQUIRE_SYSTEMD",
        );
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    for unit in ["wsauth.service", "wsauth@.service"] {
        let text = std::fs::read_to_string(Path::new(UNITS).join(unit)).expect("unit");
        // verify checks that ExecStart's program exists: point it at this build.
        let text = text.replace("/usr/local/bin/wsauth-server", BIN);
        let copy = dir.path().join(unit);
        std::fs::write(&copy, text).expect("write");
        let out = Command::new("systemd-analyze")
            .arg("verify")
            .arg(&copy)
            .output()
            .expect("systemd-analyze runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "{unit}: {stderr}"
        );
    }
    // And a unit with a mistake is caught (the check can fail).
    let broken = dir.path().join("broken.service");
    std::fs::write(&broken, "[Service]\nType=notfy\nExecStart=/bin/true\n").expect("write");
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&broken)
        .output()
        .expect("systemd-analyze runs");
    assert!(!String::from_utf8_lossy(&out.stderr).trim().is_empty());
}
