//! Session protocol v2 (`docs/protocol-v2.md`) over real sockets: the handshake on both ports,
//! subscriptions and the profiles they share, keyframes and deltas that rebuild the v1 frame
//! value for value, skipped keyframes, resume, heartbeats and the idle rule, acknowledged
//! commands, errors, limits, `/connections` and the metrics — and upstream's v1 clients
//! unaffected beside them.

mod common;

use common::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A v2 client over WebSocket (subprotocol `aerobridge.v2`) or TCP (in-band hello).
enum Conn {
    Ws(RawWs),
    Tcp {
        reader: BufReader<TcpStream>,
        length: bool,
    },
}

struct V2 {
    conn: Conn,
    welcome: Value,
}

impl V2 {
    fn ws(addr: SocketAddr) -> V2 {
        let (ws, status) = RawWs::upgrade(
            addr,
            &RawWs::request("Sec-WebSocket-Protocol: chat, aerobridge.v2\r\n"),
        );
        assert_eq!(status, 101);
        assert!(
            ws.head
                .contains("\r\nSec-WebSocket-Protocol: aerobridge.v2\r\n"),
            "{}",
            ws.head
        );
        let mut c = V2 {
            conn: Conn::Ws(ws),
            welcome: Value::Null,
        };
        c.welcome = c.recv();
        assert_eq!(c.welcome["op"], "welcome", "{}", c.welcome);
        c
    }

    fn tcp(addr: SocketAddr, hello: Value) -> V2 {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let length = hello["framing"] == "length";
        let mut c = V2 {
            conn: Conn::Tcp {
                reader: BufReader::new(s),
                length: false,
            },
            welcome: Value::Null,
        };
        c.send(&hello);
        // v1 frames may come first: the switch happens at a frame boundary. A v1 line starts
        // with '{'; a length-prefixed message with the length's high byte, 0.
        loop {
            let Conn::Tcp { reader, length: l } = &mut c.conn else {
                unreachable!()
            };
            let first = reader.fill_buf().unwrap()[0];
            if first != b'{' {
                assert!(length, "a line that is not JSON");
                *l = true;
            }
            let v = c.recv();
            if v.get("schema").is_none() {
                c.welcome = v;
                break;
            }
        }
        if let Conn::Tcp { length: l, .. } = &mut c.conn {
            *l = length;
        }
        c
    }

    fn read_line(&mut self) -> Vec<u8> {
        let Conn::Tcp { reader, .. } = &mut self.conn else {
            unreachable!()
        };
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).unwrap();
        assert!(line.ends_with(b"\n"), "{}", String::from_utf8_lossy(&line));
        line
    }

    fn send(&mut self, v: &Value) {
        self.send_raw(&v.to_string());
    }

    fn send_raw(&mut self, text: &str) {
        match &mut self.conn {
            Conn::Ws(ws) => ws.send_text(text),
            Conn::Tcp { reader, .. } => {
                let mut line = text.as_bytes().to_vec();
                line.push(b'\n');
                reader.get_mut().write_all(&line).unwrap();
            }
        }
    }

    /// The next message (WebSocket text, line, or length-prefixed).
    fn recv(&mut self) -> Value {
        match &mut self.conn {
            Conn::Ws(ws) => loop {
                let f = ws.frame();
                match f.opcode {
                    1 => return parse(&f.payload),
                    8 => panic!("closed: {:?}", String::from_utf8_lossy(&f.payload)),
                    _ => {}
                }
            },
            Conn::Tcp {
                reader,
                length: true,
            } => {
                let mut len = [0u8; 4];
                reader.read_exact(&mut len).unwrap();
                let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
                reader.read_exact(&mut body).unwrap();
                parse(&body)
            }
            Conn::Tcp { .. } => {
                let line = self.read_line();
                parse(&line)
            }
        }
    }

    /// The next message that is not data (`key`/`delta`) or a heartbeat.
    fn reply(&mut self) -> Value {
        loop {
            let v = self.recv();
            if !matches!(v["op"].as_str(), Some("key" | "delta" | "hb")) {
                return v;
            }
        }
    }

    fn request(&mut self, v: Value) -> Value {
        self.send(&v);
        self.reply()
    }
}

/// Rebuilds a profile's state from keyframes and deltas, checking the chain as it goes.
#[derive(Default)]
struct Rebuilt {
    keys: HashMap<u64, Vec<Value>>,
    last_seq: u64,
    keyframes: usize,
    deltas: usize,
}

