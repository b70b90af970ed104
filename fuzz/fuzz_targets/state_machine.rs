#![no_main]
//! The state machine driven by arbitrary inputs, invariants checked after every step.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsauth_sim::fuzzing::machine(data));
