#![no_main]
//! The upgrade-request decisions on arbitrary header sets.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsauth_core::fuzzing::upgrade(data));