impl Rebuilt {
    /// Applies one data message; returns (seq, full state).
    fn apply(&mut self, msg: &Value) -> (u64, Vec<Value>) {
        let seq = msg["seq"].as_u64().unwrap();
        assert!(seq > self.last_seq, "seq goes forward: {msg}");
        self.last_seq = seq;
        match msg["op"].as_str().unwrap() {
            "key" => {
                self.keyframes += 1;
                let v = msg["v"].as_array().unwrap().clone();
                self.keys.insert(seq, v.clone());
                (seq, v)
            }
            "delta" => {
                self.deltas += 1;
                let base = msg["base"].as_u64().unwrap();
                let mut v = self
                    .keys
                    .get(&base)
                    .unwrap_or_else(|| panic!("delta {seq} on base {base}, which never came"))
                    .clone();
                for c in msg["c"].as_array().unwrap() {
                    v[c[0].as_u64().unwrap() as usize] = c[1].clone();
                }
                (seq, v)
            }
            other => panic!("not data: {other}"),
        }
    }
}

/// v1 frames by update_counter, read by a plain TCP client on its own thread.
fn v1_reference(server: &Server, frames: usize) -> std::thread::JoinHandle<HashMap<u64, Value>> {
    let mut c = TcpLines::connect(server.data);
    std::thread::spawn(move || {
        (0..frames)
            .map(|_| {
                let v = parse(&c.frame());
                (v["update_counter"].as_u64().unwrap(), v)
            })
            .collect()
    })
}

fn data(c: &mut V2) -> Value {
    loop {
        let v = c.recv();
        if matches!(v["op"].as_str(), Some("key" | "delta")) {
            return v;
        }
    }
}

#[test]
fn websocket_v2_deltas_rebuild_the_v1_frame_value_for_value() {
    let server = Server::start(&[]);
    let mut c = V2::ws(server.ws());
    let w = c.welcome.clone();
    assert_eq!(w["protocol"], 2);
    assert_eq!(w["rate_hz"], 50.0);
    assert_eq!(w["heartbeat_ms"], 1000);
    assert!(w["session"].as_str().unwrap().len() >= 16, "{w}");
    assert!(w["server"].as_str().unwrap().starts_with("aerobridge "));
    assert_eq!(w["limits"]["subscriptions"], 16);
    // No telemetry before a subscription: the next message answers the catalog request.
    let catalog = c.request(json!({"op":"catalog","id":1}));
    assert_eq!(catalog["id"], 1);
    assert_eq!(catalog["hash"], w["catalog"]);
    let vars = catalog["variables"].as_array().unwrap();
    assert_eq!(vars.len(), 361);
    assert_eq!(vars[0]["name"], "Aircraft.UniversalTime");
    assert_eq!(
        vars.iter()
            .find(|v| v["name"] == "Aircraft.Altitude")
            .unwrap(),
        &json!({"name":"Aircraft.Altitude","type":"number","unit":"m","writable":false})
    );

    let reference = v1_reference(&server, 150);
    let ack = c.request(json!({"op":"sub","id":7,"hz":10,"mode":"delta"}));
    assert_eq!(
        (
            ack["ok"].as_bool(),
            ack["sub"].as_u64(),
            ack["every"].as_u64()
        ),
        (Some(true), Some(7), Some(5)),
        "{ack}"
    );
    assert_eq!(ack["hz"], 10.0);
    assert_eq!(ack["mode"], "delta");
    let names: Vec<String> = ack["vars"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, reference_keys(), "vars in wire order");
    let profile = ack["profile"].as_u64().unwrap();

    let mut rebuilt = Rebuilt::default();
    let mut states = Vec::new();
    while states.len() < 20 {
        let msg = data(&mut c);
        assert_eq!(msg["p"], profile);
        let (seq, state) = rebuilt.apply(&msg);
        assert_eq!(seq % 5, 0, "only frames whose update_counter % every == 0");
        states.push((seq, state, msg["t"].as_u64().unwrap()));
    }
    assert!(rebuilt.deltas >= 10, "deltas between keyframes");
    let v1 = reference.join().unwrap();
    let mut compared = 0;
    for (seq, state, t) in &states {
        let Some(frame) = v1.get(seq) else { continue };
        assert_eq!(frame["timestamp"].as_u64(), Some(*t));
        for (name, value) in names.iter().zip(state) {
            assert_eq!(
                &frame["variables"][name], value,
                "{name} at update_counter {seq}"
            );
        }
        compared += 1;
    }
    assert!(
        compared >= 15,
        "only {compared} states had a v1 frame to compare"
    );
}

