//! Client sockets (upstream bridges are [`crate::source::relay`]'s and [`crate::record`]'s).
//! Listeners accept on plain threads (blocking `accept`, portable) and hand each
//! `std::net::TcpStream` to the least-loaded worker, which adopts it into its own compio runtime
//! (`from_std`): a socket stays with the runtime that adopted it, which IOCP requires and io_uring
//! does not mind.
//!
//! A telemetry connection has two tasks: its reader (the connection's own task) and its writer
//! (spawned, so the per-frame wake-up polls only the writer). Every socket operation goes through
//! [`io`], which never lets a send or a read park a kernel thread.

pub mod commands;
pub mod data;
pub mod handshake;
pub mod io;
pub mod link;
pub mod nats;
pub mod websocket;

pub use self::io::{read_some, write_bytes};
pub use self::link::Link;

use crate::app::{App, Worker};
use crate::config::Config;
use crate::fanout::connections::ConnectionInfo;
use crate::fanout::hub::WorkerMsg;
use crate::fanout::queue::Next;
use crate::fanout::stats::Disconnect;
use crate::fanout::worker::{Client, Verdict};
use crate::session::v2::Clock;
use crate::session::{Action, Session};
use bytes::Bytes;
use compio::net::TcpStream;
use futures_util::future::{select, Either};
use std::io as stdio;
use std::net::{SocketAddr, TcpListener};
use std::pin::pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Which listener a connection came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListenerKind {
    /// TCP telemetry (12345).
    Data,
    /// TCP commands (12346).
    Command,
    /// WebSocket (8765).
    WebSocket,
}

impl ListenerKind {
    /// Name used in logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Data => "tcp-data",
            ListenerKind::Command => "tcp-command",
            ListenerKind::WebSocket => "websocket",
        }
    }
}

/// A connection on its way to a worker.
pub struct Accepted {
    /// The socket (blocking mode as accepted; the worker adopts it).
    pub stream: std::net::TcpStream,
    /// The peer.
    pub peer: SocketAddr,
    /// Which port.
    pub kind: ListenerKind,
    /// Served, or refused politely by the worker (`--max-clients`, `--max-clients-per-ip`).
    pub verdict: Verdict,
    /// The address it counts against (`--max-clients-per-ip`), released when it ends.
    pub counted_ip: Option<std::net::IpAddr>,
    /// The listener speaks TLS.
    pub tls: bool,
}

/// Binds a listener with SO_REUSEADDR (Unix) and the configured backlog.
pub fn bind(addr: SocketAddr, backlog: u32) -> stdio::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    socket.listen(backlog.min(i32::MAX as u32) as i32)?;
    Ok(socket.into())
}

/// Accepts on `listener` until `stop` is set, handing connections to workers.
pub fn spawn_acceptor(
    listener: TcpListener,
    kind: ListenerKind,
    tls: bool,
    app: Arc<App>,
    workers: Vec<flume::Sender<WorkerMsg<Accepted>>>,
    stop: Arc<AtomicBool>,
) -> stdio::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name(format!("aerobridge-accept-{}", kind.as_str()))
        .spawn(move || loop {
            let (stream, peer) = match listener.accept() {
                Ok(s) => s,
                Err(e) => {
                    if stop.load(Ordering::Acquire) {
                        return;
                    }
                    // EMFILE and friends: back off instead of spinning; the kernel queue holds the rest.
                    aerobridge_proto::limited!(crate::log_limit::ACCEPT, std::time::Instant::now(), warn, listener = kind.as_str(), error = %e, "accept failed");
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
            };
            if stop.load(Ordering::Acquire) {
                return;
            }
            let _ = stream.set_nodelay(true);
            if let Some(size) = app.socket_send_buffer {
                let _ = socket2::SockRef::from(&stream).set_send_buffer_size(size);
            }
            let (verdict, counted_ip, index) = app.admission.admit(peer.ip());
            let admitted = verdict == Verdict::Admitted;
            let accepted = Accepted {
                stream,
                peer,
                kind,
                verdict,
                counted_ip,
                tls,
            };
            // A refusal ("server full") is cheap and bounded by its own timers: it is not held
            // back by fair admission, so a flood is told at once.
            let msg = if admitted {
                WorkerMsg::Connection(accepted)
            } else {
                WorkerMsg::Refusal(accepted)
            };
            if workers[index].send(msg).is_err() {
                return; // worker gone: shutting down
            }
        })
}

