//! A WebSocket connection after the upgrade: client frames in (through the codec in
//! [`crate::ws`]), and out: pongs, replies to commands that carry an `id`, echoes (echo mode),
//! pings after silence, and the Close frame with the code that says why.
//!
//! Text messages are commands, exactly as on the TCP command port. Only commands with an `"id"`
//! get a reply (upstream's clients send none and parse every message as telemetry); refused
//! commands without an id are logged and counted, never silently dropped.

use super::messages::Messages;
use super::upgrade::{Step, Upgrade};
use super::v2::Clock;
use super::{Action, Applied, Outbox, Session, Settings};
use crate::packet::Framing;
use crate::ws::{close, frame, Event, MessageReader, OpCode};
use crate::Disconnect;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// One WebSocket connection.
#[derive(Debug)]
pub struct WsSession {
    settings: Arc<Settings>,
    reader: MessageReader,
    /// Received bytes not yet decoded (a partial frame); empty (no allocation) when idle.
    input: Vec<u8>,
    messages: Messages,
    awaiting_pong: bool,
    deadline: Instant,
    /// When the buffered input arrived: the rate limit judges how fast the client sends, not how
    /// fast the server gets through its messages (each applied command waits for a tick).
    received: Instant,
    closed: bool,
    peer: SocketAddr,
    /// Chose the subprotocol: v2 from the start.
    v2: bool,
    /// permessage-deflate, when agreed.
    deflate: Option<crate::ws::deflate::Agreed>,
}

impl WsSession {
    /// A connection just upgraded: `presented` is the token it brought (header or query),
    /// `leftover` what followed the upgrade request, `peer` is for logs. `v2`: it chose the
    /// subprotocol `aerobridge.v2` (its session starts with `welcome`).
    pub fn new(
        settings: Arc<Settings>,
        presented: Option<&str>,
        leftover: Vec<u8>,
        peer: SocketAddr,
        now: Instant,
        v2: bool,
        deflate: Option<crate::ws::deflate::Agreed>,
    ) -> Self {
        Self {
            reader: MessageReader::new(settings.ws_max_message).with_deflate(deflate.is_some()),
            deflate,
            messages: Messages::new(
                Arc::clone(&settings),
                presented,
                Framing::WebSocket,
                peer,
                now,
            ),
            v2,
            deadline: now + settings.ping_interval,
            received: now,
            settings,
            input: leftover,
            awaiting_pong: false,
            closed: false,
            peer,
        }
    }

    /// When [`on_timeout`](Self::on_timeout) is due if nothing arrives before.
    pub fn deadline(&self) -> Instant {
        // v2 has its own heartbeat and idle rule instead of WebSocket pings.
        self.messages.deadline().unwrap_or(self.deadline)
    }

    /// Whether a batch is with the tick (feed nothing until [`applied`](Self::applied)).
    pub fn is_waiting(&self) -> bool {
        self.messages.is_waiting()
    }

    /// Whether the session has ended (its last action was a Close).
    pub fn is_closed(&self) -> bool {
        self.closed || self.messages.is_closed()
    }

    /// permessage-deflate, when agreed (the shell sets up the client's queue with it).
    pub fn deflate(&self) -> Option<crate::ws::deflate::Agreed> {
        self.deflate
    }

    /// Whether the connection speaks v2.
    pub fn is_v2(&self) -> bool {
        self.messages.is_v2()
    }

    /// What the shell knows of the world now (v2's pongs and heartbeats carry it).
    pub fn set_clock(&mut self, clock: Clock) {
        self.messages.set_clock(clock);
    }

    /// Starts the session: `welcome` for a v2 subprotocol connection, then whatever followed
    /// the upgrade request.
    pub fn start(&mut self, out: &mut Vec<Action>) {
        if self.v2 {
            self.messages.enter_v2(self.received, out);
        }
        self.process(out);
    }

    /// Bytes from the peer.
    pub fn on_bytes(&mut self, data: &[u8], now: Instant, out: &mut Vec<Action>) {
        if self.is_closed() || self.is_waiting() {
            return;
        }
        self.awaiting_pong = false;
        self.deadline = now + self.settings.ping_interval;
        self.received = now;
        self.messages.touch(now);
        self.input.extend_from_slice(data);
        self.process(out);
    }

