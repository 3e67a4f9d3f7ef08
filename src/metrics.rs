//! `GET /metrics` (Prometheus text format 0.0.4, names prefixed `aerobridge_`) and `GET /healthz`,
//! served on the WebSocket port. Rendering only reads the single-writer counters with relaxed
//! loads, so scraping never takes a lock or touches the hot path.

use crate::command::Reason;
use crate::fanout::stats::{Disconnect, Histogram, BUCKETS};
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use strum::IntoEnumIterator as _;

/// What the pages are rendered from: the counters they are given, nothing else.
pub struct View<'a> {
    /// Every worker's counters.
    pub workers: &'a [std::sync::Arc<crate::fanout::stats::WorkerStats>],
    /// The tick's counters.
    pub hub: &'a crate::fanout::hub::HubStats,
    /// The broadcast period (how old the last frame may be).
    pub broadcast: std::time::Duration,
    /// Echo mode: there is no tick.
    pub echo: bool,
    /// Protocol v2's live profiles.
    pub profiles: &'a crate::profile::Profiles,
    /// v2 sessions kept for resume.
    pub parked_sessions: usize,
    /// `--nats-publish`: the origin's counters (`None`: not an origin).
    pub nats_origin: Option<&'a crate::nats::NatsStats>,
    /// `--source nats://…`: the edge's counters (`None`: not an edge).
    pub nats_edge: Option<&'a crate::nats::NatsStats>,
    /// TLS (`None`: no certificate given).
    pub tls: Option<&'a crate::tls::Tls>,
}

impl View<'_> {
    /// One entry per NATS role this instance plays (an edge may also publish its own feed).
    fn nats_roles(&self) -> Vec<(&'static str, &crate::nats::NatsStats)> {
        [("origin", self.nats_origin), ("edge", self.nats_edge)]
            .into_iter()
            .filter_map(|(role, n)| Some((role, n?)))
            .collect()
    }
}

