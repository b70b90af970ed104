#![no_main]
//! The client message decoder on arbitrary bytes.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsauth_core::fuzzing::decode(data));
