//! Counters. Each worker owns its [`WorkerStats`] and is the only writer, so a counter update is
//! a plain load and store (no locked instruction); readers (the stats log) see consistent-enough
//! snapshots with relaxed loads.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// A counter written by one thread only.
#[derive(Default, Debug)]
pub struct Counter(AtomicU64);

impl Counter {
    /// Adds `n`. Must only be called from the owning thread.
    #[inline]
    pub fn add(&self, n: u64) {
        self.0.store(self.0.load(Relaxed).wrapping_add(n), Relaxed);
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

/// Why a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
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
}

impl Disconnect {
    /// Every reason, in counter order.
    pub const ALL: [Disconnect; 10] = [
        Disconnect::PeerClosed,
        Disconnect::SlowConsumer,
        Disconnect::ProtocolError,
        Disconnect::IoError,
        Disconnect::Shutdown,
        Disconnect::IdleTimeout,
        Disconnect::HandshakeFailed,
        Disconnect::ServerFull,
        Disconnect::ControlOverflow,
        Disconnect::CommandFlood,
    ];

    /// A stable snake_case name (logs, metrics).
    pub fn as_str(self) -> &'static str {
        match self {
            Disconnect::PeerClosed => "peer_closed",
            Disconnect::SlowConsumer => "slow_consumer",
            Disconnect::ProtocolError => "protocol_error",
            Disconnect::IoError => "io_error",
            Disconnect::Shutdown => "shutdown",
            Disconnect::IdleTimeout => "idle_timeout",
            Disconnect::HandshakeFailed => "handshake_failed",
            Disconnect::ServerFull => "server_full",
            Disconnect::ControlOverflow => "control_overflow",
            Disconnect::CommandFlood => "command_flood",
        }
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
    /// Disconnects, indexed like [`Disconnect::ALL`].
    pub disconnects: [Counter; 10],
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
    /// Disconnects by reason, indexed like [`Disconnect::ALL`].
    pub disconnects: [u64; 10],
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
        let parts: Vec<String> = Disconnect::ALL
            .iter()
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
