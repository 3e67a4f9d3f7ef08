//! See `aerobridge_proto::fuzzing::line_splitter`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| aerobridge_proto::fuzzing::line_splitter(data));