    /// The deadline passed without a byte from the peer: ping it, or give up on it.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        // While a batch is with the tick the shell reads nothing, so silence proves nothing.
        if self.is_closed() || self.is_waiting() {
            return;
        }
        if self.messages.is_v2() {
            return self.messages.on_timeout(now, out);
        }
        if now < self.deadline {
            return;
        }
        if self.awaiting_pong {
            crate::limited!(crate::log_limit::PROTOCOL, now, info, peer = %self.peer, "closing WebSocket: no answer to ping");
            self.close(
                Disconnect::IdleTimeout,
                close::POLICY_VIOLATION,
                "ping timeout",
                out,
            );
        } else {
            out.push(Action::Send {
                bytes: frame::server_frame(OpCode::Ping, b"aerobridge"),
                unread: "pings not read",
            });
            self.awaiting_pong = true;
            self.deadline = now + self.settings.ping_timeout;
        }
    }

    /// The connection ended at `now` (for any reason): the last actions, a v2 session's
    /// [`Action::Park`].
    pub fn finish(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.messages.finish(now, out);
    }

    /// The tick's answer to the last [`Action::Submit`] (`None`: it never got there); decoding
    /// then goes on with what is buffered.
    pub fn applied(
        &mut self,
        result: Option<Applied>,
        stopping: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.is_closed() || !self.is_waiting() {
            return;
        }
        self.messages.applied(result, stopping, now, out);
        self.process(out);
    }

    /// Decodes buffered input until it runs out, a batch goes to the tick, or the session closes.
    fn process(&mut self, out: &mut Vec<Action>) {
        let mut pos = 0;
        while !self.is_closed() && !self.is_waiting() {
            match self.reader.decode(&mut self.input[pos..]) {
                Ok(Some((n, event))) => {
                    pos += n;
                    if let Some(event) = event {
                        self.on_event(event, out);
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    crate::limited!(crate::log_limit::PROTOCOL, self.received, info, peer = %self.peer, code = e.close_code(), error = %e, "closing WebSocket: protocol error");
                    self.close(
                        Disconnect::ProtocolError,
                        e.close_code(),
                        &e.to_string(),
                        out,
                    );
                }
            }
        }
        self.input.drain(..pos);
        if self.input.is_empty() && self.input.capacity() > 0 {
            self.input = Vec::new(); // an idle client keeps no buffer
        }
    }

    fn on_event(&mut self, event: Event, out: &mut Vec<Action>) {
        match event {
            Event::Text(data) if self.settings.echo => out.push(Action::Send {
                bytes: self.echo(OpCode::Text, &data),
                unread: "echoes not read",
            }),
            Event::Binary(data) if self.settings.echo => out.push(Action::Send {
                bytes: self.echo(OpCode::Binary, &data),
                unread: "echoes not read",
            }),
            Event::Text(text) => self.messages.on_message(&text, self.received, out),
            Event::Binary(_) => self.close(
                Disconnect::ProtocolError,
                close::UNSUPPORTED_DATA,
                "binary messages are not supported; send commands as text",
                out,
            ),
            Event::Ping(payload) => out.push(Action::Send {
                bytes: frame::server_frame(OpCode::Pong, &payload),
                unread: "pongs not read",
            }),
            Event::Pong(_) => {}
            Event::Close(code, _) => self.close(
                Disconnect::PeerClosed,
                code.unwrap_or(close::NORMAL),
                "",
                out,
            ),
        }
    }

    /// An echoed message, compressed on its own when permessage-deflate was agreed and that
    /// makes it smaller.
    fn echo(&self, opcode: OpCode, data: &[u8]) -> bytes::Bytes {
        self.deflate
            .and_then(|d| crate::ws::deflate::echo_frame(opcode, data, d.server_window_bits))
            .unwrap_or_else(|| frame::server_frame(opcode, data))
    }

    fn close(&mut self, reason: Disconnect, code: u16, text: &str, out: &mut Vec<Action>) {
        self.closed = true;
        out.push(Action::Close {
            reason,
            frame: Some(frame::close_frame(code, text)),
        });
    }
}

/// A WebSocket-port connection as a [`Session`]: its first request ([`Upgrade`]: an upgrade, a
/// plain HTTP page or a refusal), then, once upgraded, its [`WsSession`].
#[derive(Debug)]
pub struct WsConnection {
    phase: Phase,
    outbox: Outbox,
}

#[derive(Debug)]
enum Phase {
    /// Reading the first request.
    Upgrading(Upgrade),
    /// Upgraded.
    Open(Box<WsSession>),
    /// Answered or refused: only the Close is left to carry out.
    Done,
}

