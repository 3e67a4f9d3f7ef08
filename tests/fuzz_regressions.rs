//! Replays every fuzz seed (`fuzz/corpus/<target>/`) and every input that ever crashed a target
//! (`fuzz/regressions/<target>/`) through the same checks the fuzzers run.

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "regressions"] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz")
            .join(dir)
            .join(target);
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries {
            let file = entry.unwrap().path();
            let data = std::fs::read(&file).unwrap();
            let result = std::panic::catch_unwind(|| check(&data));
            assert!(result.is_ok(), "{} fails {target}", file.display());
            n += 1;
        }
    }
    n
}

#[test]
fn fuzz_seeds_and_past_crashes_pass() {
    use aerobridge::fuzzing::*;
    assert!(replay("ws_frames", ws_frames) >= 5);
    assert!(replay("upgrade_request", upgrade_request) >= 3);
    assert!(replay("commands", commands) >= 5);
    assert!(replay("line_splitter", line_splitter) >= 1);
}
