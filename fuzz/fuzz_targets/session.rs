//! See `aerobridge_proto::fuzzing::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge_proto::fuzzing::session(data));