/// Runs one connection on its worker.
pub async fn handle(worker: Rc<Worker>, accepted: Accepted) {
    let admitted = accepted.verdict == Verdict::Admitted;
    let guard = worker.connection_guard(admitted, accepted.counted_ip);
    let stream = match TcpStream::from_std(accepted.stream) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(peer = %accepted.peer, error = %e, "could not adopt connection");
            guard.set_reason(Disconnect::IoError);
            return;
        }
    };
    let peer = accepted.peer;
    let reason = if !admitted {
        let full = accepted.verdict == Verdict::ServerFull;
        if full {
            aerobridge_proto::limited!(crate::log_limit::SERVER_FULL, std::time::Instant::now(), warn, %peer, listener = accepted.kind.as_str(), max = worker.app.config.max_clients, "refusing connection: server full");
        } else {
            aerobridge_proto::limited!(crate::log_limit::SERVER_FULL, std::time::Instant::now(), warn, %peer, listener = accepted.kind.as_str(), max = worker.app.config.max_clients_per_ip, "refusing connection: too many from this address (--max-clients-per-ip)");
        }
        if accepted.tls {
            // A TLS client cannot read a plaintext refusal, and a handshake only to refuse is
            // CPU a flood would spend: a fatal alert (internal_error) says it without one.
            let _ = compio::time::timeout(
                Duration::from_secs(1),
                write_bytes(&stream, Bytes::from_static(&[0x15, 3, 3, 0, 2, 2, 80])),
            )
            .await;
            io::shutdown_write(&stream);
        } else {
            Box::pin(refuse(
                &stream,
                accepted.kind,
                accepted.verdict,
                &worker.app.config,
            ))
            .await;
        }
        if full {
            Disconnect::ServerFull
        } else {
            Disconnect::TooManyFromIp
        }
    } else {
        tracing::debug!(%peer, listener = accepted.kind.as_str(), "connected");
        let (link, settings) = if accepted.tls {
            match Box::pin(handshake::run(&worker, stream.clone(), peer)).await {
                Ok(done) => {
                    let mut link = done.link;
                    link.summary = Some(done.summary.into());
                    (link, done.settings)
                }
                Err(reason) => {
                    guard.set_reason(reason);
                    let _ = compio::time::timeout(Duration::from_secs(1), stream.close()).await;
                    return;
                }
            }
        } else {
            (
                Link::plain(stream.clone()),
                Arc::clone(&worker.app.sessions),
            )
        };
        let reason = match accepted.kind {
            // Boxed: the task's state machine would otherwise be as large as the largest of
            // the three, for every connection (memory per idle client).
            ListenerKind::Data => Box::pin(data::serve(&worker, &link, peer, settings)).await,
            ListenerKind::Command => {
                Box::pin(commands::serve(&worker, &link, peer, settings)).await
            }
            ListenerKind::WebSocket => {
                Box::pin(websocket::serve(&worker, &link, peer, settings)).await
            }
        };
        drop(link);
        reason
    };
    tracing::debug!(%peer, reason = reason.as_str(), "disconnected");
    guard.set_reason(reason);
    // `close` waits for operations still holding the socket (a cancelled write to a dead peer);
    // never let that pin the connection's accounting.
    let _ = compio::time::timeout(Duration::from_secs(1), stream.close()).await;
}

