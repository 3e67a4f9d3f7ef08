//! See `aerobridge_proto::fuzzing::data_port`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge_proto::fuzzing::data_port(data));
