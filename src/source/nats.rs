//! `--source nats://HOST:PORT/FEED`: an edge. Subscribes to `aerobridge.FEED.frames`, where an
//! origin (`--nats-publish`) publishes every frame it builds, and re-broadcasts each one the
//! moment it arrives, keeping the origin's `update_counter` and `timestamp` so gaps and latency are
//! measured across the hop. Its clients' commands go to the origin as NATS requests on
//! `aerobridge.FEED.commands`.
//!
//! NATS runs on the official `async-nats` client, on a tokio runtime confined to one side thread;
//! it meets the tick through the same shared state and wake-up as the TCP relay
//! ([`super::relay`]), so the compio workers and their hot path do not change.
//!
//! When several frames arrive at once (a hiccup of the machine or the network), the newest four
//! (`FEED_BACKLOG`) are built in order, back to back, so a short hiccup costs no frame; beyond
//! that, latest wins: older ones are counted as superseded. Frames from a
//! second origin on the feed, and messages that are not telemetry frames, are counted and
//! dropped, never forwarded ([`crate::nats`]).

use super::relay::{FeedFrame, Latest, Relay, FEED_BACKLOG};
use crate::command::CommandError;
use crate::nats::{Dropped, NatsStats, OriginTracker, OriginVerdict, PeriodEstimate, Security};
use crate::telemetry::decode::{DecodeError, FrameDecoder};
use crate::telemetry::Variables;
use futures_util::{FutureExt as _, StreamExt as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Messages taken off the subscription before they are decoded and handed to the tick.
const MAX_BATCH: usize = 64;

/// How long an edge waits for the origin to answer a command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts an edge of `feed` on the NATS server at `server` (credentials in the URL or in
/// `security`). Connecting goes on in the background: the edge serves stale frames until the
/// feed arrives.
pub fn start(server: String, feed: String, security: &Security) -> anyhow::Result<Relay> {
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
        move |line: &str| -> Result<(), CommandError> {
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
    Relay::start_with("feed", describe, Some(stats), reader, forward)
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
        tracing::info!(subject, "subscribed to the NATS feed");
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
                match origins.judge(origin, Instant::now()) {
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
