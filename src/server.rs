//! Starting and stopping the whole thing: listeners, workers, the tick thread, the stats log.

use crate::app::App;
use crate::config::Config;
use crate::fanout::hub::{self, HubStats, WorkerMsg};
use crate::fanout::stats::{Totals, WorkerStats};
use crate::fanout::worker::{self, Admission, WorkerLimits, WorkerSetup};
use crate::net::{self, ListenerKind};
use crate::source::Source;
use anyhow::Context as _;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where the server listens (ports resolved, so `0` in the config becomes the real port).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    /// TCP telemetry (none in echo mode).
    pub data: Option<SocketAddr>,
    /// TCP commands (none in echo mode).
    pub command: Option<SocketAddr>,
    /// WebSocket, when enabled.
    pub ws: Option<SocketAddr>,
}

/// A running server.
pub struct Server {
    addresses: Addresses,
    driver: &'static str,
    stop: Arc<AtomicBool>,
    worker_txs: Vec<flume::Sender<WorkerMsg<net::Accepted>>>,
    workers: Vec<JoinHandle<()>>,
    hub: Option<JoinHandle<()>>,
    stats: Vec<Arc<WorkerStats>>,
    hub_stats: Arc<HubStats>,
    logger: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds every listener, starts the workers and the tick. Fails (nothing left running) if a
    /// port cannot be bound or a runtime cannot start. In echo mode (`config.echo`) only the
    /// WebSocket listener runs and there is no tick.
    pub fn start(
        config: Config,
        source: Box<dyn Source>,
        nats_edge: Option<Arc<crate::nats::NatsStats>>,
    ) -> anyhow::Result<Server> {
        let bind = |port: u16, what: &str| {
            let addr = SocketAddr::new(config.bind, port);
            net::bind(addr, config.backlog)
                .with_context(|| format!("cannot listen on {addr} ({what})"))
        };
        let telemetry = !config.echo;
        let data = telemetry
            .then(|| bind(config.data_port, "--data-port"))
            .transpose()?;
        let command = telemetry
            .then(|| bind(config.command_port, "--command-port"))
            .transpose()?;
        let ws = config.ws_port.map(|p| bind(p, "--ws-port")).transpose()?;
        let tls = match &config.tls {
            None => None,
            Some(settings) => Some(crate::tls::Tls::new(settings.clone())?),
        };
        let plain_extra = config
            .plain_ports
            .iter()
            .filter(|p| telemetry || p.service == crate::tls::Service::Ws)
            .map(|p| {
                let kind = match p.service {
                    crate::tls::Service::Ws => ListenerKind::WebSocket,
                    crate::tls::Service::Data => ListenerKind::Data,
                    crate::tls::Service::Commands => ListenerKind::Command,
                };
                bind(p.port, "--plain-port").map(|l| (l, kind))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let addresses = Addresses {
            data: data.as_ref().map(|l| l.local_addr()).transpose()?,
            command: command.as_ref().map(|l| l.local_addr()).transpose()?,
            ws: ws.as_ref().map(|l| l.local_addr()).transpose()?,
        };

        let (cmd_tx, cmd_rx) = flume::bounded(1024);
        let stats: Vec<Arc<WorkerStats>> = (0..config.workers)
            .map(|_| Arc::new(WorkerStats::default()))
            .collect();
        let hub_stats = Arc::new(HubStats::default());
        let frame_bytes =
            telemetry.then(|| estimate_frame_bytes(source.as_ref(), config.broadcast));
        let socket_send_buffer = config.send_buffer.resolve(frame_bytes.unwrap_or(0));
        let admission = Arc::new(Admission::new(
            config.workers,
            config.max_clients,
            config.max_clients_per_ip,
            config.per_ip_counts_loopback,
        ));
        let sessions = Arc::new(config.session_settings());
        let app = Arc::new(App {
            socket_send_buffer,
            stats: stats.clone(),
            hub: Arc::clone(&hub_stats),
            commands: cmd_tx,
            admission: Arc::clone(&admission),
            sessions: Arc::clone(&sessions),
            sessions_certificate_read_only: Arc::new({
                // The same tables (v2 sessions park and resume across both), read-only access.
                let mut s = (*sessions).clone();
                s.access.certificate_read_only = true;
                s
            }),
            tls: tls.clone(),
            nats_origin: config.nats.publish.as_ref().map(|_| Arc::default()),
            nats_edge,
            config: config.clone(),
        });
        let limits = WorkerLimits {
            queue: config.queue,
            close_grace: config.close_grace,
            // Each worker's share of --admission-rate per tick (no ticks in echo mode).
            admissions_per_tick: telemetry.then(|| {
                let per_second = f64::from(config.admission_rate) / config.workers as f64;
                (per_second * config.broadcast.as_secs_f64())
                    .ceil()
                    .max(1.0) as usize
            }),
            period: config.broadcast,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let mut worker_txs = Vec::new();
        let mut workers = Vec::new();
        let mut driver = "unknown";
        for (index, st) in stats.iter().enumerate() {
            let (tx, rx) = flume::bounded(4096);
            let (ready_tx, ready_rx) = std::sync::mpsc::channel();
            let st = Arc::clone(st);
            let setup = WorkerSetup {
                index,
                app: Arc::clone(&app),
                stats: st,
                limits,
                admission: Arc::clone(&admission),
                rx,
                // The fan-out knows no sockets: the network layer is injected here.
                handler: net::handle,
            };
            let handle = worker::spawn(setup, ready_tx)?;
            let kind = ready_rx
                .recv()
                .context("worker thread died at start")?
                .context("cannot start a compio runtime")?;
            driver = driver_name(kind);
            worker_txs.push(tx);
            workers.push(handle);
        }
        tracing::info!("I/O driver: {driver}, {} worker thread(s)", config.workers);
        let hub = if !telemetry {
            tracing::info!(
                "echo mode: WebSocket messages are echoed back; no telemetry, no commands"
            );
            None
        } else {
            tracing::info!(
                "source: {}, broadcast every {} ms",
                source.describe(),
                config.broadcast.as_millis()
            );
            let setup = hub::TickSetup {
                source,
                period: config.broadcast,
                workers: worker_txs.clone(),
                commands: cmd_rx,
                profiles: Arc::clone(&app.sessions.v2.profiles),
                compression: config.ws_compression,
                deflate_clients: Arc::clone(&admission.deflate_clients),
                publish: match &config.nats.publish {
                    None => None,
                    Some((server, feed)) => Some(crate::net::nats::start(
                        server.clone(),
                        feed.clone(),
                        Arc::clone(&app),
                    )?),
                },
                stop: Arc::clone(&stop),
                stats: Arc::clone(&hub_stats),
            };
            Some(
                std::thread::Builder::new()
                    .name("aerobridge-tick".into())
                    .spawn(move || hub::run(setup))?,
            )
        };

        let tls_ports = config.tls.as_ref().map(|t| t.ports).unwrap_or_default();
        let mut listeners = Vec::new();
        if let (Some(data), Some(command)) = (data, command) {
            listeners.push((data, ListenerKind::Data, tls_ports.data));
            listeners.push((command, ListenerKind::Command, tls_ports.commands));
        }
        if let Some(ws) = ws {
            listeners.push((ws, ListenerKind::WebSocket, tls_ports.ws));
        }
        let plain_extra: Vec<_> = plain_extra
            .into_iter()
            .map(|(l, k)| (l, k, false))
            .collect();
        let first_extra = listeners.len();
        listeners.extend(plain_extra);
        for (i, (listener, kind, is_tls)) in listeners.into_iter().enumerate() {
            let addr = listener.local_addr()?;
            net::spawn_acceptor(
                listener,
                kind,
                is_tls,
                Arc::clone(&app),
                worker_txs.clone(),
                Arc::clone(&stop),
            )?;
            if i >= first_extra {
                // Its own label: scripts that look for "(websocket)" find the main port.
                tracing::info!("listening on {addr} ({}-plain) beside TLS", kind.as_str());
            } else if is_tls {
                tracing::info!("listening on {addr} ({}) tls", kind.as_str());
            } else {
                tracing::info!("listening on {addr} ({})", kind.as_str());
            }
        }
        if let Some(tls) = &tls {
            tls.spawn_reloader(Arc::clone(&stop))?;
        }
        if let Some(ws) = addresses.ws.filter(|_| telemetry) {
            // Where to point a browser: the bound address, or loopback for a wildcard bind.
            let host = reachable(ws);
            let scheme = if tls_ports.ws && tls.is_some() {
                "https"
            } else {
                "http"
            };
            tracing::info!(
                "dashboard: {scheme}://{host}/  metrics: {scheme}://{host}/metrics  health: {scheme}://{host}/healthz"
            );
        }
        if let Some(frame_bytes) = frame_bytes {
            log_kernel_memory(&config, frame_bytes, socket_send_buffer);
        }
        if !config.bind.is_loopback() {
            tracing::warn!(
                bind = %config.bind,
                "listening beyond loopback: anyone who can reach {} can read telemetry and send commands to the simulator",
                config.bind
            );
        }

        let logger = {
            let (stats, hs, stop, every, parked) = (
                stats.clone(),
                Arc::clone(&hub_stats),
                Arc::clone(&stop),
                config.stats_interval,
                Arc::clone(&app.sessions.v2.parked),
            );
            std::thread::Builder::new()
                .name("aerobridge-stats".into())
                .spawn(move || {
                    let mut next = Instant::now() + every;
                    while !stop.load(Ordering::Acquire) {
                        std::thread::park_timeout(next.saturating_duration_since(Instant::now()));
                        if Instant::now() >= next {
                            next += every;
                            log_totals(&stats, &hs, false);
                            crate::log_limit::flush_all();
                            // Expired v2 sessions let their profiles go even when nobody
                            // connects or scrapes.
                            parked.sweep(Instant::now());
                        }
                    }
                })?
        };

        Ok(Server {
            addresses,
            driver,
            stop,
            worker_txs,
            workers,
            hub,
            stats,
            hub_stats,
            logger: Some(logger),
        })
    }

    /// The bound addresses.
    pub fn addresses(&self) -> Addresses {
        self.addresses
    }

    /// `io_uring`, `IOCP` or `poll`.
    pub fn driver(&self) -> &'static str {
        self.driver
    }

    /// Current totals over all workers.
    pub fn totals(&self) -> Totals {
        Totals::sum(self.stats.iter().map(|s| s.as_ref()))
    }

    /// Stops accepting, stops the tick, closes every client (WebSocket: Close 1001) after its
    /// frame in flight, waits for the workers (bounded by the close grace) and logs the totals.
    pub fn shutdown(self) -> Totals {
        self.stop.store(true, Ordering::Release);
        // Wake the blocking acceptors with a connection each; they see `stop` and exit.
        for addr in [
            self.addresses.data,
            self.addresses.command,
            self.addresses.ws,
        ]
        .into_iter()
        .flatten()
        {
            let _ = TcpStream::connect_timeout(&reachable(addr), Duration::from_millis(100));
        }
        if let Some(hub) = &self.hub {
            hub.thread().unpark();
        }
        for tx in &self.worker_txs {
            let _ = tx.send(WorkerMsg::Shutdown);
        }
        for w in self.workers {
            let _ = w.join();
        }
        if let Some(hub) = self.hub {
            let _ = hub.join();
        }
        if let Some(l) = self.logger {
            l.thread().unpark();
            let _ = l.join();
        }
        crate::log_limit::flush_all();
        log_totals(&self.stats, &self.hub_stats, true)
    }
}

/// Parses the startup line `listening on ADDR (KIND)` that names each bound port. Scripts, the
/// load generator and the tests use it to find a server started on port 0; the line's format is
/// logged in [`Server::start`] right above, so the two stay together.
pub fn parse_listening_line(line: &str) -> Option<(ListenerKind, SocketAddr)> {
    let mut words = line.split("listening on ").nth(1)?.split_whitespace();
    let addr = words.next()?.parse().ok()?;
    let label = words.next()?.trim_start_matches('(').trim_end_matches(')');
    let kind = [
        ListenerKind::Data,
        ListenerKind::Command,
        ListenerKind::WebSocket,
    ]
    .into_iter()
    .find(|k| k.as_str() == label)?;
    Some((kind, addr))
}

/// The size of a frame from this source: one encoded from its current state (nothing is
/// advanced), plus the room a relay's upstream values may need beyond a fresh state's zeros.
fn estimate_frame_bytes(source: &dyn Source, period: Duration) -> usize {
    let header = crate::telemetry::FrameHeader {
        timestamp_us: u64::MAX / 2,
        data_valid: true,
        update_counter: u64::MAX / 2,
        broadcast_rate_hz: 1.0 / period.as_secs_f64(),
    };
    let mut encoder = crate::telemetry::FrameEncoder::new();
    let len = encoder.encode(&header, source.variables()).len();
    // Each of the ~361 numbers can grow to ~20 characters once real values arrive.
    len.max(crate::telemetry::VARIABLE_COUNT * 32) + crate::ws::frame::MAX_SERVER_HEADER
}

/// Says at startup what the worst case costs in kernel memory: every client stalled with a full
/// send buffer (the kernel doubles SO_SNDBUF for its bookkeeping), next to the host's TCP memory
/// limits, past which every socket on the host — healthy ones too — is throttled.
fn log_kernel_memory(config: &Config, frame_bytes: usize, sndbuf: Option<usize>) {
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    let tcp_mem = read_tcp_mem();
    match sndbuf {
        Some(sndbuf) => {
            let worst = config.max_clients as u64 * 2 * sndbuf as u64;
            let message = format!(
                "send buffer {} KiB per client ({}; frames ~{} KiB): {} clients stalled at once can pin {:.0} MiB of kernel memory{}",
                sndbuf >> 10,
                match config.send_buffer {
                    crate::config::SendBuffer::Auto => "auto",
                    _ => "--send-buffer",
                },
                frame_bytes.div_ceil(1024),
                config.max_clients,
                mib(worst),
                tcp_mem
                    .map(|(pressure, max)| format!(
                        " (host tcp_mem: pressure at {:.0} MiB, limit {:.0} MiB)",
                        mib(pressure),
                        mib(max)
                    ))
                    .unwrap_or_default()
            );
            match tcp_mem {
                Some((pressure, _)) if worst > pressure => {
                    tracing::warn!("{message}; lower --max-clients or --send-buffer")
                }
                _ => tracing::info!("{message}"),
            }
        }
        None => tracing::warn!(
            "--send-buffer 0: client sockets use the system default, which autotunes up to tcp_wmem's maximum; stalled clients can exhaust the host's TCP memory"
        ),
    }
}

/// `tcp_mem`'s pressure and limit thresholds in bytes (Linux).
pub fn read_tcp_mem() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_mem").ok()?;
    let pages: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    // tcp_mem is counted in pages; 4 KiB on every platform aerobridge runs on with /proc.
    Some((*pages.get(1)? * 4096, *pages.get(2)? * 4096))
}

/// An address this host can connect to: the bound one, or loopback for a wildcard bind.
fn reachable(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        ip if ip.is_unspecified() && addr.is_ipv4() => {
            SocketAddr::from(([127, 0, 0, 1], addr.port()))
        }
        ip if ip.is_unspecified() => SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, addr.port())),
        _ => addr,
    }
}

