//! Hostile input and faults over loopback. In every test, healthy clients connected at the same
//! time keep receiving every frame (0 gaps) and the server keeps running with bounded memory.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

#[test]
fn slowloris_handshakes_are_dropped_at_the_timeout() {
    let server = Server::start(&["--handshake-timeout", "500ms"]);
    let watchers = Watchers::start(&server, 2, 2);
    let request = RawWs::request("");
    let mut conns: Vec<TcpStream> = (0..50)
        .map(|_| TcpStream::connect(server.ws()).unwrap())
        .collect();
    let start = Instant::now();
    // Dribble a byte at a time, never finishing the request.
    'dribble: for byte in request.as_bytes()[..request.len() - 4].iter() {
        for c in &mut conns {
            if c.write_all(&[*byte]).is_err() {
                break 'dribble; // dropped by the server: that is the point
            }
        }
        std::thread::sleep(Duration::from_millis(20));
        if start.elapsed() > Duration::from_secs(2) {
            break;
        }
    }
    for mut c in conns {
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "closed without an answer");
    }
    assert!(start.elapsed() < Duration::from_secs(6));
    watchers.finish_without_gaps();
}

#[test]
fn header_floods_and_oversized_request_lines_get_431() {
    let server = Server::start(&[]);
    let watchers = Watchers::start(&server, 1, 1);
    let many_headers: String = (0..100).map(|i| format!("X-H{i}: v\r\n")).collect();
    for request in [
        RawWs::request(&many_headers),
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(20_000)),
        RawWs::request(&format!("X-Big: {}\r\n", "b".repeat(9_000))),
    ] {
        let mut s = TcpStream::connect(server.ws()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = s.write_all(request.as_bytes());
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 431 ") || text.starts_with("HTTP/1.1 400 "),
            "{text}"
        );
    }
    watchers.finish_without_gaps();
}

#[test]
fn connection_flood_to_ten_times_max_clients_is_refused_and_nothing_leaks() {
    let server = Server::start(&["--max-clients", "20"]);
    let watchers = Watchers::start(&server, 2, 2);
    server.wait_for_clients(2, 2);
    let fds_before = server.fd_count();
    let mut flood = Vec::new();
    for i in 0..200 {
        let addr = [server.data, server.ws(), server.command][i % 3];
        if let Ok(s) = TcpStream::connect(addr) {
            flood.push(s);
        }
    }
    // Everyone beyond the limit is told so (or closed) promptly.
    let mut refused = 0;
    for s in &mut flood {
        s.set_read_timeout(Some(Duration::from_millis(1500)))
            .unwrap();
        let _ = s.write_all(&RawWs::request("").into_bytes());
        let mut buf = [0u8; 256];
        match s.read(&mut buf) {
            Ok(0) => refused += 1,
            Ok(n) if String::from_utf8_lossy(&buf[..n]).contains("server full") => refused += 1,
            _ => {}
        }
    }
    assert!(
        refused >= 180,
        "refused {refused} of 200 beyond --max-clients 20"
    );
    drop(flood);
    // File descriptors return to where they were.
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.fd_count() > fds_before + 2 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.fd_count() <= fds_before + 2,
        "fds {} → {}",
        fds_before,
        server.fd_count()
    );
    watchers.finish_without_gaps();
}