/// Says "server full" (or "too many from your address") in the connection's own protocol, then closes (what and how long:
/// [`crate::session::refusal`]).
async fn refuse(stream: &TcpStream, kind: ListenerKind, verdict: Verdict, config: &Config) {
    use crate::session::refusal::{server_full, too_many_from_ip, Port};
    let port = match kind {
        ListenerKind::Data => Port::Data,
        ListenerKind::Command => Port::Command,
        ListenerKind::WebSocket => Port::WebSocket,
    };
    let refusal = match verdict {
        Verdict::TooManyFromIp => too_many_from_ip(port, config.max_clients_per_ip),
        _ => server_full(port, config.max_clients),
    };
    if refusal.response.is_empty() {
        return;
    }
    if let Some(wait) = refusal.read_first {
        let _ = compio::time::timeout(wait, read_some(stream, Vec::with_capacity(2048))).await;
    }
    let _ = compio::time::timeout(
        refusal.within,
        write_bytes(stream, Bytes::from(refusal.response)),
    )
    .await;
    io::shutdown_write(stream);
    let _ = compio::time::timeout(refusal.linger, async {
        let mut buf = Vec::with_capacity(4096);
        for _ in 0..refusal.linger_reads {
            buf.clear();
            match read_some(stream, buf).await {
                (Ok(n), b) if n > 0 => buf = b,
                _ => return,
            }
        }
    })
    .await;
}

/// Drains a client's queue into the socket until the queue is closed and flushed. Each item is
/// written whole (partial writes are continued by `write_all`); while closing, the item in flight
/// gets until the close deadline.
pub async fn write_loop(link: &Link, client: &Client, worker: &Worker) -> stdio::Result<()> {
    loop {
        let next = client.queue.borrow_mut().take_next();
        match next {
            Next::Idle => {
                if link.has_pending() {
                    // TLS output the reader produced (an alert, a KeyUpdate answer).
                    write_item(link, client, worker, None).await?;
                    continue;
                }
                link.shrink_if_idle();
                client.notify.wait().await
            }
            Next::Finished => {
                if link.is_tls() {
                    // close_notify, then FIN; bounded by the close deadline like any item.
                    link.queue_close_notify();
                    write_item(link, client, worker, None).await?;
                }
                io::shutdown_write(&link.stream);
                return Ok(());
            }
            Next::Write(bytes) => {
                write_item(link, client, worker, Some(bytes)).await?;
                let done = client.queue.borrow_mut().complete();
                worker.stats.frames_sent.add(done.frames);
                worker.stats.bytes_sent.add(done.bytes);
                if let Some((variant, raw)) = done.deflate {
                    use crate::fanout::queue::Variant;
                    worker.stats.deflate_raw_bytes.add(raw);
                    worker.stats.deflate_wire_bytes.add(done.bytes);
                    worker.stats.deflate_variants[match variant {
                        Variant::Standalone => 0,
                        Variant::Dictionary => 1,
                        Variant::Raw => 2,
                    }]
                    .add(1);
                }
                ConnectionInfo::add(&client.info.frames_sent, done.frames);
                ConnectionInfo::add(&client.info.bytes_sent, done.bytes);
                client.last_sent.set(Instant::now());
                if let Some((counter, built)) = done.frame {
                    worker.frame_written(counter, built);
                }
            }
        }
    }
}

/// Writes one queue item whole. Sends never block (see [`io`]); only the waits for room are
/// cancelled, so a deadline never leaves a frame half-sent without the writer knowing. While the
/// client is closing, the item gets until the close deadline.
async fn write_item(
    link: &Link,
    client: &Client,
    worker: &Worker,
    item: Option<Bytes>,
) -> stdio::Result<()> {
    let mut wait = io::SendWait::default();
    // On TLS the item is sealed into the connection's own buffer (the one per-client copy:
    // ciphertext), then that buffer is sent; a plaintext link sends the shared bytes as they are.
    let mut plain = match item {
        Some(bytes) => link.seal(bytes)?,
        None => None,
    };
    loop {
        let sent = match &mut plain {
            Some(bytes) => io::send_some(&link.stream, bytes).await?,
            None => link.send_pending().await?,
        };
        if sent == io::Sent::All {
            return Ok(());
        }
        worker.stats.send_waits.add(1);
        if wait.after_send(sent) {
            worker.stats.send_pressure.add(1);
        }
        // Boxed: only a client whose socket is full pays for the waiting state machine.
        Box::pin(wait_for_room(&link.stream, client, &mut wait)).await?;
    }
}

