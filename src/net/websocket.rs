//! WebSocket port (8765): the upgrade (or a plain HTTP page), then telemetry frames out and
//! client messages in. What requests and messages mean (pages, refusals, commands, pings,
//! Close codes, echo) is the [`WsConnection`]'s; this shell registers the client once upgraded,
//! drives the session, and renders the pages (it holds what they show).

use crate::app::Worker;
use crate::fanout::stats::Disconnect;
use crate::packet::Transport;
use crate::session::upgrade::{page_response, Page};
use crate::session::websocket::WsConnection;
use crate::session::Settings;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

/// Serves one WebSocket connection: its first request (an upgrade, a page or a refusal), then
/// frames until it ends. One session, [`WsConnection`], driven twice: with its answers written
/// straight to the socket until the upgrade, then as a telemetry client with a queue.
pub async fn serve(
    worker: &Rc<Worker>,
    link: &super::Link,
    peer: SocketAddr,
    settings: Arc<Settings>,
) -> Disconnect {
    let mut session = WsConnection::new(settings, peer, Instant::now());
    let deflate = match super::drive(worker, link, super::Outlet::Socket, &mut session).await {
        super::Ended::Closed(reason) => return reason,
        super::Ended::Upgraded(deflate) => deflate,
    };
    let client = worker.register(Transport::WebSocket, peer);
    client.info.set_tls(link.summary.as_deref());
    if let Some(agreed) = deflate {
        worker.enable_deflate(&client, agreed);
    }
    super::serve_client(worker, link, &client, &mut session).await
}

/// A plain HTTP page, rendered now (`head`: headers only).
pub(crate) fn render(worker: &Worker, page: Page, head: bool) -> Vec<u8> {
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
        Page::ClientLibrary => page_response(
            200,
            "text/javascript; charset=utf-8",
            crate::dashboard::CLIENT_LIBRARY.as_bytes(),
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
            b"not found: this is aerobridge's WebSocket port; pages: / (dashboard), /metrics, /healthz, /connections, /aerobridge-client.js\n",
            head,
        ),
    }
}
