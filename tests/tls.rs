//! TLS on every port, with real clients: Python's ssl and `websockets`, rustls, `openssl s_client`.
//! Certificates come from a test CA made here (rcgen); every client verifies the server's chain.

mod common;
#[path = "common/pki.rs"]
mod pki;

use common::Server;
use pki::{Ca, Files};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// A server speaking TLS on `ports` with a fresh CA and certificate.
struct TlsServer {
    server: Server,
    ca: Ca,
    files: Files,
}

fn start(tag: &str, ports: &str, extra: &[&str]) -> TlsServer {
    let ca = Ca::new("aerobridge test CA");
    let files = Files::new(tag);
    let (cert, key) = files.server(&ca.server("server-1"), &ca);
    let mut args = vec![
        "--tls-cert".to_string(),
        cert.display().to_string(),
        "--tls-key".to_string(),
        key.display().to_string(),
        "--tls-ports".to_string(),
        ports.to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    TlsServer {
        server: Server::start(&refs),
        ca,
        files,
    }
}

impl TlsServer {
    fn client(&self) -> std::sync::Arc<rustls::ClientConfig> {
        pki::client_config(&self.ca, None)
    }

    fn metric(&self, sample: &str) -> f64 {
        // Retried: right after a flood the server may still be refusing ("server full").
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match pki::try_metric(self.server.ws(), self.client(), sample) {
                Ok(v) => return v,
                Err(e) if Instant::now() > deadline => panic!("{e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    fn wait_metric(&self, sample: &str, at_least: f64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.metric(sample);
            if v >= at_least {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{sample} stayed at {v} (< {at_least})"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

#[test]
fn python_clients_read_telemetry_and_send_commands_over_tls_on_every_port() {
    let t = start("python", "ws,data,commands", &[]);
    let s = &t.server;
    let ca = t.files.write("ca.pem", &t.ca.pem);
    let out = common::python(
        "tls_client.py",
        &[
            ca.to_str().unwrap(),
            &s.data.to_string(),
            &s.command.to_string(),
            &s.ws().to_string(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["data"]["version"], "TLSv1.3", "{v}");
    assert_eq!(v["data"]["frames"], 30);
    assert_eq!(v["data"]["gaps"], 0, "{v}");
    assert_eq!(v["command"]["ok"], true, "{v}");
    assert_eq!(v["command"]["id"], "tls-1", "{v}");
    assert_eq!(v["ws"]["frames"], 30);
    assert_eq!(v["ws"]["gaps"], 0, "{v}");
    assert_eq!(v["ws"]["reply_ok"], true, "{v}");
    assert_eq!(v["ws"]["applied"], true, "{v}");
    // data, command, wss and the metrics page itself.
    assert!(v["metrics_handshakes"].as_f64().unwrap() >= 4.0, "{v}");

    // /connections says who is on TLS.
    let mut reader = pki::connect(s.data, t.client()).unwrap();
    pki::read_line(&mut reader).unwrap();
    let page = pki::https_get(s.ws(), t.client(), "/connections");
    let body = &page[page.find("\r\n\r\n").unwrap() + 4..];
    let list: serde_json::Value = serde_json::from_str(body).unwrap();
    let tls = list
        .as_array()
        .or_else(|| list["connections"].as_array())
        .unwrap()
        .iter()
        .find_map(|c| c["tls"].as_object().cloned())
        .unwrap_or_else(|| panic!("no TLS connection on /connections: {body}"));
    assert_eq!(tls["version"], "TLSv1.3");
    assert!(
        tls["cipher"].as_str().unwrap().starts_with("TLS13_"),
        "{tls:?}"
    );
}

#[test]
fn openssl_s_client_sees_the_chain_and_both_versions_and_no_older_one() {
    let t = start("openssl", "ws,data,commands", &[]);
    let ca = t.files.write("ca.pem", &t.ca.pem);
    let run = |version: &str| {
        let mut child = std::process::Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &t.server.data.to_string(),
                "-servername",
                "localhost",
            ])
            .args([
                "-CAfile",
                ca.to_str().unwrap(),
                "-verify_return_error",
                "-showcerts",
                version,
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("openssl (Debian package openssl)");
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for (flag, name) in [("-tls1_3", "TLSv1.3"), ("-tls1_2", "TLSv1.2")] {
        let (ok, text) = run(flag);
        assert!(ok, "{flag}: {text}");
        assert!(
            text.contains("Verify return code: 0 (ok)"),
            "{flag}: {text}"
        );
        assert!(
            text.contains(&format!("Protocol  : {name}")) || text.contains(&format!("New, {name}")),
            "{flag}: {text}"
        );
        // The served chain: the leaf and the CA that signed it.
        assert!(
            text.contains("0 s:") && text.contains("1 s:"),
            "{flag}: {text}"
        );
        assert!(
            text.contains("CN=server-1") || text.contains("CN = server-1"),
            "{text}"
        );
    }
    let (ok, text) = run("-tls1_1");
    assert!(
        !ok || !text.contains("Verify return code: 0 (ok)"),
        "TLS 1.1 must be refused: {text}"
    );
    t.wait_metric("tls_handshakes_total{version=\"TLSv1.2\"}", 1.0);
}

#[test]
fn mutual_tls_takes_good_certificates_refuses_the_rest_and_gates_commands() {
    let ca = Ca::new("club CA");
    let stranger_ca = Ca::new("someone else's CA");
    let files = Files::new("mtls");
    let (cert, key) = files.server(&ca.server("server-1"), &ca);
    let client_ca = files.write("clients.pem", &ca.pem);
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
        "--tls-ports",
        "ws,data,commands",
        "--tls-client-ca",
        client_ca.to_str().unwrap(),
        "--tls-allow-commands",
        "cockpit-1",
    ]);
    let pilot = ca.client("cockpit-1");
    let display = ca.client("display-2");
    let as_pilot = pki::client_config(&ca, Some(&pilot));
    let as_display = pki::client_config(&ca, Some(&display));

    let command = |config| -> serde_json::Value {
        let mut s = pki::connect(server.command, config).unwrap();
        s.write_all(b"{\"variable\":\"Controls.Throttle\",\"value\":0.5}\n")
            .unwrap();
        serde_json::from_slice(&pki::read_line(&mut s).unwrap()).unwrap()
    };
    assert_eq!(
        command(as_pilot.clone())["ok"],
        true,
        "an allowed certificate commands"
    );
    let refused = command(as_display.clone());
    assert_eq!(refused["ok"], false);
    assert!(
        refused["error"].as_str().unwrap().contains("certificate"),
        "{refused}"
    );

    // Telemetry is for every trusted certificate; /connections shows whose.
    let mut reader = pki::connect(server.data, as_display.clone()).unwrap();
    pki::read_line(&mut reader).unwrap();
    let page = pki::https_get(server.ws(), as_pilot.clone(), "/connections");
    assert!(page.contains("CN=display-2"), "{page}");

    // No certificate, or one from another CA: refused (TLS 1.3 shows it on the first read).
    let refused = |config| match pki::connect(server.data, config) {
        Err(_) => {}
        Ok(mut s) => {
            let mut buf = [0u8; 64];
            assert!(
                s.read(&mut buf).is_err(),
                "the server must refuse this client"
            );
        }
    };
    refused(pki::client_config(&ca, None));
    refused(pki::client_config(
        &ca,
        Some(&stranger_ca.client("cockpit-1")),
    ));
    let m = |s: &str| pki::metric(server.ws(), as_pilot.clone(), s);
    let deadline = Instant::now() + Duration::from_secs(10);
    while m("tls_failures_total{reason=\"no_client_certificate\"}") < 1.0
        || m("tls_failures_total{reason=\"bad_client_certificate\"}") < 1.0
    {
        assert!(Instant::now() < deadline, "failures not counted by reason");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(m("tls_client_certificates_total") >= 3.0);
}

#[test]
fn a_certificate_swapped_on_disk_serves_new_connections_while_old_ones_keep_streaming() {
    let t = start("reload", "ws,data", &[]);
    let subject_of = |s: &pki::TlsStream| {
        let der = s.conn.peer_certificates().unwrap()[0].clone();
        x509_cn(der.as_ref())
    };
    let mut old = pki::connect(t.server.data, t.client()).unwrap();
    pki::read_line(&mut old).unwrap();
    assert_eq!(subject_of(&old), "server-1");
    // The first client reads throughout the swaps, counting gaps.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let streaming = std::thread::spawn({
        let stop = std::sync::Arc::clone(&stop);
        move || {
            let mut gaps = common::GapCounter::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let line = pki::read_line(&mut old).expect("the old connection keeps streaming");
                gaps.see(common::counter_of(&line));
            }
            gaps
        }
    });

    // A new certificate under the same names (written by rename, as deploy tools do).
    t.files.server(&t.ca.server("server-2"), &t.ca);
    t.wait_metric("tls_reloads_total{result=\"ok\"}", 1.0);
    let new = pki::connect(t.server.data, t.client()).unwrap();
    assert_eq!(subject_of(&new), "server-2");

    // SIGHUP reloads too.
    std::process::Command::new("kill")
        .args(["-HUP", &t.server.pid().to_string()])
        .status()
        .unwrap();
    t.wait_metric("tls_reloads_total{result=\"ok\"}", 2.0);

    // A broken file is refused; the server keeps serving the last good certificate.
    t.files.write("key.pem", "not a key\n");
    t.wait_metric("tls_reloads_total{result=\"refused\"}", 1.0);
    let after = pki::connect(t.server.data, t.client()).unwrap();
    assert_eq!(subject_of(&after), "server-2");
    t.server
        .wait_for_log("reload refused", Duration::from_secs(5));

    // The first client streamed throughout, without a gap.
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let gaps = streaming.join().unwrap();
    assert!(gaps.frames >= 10, "{gaps:?}");
    assert_eq!(gaps.gaps, 0, "{gaps:?}");
}

fn x509_cn(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    cn
}

/// Sends `bytes` to a fresh connection; returns what came back before the server closed.
fn answer_to(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn hostile_input_gets_an_alert_and_a_close_and_the_server_keeps_serving() {
    let t = start(
        "hostile",
        "ws,data,commands",
        &["--handshake-timeout", "1s"],
    );
    let s = &t.server;
    // Plaintext on a TLS port: the browser-style request and a command line.
    for (addr, text) in [
        (s.ws(), &b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"[..]),
        (
            s.command,
            &b"{\"variable\":\"Controls.Throttle\",\"value\":1}\n"[..],
        ),
    ] {
        let got = answer_to(addr, text);
        assert_eq!(
            got.first(),
            Some(&0x15),
            "an alert record, then a close: {got:?}"
        );
    }
    // Garbage, and a record longer than TLS allows.
    let got = answer_to(s.data, &[0x00, 0xff, 0x13, 0x37, 0x42, 0x42, 0x42, 0x42]);
    assert_eq!(got.first(), Some(&0x15), "{got:?}");
    let mut huge = vec![0x16, 0x03, 0x01, 0x4e, 0x20];
    huge.extend(std::iter::repeat_n(0u8, 20_000));
    let got = answer_to(s.data, &huge);
    assert_eq!(got.first(), Some(&0x15), "{got:?}");
    t.wait_metric("tls_failures_total{reason=\"plaintext\"}", 2.0);
    t.wait_metric("tls_failures_total{reason=\"malformed\"}", 2.0);

    // A handshake that stalls after a few bytes is cut at --handshake-timeout.
    let mut slow = TcpStream::connect(s.data).unwrap();
    slow.write_all(&[0x16, 0x03, 0x01]).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    let mut sink = Vec::new();
    let _ = slow.read_to_end(&mut sink);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "slow handshake not cut"
    );
    t.wait_metric("tls_failures_total{reason=\"timeout\"}", 1.0);

    // A burst of garbage connections is counted, not logged line by line.
    for _ in 0..100 {
        answer_to(s.data, b"garbage garbage garbage\r\n");
    }
    t.wait_metric("tls_failures_total{reason=\"plaintext\"}", 102.0);
    let lines = s
        .log()
        .iter()
        .filter(|l| l.contains("TLS connection failed"))
        .count();
    assert!(lines < 20, "{lines} log lines for 100 failures");

    // Still serving.
    let mut ok = pki::connect(s.data, t.client()).unwrap();
    pki::read_line(&mut ok).unwrap();
}

#[test]
fn without_kernel_tls_the_fallback_to_user_space_is_logged_once_and_shown_in_metrics() {
    let t = start("ktls", "ws,data", &[]);
    for _ in 0..3 {
        let mut c = pki::connect(t.server.data, t.client()).unwrap();
        pki::read_line(&mut c).unwrap();
    }
    t.wait_metric("tls_user_space_connections_total", 3.0);
    let unknown = t.metric("tls_kernel_offload{state=\"unknown\"}");
    let unavailable = t.metric("tls_kernel_offload{state=\"unavailable\"}");
    let present = t.metric("tls_kernel_offload{state=\"present\"}");
    assert_eq!(unknown, 0.0, "probed at the first TLS connection");
    assert_eq!(unavailable + present, 1.0);
    let lines = t
        .server
        .log()
        .iter()
        .filter(|l| l.contains("kernel TLS"))
        .count();
    assert_eq!(lines, 1, "logged once: {:?}", t.server.log());
    // This machine's kernel has no TLS ULP (ENOENT): the fallback is what runs here.
    if !std::path::Path::new("/sys/module/tls").exists() {
        assert_eq!(unavailable, 1.0);
    }
}

#[test]
fn certificates_that_cannot_serve_are_clear_startup_errors() {
    let ca = Ca::new("CA");
    let files = Files::new("startup");
    let good = ca.server("server-1");
    let other = ca.server("server-2");
    let cert = files.write("cert.pem", &good.cert_pem);
    let key = files.write("key.pem", &good.key_pem);
    let other_key = files.write("other-key.pem", &other.key_pem);
    let expired = files.write("expired.pem", &ca.expired_server().cert_pem);
    let der = files.path("cert.der");
    std::fs::write(&der, good.der.as_ref()).unwrap();
    let missing = files.path("missing.pem");
    let p = |p: &std::path::PathBuf| p.to_str().unwrap().to_string();
    for (cert, key, want) in [
        (
            p(&cert),
            p(&other_key),
            "does not belong to the certificate",
        ),
        (p(&expired), p(&key), "expired on"),
        (p(&der), p(&key), "holds no PEM certificate"),
        (p(&key), p(&key), "holds no PEM certificate"),
        (p(&cert), p(&cert), "holds no PEM private key"),
        (p(&missing), p(&key), "cannot read --tls-cert"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_aerobridge"))
            .args(aerobridge_harness::FREE_PORTS)
            .args(["--tls-cert", &cert, "--tls-key", &key])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{cert} {key} started");
        assert!(stderr.contains(want), "want '{want}' in: {stderr}");
    }
}

/// A ClientHello as a rustls client sends it (the expensive thing for a server to answer).
fn client_hello(config: std::sync::Arc<rustls::ClientConfig>) -> Vec<u8> {
    let mut conn = rustls::ClientConnection::new(
        config,
        rustls::pki_types::ServerName::try_from("localhost").unwrap(),
    )
    .unwrap();
    let mut hello = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut hello).unwrap();
    }
    hello
}

#[test]
fn a_client_hello_flood_waits_its_turn_while_streaming_clients_keep_their_frames() {
    // A small share, so the flood is sure to reach it on any machine.
    let t = start(
        "flood",
        "ws,data",
        &["--tls-handshake-share", "0.02", "--handshake-timeout", "1s"],
    );
    let hello = client_hello(t.client());
    let mut streaming = pki::connect(t.server.data, t.client()).unwrap();
    pki::read_line(&mut streaming).unwrap();

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flooders: Vec<_> = (0..2)
        .map(|_| {
            let (stop, hello, addr) = (std::sync::Arc::clone(&stop), hello.clone(), t.server.data);
            std::thread::spawn(move || {
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) && sent < 1500 {
                    // Each one costs the server a key exchange and a signature; we never finish.
                    if let Ok(mut s) = TcpStream::connect(addr) {
                        let _ = s.write_all(&hello);
                        sent += 1;
                    }
                }
                sent
            })
        })
        .collect();
    // Meanwhile the streaming client reads for two seconds.
    let mut gaps = common::GapCounter::default();
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        gaps.see(common::counter_of(&pki::read_line(&mut streaming).unwrap()));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    drop(streaming); // it stops reading now: not a slow consumer to wait for
    let hellos: u64 = flooders.into_iter().map(|f| f.join().unwrap()).sum();
    t.wait_metric("tls_handshakes_deferred_total", 1.0);
    assert!(
        t.metric("tls_handshakes_deferred_total") > 0.0,
        "{hellos} ClientHellos never reached the handshake budget"
    );
    // 2 s at 50 Hz is 100 frames; a starved worker would deliver a fraction.
    assert!(gaps.frames >= 50, "{gaps:?} during {hellos} ClientHellos");
}

#[test]
fn plaintext_runs_beside_tls_on_its_own_port() {
    let t = start("beside", "ws", &["--plain-port", "ws=0"]);
    let line = t
        .server
        .wait_for_log("(websocket-plain)", Duration::from_secs(5));
    let addr: std::net::SocketAddr = line
        .split("listening on ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    // The plaintext port answers plain HTTP (and upgrades plain WebSockets) ...
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut page = String::new();
    let _ = s.read_to_string(&mut page);
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    let (mut ws, _) = tungstenite::connect(format!("ws://{addr}/")).unwrap();
    assert!(ws.read().unwrap().is_text());
    // ... while the main port speaks TLS only.
    assert_eq!(
        answer_to(t.server.ws(), b"GET / HTTP/1.1\r\n\r\n").first(),
        Some(&0x15)
    );
    assert!(pki::https_get(t.server.ws(), t.client(), "/").starts_with("HTTP/1.1 200"));
}

#[test]
fn a_full_server_refuses_a_tls_client_with_an_alert_and_no_handshake() {
    let t = start("full", "ws,data", &["--max-clients", "2"]);
    // Two TLS telemetry clients fill the server.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = pki::connect(t.server.data, t.client()).unwrap();
        pki::read_line(&mut c).unwrap();
        held.push(c);
    }
    // The next one gets a fatal internal_error alert (7 bytes, no ServerHello) and a close.
    let hello = client_hello(t.client());
    let got = answer_to(t.server.data, &hello);
    assert_eq!(got, [0x15, 3, 3, 0, 2, 2, 80], "{got:?}");
    // A rustls client reports the alert.
    let refused = pki::connect(t.server.data, t.client());
    assert!(refused.is_err(), "a full server completed a handshake");
    drop(held);
    // Room again: served.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(mut c) = pki::connect(t.server.data, t.client()) {
            if pki::read_line(&mut c).is_ok() {
                break;
            }
        }
        assert!(Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(50));
    }
}
