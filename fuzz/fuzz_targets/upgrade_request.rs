//! See `aerobridge::fuzzing::upgrade_request`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge::fuzzing::upgrade_request(data));