/// Waits until `stream` may take more, bounded by the client's close deadline once it has one.
async fn wait_for_room(
    stream: &TcpStream,
    client: &Client,
    wait: &mut io::SendWait,
) -> stdio::Result<()> {
    loop {
        if let Some(deadline) = client.close_deadline() {
            let left = deadline.saturating_duration_since(Instant::now());
            return match compio::time::timeout(left, wait.wait(stream)).await {
                Ok(res) => res,
                Err(_) => Err(stdio::Error::new(
                    stdio::ErrorKind::TimedOut,
                    "close deadline passed with a write in flight",
                )),
            };
        }
        // A wake-up while waiting is a close starting (new frames wake only an idle writer):
        // re-check the deadline.
        match select(pin!(wait.wait(stream)), pin!(client.notify.wait())).await {
            Either::Left((res, _)) => return res,
            Either::Right(_) => continue,
        }
    }
}

/// Runs a telemetry connection's reader beside its writer. The writer is a task of its own, so
/// the per-frame wake-up polls only the writer, never the reader's pending read and idle timer.
/// The reader returns why it stopped (having started the close itself when something is owed,
/// e.g. a WebSocket Close); the writer then gets the close grace to flush.
pub async fn run_client<R>(
    link: &Link,
    worker: &Rc<Worker>,
    client: &Rc<Client>,
    reader: R,
) -> Disconnect
where
    R: std::future::Future<Output = Disconnect>,
{
    let writer = compio::runtime::spawn({
        let (link, client, worker) = (link.clone(), Rc::clone(client), Rc::clone(worker));
        async move { write_loop(&link, &client, &worker).await }
    });
    let reader = pin!(reader);
    let reason = match select(reader, writer).await {
        Either::Left((reason, writer)) => {
            if client.reason().is_none() {
                // The peer went away or broke the rules without anything owed: stop now
                // (dropping the writer's handle cancels it).
                worker.close_client(client, reason);
            } else {
                let grace = worker.app.config.close_grace;
                let _ = compio::time::timeout(grace, writer).await;
            }
            client.reason().unwrap_or(reason)
        }
        Either::Right((result, reader)) => {
            let written = matches!(result, Ok(Ok(())));
            let reason = match client.reason() {
                Some(reason) => reason,
                None if written => Disconnect::PeerClosed,
                None => Disconnect::IoError,
            };
            if written && client.transport == crate::packet::Transport::WebSocket {
                // Our Close went out; give the peer a moment to answer before we drop the socket.
                let wait = worker.app.sessions.close_answer_wait;
                let _ = compio::time::timeout(wait, reader).await;
            }
            reason
        }
    };
    worker.unregister(client);
    reason
}

/// Where a session's bytes go: straight to the socket (the command port, and a WebSocket
/// connection before its upgrade) or into a telemetry client's queue, which its writer drains.
#[derive(Clone, Copy)]
pub(crate) enum Outlet<'a> {
    /// Written here and now.
    Socket,
    /// Queued for the client's writer.
    Client(&'a Client),
}

/// How [`drive`] stopped.
pub(crate) enum Ended {
    /// The session closed (its Close was carried out) or the socket failed.
    Closed(Disconnect),
    /// The WebSocket upgrade is done: drive the same session again as a telemetry client.
    Upgraded(Option<crate::ws::deflate::Agreed>),
}

/// What a session needs to know of the world before it is fed (sessions read no clocks).
fn clock(worker: &Worker, outlet: Outlet<'_>, now: Instant) -> Clock {
    Clock {
        wall_us: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64),
        seq: worker.last_seq(),
        last_sent: match outlet {
            Outlet::Client(client) => client.last_sent.get(),
            Outlet::Socket => now,
        },
    }
}

