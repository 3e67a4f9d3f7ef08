//! What every part of the load generator shares: where to connect, how clients behave, the run's
//! shared state, and the counters they fill. It imports no other module of loadtest, so the
//! clients, the v2 clients, the scenarios and the reports all build on it without an import
//! circle (`scripts/check_module_cycles.py loadtest/src`, in CI).

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::time::{Duration, Instant};

/// How a client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Ws,
}

/// How a client behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Healthy,
    /// Reads at a throttled byte rate.
    Slow,
    /// Connects and never reads.
    Stalled,
}

/// One client to run.
#[derive(Clone, Copy, Debug)]
pub struct ClientSpec {
    pub index: usize,
    pub transport: Transport,
    pub role: Role,
    /// When to connect, from the run's start.
    pub connect_at: Duration,
}

/// Where to connect, and how (TLS: the client configuration).
#[derive(Clone, Debug)]
pub struct Targets {
    pub tcp: SocketAddr,
    pub ws: SocketAddr,
    pub command: Option<SocketAddr>,
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// State every thread sees.
pub struct Shared {
    pub t0: Instant,
    pub targets: Targets,
    pub measuring: AtomicBool,
    pub done: AtomicBool,
    pub connected: AtomicUsize,
    pub attempted: AtomicUsize,
    /// Validate one frame in `validate_every` per client (0: never).
    pub validate_every: u64,
    pub slow_rate: u64,
    /// SO_RCVBUF of slow and stalled clients.
    pub laggard_rcvbuf: usize,
    /// WebSocket clients negotiate permessage-deflate and inflate every message.
    pub deflate: bool,
    /// Messages that failed to inflate (measuring or not).
    pub inflate_errors: AtomicU64,
    pub command_rate: f64,
    /// `--churn`: connections per second opened and closed during the window.
    pub churn_rate: f64,
    pub bytes: AtomicU64,
    /// `--tls`: every connection speaks TLS with this client configuration.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// Summary of one histogram, in microseconds.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Percentiles {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
    /// (percentile, value) pairs for plotting the distribution.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<(f64, f64)>,
}

impl Percentiles {
    /// Summarises `h`; with `curve`, also keeps points for a percentile plot.
    pub fn of(h: &Histogram<u64>, curve: bool) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let q = |p: f64| h.value_at_quantile(p) as f64;
        let curve = if curve {
            // 1/(1-q) spaced: 0, 50, 75, 87.5 … up to 99.999.
            let mut pts = Vec::new();
            let mut k = 0.0f64;
            while k <= 16.6 {
                let p = 1.0 - 0.5f64.powf(k);
                pts.push((p * 100.0, q(p)));
                k += 0.25;
            }
            pts.push((100.0, h.max() as f64));
            pts
        } else {
            Vec::new()
        };
        Self {
            count: h.len(),
            mean: h.mean(),
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: h.max() as f64,
            curve,
        }
    }
}

/// Counters for one group of clients (healthy, slow, stalled).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Group {
    pub clients: u64,
    /// Clients that completed their connection (and upgrade).
    pub connected: u64,
    /// Frames received in the window.
    pub frames: u64,
    /// Places where `update_counter` jumped by more than one.
    pub gaps: u64,
    /// Frames missing in those jumps.
    pub missing_frames: u64,
    /// Counters seen twice or going backwards.
    pub duplicates: u64,
    /// Frames that were not whole, valid JSON (or lacked the counter).
    pub torn: u64,
    /// How connections ended before the run did: `eof`, `reset`, `close_4000`, …
    pub disconnects: BTreeMap<String, u64>,
    /// Clients still connected at the end.
    pub still_connected: u64,
}

/// `--churn`: new connections per second beside the streaming clients (the handshake cost).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Churn {
    /// Connections opened during the window (each does its handshake, then closes).
    pub attempted: u64,
    /// Connected, handshake (TLS) and upgrade done.
    pub ok: u64,
    pub failed: u64,
    /// Connect → upgraded (TLS handshake included).
    pub connect_us: Percentiles,
}

/// `--flood`: connections to the data port opened during the window that never read, held to
/// its end (fair admission: what taking them on costs the streaming clients).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Flood {
    /// Connections asked for.
    pub planned: u64,
    /// Connected (the kernel's handshake done).
    pub opened: u64,
    pub failed: u64,
    /// First connect to last.
    pub connect_s: f64,
    /// `opened / connect_s`.
    pub connect_rate: f64,
    /// First connect until the server counted every one of them as a client (its /metrics);
    /// `None` when it never did within 10 s, or could not be asked.
    pub admitted_s: Option<f64>,
    /// `opened / admitted_s`: connections the server took on per second.
    pub admitted_rate: Option<f64>,
    /// When healthy clients lost frames, in seconds since the flood's first connect (the first
    /// few of them): during the ramp, or after it.
    #[serde(default)]
    pub healthy_gaps_at_s: Vec<f64>,
    /// The server's own counters over the flood (its /metrics), when it has them.
    #[serde(default)]
    pub server: Option<FloodServer>,
    /// The flood's first connect, ns since the run's clock started (to place the gaps).
    #[serde(skip)]
    pub started_ns: u64,
}

