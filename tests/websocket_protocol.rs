//! WebSocket handshake and framing rules over real sockets: refusals with HTTP status and reason,
//! close codes for protocol violations, ping/pong, idle peers, handshake timeouts.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

fn refused(server: &Server, request: &str) -> (u16, String) {
    let (mut ws, status) = RawWs::upgrade(server.ws(), request);
    (status, ws.read_to_end())
}

#[test]
fn bad_handshakes_get_400_or_426_with_a_reason() {
    let server = Server::start(&[]);
    let good = RawWs::request("");
    let (status, body) = refused(
        &server,
        &good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
    );
    assert_eq!(status, 426);
    assert!(
        body.contains("unsupported WebSocket version; use 13"),
        "{body}"
    );
    let (ws, _) = RawWs::upgrade(
        server.ws(),
        &good.replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 7"),
    );
    assert!(
        ws.head.contains("Sec-WebSocket-Version: 13\r\n"),
        "{}",
        ws.head
    );

    for (request, reason) in [
        (good.replace("GET", "POST"), "requires GET"),
        (
            good.replace("Upgrade: websocket\r\n", ""),
            "send 'Upgrade: websocket'",
        ),
        (
            good.replace("Connection: Upgrade", "Connection: keep-alive"),
            "'Connection' header must contain",
        ),
        (
            good.replace("dGhlIHNhbXBsZSBub25jZQ==", "dG9vIHNob3J0"),
            "Sec-WebSocket-Key",
        ),
        (good.replace("HTTP/1.1", "HTTP/1.0"), "requires HTTP/1.1"),
        (
            "\u{1}\u{2}garbage\r\n\r\n".to_string(),
            "malformed HTTP request",
        ),
    ] {
        let (status, body) = refused(&server, &request);
        assert_eq!(status, 400, "{request:?}");
        assert!(body.contains(reason), "{request:?} → {body}");
    }
    // A plain GET of an unknown path is not a broken upgrade: 404, naming the pages there are.
    let (status, body) = refused(&server, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(status, 404);
    assert!(body.contains("WebSocket port"), "{body}");
    // Firefox's `Connection: keep-alive, Upgrade` and lowercase tokens are fine.
    let firefox = good
        .replace("Connection: Upgrade", "connection: keep-alive, Upgrade")
        .replace("Upgrade: websocket", "Upgrade: WebSocket");
    let (mut ws, status) = RawWs::upgrade(server.ws(), &firefox);
    assert_eq!(status, 101);
    assert_eq!(ws.frame().opcode, 1);
    // The server is still serving.
    RawWs::connect(server.ws()).frame();
}

#[test]
fn oversized_request_headers_get_431() {
    let server = Server::start(&[]);
    let big = RawWs::request(&format!("X-Filler: {}\r\n", "a".repeat(10_000)));
    let mut s = TcpStream::connect(server.ws()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(big.as_bytes());
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    assert!(
        String::from_utf8_lossy(&out).starts_with("HTTP/1.1 431 "),
        "{}",
        String::from_utf8_lossy(&out)
    );
}

#[test]
fn unmasked_frame_gets_close_1002() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.ws());
    ws.send(true, 1, b"{}", false);
    let (code, reason, _) = ws.until_close();
    assert_eq!(code, 1002);
    assert_eq!(reason, "client frames must be masked");
}

#[test]
fn invalid_utf8_gets_close_1007() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.ws());
    ws.send(true, 1, &[b'{', 0xff, 0xfe, b'}'], true);
    assert_eq!(ws.until_close().0, 1007);
}

#[test]
fn oversized_message_gets_close_1009_even_when_fragmented() {
    let server = Server::start(&["--ws-max-message", "1024"]);
    let mut ws = RawWs::connect(server.ws());
    ws.send(true, 1, &vec![b' '; 2000], true);
    let (code, reason, _) = ws.until_close();
    assert_eq!(code, 1009);
    assert!(reason.contains("limit 1024"), "{reason}");
    let mut ws = RawWs::connect(server.ws());
    ws.send(false, 1, &[b' '; 600], true);
    ws.send(true, 0, &[b' '; 600], true);
    assert_eq!(ws.until_close().0, 1009);
}

#[test]
fn other_rule_violations_get_close_1002_and_binary_1003() {
    let server = Server::start(&[]);
    type Frames<'a> = &'a [(bool, u8, &'a [u8])];
    let cases: [(Frames, u16); 5] = [
        (&[(true, 0x3, b"")], 1002),                      // reserved opcode
        (&[(false, 0x9, b"")], 1002),                     // fragmented control frame
        (&[(true, 0x0, b"x")], 1002),                     // continuation without start
        (&[(false, 0x1, b"a"), (true, 0x1, b"b")], 1002), // new message inside a fragmented one
        (&[(true, 0x2, b"\x00\x01")], 1003),              // binary
    ];
    for (frames, want) in cases {
        let mut ws = RawWs::connect(server.ws());
        for (fin, op, payload) in frames {
            ws.send(*fin, *op, payload, true);
        }
        assert_eq!(ws.until_close().0, want, "{frames:?}");
    }
}

#[test]
fn ping_gets_pong_and_close_is_answered() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.ws());
    ws.send(true, 9, b"are you there", true);
    loop {
        let f = ws.frame();
        if f.opcode == 0xA {
            assert_eq!(f.payload, b"are you there");
            break;
        }
    }
    ws.send(true, 8, &[0x03, 0xe8, b'b', b'y', b'e'], true);
    let (code, _, _) = ws.until_close();
    assert_eq!(code, 1000, "close handshake echoes the code");
    // Then the server closes the TCP connection.
    let mut rest = Vec::new();
    ws.stream.read_to_end(&mut rest).unwrap();
}

#[test]
fn server_pings_idle_peers_and_drops_silent_ones() {
    let server = Server::start(&["--ws-ping-interval", "300ms", "--ws-ping-timeout", "300ms"]);
    let mut ws = RawWs::connect(server.ws());
    let start = Instant::now();
    let mut pinged = false;
    let code = loop {
        let f = ws.frame();
        match f.opcode {
            0x9 => pinged = true,
            0x8 => break u16::from_be_bytes([f.payload[0], f.payload[1]]),
            _ => {}
        }
    };
    assert!(pinged, "a ping came first");
    assert_eq!(code, 1008, "silent peer closed with policy violation");
    assert!(start.elapsed() < Duration::from_secs(5));
    // A peer that answers stays connected.
    let mut ws = RawWs::connect(server.ws());
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        let f = ws.frame();
        assert_ne!(f.opcode, 8, "a responsive peer must not be closed");
        if f.opcode == 9 {
            ws.send(true, 0xA, &f.payload, true);
        }
    }
}

#[test]
fn unfinished_handshake_is_dropped_after_the_timeout() {
    let server = Server::start(&["--handshake-timeout", "300ms"]);
    let mut s = TcpStream::connect(server.ws()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without a response");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    server.wait_for_log("WebSocket handshake timed out", Duration::from_secs(2));
}
