//! Per-connection protocol logic without I/O, in the style of quinn-proto: a session is fed the
//! bytes a peer sent, the current time and the results of what it asked for, and answers with
//! [`Action`]s for the shell (the `aerobridge` crate's `net`) to carry out (queue these bytes, submit these
//! commands, close with this reason). Sessions never touch a socket, a runtime or a clock of
//! their own, so they are unit-tested with plain bytes and fuzzed with arbitrary input and time
//! steps (`fuzz/fuzz_targets/session.rs`; its body is [`crate::fuzzing::session`]).
//!
//! - [`commands`]: parse, gate (token, read-only, rate limit) and reply — the rules a command
//!   follows whichever transport brought it.
//! - [`command_port`]: the TCP command port (lines in, reply lines out, the last line at EOF).
//! - [`upgrade`]: the WebSocket port's first request: upgrade, plain HTTP page, or refusal.
//! - [`websocket`]: a WebSocket connection after the upgrade: frames in, pongs, replies, echoes
//!   and Close frames out, the ping/idle timer.
//! - [`data_port`]: the TCP telemetry port: lines in (ignored in v1, but for a `hello`).
//! - [`messages`]: one connection's text messages in either protocol: v1 commands, `hello`,
//!   v2 ops.
//! - [`v2`]: session protocol v2 (subscriptions, heartbeats, acknowledged commands, resume).
//! - [`refusal`]: what a connection refused by `--max-clients` is told, on each port.

pub mod command_port;
pub mod commands;
pub mod data_port;
pub mod messages;
pub mod refusal;
pub mod upgrade;
pub mod v2;
pub mod websocket;

use crate::access::AccessPolicy;
use crate::command::{Command, CommandError, ParseLimits, Reason};
use crate::Disconnect;
use bytes::Bytes;
use std::time::{Duration, Instant};

/// Something the shell must do, in order.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send these bytes (a reply, a pong, an echo). They are never skipped; `unread` names them
    /// for the close reason if the peer does not read them ("replies not read").
    Send {
        /// The bytes, already framed for the transport.
        bytes: Bytes,
        /// What they are, for the close reason when they overflow the peer's queue.
        unread: &'static str,
    },
    /// Hand these commands to the tick as one batch, then call the session's `applied` with the
    /// result. The session takes no input until then.
    Submit(Vec<Command>),
    /// Count these command outcomes (metrics).
    Tally {
        /// Commands applied or authentications accepted.
        accepted: u64,
        /// Why each refused one was refused.
        rejected: Vec<Reason>,
    },
    /// Switch the connection to protocol v2 at the next frame boundary, framed as given (the
    /// frame in flight finishes; waiting v1 frames are dropped; no telemetry until a `sub`).
    EnterV2(crate::packet::Framing),
    /// The v2 profiles the connection receives from now on (its distinct subscriptions), and
    /// keyframes to queue for it now (a new subscription, a resume).
    Profiles {
        /// Every profile it holds.
        profiles: Vec<crate::profile::ProfileRef>,
        /// Current keyframes to send at once.
        keyframes: Vec<std::sync::Arc<crate::profile::ProfileMsg>>,
    },
    /// What `/connections` shows of the session (JSON object members).
    Detail(String),
    /// The connection ended: keep this v2 session for `resume` (the shell puts it in
    /// [`v2::Parked`], `settings.v2.parked`). Only ever the answer to a session's `finish`.
    Park(Box<v2::ParkedSession>),
    /// Before a WebSocket upgrade: write this HTTP response straight to the socket, within
    /// `within` (a 101, or a refusal that a Close follows).
    Respond {
        /// The response.
        bytes: Bytes,
        /// How long the peer may take to take it.
        within: Duration,
    },
    /// Before a WebSocket upgrade: answer with this page, rendered by the shell (it holds what
    /// pages show: metrics, connections); a Close follows.
    Page {
        /// Which page.
        page: upgrade::Page,
        /// A HEAD request (headers only).
        head: bool,
        /// How long the peer may take to take it.
        within: Duration,
    },
    /// The WebSocket upgrade is done (its 101 went out with the `Respond` before): the
    /// connection is a telemetry client from now on, with this permessage-deflate agreement.
    Upgraded {
        /// permessage-deflate, when agreed.
        deflate: Option<crate::ws::deflate::Agreed>,
    },
    /// End the connection: `frame` (a WebSocket Close) goes out after what is queued. Always the
    /// last action of a session.
    Close {
        /// Why (counted).
        reason: Disconnect,
        /// The Close frame to send, if the transport has one.
        frame: Option<Bytes>,
    },
}

/// The one shape of every session (quinn-proto's): the shell feeds it what happened — bytes,
/// the end of the peer's stream, a deadline passing, the tick's answer to a batch, the end of
/// the connection — each with `now`, and carries out what [`poll_action`](Session::poll_action)
/// returns, in order, until it returns `None`. Every session (upgrade, WebSocket, the TCP data
/// and command ports) is driven by the same read loop and the same action interpreter.
pub trait Session {
    /// What the shell knows of the world before it feeds the session (v2's heartbeats and
    /// pongs carry it); sessions read no clock.
    fn set_clock(&mut self, _clock: v2::Clock) {}

