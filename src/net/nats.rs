//! `--nats-publish nats://HOST:PORT --feed NAME`: an origin. Every frame the tick builds (the v1
//! payload, the very bytes its own clients get) is published on `aerobridge.NAME.frames` (core
//! NATS: at most once, which suits latest-wins), with the origin's id in a header. Commands arrive
//! as requests on `aerobridge.NAME.commands` and are answered exactly as the TCP command port
//! answers a line ([`crate::session::command_port`]).
//!
//! The official `async-nats` client runs on a tokio runtime confined to one side thread; the tick
//! hands it each frame's `Bytes` through a bounded channel (a refcount, no copy). When NATS cannot
//! keep up, frames are dropped there (counted), never queued without bound.

use crate::app::App;
use crate::fanout::stats::NatsStats;
use crate::session::command_port::CommandPortSession;
use crate::session::Action;
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// The header naming the publishing origin (two origins on one feed are detected by it).
pub const ORIGIN_HEADER: &str = "Aerobridge-Origin";

/// Starts the origin's side thread; returns where the tick sends each frame.
pub fn start(
    server: String,
    feed: String,
    app: Arc<App>,
    stats: Arc<NatsStats>,
) -> anyhow::Result<flume::Sender<Bytes>> {
    let (tx, rx) = flume::bounded::<Bytes>(64);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (frames, commands) = crate::source::nats::subjects(&feed);
    let origin_id = {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    std::thread::Builder::new()
        .name("aerobridge-nats".into())
        .spawn(move || {
            runtime.block_on(async move {
                let client = match async_nats::ConnectOptions::new()
                    .retry_on_initial_connect()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(server.as_str())
                    .await
                {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "NATS: cannot connect; not publishing");
                        return;
                    }
                };
                tracing::info!(subject = %frames, origin = %origin_id, "NATS: publishing the feed");
                let responder =
                    tokio::spawn(answer(client.clone(), commands, app, Arc::clone(&stats)));
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(ORIGIN_HEADER, origin_id.as_str());
                while let Ok(frame) = rx.recv_async().await {
                    let up = client.connection_state() == async_nats::connection::State::Connected;
                    stats.connected.store(up as u64, Ordering::Relaxed);
                    if !up {
                        // Latest wins: frames from an outage are not worth flushing later.
                        stats.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    match client
                        .publish_with_headers(frames.clone(), headers.clone(), frame)
                        .await
                    {
                        Ok(()) => stats.published.fetch_add(1, Ordering::Relaxed),
                        Err(_) => stats.dropped.fetch_add(1, Ordering::Relaxed),
                    };
                }
                responder.abort();
            });
        })?;
    Ok(tx)
}

/// Answers command requests, each as the command port answers its lines.
async fn answer(client: async_nats::Client, subject: String, app: Arc<App>, stats: Arc<NatsStats>) {
    let mut sub = match client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(subject, error = %e, "NATS: cannot take command requests");
            return;
        }
    };
    while let Some(msg) = sub.next().await {
        let Some(reply_to) = msg.reply.clone() else {
            continue;
        };
        let (client, app, stats) = (client.clone(), Arc::clone(&app), Arc::clone(&stats));
        tokio::spawn(async move {
            let reply = run_commands(&app, &msg.payload).await;
            stats.requests.fetch_add(1, Ordering::Relaxed);
            let _ = client.publish(reply_to, reply.into()).await;
        });
    }
}

/// One request's lines through a command-port session: the same gate, the same replies.
async fn run_commands(app: &App, payload: &[u8]) -> Vec<u8> {
    let peer = "0.0.0.0:0".parse().expect("an address");
    let mut session = CommandPortSession::new(Arc::clone(&app.sessions), peer);
    let mut actions = Vec::new();
    let mut reply = Vec::new();
    session.on_bytes(payload, true, std::time::Instant::now(), &mut actions);
    while !actions.is_empty() {
        for action in std::mem::take(&mut actions) {
            match action {
                Action::Send { bytes, .. } => reply.extend_from_slice(&bytes),
                Action::Submit(batch) => {
                    let result = super::commands::submit_to(app, batch, |answer| {
                        Box::pin(async move {
                            let wait = super::commands::RELAY_ANSWER_TIMEOUT;
                            tokio::time::timeout(wait, answer.recv_async())
                                .await
                                .ok()?
                                .ok()
                        })
                    })
                    .await;
                    session.applied(result, false, &mut actions);
                }
                _ => {}
            }
        }
    }
    reply
}