#[test]
fn tcp_hello_switches_at_a_frame_boundary_and_subsets_share_one_profile() {
    let server = Server::start(&[]);
    let mut a = V2::tcp(
        server.data,
        json!({"op":"hello","protocol":2,"client":"efb/1.3"}),
    );
    assert_eq!(a.welcome["op"], "welcome");
    let mut b = V2::ws(server.ws());
    let sub =
        json!({"op":"sub","id":1,"vars":["Aircraft.Altitude","Controls.*"],"hz":25,"mode":"delta"});
    let ack_a = a.request(sub.clone());
    let ack_b = b.request(sub);
    assert_eq!(
        ack_a["profile"], ack_b["profile"],
        "same subscription, same profile"
    );
    let vars = ack_a["vars"].as_array().unwrap();
    assert_eq!(vars[0], "Aircraft.Altitude");
    assert!(vars[1..]
        .iter()
        .all(|v| v.as_str().unwrap().starts_with("Controls.")));
    assert_eq!(ack_a["every"], 2);
    // The same message (same seq) is the same JSON on both transports.
    let mut seen_a: HashMap<u64, Value> = HashMap::new();
    for _ in 0..10 {
        let m = data(&mut a);
        seen_a.insert(m["seq"].as_u64().unwrap(), m);
    }
    let mut matched = 0;
    for _ in 0..10 {
        let m = data(&mut b);
        if let Some(other) = seen_a.get(&m["seq"].as_u64().unwrap()) {
            assert_eq!(&m, other);
            matched += 1;
        }
    }
    assert!(matched >= 5, "{matched}");
    let connections = http_get(server.ws(), "/connections");
    let v: Value = serde_json::from_str(&connections).unwrap();
    let list = v["connections"].as_array().unwrap();
    let tcp = list
        .iter()
        .find(|c| c["transport"] == "tcp" && c["protocol"] == 2)
        .unwrap_or_else(|| panic!("{connections}"));
    assert_eq!(tcp["client"], "efb/1.3");
    // Only a prefix of the session id: the whole id would let anyone resume the session.
    let shown = tcp["session"].as_str().unwrap();
    let full = a.welcome["session"].as_str().unwrap();
    assert_eq!(shown, format!("{}…", &full[..8]));
    assert_eq!(tcp["framing"], "lines");
    assert_eq!(tcp["subscriptions"][0]["profile"], ack_a["profile"]);
    assert!(tcp["frames_sent"].as_u64().unwrap() >= 10, "{tcp}");
    assert!(tcp["bytes_sent"].as_u64().unwrap() > 0);
    let metrics = http_get(server.ws(), "/metrics");
    assert!(
        metrics.contains("aerobridge_protocol_clients{protocol=\"2\"} 2"),
        "{metrics}"
    );
    let profile = ack_a["profile"].as_u64().unwrap();
    let line = metrics
        .lines()
        .find(|l| {
            l.starts_with("aerobridge_v2_profile_clients{")
                && l.contains(&format!("profile=\"{profile}\""))
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(line.ends_with(" 2"), "{line}");
}

/// GET `path` on the WebSocket port; the body.
fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    out.split_once("\r\n\r\n").unwrap().1.to_string()
}

#[test]
fn a_stalled_client_skips_keyframes_but_every_delta_has_its_base() {
    // A small receive buffer and a reader that pauses: its queue overflows (latest wins), so it
    // misses keyframes; the queue sends the base keyframe before any delta that needs it.
    // One pause of 2.5 s: under --max-lag (5 s here), and longer than two keyframe intervals
    // (a keyframe comes at least once a second), so whole keyframe chains are skipped.
    let server = Server::start(&[
        "--queue-frames",
        "2",
        "--send-buffer",
        "8192",
        "--max-lag",
        "5s",
    ]);
    let stream = small_buffer_stream(server.data, 4096);
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut c = V2 {
        conn: Conn::Tcp {
            reader: BufReader::with_capacity(64, stream),
            length: false,
        },
        welcome: Value::Null,
    };
    c.send(&json!({"op":"hello"}));
    while c.recv()["op"] != "welcome" {}
    let ack = c.request(json!({"op":"sub","id":1,"mode":"delta"}));
    assert_eq!(ack["every"], 1);
    let mut rebuilt = Rebuilt::default();
    let deadline = Instant::now() + Duration::from_secs(20);
    // Keyframes received, by their build time `t` (µs).
    let mut keys: Vec<u64> = Vec::new();
    // How many keyframes had come when the reader paused.
    let mut paused_after: Option<usize> = None;
    // Read until two keyframes came after the pause.
    while paused_after.is_none_or(|n| keys.len() < n + 2) {
        assert!(Instant::now() < deadline, "keyframes stopped coming");
        let m = data(&mut c);
        if m["op"] == "key" {
            keys.push(m["t"].as_u64().unwrap());
        }
        rebuilt.apply(&m); // panics on a delta whose base never came
        if paused_after.is_none() && keys.len() >= 2 {
            // Not a wait for an event: the pause is the slow consumer under test.
            std::thread::sleep(Duration::from_millis(2500));
            paused_after = Some(keys.len());
        }
    }
    assert!(rebuilt.deltas > 0 && rebuilt.keyframes > 0);
    let skipped = server.metric("frames_skipped_total");
    assert!(skipped > 0.0, "the pause made it skip");
    // A keyframe is built at least once a second: two received keyframes built more than 1.5 s
    // apart mean that at least one between them, and every delta on it, was skipped.
    let longest = keys.windows(2).map(|w| w[1] - w[0]).max().unwrap();
    assert!(
        longest > 1_500_000,
        "no keyframe was skipped: keyframes built at most {longest} µs apart"
    );
}

#[test]
fn resume_restores_subscriptions_and_sends_keyframes_at_once() {
    let server = Server::start(&[]);
    let mut c = V2::ws(server.ws());
    let session = c.welcome["session"].as_str().unwrap().to_string();
    let ack = c.request(json!({"op":"sub","id":3,"vars":["Aircraft.*"],"hz":5,"mode":"delta"}));
    let profile = ack["profile"].clone();
    let first = data(&mut c);
    assert_eq!(
        first["op"], "key",
        "a new subscriber starts with a keyframe"
    );
    drop(c);
    server.wait_until("the connection is gone", Duration::from_secs(10), |s| {
        s.metric("protocol_clients{protocol=\"2\"}") == 0.0
    });
    assert_eq!(server.metric("v2_parked_sessions"), 1.0);

    let mut r = V2::tcp(
        server.data,
        json!({"op":"hello","protocol":2,"resume":session,"framing":"length"}),
    );
    assert_eq!(r.welcome["resumed"], true, "{}", r.welcome);
    assert_eq!(r.welcome["session"], session.as_str());
    let again = r.recv();
    assert_eq!(
        (
            again["op"].as_str(),
            again["sub"].as_u64(),
            &again["profile"]
        ),
        (Some("ack"), Some(3), &profile),
        "{again}"
    );
    assert_eq!(again["resumed"], true);
    // The current keyframe at once, before any delta (every is 10: the next due frame is up to
    // 200 ms away, the keyframe is already built).
    let start = Instant::now();
    let key = r.recv();
    assert_eq!(key["op"], "key", "{key}");
    assert!(
        start.elapsed() < Duration::from_millis(150),
        "{:?}",
        start.elapsed()
    );
    let mut rebuilt = Rebuilt::default();
    rebuilt.apply(&key);
    for _ in 0..5 {
        rebuilt.apply(&data(&mut r));
    }

    // A WebSocket client that chose the subprotocol got a fresh welcome unasked; it resumes with
    // a hello of its own.
    drop(r);
    server.wait_until("the TCP client is gone", Duration::from_secs(10), |s| {
        s.metric("v2_parked_sessions") == 1.0
    });
    let mut w = V2::ws(server.ws());
    assert_ne!(w.welcome["session"], session.as_str());
    let welcome = w.request(json!({"op":"hello","id":"r","resume":session}));
    assert_eq!(
        (
            welcome["op"].as_str(),
            welcome["resumed"].as_bool(),
            welcome["id"].as_str()
        ),
        (Some("welcome"), Some(true), Some("r")),
        "{welcome}"
    );
    assert_eq!(welcome["session"], session.as_str());
    let again = w.recv();
    assert_eq!(
        (again["sub"].as_u64(), &again["profile"]),
        (Some(3), &profile)
    );
    assert_eq!(w.recv()["op"], "key");

    let fresh = V2::tcp(
        server.data,
        json!({"op":"hello","resume":"0123456789abcdef0123456789abcdef"}),
    );
    assert_eq!(fresh.welcome["resumed"], false);
    assert_ne!(fresh.welcome["session"], session.as_str());
}

#[test]
fn commands_are_acknowledged_with_the_frame_and_v1_objects_still_work() {
    let server = Server::start(&[]);
    let mut c = V2::ws(server.ws());
    let ok = c.request(json!({"op":"set","id":9,"variable":"Controls.Throttle","value":0.75}));
    assert_eq!(
        (ok["op"].as_str(), ok["ok"].as_bool()),
        (Some("ack"), Some(true)),
        "{ok}"
    );
    assert!(ok["frame"].as_u64().unwrap() > 0);
    let ro = c.request(json!({"op":"set","id":10,"variable":"Aircraft.Altitude","value":1}));
    assert_eq!(ro["ok"], false);
    assert_eq!(ro["error"]["code"], "read_only", "{ro}");
    assert!(ro["error"]["message"].as_str().unwrap().len() > 5);
    // Together or not at all: one bad value refuses the whole set.
    let both =
        c.request(json!({"op":"set","id":11,"values":{"Controls.Flaps":0.5,"Controls.Nope":1}}));
    assert_eq!(both["error"]["code"], "unknown_variable", "{both}");
    let range = c
        .request(json!({"op":"set","id":12,"values":{"Controls.Flaps":0.5,"Controls.Throttle":7}}));
    assert_eq!(range["error"]["code"], "out_of_range", "{range}");
    let nan = c.request(json!({"op":"set","id":13,"variable":"Controls.Flaps","value":"x"}));
    assert_eq!(nan["error"]["code"], "value_not_a_number", "{nan}");
    let pair = c.request(
        json!({"op":"set","id":14,"values":{"Controls.Flaps":0.5,"Controls.Throttle":0.2}}),
    );
    assert_eq!(pair["ok"], true, "{pair}");
    // A v1 command object (no op) gets a v1 reply.
    c.send_raw(r#"{"variable":"Controls.Throttle","value":0.5,"id":"v1"}"#);
    let v1 = c.reply();
    assert_eq!(v1["ok"], true, "{v1}");
    assert_eq!(v1["id"], "v1");
    assert_eq!(v1["variable"], "Controls.Throttle");
    assert!(v1["frame"].as_u64().is_some());
    assert_eq!(server.metric("commands_accepted_total"), 4.0);
    assert_eq!(
        server.metric("commands_rejected_total{reason=\"read_only\"}"),
        1.0
    );
}

#[test]
fn errors_and_limits_are_answered_and_the_connection_stays() {
    let server = Server::start(&["--v2-max-subscriptions", "2", "--v2-max-profiles", "2"]);
    let mut c = V2::ws(server.ws());
    c.send_raw("{not json");
    let e = c.reply();
    assert_eq!(
        (e["op"].as_str(), e["code"].as_str()),
        (Some("error"), Some("bad_request")),
        "{e}"
    );
    // In words, with where: never the parser's internals (InternalError(TapeError)).
    assert_eq!(
        e["message"],
        r#"malformed JSON: expected a JSON object such as {"op": "ping", "id": 1} (at byte 1, 'n')"#
    );
    let e = c.request(json!({"op":"fly","id":2}));
    assert_eq!(
        (e["code"].as_str(), e["id"].as_u64()),
        (Some("bad_request"), Some(2)),
        "{e}"
    );
    let e = c.request(json!({"op":"sub","id":3,"hz":"fast"}));
    assert_eq!(e["code"], "bad_request", "{e}");
    let e = c.request(json!({"op":"sub","id":3,"vars":[]}));
    assert_eq!(e["code"], "bad_request", "{e}");
    let e = c.request(json!({"op":"sub","id":4,"vars":["Aircraft.Altitude","Nope.X","Zzz*"]}));
    assert_eq!(e["ok"], false);
    assert_eq!(e["error"]["code"], "unknown_variable");
    assert_eq!(e["error"]["names"], json!(["Nope.X", "Zzz*"]));
    assert_eq!(
        c.request(json!({"op":"sub","id":5,"vars":["Aircraft.Altitude"]}))["ok"],
        true
    );
    assert_eq!(
        c.request(json!({"op":"sub","id":6,"vars":["Aircraft.Latitude"]}))["ok"],
        true
    );
    let e = c.request(json!({"op":"sub","id":7,"vars":["Aircraft.Longitude"]}));
    assert_eq!(e["error"]["code"], "too_many_subscriptions", "{e}");
    let e = c.request(json!({"op":"unsub","id":8,"sub":99}));
    assert_eq!(e["error"]["code"], "unknown_subscription", "{e}");
    let u = c.request(json!({"op":"unsub","id":9,"sub":6}));
    assert_eq!(
        (u["ok"].as_bool(), u["sub"].as_u64()),
        (Some(true), Some(6)),
        "{u}"
    );
    // Two profiles server-wide: another client asking for a third is refused; the same
    // subscription as an existing profile is fine.
    let mut other = V2::ws(server.ws());
    assert_eq!(
        other.request(json!({"op":"sub","id":1,"vars":["Aircraft.Altitude"]}))["ok"],
        true
    );
    // The profile of sub 6 may still be held a moment by the tick; wait for the release.
    server.wait_until("sub 6's profile released", Duration::from_secs(5), |s| {
        s.metric("v2_profiles") == 1.0
    });
    assert_eq!(
        other.request(json!({"op":"sub","id":2,"vars":["Aircraft.Pitch"]}))["ok"],
        true
    );
    let mut third = V2::ws(server.ws());
    let e = third.request(json!({"op":"sub","id":3,"vars":["Aircraft.Bank"]}));
    assert_eq!(e["error"]["code"], "too_many_profiles", "{e}");
    let pong = c.request(json!({"op":"ping","id":4}));
    assert_eq!(
        (pong["op"].as_str(), pong["id"].as_u64()),
        (Some("pong"), Some(4))
    );
    assert!(pong["t"].as_u64().unwrap() > 1_700_000_000_000_000);
    // A hello with a protocol the server does not speak: the v1 stream goes on.
    let mut v1 = TcpLines::connect(server.data);
    let mut w = v1.writer();
    w.write_all(b"{\"op\":\"hello\",\"protocol\":3}\n").unwrap();
    let mut saw_error = false;
    for _ in 0..20 {
        let v = parse(&v1.frame());
        if v.get("schema").is_none() {
            assert_eq!(v["code"], "unsupported_protocol", "{v}");
            assert_eq!(v["supported"], json!([1, 2]));
            saw_error = true;
        } else if saw_error {
            return; // telemetry after the error: still v1
        }
    }
    panic!("no unsupported_protocol error followed by telemetry");
}

#[test]
fn heartbeats_when_quiet_and_silent_clients_are_dropped_as_idle() {
    let server = Server::start(&["--v2-heartbeat", "300ms", "--v2-idle-timeout", "2s"]);
    let mut c = V2::ws(server.ws());
    assert_eq!(c.welcome["heartbeat_ms"], 300);
    // No subscription: nothing but heartbeats, carrying the current frame counter.
    let hb = c.recv();
    assert_eq!(hb["op"], "hb", "{hb}");
    let first = hb["seq"].as_u64().unwrap();
    let hb2 = c.recv();
    assert_eq!(hb2["op"], "hb");
    assert!(hb2["seq"].as_u64().unwrap() > first);
    // Silence: after the idle timeout an error and Close 1008.
    let Conn::Ws(ws) = &mut c.conn else {
        unreachable!()
    };
    let mut last_text = Value::Null;
    let code = loop {
        let f = ws.frame();
        match f.opcode {
            1 => last_text = parse(&f.payload),
            8 => break u16::from_be_bytes([f.payload[0], f.payload[1]]),
            _ => {}
        }
    };
    assert_eq!(code, 1008);
    assert_eq!(last_text["code"], "idle_timeout", "{last_text}");
    server.wait_until("counted as idle_timeout", Duration::from_secs(5), |s| {
        s.metric("disconnects_total{reason=\"idle_timeout\"}") >= 1.0
    });
    // A client that sends something in time stays.
    let mut alive = V2::ws(server.ws());
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        alive.send(&json!({"op":"hb"}));
        assert_eq!(alive.recv()["op"], "hb");
    }
}

#[test]
fn length_prefixed_framing_read_by_a_plain_python_client() {
    let server = Server::start(&[]);
    let stdout = python("v2_length_client.py", &[&server.data.to_string()]);
    let v: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(v["welcome"], "welcome");
    assert!(v["keyframes"].as_u64().unwrap() >= 1, "{v}");
    assert!(v["deltas"].as_u64().unwrap() >= 5, "{v}");
    assert!(v["altitude"].as_f64().is_some(), "{v}");
}

#[test]
fn upstream_v1_clients_are_unaffected_by_v2_clients_beside_them() {
    let server = Server::start(&[]);
    let mut v2 = V2::ws(server.ws());
    assert_eq!(
        v2.request(json!({"op":"sub","id":1,"mode":"delta","hz":50}))["ok"],
        true
    );
    let mut tcp = TcpLines::connect(server.data);
    let (mut ws, _) = tungstenite::connect(format!("ws://{}/", server.ws())).unwrap();
    let mut last = None;
    for _ in 0..30 {
        let frame = tcp.frame();
        let (_, keys) = frame_keys(&frame);
        assert_eq!(keys, reference_keys());
        let counter = counter_of(&frame);
        if let Some(prev) = last {
            assert_eq!(counter, prev + 1, "v1 gets every frame");
        }
        last = Some(counter);
        let msg = ws.read().unwrap();
        let v = parse(msg.into_text().unwrap().as_bytes());
        assert_eq!(v["schema"], "aerofly-bridge-telemetry");
        let _ = data(&mut v2);
    }
}

#[test]
fn the_readme_python_client_rebuilds_and_prints_values() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let block = readme
        .split("<!-- v2-example")
        .nth(1)
        .and_then(|rest| rest.split("```python\n").nth(1))
        .and_then(|code| code.split("```").next())
        .expect("the README's v2 example");
    assert!(block.lines().count() <= 30, "a short example");
    let server = Server::start(&[]);
    let code = block.replace(
        "(\"127.0.0.1\", 12345)",
        &format!("(\"127.0.0.1\", {})", server.data.port()),
    );
    let mut child = std::process::Command::new("python3")
        .args(["-c", &code])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seqs = Vec::new();
    for _ in 0..12 {
        let line = lines.next().expect("a line").unwrap();
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields.len(), 3, "{line}");
        let altitude: f64 = fields[1].parse().unwrap();
        assert!(altitude > 0.0, "{line}");
        seqs.push(fields[0].parse::<u64>().unwrap());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        seqs.windows(2).all(|w| w[1] == w[0] + 5),
        "10 Hz of 50: {seqs:?}"
    );
    // A refusal ends it with a non-zero exit and the server's words.
    let refused = std::process::Command::new("python3")
        .args([
            "-c",
            &code.replace(
                "\"Aircraft.IndicatedAirspeed\", \"Controls.*\"",
                "\"No.Such\"",
            ),
        ])
        .output()
        .expect("python3");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("refused:") && stderr.contains("unknown_variable"),
        "{stderr}"
    );
}