impl WsConnection {
    /// A new connection from `peer` (for logs), accepted at `now`.
    pub fn new(settings: Arc<Settings>, peer: SocketAddr, now: Instant) -> Self {
        Self {
            phase: Phase::Upgrading(Upgrade::new(settings, peer, now)),
            outbox: Outbox::default(),
        }
    }

    /// The upgraded session, once there is one.
    pub fn session(&self) -> Option<&WsSession> {
        match &self.phase {
            Phase::Open(s) => Some(s),
            _ => None,
        }
    }

    /// Carries out what the upgrade decided.
    fn step(&mut self, step: Step, now: Instant) {
        let Phase::Upgrading(upgrade) = &self.phase else {
            return;
        };
        let within = upgrade.settings().respond_within;
        self.phase = match step {
            Step::More => return,
            Step::Page { page, head } => {
                self.outbox.push(Action::Page {
                    page,
                    head,
                    within: within.page,
                });
                self.outbox.push(Action::Close {
                    reason: Disconnect::HttpRequest,
                    frame: None,
                });
                Phase::Done
            }
            Step::Refuse { response, reason } => {
                if !response.is_empty() {
                    self.outbox.push(Action::Respond {
                        bytes: response.into(),
                        within: within.refusal,
                    });
                }
                self.outbox.push(Action::Close {
                    reason,
                    frame: None,
                });
                Phase::Done
            }
            Step::Upgraded {
                response,
                token,
                leftover,
                v2,
                deflate,
            } => {
                let mut session = WsSession::new(
                    Arc::clone(upgrade.settings()),
                    token.as_deref(),
                    leftover,
                    upgrade.peer(),
                    now,
                    v2,
                    deflate,
                );
                self.outbox.push(Action::Respond {
                    bytes: response.into(),
                    within: within.switching,
                });
                self.outbox.push(Action::Upgraded { deflate });
                let mut out = Vec::new();
                session.start(&mut out);
                self.outbox.extend(out);
                Phase::Open(Box::new(session))
            }
        };
    }
}

impl Session for WsConnection {
    fn set_clock(&mut self, clock: Clock) {
        if let Phase::Open(s) = &mut self.phase {
            s.set_clock(clock);
        }
    }

    fn receive(&mut self, bytes: &[u8], now: Instant) {
        match &mut self.phase {
            Phase::Upgrading(upgrade) => {
                let step = upgrade.on_bytes(bytes, now);
                self.step(step, now);
            }
            Phase::Open(s) => {
                let mut out = Vec::new();
                s.on_bytes(bytes, now, &mut out);
                self.outbox.extend(out);
            }
            Phase::Done => {}
        }
    }

