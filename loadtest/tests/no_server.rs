//! Runs that cannot do what was asked fail in words: with nothing listening, loadtest says it
//! cannot connect (it used to print a table of zeros and exit 0); commands asked for with no
//! command port reachable fail the run with the reason (it used to report 1 error and exit 0).

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

/// A stand-in telemetry server: one JSON frame per line with `update_counter` and `timestamp`,
/// every 20 ms, to every connection. Returns its port.
fn frames_server() -> u16 {
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            std::thread::spawn(move || {
                for counter in 0u64.. {
                    let us = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_micros();
                    let frame = format!(
                        "{{\"schema\":\"aerofly-bridge-telemetry\",\"update_counter\":{counter},\"timestamp\":{us},\"variables\":{{}}}}\n"
                    );
                    if conn.write_all(frame.as_bytes()).is_err() {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            });
        }
    });
    port
}

#[test]
fn commands_asked_for_but_unreachable_fail_the_run_with_the_reason() {
    let data = frames_server();
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args([
            "--tcp",
            "2",
            "--ws",
            "0",
            "--duration",
            "2s",
            "--warmup",
            "1s",
            "--quiet",
        ])
        .args(["--tcp-port", &data.to_string()])
        .args(["--command-port", &closed.to_string(), "--command-rate", "5"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "FAILED: --command-rate 5 but 0 commands sent, 0 replies: cannot connect to the command port 127.0.0.1:{closed}"
        )),
        "{stderr}"
    );
}

#[test]
fn reports_name_the_target_measured_not_aerobridge() {
    let data = frames_server();
    let json = std::env::temp_dir().join(format!("loadtest-label-{}.json", std::process::id()));
    for (label, want) in [
        (None, format!("127.0.0.1:{data}")),
        (Some("node ws"), "node ws".to_string()),
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_loadtest"));
        command
            .args([
                "--tcp",
                "2",
                "--ws",
                "0",
                "--duration",
                "1s",
                "--warmup",
                "0s",
                "--quiet",
            ])
            .args(["--tcp-port", &data.to_string(), "--json"])
            .arg(&json);
        if let Some(l) = label {
            command.args(["--label", l]);
        }
        let out = command.output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!stdout.contains("aerobridge"), "{stdout}");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["run"]["target"], want.as_str());
        let svg = std::fs::read_to_string(json.with_extension("svg")).unwrap();
        assert!(
            svg.contains(&want) && !svg.contains("aerobridge tcp"),
            "the plot's legend"
        );
    }
    for ext in ["json", "svg", "html"] {
        let _ = std::fs::remove_file(json.with_extension(ext));
    }
}

#[test]
fn capacity_searches_any_server_and_reports_every_step() {
    let data = frames_server();
    let json = std::env::temp_dir().join(format!("loadtest-capacity-{}.json", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_loadtest"))
        .args(["capacity", "--target", "external", "--transport", "tcp"])
        .args([
            "--tcp-port",
            &data.to_string(),
            "--start",
            "2",
            "--max",
            "8",
            "--step",
            "1s",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let _ = std::fs::remove_file(&json);
    // 2, 4, 8: doubling up to --max, every step shown and passed.
    let steps: Vec<u64> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["clients"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [2, 4, 8], "{stdout}");
    assert_eq!(report["capacity"], 8);
    assert_eq!(report["target"], format!("127.0.0.1:{data}"));
    assert!(
        stdout.contains(&format!("capacity of 127.0.0.1:{data}: 8 clients at 50 Hz")),
        "{stdout}"
    );
}
