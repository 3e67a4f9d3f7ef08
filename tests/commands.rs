//! Commands over the TCP command port and WebSocket text messages: replies, application in the
//! next frames on both transports, upstream's one-shot style, errors, fragmentation.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Reads TCP frames until `counter`, returns that frame's variables.
fn tcp_frame_at(client: &mut TcpLines, counter: u64) -> serde_json::Value {
    loop {
        let f = client.frame();
        let c = counter_of(&f);
        assert!(c <= counter, "frame {counter} was skipped");
        if c == counter {
            return parse(&f)["variables"].clone();
        }
    }
}

fn ws_frame_at(ws: &mut RawWs, counter: u64) -> serde_json::Value {
    loop {
        let f = ws.frame();
        if f.opcode != 1 {
            continue;
        }
        let v = parse(&f.payload);
        if let Some(c) = v["update_counter"].as_u64() {
            assert!(c <= counter, "frame {counter} was skipped");
            if c == counter {
                return v["variables"].clone();
            }
        }
    }
}

#[test]
fn tcp_command_is_replied_and_shows_in_the_next_frame_on_both_transports() {
    let server = Server::start(&[]);
    let mut tcp = TcpLines::connect(server.data);
    let mut ws = RawWs::connect(server.ws());
    tcp.frame();
    ws.frame();
    let replies = command_oneshot(
        server.command,
        "{\"variable\": \"Controls.Throttle\", \"value\": 0.8, \"id\": 42}\n",
    );
    assert_eq!(replies.len(), 1);
    let r = &replies[0];
    assert_eq!(r["ok"], true, "{r}");
    assert_eq!(r["id"], 42);
    assert_eq!(r["variable"], "Controls.Throttle");
    let frame = r["frame"].as_u64().unwrap();
    for vars in [tcp_frame_at(&mut tcp, frame), ws_frame_at(&mut ws, frame)] {
        // Controls.Throttle is not in frames: it sets every engine's throttle, which is.
        for key in [
            "Controls.Throttle1",
            "Controls.Throttle2",
            "Controls.Throttle3",
            "Controls.Throttle4",
        ] {
            assert_eq!(vars[key], 0.8, "{key} in frame {frame}");
        }
        assert_eq!(
            vars["Autopilot.ThrottleEngaged"], 0.0,
            "manual throttle disengages the autothrottle"
        );
    }
}

#[test]
fn upstream_style_one_shot_without_newline_counts() {
    let server = Server::start(&[]);
    let replies = command_oneshot(
        server.command,
        r#"{"variable":"Communication.COM1Frequency","value":121500000}"#,
    );
    assert_eq!(replies.len(), 1);
    assert_eq!(replies[0]["ok"], true, "{}", replies[0]);
    let mut tcp = TcpLines::connect(server.data);
    assert_eq!(
        parse(&tcp.frame())["variables"]["Communication.COM1Frequency"],
        121_500_000.0
    );
}

