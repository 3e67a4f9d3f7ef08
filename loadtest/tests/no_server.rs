//! With nothing listening, loadtest says it cannot connect and exits non-zero (it used to print a
//! table of zeros and exit 0).

use std::process::Command;

#[test]
fn no_server_is_a_clear_failure_not_a_run_of_zeros() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["--tcp", "5", "--ws", "0", "--duration", "2s", "--quiet"])
        .args(["--tcp-port", &port.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "cannot connect to 127.0.0.1:{port}: connection refused"
        )),
        "{stderr}"
    );
}
