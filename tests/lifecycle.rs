//! Starting and stopping: SIGTERM closes WebSocket clients with 1001 and exits 0 within 2 s;
//! `--max-clients` refuses politely; bad options fail clearly; upstream's env vars work.

mod common;

use common::*;
use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn sigterm_closes_websocket_clients_with_1001_and_exits_0_within_2s() {
    let mut server = Server::start(&[]);
    let mut ws: Vec<RawWs> = (0..3).map(|_| RawWs::connect(server.ws())).collect();
    let mut tcp: Vec<TcpLines> = (0..3).map(|_| TcpLines::connect(server.data)).collect();
    for c in &mut ws {
        c.frame();
    }
    for c in &mut tcp {
        c.frame();
    }
    let (status, took) = server.terminate(Duration::from_secs(5));
    assert!(status.success(), "exit status {status:?}");
    assert!(took < Duration::from_secs(2), "took {took:?}");
    for c in &mut ws {
        let (code, reason, _) = c.until_close();
        assert_eq!((code, reason.as_str()), (1001, "server shutting down"));
    }
    for c in &mut tcp {
        let mut rest = Vec::new();
        let _ = c.writer().read_to_end(&mut rest);
        assert!(
            rest.is_empty() || rest.ends_with(b"\n"),
            "TCP clients end on a whole frame"
        );
    }
    server.wait_for_log("totals at shutdown", Duration::from_secs(1));
}

#[test]
fn beyond_max_clients_new_connections_are_refused_politely() {
    let server = Server::start(&["--max-clients", "3"]);
    let mut kept: Vec<TcpLines> = (0..3).map(|_| TcpLines::connect(server.data)).collect();
    for c in &mut kept {
        c.frame();
    }
    let (mut ws, status) = RawWs::upgrade(server.ws(), &RawWs::request(""));
    assert_eq!(status, 503);
    assert!(ws
        .read_to_end()
        .contains("server full: 3 clients connected"));
    let replies = command_oneshot(server.command, r#"{"variable":"Controls.Gear","value":1}"#);
    assert_eq!(replies[0]["ok"], false);
    assert_eq!(replies[0]["error"], "server full");
    let mut extra = TcpStream::connect(server.data).unwrap();
    extra
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut buf = Vec::new();
    let _ = extra.read_to_end(&mut buf);
    assert!(buf.is_empty(), "refused data client gets no frames");
    // Existing clients are untouched.
    for c in &mut kept {
        let a = counter_of(&c.frame());
        assert_eq!(counter_of(&c.frame()), a + 1);
    }
    // A slot frees up when a client leaves.
    drop(kept.pop());
    // Until the server has seen the client leave, a newcomer is still refused (closed at once,
    // no frames); then it is admitted. (No metrics scrape here: it would take the slot itself.)
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = TcpStream::connect(server.data).unwrap();
        again
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut first = [0u8; 1];
        if again.read(&mut first).unwrap_or(0) == 1 {
            assert_eq!(first[0], b'{', "a frame starts");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no slot freed after a client left"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn run_expecting_failure(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_aerobridge"))
        .args(args)
        .env_remove("AEROFLY_BRIDGE_BROADCAST_MS")
        .output()
        .unwrap();
    assert!(!out.status.success(), "{args:?} should fail");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn bad_options_fail_at_startup_with_a_clear_error() {
    let err = run_expecting_failure(&["--broadcast-ms", "3"]);
    assert!(
        err.contains("--broadcast-ms") && err.contains("5..=1000"),
        "{err}"
    );
    // A bad value from the environment names the variable, not just the option.
    let out = Command::new(env!("CARGO_BIN_EXE_aerobridge"))
        .env("AEROFLY_BRIDGE_BROADCAST_MS", "3")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("(the value comes from the environment: AEROFLY_BRIDGE_BROADCAST_MS=3)"),
        "{err}"
    );
    let err = run_expecting_failure(&["--data-port", "0", "--command-port", "7", "--ws-port", "7"]);
    assert!(
        err.contains("--command-port and --ws-port are both 7"),
        "{err}"
    );
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let err = run_expecting_failure(&[
        "--data-port",
        &port,
        "--command-port",
        "0",
        "--ws-port",
        "0",
    ]);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port} (--data-port)")),
        "{err}"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_aerobridge"))
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--bind",
        "--data-port",
        "--command-port",
        "--ws-port",
        "--no-ws",
        "--broadcast-ms",
        "--workers",
        "--max-clients",
        "--max-lag",
    ] {
        assert!(help.contains(flag), "--help documents {flag}");
    }
    for env in [
        "AEROFLY_BRIDGE_BROADCAST_MS",
        "AEROFLY_BRIDGE_WS_PORT",
        "AEROFLY_BRIDGE_WS_ENABLE",
    ] {
        assert!(help.contains(env), "--help names {env}");
    }
}

