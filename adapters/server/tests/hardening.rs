//! Issue 15 ("Hardening"), findings 6 and 7, over real sockets: each case is a
//! finding reproduced against the server, which must now refuse it.

#[path = "../../../tests/common/mod.rs"]
mod common;

use common::*;
use serde_json::json;

// ----- Finding 6: token lifetime --------------------------------------------

/// A token valid until 2286 would outlive every revocation of its `jti` or
/// `sub` (kept `session.max_token_lifetime_s`): refused, on the header and
/// by message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_outliving_its_revocations_is_refused_invalid_token() {
    let s = server(test_config()).await;
    let ancient = token(
        "alice",
        json!({"iat": 1_000_000_000u64, "exp": 9_999_999_999u64, "jti": "j-2286"}),
    );
    let auth = format!("Bearer {ancient}");
    let (status, body) = Client::connect_with(s.ws_addr, &[("Authorization", &auth)])
        .await
        .err()
        .expect("the upgrade is refused");
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("INVALID_TOKEN"), "{body}");
    assert!(!body.contains(&ancient));

    let mut c = Client::connect(s.ws_addr).await;
    c.send(json!({"type": "auth", "id": 1, "token": ancient}))
        .await;
    let error = c.expect_fatal("INVALID_TOKEN", 4401).await;
    assert!(!error.to_string().contains(&ancient));

    // A token within the bound still authenticates.
    let day = token("alice", json!({"exp": now_s() + 86_000}));
    let (_c, reply) = Client::authed(s.ws_addr, &day).await;
    assert_eq!(reply["user_id"], "alice");
}
