//! The TCP line splitter with input-controlled chunking: lines never exceed the limit, never
//! contain `\n`, and no byte is invented.
#![no_main]

use aerobridge::command::{Line, LineSplitter};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = 1 + data[0] as usize;
    let step = 1 + data[1] as usize;
    let bytes = &data[2..];
    let mut s = LineSplitter::new(max);
    let mut out_bytes = 0usize;
    let mut check = |line: Line<'_>| {
        if let Line::Text(t) = line {
            assert!(t.len() <= max, "line over the limit");
            assert!(!t.contains(&b'\n'));
            out_bytes += t.len();
        }
    };
    for chunk in bytes.chunks(step) {
        s.extend(chunk);
        while let Some(line) = s.next_line() {
            check(line);
        }
    }
    if let Some(line) = s.finish() {
        check(line);
    }
    assert!(out_bytes <= bytes.len());
});
