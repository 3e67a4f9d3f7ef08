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
use aerobridge_proto::lease::{Change, Lease, LeaseStep, LeaseTimes, REVISION_HEADER};
use bytes::Bytes;
use futures_util::StreamExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    // The lease revision to publish under: NOT_LEADER on standby, ALWAYS without --standby.
    let standby = app.config.nats.standby;
    let leader = Arc::new(AtomicU64::new(if standby { NOT_LEADER } else { ALWAYS }));
    // When the lease's self-fence falls (µs after `epoch`): the publisher checks it itself, so a
    // process woken from a pause publishes nothing before its lease task has run.
    let epoch = Instant::now();
    let fence_at = Arc::new(AtomicU64::new(if standby { 0 } else { u64::MAX }));
    stats.standby.store(u64::from(standby), Ordering::Relaxed);
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
                let lease = standby.then(|| {
                    tracing::info!(subject = %frames, origin = %origin_id, "NATS: origin with --standby: publishes the feed only while it holds the lease");
                    tokio::spawn(hold_lease(
                        client.clone(),
                        feed.clone(),
                        origin_id.clone(),
                        (Arc::clone(&leader), Arc::clone(&fence_at), epoch),
                        Arc::clone(&stats),
                    ))
                });
                if !standby {
                    tracing::info!(subject = %frames, origin = %origin_id, "NATS: publishing the feed");
                }
                let responder = tokio::spawn(answer(
                    client.clone(),
                    subjects.commands,
                    Arc::clone(&app),
                    Arc::clone(&stats),
                    Arc::clone(&leader),
                ));
                let watcher = tokio::spawn(watch_for_other_origins(
                    client.clone(),
                    frames.clone(),
                    origin_id.clone(),
                    Arc::clone(&stats),
                    standby,
                ));
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(ORIGIN_HEADER, origin_id.as_str());
                while let Ok(frame) = rx.recv_async().await {
                    let revision = leader.load(Ordering::Acquire);
                    let fenced = epoch.elapsed().as_micros() as u64 >= fence_at.load(Ordering::Acquire);
                    if revision == NOT_LEADER || fenced {
                        continue; // a standby follows the source but publishes nothing
                    }
                    let up = client.connection_state() == async_nats::connection::State::Connected;
                    if !up {
                        // Latest wins: frames from an outage are not worth flushing later.
                        stats.drop_frame(Dropped::Disconnected);
                        continue;
                    }
                    let mut headers = headers.clone();
                    if revision != ALWAYS {
                        headers.insert(REVISION_HEADER, revision.to_string().as_str());
                    }
                    match client
                        .publish_with_headers(frames.clone(), headers, frame)
                        .await
                    {
                        Ok(()) => NatsStats::add(&stats.published, 1),
                        Err(_) => stats.drop_frame(Dropped::Busy),
                    };
                }
                responder.abort();
                watcher.abort();
                if let Some(lease) = lease {
                    lease.abort();
                }
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
    standby: bool,
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
        if standby && crate::nats::revision_of(&msg).is_some() {
            continue; // the leader of a standby group: expected, and fenced by revision
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

/// Answers command requests, each as the command port answers its lines. With `--standby`
/// only while leading: the subscription exists only then, so a command goes to the active
/// origin alone and is never applied twice; one that reaches an origin that has just stepped
/// down is refused with `unavailable` rather than applied.
async fn answer(
    client: async_nats::Client,
    subject: String,
    app: Arc<App>,
    stats: Arc<NatsStats>,
    leader: Arc<AtomicU64>,
) {
    let leading = || leader.load(Ordering::Acquire) != NOT_LEADER;
    loop {
        while !leading() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut sub = match client.subscribe(subject.clone()).await {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(subject, error = %e, "NATS: cannot take command requests");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let msg = tokio::select! {
                msg = sub.next() => msg,
                _ = tokio::time::sleep(Duration::from_millis(20)), if !leading() => None,
            };
            let Some(msg) = msg else { break };
            answer_one(&client, msg, &app, &stats, leading()).await;
        }
        // Stepped down (or the subscription ended): stop taking commands at once.
        let _ = sub.unsubscribe().await;
    }
}

async fn answer_one(
    client: &async_nats::Client,
    msg: async_nats::Message,
    app: &Arc<App>,
    stats: &Arc<NatsStats>,
    leading: bool,
) {
    let Some(reply_to) = msg.reply.clone() else {
        return;
    };
    if !leading {
        // In the command port's own words: the same reply shape as every other refusal.
        let mut refusal = Vec::new();
        crate::command::write_error(
            &mut refusal,
            &crate::command::Rejection::bare(crate::command::CommandError::Unavailable(
                "unavailable: this origin is no longer the active one; send the command again",
            )),
        );
        let _ = client.publish(reply_to, refusal.into()).await;
        return;
    }
    let (client, app, stats) = (client.clone(), Arc::clone(app), Arc::clone(stats));
    tokio::spawn(async move {
        let start = std::time::Instant::now();
        let reply = run_commands(&app, &msg.payload).await;
        let _ = client.publish(reply_to, reply.into()).await;
        // One writer: every task runs on this runtime's single thread.
        stats.request_time.observe(start.elapsed());
        NatsStats::add(&stats.requests, 1);
    });
}

/// `leader` when this origin does not hold the lease (a standby).
const NOT_LEADER: u64 = 0;
/// `leader` of an origin without `--standby`: it always publishes, with no revision header.
const ALWAYS: u64 = u64::MAX;
/// The lease's key in the bucket.
const LEASE_KEY: &str = "leader";

/// Holds (or waits for) the feed's lease in the JetStream key-value bucket
/// `aerobridge-lease-FEED` and keeps `leader` at the revision to publish under.
async fn hold_lease(
    client: async_nats::Client,
    feed: String,
    origin: String,
    (leader, fence_at, epoch): (Arc<AtomicU64>, Arc<AtomicU64>, Instant),
    stats: Arc<NatsStats>,
) {
    use async_nats::jetstream::kv;
    let times = LeaseTimes::default();
    let js = async_nats::jetstream::new(client);
    let bucket = format!("aerobridge-lease-{feed}");
    // The bucket's stream, made the way async-nats' create_key_value makes it, but without its
    // account query: nats-server 2.9 (Debian's) answers that in a shape async-nats 0.42 cannot
    // read. Memory storage: a lease outlives no server restart, nor should it.
    let stream = async_nats::jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some("aerobridge: which origin publishes the feed (--standby)".into()),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_age: times.ttl,
        storage: async_nats::jetstream::stream::StorageType::Memory,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: 1,
        discard: async_nats::jetstream::stream::DiscardPolicy::New,
        ..Default::default()
    };
    let store = loop {
        let made = match js.get_or_create_stream(stream.clone()).await {
            Ok(_) => js
                .get_key_value(bucket.clone())
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match made {
            Ok(store) => break store,
            Err(e) => {
                aerobridge_proto::limited!(crate::log_limit::NATS_LINK, Instant::now(), error,
                    bucket, error = %e,
                    "NATS: cannot create the lease bucket; not publishing (--standby needs JetStream: nats-server -js)");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    let mut lease = Lease::new(times, Instant::now());
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // A call that hangs (NATS away) must not hold the loop: the self-fence is checked each turn.
    let limit = times.renew / 3;
    loop {
        tick.tick().await;
        let (step, change) = lease.poll(Instant::now());
        if let Some(Change::SelfFenced) = change {
            tracing::warn!(feed, origin, "NATS: lease not renewed in time (NATS unreachable?): stopped publishing, standing by");
        }
        match step {
            LeaseStep::Create => {
                let sent = Instant::now();
                match tokio::time::timeout(limit, store.create(LEASE_KEY, origin.clone().into()))
                    .await
                {
                    Ok(Ok(revision)) => {
                        lease.created(revision, sent);
                        tracing::warn!(
                            feed,
                            origin,
                            revision,
                            "NATS: this origin took over the feed (the lease was free)"
                        );
                    }
                    _ => lease.create_failed(Instant::now()),
                }
            }
            LeaseStep::Renew { revision } => {
                let sent = Instant::now();
                match tokio::time::timeout(
                    limit,
                    store.update(LEASE_KEY, origin.clone().into(), revision),
                )
                .await
                {
                    Ok(Ok(revision)) => lease.renewed(revision, sent),
                    Ok(Err(e)) => {
                        let refused = e.kind() == kv::UpdateErrorKind::WrongLastRevision;
                        if let Some(Change::LostTheKey) =
                            lease.renew_failed(refused, Instant::now())
                        {
                            tracing::warn!(
                                feed,
                                origin,
                                "NATS: another origin holds the lease: standing by"
                            );
                        }
                    }
                    Err(_) => {
                        lease.renew_failed(false, Instant::now());
                    }
                }
            }
            LeaseStep::Wait => {}
        }
        let now = Instant::now();
        let revision = lease.publishing(now).unwrap_or(NOT_LEADER);
        let until = match (revision, lease.age(now)) {
            (NOT_LEADER, _) | (_, None) => 0,
            (_, Some(age)) => (now - age + times.self_fence - epoch).as_micros() as u64,
        };
        fence_at.store(until, Ordering::Release);
        leader.store(revision, Ordering::Release);
        stats
            .active
            .store(u64::from(revision != NOT_LEADER), Ordering::Relaxed);
        stats.lease_revision.store(revision, Ordering::Relaxed);
        stats.lease_age_ms.store(
            lease.age(now).map_or(0, |a| a.as_millis() as u64),
            Ordering::Relaxed,
        );
        stats.takeovers.store(lease.takeovers, Ordering::Relaxed);
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
