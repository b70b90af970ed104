#![no_main]
//! The JWT verifier on arbitrary strings and on structured tokens signed by a real key.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsauth_core::fuzzing::verifier(data));
