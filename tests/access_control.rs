//! Who may command the simulator: `--command-token`, `--read-only`, the WebSocket Origin policy,
//! the per-connection command rate limit, and the warning when binding beyond loopback.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

const THROTTLE: &str = r#"{"variable":"Controls.Gear","value":1,"id":"g"}"#;

fn gear_in_next_frame(server: &Server) -> f64 {
    let mut tcp = TcpLines::connect(server.data);
    tcp.frame();
    parse(&tcp.frame())["variables"]["Controls.Gear"]
        .as_f64()
        .unwrap()
}

#[test]
fn command_token_over_tcp() {
    let server = Server::start(&["--command-token", "s3cret"]);
    let r = command_oneshot(server.command, THROTTLE);
    assert_eq!(r[0]["ok"], false);
    assert!(
        r[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("unauthorized: this server requires a token"),
        "{}",
        r[0]
    );
    let r = command_oneshot(
        server.command,
        &format!("{{\"auth\":\"wrong\"}}\n{THROTTLE}"),
    );
    assert_eq!(r[0]["error"], "unauthorized: wrong token");
    assert_eq!(r[1]["ok"], false, "still not applied after a wrong token");
    assert_eq!(gear_in_next_frame(&server), 0.0);
    let r = command_oneshot(
        server.command,
        &format!("{{\"auth\":\"s3cret\",\"id\":0}}\n{THROTTLE}"),
    );
    assert_eq!(
        (r[0]["ok"].clone(), r[0]["auth"].clone()),
        (true.into(), true.into())
    );
    assert_eq!(r[1]["ok"], true, "{}", r[1]);
    assert_eq!(gear_in_next_frame(&server), 1.0);
    assert!(
        server.log().iter().all(|l| !l.contains("s3cret")),
        "the token is never logged"
    );
}

#[test]
fn command_token_over_websocket_header_or_query() {
    let server = Server::start(&["--command-token", "s3cret"]);
    let mut anon = RawWs::connect(server.ws());
    assert_eq!(
        anon.frame().opcode,
        1,
        "telemetry stays readable without the token"
    );
    anon.send_text(THROTTLE);
    let reply = anon.reply();
    assert_eq!(reply["ok"], false);
    assert!(reply["error"].as_str().unwrap().starts_with("unauthorized"));

    let (mut bearer, status) = RawWs::upgrade(
        server.ws(),
        &RawWs::request("Authorization: Bearer s3cret\r\n"),
    );
    assert_eq!(status, 101);
    bearer.send_text(THROTTLE);
    assert_eq!(bearer.reply()["ok"], true);

    let (mut query, status) = RawWs::upgrade(
        server.ws(),
        &RawWs::request("").replace("GET / ", "GET /?token=s3cret "),
    );
    assert_eq!(status, 101);
    query.send_text(r#"{"variable":"Controls.Gear","value":0,"id":1}"#);
    assert_eq!(query.reply()["ok"], true);
}

#[test]
fn read_only_refuses_every_command() {
    let server = Server::start(&["--read-only"]);
    let r = command_oneshot(server.command, THROTTLE);
    assert_eq!(
        r[0]["error"],
        "commands are disabled: the server runs with --read-only"
    );
    let mut ws = RawWs::connect(server.ws());
    ws.send_text(THROTTLE);
    assert_eq!(
        ws.reply()["error"],
        "commands are disabled: the server runs with --read-only"
    );
    assert_eq!(gear_in_next_frame(&server), 0.0);
}

#[test]
fn browser_origins_other_than_allowed_get_403() {
    let server = Server::start(&["--allowed-origin", "https://cockpit.example"]);
    let with_origin =
        |o: &str| RawWs::upgrade(server.ws(), &RawWs::request(&format!("Origin: {o}\r\n")));
    let (mut evil, status) = with_origin("https://evil.example");
    assert_eq!(status, 403);
    assert!(evil
        .read_to_end()
        .contains("origin https://evil.example is not allowed"));
    assert_eq!(
        with_origin("https://cockpit.example").1,
        101,
        "listed origin"
    );
    assert_eq!(with_origin("http://localhost:3000").1, 101, "loopback page");
    assert_eq!(
        with_origin(&format!("http://{}", server.ws())).1,
        101,
        "same origin"
    );
    assert_eq!(
        RawWs::upgrade(server.ws(), &RawWs::request("")).1,
        101,
        "no Origin: not a browser"
    );
    let plain = Server::start(&[]);
    assert_eq!(
        RawWs::upgrade(
            plain.ws(),
            &RawWs::request("Origin: https://evil.example\r\n")
        )
        .1,
        403,
        "refused by default too"
    );
}

#[test]
fn command_flood_is_rate_limited_then_disconnected() {
    let server = Server::start(&["--command-rate-limit", "10"]);
    let watchers = Watchers::start(&server, 2, 2);
    let s = TcpStream::connect(server.command).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let line = format!("{THROTTLE}\n").repeat(50);
            for _ in 0..40 {
                if w.write_all(line.as_bytes()).is_err() {
                    break;
                }
            }
        })
    };
    let mut ok = 0;
    let mut limited = 0;
    for line in BufReader::new(s).lines() {
        let Ok(line) = line else { break };
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["ok"] == true {
            ok += 1;
        } else {
            assert_eq!(
                v["error"],
                "rate limit: more than 10 commands per second on this connection"
            );
            limited += 1;
        }
    }
    writer.join().unwrap();
    assert!(
        (20..=30).contains(&ok),
        "a burst of twice the rate passes: {ok}"
    );
    assert!(limited >= 200, "then refusals: {limited}");
    server.wait_for_log("disconnecting command flood", Duration::from_secs(2));
    // Other connections are unaffected.
    assert_eq!(command_oneshot(server.command, THROTTLE)[0]["ok"], true);
    watchers.finish_without_gaps();
}

#[test]
fn binding_beyond_loopback_warns_what_is_exposed() {
    let server = Server::start(&["--bind", "0.0.0.0"]);
    let line = server.wait_for_log("listening beyond loopback", Duration::from_secs(2));
    assert!(line.contains("read telemetry and send commands"), "{line}");
}

#[test]
fn websocket_command_flood_gets_close_1008() {
    let server = Server::start(&["--command-rate-limit", "10"]);
    let watchers = Watchers::start(&server, 1, 1);
    let mut ws = RawWs::connect(server.ws());
    for _ in 0..300 {
        ws.send_text(r#"{"variable":"Controls.Flaps","value":0.5}"#);
    }
    let (code, reason, _) = ws.until_close();
    assert_eq!((code, reason.as_str()), (1008, "command flood"));
    watchers.finish_without_gaps();
}
