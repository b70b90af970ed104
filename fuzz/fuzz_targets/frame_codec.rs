#![no_main]
//! The client's frames after the upgrade, read as the server reads them: the frame
//! meter, tungstenite with the server's WebSocket settings, the core connection.
libfuzzer_sys::fuzz_target!(|data: &[u8]| wsauth_server::fuzzing::frame_codec(data));