/// The metrics page.
pub fn render(shared: &View<'_>) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let sum = |f: &dyn Fn(&crate::fanout::stats::WorkerStats) -> u64| {
        shared.workers.iter().map(|s| f(s)).sum::<u64>()
    };
    let mut family = |name: &str, kind: &str, help: &str, samples: &[(String, f64)]| {
        let _ = writeln!(out, "# HELP aerobridge_{name} {help}");
        let _ = writeln!(out, "# TYPE aerobridge_{name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "aerobridge_{name}{labels} {v}");
        }
    };
    family(
        "clients",
        "gauge",
        "Connected clients by transport.",
        &[
            (
                "{transport=\"tcp\"}".into(),
                sum(&|s| s.tcp_clients.get()) as f64,
            ),
            (
                "{transport=\"ws\"}".into(),
                sum(&|s| s.ws_clients.get()) as f64,
            ),
            (
                "{transport=\"command\"}".into(),
                sum(&|s| s.command_clients.get()) as f64,
            ),
        ],
    );
    let v2 = sum(&|s| s.v2_clients.get());
    let telemetry = sum(&|s| s.tcp_clients.get() + s.ws_clients.get());
    family(
        "protocol_clients",
        "gauge",
        "Telemetry clients by session protocol (1: upstream's, 2: subscriptions).",
        &[
            (
                "{protocol=\"1\"}".into(),
                telemetry.saturating_sub(v2) as f64,
            ),
            ("{protocol=\"2\"}".into(), v2 as f64),
        ],
    );
    let profiles = shared.profiles.live();
    family(
        "v2_profiles",
        "gauge",
        "Distinct v2 profiles (variable set, every, mode) the tick builds.",
        &[(String::new(), profiles.len() as f64)],
    );
    family(
        "v2_messages_last_tick",
        "gauge",
        "v2 profile messages (keyframes and deltas) the last tick built, once each for all clients.",
        &[(
            String::new(),
            shared.hub.last_profile_msgs.load(Ordering::Relaxed) as f64,
        )],
    );
    family(
        "v2_parked_sessions",
        "gauge",
        "v2 sessions whose connection ended, kept for resume.",
        &[(String::new(), shared.parked_sessions as f64)],
    );
    let label = |p: &crate::profile::registry::ProfileShared| {
        format!(
            "{{profile=\"{}\",every=\"{}\",mode=\"{}\",vars=\"{}\"}}",
            p.id,
            p.key.every,
            p.key.mode.as_str(),
            p.key.vars.len()
        )
    };
    family(
        "v2_profile_clients",
        "gauge",
        "Connections receiving each v2 profile.",
        &profiles
            .iter()
            .map(|p| (label(p), p.clients.load(Ordering::Relaxed) as f64))
            .collect::<Vec<_>>(),
    );
    family(
        "v2_profile_message_bytes",
        "gauge",
        "Size of each v2 profile's last message (JSON bytes), built once for all its clients.",
        &profiles
            .iter()
            .map(|p| (label(p), p.last_bytes.load(Ordering::Relaxed) as f64))
            .collect::<Vec<_>>(),
    );
    family(
        "v2_profile_bytes_per_tick",
        "gauge",
        "Bytes each v2 profile puts on the wire per broadcast tick: last message size x clients / every.",
        &profiles
            .iter()
            .map(|p| {
                let bytes = p.last_bytes.load(Ordering::Relaxed) as f64
                    * p.clients.load(Ordering::Relaxed) as f64
                    / f64::from(p.key.every);
                (label(p), bytes)
            })
            .collect::<Vec<_>>(),
    );
    family(
        "deflate_raw_bytes_total",
        "counter",
        "permessage-deflate clients: telemetry bytes before compression.",
        &[(String::new(), sum(&|s| s.deflate_raw_bytes.get()) as f64)],
    );
    family(
        "deflate_wire_bytes_total",
        "counter",
        "permessage-deflate clients: telemetry bytes as sent.",
        &[(String::new(), sum(&|s| s.deflate_wire_bytes.get()) as f64)],
    );
    family(
        "deflate_messages_total",
        "counter",
        "permessage-deflate clients: telemetry messages by form (dictionary: compressed against the previous message, which the client holds).",
        &[
            (
                "{variant=\"standalone\"}".into(),
                sum(&|s| s.deflate_variants[0].get()) as f64,
            ),
            (
                "{variant=\"dictionary\"}".into(),
                sum(&|s| s.deflate_variants[1].get()) as f64,
            ),
            (
                "{variant=\"raw\"}".into(),
                sum(&|s| s.deflate_variants[2].get()) as f64,
            ),
        ],
    );
    family(
        "deflate_frame_bytes",
        "gauge",
        "Size of the last v1 frame compressed, by variant.",
        &[
            (
                "{variant=\"standalone\"}".into(),
                shared.hub.last_deflate_bytes[0].load(Ordering::Relaxed) as f64,
            ),
            (
                "{variant=\"dictionary\"}".into(),
                shared.hub.last_deflate_bytes[1].load(Ordering::Relaxed) as f64,
            ),
        ],
    );
    let nats = shared.nats_roles();
    if !nats.is_empty() {
        let get = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed) as f64;
        let per_role = |f: &dyn Fn(&str, &crate::nats::NatsStats) -> f64| {
            nats.iter()
                .map(|(role, n)| (format!("{{role=\"{role}\"}}"), f(role, n)))
                .collect::<Vec<_>>()
        };
        family(
            "nats_connected",
            "gauge",
            "NATS: 1 while connected to the NATS server.",
            &per_role(&|_, n| get(&n.connected)),
        );
        family(
            "nats_reconnects_total",
            "counter",
            "NATS: connections after the first (the client reconnects by itself).",
            &per_role(&|_, n| get(&n.reconnects)),
        );
        family(
            "nats_connect_failures_total",
            "counter",
            "NATS: failed connection attempts (unreachable, refused credentials, untrusted certificate).",
            &per_role(&|_, n| get(&n.connect_failures)),
        );
        if let Some(n) = shared.nats_origin {
            family(
                "nats_frames_published_total",
                "counter",
                "NATS origin: frames published on the feed.",
                &[("{role=\"origin\"}".into(), get(&n.published))],
            );
            if get(&n.standby) > 0.0 {
                let origin = |v: f64| [("{role=\"origin\"}".to_string(), v)];
                family(
                    "nats_origin_active",
                    "gauge",
                    "NATS origin (--standby): 1 while this origin holds the lease and publishes, 0 on standby.",
                    &origin(get(&n.active)),
                );
                family(
                    "nats_lease_revision",
                    "gauge",
                    "NATS origin (--standby): the lease revision it publishes under (0: none).",
                    &origin(get(&n.lease_revision)),
                );
                family(
                    "nats_lease_age_seconds",
                    "gauge",
                    "NATS origin (--standby): time since the lease was last renewed.",
                    &origin(get(&n.lease_age_ms) / 1000.0),
                );
                family(
                    "nats_takeovers_total",
                    "counter",
                    "NATS origin (--standby): times this origin took over the feed.",
                    &origin(get(&n.takeovers)),
                );
            }
        }
        if let Some(n) = shared.nats_edge {
            family(
                "nats_frames_received_total",
                "counter",
                "NATS edge: frames received on the feed.",
                &[("{role=\"edge\"}".into(), get(&n.received))],
            );
            family(
                "nats_origin_changes_total",
                "counter",
                "NATS edge: times it began following another origin (a restart or a failover).",
                &[("{role=\"edge\"}".into(), get(&n.origin_changes))],
            );
        }
        let mut dropped = Vec::new();
        for (role, n) in &nats {
            for why in crate::nats::Dropped::iter() {
                let mut v = get(&n.dropped[why as usize]);
                if *role == "origin" && why == crate::nats::Dropped::Busy {
                    v += shared.hub.nats_dropped.get() as f64;
                }
                let reason: &str = why.into();
                dropped.push((format!("{{role=\"{role}\",reason=\"{reason}\"}}"), v));
            }
        }
        family(
            "nats_frames_dropped_total",
            "counter",
            "NATS: frames not published (origin) or not re-broadcast (edge), by reason.",
            &dropped,
        );
        family(
            "nats_command_requests_total",
            "counter",
            "NATS: command requests answered (origin) or sent (edge).",
            &per_role(&|_, n| get(&n.requests)),
        );
        family(
            "nats_command_failures_total",
            "counter",
            "NATS edge: command requests without an answer (timeout, or no origin).",
            &per_role(&|_, n| get(&n.request_failures)),
        );
    }
    if let Some(tls) = shared.tls {
        use std::sync::atomic::Ordering::Relaxed;
        use strum::IntoEnumIterator as _;
        let st = &tls.stats;
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Relaxed) as f64;
        family(
            "tls_handshakes_total",
            "counter",
            "TLS handshakes completed, by protocol version.",
            &[
                ("{version=\"TLSv1.3\"}".into(), n(&st.versions[0])),
                ("{version=\"TLSv1.2\"}".into(), n(&st.versions[1])),
            ],
        );
        let ciphers: Vec<(String, f64)> = st
            .ciphers
            .lock()
            .expect("poisoned")
            .iter()
            .map(|(c, v)| (format!("{{cipher=\"{c}\"}}"), *v as f64))
            .collect();
        family(
            "tls_cipher_suites_total",
            "counter",
            "TLS handshakes completed, by cipher suite.",
            &ciphers,
        );
        let failures: Vec<(String, f64)> = aerobridge_proto::tls::TlsFailure::iter()
            .map(|f| {
                (
                    format!("{{reason=\"{}\"}}", f.as_str()),
                    n(&st.failures[f as usize]),
                )
            })
            .collect();
        family(
            "tls_failures_total",
            "counter",
            "TLS connections that failed, by reason (plaintext on a TLS port, malformed, timeout, untrusted client certificate, ...).",
            &failures,
        );
        family(
            "tls_client_certificates_total",
            "counter",
            "Mutual TLS: handshakes with a verified client certificate.",
            &[(String::new(), n(&st.client_certificates))],
        );
        family(
            "tls_handshakes_deferred_total",
            "counter",
            "Handshake steps that waited for the next tick (--tls-handshake-share used up).",
            &[(String::new(), n(&st.deferred))],
        );
        family(
            "tls_reloads_total",
            "counter",
            "Certificate reloads (SIGHUP or a changed file), by result; a refused one keeps the old certificate.",
            &[
                ("{result=\"ok\"}".into(), n(&st.reloads)),
                ("{result=\"refused\"}".into(), n(&st.reload_failures)),
            ],
        );
        let state = st.ktls_state();
        family(
            "tls_kernel_offload",
            "gauge",
            "Kernel TLS: 1 for the state found (unknown until the first TLS connection; unavailable: no tls ULP, user-space rustls).",
            &[
                ("{state=\"unknown\"}".into(), f64::from(u8::from(state == crate::tls::KtlsState::Unknown))),
                ("{state=\"unavailable\"}".into(), f64::from(u8::from(state == crate::tls::KtlsState::Unavailable))),
                ("{state=\"present\"}".into(), f64::from(u8::from(state == crate::tls::KtlsState::Present))),
            ],
        );
        family(
            "tls_user_space_connections_total",
            "counter",
            "TLS connections encrypted in user space (rustls) because kernel TLS did not take them.",
            &[(String::new(), n(&st.user_space))],
        );
    }
    let hub = shared.hub;
    family(
        "frames_built_total",
        "counter",
        "Frames built by the tick.",
        &[(String::new(), hub.frames_built.get() as f64)],
    );
    family(
        "frames_sent_total",
        "counter",
        "Telemetry frames written completely to a client.",
        &[(String::new(), sum(&|s| s.frames_sent.get()) as f64)],
    );
    family(
        "frames_skipped_total",
        "counter",
        "Telemetry frames skipped for slow clients (latest wins) or dropped at close.",
        &[(String::new(), sum(&|s| s.frames_skipped.get()) as f64)],
    );
    family(
        "bytes_sent_total",
        "counter",
        "Bytes written to clients.",
        &[(String::new(), sum(&|s| s.bytes_sent.get()) as f64)],
    );
    family(
        "queue_depth_frames",
        "gauge",
        "Telemetry frames waiting in client queues after the last tick.",
        &[(String::new(), sum(&|s| s.queued_frames.get()) as f64)],
    );
    family(
        "send_waits_total",
        "counter",
        "Times a writer found its client's socket full and waited for room (never in a kernel thread).",
        &[(String::new(), sum(&|s| s.send_waits.get()) as f64)],
    );
    family(
        "admissions_deferred_total",
        "counter",
        "New connections that waited for a later tick to be taken on, so that the tick's frames reached established clients first (--admission-rate).",
        &[(String::new(), sum(&|s| s.admissions_deferred.get()) as f64)],
    );
    family(
        "send_memory_pressure_total",
        "counter",
        "Sends refused although the socket polled writable (kernel TCP memory pressure); the writer backs off.",
        &[(String::new(), sum(&|s| s.send_pressure.get()) as f64)],
    );
    family(
        "ticks_missed_total",
        "counter",
        "Tick slots skipped because a tick ran late.",
        &[(String::new(), hub.ticks_missed.get() as f64)],
    );
    family(
        "worker_backlog_drops_total",
        "counter",
        "Ticks a worker could not take because its channel was full: a gap for every client of that worker.",
        &[(String::new(), hub.worker_backlog_drops.get() as f64)],
    );
    family(
        "frame_bytes",
        "gauge",
        "Size of the last frame's payload.",
        &[(
            String::new(),
            hub.last_frame_bytes.load(Ordering::Relaxed) as f64,
        )],
    );
    let disconnects: Vec<(String, f64)> = Disconnect::iter()
        .map(|r| {
            (
                format!("{{reason=\"{}\"}}", r.as_str()),
                sum(&|s| s.disconnects[r as usize].get()) as f64,
            )
        })
        .collect();
    family(
        "disconnects_total",
        "counter",
        "Connections ended, by reason.",
        &disconnects,
    );
    family(
        "commands_accepted_total",
        "counter",
        "Commands applied.",
        &[(String::new(), sum(&|s| s.commands_ok.get()) as f64)],
    );
    let rejected: Vec<(String, f64)> = Reason::iter()
        .map(|r| {
            (
                format!("{{reason=\"{}\"}}", r.as_str()),
                sum(&|s| s.rejected_by_reason[r as usize].get()) as f64,
            )
        })
        .collect();
    family(
        "commands_rejected_total",
        "counter",
        "Commands refused, by reason.",
        &rejected,
    );
    let (up, _) = health(shared);
    family(
        "source_up",
        "gauge",
        "1 while the source delivers valid data.",
        &[(String::new(), (up == 200) as u8 as f64)],
    );
    histogram(
        &mut out,
        "deflate_seconds",
        "permessage-deflate: time to compress a tick's packets once for everyone (both variants, v1 and v2).",
        &[&hub.compress_time],
    );
    histogram(
        &mut out,
        "tick_build_seconds",
        "Time to build a frame (commands, source, encode, packet).",
        &[&hub.build_time],
    );
    type PerWorker = fn(&crate::fanout::stats::WorkerStats) -> &Histogram;
    let per_worker: [(&str, &str, PerWorker); 2] = [
        (
            "tick_to_last_write_seconds",
            "Time from a frame's build to its last complete write, per worker and tick.",
            |s| &s.tick_to_last_write,
        ),
        (
            "tick_dispatch_delay_seconds",
            "Time from a frame's build until a worker starts handing it to its clients, per worker and tick.",
            |s| &s.tick_dispatch_delay,
        ),
    ];
    for (name, help, of) in per_worker {
        let workers: Vec<&Histogram> = shared.workers.iter().map(|s| of(s)).collect();
        histogram(&mut out, name, help, &workers);
    }
    let nats: Vec<(String, Vec<&Histogram>)> = shared
        .nats_roles()
        .into_iter()
        .map(|(role, n)| (format!("role=\"{role}\""), vec![&n.request_time]))
        .collect();
    if !nats.is_empty() {
        let series: Vec<(&str, Vec<&Histogram>)> =
            nats.iter().map(|(l, h)| (l.as_str(), h.clone())).collect();
        histograms(
            &mut out,
            "nats_command_seconds",
            "NATS: time to answer a command request (origin), or its round trip (edge).",
            &series,
        );
    }
    out
}

