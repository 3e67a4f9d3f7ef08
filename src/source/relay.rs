//! `--source relay:tcp://HOST:PORT`: subscribes to a running bridge (upstream's DLL or another
//! aerobridge) and re-broadcasts its state, stamped with our own timestamp and counter. A reader
//! thread reconnects with capped backoff; while upstream is down, clients stay connected and
//! `data_valid` is 0. Accepted commands are forwarded to the upstream command port the way
//! upstream clients send them (connect, one line, close).

use super::upstream::Upstream;
use super::{Applying, Source};
use crate::command::{Command, CommandError};
use crate::telemetry::decode::FrameDecoder;
use crate::telemetry::Variables;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// Frames older than this make the data stale.
const STALE_AFTER: Duration = Duration::from_secs(1);
const MAX_LINE: u64 = 4 << 20;

/// What the reader leaves for the tick: upstream's latest state.
#[derive(Default)]
pub(crate) struct Latest {
    vars: Option<Variables>,
    /// The upstream frame's own `timestamp`.
    timestamp_us: Option<u64>,
    version: u64,
    received: Option<Instant>,
    connected: bool,
    bad_lines: u64,
}

/// The relay source.
pub struct Relay {
    describe: String,
    upstream: Upstream<Latest>,
    version: u64,
    vars: Variables,
    timestamp_us: Option<u64>,
}

/// `tcp://HOST:PORT` → `HOST:PORT`.
pub fn parse_tcp_url(url: &str) -> anyhow::Result<String> {
    let expected = || anyhow::anyhow!("expected tcp://HOST:PORT, got {url:?}");
    let parsed = url::Url::parse(url).map_err(|_| expected())?;
    match (parsed.scheme(), parsed.host_str(), parsed.port()) {
        ("tcp", Some(host), Some(port))
            if !host.is_empty() && matches!(parsed.path(), "" | "/") =>
        {
            Ok(format!("{host}:{port}"))
        }
        _ => Err(expected()),
    }
}

impl Relay {
    /// Starts the reader and command forwarder threads. `upstream` and `commands` are `HOST:PORT`.
    pub fn start(upstream: String, commands: String) -> anyhow::Result<Relay> {
        let describe = format!("relay of tcp://{upstream}");
        let upstream = Upstream::start(
            "relay",
            move |latest, updated| read_upstream(&upstream, &latest, &updated),
            move |line| {
                let result = forward(&commands, line);
                if let Err(e) = &result {
                    aerobridge_proto::limited!(crate::log_limit::COMMAND_REJECTED, std::time::Instant::now(), warn, error = %e, "could not deliver a command upstream");
                }
                result
            },
        )?;
        Ok(Relay {
            describe,
            upstream,
            version: 0,
            vars: Variables::new(),
            timestamp_us: None,
        })
    }
}

fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    addr.to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("cannot resolve {addr}")))
}

fn read_upstream(addr: &str, latest: &Mutex<Latest>, updated: &flume::Sender<()>) {
    let mut backoff = Duration::from_millis(250);
    let mut decoder = FrameDecoder::new();
    let mut vars = Variables::new();
    loop {
        let stream =
            resolve(addr).and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(2)));
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(upstream = addr, error = %e, retry_ms = backoff.as_millis() as u64, "upstream unreachable");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        tracing::info!(upstream = addr, "connected to upstream");
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        latest.lock().unwrap().connected = true;
        backoff = Duration::from_millis(250);
        let mut reader = BufReader::with_capacity(256 * 1024, stream);
        let mut line = Vec::with_capacity(32 * 1024);
        loop {
            line.clear();
            // Frames split across reads are joined here; a line longer than MAX_LINE is garbage.
            match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut line) {
                Ok(0) => break,
                Ok(_) if !line.ends_with(b"\n") && line.len() as u64 >= MAX_LINE => {
                    latest.lock().unwrap().bad_lines += 1;
                    break;
                }
                Ok(_) => match decoder.decode(&line, &mut vars) {
                    Ok(info) => {
                        let mut l = latest.lock().unwrap();
                        l.vars.get_or_insert_with(Variables::new).clone_from(&vars);
                        l.timestamp_us = info.timestamp_us;
                        l.version += 1;
                        l.received = Some(Instant::now());
                        drop(l);
                        let _ = updated.try_send(()); // wake the tick: re-broadcast now
                    }
                    Err(e) => {
                        let mut l = latest.lock().unwrap();
                        l.bad_lines += 1;
                        if l.bad_lines <= 5 {
                            tracing::warn!(upstream = addr, error = %e, "skipping a line from upstream that is not a frame");
                        }
                    }
                },
                Err(_) => break,
            }
        }
        latest.lock().unwrap().connected = false;
        tracing::warn!(upstream = addr, "upstream connection lost; reconnecting");
        std::thread::sleep(backoff);
    }
}

