//! `aerobridge echo`: the same WebSocket path, messages echoed (what Autobahn drives).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use tungstenite::Message;

#[test]
fn echo_mode_sends_text_and_binary_back_and_serves_no_telemetry() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aerobridge"))
        .args(["echo", "--port", "0"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = loop {
        let line = lines.next().expect("echo server log").unwrap();
        assert!(
            !line.contains("tcp-data"),
            "no telemetry listener in echo mode"
        );
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_string();
        }
    };
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).unwrap();
    let big = "x".repeat(1 << 20);
    for msg in [
        Message::text("héllo"),
        Message::binary(vec![0u8, 1, 2, 255]),
        Message::text(big.clone()),
    ] {
        ws.send(msg.clone()).unwrap();
        assert_eq!(ws.read().unwrap(), msg);
    }
    ws.close(None).unwrap();
    let _ = child.kill();
    let _ = child.wait();
}
