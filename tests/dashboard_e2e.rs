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
use std::path::{Path, PathBuf};
use std::process::Command;

/// The repository root, after checking that `binary` and the node package `package` are there.
fn needs(binary: &str, package: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        Path::new(binary).exists(),
        "{binary} missing (see README: Set up)"
    );
    assert!(
        root.join("tests/e2e/node_modules").join(package).exists(),
        "{package} missing: npm install --prefix tests/e2e --no-save {package}"
    );
    root
}

/// Runs `node tests/e2e/SCRIPT ARGS…` with `env`; its stdout, which must report `ok`.
fn run_node(
    root: &Path,
    script: &str,
    args: &[&std::ffi::OsStr],
    env: &[(&str, &std::ffi::OsStr)],
    ok: &str,
) -> String {
    let out = Command::new("node")
        .arg(root.join("tests/e2e").join(script))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?}: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(ok), "{stdout}");
    stdout
}

#[test]
#[ignore = "needs Debian's chromium and playwright-core; run with `cargo test --test dashboard_e2e -- --ignored`"]
fn dashboard_updates_and_sends_commands_in_headless_chromium() {
    let root = needs("/usr/bin/chromium", "playwright-core");
    for compression in ["shared", "off"] {
        // A short idle rule: the page must keep its v2 session alive by itself (heartbeats).
        let server = Server::start(&["--v2-idle-timeout", "3s", "--ws-compression", compression]);
        let shot = root.join(format!("target/dashboard-{compression}.png"));
        let url = format!("http://{}/", server.ws());
        run_node(
            &root,
            "dashboard.mjs",
            &[url.as_ref(), shot.as_ref()],
            &[("COMPRESSION", compression.as_ref())],
            "dashboard ok",
        );
        assert!(
            std::fs::metadata(&shot).unwrap().len() > 10_000,
            "screenshot saved"
        );
    }
}

#[test]
#[ignore = "needs Debian's chromium and playwright-core; run with `cargo test --test dashboard_e2e -- --ignored`"]
fn dashboard_over_https_reads_telemetry_over_wss_in_headless_chromium() {
    let root = needs("/usr/bin/chromium", "playwright-core");
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
    let url = format!("https://localhost:{}/", server.ws().port());
    run_node(
        &root,
        "dashboard.mjs",
        &[url.as_ref(), shot.as_ref()],
        &[
            ("COMPRESSION", "shared".as_ref()),
            ("CERT", leaf_pem.as_ref()),
        ],
        "dashboard ok",
    );
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
    let root = needs("/usr/bin/firefox-esr", "puppeteer-core");
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
    let url = format!("https://localhost:{}/", server.ws().port());
    run_node(
        &root,
        "firefox_tls.mjs",
        &[url.as_ref(), profile.as_ref()],
        &[],
        "firefox ok",
    );
}

#[test]
#[ignore = "needs Debian's chromium and playwright-core; run with `cargo test --test dashboard_e2e -- --ignored`"]
fn the_altimeter_example_page_runs_on_the_js_client_in_headless_chromium() {
    let root = needs("/usr/bin/chromium", "playwright-core");
    let server = Server::start(&[]);
    let bridge = format!("ws://{}/", server.ws.unwrap());
    let shot = root.join("target/altimeter.png");
    run_node(
        &root,
        "altimeter.mjs",
        &[bridge.as_ref(), shot.as_os_str()],
        &[],
        "altimeter ok",
    );
}