    fn eof(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Upgrading(upgrade) => {
                let step = upgrade.on_eof();
                self.step(step, now);
            }
            Phase::Open(s) if !s.is_closed() => self.outbox.push(Action::Close {
                reason: Disconnect::PeerClosed,
                frame: None,
            }),
            _ => {}
        }
    }

    fn timeout(&mut self, now: Instant) {
        match &mut self.phase {
            Phase::Upgrading(upgrade) => {
                let step = upgrade.on_timeout(now);
                self.step(step, now);
            }
            Phase::Open(s) => {
                let mut out = Vec::new();
                s.on_timeout(now, &mut out);
                self.outbox.extend(out);
            }
            Phase::Done => {}
        }
    }

    fn applied(&mut self, result: Option<Applied>, stopping: bool, now: Instant) {
        if let Phase::Open(s) = &mut self.phase {
            let mut out = Vec::new();
            s.applied(result, stopping, now, &mut out);
            self.outbox.extend(out);
        }
    }

    fn finish(&mut self, now: Instant) {
        if let Phase::Open(s) = &mut self.phase {
            let mut out = Vec::new();
            s.finish(now, &mut out);
            self.outbox.extend(out);
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        self.outbox.pop()
    }

    fn deadline(&self) -> Option<Instant> {
        match &self.phase {
            Phase::Upgrading(upgrade) => Some(upgrade.deadline()),
            Phase::Open(s) => Some(s.deadline()),
            Phase::Done => None,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::time::Duration;

    pub(crate) fn settings(echo: bool) -> Settings {
        crate::session::test_settings(echo)
    }

    /// A masked, final client frame (the codec's own test helper).
    fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
        crate::ws::reader::client_frame(true, opcode, payload, [1, 2, 3, 4])
    }

    fn session_with(settings: Settings, now: Instant) -> WsSession {
        WsSession::new(
            Arc::new(settings),
            None,
            Vec::new(),
            "127.0.0.1:1".parse().unwrap(),
            now,
            false,
            None,
        )
    }

    fn session(echo: bool, now: Instant) -> WsSession {
        session_with(settings(echo), now)
    }

    /// (opcode, payload) of a server frame.
    fn server(bytes: &[u8]) -> (u8, Vec<u8>) {
        let h = crate::ws::frame::decode_header(bytes).expect("a whole server frame");
        let end = h.header_len + h.payload_len as usize;
        (h.opcode, bytes[h.header_len..end].to_vec())
    }

    /// Every action a session has queued.
    fn drain(s: &mut impl Session) -> Vec<Action> {
        std::iter::from_fn(|| s.poll_action()).collect()
    }

    const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: aerobridge.v2\r\n\r\n";

    #[test]
    fn one_shape_from_the_upgrade_to_telemetry() {
        let t0 = Instant::now();
        let settings = Arc::new(settings(false));
        let mut c = WsConnection::new(Arc::clone(&settings), "127.0.0.1:1".parse().unwrap(), t0);
        assert_eq!(c.deadline(), Some(t0 + settings.handshake_timeout));
        c.receive(&UPGRADE.as_bytes()[..20], t0);
        assert!(drain(&mut c).is_empty(), "half a request: nothing yet");
        c.receive(&UPGRADE.as_bytes()[20..], t0);
        let actions = drain(&mut c);
        let [Action::Respond { bytes, within }, Action::Upgraded { deflate: None }, Action::EnterV2(Framing::WebSocket), Action::Send { bytes: welcome, .. }, ..] =
            &actions[..]
        else {
            panic!("{actions:?}")
        };
        assert!(bytes.starts_with(b"HTTP/1.1 101 "));
        assert_eq!(*within, settings.respond_within.switching);
        assert!(String::from_utf8_lossy(welcome).contains("\"op\":\"welcome\""));
        assert_eq!(c.deadline(), Some(c.session().unwrap().deadline()));
        // The peer goes away: a Close, then the session's last word (parked for resume).
        c.eof(t0);
        assert!(matches!(
            drain(&mut c)[..],
            [Action::Close {
                reason: Disconnect::PeerClosed,
                ..
            }]
        ));
        c.finish(t0);
        assert!(matches!(drain(&mut c)[..], [Action::Park(_)]));
    }

    #[test]
    fn pages_refusals_and_silence_end_in_a_close() {
        let t0 = Instant::now();
        let settings = Arc::new(settings(false));
        let peer = "127.0.0.1:1".parse().unwrap();
        let mut page = WsConnection::new(Arc::clone(&settings), peer, t0);
        page.receive(b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n", t0);
        let actions = drain(&mut page);
        assert!(
            matches!(
                &actions[..],
                [
                    Action::Page {
                        page: super::super::upgrade::Page::Metrics,
                        head: true,
                        ..
                    },
                    Action::Close {
                        reason: Disconnect::HttpRequest,
                        ..
                    }
                ]
            ),
            "{actions:?}"
        );
        assert_eq!(page.deadline(), None);
        let mut bad = WsConnection::new(Arc::clone(&settings), peer, t0);
        bad.receive(b"GET / HTTP/1.0\r\n\r\n", t0);
        let actions = drain(&mut bad);
        let [Action::Respond { bytes, .. }, Action::Close {
            reason: Disconnect::HandshakeFailed,
            ..
        }] = &actions[..]
        else {
            panic!("{actions:?}")
        };
        assert!(bytes.starts_with(b"HTTP/1.1 400 "));
        let mut silent = WsConnection::new(Arc::clone(&settings), peer, t0);
        silent.timeout(t0 + settings.handshake_timeout);
        assert!(matches!(
            drain(&mut silent)[..],
            [Action::Close {
                reason: Disconnect::HandshakeFailed,
                ..
            }]
        ));
    }

    #[test]
    fn ping_gets_pong_and_silence_gets_ping_then_close_1008() {
        let t0 = Instant::now();
        let mut s = session(false, t0);
        let mut out = Vec::new();
        s.on_bytes(&client_frame(0x9, b"hi"), t0, &mut out);
        let Action::Send { bytes, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(server(bytes), (0xA, b"hi".to_vec()));
        out.clear();
        s.on_timeout(t0 + Duration::from_secs(19), &mut out);
        assert!(out.is_empty(), "not due yet");
        s.on_timeout(s.deadline(), &mut out);
        let Action::Send { bytes, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(server(bytes).0, 0x9, "a ping after the interval");
        out.clear();
        s.on_timeout(s.deadline(), &mut out);
        let Some(Action::Close {
            reason: Disconnect::IdleTimeout,
            frame: Some(f),
        }) = out.last()
        else {
            panic!("{out:?}")
        };
        assert_eq!(&server(f).1[..2], &1008u16.to_be_bytes());
        assert!(s.is_closed());
    }

    #[test]
    fn commands_with_ids_get_replies_in_order_and_the_rest_of_the_input_waits() {
        let t0 = Instant::now();
        let mut s = session(false, t0);
        let mut input = client_frame(0x1, br#"{"variable":"Controls.Gear","value":1,"id":"a"}"#);
        input.extend(client_frame(0x9, b"after"));
        let mut out = Vec::new();
        s.on_bytes(&input, t0, &mut out);
        assert!(
            matches!(&out[..], [Action::Submit(b)] if b.len() == 1),
            "{out:?}"
        );
        assert!(s.is_waiting());
        out.clear();
        s.applied(
            Some(Applied {
                frame: 5,
                results: vec![Ok(())],
                relayed: false,
            }),
            false,
            Instant::now(),
            &mut out,
        );
        let sends: Vec<(u8, Vec<u8>)> = out
            .iter()
            .filter_map(|a| match a {
                Action::Send { bytes, .. } => Some(server(bytes)),
                _ => None,
            })
            .collect();
        assert_eq!(sends.len(), 2, "{out:?}");
        let reply: serde_json::Value = serde_json::from_slice(&sends[0].1).unwrap();
        assert_eq!(
            (reply["ok"].as_bool(), reply["id"].as_str()),
            (Some(true), Some("a"))
        );
        assert_eq!(
            sends[1],
            (0xA, b"after".to_vec()),
            "the ping waited for the reply"
        );
    }

    #[test]
    fn binary_is_refused_with_1003_and_close_is_echoed_and_last() {
        let t0 = Instant::now();
        let mut s = session(false, t0);
        let mut out = Vec::new();
        s.on_bytes(&client_frame(0x2, b"\x00"), t0, &mut out);
        assert!(matches!(
            out.last(),
            Some(Action::Close {
                reason: Disconnect::ProtocolError,
                ..
            })
        ));
        let mut s = session(false, t0);
        let mut out = Vec::new();
        let mut input = client_frame(0x8, &1000u16.to_be_bytes());
        input.extend(client_frame(0x9, b"too late"));
        s.on_bytes(&input, t0, &mut out);
        assert_eq!(out.len(), 1, "nothing after the Close: {out:?}");
        s.on_bytes(&client_frame(0x9, b"x"), t0, &mut out);
        s.on_timeout(t0 + Duration::from_secs(60), &mut out);
        assert_eq!(out.len(), 1, "a closed session stays silent");
    }

    #[test]
    fn the_rate_limit_judges_arrival_not_how_long_the_tick_takes() {
        // 10 commands/s, bursts of 20; 300 commands arrive at once. However long the tick takes
        // to answer each batch (the session is not even told), the client sent 280 too many.
        let t0 = Instant::now();
        let mut settings = settings(false);
        settings.access.rate_per_second = 10;
        let mut s = session_with(settings, t0);
        let input: Vec<u8> = (0..300)
            .flat_map(|_| client_frame(0x1, br#"{"variable":"Controls.Gear","value":1}"#))
            .collect();
        let mut out = Vec::new();
        s.on_bytes(&input, t0, &mut out);
        while s.is_waiting() {
            s.applied(
                Some(Applied {
                    frame: 1,
                    results: vec![Ok(())],
                    relayed: false,
                }),
                false,
                Instant::now(),
                &mut out,
            );
        }
        assert!(
            matches!(
                out.last(),
                Some(Action::Close {
                    reason: Disconnect::CommandFlood,
                    ..
                })
            ),
            "{:?}",
            out.last()
        );
    }

    #[test]
    fn echo_mode_sends_messages_back() {
        let t0 = Instant::now();
        let mut s = session(true, t0);
        let mut out = Vec::new();
        s.on_bytes(&client_frame(0x2, &[0, 1, 255]), t0, &mut out);
        let Action::Send { bytes, .. } = &out[0] else {
            panic!("{out:?}")
        };
        assert_eq!(server(bytes), (0x2, vec![0, 1, 255]));
    }
}