/// The one read loop: feeds `session` what the peer sends, the end of its stream and its
/// deadline, and carries out its actions ([`act`]) until it closes, the socket fails, or (a
/// WebSocket connection) the upgrade is done. While the peer is silent no buffer is held: the
/// loop waits for readability, and only then borrows the worker's scratch buffer. While a batch
/// is with the tick nothing is read (the session takes no input until the answer).
pub(crate) async fn drive<S: Session>(
    worker: &Worker,
    link: &Link,
    outlet: Outlet<'_>,
    session: &mut S,
) -> Ended {
    // An echo peer (Autobahn) sends megabytes; telemetry clients send little.
    let echo_chunk = worker.app.config.echo.then_some(256 * 1024);
    // TLS: a request that came with the handshake's last flight is the session's first input.
    let early = link.take_early();
    if !early.is_empty() {
        let now = Instant::now();
        session.set_clock(clock(worker, outlet, now));
        session.receive(&early, now);
    }
    loop {
        if let Some(first) = session.poll_action() {
            // Boxed: only a connection with something to do pays for this state machine.
            if let Some(end) = Box::pin(act(worker, link, outlet, session, first)).await {
                return end;
            }
        }
        let readable = io::readable(&link.stream);
        let ready = match session.deadline() {
            None => Some(readable.await),
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(Instant::now());
                // Boxed, like the actions: an idle v1 client's task stays small.
                Box::pin(compio::time::timeout(
                    wait.max(Duration::from_millis(1)),
                    readable,
                ))
                .await
                .ok()
            }
        };
        let now = Instant::now();
        session.set_clock(clock(worker, outlet, now));
        match ready {
            None => session.timeout(now),
            Some(Err(_)) => return Ended::Closed(Disconnect::IoError),
            Some(Ok(())) => {
                let scratch = match echo_chunk {
                    Some(chunk) => Vec::with_capacity(chunk),
                    None => worker.take_scratch(),
                };
                let (read, buf) = link.read_ready(scratch).await;
                let mut ended = None;
                let plain = match &read {
                    link::Read::InBuffer => Some(&buf[..]),
                    link::Read::Decrypted(plain) => Some(&plain[..]),
                    link::Read::Eof => {
                        session.eof(now);
                        None
                    }
                    link::Read::TlsFailed(failure) => {
                        tls_failed(worker, *failure, "after the handshake");
                        ended = Some(Disconnect::TlsFailed);
                        None
                    }
                    link::Read::Failed => {
                        ended = Some(Disconnect::IoError);
                        None
                    }
                };
                if let Some(bytes) = plain.filter(|b| !b.is_empty()) {
                    if let Outlet::Client(client) = outlet {
                        client.info.touch(now);
                    }
                    session.receive(bytes, now);
                }
                worker.return_scratch(buf);
                if link.has_pending() {
                    match outlet {
                        // The writer carries it out (in order with the frames it sends).
                        Outlet::Client(client) => client.notify.notify(),
                        Outlet::Socket => {
                            let _ =
                                compio::time::timeout(worker.app.config.close_grace, link.flush())
                                    .await;
                        }
                    }
                }
                if let Some(reason) = ended {
                    return Ended::Closed(reason);
                }
            }
        }
    }
}

/// Counts a TLS failure and logs it (rate-limited: a flood of garbage is one line a while).
pub(crate) fn tls_failed(worker: &Worker, failure: aerobridge_proto::tls::TlsFailure, when: &str) {
    if let Some(tls) = &worker.app.tls {
        tls.stats.failure(failure);
    }
    aerobridge_proto::limited!(
        crate::log_limit::TLS,
        Instant::now(),
        info,
        reason = failure.as_str(),
        when,
        "TLS connection failed"
    );
}

/// A registered telemetry client's life: its session driven beside its writer until it ends,
/// then the session's last word ([`finish`]).
pub(crate) async fn serve_client<S: Session>(
    worker: &Rc<Worker>,
    link: &Link,
    client: &Rc<Client>,
    session: &mut S,
) -> Disconnect {
    let reason = run_client(
        link,
        worker,
        client,
        drive_to_close(worker, link, Outlet::Client(client), session),
    )
    .await;
    finish(worker, session);
    reason
}

