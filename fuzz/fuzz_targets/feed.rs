//! See `aerobridge::fuzzing::feed`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge::fuzzing::feed(data));
