//! See `aerobridge::fuzzing::session`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge::fuzzing::session(data));
