//! `--source nats://HOST:PORT/FEED`: an edge. Subscribes to `aerobridge.FEED.frames`, where an
//! origin (`--nats-publish`) publishes every frame it builds, and re-broadcasts each one the
//! moment it arrives, keeping the origin's `update_counter` and `timestamp` so gaps and latency are
//! measured across the hop. Its clients' commands go to the origin as NATS requests on
//! `aerobridge.FEED.commands`.
//!
//! NATS runs on the official `async-nats` client, on a tokio runtime confined to one side thread;
//! it meets the tick through the same mailbox and wake-up as the TCP relay
//! ([`super::upstream`]), so the compio workers and their hot path do not change.
//!
//! When several frames arrive at once (a hiccup of the machine or the network), the newest four
//! (`FEED_BACKLOG`) are built in order, back to back, so a short hiccup costs no frame; beyond
//! that, latest wins: older ones are counted as superseded. Frames from a
//! second origin on the feed, and messages that are not telemetry frames, are counted and
//! dropped, never forwarded ([`crate::nats`]).

use super::upstream::Upstream;
use super::{Applying, Source};
use crate::command::{Command, CommandError};
use crate::nats::{
    Dropped, FeedCounters, NatsStats, OriginTracker, OriginVerdict, PeriodEstimate, Security,
};
use crate::telemetry::decode::{DecodeError, FrameDecoder};
use crate::telemetry::Variables;
use futures_util::{FutureExt as _, StreamExt as _};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Feed frames an edge keeps to build in order when several arrive at once (a hiccup of the
/// machine or the network: 80 ms at 50 Hz). Beyond that, latest wins: the oldest are dropped.
const FEED_BACKLOG: usize = 4;

/// What the feed's reader leaves for the tick.
#[derive(Default)]
pub(crate) struct Latest {
    /// Frames not yet built, oldest first, at most [`FEED_BACKLOG`].
    backlog: VecDeque<FeedFrame>,
    /// The origin's broadcast period, as estimated from its frames.
    period: Option<Duration>,
}

/// One decoded frame of the feed.
struct FeedFrame {
    vars: Variables,
    /// The origin's `timestamp`.
    timestamp_us: Option<u64>,
    /// The origin's `update_counter`.
    counter: u64,
    /// The origin generation: it changes when the edge follows another origin.
    epoch: u64,
    /// The origin's `data_valid` (an origin whose own source is stale says so).
    data_valid: bool,
}

/// The NATS edge source: the feed rules ([`crate::nats`]) over the reader's mailbox.
pub struct NatsEdge {
    describe: String,
    upstream: Upstream<Latest>,
    stats: Arc<NatsStats>,
    vars: Variables,
    timestamp_us: Option<u64>,
    /// The counter of the frame being built, when it is a new feed frame: the origin's
    /// `update_counter` plus `offset` (a stale re-broadcast counts on from it, so counters never
    /// repeat).
    counter: Option<u64>,
    /// The feed's counters, mirroring the hub's.
    numbers: FeedCounters,
    /// The origin's `data_valid` for the frame being built.
    valid: bool,
    /// The frame being built is the origin's (not a stale re-broadcast).
    fresh: bool,
}

/// Messages taken off the subscription before they are decoded and handed to the tick.
const MAX_BATCH: usize = 64;

/// How long an edge waits for the origin to answer a command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts an edge of `feed` on the NATS server at `server` (credentials in the URL or in
/// `security`). Connecting goes on in the background: the edge serves stale frames until the
/// feed arrives.
pub fn start(server: String, feed: String, security: &Security) -> anyhow::Result<NatsEdge> {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aerobridge-nats")
            .enable_all()
            // async-nats resolves names on the blocking pool: one lookup at a time is plenty.
            .max_blocking_threads(2)
            .build()?,
    );
    let stats = Arc::new(NatsStats::default());
    let subjects = crate::nats::subjects(&feed);
    let client = runtime.block_on(async {
        let (url, options) = security
            .connect_options(&server, "edge", Arc::clone(&stats))
            .await?;
        options.connect(url).await.map_err(anyhow::Error::from)
    })?;
    let describe = format!(
        "NATS feed {feed} at {} ({})",
        crate::nats::redact(&server),
        subjects.frames
    );
    let reader = {
        let (runtime, client, stats) = (Arc::clone(&runtime), client.clone(), Arc::clone(&stats));
        let frames = subjects.frames.clone();
        move |latest: Arc<Mutex<Latest>>, updated: flume::Sender<()>| {
            runtime.block_on(read(client, frames, latest, updated, stats));
        }
    };
    let forward = {
        let stats = Arc::clone(&stats);
        let commands = subjects.commands;
        let server = crate::nats::redact(&server);
        move |line: &str| -> Result<(), CommandError> {
            if stats.connected.load(std::sync::atomic::Ordering::Relaxed) == 0 {
                // Said at once: waiting for the request's timeout would blame the origin for
                // what is the edge's own link.
                NatsStats::add(&stats.request_failures, 1);
                return Err(CommandError::UpstreamUnavailable(format!(
                    "NATS unreachable: this edge is not connected to {server} (reconnecting); the command was not sent"
                )));
            }
            let start = Instant::now();
            let request = client.request(commands.clone(), line.to_string().into());
            let answer =
                runtime.block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, request).await });
            NatsStats::add(&stats.requests, 1);
            stats.request_time.observe(start.elapsed());
            let failed = |e: CommandError| {
                NatsStats::add(&stats.request_failures, 1);
                Err(e)
            };
            match answer {
                Err(_) => failed(CommandError::UpstreamUnavailable(format!(
                    "no answer from the origin on {commands} within {} s",
                    COMMAND_TIMEOUT.as_secs()
                ))),
                Ok(Err(e)) => failed(CommandError::UpstreamUnavailable(format!(
                    "origin unreachable on {commands} ({})",
                    e.kind()
                ))),
                Ok(Ok(reply)) => reply_result(&reply.payload),
            }
        }
    };
    Ok(NatsEdge {
        describe,
        upstream: Upstream::start("feed", reader, forward)?,
        stats,
        vars: Variables::new(),
        timestamp_us: None,
        counter: None,
        numbers: FeedCounters::default(),
        valid: true,
        fresh: false,
    })
}

