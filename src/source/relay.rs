//! `--source relay:tcp://HOST:PORT`: subscribes to a running bridge (upstream's DLL or another
//! aerobridge) and re-broadcasts its state, stamped with our own timestamp and counter. A reader
//! thread reconnects with capped backoff; while upstream is down, clients stay connected and
//! `data_valid` is 0. Accepted commands are forwarded to the upstream command port the way
//! upstream clients send them (connect, one line, close).

use super::{Applying, Source};
use crate::command::{Command, CommandError};
use crate::nats::{Dropped, FeedCounters, NatsStats};
use crate::telemetry::decode::FrameDecoder;
use crate::telemetry::Variables;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Frames older than this make the data stale.
const STALE_AFTER: Duration = Duration::from_secs(1);
const MAX_LINE: u64 = 4 << 20;

#[derive(Default)]
pub(crate) struct Latest {
    pub(crate) vars: Option<Variables>,
    /// The upstream frame's own `timestamp`.
    pub(crate) timestamp_us: Option<u64>,
    pub(crate) version: u64,
    pub(crate) received: Option<Instant>,
    pub(crate) connected: bool,
    pub(crate) bad_lines: u64,
    /// A feed's frames not yet built, oldest first, at most [`FEED_BACKLOG`].
    pub(crate) backlog: std::collections::VecDeque<FeedFrame>,
    /// A feed's broadcast period, as estimated from its frames.
    pub(crate) period: Option<Duration>,
}

/// Feed frames an edge keeps to build in order when several arrive at once (a hiccup of the
/// machine or the network: 80 ms at 50 Hz). Beyond that, latest wins: the oldest are dropped.
pub(crate) const FEED_BACKLOG: usize = 4;

/// One decoded frame of a NATS feed.
pub(crate) struct FeedFrame {
    pub(crate) vars: Variables,
    /// The origin's `timestamp`.
    pub(crate) timestamp_us: Option<u64>,
    /// The origin's `update_counter`.
    pub(crate) counter: u64,
    /// The origin generation: it changes when the edge follows another origin.
    pub(crate) epoch: u64,
    /// The origin's `data_valid` (an origin whose own source is stale says so).
    pub(crate) data_valid: bool,
}

/// The relay source.
pub struct Relay {
    upstream: String,
    latest: Arc<Mutex<Latest>>,
    version: u64,
    vars: Variables,
    timestamp_us: Option<u64>,
    /// A NATS feed: its counters (and the feed rules below) apply.
    feed: Option<Arc<NatsStats>>,
    /// The counter of the frame being built, when it is a new feed frame: the origin's
    /// `update_counter` plus `offset` (a stale re-broadcast counts on from it, so counters never
    /// repeat).
    counter: Option<u64>,
    /// A feed's counters, mirroring the hub's.
    numbers: FeedCounters,
    /// The feed's `data_valid` for the frame being built.
    feed_valid: bool,
    /// A feed: the frame being built is the origin's (not a stale re-broadcast).
    fresh: bool,
    commands: flume::Sender<(String, flume::Sender<Result<(), CommandError>>)>,
    updates: flume::Receiver<()>,
}

/// `tcp://HOST:PORT` → `HOST:PORT`.
pub fn parse_tcp_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("tcp://")
        .ok_or_else(|| anyhow::anyhow!("expected tcp://HOST:PORT, got {url:?}"))?;
    anyhow::ensure!(
        rest.rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok()),
        "expected tcp://HOST:PORT, got {url:?}"
    );
    Ok(rest.to_string())
}

impl Relay {
    /// Starts the reader and command forwarder threads. `upstream` and `commands` are `HOST:PORT`.
    pub fn start(upstream: String, commands: String) -> anyhow::Result<Relay> {
        Self::start_with(
            "relay",
            format!("relay of tcp://{upstream}"),
            None,
            move |latest, updated| read_upstream(&upstream, &latest, &updated),
            move |line| {
                let result = forward(&commands, line);
                if let Err(e) = &result {
                    aerobridge_proto::limited!(crate::log_limit::COMMAND_REJECTED, std::time::Instant::now(), warn, error = %e, "could not deliver a command upstream");
                }
                result
            },
        )
    }

