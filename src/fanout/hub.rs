//! The tick: one thread owns the source. On a fixed grid it applies queued commands, advances
//! the source, has the tick built once ([`aerobridge_proto::tick`]: frame, packets, deflate
//! variants, v2 messages), and hands one `Arc` to each worker. Nothing here is per client.

use crate::command::Command;
use crate::fanout::stats::Counter;
use crate::profile::Profiles;
use crate::source::Source;
use aerobridge_proto::tick::{TickBuilder, TickInput, TickReport};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use aerobridge_proto::tick::Tick;

/// A message to a worker; `C` is a connection on its way to it (the listeners decide what).
pub enum WorkerMsg<C> {
    /// A new frame for every client of the worker.
    Tick(Arc<Tick>),
    /// A connection to adopt (subject to fair admission).
    Connection(C),
    /// A connection to refuse at once (the server is full).
    Refusal(C),
    /// Close every client and stop.
    Shutdown,
}

/// Commands from one connection, applied together at the start of the next tick.
pub struct CommandBatch {
    /// Validated commands, applied in order.
    pub commands: Vec<Command>,
    /// Where the results go.
    pub reply: flume::Sender<BatchResult>,
}

/// What happened to a [`CommandBatch`].
pub struct BatchResult {
    /// `update_counter` of the first frame that shows the applied commands.
    pub frame: u64,
    /// One result per command, in order (a relay's arrive later).
    pub results: Vec<crate::source::Applying>,
}

/// The hub's own counters (written by the tick thread only).
#[derive(Debug)]
pub struct HubStats {
    /// When the hub was created (reference for `last_frame_ms`).
    pub started: Instant,
    /// Milliseconds after `started` when the last frame was published (0: none yet).
    pub last_frame_ms: AtomicU64,
    /// `data_valid` of the last frame.
    pub data_valid: std::sync::atomic::AtomicBool,
    /// Time to build each frame (commands, source, encode, packet).
    pub build_time: crate::fanout::stats::Histogram,
    /// Frames built and published.
    pub frames_built: Counter,
    /// Grid slots skipped because a tick ran late.
    pub ticks_missed: Counter,
    /// Ticks a worker could not take (its channel was full).
    pub worker_backlog_drops: Counter,
    /// Size of the last frame's payload in bytes.
    pub last_frame_bytes: AtomicU64,
    /// Nanoseconds spent building the last frame (source + encode + packet).
    pub last_build_ns: AtomicU64,
    /// v2 profile messages built in the last tick.
    pub last_profile_msgs: AtomicU64,
    /// permessage-deflate: time to compress each tick's packets (v1 frame and v2 messages, both
    /// variants).
    pub compress_time: crate::fanout::stats::Histogram,
    /// Size of the last v1 frame's compressed variants (standalone, dictionary), bytes.
    pub last_deflate_bytes: [AtomicU64; 2],
    /// Frames not handed to the NATS publisher (it could not keep up).
    pub nats_dropped: Counter,
}

impl HubStats {
    /// Takes what one tick built (`report`, `data_valid`, and how long it took).
    pub fn record(&self, report: &TickReport, valid: bool, build_time: Duration) {
        if let Some(d) = report.compress_time {
            self.compress_time.observe(d);
            for (slot, size) in self.last_deflate_bytes.iter().zip(report.deflate_bytes) {
                slot.store(size, Ordering::Relaxed);
            }
        }
        self.last_profile_msgs
            .store(report.profile_messages, Ordering::Relaxed);
        self.last_frame_bytes
            .store(report.frame_bytes, Ordering::Relaxed);
        self.last_build_ns
            .store(build_time.as_nanos() as u64, Ordering::Relaxed);
        self.build_time.observe(build_time);
        self.data_valid.store(valid, Ordering::Relaxed);
        self.last_frame_ms.store(
            self.started.elapsed().as_millis().max(1) as u64,
            Ordering::Relaxed,
        );
        self.frames_built.add(1);
    }
}

impl Default for HubStats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            last_frame_ms: AtomicU64::new(0),
            data_valid: std::sync::atomic::AtomicBool::new(false),
            build_time: Default::default(),
            frames_built: Counter::default(),
            ticks_missed: Counter::default(),
            worker_backlog_drops: Counter::default(),
            last_frame_bytes: AtomicU64::new(0),
            last_build_ns: AtomicU64::new(0),
            last_profile_msgs: AtomicU64::new(0),
            compress_time: Default::default(),
            last_deflate_bytes: [AtomicU64::new(0), AtomicU64::new(0)],
            nats_dropped: Counter::default(),
        }
    }
}

