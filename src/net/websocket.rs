//! WebSocket port (8765): the upgrade (or a plain HTTP page), then telemetry frames out and
//! client messages in. What messages mean (commands, pings, Close codes, echo) is the
//! [`WsSession`]'s; this shell moves bytes, timers and command batches between it and the socket.

use crate::app::Worker;
use crate::fanout::stats::Disconnect;
use crate::fanout::worker::Client;
use crate::packet::Transport;
use crate::session::upgrade::{page_response, Page, Step, Upgrade};
use crate::session::websocket::WsSession;
use crate::session::{Action, Applied};
use bytes::Bytes;
use compio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Serves one WebSocket connection: handshake, then frames until it ends.
pub async fn serve(worker: &Rc<Worker>, stream: &TcpStream, peer: SocketAddr) -> Disconnect {
    // The handshake's state (request buffer, parsed headers) lives in its own allocation, freed
    // before the long telemetry phase: an idle client's task stays small.
    let mut session = match Box::pin(upgrade(worker, stream, peer)).await {
        Ok(session) => session,
        Err(reason) => return reason,
    };
    let client = worker.register(Transport::WebSocket, peer);
    if let Some(agreed) = session.deflate() {
        worker.enable_deflate(&client, agreed);
    }
    let reason = super::run_client(
        stream,
        worker,
        &client,
        read_messages(worker, stream, &client, &mut session),
    )
    .await;
    super::finish(worker, &mut session);
    reason
}

/// Reads the first request and carries out what the [`Upgrade`] session decides: a WebSocket
/// session, a plain HTTP page, or a refusal.
async fn upgrade(
    worker: &Rc<Worker>,
    stream: &TcpStream,
    peer: SocketAddr,
) -> Result<WsSession, Disconnect> {
    let mut up = Upgrade::new(Arc::clone(&worker.app.sessions), peer, Instant::now());
    loop {
        // The request accumulates in the session; reads borrow the worker's scratch buffer.
        let left = up.deadline().saturating_duration_since(Instant::now());
        let read = super::read_some(stream, worker.take_scratch());
        let step = match compio::time::timeout(left, read).await {
            Err(_) => up.on_timeout(Instant::now()),
            Ok((Ok(n), b)) => {
                let step = if n == 0 {
                    up.on_eof()
                } else {
                    up.on_bytes(&b, Instant::now())
                };
                worker.return_scratch(b);
                step
            }
            Ok((Err(_), _)) => return Err(Disconnect::IoError),
        };
        let (response, deadline, outcome) = match step {
            Step::More => continue,
            Step::Page { page, head } => (
                render(worker, page, head),
                Duration::from_secs(5),
                Err(Disconnect::HttpRequest),
            ),
            Step::Refuse { response, reason } => (response, Duration::from_secs(1), Err(reason)),
            Step::Upgraded {
                response,
                token,
                leftover,
                v2,
                deflate,
            } => {
                let session = WsSession::new(
                    Arc::clone(&worker.app.sessions),
                    token.as_deref(),
                    leftover,
                    peer,
                    Instant::now(),
                    v2,
                    deflate,
                );
                (response, Duration::from_secs(2), Ok(session))
            }
        };
        let written = response.is_empty()
            || matches!(
                compio::time::timeout(deadline, super::write_bytes(stream, Bytes::from(response)))
                    .await,
                Ok(Ok(()))
            );
        return match outcome {
            Ok(session) if written => Ok(session),
            Ok(_) => Err(Disconnect::IoError),
            Err(reason) => {
                super::io::shutdown_write(stream);
                Err(reason)
            }
        };
    }
}

/// A plain HTTP page, rendered now (`head`: headers only).
fn render(worker: &Worker, page: Page, head: bool) -> Vec<u8> {
    let app = &worker.app;
    let text = "text/plain; charset=utf-8";
    match page {
        Page::Dashboard if app.config.echo => {
            page_response(200, text, b"aerobridge echo server\n", head)
        }
        Page::Dashboard => page_response(
            200,
            "text/html; charset=utf-8",
            crate::dashboard::PAGE.as_bytes(),
            head,
        ),
        Page::Metrics => page_response(
            200,
            "text/plain; version=0.0.4; charset=utf-8",
            crate::metrics::render(&app.metrics_view()).as_bytes(),
            head,
        ),
        Page::Health => {
            let (status, body) = crate::metrics::health(&app.metrics_view());
            page_response(status, text, format!("{body}\n").as_bytes(), head)
        }
        Page::Favicon => page_response(
            200,
            "image/svg+xml",
            crate::dashboard::FAVICON.as_bytes(),
            head,
        ),
        Page::Connections => page_response(
            200,
            "application/json",
            app.admission.connections.render(10_000).as_bytes(),
            head,
        ),
        Page::NotFound => page_response(
            404,
            text,
            b"not found: this is aerobridge's WebSocket port; pages: / (dashboard), /metrics, /healthz, /connections\n",
            head,
        ),
    }
}

/// Feeds the session what the client sends and its timer, and carries out its actions.
async fn read_messages(
    worker: &Worker,
    stream: &TcpStream,
    client: &Client,
    session: &mut WsSession,
) -> Disconnect {
    // Telemetry clients send little and hold no read buffer while idle (they borrow the
    // worker's scratch once readable); an echo peer (Autobahn) sends megabytes.
    let echo_chunk = worker.app.config.echo.then_some(256 * 1024);
    let mut actions = Vec::new();
    session.set_clock(super::clock(worker, client));
    session.start(&mut actions);
    loop {
        if !actions.is_empty() {
            // Boxed: an idle client's task does not carry this state machine.
            if let Some(reason) = Box::pin(super::act(worker, client, session, &mut actions)).await
            {
                return reason;
            }
        }
        let wait = session.deadline().saturating_duration_since(Instant::now());
        match compio::time::timeout(wait, super::io::readable(stream)).await {
            Err(_) => {
                session.set_clock(super::clock(worker, client));
                session.on_timeout(Instant::now(), &mut actions)
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
                        let now = Instant::now();
                        client.info.touch(now);
                        session.set_clock(super::clock(worker, client));
                        session.on_bytes(&b, now, &mut actions)
                    }
                    Err(_) => return Disconnect::IoError,
                }
                worker.return_scratch(b);
            }
        }
    }
}

impl super::Answered for WsSession {
    fn applied(
        &mut self,
        result: Option<Applied>,
        stopping: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        WsSession::applied(self, result, stopping, now, out);
    }

    fn finish(&mut self, now: Instant, out: &mut Vec<Action>) {
        WsSession::finish(self, now, out);
    }
}
