//! One connection's text messages, whichever transport carries them (a WebSocket text message,
//! a line on the TCP data port): v1 commands, the `hello` that switches to v2, and v2 ops.
//!
//! - v1 (the default): on WebSocket every message is a command (or a batch), as upstream's bridge
//!   has it; on the TCP data port everything is ignored, as in v1 — except a `hello`.
//! - v2: every message is an op ([`super::v2`]); a v1 command object (no `op`) is still accepted
//!   and answered with a v1 reply. Malformed JSON gets a `bad_request` error.

use super::commands::{parse_message, tally, Commands, Outcome};
use super::v2::{code, error_json, Clock, Hello, V2};
use super::{Action, Applied, Settings};
use crate::packet::Framing;
use crate::ws::close;
use crate::Disconnect;
use simd_json::prelude::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// The text side of one connection.
#[derive(Debug)]
pub struct Messages {
    settings: Arc<Settings>,
    commands: Commands,
    /// Boxed: most connections never say hello, and stay small.
    v2: Option<Box<V2>>,
    /// Replies' framing in v1 (v2 frames its own).
    framing: Framing,
    /// v1 text is commands (WebSocket) or ignored (TCP data port).
    v1_commands: bool,
    received: Instant,
    clock: Clock,
    closed: bool,
    peer: SocketAddr,
}

impl Messages {
    /// A connection from `peer` framed as `framing`; `presented` is a token it brought along.
    pub fn new(
        settings: Arc<Settings>,
        presented: Option<&str>,
        framing: Framing,
        peer: SocketAddr,
        now: Instant,
    ) -> Self {
        Self {
            commands: Commands::new(&settings, presented),
            v2: None,
            framing,
            v1_commands: framing == Framing::WebSocket,
            received: now,
            clock: Clock {
                wall_us: 0,
                seq: 0,
                last_sent: now,
            },
            closed: false,
            settings,
            peer,
        }
    }

    /// What the shell knows of the world now (pongs, heartbeats).
    pub fn set_clock(&mut self, clock: Clock) {
        self.clock = clock;
    }

    /// Whether the connection speaks v2.
    pub fn is_v2(&self) -> bool {
        self.v2.is_some()
    }

    /// The v2 session id, once in v2.
    pub fn session_id(&self) -> Option<&str> {
        self.v2.as_deref().map(V2::session)
    }

    /// The connection ended at `now`: a v2 session is kept for `resume` ([`Action::Park`]).
    pub fn finish(&mut self, now: Instant, out: &mut Vec<Action>) {
        if let Some(park) = self.v2.as_deref_mut().and_then(|v2| v2.park(now)) {
            out.push(park);
        }
    }

    /// Whether a batch is with the tick.
    pub fn is_waiting(&self) -> bool {
        self.commands.is_waiting() || self.v2.as_deref().is_some_and(V2::is_waiting)
    }

    /// Whether the last action was a Close.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// v2's timer (heartbeat, idle), once in v2.
    pub fn deadline(&self) -> Option<Instant> {
        self.v2.as_deref().map(V2::deadline)
    }

    /// Enters v2 without a `hello` (WebSocket subprotocol `aerobridge.v2`).
    pub fn enter_v2(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.v2.is_none() {
            self.v2 = Some(Box::new(V2::start(
                &self.settings,
                self.framing,
                Hello::default(),
                now,
                out,
            )));
        }
    }

    /// The peer sent bytes at `now` (v2's idle rule counts any).
    pub fn touch(&mut self, now: Instant) {
        self.received = now;
        if let Some(v2) = &mut self.v2 {
            v2.touch(now);
        }
    }

