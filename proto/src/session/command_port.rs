//! The TCP command port (12346). Upstream clients connect, send one command and close, often
//! without a final newline; others keep the connection and send many. Lines are split with a
//! bounded [`LineSplitter`]; everything complete in one read goes to the tick as one batch; every
//! command gets one reply line, in order; the last unterminated line counts at EOF.

use super::commands::{parse_into, tally, Commands};
use super::{Action, Applied, Outbox, Session, Settings};
use crate::command::LineSplitter;
use crate::Disconnect;
use bytes::Bytes;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

/// One command-port connection.
#[derive(Debug)]
pub struct CommandPortSession {
    settings: Arc<Settings>,
    splitter: LineSplitter,
    commands: Commands,
    eof: bool,
    closed: bool,
    peer: SocketAddr,
    outbox: Outbox,
}

impl CommandPortSession {
    /// A new connection from `peer` (for logs).
    pub fn new(settings: Arc<Settings>, peer: SocketAddr) -> Self {
        Self {
            splitter: LineSplitter::new(settings.command_max_line),
            commands: Commands::new(&settings, None),
            settings,
            eof: false,
            closed: false,
            peer,
            outbox: Outbox::default(),
        }
    }

    /// Whether a batch is with the tick (feed nothing until [`applied`](Self::applied)).
    pub fn is_waiting(&self) -> bool {
        self.commands.is_waiting()
    }

    /// Whether the session has ended (its last action was a Close).
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// What the peer sent; `eof` when it closed its side (then `data` is the last of it).
    pub fn on_bytes(&mut self, data: &[u8], eof: bool, now: Instant, out: &mut Vec<Action>) {
        if self.closed || self.is_waiting() || self.eof {
            return;
        }
        self.eof = eof;
        self.splitter.extend(data);
        let mut parsed = Vec::new();
        while let Some(line) = self.splitter.next_line() {
            parse_into(&self.settings, line, &mut parsed);
        }
        if eof {
            if let Some(line) = self.splitter.finish() {
                parse_into(&self.settings, line, &mut parsed);
            }
        }
        if parsed.is_empty() {
            if eof {
                self.close(Disconnect::PeerClosed, out);
            }
            return;
        }
        match self.commands.gate(&self.settings, parsed, now) {
            Some(batch) => out.push(Action::Submit(batch)),
            None => self.applied(None, false, now, out),
        }
    }

    /// The tick's answer to the last [`Action::Submit`] (`None`: it never got there).
    pub fn applied(
        &mut self,
        result: Option<Applied>,
        stopping: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        if self.closed || !self.is_waiting() {
            return;
        }
        let outcomes = self.commands.applied(result, stopping);
        let mut replies = Vec::with_capacity(outcomes.len() * 96);
        for o in &outcomes {
            if let super::commands::Outcome::Rejected(r) = o {
                tracing::debug!(peer = %self.peer, error = %r.error, "command rejected");
            }
            o.write_reply(&mut replies);
        }
        out.push(tally(&outcomes));
        out.push(Action::Send {
            bytes: Bytes::from(replies),
            unread: "replies not read",
        });
        if self.commands.is_flooding() {
            crate::limited!(crate::log_limit::COMMAND_FLOOD, now, warn, peer = %self.peer, limit = self.settings.access.rate_per_second, "disconnecting command flood");
            self.closed = true;
            out.push(Action::Close {
                reason: Disconnect::CommandFlood,
                frame: None,
            });
        } else if self.eof {
            self.close(Disconnect::PeerClosed, out);
        }
    }

    fn close(&mut self, reason: Disconnect, out: &mut Vec<Action>) {
        self.closed = true;
        out.push(Action::Close {
            reason,
            frame: None,
        });
    }
}

impl Session for CommandPortSession {
    fn receive(&mut self, bytes: &[u8], now: Instant) {
        let mut out = Vec::new();
        self.on_bytes(bytes, false, now, &mut out);
        self.outbox.extend(out);
    }

    fn eof(&mut self, now: Instant) {
        let mut out = Vec::new();
        self.on_bytes(b"", true, now, &mut out);
        self.outbox.extend(out);
    }

    /// The command port has no timer: a client may keep its connection as long as it likes.
    fn timeout(&mut self, _now: Instant) {}

    fn applied(&mut self, result: Option<Applied>, stopping: bool, now: Instant) {
        let mut out = Vec::new();
        CommandPortSession::applied(self, result, stopping, now, &mut out);
        self.outbox.extend(out);
    }

    fn finish(&mut self, _now: Instant) {}

    fn poll_action(&mut self) -> Option<Action> {
        self.outbox.pop()
    }

    fn deadline(&self) -> Option<Instant> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> CommandPortSession {
        let settings = Arc::new(crate::session::test_settings(false));
        CommandPortSession::new(settings, "127.0.0.1:1".parse().unwrap())
    }

    fn replies(out: &[Action]) -> Vec<serde_json::Value> {
        out.iter()
            .filter_map(|a| match a {
                Action::Send { bytes, .. } => Some(bytes.clone()),
                _ => None,
            })
            .flat_map(|b| {
                String::from_utf8(b.to_vec())
                    .unwrap()
                    .lines()
                    .map(|l| serde_json::from_str(l).expect("every reply is JSON"))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn a_one_shot_command_without_newline_counts_at_eof_then_closes() {
        let mut s = session();
        let mut out = Vec::new();
        s.on_bytes(
            br#"{"variable":"Controls.Gear","value":1}"#,
            false,
            Instant::now(),
            &mut out,
        );
        assert!(out.is_empty(), "no newline yet: nothing to do");
        s.on_bytes(b"", true, Instant::now(), &mut out);
        assert!(matches!(&out[..], [Action::Submit(b)] if b.len() == 1));
        out.clear();
        s.applied(
            Some(Applied {
                frame: 9,
                results: vec![Ok(())],
                relayed: false,
            }),
            false,
            Instant::now(),
            &mut out,
        );
        let r = replies(&out);
        assert_eq!(
            (r[0]["ok"].as_bool(), r[0]["frame"].as_u64()),
            (Some(true), Some(9))
        );
        assert_eq!(
            out.last(),
            Some(&Action::Close {
                reason: Disconnect::PeerClosed,
                frame: None
            })
        );
        assert!(s.is_closed());
    }

    #[test]
    fn bad_lines_get_error_replies_without_the_tick() {
        let mut s = session();
        let mut out = Vec::new();
        s.on_bytes(
            b"{\"value\": NaN}\nnot json\n",
            false,
            Instant::now(),
            &mut out,
        );
        let r = replies(&out);
        assert_eq!(r.len(), 2);
        assert!(r.iter().all(|v| v["ok"] == false));
        assert!(!out.iter().any(|a| matches!(a, Action::Submit(_))));
        assert!(!s.is_closed());
    }
}
