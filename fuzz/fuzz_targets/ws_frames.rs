//! See `aerobridge_proto::fuzzing::ws_frames`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge_proto::fuzzing::ws_frames(data));
