//! Replays every fuzz seed (`fuzz/corpus/<target>/`) and every input that ever crashed a target
//! (`fuzz/regressions/<target>/`, see its README) through the same checks the fuzzers run.

use std::path::Path;

/// Replays the files of `fuzz/<dir>/<target>/`; returns how many there were. A missing corpus
/// fails (a renamed folder must not turn this test into a no-op); a target with no past crashes
/// has no regressions folder.
fn replay(target: &str, dir: &str, check: fn(&[u8])) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    assert!(
        fuzz.join("regressions").join("README.md").exists(),
        "fuzz/regressions/ (where past crash inputs go) is missing"
    );
    let path = fuzz.join(dir).join(target);
    let entries = match std::fs::read_dir(&path) {
        Ok(entries) => entries,
        Err(_) if dir == "regressions" => return 0,
        Err(e) => panic!("{}: {e}", path.display()),
    };
    let mut n = 0;
    for entry in entries {
        let file = entry.unwrap().path();
        let data = std::fs::read(&file).unwrap();
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(result.is_ok(), "{} fails {target}", file.display());
        n += 1;
    }
    n
}

#[test]
fn fuzz_seeds_and_past_crashes_pass() {
    use aerobridge::fuzzing::*;
    type Check = fn(&[u8]);
    let targets: [(&str, Check, usize); 8] = [
        ("ws_frames", ws_frames, 5),
        ("upgrade_request", upgrade_request, 3),
        ("commands", commands, 5),
        ("line_splitter", line_splitter, 1),
        ("session", session, 16),
        ("data_port", data_port, 4),
        ("feed", feed, 3),
        ("tls_session", tls, 5),
    ];
    for (target, check, min_seeds) in targets {
        let seeds = replay(target, "corpus", check);
        assert!(
            seeds >= min_seeds,
            "{target}: {seeds} seeds, expected at least {min_seeds}"
        );
        let crashes = replay(target, "regressions", check);
        eprintln!("{target}: {seeds} seeds and {crashes} past crash inputs replayed");
    }
}

/// `tls_session` with the configurations the fuzz target makes (a fresh self-signed certificate).
fn tls(data: &[u8]) {
    use std::sync::{Arc, OnceLock};
    type Configs = (Arc<rustls::ServerConfig>, Arc<rustls::ClientConfig>);
    static CONFIGS: OnceLock<Configs> = OnceLock::new();
    let (server, client) = CONFIGS.get_or_init(|| {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        aerobridge::fuzzing::tls_configs(
            aerobridge::tls::provider(),
            cert.cert.der().to_vec(),
            cert.signing_key.serialize_der(),
        )
    });
    aerobridge::fuzzing::tls_session(data, Arc::clone(server), Arc::clone(client));
}