/// Delivers one command line to upstream's command port, the way upstream's clients do (one
/// connection per command), and reads upstream's reply, if it sends one. Refusals say which
/// upstream and why; upstream's own `{"ok":false,"error":…}` is passed on in its words.
fn forward(addr: &str, line: &str) -> Result<(), CommandError> {
    let unreachable = |e: std::io::Error| {
        CommandError::UpstreamUnavailable(format!("upstream {addr} unreachable ({})", plain(&e)))
    };
    let target = resolve(addr).map_err(unreachable)?;
    let mut s = TcpStream::connect_timeout(&target, Duration::from_secs(2)).map_err(unreachable)?;
    let io = |s: &mut TcpStream| -> std::io::Result<Vec<u8>> {
        s.set_write_timeout(Some(Duration::from_secs(2)))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.write_all(line.as_bytes())?;
        s.shutdown(std::net::Shutdown::Write)?;
        let mut reply = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match s.read(&mut chunk) {
                Ok(0) => return Ok(reply),
                Ok(n) if reply.len() < 64 * 1024 => reply.extend_from_slice(&chunk[..n]),
                Ok(_) => {}
                // Upstream's DLL may keep the connection open without answering: delivered.
                Err(e)
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    return Ok(reply)
                }
                Err(e) => return Err(e),
            }
        }
    };
    let reply = io(&mut s).map_err(unreachable)?;
    let mut first = reply
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default()
        .to_vec();
    use simd_json::prelude::*;
    match simd_json::to_owned_value(&mut first) {
        Ok(v) if v.get("ok").and_then(|ok| ok.as_bool()) == Some(false) => {
            let error = v
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("no reason given");
            Err(CommandError::UpstreamRefused(error.to_string()))
        }
        _ => Ok(()), // an ok reply, or none: upstream took it
    }
}

/// `connection refused`, not `Connection refused (os error 111)`.
fn plain(e: &std::io::Error) -> String {
    let text = e.to_string();
    text.split(" (os error")
        .next()
        .unwrap_or(&text)
        .to_lowercase()
}

impl Source for Relay {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn advance(&mut self, _now: SystemTime, _dt: Duration) -> bool {
        let l = self.upstream.mailbox.lock().unwrap();
        if l.version != self.version {
            self.version = l.version;
            if let Some(v) = &l.vars {
                self.vars.clone_from(v);
            }
            self.timestamp_us = l.timestamp_us;
        }
        l.connected && l.received.is_some_and(|t| t.elapsed() < STALE_AFTER)
    }

    fn variables(&self) -> &Variables {
        &self.vars
    }

    fn pacing(&self) -> super::Pacing {
        super::Pacing::Upstream
    }

    fn wait_for_update(&mut self, timeout: Duration) -> bool {
        self.upstream.wait(timeout)
    }

    /// Another aerobridge stamps wall-clock µs: pass it through, so latency is measured from the
    /// origin across a chain. Upstream's DLL uses a boot-relative timer: stamp our own instead.
    fn frame_timestamp_us(&self) -> Option<u64> {
        plausible_wall_clock(self.timestamp_us)
    }

    /// Relayed commands are answered by [`submit`](Source::submit) once upstream has them.
    fn apply(&mut self, command: &Command) -> Result<(), CommandError> {
        self.upstream.apply(command)
    }

    fn submit(&mut self, command: &Command) -> Applying {
        self.upstream.submit(command)
    }
}

/// `timestamp_us` when it is wall-clock µs (within a minute of ours), else `None`.
pub(crate) fn plausible_wall_clock(timestamp_us: Option<u64>) -> Option<u64> {
    let now = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_micros() as u64;
    timestamp_us.filter(|t| t.abs_diff(now) < 60_000_000)
}
