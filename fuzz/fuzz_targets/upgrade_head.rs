#![no_main]
//! The upgrade request head reader on arbitrary bytes, then the upgrade decision.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsauth_server::fuzzing::upgrade_head(data));
