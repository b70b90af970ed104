//! The facade crate re-exports the core: a client of `wsauth` can drive a
//! connection without naming `wsauth-core`.

use std::sync::Arc;

use wsauth::{Connection, ErrorCode, Frame, Input, Output, ServerMessage, SessionConfig};

#[test]
fn the_facade_drives_a_connection_to_its_auth_timeout() {
    let mut conn = Connection::new(Arc::new(SessionConfig::default()), 1_000);
    assert_eq!(
        conn.poll_timeout(),
        Some(6_000),
        "the auth deadline is armed"
    );
    conn.handle(
        2_000,
        Input::Frame(Frame::Text(r#"{"type":"join","id":1,"channel":"x"}"#)),
    );
    let outputs: Vec<Output> = std::iter::from_fn(|| conn.poll_output()).collect();
    let error = outputs.iter().find_map(|o| match o {
        Output::Send(ServerMessage::Error { code, id, .. }) => Some((*code, *id)),
        _ => None,
    });
    assert_eq!(error, Some((ErrorCode::NotAuthenticated, Some(1))));
    assert!(conn.is_closed());
}