/// [`drive`] for a session that never upgrades (a telemetry client's or the command port's).
pub(crate) async fn drive_to_close<S: Session>(
    worker: &Worker,
    link: &Link,
    outlet: Outlet<'_>,
    session: &mut S,
) -> Disconnect {
    match drive(worker, link, outlet, session).await {
        Ended::Closed(reason) => reason,
        // Only the upgrade answers Upgraded, and only once.
        Ended::Upgraded(_) => Disconnect::ProtocolError,
    }
}

/// The one action interpreter: carries out `first` and every action after it, in order; `Some`
/// ends the read loop (a close has been started, or the upgrade is done).
async fn act<S: Session>(
    worker: &Worker,
    link: &Link,
    outlet: Outlet<'_>,
    session: &mut S,
    first: Action,
) -> Option<Ended> {
    let grace = worker.app.config.close_grace;
    let mut next = Some(first);
    while let Some(action) = next {
        match action {
            Action::Send { bytes, unread } => match outlet {
                Outlet::Client(client) => {
                    if client.push_control(bytes).is_err() {
                        let frame =
                            (client.transport == crate::packet::Transport::WebSocket).then(|| {
                                crate::ws::frame::close_frame(
                                    crate::ws::close::POLICY_VIOLATION,
                                    unread,
                                )
                            });
                        client.start_close(Disconnect::ControlOverflow, frame, grace);
                        return Some(Ended::Closed(Disconnect::ControlOverflow));
                    }
                }
                Outlet::Socket => {
                    if link.write_all(bytes).await.is_err() {
                        return Some(Ended::Closed(Disconnect::IoError));
                    }
                }
            },
            Action::Respond { bytes, within } => {
                if !respond(link, bytes, within).await {
                    return Some(Ended::Closed(Disconnect::IoError));
                }
            }
            Action::Page { page, head, within } => {
                let bytes = Bytes::from(websocket::render(worker, page, head));
                if !respond(link, bytes, within).await {
                    return Some(Ended::Closed(Disconnect::IoError));
                }
            }
            Action::Upgraded { deflate } => return Some(Ended::Upgraded(deflate)),
            Action::Submit(batch) => {
                // Boxed: only a client that sends commands pays for this state machine.
                let result = Box::pin(commands::submit(worker, batch)).await;
                session.applied(result, worker.is_shutting_down(), Instant::now());
            }
            Action::Tally { accepted, rejected } => commands::count(worker, accepted, &rejected),
            Action::EnterV2(framing) => {
                if let Outlet::Client(client) = outlet {
                    worker.enter_v2(client, framing);
                }
            }
            Action::Profiles {
                profiles,
                keyframes,
            } => {
                if let Outlet::Client(client) = outlet {
                    worker.set_profiles(client, profiles, keyframes);
                }
            }
            Action::Detail(detail) => {
                if let Outlet::Client(client) = outlet {
                    *client.info.detail.lock().expect("poisoned") = detail;
                }
            }
            Action::Park(session) => park(worker, *session),
            Action::Close { reason, frame } => {
                match outlet {
                    Outlet::Client(client) => {
                        client.start_close(reason, frame, grace);
                    }
                    Outlet::Socket => {
                        let _ = compio::time::timeout(grace, link.close_write()).await;
                    }
                }
                return Some(Ended::Closed(reason));
            }
        }
        next = session.poll_action();
    }
    None
}

/// Writes a response before the upgrade within `within`; false when it could not.
async fn respond(link: &Link, bytes: Bytes, within: Duration) -> bool {
    matches!(
        compio::time::timeout(within, link.write_all(bytes)).await,
        Ok(Ok(()))
    )
}

fn park(worker: &Worker, session: crate::session::v2::ParkedSession) {
    worker
        .app
        .sessions
        .v2
        .parked
        .park(session, std::time::Instant::now());
}

/// The connection has ended (whatever ended it): the session's last word. Only parking a v2
/// session for `resume` still means anything; there is no one left to send to.
pub(crate) fn finish<S: Session>(worker: &Worker, session: &mut S) {
    session.finish(Instant::now());
    while let Some(action) = session.poll_action() {
        if let Action::Park(session) = action {
            park(worker, *session);
        }
    }
}