#[test]
fn huge_and_lying_frame_lengths_are_refused_without_buffering() {
    let server = Server::start(&[]);
    let watchers = Watchers::start(&server, 1, 1);
    let rss_before = server.rss();
    // 16 MiB declared and actually sent: refused from the header (1009), nothing buffered.
    let mut ws = RawWs::connect(server.ws());
    let mut frame = vec![0x81, 0xff];
    frame.extend_from_slice(&(16 * MIB).to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    ws.stream.write_all(&frame).unwrap();
    let _ = ws.stream.write_all(&vec![b'a'; 4 * MIB as usize]);
    assert_eq!(ws.until_close().0, 1009);
    // 64-bit length with the top bit set.
    let mut ws = RawWs::connect(server.ws());
    let mut frame = vec![0x81, 0xff];
    frame.extend_from_slice(&u64::MAX.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4]);
    ws.stream.write_all(&frame).unwrap();
    assert_eq!(ws.until_close().0, 1009);
    // A length larger than the data that follows: the server waits, others are unaffected.
    let mut liar = RawWs::connect(server.ws());
    let mut frame = vec![0x81, 0xfe];
    frame.extend_from_slice(&1000u16.to_be_bytes());
    frame.extend_from_slice(&[1, 2, 3, 4, b'x', b'y']);
    liar.stream.write_all(&frame).unwrap();
    // Twenty-five ticks pass (a healthy client sees them) while the liar's frame stays incomplete.
    let mut probe = TcpLines::connect(server.data);
    let first = counter_of(&probe.frame());
    while counter_of(&probe.frame()) < first + 25 {}
    drop(liar);
    assert!(
        server.rss() < rss_before + 32 * MIB,
        "RSS {} → {}",
        rss_before,
        server.rss()
    );
    watchers.finish_without_gaps();
}

#[test]
fn protocol_violation_barrage_leaves_healthy_clients_untouched() {
    let server = Server::start(&[]);
    let watchers = Watchers::start(&server, 2, 2);
    type Frames<'a> = &'a [(bool, u8, &'a [u8], bool)];
    let barrage: [(Frames, u16); 6] = [
        (&[(true, 1, &[0xc0, 0x80], true)], 1007), // invalid UTF-8
        (&[(true, 1, b"{}", false)], 1002),        // unmasked
        (&[(true, 0x5, b"", true)], 1002),         // reserved opcode
        (&[(false, 0x9, b"x", true)], 1002),       // fragmented control frame
        (&[(true, 0x0, b"x", true)], 1002),        // continuation without start
        (&[(true, 0x8, &[0x03, 0xed], true)], 1002), // close code 1005 on the wire
    ];
    for _ in 0..5 {
        for (frames, code) in &barrage {
            let mut ws = RawWs::connect(server.ws());
            for (fin, op, payload, mask) in frames.iter() {
                ws.send(*fin, *op, payload, *mask);
            }
            assert_eq!(ws.until_close().0, *code);
        }
    }
    watchers.finish_without_gaps();
}

#[test]
fn resets_mid_frame_and_silent_peers_are_freed() {
    let server = Server::start(&["--ws-ping-interval", "300ms", "--ws-ping-timeout", "300ms"]);
    let watchers = Watchers::start(&server, 2, 0);
    server.wait_for_clients(2, 0);
    let fds_before = server.fd_count();
    // Reset in the middle of a client frame and in the middle of the handshake.
    for i in 0..20 {
        let s = if i % 2 == 0 {
            let ws = RawWs::connect(server.ws());
            let mut s = ws.stream;
            s.write_all(&[0x81, 0x85, 1, 2, 3, 4, b'a']).unwrap();
            s
        } else {
            let mut s = TcpStream::connect(server.ws()).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").unwrap();
            s
        };
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
        drop(s); // RST
    }
    // A peer that goes silent (never reads, never answers pings) is pinged, then dropped.
    let silent = RawWs::connect(server.ws());
    server.wait_for_log(
        "closing WebSocket: no answer to ping",
        Duration::from_secs(5),
    );
    drop(silent);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.fd_count() > fds_before && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        server.fd_count() <= fds_before,
        "fds {} → {}",
        fds_before,
        server.fd_count()
    );
    watchers.finish_without_gaps();
}

#[test]
fn a_client_reading_one_byte_per_second_is_disconnected_as_a_slow_consumer() {
    let server = Server::start(&["--max-lag", "1s", "--send-buffer", "65536"]);
    let watchers = Watchers::start(&server, 2, 2);
    let mut crawler = small_buffer_stream(server.data, 4096);
    crawler
        .set_read_timeout(Some(Duration::from_secs(1)))
        .unwrap();
    let start = Instant::now();
    let mut byte = [0u8; 1];
    loop {
        match crawler.read(&mut byte) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => {}
        }
        if server
            .log()
            .iter()
            .any(|l| l.contains("disconnecting slow consumer"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never disconnected"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    watchers.finish_without_gaps();
}