    /// v2's heartbeat or idle disconnect.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.closed || self.is_waiting() {
            return;
        }
        let clock = self.clock;
        if let Some(v2) = &mut self.v2 {
            if now >= v2.deadline() && v2.on_timeout(now, &clock, out) {
                crate::limited!(crate::log_limit::PROTOCOL, now, info, peer = %self.peer, "closing v2 connection: idle");
                self.close(
                    Disconnect::IdleTimeout,
                    close::POLICY_VIOLATION,
                    "idle timeout",
                    out,
                );
            }
        }
    }

    /// One complete message (a WebSocket text message, a line).
    pub fn on_message(&mut self, text: &[u8], now: Instant, out: &mut Vec<Action>) {
        if self.closed {
            return;
        }
        if self.v2.is_some() || memchr::memmem::find(text, b"\"op\"").is_some() {
            // simd-json parses in place: a copy, so the v1 path still has the text.
            let mut copy = text.to_vec();
            let parsed = simd_json::to_borrowed_value(&mut copy);
            match parsed {
                Ok(value) => {
                    if let Some(obj) = value.as_object() {
                        if let Some(op) = obj.get("op") {
                            let id = super::v2::render_id(obj.get("id"));
                            match op.as_str() {
                                Some(op) => self.on_op(op, obj, id.as_deref(), now, out),
                                None => {
                                    self.bad_request(id.as_deref(), "'op' must be a string", out)
                                }
                            }
                            return;
                        }
                    }
                }
                Err(e) if self.v2.is_some() => {
                    let msg = format!(
                        "malformed JSON: {}",
                        crate::telemetry::decode::describe_json_error(
                            &e,
                            r#"expected a JSON object such as {"op": "ping", "id": 1}"#
                        )
                    );
                    self.bad_request(None, &msg, out);
                    return;
                }
                Err(_) => {}
            };
        }
        if self.v2.is_none() && !self.v1_commands {
            return; // the TCP data port in v1 ignores what clients send
        }
        let parsed = parse_message(&self.settings, text);
        if parsed.is_empty() {
            return;
        }
        match self.commands.gate(&self.settings, parsed, self.received) {
            Some(batch) => out.push(Action::Submit(batch)),
            None => self.reply_v1(None, false, self.received, out),
        }
    }

    /// A line past the size limit (its bytes were dropped): v2 is told, v1 ignores it.
    pub fn too_long(&mut self, limit: usize, out: &mut Vec<Action>) {
        if self.v2.is_some() {
            let msg =
                format!("message longer than {limit} bytes (--ws-max-message); it was dropped");
            self.bad_request(None, &msg, out);
        }
    }

    fn bad_request(&mut self, id: Option<&str>, message: &str, out: &mut Vec<Action>) {
        match &self.v2 {
            Some(v2) => v2.bad_request(id, message, out),
            // A v1 WebSocket client that sent an op other than hello: it does not read errors
            // without an id anyway.
            None if self.v1_commands => {
                self.send(error_json(id, code::BAD_REQUEST, message, b""), out)
            }
            None => {}
        }
    }

    fn send(&self, json: Vec<u8>, out: &mut Vec<Action>) {
        out.push(Action::Send {
            bytes: self.framing.frame(&json),
            unread: "replies not read",
        });
    }

    fn on_op(
        &mut self,
        op: &str,
        obj: &simd_json::borrowed::Object<'_>,
        id: Option<&str>,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let clock = self.clock;
        if let Some(v2) = &mut self.v2 {
            v2.on_op(op, obj, &mut self.commands, now, &clock, out);
            self.check_flood(now, out);
            return;
        }
        if op != "hello" {
            // v1: ops other than hello mean nothing yet. On the data port they are ignored like
            // everything else; on WebSocket the client learns why.
            let msg =
                format!("{op:?} needs protocol 2: send {{\"op\":\"hello\",\"protocol\":2}} first");
            return self.bad_request(id, &msg, out);
        }
        let hello = match Hello::parse(obj) {
            Ok(h) => h,
            Err(msg) => return self.send(error_json(id, code::BAD_REQUEST, &msg, b""), out),
        };
        match hello.protocol {
            None | Some(2) => {}
            Some(p) => return self.send(super::v2::unsupported_protocol(id, p, "as it was"), out),
        }
        let framing = match (self.framing, hello.framing) {
            (Framing::WebSocket, _) => Framing::WebSocket,
            (_, Some(f)) => f,
            (_, None) => Framing::Lines,
        };
        self.v2 = Some(Box::new(V2::start(
            &self.settings,
            framing,
            hello,
            now,
            out,
        )));
    }

    /// The tick's answer to the last [`Action::Submit`] (`None`: it never got there).
    pub fn applied(
        &mut self,
        result: Option<Applied>,
        stopping: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.closed {
            return;
        }
        if let Some(v2) = self.v2.as_mut().filter(|v| v.is_waiting()) {
            v2.applied(result, stopping, out);
            self.check_flood(now, out);
        } else if self.commands.is_waiting() {
            self.reply_v1(result, stopping, now, out);
        }
    }

    fn reply_v1(
        &mut self,
        result: Option<Applied>,
        stopping: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        let outcomes = self.commands.applied(result, stopping);
        out.push(tally(&outcomes));
        for outcome in &outcomes {
            match outcome {
                o if o.id().is_some() => {
                    let mut reply = Vec::new();
                    o.write_reply(&mut reply);
                    out.push(Action::Send {
                        bytes: frame_reply(self.framing_now(), reply),
                        unread: "replies not read",
                    });
                }
                Outcome::Rejected(r) if self.framing == Framing::WebSocket => {
                    crate::limited!(crate::log_limit::COMMAND_REJECTED, now, info, peer = %self.peer, error = %r.error, variable = r.variable.as_deref().unwrap_or(""), "WebSocket command rejected (no id, so no reply)");
                }
                Outcome::Rejected(r) => {
                    crate::limited!(crate::log_limit::COMMAND_REJECTED, now, info, peer = %self.peer, error = %r.error, variable = r.variable.as_deref().unwrap_or(""), "telemetry-port command rejected (no id, so no reply)");
                }
                _ => {}
            }
        }
        self.check_flood(now, out);
    }

    fn framing_now(&self) -> Framing {
        self.v2.as_deref().map_or(self.framing, V2::framing)
    }

    fn check_flood(&mut self, now: Instant, out: &mut Vec<Action>) {
        if self.commands.is_flooding() && !self.closed {
            crate::limited!(crate::log_limit::COMMAND_FLOOD, now, warn, peer = %self.peer, limit = self.settings.access.rate_per_second, "disconnecting command flood");
            self.close(
                Disconnect::CommandFlood,
                close::POLICY_VIOLATION,
                "command flood",
                out,
            );
        }
    }

    fn close(&mut self, reason: Disconnect, code: u16, text: &str, out: &mut Vec<Action>) {
        self.closed = true;
        out.push(Action::Close {
            reason,
            frame: (self.framing == Framing::WebSocket)
                .then(|| crate::ws::frame::close_frame(code, text)),
        });
    }
}

/// A v1 reply line (it ends in `\n`) framed for the connection: as is on TCP lines (and inside
/// the WebSocket message, as v1 always sent it), without the newline when length-prefixed.
fn frame_reply(framing: Framing, reply: Vec<u8>) -> bytes::Bytes {
    match framing {
        Framing::Lines => bytes::Bytes::from(reply),
        Framing::WebSocket => {
            crate::ws::frame::server_frame(crate::ws::frame::OpCode::Text, &reply)
        }
        Framing::Length => framing.frame(reply.strip_suffix(b"\n").unwrap_or(&reply)),
    }
}