    /// Bytes the peer sent.
    fn receive(&mut self, bytes: &[u8], now: Instant);

    /// The peer closed its sending side: nothing more will come. A Close follows.
    fn eof(&mut self, now: Instant);

    /// [`deadline`](Session::deadline) passed.
    fn timeout(&mut self, now: Instant);

    /// The tick's answer to the last [`Action::Submit`] (`None`: it never got there);
    /// `stopping`: the server is shutting down.
    fn applied(&mut self, result: Option<Applied>, stopping: bool, now: Instant);

    /// The connection has ended, whatever ended it: the session's last word (a v2 session
    /// answers [`Action::Park`]). Nothing is sent after it.
    fn finish(&mut self, now: Instant);

    /// The next thing to do, in order (`None`: nothing until the next input).
    fn poll_action(&mut self) -> Option<Action>;

    /// When [`timeout`](Session::timeout) is due, if ever.
    fn deadline(&self) -> Option<Instant>;
}

/// Actions waiting for the shell, in order (what every [`Session`] keeps).
#[derive(Debug, Default)]
pub struct Outbox(std::collections::VecDeque<Action>);

impl Outbox {
    /// Queues these actions, in order.
    pub fn extend(&mut self, actions: Vec<Action>) {
        self.0.extend(actions);
    }

    /// Queues one action.
    pub fn push(&mut self, action: Action) {
        self.0.push_back(action);
    }

    /// The next action.
    pub fn pop(&mut self) -> Option<Action> {
        self.0.pop_front()
    }
}

/// How long the shell may take to write a response before the WebSocket upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RespondWithin {
    /// The 101 Switching Protocols.
    pub switching: Duration,
    /// A plain HTTP page (the dashboard is the largest).
    pub page: Duration,
    /// A refusal (400, 403, 426, 431, 503): the peer gets little time.
    pub refusal: Duration,
}

impl Default for RespondWithin {
    fn default() -> Self {
        Self {
            switching: Duration::from_secs(2),
            page: Duration::from_secs(5),
            refusal: Duration::from_secs(1),
        }
    }
}

/// What sessions need of the configuration, shared by every connection.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Token, read-only mode, rate limit.
    pub access: AccessPolicy,
    /// Longest command line.
    pub command_max_line: usize,
    /// Most commands in one JSON array.
    pub parse: ParseLimits,
    /// Largest client WebSocket message.
    pub ws_max_message: usize,
    /// Idle time before a server ping.
    pub ping_interval: Duration,
    /// Time allowed for the answer to a ping.
    pub ping_timeout: Duration,
    /// Time allowed for the upgrade request.
    pub handshake_timeout: Duration,
    /// Echo mode: WebSocket messages are sent back, not parsed as commands.
    pub echo: bool,
    /// Protocol v2: limits, timers, the profile table, parked sessions.
    pub v2: v2::V2Settings,
    /// permessage-deflate (`--ws-compression`).
    pub compression: crate::ws::deflate::Mode,
    /// How long responses before the WebSocket upgrade may take to write.
    pub respond_within: RespondWithin,
    /// After our Close went out, how long the peer may take to answer with its own before the
    /// socket is dropped (RFC 6455's closing handshake).
    pub close_answer_wait: Duration,
    /// How long a relayed command's answer may take (the relay's forwarder gives up after its
    /// own timeouts; this only guards against one that died).
    pub relay_answer_timeout: Duration,
}

impl Default for Settings {
    /// The documented defaults (the CLI's, which the shell's `Config` turns into [`Settings`]).
    fn default() -> Self {
        Self {
            access: AccessPolicy {
                token: None,
                read_only: false,
                rate_per_second: 50,
                allowed_origins: Vec::new(),
                certificate_read_only: false,
            },
            command_max_line: 64 << 10,
            parse: ParseLimits::DEFAULT,
            ws_max_message: 64 << 10,
            ping_interval: Duration::from_secs(20),
            ping_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(5),
            echo: false,
            v2: v2::V2Settings::new(
                v2::V2Limits::default(),
                50.0,
                std::sync::Arc::new(v2::CountingIds::default()),
            ),
            compression: crate::ws::deflate::Mode::Shared,
            respond_within: RespondWithin::default(),
            close_answer_wait: Duration::from_millis(250),
            relay_answer_timeout: Duration::from_secs(10),
        }
    }
}

/// The outcome of a submitted batch, as the tick reported it (`None`: it never got there — the
/// queue to the tick was full, or the server is stopping).
#[derive(Debug, Clone, PartialEq)]
pub struct Applied {
    /// The first `update_counter` that shows the commands.
    pub frame: u64,
    /// One result per submitted command, in order.
    pub results: Vec<Result<(), CommandError>>,
    /// The source is a relay: `Ok` means delivered to the upstream bridge, and no local frame
    /// says when the simulator shows it.
    pub relayed: bool,
}

/// Settings for unit tests: the defaults, with 1 KiB command lines.
#[cfg(test)]
pub(crate) fn test_settings(echo: bool) -> Settings {
    Settings {
        command_max_line: 1024,
        echo,
        ..Settings::default()
    }
}