#[test]
fn upstream_environment_variables_are_honoured() {
    let server = Server::start_with_env(
        &[],
        &[
            ("AEROFLY_BRIDGE_BROADCAST_MS", "100"),
            ("AEROFLY_BRIDGE_WS_ENABLE", "0"),
        ],
    );
    assert!(server.ws.is_none());
    let mut c = TcpLines::connect(server.data);
    assert_eq!(parse(&c.frame())["broadcast_rate_hz"], 10.0);
    assert!(server.log().iter().all(|l| !l.contains("(websocket)")));
}

#[test]
fn startup_log_names_the_driver_workers_and_addresses_and_clients_are_balanced() {
    let server = Server::start(&[
        "--workers",
        "2",
        "--log",
        "aerobridge=debug",
        "--stats-interval",
        "200ms",
    ]);
    server.wait_for_log("(websocket)", Duration::from_secs(1));
    let log = server.log();
    let first: Vec<&String> = log.iter().take(5).collect();
    let driver = first
        .iter()
        .find(|l| l.contains("I/O driver"))
        .expect("driver named among the first lines");
    assert!(
        driver.contains("io_uring") || driver.contains("poll"),
        "{driver}"
    );
    assert!(driver.contains("2 worker thread(s)"), "{driver}");
    let listening: Vec<&&String> = first
        .iter()
        .filter(|l| l.contains("listening on"))
        .collect();
    assert_eq!(listening.len(), 3);
    for line in listening {
        // One clean line per listener: the address and kind once, no repeated fields.
        assert!(
            !line.contains("listener=") && !line.contains("addr="),
            "{line}"
        );
    }
    // Where to point a browser, with the real port.
    let ws = server.ws();
    let urls = server.wait_for_log("dashboard: ", Duration::from_secs(1));
    assert!(
        urls.contains(&format!("dashboard: http://{ws}/"))
            && urls.contains(&format!("http://{ws}/metrics"))
            && urls.contains(&format!("http://{ws}/healthz")),
        "{urls}"
    );
    // Six clients are spread evenly over the two workers; the periodic totals show it.
    let mut clients: Vec<TcpLines> = (0..6).map(|_| TcpLines::connect(server.data)).collect();
    for c in &mut clients {
        c.frame();
    }
    server.wait_for_log("per_worker=[3, 3]", Duration::from_secs(3));
}

#[test]
fn beyond_max_clients_per_ip_one_address_is_refused_and_others_are_not() {
    // Set explicitly, the limit counts loopback peers too (by default they are exempt).
    let server = Server::start(&["--max-clients-per-ip", "3"]);
    let mut kept: Vec<TcpLines> = (0..3).map(|_| TcpLines::connect(server.data)).collect();
    for c in &mut kept {
        c.frame();
    }
    let (mut ws, status) = RawWs::upgrade(server.ws(), &RawWs::request(""));
    assert_eq!(status, 429);
    assert!(ws
        .read_to_end()
        .contains("too many connections from your address: 3 (--max-clients-per-ip)"));
    let replies = command_oneshot(server.command, r#"{"variable":"Controls.Gear","value":1}"#);
    assert_eq!(replies[0]["ok"], false);
    assert_eq!(
        replies[0]["error"],
        "too many connections from your address"
    );
    // Another address (127.0.0.2 is this machine too, but not the same address) is served.
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&"127.0.0.2:0".parse::<SocketAddr>().unwrap().into())
        .unwrap();
    other.connect(&server.ws().into()).unwrap();
    let (_served, status) = RawWs::upgrade_on(other.into(), &RawWs::request(""));
    assert_eq!(
        status, 101,
        "another address is not limited by this one's connections"
    );
    // The established clients are untouched.
    for c in &mut kept {
        let a = counter_of(&c.frame());
        assert_eq!(counter_of(&c.frame()), a + 1);
    }
    // Refusals are counted by reason. A scrape is a connection from this address too: it gets
    // through once a kept client has left (until then it is refused, and counted).
    drop(kept.pop());
    server.wait_until("refusals counted", Duration::from_secs(10), |s| {
        s.try_metric("disconnects_total{reason=\"too_many_from_ip\"}")
            .is_ok_and(|n| n >= 2.0)
    });
}