fn histogram(out: &mut String, name: &str, help: &str, parts: &[&Histogram]) {
    histograms(out, name, help, &[("", parts.to_vec())]);
}

/// One histogram family, a series per label set (`role="edge"`, or `""` for none).
fn histograms(out: &mut String, name: &str, help: &str, series: &[(&str, Vec<&Histogram>)]) {
    let _ = writeln!(out, "# HELP aerobridge_{name} {help}");
    let _ = writeln!(out, "# TYPE aerobridge_{name} histogram");
    for (labels, parts) in series {
        let mut buckets = vec![0u64; BUCKETS.len()];
        let (mut count, mut sum) = (0u64, 0f64);
        for h in parts {
            let (b, c, s) = h.snapshot();
            for (acc, v) in buckets.iter_mut().zip(b) {
                *acc += v;
            }
            count += c;
            sum += s;
        }
        let sep = if labels.is_empty() { "" } else { "," };
        for (le, v) in BUCKETS.iter().zip(&buckets) {
            let _ = writeln!(
                out,
                "aerobridge_{name}_bucket{{{labels}{sep}le=\"{le}\"}} {v}"
            );
        }
        let _ = writeln!(
            out,
            "aerobridge_{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}"
        );
        let braced = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "aerobridge_{name}_sum{braced} {sum}");
        let _ = writeln!(out, "aerobridge_{name}_count{braced} {count}");
    }
}

