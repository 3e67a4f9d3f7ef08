//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core loads `GET /`, sees values update, clicks "Gear down", sees the reply and the
//! gear come down, and saves a screenshot to `target/dashboard-{shared,off}.png`. It runs twice:
//! with permessage-deflate (Chromium offers it) and with `--ws-compression off`; each time the
//! page also opens a plain v1 WebSocket and checks every frame parses, in order.
//!
//! Needs `/usr/bin/chromium` and `tests/e2e/node_modules/playwright-core`, so it is `#[ignore]`d
//! in a plain `cargo test` (which reports it as ignored, never as passed). CI installs both and
//! runs it with `cargo test --test dashboard_e2e -- --ignored`, where a missing browser fails.

mod common;
#[path = "common/pki.rs"]
mod pki;

use common::*;
use std::path::Path;
use std::process::Command;

#[test]
#[ignore = "needs Debian's chromium and playwright-core; run with `cargo test --test dashboard_e2e -- --ignored`"]
fn dashboard_updates_and_sends_commands_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium missing: apt-get install chromium"
    );
    assert!(
        root.join("tests/e2e/node_modules/playwright-core").exists(),
        "playwright-core missing: npm install --prefix tests/e2e --no-save playwright-core@1.65.1"
    );
    for compression in ["shared", "off"] {
        // A short idle rule: the page must keep its v2 session alive by itself (heartbeats).
        let server = Server::start(&["--v2-idle-timeout", "3s", "--ws-compression", compression]);
        let shot = root.join(format!("target/dashboard-{compression}.png"));
        let out = Command::new("node")
            .arg(root.join("tests/e2e/dashboard.mjs"))
            .arg(format!("http://{}/", server.ws()))
            .arg(&shot)
            .env("COMPRESSION", compression)
            .output()
            .expect("node");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "--ws-compression {compression}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("dashboard ok"), "{stdout}");
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "screenshot saved"
        );
    }
}

#[test]
#[ignore = "needs Debian's chromium and playwright-core; run with `cargo test --test dashboard_e2e -- --ignored`"]
fn dashboard_over_https_reads_telemetry_over_wss_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium missing"
    );
    let ca = pki::Ca::new("dashboard test CA");
    let files = pki::Files::new("dashboard");
    let leaf = ca.server("localhost");
    let (cert, key) = files.server(&leaf, &ca);
    let leaf_pem = files.write("leaf.pem", &leaf.cert_pem);
    let server = Server::start(&[
        "--v2-idle-timeout",
        "3s",
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let shot = root.join("target/dashboard-https.png");
    let out = Command::new("node")
        .arg(root.join("tests/e2e/dashboard.mjs"))
        .arg(format!("https://localhost:{}/", server.ws().port()))
        .arg(&shot)
        .env("COMPRESSION", "shared")
        .env("CERT", &leaf_pem)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "https: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("dashboard ok"), "{stdout}");
    // The browser's connections were TLS handshakes the server counted.
    let handshakes = pki::metric(
        server.ws(),
        pki::client_config(&ca, None),
        "tls_handshakes_total{version=\"TLSv1.3\"}",
    );
    assert!(handshakes >= 2.0, "{handshakes}");
}

#[test]
#[ignore = "needs Debian's firefox-esr and libnss3-tools and puppeteer-core; run with `cargo test --test dashboard_e2e -- --ignored`"]
fn dashboard_over_https_reads_telemetry_over_wss_in_headless_firefox() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new("/usr/bin/firefox-esr").exists(),
        "/usr/bin/firefox-esr missing: apt-get install firefox-esr"
    );
    assert!(
        root.join("tests/e2e/node_modules/puppeteer-core").exists(),
        "puppeteer-core missing: npm install --prefix tests/e2e --no-save puppeteer-core"
    );
    let ca = pki::Ca::new("dashboard test CA");
    let files = pki::Files::new("firefox");
    let (cert, key) = files.server(&ca.server("localhost"), &ca);
    let ca_pem = files.write("ca.pem", &ca.pem);
    // A Firefox profile whose NSS database trusts the test CA (certutil, libnss3-tools).
    let profile = files.path("profile");
    std::fs::create_dir_all(&profile).unwrap();
    let db = format!("sql:{}", profile.display());
    let certutil = |args: &[&str]| {
        let out = Command::new("certutil")
            .args(args)
            .output()
            .expect("certutil (apt-get install libnss3-tools)");
        assert!(
            out.status.success(),
            "certutil {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    certutil(&["-N", "-d", &db, "--empty-password"]);
    certutil(&[
        "-A",
        "-d",
        &db,
        "-n",
        "aerobridge test CA",
        "-t",
        "C,,",
        "-i",
        ca_pem.to_str().unwrap(),
    ]);
    let server = Server::start(&[
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        key.to_str().unwrap(),
    ]);
    let out = Command::new("node")
        .arg(root.join("tests/e2e/firefox_tls.mjs"))
        .arg(format!("https://localhost:{}/", server.ws().port()))
        .arg(&profile)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "firefox: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("firefox ok"), "{stdout}");
}
