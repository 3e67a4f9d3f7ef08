//! Frames over TCP and WebSocket: shape, every reference key in order, consecutive counters,
//! interop with independent WebSocket clients (tungstenite, Python `websockets`).

mod common;

use common::*;

const TOP: [&str; 8] = [
    "schema",
    "schema_version",
    "timestamp",
    "timestamp_unit",
    "data_valid",
    "update_counter",
    "broadcast_rate_hz",
    "variables",
];

fn check_frame(frame: &[u8]) {
    assert!(frame.ends_with(b"}\n"), "ends with one newline");
    assert_eq!(frame.iter().filter(|b| **b == b'\n').count(), 1);
    let (top, vars) = frame_keys(frame);
    assert_eq!(top, TOP);
    assert_eq!(
        vars,
        reference_keys(),
        "every reference key, in wire order, once"
    );
    let text = std::str::from_utf8(frame).unwrap();
    for bad in ["NaN", "Infinity", ": ", ", "] {
        assert!(!text.contains(bad), "frame contains {bad:?}");
    }
    let v = parse(frame);
    assert_eq!(v["schema"], "aerofly-bridge-telemetry");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["timestamp_unit"], "microseconds");
    assert_eq!(v["data_valid"], 1);
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as i64;
    assert!(
        (now_us - v["timestamp"].as_i64().unwrap()).abs() < 10_000_000,
        "timestamp is wall-clock µs"
    );
    let vars = v["variables"].as_object().unwrap();
    assert_eq!(vars["Aircraft.Name"], "Beechcraft Baron 58");
    let lat = vars["Aircraft.Latitude"].as_f64().unwrap();
    assert!(
        (0.6..0.7).contains(&lat),
        "latitude in radians near KSFO: {lat}"
    );
    assert!(
        vars["Communication.COM1Frequency"].as_f64().unwrap() > 1e8,
        "frequencies in Hz"
    );
}

#[test]
fn tcp_frames_carry_every_reference_key_in_order_and_count_up_by_one() {
    let server = Server::start(&["--broadcast-ms", "10"]);
    let mut client = TcpLines::connect(server.data);
    let first = client.frame();
    check_frame(&first);
    assert_eq!(parse(&first)["broadcast_rate_hz"], 100.0);
    let mut last = counter_of(&first);
    for _ in 0..150 {
        let f = client.frame();
        let c = counter_of(&f);
        assert_eq!(c, last + 1, "update_counter consecutive");
        last = c;
    }
    check_frame(&client.frame());
}

#[test]
fn websocket_frames_via_tungstenite_are_the_same_and_consecutive() {
    let server = Server::start(&["--broadcast-ms", "10"]);
    let (mut ws, response) = tungstenite::connect(format!("ws://{}/", server.ws())).unwrap();
    assert_eq!(response.status(), 101);
    let mut last = None;
    for i in 0..150 {
        let msg = ws.read().unwrap();
        let tungstenite::Message::Text(text) = msg else {
            panic!("expected text, got {msg:?}")
        };
        let bytes = text.as_bytes();
        if i == 0 {
            check_frame(bytes);
        }
        let c = counter_of(bytes);
        if let Some(l) = last {
            assert_eq!(c, l + 1, "update_counter consecutive over WebSocket");
        }
        last = Some(c);
    }
    ws.close(None).unwrap();
}

#[test]
fn tcp_and_websocket_carry_identical_payloads() {
    let server = Server::start(&[]);
    let mut tcp = TcpLines::connect(server.data);
    let mut ws = RawWs::connect(server.ws());
    let mut t = tcp.frame();
    let mut w = ws.frame();
    assert_eq!((w.fin, w.opcode), (true, 1));
    // The two clients joined at different ticks: advance the one behind, then compare.
    while counter_of(&t) != counter_of(&w.payload) {
        if counter_of(&t) < counter_of(&w.payload) {
            t = tcp.frame();
        } else {
            w = ws.frame();
        }
    }
    assert_eq!(
        t, w.payload,
        "same bytes on both transports, newline included"
    );
}

#[test]
fn python_websockets_client_interoperates() {
    let server = Server::start(&[]);
    let stdout = python("ws_client.py", &[&format!("ws://{}/", server.ws())]);
    assert!(stdout.contains("frames=50 gaps=0"), "{stdout}");
    assert!(stdout.contains("reply ok=True"), "{stdout}");
    assert!(stdout.contains("applied=True"), "{stdout}");
}

#[test]
fn data_port_ignores_what_clients_send() {
    use std::io::Write;
    let server = Server::start(&[]);
    let mut client = TcpLines::connect(server.data);
    client.writer().write_all(&vec![b'x'; 100_000]).unwrap();
    let a = counter_of(&client.frame());
    let b = counter_of(&client.frame());
    assert_eq!(b, a + 1);
    // Five more ticks after the garbage was read: frames still whole and in order.
    for i in 1..=5 {
        let frame = client.frame();
        check_frame(&frame);
        assert_eq!(counter_of(&frame), b + i);
    }
}
