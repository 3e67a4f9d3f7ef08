//! The client libraries' examples run against the real server: the Python CSV flight logger
//! (ten values at 5 Hz) and the Node script that sets the throttle and waits for the ack. (The
//! browser page runs in tests/dashboard_e2e.rs.)

mod common;

use common::Server;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn run(program: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(program)
        .args(args)
        .current_dir(repo())
        .env("PYTHONPATH", repo().join("clients/python"))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{program} {args:?}:\n{stdout}\n{stderr}"
    );
    (stdout, stderr)
}

#[test]
fn the_flight_logger_writes_ten_values_at_5_hz() {
    let server = Server::start(&[]);
    let url = format!("ws://{}/", server.ws.unwrap());
    let csv = std::env::temp_dir().join(format!("aerobridge-flight-{}.csv", std::process::id()));
    let csv_arg = csv.display().to_string();
    run(
        "python3",
        &[
            "clients/examples/flight_logger.py",
            &csv_arg,
            "--url",
            &url,
            "--duration",
            "2",
        ],
    );
    let text = std::fs::read_to_string(&csv).unwrap();
    let _ = std::fs::remove_file(&csv);
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split(',').collect();
    assert_eq!(header.len(), 13, "{header:?}");
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert!(
        rows.len() >= 5,
        "{} rows in 2 s at 5 Hz:\n{text}",
        rows.len()
    );
    let counters: Vec<u64> = rows.iter().map(|r| r[0].parse().unwrap()).collect();
    // 5 Hz of a 50 Hz broadcast: every 10th frame, rising.
    assert!(counters.iter().all(|c| c % 10 == 0), "{counters:?}");
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "{counters:?}");
    for row in &rows {
        assert_eq!(row.len(), 13);
        assert!(row[3..].iter().all(|v| v.parse::<f64>().is_ok()), "{row:?}");
    }
}

#[test]
fn the_throttle_script_gets_its_ack_and_sees_the_frame() {
    let server = Server::start(&[]);
    let url = format!("ws://{}/", server.ws.unwrap());
    let (stdout, _) = run(
        "node",
        &[
            "--experimental-websocket",
            "clients/examples/set_throttle.mjs",
            &url,
            "0.6",
        ],
    );
    assert!(
        stdout.contains("ack: the throttle shows from frame "),
        "{stdout}"
    );
    assert!(stdout.contains("Controls.Throttle1 = 0.6"), "{stdout}");
}
