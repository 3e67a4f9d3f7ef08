//! The TCP telemetry port (12345): frames go out; what a client sends is split into lines.
//! In v1 (upstream's protocol) every line is ignored except a `hello`, which switches the
//! connection to v2 ([`super::messages`]); from then on each line is a v2 op (or a v1 command
//! object) and replies go out in the framing the `hello` chose.

use super::messages::Messages;
use super::v2::Clock;
use super::{Action, Applied, Settings};
use crate::command::{Line, LineSplitter};
use crate::packet::Framing;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// One telemetry connection on the TCP data port.
#[derive(Debug)]
pub struct DataSession {
    splitter: LineSplitter,
    messages: Messages,
}

impl DataSession {
    /// A new connection from `peer` (for logs).
    pub fn new(settings: Arc<Settings>, peer: SocketAddr, now: Instant) -> Self {
        Self {
            // v2 requests (a `sub` naming many variables) can be long: the WebSocket limit.
            splitter: LineSplitter::new(settings.ws_max_message),
            messages: Messages::new(settings, None, Framing::Lines, peer, now),
        }
    }

    /// Whether a batch is with the tick (feed nothing until [`applied`](Self::applied)).
    pub fn is_waiting(&self) -> bool {
        self.messages.is_waiting()
    }

    /// Whether the session has ended (its last action was a Close).
    pub fn is_closed(&self) -> bool {
        self.messages.is_closed()
    }

    /// Whether the connection speaks v2.
    pub fn is_v2(&self) -> bool {
        self.messages.is_v2()
    }

    /// When [`on_timeout`](Self::on_timeout) is due (v2 only: v1 clients may stay silent).
    pub fn deadline(&self) -> Option<Instant> {
        self.messages.deadline()
    }

    /// What the shell knows of the world now.
    pub fn set_clock(&mut self, clock: Clock) {
        self.messages.set_clock(clock);
    }

    /// Bytes from the peer.
    pub fn on_bytes(&mut self, data: &[u8], now: Instant, out: &mut Vec<Action>) {
        if self.is_closed() {
            return;
        }
        self.messages.touch(now);
        self.splitter.extend(data);
        self.process(now, out);
    }

    /// v2's heartbeat or idle disconnect.
    pub fn on_timeout(&mut self, now: Instant, out: &mut Vec<Action>) {
        self.messages.on_timeout(now, out);
    }

    /// The tick's answer to the last [`Action::Submit`]; then the buffered lines go on.
    pub fn applied(
        &mut self,
        result: Option<Applied>,
        stopping: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.messages.applied(result, stopping, out);
        self.process(now, out);
    }

    fn process(&mut self, now: Instant, out: &mut Vec<Action>) {
        while !self.is_waiting() && !self.is_closed() {
            match self.splitter.next_line() {
                None => break,
                Some(Line::Text(line)) => {
                    if !line.iter().all(u8::is_ascii_whitespace) {
                        self.messages.on_message(line, now, out);
                    }
                }
                Some(Line::TooLong) => {
                    let limit = self.splitter.max_line();
                    self.messages.too_long(limit, out);
                }
            }
        }
        self.splitter.shrink_if_empty();
    }
}
