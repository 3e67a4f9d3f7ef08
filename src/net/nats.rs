//! `--nats-publish nats://HOST:PORT --feed NAME`: an origin. Every frame the tick builds (the v1
//! payload, the very bytes its own clients get) is published on `aerobridge.NAME.frames` (core
//! NATS: at most once, which suits latest-wins), with the origin's id in a header. Commands arrive
//! as requests on `aerobridge.NAME.commands` and are answered exactly as the TCP command port
//! answers a line ([`crate::session::command_port`]).
//!
//! The official `async-nats` client runs on a tokio runtime confined to one side thread; the tick
//! hands it each frame's `Bytes` through a bounded channel (a refcount, no copy). When NATS cannot
//! keep up, frames are dropped there (counted), never queued without bound.
//!
//! The origin also listens on its own feed, with `no_echo` (the server does not send it its own
//! frames): anything heard there comes from a second origin publishing the same feed, which is
//! logged loudly and counted.

use crate::app::App;
use crate::nats::{Dropped, NatsStats, ORIGIN_HEADER};
use crate::session::command_port::CommandPortSession;
use crate::session::{Action, Session};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::Arc;

/// Starts the origin's side thread; returns where the tick sends each frame.
pub fn start(server: String, feed: String, app: Arc<App>) -> anyhow::Result<flume::Sender<Bytes>> {
    let stats = Arc::clone(
        app.nats_origin
            .as_ref()
            .expect("an origin has NATS counters"),
    );
    let (tx, rx) = flume::bounded::<Bytes>(64);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // async-nats resolves names on the blocking pool: one lookup at a time is plenty.
        .max_blocking_threads(2)
        .build()?;
    let subjects = crate::nats::subjects(&feed);
    let origin_id = {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    };
    let (url, options) = runtime.block_on(app.config.nats.security.connect_options(
        &server,
        "origin",
        Arc::clone(&stats),
    ))?;
    std::thread::Builder::new()
        .name("aerobridge-nats".into())
        .spawn(move || {
            runtime.block_on(async move {
                let client = match options.no_echo().connect(url).await {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "NATS: cannot connect; not publishing");
                        return;
                    }
                };
                let frames = subjects.frames;
                tracing::info!(subject = %frames, origin = %origin_id, "NATS: publishing the feed");
                let responder = tokio::spawn(answer(
                    client.clone(),
                    subjects.commands,
                    Arc::clone(&app),
                    Arc::clone(&stats),
                ));
                let watcher = tokio::spawn(watch_for_other_origins(
                    client.clone(),
                    frames.clone(),
                    origin_id.clone(),
                    Arc::clone(&stats),
                ));
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(ORIGIN_HEADER, origin_id.as_str());
                while let Ok(frame) = rx.recv_async().await {
                    let up = client.connection_state() == async_nats::connection::State::Connected;
                    if !up {
                        // Latest wins: frames from an outage are not worth flushing later.
                        stats.drop_frame(Dropped::Disconnected);
                        continue;
                    }
                    match client
                        .publish_with_headers(frames.clone(), headers.clone(), frame)
                        .await
                    {
                        Ok(()) => NatsStats::add(&stats.published, 1),
                        Err(_) => stats.drop_frame(Dropped::Busy),
                    };
                }
                responder.abort();
                watcher.abort();
            });
        })?;
    Ok(tx)
}

/// Listens on the origin's own feed (the server does not echo its own frames): whatever arrives
/// was published by another origin.
async fn watch_for_other_origins(
    client: async_nats::Client,
    subject: String,
    own: String,
    stats: Arc<NatsStats>,
) {
    let Ok(mut sub) = client.subscribe(subject.clone()).await else {
        return;
    };
    let mut seen: Vec<String> = Vec::new();
    while let Some(msg) = sub.next().await {
        let other = crate::nats::origin_of(&msg).unwrap_or("(no origin header)");
        if other == own {
            continue; // a server that echoes regardless
        }
        stats.drop_frame(Dropped::OtherOrigin);
        if !seen.iter().any(|s| s == other) && seen.len() < 16 {
            seen.push(other.to_string());
            tracing::error!(
                subject,
                origin = %own,
                other,
                "TWO ORIGINS PUBLISH THIS FEED: this one ({own}) and {other}; edges follow one and drop the other's frames; give each origin its own --feed"
            );
        }
    }
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
            let start = std::time::Instant::now();
            let reply = run_commands(&app, &msg.payload).await;
            let _ = client.publish(reply_to, reply.into()).await;
            // One writer: every task runs on this runtime's single thread.
            stats.request_time.observe(start.elapsed());
            NatsStats::add(&stats.requests, 1);
        });
    }
}

/// One request's lines through a command-port session: the same gate, the same replies. A
/// request has no socket: what the session sends is the reply, and it ends at the payload's end.
async fn run_commands(app: &App, payload: &[u8]) -> Vec<u8> {
    let peer = "0.0.0.0:0".parse().expect("an address");
    let mut session = CommandPortSession::new(Arc::clone(&app.sessions), peer);
    let mut reply = Vec::new();
    session.receive(payload, std::time::Instant::now());
    session.eof(std::time::Instant::now());
    while let Some(action) = session.poll_action() {
        match action {
            Action::Send { bytes, .. } => reply.extend_from_slice(&bytes),
            Action::Submit(batch) => {
                let result = super::commands::submit_to(app, batch, |answer| {
                    Box::pin(async move {
                        let wait = app.sessions.relay_answer_timeout;
                        tokio::time::timeout(wait, answer.recv_async())
                            .await
                            .ok()?
                            .ok()
                    })
                })
                .await;
                Session::applied(&mut session, result, false, std::time::Instant::now());
            }
            _ => {}
        }
    }
    reply
}
