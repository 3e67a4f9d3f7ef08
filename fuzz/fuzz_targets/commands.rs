//! See `aerobridge::fuzzing::commands`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge::fuzzing::commands(data));