fn driver_name(kind: compio::driver::DriverType) -> &'static str {
    match kind {
        compio::driver::DriverType::IoUring => "io_uring",
        compio::driver::DriverType::IOCP => "IOCP",
        compio::driver::DriverType::Poll => "poll",
    }
}

fn log_totals(stats: &[Arc<WorkerStats>], hub: &HubStats, at_exit: bool) -> Totals {
    let t = Totals::sum(stats.iter().map(|s| s.as_ref()));
    let per_worker: Vec<u64> = stats
        .iter()
        .map(|s| s.tcp_clients.get() + s.ws_clients.get())
        .collect();
    macro_rules! emit {
        ($level:ident) => {
            tracing::$level!(
                clients = t.clients,
                command_clients = t.command_clients,
                per_worker = ?per_worker,
                frames_built = hub.frames_built.get(),
                frame_bytes = hub.last_frame_bytes.load(Ordering::Relaxed),
                build_us = hub.last_build_ns.load(Ordering::Relaxed) / 1000,
                ticks_missed = hub.ticks_missed.get(),
                frames_sent = t.frames_sent,
                frames_skipped = t.frames_skipped,
                bytes_sent = t.bytes_sent,
                commands_ok = t.commands_ok,
                commands_rejected = t.commands_rejected,
                disconnects = %t.disconnect_summary(),
                "{}", if at_exit { "totals at shutdown" } else { "totals" }
            )
        };
    }
    if at_exit {
        emit!(info);
    } else {
        emit!(debug);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listening_lines_parse() {
        let line = "2026-11-21T11:12:29Z INFO aerobridge::server: listening on 127.0.0.1:23452 (websocket) listener=\"websocket\"";
        assert_eq!(
            parse_listening_line(line),
            Some((ListenerKind::WebSocket, "127.0.0.1:23452".parse().unwrap()))
        );
        let line = "listening on [::1]:12345 (tcp-data)";
        assert_eq!(
            parse_listening_line(line),
            Some((ListenerKind::Data, "[::1]:12345".parse().unwrap()))
        );
        assert_eq!(parse_listening_line("I/O driver: io_uring"), None);
    }
}
