#![no_main]
//! The configuration loader on arbitrary TOML: never panics.
libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = wsauth_server::config::load_toml_text(text);
    }
});
