//! Child processes: a release aerobridge on free ports (`--spawn-server`) and the floor
//! broadcaster (`--calibrate`). Both are stopped with SIGTERM; a non-zero exit is reported.

use aerobridge::net::ListenerKind;
use aerobridge_harness::Process;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A running child with the addresses it listens on (the shared harness underneath).
pub struct Spawned {
    process: Process,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub command: Option<SocketAddr>,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGTERM, wait up to 5 s. Returns whether it exited 0, and its last log lines otherwise.
    pub fn stop(mut self) -> Result<(), String> {
        self.process.stop()
    }
}

/// The aerobridge binary: `--server-bin`, else the one beside this executable.
pub fn server_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let exe = std::env::current_exe()?;
    let candidate = exe.with_file_name(format!("aerobridge{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        candidate.exists(),
        "no aerobridge binary beside {} — build it with `cargo build --release --workspace`, or pass --server-bin",
        exe.display()
    );
    Ok(candidate)
}

/// Starts aerobridge on free loopback ports and waits until it listens.
pub fn spawn_server(
    bin: &Path,
    broadcast_ms: u64,
    max_clients: usize,
    extra: &[String],
) -> anyhow::Result<Spawned> {
    let (broadcast, max) = (broadcast_ms.to_string(), max_clients.to_string());
    let mut args = aerobridge_harness::aerobridge_args(&[
        "--bind",
        "127.0.0.1",
        "--broadcast-ms",
        &broadcast,
        "--max-clients",
        &max,
    ]);
    args.extend(extra.iter().map(String::as_str));
    let all = [
        ListenerKind::Data,
        ListenerKind::Command,
        ListenerKind::WebSocket,
    ];
    let (process, ports) =
        aerobridge_harness::spawn_aerobridge(bin, &args, &[], &all).map_err(anyhow::Error::msg)?;
    Ok(Spawned {
        process,
        tcp: ports.data.expect("expected"),
        ws: ports.ws.expect("expected"),
        command: ports.command,
    })
}

/// Starts the floor broadcaster (`loadtest floor`), which announces
/// `floor listening tcp=ADDR ws=ADDR`.
pub fn spawn_floor(
    broadcast_ms: u64,
    tls: Option<&crate::tls::TestPki>,
) -> anyhow::Result<Spawned> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["floor", "--broadcast-ms", &broadcast_ms.to_string()]);
    if let Some(pki) = tls {
        cmd.arg("--tls").arg(&pki.cert).arg(&pki.key);
    }
    let mut found: [Option<SocketAddr>; 2] = [None, None];
    let process = Process::spawn(cmd, "floor", |line| {
        let Some(rest) = line.strip_prefix("floor listening ") else {
            return false;
        };
        for part in rest.split_whitespace() {
            if let Some((k, v)) = part.split_once('=') {
                found[usize::from(k != "tcp")] = v.parse().ok();
            }
        }
        found.iter().all(Option::is_some)
    })
    .map_err(anyhow::Error::msg)?;
    Ok(Spawned {
        process,
        tcp: found[0].expect("announced"),
        ws: found[1].expect("announced"),
        command: None,
    })
}
