//! WebSocket port (8765): the upgrade (or a plain HTTP page), then telemetry frames out and
//! client messages in. What messages mean (commands, pings, Close codes, echo) is the
//! [`WsSession`]'s; this shell moves bytes, timers and command batches between it and the socket.

use crate::access::{origin_allowed, presented_token};
use crate::app::Worker;
use crate::fanout::stats::Disconnect;
use crate::fanout::worker::Client;
use crate::packet::Transport;
use crate::session::websocket::WsSession;
use crate::session::Action;
use crate::ws::close;
use crate::ws::handshake::{http_response, parse_upgrade, switching_protocols};
use bytes::Bytes;
use compio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest upgrade request accepted.
pub const MAX_REQUEST: usize = 8 * 1024;

/// Serves one WebSocket connection: handshake, then frames until it ends.
pub async fn serve(worker: &Rc<Worker>, stream: &TcpStream, peer: SocketAddr) -> Disconnect {
    // The handshake's state (request buffer, parsed headers) lives in its own allocation, freed
    // before the long telemetry phase: an idle client's task stays small.
    let session = match Box::pin(upgrade(worker, stream, peer)).await {
        Ok(session) => session,
        Err(reason) => return reason,
    };
    let client = worker.register(Transport::WebSocket);
    super::run_client(
        stream,
        worker,
        &client,
        read_messages(worker, stream, &client, session),
    )
    .await
}

