//! Counters. Each worker owns its [`WorkerStats`] and is the only writer, so a counter update is
//! a plain load and store (no locked instruction); readers (the stats log) see consistent-enough
//! snapshots with relaxed loads.

use strum::{EnumCount as _, IntoEnumIterator as _};

pub use crate::counters::{Counter, Histogram, BUCKETS};

pub use aerobridge_proto::Disconnect;

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
    /// Connections that waited for a later tick to be taken on (fair admission).
    pub admissions_deferred: Counter,
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
    /// Time from a tick's build until this worker starts handing it out (how late ticks reach
    /// it: a thread descheduled, or a long run queue).
    pub tick_dispatch_delay: Histogram,
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
