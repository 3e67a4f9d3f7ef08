//! WebSocket port (8765): the upgrade, then telemetry frames out and client messages in.
//!
//! Text messages are commands, exactly as on the TCP command port (one JSON value per line). A
//! reply is sent only for commands that carry an `"id"`: upstream clients send no id and parse
//! every message as telemetry, so they never see a reply; clients that want replies add an id and
//! tell replies from telemetry by the `"ok"` key (telemetry has `"schema"`). Rejected commands
//! without an id are logged and counted, never silently dropped.

use super::commands::{execute, parse_into, Outcome};
use crate::access::{origin_allowed, presented_token, CommandGate};
use crate::app::Worker;
use crate::command::{LineSplitter, ParseLimits};
use crate::fanout::stats::Disconnect;
use crate::fanout::worker::Client;
use crate::packet::Transport;
use crate::ws::handshake::{http_response, parse_upgrade, switching_protocols};
use crate::ws::{close, frame, Event, MessageReader, OpCode};
use bytes::Bytes;
use compio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Longest upgrade request accepted.
pub const MAX_REQUEST: usize = 8 * 1024;

/// Serves one WebSocket connection: handshake, then frames until it ends.
pub async fn serve(worker: &Rc<Worker>, stream: &TcpStream, peer: SocketAddr) -> Disconnect {
    // The handshake's state (request buffer, parsed headers) lives in its own allocation, freed
    // before the long telemetry phase: an idle client's task stays small.
    let (gate, leftover) = match Box::pin(upgrade(worker, stream, peer)).await {
        Ok(upgraded) => upgraded,
        Err(reason) => return reason,
    };
    let client = worker.register(Transport::WebSocket);
    super::run_client(
        stream,
        worker,
        &client,
        read_messages(worker, stream, &client, gate, leftover, peer),
    )
    .await
}

/// Reads and answers the upgrade request (or a plain HTTP request). On success returns the
/// command gate and any bytes that followed the request.
async fn upgrade(
    worker: &Rc<Worker>,
    stream: &TcpStream,
    peer: SocketAddr,
) -> Result<(CommandGate, Vec<u8>), Disconnect> {
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
    let gate = CommandGate::new(
        &cfg.access,
        presented_token(request.authorization.as_deref(), &request.target).as_deref(),
    );
    let response = Bytes::from(switching_protocols(&request.accept));
    match compio::time::timeout(Duration::from_secs(2), super::write_bytes(stream, response)).await
    {
        Ok(Ok(())) => {}
        _ => return Err(Disconnect::IoError),
    }
    tracing::debug!(%peer, target = %request.target, "WebSocket upgraded");
    Ok((gate, buf[consumed..].to_vec()))
}