/// What the server counted while the flood ran (differences of its /metrics counters).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct FloodServer {
    /// Frames skipped for slow clients: the flood's own never-reading ones, and healthy ones.
    pub frames_skipped: f64,
    /// New connections that waited for a later tick (fair admission at work).
    pub admissions_deferred: f64,
    /// Sends refused for kernel TCP memory pressure.
    pub send_memory_pressure: f64,
    /// Tick slots the server missed because a tick ran late.
    pub ticks_missed: f64,
    /// Ticks that reached a worker more than 100 ms (5 periods at 50 Hz) after their build,
    /// counted once per worker.
    #[serde(default)]
    pub ticks_dispatched_late: f64,
}

/// The value of sample `name` (with its labels, if any) in a /metrics text.
pub fn metric(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

impl FloodServer {
    /// The counters from a /metrics text (0 for one it lacks).
    pub fn parse(metrics: &str) -> Self {
        let get = |name: &str| metric(metrics, name).unwrap_or(0.0);
        Self {
            frames_skipped: get("aerobridge_frames_skipped_total"),
            admissions_deferred: get("aerobridge_admissions_deferred_total"),
            send_memory_pressure: get("aerobridge_send_memory_pressure_total"),
            ticks_missed: get("aerobridge_ticks_missed_total"),
            ticks_dispatched_late: get("aerobridge_tick_dispatch_delay_seconds_count")
                - get("aerobridge_tick_dispatch_delay_seconds_bucket{le=\"0.1\"}"),
        }
    }

    /// `self - before`, counter by counter.
    pub fn since(&self, before: &Self) -> Self {
        Self {
            frames_skipped: self.frames_skipped - before.frames_skipped,
            admissions_deferred: self.admissions_deferred - before.admissions_deferred,
            send_memory_pressure: self.send_memory_pressure - before.send_memory_pressure,
            ticks_missed: self.ticks_missed - before.ticks_missed,
            ticks_dispatched_late: self.ticks_dispatched_late - before.ticks_dispatched_late,
        }
    }
}

/// Command round trips.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Commands {
    pub sent: u64,
    pub replies: u64,
    pub errors: u64,
    /// What went wrong first, in words (no command port, a refused connection, no reply).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Send → reply line.
    pub reply_us: Percentiles,
    /// Send → first frame showing the value.
    pub visible_us: Percentiles,
}

/// What a v2 client subscribes to.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Profile {
    /// Names or `Prefix.*` patterns; empty: every variable.
    pub vars: Vec<String>,
    /// Wanted rate (None: the broadcast rate).
    pub hz: Option<f64>,
    /// `full` or `delta`.
    pub mode: String,
}

/// v2 figures of one thread (merged by addition).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct V2Stats {
    pub clients: u64,
    pub connected: u64,
    /// Data messages (keyframes + deltas) received in the window.
    pub messages: u64,
    pub keyframes: u64,
    pub deltas: u64,
    /// Rebuilt states compared with the v1 frame of the same update_counter.
    pub verified: u64,
    /// Rebuilt states that differed from it (any value).
    pub mismatches: u64,
    /// States whose v1 frame the reference no longer (or never) had.
    pub unverifiable: u64,
    /// Deltas whose base keyframe the client never received.
    pub broken_chain: u64,
    /// Places where seq jumped by more than the subscription's `every`.
    pub gaps: u64,
    /// Messages on frames where `update_counter % every != 0`.
    pub off_grid: u64,
    /// Bytes received in the window.
    pub bytes: u64,
    /// Distinct profile ids acked.
    #[serde(default)]
    pub profiles: Vec<u64>,
    pub disconnects: std::collections::BTreeMap<String, u64>,
}

impl V2Stats {
    /// Adds `other` into `self`.
    pub fn add(&mut self, o: &V2Stats) {
        self.clients += o.clients;
        self.connected += o.connected;
        self.messages += o.messages;
        self.keyframes += o.keyframes;
        self.deltas += o.deltas;
        self.verified += o.verified;
        self.mismatches += o.mismatches;
        self.unverifiable += o.unverifiable;
        self.broken_chain += o.broken_chain;
        self.gaps += o.gaps;
        self.off_grid += o.off_grid;
        self.bytes += o.bytes;
        for p in &o.profiles {
            if !self.profiles.contains(p) {
                self.profiles.push(*p);
            }
        }
        for (k, v) in &o.disconnects {
            *self.disconnects.entry(k.clone()).or_default() += v;
        }
    }
}