impl NatsEdge {
    /// The edge's counters, for `/metrics`.
    pub fn stats(&self) -> Arc<NatsStats> {
        Arc::clone(&self.stats)
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

impl Source for NatsEdge {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    fn advance(&mut self, _now: SystemTime, _dt: Duration) -> bool {
        let mailbox = Arc::clone(&self.upstream.mailbox);
        let mut l = mailbox.lock().unwrap();
        self.counter = None;
        // The oldest frame not yet built that still has a place (see wait_for_update). A frame
        // built in a silence (two of the origin's periods without one) is stale.
        let mut fresh = false;
        while let Some(frame) = l.backlog.pop_front() {
            let Some(counter) = self.place(frame.epoch, frame.counter) else {
                self.stats.drop_frame(Dropped::Late);
                continue;
            };
            self.vars = frame.vars;
            self.timestamp_us = frame.timestamp_us;
            self.valid = frame.data_valid;
            self.counter = Some(counter);
            fresh = true;
            break;
        }
        self.numbers.emit(self.counter);
        self.fresh = fresh;
        fresh && self.valid
    }

    fn variables(&self) -> &Variables {
        &self.vars
    }

    fn pacing(&self) -> super::Pacing {
        super::Pacing::Upstream
    }

    fn wait_for_update(&mut self, timeout: Duration) -> bool {
        // Re-broadcast stale after two of the origin's periods without a frame.
        let period = self.upstream.mailbox.lock().unwrap().period;
        let deadline = Instant::now() + period.map_or(timeout, |p| p * 2);
        loop {
            {
                let mailbox = Arc::clone(&self.upstream.mailbox);
                let mut l = mailbox.lock().unwrap();
                // A frame that arrives after a stale frame took its number is late: skipping it
                // keeps our counters the origin's (the next one is on time).
                while let Some(frame) = l.backlog.front() {
                    if self.place(frame.epoch, frame.counter).is_some() {
                        return true;
                    }
                    l.backlog.pop_front();
                    self.stats.drop_frame(Dropped::Late);
                }
            }
            if !self.upstream.wait_until(deadline) {
                return false;
            }
        }
    }

    /// The origin's wall-clock `timestamp`, so latency is measured across the hop; a stale
    /// re-broadcast is stamped now, as ours.
    fn frame_timestamp_us(&self) -> Option<u64> {
        if !self.fresh {
            return None;
        }
        super::relay::plausible_wall_clock(self.timestamp_us)
    }

    fn frame_counter(&self) -> Option<u64> {
        self.counter
    }

    fn apply(&mut self, command: &Command) -> Result<(), CommandError> {
        self.upstream.apply(command)
    }

    fn submit(&mut self, command: &Command) -> Applying {
        self.upstream.submit(command)
    }
}

/// The origin's reply line, as a result: its own refusal in its words.
fn reply_result(reply: &[u8]) -> Result<(), CommandError> {
    let mut line = reply.to_vec();
    let Ok(v) = simd_json::to_owned_value(&mut line) else {
        return Err(CommandError::UpstreamRefused(
            "the origin's reply is not JSON".into(),
        ));
    };
    use simd_json::prelude::*;
    match v.get("ok").and_then(|o| o.as_bool()) {
        Some(true) => Ok(()),
        _ => Err(CommandError::UpstreamRefused(
            v.get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("refused")
                .to_string(),
        )),
    }
}

/// Receives the feed: takes what has arrived, keeps the followed origin's newest frames, decodes
/// them and hands them to the tick in order.
async fn read(
    client: async_nats::Client,
    subject: String,
    latest: Arc<Mutex<Latest>>,
    updated: flume::Sender<()>,
    stats: Arc<NatsStats>,
) {
    let mut decoder = FrameDecoder::new();
    let mut vars = Variables::new();
    let mut origins = OriginTracker::default();
    let mut fence = aerobridge_proto::lease::Fence::default();
    let mut period = PeriodEstimate::default();
    let mut epoch = 0u64;
    let mut batch: Vec<async_nats::Message> = Vec::new();
    loop {
        let mut sub = match client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(subject, error = %e, "cannot subscribe to the feed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if stats.connected.load(std::sync::atomic::Ordering::Relaxed) == 1 {
            tracing::info!(subject, "subscribed to the NATS feed");
        } else {
            tracing::info!(
                subject,
                "the feed subscription waits for the NATS server (not connected yet)"
            );
        }
        while let Some(first) = sub.next().await {
            // What has already arrived, in order: frames of the followed origin.
            batch.clear();
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(msg) = next {
                // Bounded, so a flood on the subject cannot keep the tick waiting.
                taken += 1;
                next = if taken < MAX_BATCH {
                    sub.next().now_or_never().flatten()
                } else {
                    None
                };
                NatsStats::add(&stats.received, 1);
                let origin = crate::nats::origin_of(&msg).unwrap_or("");
                // Standby origins: frames under an older lease than one seen are an old
                // leader's; a newer lease is a takeover, followed at once.
                let revision = crate::nats::revision_of(&msg);
                let newer = revision.is_some() && revision > fence.newest();
                if !fence.admit(revision) {
                    stats.drop_frame(Dropped::Fenced);
                    continue;
                }
                let verdict = if newer {
                    origins.take_over(origin, Instant::now())
                } else {
                    origins.judge(origin, Instant::now())
                };
                match verdict {
                    OriginVerdict::Follow => batch.push(msg),
                    OriginVerdict::Switch { previous } => {
                        epoch += 1;
                        period.restart();
                        match previous {
                            None => tracing::info!(subject, origin, "following origin"),
                            Some(previous) => {
                                NatsStats::add(&stats.origin_changes, 1);
                                tracing::warn!(
                                    subject,
                                    origin,
                                    previous,
                                    "the origin changed (a restart or a failover): following the new one; counters continue from ours"
                                );
                            }
                        }
                        for _ in batch.drain(..) {
                            stats.drop_frame(Dropped::Superseded);
                        }
                        batch.push(msg);
                    }
                    OriginVerdict::Conflict { followed } => {
                        stats.drop_frame(Dropped::OtherOrigin);
                        if origins.first_conflict(origin) {
                            tracing::error!(
                                subject,
                                followed = %followed,
                                other = origin,
                                "TWO ORIGINS PUBLISH THIS FEED: following {followed}, dropping every frame of {origin}; give each origin its own --feed"
                            );
                        }
                    }
                }
            }
            // Every message is screened (a scan of its head and tail), and decoded only if it
            // looks like a frame (tens of µs): garbage must never push a real frame out, nor keep
            // one waiting. The tick builds the newest few in order.
            let mut decoded = 0;
            for msg in batch.drain(..) {
                // An origin always numbers its frames: a frame without a usable counter is not
                // one of its frames.
                let frame = crate::nats::screen(&msg.payload)
                    .and_then(|_| decoder.decode(&msg.payload, &mut vars))
                    .and_then(|info| match info.update_counter {
                        Some(c) if c <= crate::nats::MAX_COUNTER => Ok(FeedFrame {
                            vars: vars.clone(),
                            timestamp_us: info.timestamp_us,
                            counter: c,
                            epoch,
                            data_valid: info.data_valid,
                        }),
                        other => Err(DecodeError::Counter(other)),
                    });
                match frame {
                    Ok(frame) => {
                        if let Some(t) = frame.timestamp_us {
                            period.observe(frame.counter, t);
                        }
                        let mut l = latest.lock().expect("poisoned");
                        if l.backlog.len() == FEED_BACKLOG {
                            l.backlog.pop_front();
                            stats.drop_frame(Dropped::Superseded);
                        }
                        l.backlog.push_back(frame);
                        l.period = period.period();
                        decoded += 1;
                    }
                    Err(e) => {
                        // Never forwarded: counted and dropped.
                        stats.drop_frame(Dropped::Invalid);
                        aerobridge_proto::limited!(crate::log_limit::NATS_FEED, std::time::Instant::now(),
                            warn,
                            subject,
                            error = %e,
                            "dropping a feed message that is not a telemetry frame"
                        );
                    }
                }
            }
            if decoded > 0 {
                let _ = updated.try_send(());
            }
        }
        tracing::warn!(subject, "the feed subscription ended; subscribing again");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_origins_replies_become_results() {
        assert!(reply_result(br#"{"ok":true,"frame":3}"#).is_ok());
        assert_eq!(
            reply_result(br#"{"ok":false,"error":"Aircraft.Altitude is read-only"}"#),
            Err(CommandError::UpstreamRefused(
                "Aircraft.Altitude is read-only".into()
            ))
        );
        assert!(matches!(
            reply_result(b"garbage"),
            Err(CommandError::UpstreamRefused(_))
        ));
    }
}