/// Reads and answers the upgrade request (or a plain HTTP request). On success returns the
/// command gate and any bytes that followed the request.
async fn upgrade(
    worker: &Rc<Worker>,
    stream: &TcpStream,
    peer: SocketAddr,
) -> Result<WsSession, Disconnect> {
    let cfg = &worker.app.config;
    let deadline = Instant::now() + cfg.handshake_timeout;
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let (request, consumed) = loop {
        match parse_upgrade(&buf, MAX_REQUEST) {
            Ok(Some(done)) => break done,
            Ok(None) => {}
            Err(crate::ws::handshake::HandshakeError::NotUpgrade {
                target: Some(target),
            }) if http_route(&target).is_some() => {
                let (status, content_type, body) =
                    http_route(&target).map(|route| route(worker)).unwrap();
                let head = format!(
                    "HTTP/1.1 {status} {}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
                    if status == 200 { "OK" } else { "Service Unavailable" },
                    body.len()
                );
                let mut response = head.into_bytes();
                response.extend_from_slice(&body);
                let _ = compio::time::timeout(
                    Duration::from_secs(5),
                    super::write_bytes(stream, Bytes::from(response)),
                )
                .await;
                super::io::shutdown_write(stream);
                return Err(Disconnect::HttpRequest);
            }
            Err(e) => {
                crate::limited!(crate::log_limit::HANDSHAKE, info, %peer, status = e.status(), error = %e, "refused WebSocket upgrade");
                let _ = compio::time::timeout(
                    Duration::from_secs(1),
                    super::write_bytes(stream, Bytes::from(e.response())),
                )
                .await;
                super::io::shutdown_write(stream);
                return Err(Disconnect::HandshakeFailed);
            }
        }
        if buf.capacity() - buf.len() < 512 {
            buf.reserve(1024);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match compio::time::timeout(left, super::read_some(stream, buf)).await {
            Err(_) => {
                crate::limited!(crate::log_limit::HANDSHAKE, info, %peer, timeout_ms = cfg.handshake_timeout.as_millis() as u64, "WebSocket handshake timed out");
                return Err(Disconnect::HandshakeFailed);
            }
            Ok((Ok(0), _)) => return Err(Disconnect::HandshakeFailed),
            Ok((Ok(_), b)) => buf = b,
            Ok((Err(_), _)) => return Err(Disconnect::IoError),
        }
    };
    if !origin_allowed(
        request.origin.as_deref(),
        request.host.as_deref(),
        &cfg.access.allowed_origins,
    ) {
        let origin = request.origin.as_deref().unwrap_or("");
        crate::limited!(crate::log_limit::HANDSHAKE, warn, %peer, origin, "refused WebSocket upgrade from a browser origin that is not allowed (--allowed-origin)");
        let body = format!(
            "origin {origin} is not allowed; start the server with --allowed-origin {origin}"
        );
        let _ = compio::time::timeout(
            Duration::from_secs(1),
            super::write_bytes(stream, Bytes::from(http_response(403, &body, &[]))),
        )
        .await;
        super::io::shutdown_write(stream);
        return Err(Disconnect::HandshakeFailed);
    }
    let token = presented_token(request.authorization.as_deref(), &request.target);
    let response = Bytes::from(switching_protocols(&request.accept));
    match compio::time::timeout(Duration::from_secs(2), super::write_bytes(stream, response)).await
    {
        Ok(Ok(())) => {}
        _ => return Err(Disconnect::IoError),
    }
    tracing::debug!(%peer, target = %request.target, "WebSocket upgraded");
    Ok(WsSession::new(
        Arc::clone(&worker.app.sessions),
        token.as_deref(),
        buf[consumed..].to_vec(),
        peer,
        Instant::now(),
    ))
}

/// Feeds the session what the client sends and its timer, and carries out its actions.
async fn read_messages(
    worker: &Worker,
    stream: &TcpStream,
    client: &Client,
    mut session: WsSession,
) -> Disconnect {
    // Telemetry clients send little and hold no read buffer while idle (they borrow the
    // worker's scratch once readable); an echo peer (Autobahn) sends megabytes.
    let echo_chunk = worker.app.config.echo.then_some(256 * 1024);
    let mut actions = Vec::new();
    session.start(Instant::now(), &mut actions);
    loop {
        if let Some(reason) = act(worker, client, &mut session, &mut actions).await {
            return reason;
        }
        let wait = session.deadline().saturating_duration_since(Instant::now());
        match compio::time::timeout(wait, super::io::readable(stream)).await {
            Err(_) => session.on_timeout(Instant::now(), &mut actions),
            Ok(Err(_)) => return Disconnect::IoError,
            Ok(Ok(())) => {
                let scratch = match echo_chunk {
                    Some(chunk) => Vec::with_capacity(chunk),
                    None => worker.take_scratch(),
                };
                let (res, b) = super::io::read_ready(stream, scratch).await;
                match res {
                    Ok(0) => return Disconnect::PeerClosed,
                    Ok(_) => session.on_bytes(&b, Instant::now(), &mut actions),
                    Err(_) => return Disconnect::IoError,
                }
                worker.return_scratch(b);
            }
        }
    }
}

/// Carries out the session's actions; `Some` ends the reader (the close has been started).
async fn act(
    worker: &Worker,
    client: &Client,
    session: &mut WsSession,
    actions: &mut Vec<Action>,
) -> Option<Disconnect> {
    let grace = worker.app.config.close_grace;
    while !actions.is_empty() {
        for action in std::mem::take(actions) {
            match action {
                Action::Send { bytes, unread } => {
                    if client.push_control(bytes).is_err() {
                        let frame = crate::ws::frame::close_frame(close::POLICY_VIOLATION, unread);
                        client.start_close(Disconnect::ControlOverflow, Some(frame), grace);
                        return Some(Disconnect::ControlOverflow);
                    }
                }
                Action::Submit(batch) => {
                    // Boxed: only a client that sends commands pays for this state machine.
                    let result = Box::pin(super::commands::submit(worker, batch)).await;
                    session.applied(result, worker.is_shutting_down(), Instant::now(), actions);
                }
                Action::Tally { accepted, rejected } => {
                    super::commands::count(worker, accepted, &rejected)
                }
                Action::Close { reason, frame } => {
                    client.start_close(reason, frame, grace);
                    return Some(reason);
                }
            }
        }
    }
    None
}

/// A plain HTTP page: (status, content type, body).
type Route = fn(&Worker) -> (u16, &'static str, Vec<u8>);

/// Plain HTTP GETs served on the WebSocket port: the dashboard, metrics and health.
fn http_route(target: &str) -> Option<Route> {
    let path = target.split('?').next().unwrap_or("/");
    match path {
        "/" | "/index.html" => Some(|w: &Worker| {
            if w.app.config.echo {
                (
                    200,
                    "text/plain; charset=utf-8",
                    b"aerobridge echo server\n".to_vec(),
                )
            } else {
                (
                    200,
                    "text/html; charset=utf-8",
                    crate::dashboard::PAGE.as_bytes().to_vec(),
                )
            }
        }),
        "/metrics" => Some(|w: &Worker| {
            (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                crate::metrics::render(&w.app.metrics_view()).into_bytes(),
            )
        }),
        "/healthz" => Some(|w: &Worker| {
            let (status, text) = crate::metrics::health(&w.app.metrics_view());
            (
                status,
                "text/plain; charset=utf-8",
                format!("{text}\n").into_bytes(),
            )
        }),
        _ => None,
    }
}
