//! The first request on the WebSocket port: an upgrade to a [`WsSession`](super::websocket),
//! a plain HTTP page (the dashboard, `/metrics`, `/healthz`), or a refusal that says why (400,
//! 403, 426, 431, or silence past the handshake timeout).

use super::Settings;
use crate::access::{origin_allowed, presented_token};
use crate::ws::handshake::{http_response, parse_upgrade, switching_protocols, HandshakeError};
use crate::Disconnect;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The WebSocket subprotocol that selects session protocol v2.
pub const V2_SUBPROTOCOL: &str = "aerobridge.v2";

/// Longest upgrade request accepted.
pub const MAX_REQUEST: usize = 8 * 1024;

/// A plain HTTP page served on the WebSocket port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Page {
    /// `GET /`: the dashboard (a short note in echo mode).
    Dashboard,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /healthz`: 200 or 503 with the reason.
    Health,
    /// `GET /favicon.ico`: the icon.
    Favicon,
    /// `GET /connections`: every telemetry connection (JSON).
    Connections,
    /// `GET /aerobridge-client.js`: the JavaScript client library (the dashboard's, and any
    /// page's that wants it from the bridge itself).
    ClientLibrary,
    /// Any other path: 404 naming the pages there are.
    NotFound,
}

/// The page a plain GET or HEAD names.
pub fn route(target: &str) -> Page {
    match target.split('?').next().unwrap_or("/") {
        "/" | "/index.html" => Page::Dashboard,
        "/metrics" => Page::Metrics,
        "/healthz" => Page::Health,
        "/favicon.ico" => Page::Favicon,
        "/connections" => Page::Connections,
        "/aerobridge-client.js" => Page::ClientLibrary,
        _ => Page::NotFound,
    }
}

/// A complete HTTP response that closes the connection; for a HEAD request (`head`) the same
/// headers without the body.
pub fn page_response(status: u16, content_type: &str, body: &[u8], head: bool) -> Vec<u8> {
    let phrase = match status {
        200 => "OK",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let mut out = format!(
        "HTTP/1.1 {status} {phrase}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if !head {
        out.extend_from_slice(body);
    }
    out
}

/// What to do next with the connection.
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Read more, until [`Upgrade::deadline`].
    More,
    /// A plain HTTP request: answer it with this page (`head`: headers only), then close.
    Page {
        /// Which page.
        page: Page,
        /// A HEAD request.
        head: bool,
    },
    /// Refuse: send `response` (possibly empty), then close for `reason`.
    Refuse {
        /// The HTTP response.
        response: Vec<u8>,
        /// Why (counted).
        reason: Disconnect,
    },
    /// Accepted: send `response` (101 Switching Protocols), then run a WebSocket session.
    Upgraded {
        /// The 101 response.
        response: Vec<u8>,
        /// The token the client presented (header or query), if any.
        token: Option<String>,
        /// Bytes the client sent after its request.
        leftover: Vec<u8>,
        /// It chose the subprotocol [`V2_SUBPROTOCOL`]: v2 from the start.
        v2: bool,
        /// permessage-deflate, when agreed.
        deflate: Option<crate::ws::deflate::Agreed>,
    },
}

/// A connection that has not finished its first request.
#[derive(Debug)]
pub struct Upgrade {
    settings: Arc<Settings>,
    buf: Vec<u8>,
    deadline: Instant,
    peer: SocketAddr,
}

impl Upgrade {
    /// A new connection from `peer` (for logs), accepted at `now`.
    pub fn new(settings: Arc<Settings>, peer: SocketAddr, now: Instant) -> Self {
        Self {
            deadline: now + settings.handshake_timeout,
            settings,
            buf: Vec::new(),
            peer,
        }
    }

    /// The settings it was made with.
    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    /// The peer (for logs).
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// When the client must have finished its request.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Bytes from the client.
    pub fn on_bytes(&mut self, data: &[u8], now: Instant) -> Step {
        self.buf.extend_from_slice(data);
        let peer = self.peer;
        let (request, consumed) = match parse_upgrade(&self.buf, MAX_REQUEST) {
            Ok(Some(done)) => done,
            Ok(None) => return Step::More,
            // Plain HTTP is not a failed upgrade: answered (404 included), never logged.
            Err(HandshakeError::NotUpgrade {
                target: Some(target),
                head,
            }) => {
                return Step::Page {
                    page: route(&target),
                    head,
                }
            }
            Err(e) => {
                crate::limited!(crate::log_limit::HANDSHAKE, now, info, %peer, status = e.status(), error = %e, "refused WebSocket upgrade");
                return Step::Refuse {
                    response: e.response(),
                    reason: Disconnect::HandshakeFailed,
                };
            }
        };
        if !origin_allowed(
            request.origin.as_deref(),
            request.host.as_deref(),
            &self.settings.access.allowed_origins,
        ) {
            let origin = request.origin.as_deref().unwrap_or("");
            crate::limited!(crate::log_limit::HANDSHAKE, now, warn, %peer, origin, "refused WebSocket upgrade from a browser origin that is not allowed (--allowed-origin)");
            let body = format!(
                "origin {origin} is not allowed; start the server with --allowed-origin {origin}"
            );
            return Step::Refuse {
                response: http_response(403, &body, &[]),
                reason: Disconnect::HandshakeFailed,
            };
        }
        tracing::debug!(%peer, target = %request.target, "WebSocket upgraded");
        // Echo mode (Autobahn) speaks no session protocol.
        let v2 = !self.settings.echo && request.protocols.iter().any(|p| p == V2_SUBPROTOCOL);
        // Echo mode compresses each message on its own, so any window size will do.
        let deflate = crate::ws::deflate::negotiate(
            &request.extensions,
            self.settings.compression,
            self.settings.echo,
        );
        let extensions = deflate.map(|d| d.response());
        Step::Upgraded {
            response: switching_protocols(
                &request.accept,
                v2.then_some(V2_SUBPROTOCOL),
                extensions.as_deref(),
            ),
            v2,
            deflate,
            token: presented_token(request.authorization.as_deref(), &request.target),
            leftover: self.buf[consumed..].to_vec(),
        }
    }

    /// The client closed before finishing its request.
    pub fn on_eof(&self) -> Step {
        Step::Refuse {
            response: Vec::new(),
            reason: Disconnect::HandshakeFailed,
        }
    }

    /// The deadline passed without a complete request.
    pub fn on_timeout(&self, now: Instant) -> Step {
        crate::limited!(crate::log_limit::HANDSHAKE, now, info, peer = %self.peer, timeout_ms = self.settings.handshake_timeout.as_millis() as u64, "WebSocket handshake timed out");
        Step::Refuse {
            response: Vec::new(),
            reason: Disconnect::HandshakeFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upgrade(settings: Settings) -> Upgrade {
        Upgrade::new(
            Arc::new(settings),
            "127.0.0.1:1".parse().unwrap(),
            Instant::now(),
        )
    }

    const REQUEST: &str = "GET /?token=s%20t HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

    #[test]
    fn a_request_in_pieces_upgrades_with_the_token_and_what_followed() {
        let mut u = upgrade(crate::session::test_settings(false));
        assert_eq!(u.on_bytes(REQUEST.as_bytes(), Instant::now()), Step::More);
        let Step::Upgraded {
            response,
            token,
            leftover,
            v2: false,
            deflate: None,
        } = u.on_bytes(b"\r\n\x81\x80", Instant::now())
        else {
            panic!()
        };
        let response = String::from_utf8(response).unwrap();
        assert!(response.starts_with("HTTP/1.1 101"), "{response}");
        assert!(
            response.contains("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
            "RFC 6455's example"
        );
        assert_eq!(token.as_deref(), Some("s t"));
        assert_eq!(leftover, b"\x81\x80");
    }

    #[test]
    fn plain_gets_name_pages_and_everything_else_is_refused_with_a_status() {
        let mut u = upgrade(crate::session::test_settings(false));
        assert_eq!(
            u.on_bytes(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", Instant::now()),
            Step::Page {
                page: Page::Metrics,
                head: false
            }
        );
        let mut u = upgrade(crate::session::test_settings(false));
        assert_eq!(
            u.on_bytes(b"HEAD /nope HTTP/1.1\r\nHost: x\r\n\r\n", Instant::now()),
            Step::Page {
                page: Page::NotFound,
                head: true
            }
        );
        let mut u = upgrade(crate::session::test_settings(false));
        let Step::Refuse { response, reason } = u.on_bytes(
            REQUEST
                .replace(": 13", ": 8")
                .as_bytes()
                .iter()
                .chain(b"\r\n")
                .copied()
                .collect::<Vec<_>>()
                .as_slice(),
            Instant::now(),
        ) else {
            panic!()
        };
        assert!(String::from_utf8(response)
            .unwrap()
            .starts_with("HTTP/1.1 426"));
        assert_eq!(reason, Disconnect::HandshakeFailed);
        assert!(
            matches!(upgrade(crate::session::test_settings(false)).on_timeout(Instant::now()), Step::Refuse { response, .. } if response.is_empty())
        );
    }

    #[test]
    fn browsers_from_other_sites_get_403() {
        let mut u = upgrade(crate::session::test_settings(false));
        let request = format!("{REQUEST}Origin: https://evil.example\r\n\r\n");
        let Step::Refuse { response, .. } = u.on_bytes(request.as_bytes(), Instant::now()) else {
            panic!()
        };
        assert!(String::from_utf8(response)
            .unwrap()
            .starts_with("HTTP/1.1 403"));
    }

    #[test]
    fn routes() {
        assert_eq!(route("/"), Page::Dashboard);
        assert_eq!(route("/healthz?x=1"), Page::Health);
        assert_eq!(route("/favicon.ico"), Page::Favicon);
        assert_eq!(route("/aerobridge-client.js"), Page::ClientLibrary);
        assert_eq!(route("/nope"), Page::NotFound);
        let r = String::from_utf8(page_response(503, "text/plain", b"down", false)).unwrap();
        assert!(
            r.starts_with("HTTP/1.1 503 Service Unavailable\r\n") && r.ends_with("\r\n\r\ndown")
        );
        let r = String::from_utf8(page_response(200, "text/plain", b"body", true)).unwrap();
        assert!(
            r.contains("Content-Length: 4\r\n") && r.ends_with("\r\n\r\n"),
            "HEAD: no body"
        );
    }
}
