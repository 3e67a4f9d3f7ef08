//! See `aerobridge_proto::fuzzing::upgrade_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge_proto::fuzzing::upgrade_request(data));
