//! Plain HTTP on the WebSocket port: the dashboard page, `/metrics` (checked with the reference
//! Prometheus parser against what a test client did) and `/healthz`.

mod common;

use common::*;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (head, body) = out.split_once("\r\n\r\n").unwrap();
    (
        head.split_whitespace().nth(1).unwrap().parse().unwrap(),
        head.to_string(),
        body.to_string(),
    )
}

fn metrics(server: &Server) -> HashMap<String, f64> {
    python(
        "metrics_check.py",
        &[&format!("http://{}/metrics", server.ws())],
    )
    .lines()
    .map(|l| {
        let (k, v) = l.rsplit_once('=').unwrap();
        (k.to_string(), v.parse().unwrap())
    })
    .collect()
}

#[test]
fn dashboard_page_is_served_self_contained() {
    let server = Server::start(&[]);
    let (status, head, body) = get(server.ws(), "/");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/html"));
    // The page speaks v2 through the client library, which the bridge serves itself.
    assert!(body.contains("<title>aerobridge</title>"));
    assert!(body.contains(r#"import { connect } from "/aerobridge-client.js";"#));
    let (status, head, library) = get(server.ws(), "/aerobridge-client.js");
    assert_eq!(status, 200);
    assert!(head.contains("Content-Type: text/javascript"), "{head}");
    assert!(
        library.contains("export async function connect(")
            && library.contains("new this.WebSocket(")
    );
    for text in [&body, &library] {
        assert!(
            !text.contains("http://") && !text.contains("https://"),
            "no external resources"
        );
    }
}

#[test]
fn metrics_match_what_clients_did() {
    let server = Server::start(&[]);
    let mut tcp: Vec<TcpLines> = (0..2).map(|_| TcpLines::connect(server.data)).collect();
    let mut ws = RawWs::connect(server.ws());
    for c in &mut tcp {
        c.frame();
    }
    ws.frame();
    let r = command_oneshot(server.command, "{\"variable\":\"Controls.Gear\",\"value\":1}\n{\"variable\":\"Nope\",\"value\":1}\n{\"variable\":\"Aircraft.Altitude\",\"value\":1}");
    assert_eq!(r.len(), 3);
    let _keep_command_open = TcpStream::connect(server.command).unwrap();
    // At least a dozen ticks have been built and sent.
    let first = counter_of(&tcp[0].frame());
    while counter_of(&tcp[0].frame()) < first.max(12) {}
    server.wait_until(
        "the open command connection and the closed one-shot are counted",
        Duration::from_secs(10),
        |s| {
            s.metric("clients{transport=\"command\"}") == 1.0
                && s.metric("disconnects_total{reason=\"peer_closed\"}") >= 1.0
        },
    );
    let m = metrics(&server);
    assert_eq!(m["aerobridge_clients{transport=tcp}"], 2.0);
    assert_eq!(m["aerobridge_clients{transport=ws}"], 1.0);
    assert_eq!(m["aerobridge_clients{transport=command}"], 1.0);
    assert_eq!(m["aerobridge_commands_accepted_total{}"], 1.0);
    assert_eq!(
        m["aerobridge_commands_rejected_total{reason=unknown_variable}"],
        1.0
    );
    assert_eq!(
        m["aerobridge_commands_rejected_total{reason=read_only}"],
        1.0
    );
    assert!(m["aerobridge_frames_built_total{}"] >= 10.0);
    assert!(m["aerobridge_frames_sent_total{}"] >= 3.0);
    assert!(m["aerobridge_bytes_sent_total{}"] > 10_000.0);
    assert_eq!(
        m["aerobridge_disconnects_total{reason=peer_closed}"], 1.0,
        "the one-shot command connection"
    );
    assert!(
        m["aerobridge_disconnects_total{reason=http_request}"] >= 1.0,
        "scrapes are counted as plain HTTP requests, not as clients leaving"
    );
    assert_eq!(m["aerobridge_source_up{}"], 1.0);
    assert!(m["aerobridge_tick_build_seconds_count{}"] >= 10.0);
    assert!(m["aerobridge_tick_to_last_write_seconds_count{}"] >= 1.0);
    assert!(m["aerobridge_tick_dispatch_delay_seconds_count{}"] >= 1.0);
    assert!(m.contains_key("aerobridge_queue_depth_frames{}"));
    assert_eq!(m["aerobridge_worker_backlog_drops_total{}"], 0.0);
    assert_eq!(m["aerobridge_send_memory_pressure_total{}"], 0.0);
    // Scraping counts as nothing: the clients are still there and still receive every frame.
    let a = counter_of(&tcp[0].frame());
    assert_eq!(counter_of(&tcp[0].frame()), a + 1);
}

#[test]
fn healthz_follows_the_source() {
    let live = Server::start(&[]);
    TcpLines::connect(live.data).frame(); // the first tick has happened
    let (status, _, body) = get(live.ws(), "/healthz");
    assert_eq!(status, 200, "{body}");
    let dead = Server::start(&["--source", "relay:tcp://127.0.0.1:1"]);
    // Unhealthy at once (no frame yet), then for the stale frames of an unreachable relay.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, _, body) = get(dead.ws(), "/healthz");
        assert_eq!(status, 503, "{body}");
        if body.contains("data_valid=0") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "healthz never named data_valid=0: {body}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn request(addr: std::net::SocketAddr, method: &str, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn unknown_paths_get_404_head_works_and_there_is_a_favicon_and_none_of_it_is_logged() {
    let server = Server::start(&[]);
    let (status, _, body) = get(server.ws(), "/no/such/page");
    assert_eq!(status, 404);
    assert!(
        body.contains("/metrics"),
        "names the pages there are: {body}"
    );
    let head = request(server.ws(), "HEAD", "/");
    let (head_part, rest) = head.split_once("\r\n\r\n").unwrap();
    assert!(head_part.starts_with("HTTP/1.1 200"), "{head_part}");
    let length: usize = head_part
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(length > 1000, "HEAD announces the page's length");
    assert!(rest.is_empty(), "HEAD has no body");
    let (status, head, body) = get(server.ws(), "/favicon.ico");
    assert_eq!(status, 200);
    assert!(head.contains("image/svg+xml") && body.starts_with("<svg"));
    let (_, _, page) = get(server.ws(), "/");
    assert!(page.contains(r#"rel="icon""#), "the page links its icon");
    // Plain HTTP is not a failed upgrade: nothing about it in the log; a broken upgrade is.
    assert!(
        !server
            .log()
            .iter()
            .any(|l| l.contains("refused WebSocket upgrade")),
        "{:#?}",
        server.log()
    );
    let broken = request(
        server.ws(),
        "GET",
        "/ HTTP/1.1\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nX-Pad: 1",
    );
    assert!(broken.starts_with("HTTP/1.1 400"), "{broken}");
    server.wait_for_log("refused WebSocket upgrade", Duration::from_secs(5));
}