#[test]
fn websocket_without_the_subprotocol_switches_in_band_and_full_mode_sends_keyframes_only() {
    let server = Server::start(&[]);
    let mut ws = RawWs::connect(server.ws());
    assert!(!ws.head.contains("Sec-WebSocket-Protocol"), "{}", ws.head);
    // v1 telemetry first.
    assert_eq!(
        parse(&ws.frame().payload)["schema"],
        "aerofly-bridge-telemetry"
    );
    ws.send_text(r#"{"op":"hello","protocol":2,"id":"h"}"#);
    let mut c = V2 {
        conn: Conn::Ws(ws),
        welcome: Value::Null,
    };
    // Frames already queued finish; then the welcome, and no more v1 frames.
    let welcome = loop {
        let v = c.recv();
        if v.get("schema").is_none() {
            break v;
        }
    };
    assert_eq!(
        (welcome["op"].as_str(), welcome["id"].as_str()),
        (Some("welcome"), Some("h"))
    );
    let ack =
        c.request(json!({"op":"sub","id":2,"vars":["Aircraft.Altitude","Aircraft.Name"],"hz":25}));
    assert_eq!(ack["mode"], "full", "full is the default");
    for _ in 0..15 {
        let m = c.recv();
        assert!(
            m.get("schema").is_none(),
            "no v1 frames after the welcome: {m}"
        );
        if m["op"] == "hb" {
            continue;
        }
        assert_eq!(m["op"], "key", "{m}");
        assert_eq!(m["v"].as_array().unwrap().len(), 2);
        assert_eq!(m["seq"].as_u64().unwrap() % 2, 0);
    }
}
