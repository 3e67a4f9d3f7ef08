//! Counters. Each worker owns its [`WorkerStats`] and is the only writer, so a counter update is
//! a plain load and store (no locked instruction); readers (the stats log) see consistent-enough
//! snapshots with relaxed loads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use strum::{EnumCount as _, IntoEnumIterator as _};

/// A counter written by one thread only.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Must only be called from the owning thread.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
    }

    /// Sets a gauge. Owning thread only.
    #[inline]
    pub fn set(&self, v: u64) {
        self.0.store(v, Relaxed);
    }

    /// Subtracts `n` (gauges). Owning thread only.
    #[inline]
    pub fn sub(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_sub(n), Relaxed);
    }

    /// The current value.
    #[inline]
    pub fn get(&self) -> u64 {
        self.0.load(Relaxed)
    }
}

/// Why a connection ended. The snake_case name is the metric label and the log word.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter, strum::EnumCount,
)]
#[strum(serialize_all = "snake_case")]
pub enum Disconnect {
    /// The peer closed (EOF, or a WebSocket Close).
    PeerClosed,
    /// Fell more than `--max-lag` behind.
    SlowConsumer,
    /// Broke the WebSocket protocol (or sent binary).
    ProtocolError,
    /// Reset, broken pipe, or another socket error.
    IoError,
    /// The server is shutting down.
    Shutdown,
    /// A WebSocket peer did not answer a ping.
    IdleTimeout,
    /// The upgrade request was refused or did not finish in time.
    HandshakeFailed,
    /// `--max-clients` reached: refused politely.
    ServerFull,
    /// Sent pings or commands without reading the answers.
    ControlOverflow,
    /// Kept sending commands far past `--command-rate-limit`.
    CommandFlood,
    /// A plain HTTP request (dashboard, `/metrics`, `/healthz`) was answered.
    HttpRequest,
}

impl Disconnect {
    /// The stable snake_case name (logs, metrics).
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// One worker's counters.
#[derive(Default, Debug)]
pub struct WorkerStats {
    /// Telemetry clients connected over TCP.
    pub tcp_clients: Counter,
    /// Telemetry clients connected over WebSocket.
    pub ws_clients: Counter,
    /// Command-port connections.
    pub command_clients: Counter,
    /// Telemetry clients (of either transport) speaking protocol v2.
    pub v2_clients: Counter,
    /// Ticks received from the hub.
    pub ticks: Counter,
    /// Telemetry frames written completely to a client.
    pub frames_sent: Counter,
    /// Telemetry frames skipped (latest wins) or dropped at close.
    pub frames_skipped: Counter,
    /// Bytes written (frames and control).
    pub bytes_sent: Counter,
    /// Commands applied.
    pub commands_ok: Counter,
    /// Commands rejected.
    pub commands_rejected: Counter,
    /// Disconnects, indexed by [`Disconnect`].
    pub disconnects: [Counter; Disconnect::COUNT],
    /// Rejected commands, indexed by [`crate::command::Reason`].
    pub rejected_by_reason: [Counter; crate::command::Reason::COUNT],
    /// Times a writer found its socket full and waited for room (a writability poll).
    pub send_waits: Counter,
    /// Sends refused although poll said writable: kernel TCP memory pressure (the writer backs
    /// off on a timer).
    pub send_pressure: Counter,
    /// Telemetry frames waiting in this worker's queues after the last tick.
    pub queued_frames: Counter,
    /// permessage-deflate clients: telemetry bytes before compression.
    pub deflate_raw_bytes: Counter,
    /// permessage-deflate clients: telemetry bytes as sent.
    pub deflate_wire_bytes: Counter,
    /// permessage-deflate clients: messages sent per form (standalone, dictionary, raw).
    pub deflate_variants: [Counter; 3],
    /// Time from a tick's build to the last write of that tick on this worker.
    pub tick_to_last_write: Histogram,
}

/// A fixed-bucket histogram (seconds) written by one thread, read by the metrics endpoint.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [Counter; BUCKETS.len()],
    count: Counter,
    sum_ns: Counter,
}

/// Upper bounds of the histogram buckets, seconds (a `+Inf` bucket is implied).
pub const BUCKETS: [f64; 14] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 1.0,
];

impl Histogram {
    /// Records one observation. Owning thread only.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.buckets[i].add(1);
        }
        self.count.add(1);
        self.sum_ns.add(d.as_nanos() as u64);
    }

    /// (cumulative count per bucket, count, sum in seconds).
    pub fn snapshot(&self) -> (Vec<u64>, u64, f64) {
        let mut acc = 0;
        let cumulative = self.buckets.iter().map(|b| {
            acc += b.get();
            acc
        });
        (
            cumulative.collect(),
            self.count.get(),
            self.sum_ns.get() as f64 / 1e9,
        )
    }
}

impl WorkerStats {
    /// Counts a disconnect.
    pub fn disconnect(&self, reason: Disconnect) {
        self.disconnects[reason as usize].add(1);
    }
}

/// Totals over all workers.
#[derive(Default, Debug, Clone, PartialEq, Eq)]
pub struct Totals {
    /// Connected telemetry clients (TCP + WebSocket).
    pub clients: u64,
    /// Connected command clients.
    pub command_clients: u64,
    /// Frames written.
    pub frames_sent: u64,
    /// Frames skipped.
    pub frames_skipped: u64,
    /// Bytes written.
    pub bytes_sent: u64,
    /// Commands applied / rejected.
    pub commands_ok: u64,
    /// Commands rejected.
    pub commands_rejected: u64,
    /// Disconnects by reason, indexed by [`Disconnect`].
    pub disconnects: [u64; Disconnect::COUNT],
}

impl Totals {
    /// Sums the workers' counters.
    pub fn sum<'a>(workers: impl IntoIterator<Item = &'a WorkerStats>) -> Self {
        let mut t = Totals::default();
        for w in workers {
            t.clients += w.tcp_clients.get() + w.ws_clients.get();
            t.command_clients += w.command_clients.get();
            t.frames_sent += w.frames_sent.get();
            t.frames_skipped += w.frames_skipped.get();
            t.bytes_sent += w.bytes_sent.get();
            t.commands_ok += w.commands_ok.get();
            t.commands_rejected += w.commands_rejected.get();
            for (sum, c) in t.disconnects.iter_mut().zip(&w.disconnects) {
                *sum += c.get();
            }
        }
        t
    }

    /// `reason=count` pairs for the non-zero disconnect counters.
    pub fn disconnect_summary(&self) -> String {
        let parts: Vec<String> = Disconnect::iter()
            .zip(self.disconnects)
            .filter(|(_, n)| *n > 0)
            .map(|(r, n)| format!("{}={n}", r.as_str()))
            .collect();
        if parts.is_empty() {
            "none".into()
        } else {
            parts.join(",")
        }
    }
}

/// What a NATS origin (`--nats-publish`) counts.
#[derive(Debug, Default)]
pub struct NatsStats {
    /// 1 while connected.
    pub connected: std::sync::atomic::AtomicU64,
    /// Frames published.
    pub published: std::sync::atomic::AtomicU64,
    /// Frames the client refused (disconnected, or its buffer full).
    pub dropped: std::sync::atomic::AtomicU64,
    /// Command requests answered.
    pub requests: std::sync::atomic::AtomicU64,
}
