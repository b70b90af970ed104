#![no_main]
//! The client message decoder on arbitrary bytes: never panics, and whatever
//! decodes re-encodes and decodes to the same value.

use libfuzzer_sys::fuzz_target;
use wsauth_core::decode_client_message;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(msg) = decode_client_message(text, 64 * 1024) {
        let again = decode_client_message(&msg.to_json(), usize::MAX).expect("re-encoded message decodes");
        assert_eq!(msg, again);
    }
});
