//! Real sources: replaying a recording, recording a stream, relaying another bridge (with
//! command forwarding, stale data while upstream is down, and recovery).

mod common;

use common::*;
use std::process::Command;
use std::time::{Duration, Instant};

const RECORDING: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/test-data/sim-5s.ndjson.zst");

fn frames(server: &Server, n: usize) -> Vec<serde_json::Value> {
    let mut c = TcpLines::connect(server.data);
    (0..n).map(|_| parse(&c.frame())).collect()
}

#[test]
fn replay_plays_the_shipped_recording_with_its_timing() {
    let server = Server::start(&[
        "--source",
        &format!("replay:{RECORDING}"),
        "--speed",
        "4",
        "--loop",
    ]);
    server.wait_for_log("replay of", Duration::from_secs(2));
    let f = frames(&server, 60);
    assert!(f.iter().all(|f| f["data_valid"] == 1));
    assert_eq!(f[0]["variables"]["Aircraft.Name"], "Beechcraft Baron 58");
    let lats: Vec<f64> = f
        .iter()
        .map(|f| f["variables"]["Aircraft.Latitude"].as_f64().unwrap())
        .collect();
    assert!(lats.windows(2).any(|w| w[0] != w[1]), "the aircraft moves");
    let counters: Vec<u64> = f
        .iter()
        .map(|f| f["update_counter"].as_u64().unwrap())
        .collect();
    assert!(
        counters.windows(2).all(|w| w[1] == w[0] + 1),
        "our own counter, consecutive"
    );
    // Commands have nowhere to go.
    let r = command_oneshot(server.command, r#"{"variable":"Controls.Gear","value":1}"#);
    assert!(r[0]["error"]
        .as_str()
        .unwrap()
        .contains("replays a recording"));
}

#[test]
fn replay_without_loop_goes_stale_at_the_end() {
    let server = Server::start(&["--source", &format!("replay:{RECORDING}"), "--speed", "20"]);
    let mut c = TcpLines::connect(server.data);
    let deadline = Instant::now() + Duration::from_secs(5);
    while parse(&c.frame())["data_valid"] == 1 {
        assert!(
            Instant::now() < deadline,
            "still valid after the recording ended"
        );
    }
}

#[test]
fn bad_recordings_are_skipped_line_by_line_or_refused_clearly() {
    let dir = std::env::temp_dir().join(format!("aerobridge-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good =
        String::from_utf8(aerobridge::source::replay::read_recording(RECORDING.as_ref()).unwrap())
            .unwrap();
    let mut lines: Vec<&str> = good.lines().take(10).collect();
    lines.insert(3, "{corrupt");
    lines.push("{\"schema\":\"aerofly-bridge-telemetry\",\"variables\":{\"Aircraft.Alt"); // truncated
    let mixed = dir.join("mixed.ndjson");
    std::fs::write(&mixed, lines.join("\n")).unwrap();
    let server = Server::start(&["--source", &format!("replay:{}", mixed.display())]);
    // The bad line in the middle is skipped; the unterminated last one is a torn end (a crash
    // while recording), said once.
    server.wait_for_log("1 bad lines skipped", Duration::from_secs(2));
    server.wait_for_log(
        "torn at byte 113600 after 11 frames (crash while recording?); replaying what is whole",
        Duration::from_secs(2),
    );
    assert_eq!(
        frames(&server, 2)[1]["variables"]["Aircraft.Name"],
        "Beechcraft Baron 58"
    );
    let junk = dir.join("junk.ndjson");
    std::fs::write(&junk, "hello\nworld\n").unwrap();
    for (arg, want) in [
        (
            format!("replay:{}", junk.display()),
            "holds no telemetry frames (2 lines skipped)",
        ),
        (
            "replay:/no/such/file".to_string(),
            "cannot read recording /no/such/file",
        ),
        ("relay:udp://x".to_string(), "expected tcp://HOST:PORT"),
        (
            "telepathy".to_string(),
            "expected sim, relay:tcp://HOST:PORT, nats://HOST:PORT/FEED or replay:FILE",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_aerobridge"))
            .args(aerobridge_harness::FREE_PORTS)
            .args(["--source", &arg])
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{arg}: {err}");
    }
}

#[test]
fn record_writes_the_stream_to_a_file() {
    let server = Server::start(&["--broadcast-ms", "50"]);
    let out = std::env::temp_dir().join(format!("aerobridge-rec-{}.ndjson", std::process::id()));
    let status = Command::new(env!("CARGO_BIN_EXE_aerobridge"))
        .args([
            "record",
            "--from",
            &format!("tcp://{}", server.data),
            "--out",
            out.to_str().unwrap(),
            "--duration",
            "1s",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let text = std::fs::read_to_string(&out).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 10, "{} frames", lines.len());
    for l in &lines {
        assert_eq!(frame_keys(l.as_bytes()).1.len(), 361);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn relay_rebroadcasts_forwards_commands_goes_stale_and_recovers() {
    let (up_data, up_cmd) = (free_port(), free_port());
    let upstream_args = [
        "--data-port",
        &up_data.to_string(),
        "--command-port",
        &up_cmd.to_string(),
        "--no-ws",
    ]
    .map(String::from);
    let start_upstream = || {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_aerobridge"));
        cmd.args(&upstream_args).stderr(std::process::Stdio::null());
        cmd.spawn().unwrap()
    };
    let mut upstream = start_upstream();
    let relay = Server::start(&[
        "--source",
        &format!("relay:tcp://127.0.0.1:{up_data}"),
        "--relay-commands",
        &format!("tcp://127.0.0.1:{up_cmd}"),
    ]);
    let mut c = TcpLines::connect(relay.data);
    let wait_for = |c: &mut TcpLines, what: &str, pred: &dyn Fn(&serde_json::Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let f = parse(&c.frame());
            if pred(&f) {
                return f;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
        }
    };
    let f = wait_for(&mut c, "live data", &|f| f["data_valid"] == 1);
    assert_eq!(f["variables"]["Aircraft.Name"], "Beechcraft Baron 58");
    // Every upstream frame is re-broadcast as it arrives, carrying upstream's wall-clock
    // timestamp: the relay's timestamps are exactly upstream's, one per upstream frame.
    let mut direct = TcpLines::connect(format!("127.0.0.1:{up_data}").parse().unwrap());
    let upstream_ts: Vec<u64> = (0..40)
        .map(|_| parse(&direct.frame())["timestamp"].as_u64().unwrap())
        .collect();
    let relayed_ts: Vec<u64> = (0..10)
        .map(|_| parse(&c.frame())["timestamp"].as_u64().unwrap())
        .collect();
    assert!(
        relayed_ts.windows(2).all(|w| w[1] > w[0]),
        "one relayed frame per upstream frame"
    );
    let found = relayed_ts
        .iter()
        .filter(|t| upstream_ts.contains(t))
        .count();
    assert!(
        found >= 8,
        "relayed timestamps are upstream's: {found} of 10 ({relayed_ts:?} vs {upstream_ts:?})"
    );
    // A command through the relay reaches upstream and comes back in telemetry.
    let r = command_oneshot(relay.command, r#"{"variable":"Controls.Gear","value":1}"#);
    assert_eq!(r[0]["ok"], true, "{r:?}");
    assert_eq!(
        r[0]["relayed"], true,
        "delivered upstream, not a local frame: {r:?}"
    );
    assert!(r[0].get("frame").is_none(), "{r:?}");
    wait_for(&mut c, "the forwarded command", &|f| {
        f["variables"]["Controls.Gear"] == 1.0
    });
    // Upstream goes away: clients stay connected, the data turns stale.
    upstream.kill().unwrap();
    upstream.wait().unwrap();
    wait_for(&mut c, "stale data", &|f| f["data_valid"] == 0);
    relay.wait_for_log("upstream", Duration::from_secs(5));
    // Upstream comes back: the relay reconnects by itself.
    let mut upstream = start_upstream();
    wait_for(&mut c, "recovery", &|f| f["data_valid"] == 1);
    upstream.kill().unwrap();
    let _ = upstream.wait();
}

/// A relay answers a command from what really happened: with upstream's command port closed it
/// refuses, naming the upstream, instead of saying `ok` for a command that went nowhere.
#[test]
fn relay_refuses_commands_it_cannot_deliver() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed_port = closed.local_addr().unwrap().port();
    drop(closed);
    let relay = Server::start(&[
        "--source",
        "relay:tcp://127.0.0.1:1",
        "--relay-commands",
        &format!("tcp://127.0.0.1:{closed_port}"),
    ]);
    let r = command_oneshot(
        relay.command,
        r#"{"variable":"Controls.Gear","value":1,"id":7}"#,
    );
    assert_eq!(r[0]["ok"], false, "{r:?}");
    assert_eq!(r[0]["id"], 7);
    let error = r[0]["error"].as_str().unwrap();
    assert!(
        error.starts_with(&format!(
            "unavailable: upstream 127.0.0.1:{closed_port} unreachable"
        )),
        "{error}"
    );
    relay.wait_until("the refusal is counted", Duration::from_secs(10), |s| {
        s.metric("commands_rejected_total{reason=\"upstream_unavailable\"}") == 1.0
    });
}

/// Where upstream answers, its answer is the relay's: an upstream refusal comes back in its words.
#[test]
fn relay_passes_upstream_refusals_on() {
    let upstream = Server::start(&["--read-only"]);
    let relay = Server::start(&[
        "--source",
        &format!("relay:tcp://{}", upstream.data),
        "--relay-commands",
        &format!("tcp://{}", upstream.command),
    ]);
    let r = command_oneshot(relay.command, r#"{"variable":"Controls.Gear","value":1}"#);
    assert_eq!(r[0]["ok"], false, "{r:?}");
    assert_eq!(
        r[0]["error"],
        "upstream refused: commands are disabled: the server runs with --read-only"
    );
}
