//! See `aerobridge::fuzzing::data_port`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge::fuzzing::data_port(data));
