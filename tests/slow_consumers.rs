//! Slow consumers never delay anyone else and never get torn frames: a slow reader gets whole
//! frames with counted skips while 200 healthy clients miss nothing; a client that stops reading
//! is disconnected after `--max-lag`, a WebSocket one with Close 4000 "slow consumer".

mod common;

use common::*;
use std::io::Read;
use std::time::{Duration, Instant};

/// Reads TCP frames for `dur`; returns (frames, gaps).
fn healthy_tcp(addr: std::net::SocketAddr, dur: Duration) -> (u64, u64) {
    let mut c = TcpLines::connect(addr);
    let mut seen = GapCounter::default();
    let end = Instant::now() + dur;
    while Instant::now() < end {
        seen.see(counter_of(&c.frame()));
    }
    (seen.frames, seen.gaps)
}

/// Reads WebSocket frames (tungstenite) for `dur`; returns (frames, gaps).
fn healthy_ws(addr: std::net::SocketAddr, dur: Duration) -> (u64, u64) {
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).unwrap();
    let mut seen = GapCounter::default();
    let end = Instant::now() + dur;
    while Instant::now() < end {
        if let tungstenite::Message::Text(t) = ws.read().unwrap() {
            seen.see(counter_of(t.as_bytes()));
        }
    }
    (seen.frames, seen.gaps)
}

#[test]
fn slow_reader_gets_whole_frames_with_counted_skips_while_200_healthy_clients_miss_nothing() {
    let mut server = Server::start(&[
        "--max-lag",
        "20s",
        "--queue-frames",
        "32",
        "--send-buffer",
        "32768",
    ]);
    let run = Duration::from_secs(4);
    let mut healthy = Vec::new();
    for i in 0..200 {
        let (data, ws) = (server.data, server.ws());
        healthy.push(std::thread::spawn(move || {
            if i % 4 == 0 {
                healthy_ws(ws, run)
            } else {
                healthy_tcp(data, run)
            }
        }));
    }
    // The slow reader: a tiny receive window, 2 KiB every 50 ms (≈40 KB/s against ≈570 KB/s).
    let mut slow = small_buffer_stream(server.data, 4096);
    let mut bytes = Vec::new();
    let end = Instant::now() + run;
    let mut chunk = [0u8; 2048];
    while Instant::now() < end {
        let n = slow.read(&mut chunk).unwrap();
        assert!(n > 0, "slow reader was disconnected");
        bytes.extend_from_slice(&chunk[..n]);
        std::thread::sleep(Duration::from_millis(50));
    }
    let complete = bytes.len()
        - bytes
            .iter()
            .rev()
            .position(|b| *b == b'\n')
            .unwrap_or(bytes.len());
    let lines: Vec<&[u8]> = bytes[..complete].split_inclusive(|b| *b == b'\n').collect();
    assert!(lines.len() >= 3, "slow reader got {} frames", lines.len());
    let counters: Vec<u64> = lines
        .iter()
        .map(|l| {
            let v = parse(l); // whole JSON: never torn
            v["update_counter"].as_u64().unwrap()
        })
        .collect();
    assert!(counters.windows(2).all(|w| w[1] > w[0]), "in order");
    assert!(
        counters.windows(2).any(|w| w[1] > w[0] + 1),
        "slow reader skipped frames: {counters:?}"
    );

    for h in healthy {
        let (frames, gaps) = h.join().unwrap();
        assert_eq!(gaps, 0, "a healthy client missed frames");
        assert!(frames >= 100, "healthy client got only {frames} frames");
    }
    let (status, _) = server.terminate(Duration::from_secs(5));
    assert!(status.success());
    assert!(
        server.totals_field("frames_skipped") > 0,
        "skips are counted"
    );
}

#[test]
fn never_reading_websocket_client_is_closed_with_the_slow_consumer_code() {
    let server = Server::start(&["--max-lag", "500ms", "--send-buffer", "65536"]);
    let healthy = {
        let addr = server.data;
        std::thread::spawn(move || healthy_tcp(addr, Duration::from_secs(4)))
    };
    let mut stalled = RawWs::connect_small_buffer(server.ws(), 8192);
    let stalled_at = Instant::now();
    // Do not read until the server has decided.
    server.wait_for_log("disconnecting slow consumer", Duration::from_secs(15));
    let decided_after = stalled_at.elapsed();
    assert!(
        decided_after >= Duration::from_millis(500),
        "not before --max-lag: {decided_after:?}"
    );
    // Reading again drains whole frames, then the Close frame.
    let (code, reason, frames) = stalled.until_close();
    assert_eq!(code, 4000);
    assert_eq!(reason, "slow consumer: more than 500 ms behind");
    assert!(frames > 0);
    let (_, gaps) = healthy.join().unwrap();
    assert_eq!(gaps, 0, "the healthy client was not delayed");
}

#[test]
fn never_reading_tcp_client_is_disconnected_after_whole_frames() {
    let server = Server::start(&["--max-lag", "500ms", "--send-buffer", "65536"]);
    let mut stalled = small_buffer_stream(server.data, 8192);
    server.wait_for_log("disconnecting slow consumer", Duration::from_secs(15));
    let mut bytes = Vec::new();
    stalled.read_to_end(&mut bytes).unwrap();
    assert!(bytes.ends_with(b"\n"), "ends after a whole frame");
    for line in bytes.split_inclusive(|b| *b == b'\n') {
        parse(line);
    }
}