#[test]
fn every_command_gets_one_reply_line_with_a_clear_reason() {
    let server = Server::start(&["--command-max-line", "200"]);
    let mut s = TcpStream::connect(server.command).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let long = format!(
        "{{\"variable\":\"Controls.Flaps\",\"value\":0.5,\"pad\":\"{}\"}}",
        "x".repeat(300)
    );
    let input = [
        r#"{"variable":"Aircraft.Altitude","value":1000}"#,
        r#"{"variable":"No.Such.Thing","value":1}"#,
        r#"{"variable":"Controls.Throttle","value":"full"}"#,
        r#"{"variable":"Controls.Throttle","value":2}"#,
        r#"{"variable":"Controls.Throttle","#,
        &long,
        r#"[{"variable":"Controls.Gear","value":1},{"variable":"Controls.Yoke","value":0}]"#,
        "",
        r#"{"variable":"Controls.Flaps","value":0.5,"id":"last"}"#,
    ]
    .join("\n");
    s.write_all(input.as_bytes()).unwrap();
    s.write_all(b"\n").unwrap();
    let mut reader = BufReader::new(s);
    let mut replies = Vec::new();
    for _ in 0..9 {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        replies.push(serde_json::from_str::<serde_json::Value>(&line).unwrap());
    }
    let errors: Vec<String> = replies
        .iter()
        .map(|r| r["error"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(errors[0], "Aircraft.Altitude is read-only");
    assert_eq!(errors[1], "unknown variable \"No.Such.Thing\"");
    assert_eq!(errors[2], "\"value\" must be a number, not a string");
    assert_eq!(errors[3], "value 2 out of range [0, 1]");
    assert!(errors[4].starts_with("malformed JSON"), "{}", errors[4]);
    assert_eq!(errors[5], "line too long (limit 200 bytes)");
    assert_eq!(replies[6]["ok"], true);
    assert_eq!(replies[6]["variable"], "Controls.Gear");
    assert_eq!(errors[7], "Controls.Yoke is read-only");
    assert_eq!(replies[8]["ok"], true);
    assert_eq!(replies[8]["id"], "last");
    for r in &replies[..6] {
        assert_eq!(r["ok"], false);
    }
    // The connection stays usable after errors.
    let mut s = reader.into_inner();
    s.write_all(b"{\"variable\":\"Controls.Gear\",\"value\":0}\n")
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    assert!(line.contains("\"ok\":true"), "{line}");
}

#[test]
fn websocket_commands_reply_only_when_they_carry_an_id() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.ws());
    // No id: applied, no reply (upstream clients parse every message as telemetry).
    ws.send_text(r#"{"variable":"Controls.Flaps","value":0.75}"#);
    ws.send_text(r#"{"variable":"Aircraft.Altitude","value":1}"#);
    ws.send_text(r#"{"variable":"Controls.Gear","value":1,"id":"g"}"#);
    let reply = ws.reply();
    assert_eq!(
        reply["id"], "g",
        "the first reply is the one with an id: {reply}"
    );
    assert_eq!(reply["ok"], true);
    let vars = ws_frame_at(&mut ws, reply["frame"].as_u64().unwrap());
    assert_eq!(vars["Controls.Flaps"], 0.75, "id-less command applied");
    assert_eq!(vars["Controls.Gear"], 1.0);
    ws.send_text(r#"{"variable":"Aircraft.Altitude","value":1,"id":7}"#);
    let err = ws.reply();
    assert_eq!(err["ok"], false);
    assert_eq!(err["id"], 7);
    assert_eq!(err["error"], "Aircraft.Altitude is read-only");
    assert!(server
        .log()
        .iter()
        .any(|l| l.contains("WebSocket command rejected (no id, so no reply)")));
}

#[test]
fn fragmented_websocket_command_is_reassembled() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.ws());
    let cmd = r#"{"variable":"Autopilot.SelectedAltitude","value":1234.5,"id":"frag"}"#.as_bytes();
    ws.send(false, 1, &cmd[..10], true);
    ws.send(true, 9, b"in between", true); // a control frame between fragments is allowed
    ws.send(false, 0, &cmd[10..30], true);
    ws.send(true, 0, &cmd[30..], true);
    let reply = ws.reply();
    assert_eq!(reply["id"], "frag");
    assert_eq!(reply["ok"], true);
    let vars = ws_frame_at(&mut ws, reply["frame"].as_u64().unwrap());
    assert_eq!(vars["Autopilot.SelectedAltitude"], 1234.5);
}

#[test]
fn tungstenite_client_sends_a_command_and_gets_the_reply() {
    let server = Server::start(&[]);
    let (mut ws, _) = tungstenite::connect(format!("ws://{}/", server.ws())).unwrap();
    ws.send(tungstenite::Message::text(r#"[{"variable":"Navigation.NAV1FrequencySwap","value":1,"id":1},{"variable":"Doors.Left","value":0.5,"id":2}]"#)).unwrap();
    let mut ids = Vec::new();
    while ids.len() < 2 {
        if let tungstenite::Message::Text(t) = ws.read().unwrap() {
            let v = parse(t.as_bytes());
            if v.get("schema").is_none() {
                assert_eq!(v["ok"], true, "{v}");
                ids.push(v["id"].as_u64().unwrap());
            }
        }
    }
    assert_eq!(ids, [1, 2], "replies in order");
}

/// Errors say what is wrong in plain words (never the parser's internals), and the metric label
/// names the same reason as the reply.
#[test]
fn errors_are_plain_words_and_match_their_metric_labels() {
    let server = Server::start(&[]);
    let r = command_oneshot(
        server.command,
        "{\"variable\":\"Controls.Throttle\",\"value\":NaN}\n{\"variable\":\"Controls.Throttle\",\"value\":\"x\"}",
    );
    assert_eq!(
        r[0]["error"],
        "malformed JSON: NaN and Infinity are not JSON numbers; send a finite number (at byte 40, 'N')"
    );
    assert_eq!(r[1]["error"], "\"value\" must be a number, not a string");
    server.wait_until(
        "both refusals are counted",
        std::time::Duration::from_secs(10),
        |s| {
            s.metric("commands_rejected_total{reason=\"malformed_json\"}") == 1.0
                && s.metric("commands_rejected_total{reason=\"value_not_a_number\"}") == 1.0
                && s.metric("commands_rejected_total{reason=\"missing_value\"}") == 0.0
        },
    );
}

#[test]
fn a_wrong_case_or_misspelt_name_is_answered_with_the_name_meant() {
    let server = Server::start(&[]);
    let reply = command_oneshot(
        server.command,
        r#"{"variable":"controls.throttle","value":0.5}"#,
    );
    assert_eq!(reply[0]["ok"], false);
    assert_eq!(
        reply[0]["error"],
        r#"unknown variable "controls.throttle"; did you mean "Controls.Throttle"?"#
    );
    let mut v2 = RawWs::upgrade(
        server.ws(),
        &RawWs::request("Sec-WebSocket-Protocol: aerobridge.v2\r\n"),
    )
    .0;
    v2.reply(); // welcome
    v2.send_text(r#"{"op":"sub","id":1,"vars":["Aircraft.Altitdue"]}"#);
    let ack = v2.reply();
    let message = ack["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("(did you mean: Aircraft.Altitdue → Aircraft.Altitude)"),
        "{message}"
    );
}
