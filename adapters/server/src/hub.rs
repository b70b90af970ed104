//! The node-local registry of live sessions: where the store's notices (channel
//! deliveries, takeovers, revocations) find the connection task holding a session.
//! It lives in `wsauth-store` so that loom can check it; re-exported here so that
//! the server's paths stay as they were.

pub use wsauth_store::hub::*;
