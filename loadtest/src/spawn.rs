//! Child processes: a release aerobridge on free ports (`--spawn-server`) and the floor
//! broadcaster (`--calibrate`). Both are stopped with SIGTERM; a non-zero exit is reported.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A running child with the addresses it listens on.
pub struct Spawned {
    child: Child,
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub command: Option<SocketAddr>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, wait up to 5 s. Returns whether it exited 0, and its last log lines otherwise.
    pub fn stop(mut self) -> Result<(), String> {
        if let Ok(Some(status)) = self.child.try_wait() {
            return Err(format!(
                "exited early with {status}; last log lines:\n{}",
                self.tail()
            ));
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let start = Instant::now();
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!(
                        "exited with {status}; last log lines:\n{}",
                        self.tail()
                    ))
                }
                _ if start.elapsed() > Duration::from_secs(5) => {
                    let _ = self.child.kill();
                    return Err("did not exit within 5 s of SIGTERM".into());
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }

    fn tail(&self) -> String {
        self.tail
            .lock()
            .unwrap()
            .iter()
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
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
    let mut cmd = Command::new(bin);
    cmd.args([
        "--bind",
        "127.0.0.1",
        "--data-port",
        "0",
        "--command-port",
        "0",
        "--ws-port",
        "0",
        "--log",
        "info",
    ])
    .args([
        "--broadcast-ms",
        &broadcast_ms.to_string(),
        "--max-clients",
        &max_clients.to_string(),
    ])
    .args(extra)
    .env_remove("AEROFLY_BRIDGE_WS_ENABLE");
    start(cmd, "aerobridge", |line, found| {
        use aerobridge::net::ListenerKind;
        let (kind, addr) = aerobridge::server::parse_listening_line(line)?;
        let slot = match kind {
            ListenerKind::Data => 0,
            ListenerKind::WebSocket => 1,
            ListenerKind::Command => 2,
        };
        found[slot] = Some(addr);
        Some(())
    })
}

/// Starts the floor broadcaster (`loadtest floor`).
pub fn spawn_floor(broadcast_ms: u64) -> anyhow::Result<Spawned> {
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args(["floor", "--broadcast-ms", &broadcast_ms.to_string()]);
    start(cmd, "floor", |line, found| {
        let rest = line.strip_prefix("floor listening ")?;
        for part in rest.split_whitespace() {
            let (k, v) = part.split_once('=')?;
            let slot = if k == "tcp" { 0 } else { 1 };
            found[slot] = Some(v.parse().ok()?);
        }
        found[2] = found[0].map(|_| "0.0.0.0:0".parse().unwrap());
        Some(())
    })
}

fn start(
    mut cmd: Command,
    what: &str,
    parse: impl Fn(&str, &mut [Option<SocketAddr>; 3]) -> Option<()>,
) -> anyhow::Result<Spawned> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    for stream in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let (tx, tail) = (tx.clone(), Arc::clone(&tail));
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                let _ = tx.send(line.clone());
                let mut t = tail.lock().unwrap();
                t.push_back(line);
                if t.len() > 40 {
                    t.pop_front();
                }
            }
        });
    }
    let mut found = [None; 3];
    let deadline = Instant::now() + Duration::from_secs(20);
    while found.iter().any(Option::is_none) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                let _ = parse(&line, &mut found);
            }
            Err(_) => {
                let _ = child.kill();
                let log: Vec<String> = tail.lock().unwrap().iter().cloned().collect();
                anyhow::bail!(
                    "{what} did not start listening within 20 s; its output:\n{}",
                    log.join("\n")
                );
            }
        }
    }
    let command = found[2].filter(|a| a.port() != 0);
    Ok(Spawned {
        child,
        tcp: found[0].unwrap(),
        ws: found[1].unwrap(),
        command,
        tail,
    })
}
