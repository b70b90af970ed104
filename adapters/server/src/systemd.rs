//! What the service manager hears (`sd_notify`, for `Type=notify` units such
//! as `packaging/systemd/wsauth.service`): ready once the listeners are bound,
//! reloading around a `SIGHUP`, stopping when the drain starts. Without
//! `NOTIFY_SOCKET` (not started by systemd) nothing is sent.

use std::net::SocketAddr;

/// Both listeners are bound: `READY=1`, with where they listen as the status.
pub fn ready(ws: SocketAddr, admin: SocketAddr) {
    let status = format!("listening on {ws} (WebSocket) and {admin} (admin)");
    send(&[Message::Ready, Message::Status(&status)]);
}

/// A reload of the key and certificate files starts: `RELOADING=1` and the
/// monotonic time systemd 253+ asks for.
pub fn reloading() {
    send(&[Message::Reloading]);
}

/// The reload is over (whatever its outcome: the old files stay in force on a
/// refusal): `READY=1` again.
pub fn reloaded() {
    send(&[Message::Ready]);
}

/// The drain starts: `STOPPING=1`.
pub fn stopping() {
    send(&[Message::Stopping]);
}

enum Message<'a> {
    Ready,
    Reloading,
    Stopping,
    Status(&'a str),
}

#[cfg(unix)]
fn send(messages: &[Message]) {
    use sd_notify::NotifyState;
    let mut states = Vec::new();
    for message in messages {
        match message {
            Message::Ready => states.push(NotifyState::Ready),
            Message::Reloading => {
                states.push(NotifyState::Reloading);
                if let Ok(now) = NotifyState::monotonic_usec_now() {
                    states.push(now);
                }
            }
            Message::Stopping => states.push(NotifyState::Stopping),
            Message::Status(status) => states.push(NotifyState::Status(status)),
        }
    }
    if let Err(e) = sd_notify::notify(&states) {
        tracing::warn!(error = %e, "cannot notify the service manager (NOTIFY_SOCKET)");
    }
}

#[cfg(not(unix))]
fn send(_: &[Message]) {}
