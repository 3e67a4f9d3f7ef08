//! `--source nats://HOST:PORT/FEED`: an edge. Subscribes to `aerobridge.FEED.frames`, where an
//! origin (`--nats-publish`) publishes every frame it builds, and re-broadcasts each one the
//! moment it arrives, keeping the origin's `update_counter` and `timestamp` so gaps and latency are
//! measured across the hop. Its clients' commands go to the origin as NATS requests on
//! `aerobridge.FEED.commands`.
//!
//! NATS runs on the official `async-nats` client, on a tokio runtime confined to one side thread;
//! it meets the tick through the same shared state and wake-up as the TCP relay
//! ([`super::relay`]), so the compio workers and their hot path do not change.

use super::relay::{Latest, Relay};
use crate::command::CommandError;
use crate::telemetry::decode::FrameDecoder;
use crate::telemetry::Variables;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Subjects of one feed.
pub fn subjects(feed: &str) -> (String, String) {
    (
        format!("aerobridge.{feed}.frames"),
        format!("aerobridge.{feed}.commands"),
    )
}

/// `nats://HOST:PORT/FEED` → (`nats://HOST:PORT`, FEED).
pub fn parse_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("nats://")
        .ok_or_else(|| anyhow::anyhow!("expected nats://HOST:PORT/FEED, got {url:?}"))?;
    let (server, feed) = rest.split_once('/').unwrap_or((rest, "default"));
    let feed = if feed.is_empty() { "default" } else { feed };
    anyhow::ensure!(
        !server.is_empty()
            && feed
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
        "expected nats://HOST:PORT/FEED (FEED: letters, digits, - and _), got {url:?}"
    );
    Ok((format!("nats://{server}"), feed.to_string()))
}

/// How long an edge waits for the origin to answer a command.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Starts an edge of `feed` on the NATS server at `server`.
pub fn start(server: String, feed: String) -> anyhow::Result<Relay> {
    let runtime = Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aerobridge-nats")
            .enable_all()
            .build()?,
    );
    let (frames, commands) = subjects(&feed);
    let client = runtime.block_on(
        async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connection_timeout(Duration::from_secs(2))
            .connect(server.as_str()),
    )?;
    let describe = format!("NATS feed {feed} at {server} ({frames})");
    let reader = {
        let (runtime, client) = (Arc::clone(&runtime), client.clone());
        move |latest: Arc<Mutex<Latest>>, updated: flume::Sender<()>| {
            runtime.block_on(read(client, frames, latest, updated));
        }
    };
    let forward = move |line: &str| -> Result<(), CommandError> {
        let request = client.request(commands.clone(), line.to_string().into());
        match runtime.block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, request).await }) {
            Err(_) => Err(CommandError::UpstreamUnavailable(format!(
                "no answer from the origin on {commands} within {} s",
                COMMAND_TIMEOUT.as_secs()
            ))),
            Ok(Err(e)) => Err(CommandError::UpstreamUnavailable(format!(
                "origin unreachable on {commands} ({e})"
            ))),
            Ok(Ok(reply)) => reply_result(&reply.payload),
        }
    };
    Relay::start_with(describe, true, reader, forward)
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

async fn read(
    client: async_nats::Client,
    subject: String,
    latest: Arc<Mutex<Latest>>,
    updated: flume::Sender<()>,
) {
    let mut decoder = FrameDecoder::new();
    let mut vars = Variables::new();
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
        while let Some(msg) = sub.next().await {
            match decoder.decode(&msg.payload, &mut vars) {
                Ok(info) => {
                    let mut l = latest.lock().expect("poisoned");
                    l.vars.get_or_insert_with(Variables::new).clone_from(&vars);
                    l.timestamp_us = info.timestamp_us;
                    l.counter = info.update_counter;
                    l.version += 1;
                    l.received = Some(Instant::now());
                    l.connected = true;
                    drop(l);
                    let _ = updated.try_send(());
                }
                Err(e) => {
                    // Never forwarded: counted and dropped.
                    let mut l = latest.lock().expect("poisoned");
                    l.bad_lines += 1;
                    if l.bad_lines <= 5 {
                        tracing::warn!(subject, error = %e, "dropping a feed message that is not a telemetry frame");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_and_subjects() {
        assert_eq!(
            parse_url("nats://127.0.0.1:4222/class-a").unwrap(),
            ("nats://127.0.0.1:4222".into(), "class-a".into())
        );
        assert_eq!(
            parse_url("nats://host:4222").unwrap().1,
            "default".to_string()
        );
        assert!(parse_url("tcp://x:1/a").is_err());
        assert!(
            parse_url("nats://x:1/a.b").is_err(),
            "no subject tokens in a feed name"
        );
        assert_eq!(subjects("a").0, "aerobridge.a.frames");
        assert!(reply_result(br#"{"ok":true,"frame":3}"#).is_ok());
        assert_eq!(
            reply_result(br#"{"ok":false,"error":"Aircraft.Altitude is read-only"}"#),
            Err(CommandError::UpstreamRefused(
                "Aircraft.Altitude is read-only".into()
            ))
        );
    }
}