/// What the tick thread runs on.
pub struct TickSetup<C> {
    /// Where frames come from.
    pub source: Box<dyn Source>,
    /// The broadcast period.
    pub period: Duration,
    /// One channel per worker.
    pub workers: Vec<flume::Sender<WorkerMsg<C>>>,
    /// Command batches from every connection.
    pub commands: flume::Receiver<CommandBatch>,
    /// v2 profiles to build each tick.
    pub profiles: Arc<Profiles>,
    /// permessage-deflate: how packets are compressed (once, for everyone).
    pub compression: crate::ws::deflate::Mode,
    /// Clients that agreed permessage-deflate (nothing is compressed while there are none).
    pub deflate_clients: Arc<std::sync::atomic::AtomicUsize>,
    /// `--nats-publish`: every frame's payload goes here (dropped, and counted, when full).
    pub publish: Option<flume::Sender<bytes::Bytes>>,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
    /// The hub's counters.
    pub stats: Arc<HubStats>,
}

/// Runs the tick loop until `stop` is set. Call on a dedicated thread. Pacing, clocks, the
/// source and the channels are here; what a tick builds is [`TickBuilder`]'s.
pub fn run<C>(setup: TickSetup<C>) {
    let TickSetup {
        mut source,
        period,
        workers,
        commands,
        profiles,
        compression,
        deflate_clients,
        publish,
        stop,
        stats,
    } = setup;
    let rate_hz = 1.0 / period.as_secs_f64();
    let mut builder = TickBuilder::new(profiles, rate_hz, compression, Instant::now);
    let start = Instant::now();
    // u64: at 200 Hz a u32 slot would overflow after 248 days.
    let mut slot: u64 = 0;
    let period_ns = period.as_nanos() as u64;
    let mut last = start;
    while !stop.load(Ordering::Acquire) {
        if source.pacing() == crate::source::Pacing::Upstream {
            // Re-broadcast each update as it arrives; a stale frame every 2 periods otherwise.
            source.wait_for_update(period * 2);
            if stop.load(Ordering::Acquire) {
                break;
            }
        } else {
            // Fixed grid: tick n is due at start + n·period. A late tick does not shift later
            // ones; if we fell more than a whole period behind, the missed slots are skipped.
            let due = start + Duration::from_nanos(period_ns.saturating_mul(slot));
            let now = Instant::now();
            if now < due {
                std::thread::park_timeout(due - now);
                continue;
            }
            let behind = ((now - due).as_nanos() / period.as_nanos()) as u64;
            if behind > 0 {
                stats.ticks_missed.add(behind);
            }
            slot += behind + 1;
        }

        let build_start = Instant::now();
        // Commands first, so the very next frame shows them.
        let frame = builder.next_counter();
        while let Ok(batch) = commands.try_recv() {
            let results = batch.commands.iter().map(|c| source.submit(c)).collect();
            let _ = batch.reply.send(BatchResult { frame, results });
        }
        let wall = SystemTime::now();
        let valid = source.advance(wall, build_start - last);
        last = build_start;
        let (tick, report) = builder.build(TickInput {
            variables: source.variables(),
            valid,
            timestamp_us: source.frame_timestamp_us().unwrap_or_else(|| {
                wall.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros() as u64)
                    .unwrap_or(0)
            }),
            upstream_counter: source.frame_counter(),
            now: build_start,
            compressing: deflate_clients.load(Ordering::Relaxed) > 0,
        });
        if let Some(p) = &publish {
            if p.try_send(tick.packet.tcp.clone()).is_err() {
                stats.nats_dropped.add(1);
            }
        }
        if let Some(total) = report.non_finite {
            tracing::warn!(total, "source produced non-finite numbers; sent as null");
        }
        stats.record(&report, valid, build_start.elapsed());
        for w in &workers {
            if w.try_send(WorkerMsg::Tick(Arc::clone(&tick))).is_err() {
                stats.worker_backlog_drops.add(1);
            }
        }
    }
}
