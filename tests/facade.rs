//! The facade crate re-exports the core, and by default the server library and
//! the stores: a client of `wsauth` names no other wsauth crate.

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

/// With the default features, the server library and the stores come through
/// the facade too.
#[test]
fn the_facade_reexports_the_server_and_the_stores() {
    let config = wsauth::server::config::Config::default();
    let settings = wsauth::server::server::store_settings(&config);
    let hub = wsauth::store::hub::Hub::new(config.limits.outbound_queue);
    let _store = wsauth::store::MemoryStore::new(settings, hub as Arc<dyn wsauth::store::Notify>);
}

/// The README's application example is one of docs/app-integration.md's, which
/// the facade's doctests compile, so the README can never show code that does not
/// build; and it stays under 20 lines.
#[test]
fn the_readme_app_example_is_a_compiled_doc_example_under_twenty_lines() {
    let readme = include_str!("../README.md");
    let guide = include_str!("../docs/app-integration.md");
    let start = readme
        .find("```rust\n")
        .expect("the README has a Rust example")
        + 8;
    let code = &readme[start..];
    let code = &code[..code.find("```").expect("closed")];
    assert!(code.contains("\"chat.send\"") && code.contains("ctx.sub"));
    assert!(code.lines().count() < 20, "{} lines", code.lines().count());
    assert!(
        guide.contains(&format!("```rust,no_run\n{code}```")),
        "the README's example differs from docs/app-integration.md's"
    );
}