async fn read_messages(
    worker: &Worker,
    stream: &TcpStream,
    client: &Client,
    mut gate: CommandGate,
    mut input: Vec<u8>,
    peer: SocketAddr,
) -> Disconnect {
    let cfg = &worker.app.config;
    let mut reader = MessageReader::new(cfg.ws_max_message);
    // Telemetry clients send little and hold no read buffer while idle (they borrow the
    // worker's scratch once readable); an echo peer (Autobahn) sends megabytes.
    let echo_chunk = cfg.echo.then_some(256 * 1024);
    let mut awaiting_pong = false;
    loop {
        let mut pos = 0;
        loop {
            match reader.decode(&mut input[pos..]) {
                Ok(Some((n, event))) => {
                    pos += n;
                    if let Some(event) = event {
                        // Boxed: message handling is rare for telemetry clients; its state
                        // machine is allocated only while a message is being handled.
                        if let Some(reason) =
                            Box::pin(on_event(worker, client, &mut gate, event, peer)).await
                        {
                            return reason;
                        }
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    crate::limited!(crate::log_limit::PROTOCOL, info, %peer, code = e.close_code(), error = %e, "closing WebSocket: protocol error");
                    return close_with(
                        client,
                        Disconnect::ProtocolError,
                        e.close_code(),
                        &e.to_string(),
                        cfg.close_grace,
                    );
                }
            }
        }
        input.drain(..pos);
        if input.is_empty() && input.capacity() > 0 {
            input = Vec::new(); // an idle client keeps no partial-message buffer
        }
        let wait = if awaiting_pong {
            cfg.ws_ping_timeout
        } else {
            cfg.ws_ping_interval
        };
        match compio::time::timeout(wait, super::io::readable(stream)).await {
            Err(_) if awaiting_pong => {
                crate::limited!(crate::log_limit::PROTOCOL, info, %peer, "closing WebSocket: no answer to ping");
                return close_with(
                    client,
                    Disconnect::IdleTimeout,
                    close::POLICY_VIOLATION,
                    "ping timeout",
                    cfg.close_grace,
                );
            }
            Err(_) => {
                if client
                    .push_control(frame::server_frame(OpCode::Ping, b"aerobridge"))
                    .is_err()
                {
                    return Disconnect::ControlOverflow;
                }
                awaiting_pong = true;
            }
            Ok(Err(_)) => return Disconnect::IoError,
            Ok(Ok(())) => {
                let scratch = match echo_chunk {
                    Some(chunk) => Vec::with_capacity(chunk),
                    None => worker.take_scratch(),
                };
                let (res, b) = super::io::read_ready(stream, scratch).await;
                match res {
                    Ok(0) => return Disconnect::PeerClosed,
                    Ok(_) => {
                        awaiting_pong = false;
                        input.extend_from_slice(&b);
                        worker.return_scratch(b);
                    }
                    Err(_) => return Disconnect::IoError,
                }
            }
        }
    }
}

/// Handles one client event; `Some` ends the reader.
async fn on_event(
    worker: &Worker,
    client: &Client,
    gate: &mut CommandGate,
    event: Event,
    peer: SocketAddr,
) -> Option<Disconnect> {
    let grace = worker.app.config.close_grace;
    match event {
        Event::Text(data) if worker.app.config.echo => echo(client, OpCode::Text, &data, grace),
        Event::Binary(data) if worker.app.config.echo => echo(client, OpCode::Binary, &data, grace),
        Event::Text(text) => {
            let cfg = &worker.app.config;
            let limits = ParseLimits {
                max_batch: cfg.command_max_batch,
            };
            let mut splitter = LineSplitter::new(cfg.command_max_line);
            splitter.extend(&text);
            let mut parsed = Vec::new();
            while let Some(line) = splitter.next_line() {
                parse_into(line, limits, &mut parsed);
            }
            if let Some(line) = splitter.finish() {
                parse_into(line, limits, &mut parsed);
            }
            if parsed.is_empty() {
                return None;
            }
            for outcome in execute(worker, gate, parsed).await {
                let mut reply = Vec::new();
                match &outcome {
                    o if o.id().is_some() => o.write_reply(&mut reply),
                    Outcome::Rejected(r) => {
                        crate::limited!(crate::log_limit::COMMAND_REJECTED, info, %peer, error = %r.error, variable = r.variable.as_deref().unwrap_or(""), "WebSocket command rejected (no id, so no reply)");
                        continue;
                    }
                    _ => continue,
                }
                if client
                    .push_control(frame::server_frame(OpCode::Text, &reply))
                    .is_err()
                {
                    return Some(close_with(
                        client,
                        Disconnect::ControlOverflow,
                        close::POLICY_VIOLATION,
                        "replies not read",
                        grace,
                    ));
                }
            }
            if gate.is_flooding() {
                crate::limited!(crate::log_limit::COMMAND_FLOOD, warn, %peer, limit = cfg.access.rate_per_second, "disconnecting command flood");
                return Some(close_with(
                    client,
                    Disconnect::CommandFlood,
                    close::POLICY_VIOLATION,
                    "command flood",
                    grace,
                ));
            }
            None
        }
        Event::Binary(_) => Some(close_with(
            client,
            Disconnect::ProtocolError,
            close::UNSUPPORTED_DATA,
            "binary messages are not supported; send commands as text",
            grace,
        )),
        Event::Ping(payload) => {
            if client
                .push_control(frame::server_frame(OpCode::Pong, &payload))
                .is_err()
            {
                return Some(close_with(
                    client,
                    Disconnect::ControlOverflow,
                    close::POLICY_VIOLATION,
                    "pongs not read",
                    grace,
                ));
            }
            None
        }
        Event::Pong(_) => None,
        Event::Close(code, _) => {
            let echo = code.unwrap_or(close::NORMAL);
            Some(close_with(client, Disconnect::PeerClosed, echo, "", grace))
        }
    }
}

/// Echo mode: the message goes back through the client's queue like any control item.
fn echo(client: &Client, opcode: OpCode, data: &[u8], grace: Duration) -> Option<Disconnect> {
    if client
        .push_control(frame::server_frame(opcode, data))
        .is_err()
    {
        return Some(close_with(
            client,
            Disconnect::ControlOverflow,
            close::POLICY_VIOLATION,
            "echoes not read",
            grace,
        ));
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

/// Starts the close handshake (the Close frame goes out after what is in flight) and returns
/// `why`, so the reader can stop with it.
fn close_with(
    client: &Client,
    why: Disconnect,
    code: u16,
    reason: &str,
    grace: Duration,
) -> Disconnect {
    client.start_close(why, Some(frame::close_frame(code, reason)), grace);
    why
}