    /// A relay whose frames come from `reader` (run on its own thread, it fills the shared
    /// latest state and wakes the tick) and whose commands go through `forward` (one line, on a
    /// thread of its own). `kind` names the threads (`aerobridge-KIND`, `aerobridge-KIND-commands`),
    /// `describe` the relay in the startup log. With `feed` (a NATS feed's
    /// counters), the feed rules apply: the origin's `update_counter` and `data_valid` pass
    /// through, and the origin's own period decides when a frame is missing.
    pub(crate) fn start_with(
        kind: &str,
        describe: String,
        feed: Option<Arc<NatsStats>>,
        reader: impl FnOnce(Arc<Mutex<Latest>>, flume::Sender<()>) + Send + 'static,
        forward: impl Fn(&str) -> Result<(), CommandError> + Send + 'static,
    ) -> anyhow::Result<Relay> {
        let latest = Arc::new(Mutex::new(Latest::default()));
        let (updated, updates) = flume::bounded(1);
        {
            let latest = Arc::clone(&latest);
            std::thread::Builder::new()
                .name(format!("aerobridge-{kind}"))
                .spawn(move || reader(latest, updated))?;
        }
        let (tx, rx) = flume::bounded::<(String, flume::Sender<Result<(), CommandError>>)>(256);
        std::thread::Builder::new()
            .name(format!("aerobridge-{kind}-commands"))
            .spawn(move || {
                for (line, answer) in rx.iter() {
                    let _ = answer.send(forward(&line));
                }
            })?;
        Ok(Relay {
            upstream: describe,
            latest,
            version: 0,
            vars: Variables::new(),
            timestamp_us: None,
            feed,
            counter: None,
            numbers: FeedCounters::default(),
            feed_valid: true,
            fresh: false,
            commands: tx,
            updates,
        })
    }

    /// Places a feed frame (see [`FeedCounters::place`]), saying so when a restarted origin's
    /// counters are shifted.
    fn place(&mut self, epoch: u64, upstream: u64) -> Option<u64> {
        let offset = self.numbers.offset();
        let placed = self.numbers.place(epoch, upstream);
        if self.numbers.offset() != offset && self.numbers.offset() > 0 {
            tracing::info!(
                offset = self.numbers.offset(),
                "the feed's counter began again below ours: ours continue, {} above the origin's",
                self.numbers.offset()
            );
        }
        placed
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
        self.upstream.clone()
    }

    fn advance(&mut self, _now: SystemTime, _dt: Duration) -> bool {
        let latest = Arc::clone(&self.latest);
        let mut l = latest.lock().unwrap();
        self.counter = None;
        if let Some(stats) = self.feed.clone() {
            // The oldest frame not yet built that still has a place (see wait_for_update). A
            // frame built in a silence (two of the origin's periods without one) is stale.
            let mut fresh = false;
            while let Some(frame) = l.backlog.pop_front() {
                let Some(counter) = self.place(frame.epoch, frame.counter) else {
                    stats.drop_frame(Dropped::Late);
                    continue;
                };
                self.vars = frame.vars;
                self.timestamp_us = frame.timestamp_us;
                self.feed_valid = frame.data_valid;
                self.counter = Some(counter);
                fresh = true;
                break;
            }
            self.numbers.emit(self.counter);
            self.fresh = fresh;
            return fresh && self.feed_valid;
        }
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
        let Some(stats) = self.feed.clone() else {
            return self.updates.recv_timeout(timeout).is_ok();
        };
        // A feed is re-broadcast stale after two of the origin's periods without a frame.
        let period = self.latest.lock().unwrap().period;
        let deadline = Instant::now() + period.map_or(timeout, |p| p * 2);
        loop {
            {
                let latest = Arc::clone(&self.latest);
                let mut l = latest.lock().unwrap();
                // A frame that arrives after a stale frame took its number is late: skipping it
                // keeps our counters the origin's (the next one is on time).
                while let Some(frame) = l.backlog.front() {
                    if self.place(frame.epoch, frame.counter).is_some() {
                        return true;
                    }
                    l.backlog.pop_front();
                    stats.drop_frame(Dropped::Late);
                }
            }
            if self.updates.recv_deadline(deadline).is_err() {
                return false;
            }
        }
    }

    /// Another aerobridge stamps wall-clock µs: pass it through, so latency is measured from the
    /// origin across a chain. Upstream's DLL uses a boot-relative timer: stamp our own instead.
    fn frame_timestamp_us(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_micros() as u64;
        if self.feed.is_some() && !self.fresh {
            return None; // a stale re-broadcast: stamped now, as ours
        }
        self.timestamp_us.filter(|t| t.abs_diff(now) < 60_000_000)
    }

    fn frame_counter(&self) -> Option<u64> {
        self.counter
    }

    fn nats_stats(&self) -> Option<Arc<NatsStats>> {
        self.feed.clone()
    }

    /// Relayed commands are answered by [`submit`](Source::submit) once upstream has them.
    fn apply(&mut self, command: &Command) -> Result<(), CommandError> {
        match self.submit(command) {
            Applying::Done(result) => result,
            Applying::Relayed(answer) => answer.recv().unwrap_or(Err(CommandError::Busy)),
        }
    }

    fn submit(&mut self, command: &Command) -> Applying {
        let mut line = Vec::new();
        line.extend_from_slice(b"{\"variable\":");
        crate::telemetry::encoder::write_json_string(&mut line, command.name.name);
        line.extend_from_slice(b",\"value\":");
        crate::telemetry::encoder::write_number(&mut line, command.value);
        line.extend_from_slice(b"}\n");
        let (answer, answered) = flume::bounded(1);
        match self
            .commands
            .try_send((String::from_utf8(line).expect("ASCII JSON"), answer))
        {
            Ok(()) => Applying::Relayed(answered),
            Err(_) => Applying::Done(Err(CommandError::Busy)),
        }
    }
}
