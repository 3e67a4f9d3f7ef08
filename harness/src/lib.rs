//! One harness for everything that runs a real server process: the integration tests
//! (`tests/common`), the load generator (`loadtest --spawn-server`, its floor) and scripts.
//!
//! [`Process`] starts a child with its output captured line by line, waits until the child
//! announces what it listens on, and stops it with SIGTERM (reporting a bad exit with the last
//! lines it logged). [`spawn_aerobridge`] adds what is specific to aerobridge: a clean environment
//! and the `listening on ADDR (KIND)` lines, parsed by the server's own
//! [`aerobridge::server::parse_listening_line`].

pub mod procfs;

use aerobridge::net::ListenerKind;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a child may take to announce its ports.
pub const START_TIMEOUT: Duration = Duration::from_secs(20);

/// A running child process whose stdout and stderr are captured; killed on drop.
pub struct Process {
    child: Child,
    what: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Process {
    /// Starts `cmd` and feeds each output line to `ready` until it returns true (or the child
    /// stays silent for [`START_TIMEOUT`], which is an error that quotes its output).
    pub fn spawn(
        mut cmd: Command,
        what: &str,
        mut ready: impl FnMut(&str) -> bool,
    ) -> Result<Process, String> {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {what}: {e}"))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for stream in [
            Box::new(child.stdout.take().expect("piped")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("piped")),
        ] {
            let (tx, log) = (tx.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    let _ = tx.send(line.clone());
                    log.lock().unwrap().push(line);
                }
            });
        }
        let mut process = Process {
            child,
            what: what.to_string(),
            log,
        };
        process.wait_ready(&rx, &mut ready)?;
        Ok(process)
    }

    fn wait_ready(
        &mut self,
        lines: &Receiver<String>,
        ready: &mut impl FnMut(&str) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) if ready(&line) => return Ok(()),
                Ok(_) => {}
                Err(_) => {
                    let _ = self.child.kill();
                    return Err(format!(
                        "{} did not start listening within {} s; its output:\n{}",
                        self.what,
                        START_TIMEOUT.as_secs(),
                        self.tail(40)
                    ));
                }
            }
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything it printed so far, one entry per line.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    /// Its last `n` lines, joined.
    pub fn tail(&self, n: usize) -> String {
        let log = self.log.lock().unwrap();
        log[log.len().saturating_sub(n)..].join("\n")
    }

    /// Waits until a line containing `needle` was printed.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.log().into_iter().find(|l| l.contains(needle)) {
                return Ok(line);
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "{} printed no line with {needle:?} within {timeout:?}; its output:\n{}",
                    self.what,
                    self.tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether it has exited, and how.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits up to `timeout` for the exit (then kills it: an error). Returns
    /// the exit status and how long the exit took.
    pub fn terminate(&mut self, timeout: Duration) -> Result<(ExitStatus, Duration), String> {
        if let Some(status) = self.try_wait() {
            return Err(format!(
                "{} exited early with {status}; its last lines:\n{}",
                self.what,
                self.tail(40)
            ));
        }
        let start = Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        loop {
            if let Some(status) = self.try_wait() {
                return Ok((status, start.elapsed()));
            }
            if start.elapsed() > timeout {
                let _ = self.child.kill();
                return Err(format!(
                    "{} did not exit within {timeout:?} of SIGTERM; its last lines:\n{}",
                    self.what,
                    self.tail(40)
                ));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// [`terminate`](Self::terminate), and an error unless it exited 0.
    pub fn stop(&mut self) -> Result<(), String> {
        let (status, _) = self.terminate(Duration::from_secs(5))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} exited with {status}; its last lines:\n{}",
                self.what,
                self.tail(40)
            ))
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.try_wait().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Every listener on a free port (the harness learns each port from its listening line).
pub const FREE_PORTS: [&str; 6] = ["--data-port", "0", "--command-port", "0", "--ws-port", "0"];

/// The arguments every harnessed aerobridge starts with: [`FREE_PORTS`], and logs at `info`
/// (where the listening lines are); the caller's own follow them.
pub fn aerobridge_args<'a>(extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = FREE_PORTS.to_vec();
    args.extend_from_slice(&["--log", "info"]);
    args.extend_from_slice(extra);
    args
}

/// What an aerobridge listens on (each `None` when that listener does not run).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    /// TCP telemetry.
    pub data: Option<SocketAddr>,
    /// TCP commands.
    pub command: Option<SocketAddr>,
    /// WebSocket.
    pub ws: Option<SocketAddr>,
}

impl Ports {
    fn slot(&mut self, kind: ListenerKind) -> &mut Option<SocketAddr> {
        match kind {
            ListenerKind::Data => &mut self.data,
            ListenerKind::Command => &mut self.command,
            ListenerKind::WebSocket => &mut self.ws,
        }
    }
}

/// Starts `bin` with exactly `args` and `env` (every `AEROBRIDGE_*`, `AEROFLY_BRIDGE_*` and
/// `RUST_LOG` of the caller's environment removed) and waits until each listener in `expect`
/// has logged its address.
pub fn spawn_aerobridge(
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    expect: &[ListenerKind],
) -> Result<(Process, Ports), String> {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    for (k, _) in std::env::vars() {
        if k.starts_with("AEROFLY_BRIDGE_") || k.starts_with("AEROBRIDGE_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.envs(env.iter().copied());
    let found = Arc::new(Mutex::new(Ports::default()));
    let process = Process::spawn(cmd, "aerobridge", {
        let found = Arc::clone(&found);
        move |line| {
            let mut ports = found.lock().unwrap();
            if let Some((kind, addr)) = aerobridge::server::parse_listening_line(line) {
                *ports.slot(kind) = Some(addr);
            }
            expect.iter().all(|&k| ports.slot(k).is_some())
        }
    })?;
    let ports = *found.lock().unwrap();
    Ok((process, ports))
}