/// `(200, "ok …")` while the source is live; `(503, reason)` otherwise.
pub fn health(shared: &View<'_>) -> (u16, String) {
    let hub = shared.hub;
    if shared.echo {
        return (200, "ok: echo mode".into());
    }
    let last = hub.last_frame_ms.load(Ordering::Relaxed);
    if last == 0 {
        return (503, "no frame built yet".into());
    }
    let age_ms = (hub.started.elapsed().as_millis() as u64).saturating_sub(last);
    let limit = (shared.broadcast.as_millis() as u64 * 5).max(1000);
    if age_ms > limit {
        return (
            503,
            format!("no frame for {age_ms} ms: the tick is stalled"),
        );
    }
    if !hub.data_valid.load(Ordering::Relaxed) {
        let why = match shared.nats_edge {
            Some(n) if n.connected.load(Ordering::Relaxed) == 0 => {
                "the NATS server is unreachable (reconnecting)"
            }
            Some(_) => "connected to NATS, but the origin sends no valid frames",
            None => "upstream down, or the recording ended",
        };
        return (503, format!("source data not valid (data_valid=0): {why}"));
    }
    let role = match shared.nats_origin {
        Some(n) if n.standby.load(Ordering::Relaxed) == 1 => {
            if n.active.load(Ordering::Relaxed) == 1 {
                format!(
                    "; active origin of the feed (lease revision {}, renewed {} ms ago, {} takeovers)",
                    n.lease_revision.load(Ordering::Relaxed),
                    n.lease_age_ms.load(Ordering::Relaxed),
                    n.takeovers.load(Ordering::Relaxed)
                )
            } else {
                "; standby origin (another holds the lease; this one takes over if it stops)".into()
            }
        }
        _ => String::new(),
    };
    (200, format!("ok: last frame {age_ms} ms ago{role}"))
}
