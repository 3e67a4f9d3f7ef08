//! The dashboard in a real browser: headless Chromium (Debian's `chromium`) driven by
//! playwright-core loads `GET /`, sees values update, clicks "Gear down", sees the reply and the
//! gear come down, and saves a screenshot to `target/dashboard.png`.
//!
//! Needs `/usr/bin/chromium` and `tests/e2e/node_modules/playwright-core` (CI installs both).
//! Without them the test says so and passes, unless `AEROBRIDGE_E2E=required` (set by CI).

mod common;

use common::*;
use std::path::Path;
use std::process::Command;

#[test]
fn dashboard_updates_and_sends_commands_in_headless_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let ready = Path::new("/usr/bin/chromium").exists()
        && root.join("tests/e2e/node_modules/playwright-core").exists();
    if !ready {
        assert_ne!(
            std::env::var("AEROBRIDGE_E2E").as_deref(),
            Ok("required"),
            "Chromium or playwright-core missing"
        );
        eprintln!("SKIPPED: install Debian's chromium and `npm install --no-save playwright-core` in tests/e2e");
        return;
    }
    let server = Server::start(&[]);
    let shot = root.join("target/dashboard.png");
    let out = Command::new("node")
        .arg(root.join("tests/e2e/dashboard.mjs"))
        .arg(format!("http://{}/", server.ws()))
        .arg(&shot)
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("dashboard ok"), "{stdout}");
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot saved"
    );
}
