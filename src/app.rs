//! The application context: what connection handlers need beyond the fan-out — the
//! configuration, where commands go, the counters. [`crate::server`] builds one [`App`] and
//! injects it into every worker; the fan-out carries it without looking into it.

use crate::config::Config;
use crate::fanout::hub::{CommandBatch, HubStats};
use crate::fanout::stats::WorkerStats;
use crate::fanout::worker::Admission;
use std::sync::Arc;

/// State shared by every thread.
pub struct App {
    /// The configuration.
    pub config: Config,
    /// Where connections send command batches (the tick thread applies them).
    pub commands: flume::Sender<CommandBatch>,
    /// Connection accounting (`--max-clients`, balancing).
    pub admission: Arc<Admission>,
    /// Every worker's counters.
    pub stats: Vec<Arc<WorkerStats>>,
    /// The tick's counters.
    pub hub: Arc<HubStats>,
    /// SO_SNDBUF for client sockets (`--send-buffer` resolved against the frame size).
    pub socket_send_buffer: Option<usize>,
    /// What every connection's session needs of the configuration.
    pub sessions: Arc<crate::session::Settings>,
    /// The same for a mutual-TLS client whose certificate may not command (read-only).
    pub sessions_certificate_read_only: Arc<crate::session::Settings>,
    /// TLS (`--tls-cert`): the configuration new connections get, and its counters.
    pub tls: Option<Arc<crate::tls::Tls>>,
    /// `--nats-publish`: the origin's counters.
    pub nats_origin: Option<Arc<crate::nats::NatsStats>>,
    /// `--source nats://…`: the edge's counters.
    pub nats_edge: Option<Arc<crate::nats::NatsStats>>,
}

impl App {
    /// What `/metrics` and `/healthz` are rendered from.
    pub fn metrics_view(&self) -> crate::metrics::View<'_> {
        crate::metrics::View {
            workers: &self.stats,
            hub: &self.hub,
            broadcast: self.config.broadcast,
            echo: self.config.echo,
            profiles: &self.sessions.v2.profiles,
            parked_sessions: self.sessions.v2.parked.sweep(std::time::Instant::now()),
            nats_origin: self.nats_origin.as_deref(),
            nats_edge: self.nats_edge.as_deref(),
            tls: self.tls.as_deref(),
        }
    }
}

/// A worker of this application.
pub type Worker = crate::fanout::worker::Worker<App>;
