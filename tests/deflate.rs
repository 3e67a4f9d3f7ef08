//! permessage-deflate over real sockets: negotiation (RFC 7692), telemetry compressed once per
//! tick and decoded by independent clients that keep their context (Python `websockets`), the
//! fallback to standalone messages after skipped frames, compressed client messages, bounded
//! inflation (a decompression bomb gets 1009), and `--ws-compression off`.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn websockets_decodes_every_message_across_skips_and_commands_go_compressed() {
    // Compressed messages are small (~0.4 KB): a long pause, and a lag limit that allows it.
    let server = Server::start(&[
        "--queue-frames",
        "2",
        "--send-buffer",
        "8192",
        "--max-lag",
        "10s",
    ]);
    let stdout = python("deflate_client.py", &[&format!("ws://{}/", server.ws())]);
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(
        v["extensions"],
        serde_json::json!(["PerMessageDeflate"]),
        "{v}"
    );
    assert_eq!(v["messages"], 150);
    assert_eq!(v["backwards"], 0, "{v}");
    assert!(
        v["skipped"].as_u64().unwrap() > 0,
        "the pauses made it skip: {v}"
    );
    assert_eq!(v["reply"]["ok"], true, "{v}");
    assert_eq!(v["reply"]["id"], "z-1");
    let m = |s: &str| server.metric(s);
    // Mostly the dictionary variant; standalone after every skip (and for the first frame).
    let dict = m("deflate_messages_total{variant=\"dictionary\"}");
    let standalone = m("deflate_messages_total{variant=\"standalone\"}");
    assert!(dict > 100.0, "dictionary {dict}");
    assert!(standalone >= 2.0, "standalone {standalone}");
    let ratio = m("deflate_wire_bytes_total") / m("deflate_raw_bytes_total");
    assert!(ratio < 0.3, "wire/raw {ratio}");
    assert!(m("frames_skipped_total") > 0.0);
}

#[test]
fn standalone_mode_sends_only_standalone_messages() {
    let server = Server::start(&["--ws-compression", "standalone"]);
    python(
        "deflate_client.py",
        &[&format!("ws://{}/", server.ws()), "50"],
    );
    assert!(server.metric("deflate_messages_total{variant=\"standalone\"}") >= 50.0);
    assert_eq!(
        server.metric("deflate_messages_total{variant=\"dictionary\"}"),
        0.0
    );
}

#[test]
fn negotiation_answers_and_declines() {
    let server = Server::start(&[]);
    let ext = |offer: &str| {
        let ws = RawWs::upgrade(
            server.ws(),
            &RawWs::request(&format!("Sec-WebSocket-Extensions: {offer}\r\n")),
        );
        assert_eq!(ws.1, 101);
        ws.0.head
            .lines()
            .find_map(|l| l.strip_prefix("Sec-WebSocket-Extensions: "))
            .map(str::to_string)
    };
    assert_eq!(
        ext("permessage-deflate; client_max_window_bits").as_deref(),
        Some("permessage-deflate; client_no_context_takeover")
    );
    assert_eq!(
        ext("permessage-deflate; server_no_context_takeover").as_deref(),
        Some("permessage-deflate; client_no_context_takeover; server_no_context_takeover")
    );
    // Telemetry is compressed once for all with a 15-bit window: smaller windows are declined.
    assert_eq!(ext("permessage-deflate; server_max_window_bits=10"), None);
    assert_eq!(ext("permessage-deflate; bogus"), None);
    // /connections shows what a live client agreed.
    let (_held, _) = RawWs::upgrade(
        server.ws(),
        &RawWs::request("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
    );
    server.wait_until("listed", Duration::from_secs(5), |s| {
        let mut c = std::net::TcpStream::connect(s.ws()).unwrap();
        c.write_all(b"GET /connections HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        std::io::Read::read_to_string(&mut c, &mut page).unwrap();
        page.contains("\"extensions\":\"permessage-deflate; client_no_context_takeover\"")
    });
    let off = Server::start(&["--ws-compression", "off"]);
    let (ws, status) = RawWs::upgrade(
        off.ws(),
        &RawWs::request("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
    );
    assert_eq!(status, 101);
    assert!(!ws.head.contains("Sec-WebSocket-Extensions"), "{}", ws.head);
}

#[test]
fn a_decompression_bomb_gets_1009_and_the_server_stays_small() {
    let server = Server::start(&["--ws-max-message", "65536"]);
    let (mut ws, status) = RawWs::upgrade(
        server.ws(),
        &RawWs::request("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
    );
    assert_eq!(status, 101);
    // 16 MiB of zeros in about 16 KiB: far past the 64 KiB limit once inflated.
    let mut z = flate2::Compress::new(flate2::Compression::best(), false);
    let mut bomb = Vec::with_capacity(64 << 10);
    z.compress_vec(&vec![0u8; 16 << 20], &mut bomb, flate2::FlushCompress::Sync)
        .unwrap();
    assert!(bomb.len() < 32 << 10, "{}", bomb.len());
    let mut frame = aerobridge::ws::reader::client_frame(true, 1, &bomb, [0x12, 0x34, 0x56, 0x78]);
    frame[0] |= 0x40;
    ws.stream.write_all(&frame).unwrap();
    // Telemetry (compressed) until the Close.
    let code = loop {
        let f = ws.frame();
        if f.opcode == 8 {
            break u16::from_be_bytes([f.payload[0], f.payload[1]]);
        }
    };
    assert_eq!(code, 1009);
    assert!(server.rss() < 200 << 20, "RSS {}", server.rss());
    server.wait_until("counted", Duration::from_secs(5), |s| {
        s.metric("disconnects_total{reason=\"protocol_error\"}") >= 1.0
    });
}

#[test]
fn nothing_is_compressed_until_a_client_agrees_to_it() {
    let server = Server::start(&[]);
    let mut tcp = TcpLines::connect(server.data);
    for _ in 0..20 {
        tcp.frame();
    }
    assert_eq!(
        server.metric("deflate_seconds_count"),
        0.0,
        "no one to compress for"
    );
    let (_ws, status) = RawWs::upgrade(
        server.ws(),
        &RawWs::request("Sec-WebSocket-Extensions: permessage-deflate\r\n"),
    );
    assert_eq!(status, 101);
    server.wait_until("compressing", Duration::from_secs(5), |s| {
        s.metric("deflate_seconds_count") > 0.0
    });
}
