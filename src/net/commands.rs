//! TCP command port (12346), and command execution shared with WebSocket text messages.
//!
//! Upstream clients connect, send one command and close, often without a final newline; others
//! keep a connection open and send many. Both work: lines are split with a bounded
//! [`LineSplitter`], the last unterminated line counts at EOF, and every command gets one reply
//! line, in order. Each connection has a [`CommandGate`] (token, read-only, rate limit).

use crate::access::CommandGate;
use crate::app::Worker;
use crate::command::{
    parse_line, write_auth_ok, write_error, write_ok, Command, CommandError, Line, LineSplitter,
    ParseLimits, Rejection, Request,
};
use crate::fanout::hub::CommandBatch;
use crate::fanout::stats::Disconnect;
use bytes::Bytes;
use compio::net::TcpStream;
use std::net::SocketAddr;
use std::time::Instant;

/// What became of one request.
#[derive(Debug)]
pub enum Outcome {
    /// Applied; shows from frame `.1` on.
    Applied(Command, u64),
    /// `{"auth": …}` accepted.
    Authenticated(Option<Box<str>>),
    /// Refused.
    Rejected(Rejection),
}

impl Outcome {
    /// The client's `id`, if it sent one.
    pub fn id(&self) -> Option<&str> {
        match self {
            Outcome::Applied(c, _) => c.id.as_deref(),
            Outcome::Authenticated(id) => id.as_deref(),
            Outcome::Rejected(r) => r.id.as_deref(),
        }
    }

    /// Appends the reply line.
    pub fn write_reply(&self, out: &mut Vec<u8>) {
        match self {
            Outcome::Applied(c, frame) => write_ok(out, c, *frame),
            Outcome::Authenticated(id) => write_auth_ok(out, id.as_deref()),
            Outcome::Rejected(r) => write_error(out, r),
        }
    }
}

/// Serves one command connection until EOF.
pub async fn serve(worker: &Worker, stream: &TcpStream, peer: SocketAddr) -> Disconnect {
    let cfg = &worker.app.config;
    worker.stats.command_clients.add(1);
    let _gauge = scopeguard(|| worker.stats.command_clients.sub(1));
    let limits = ParseLimits {
        max_batch: cfg.command_max_batch,
    };
    let mut gate = CommandGate::new(&cfg.access, None);
    let mut splitter = LineSplitter::new(cfg.command_max_line);
    let mut buf = Vec::with_capacity(4096);
    let mut parsed = Vec::new();
    loop {
        buf.clear();
        let (res, b) = super::read_some(stream, buf).await;
        buf = b;
        let eof = match res {
            Ok(0) => true,
            Ok(_) => false,
            Err(_) => return Disconnect::IoError,
        };
        splitter.extend(&buf);
        while let Some(line) = splitter.next_line() {
            parse_into(line, limits, &mut parsed);
        }
        if eof {
            if let Some(line) = splitter.finish() {
                parse_into(line, limits, &mut parsed);
            }
        }
        if !parsed.is_empty() {
            let outcomes = execute(worker, &mut gate, std::mem::take(&mut parsed)).await;
            let mut out = Vec::with_capacity(outcomes.len() * 96);
            for o in &outcomes {
                if let Outcome::Rejected(r) = o {
                    tracing::debug!(%peer, error = %r.error, "command rejected");
                }
                o.write_reply(&mut out);
            }
            if super::write_bytes(stream, Bytes::from(out)).await.is_err() {
                return Disconnect::IoError;
            }
            if gate.is_flooding() {
                crate::limited!(crate::log_limit::COMMAND_FLOOD, warn, %peer, limit = cfg.access.rate_per_second, "disconnecting command flood");
                super::io::shutdown_write(stream);
                return Disconnect::CommandFlood;
            }
        }
        if eof {
            super::io::shutdown_write(stream);
            return Disconnect::PeerClosed;
        }
    }
}

/// Parses one split line into `out`.
pub fn parse_into(line: Line<'_>, limits: ParseLimits, out: &mut Vec<Result<Request, Rejection>>) {
    match line {
        Line::Text(text) => parse_line(text, limits, out),
        Line::TooLong => out.push(Err(Rejection::bare(CommandError::LineTooLong { limit: 0 }))),
    }
}

/// Checks every request against the connection's gate, sends the admitted commands to the
/// source as one batch (applied at the start of the next tick), and returns every outcome in the
/// original order.
pub async fn execute(
    worker: &Worker,
    gate: &mut CommandGate,
    parsed: Vec<Result<Request, Rejection>>,
) -> Vec<Outcome> {
    let policy = &worker.app.config.access;
    let now = Instant::now();
    let max_line = worker.app.config.command_max_line;
    // First pass: gate each request in order; `None` marks a command waiting for the source.
    let mut outcomes: Vec<Option<Outcome>> = Vec::with_capacity(parsed.len());
    let mut batch: Vec<Command> = Vec::new();
    for p in parsed {
        outcomes.push(match p {
            Ok(Request::Auth { token, id }) => Some(match gate.authenticate(policy, &token) {
                Ok(()) => Outcome::Authenticated(id),
                Err(error) => Outcome::Rejected(Rejection {
                    error,
                    variable: None,
                    id,
                }),
            }),
            Ok(Request::Command(cmd)) => match gate.admit(policy, now) {
                Ok(()) => {
                    batch.push(cmd);
                    None
                }
                Err(error) => Some(Outcome::Rejected(Rejection {
                    error,
                    variable: Some(cmd.name.name.into()),
                    id: cmd.id,
                })),
            },
            Err(Rejection {
                error: CommandError::LineTooLong { .. },
                variable,
                id,
            }) => Some(Outcome::Rejected(Rejection {
                error: CommandError::LineTooLong { limit: max_line },
                variable,
                id,
            })),
            Err(r) => Some(Outcome::Rejected(r)),
        });
    }
    let (mut frame, mut results) = (0, Vec::new());
    if !batch.is_empty() {
        let (tx, rx) = flume::bounded(1);
        if worker
            .app
            .commands
            .try_send(CommandBatch {
                commands: batch.clone(),
                reply: tx,
            })
            .is_ok()
        {
            if let Ok(r) = rx.recv_async().await {
                frame = r.frame;
                results = r.results;
            }
        }
    }
    let mut applied = batch.into_iter().zip(
        results
            .into_iter()
            .map(Some)
            .chain(std::iter::repeat_with(|| None)),
    );
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .map(|o| {
            o.unwrap_or_else(|| {
                let (cmd, result) = applied.next().expect("one result per admitted command");
                match result {
                    Some(Ok(())) => Outcome::Applied(cmd, frame),
                    other => {
                        let error = match other {
                            Some(Err(e)) => e,
                            _ if worker.is_shutting_down() => {
                                CommandError::Unavailable("server shutting down")
                            }
                            _ => CommandError::Busy,
                        };
                        Outcome::Rejected(Rejection {
                            error,
                            variable: Some(cmd.name.name.into()),
                            id: cmd.id,
                        })
                    }
                }
            })
        })
        .collect();
    for o in &outcomes {
        if let Outcome::Rejected(r) = o {
            worker.stats.rejected_by_reason[r.error.reason() as usize].add(1);
        }
    }
    let ok = outcomes
        .iter()
        .filter(|o| !matches!(o, Outcome::Rejected(_)))
        .count() as u64;
    worker.stats.commands_ok.add(ok);
    worker
        .stats
        .commands_rejected
        .add(outcomes.len() as u64 - ok);
    outcomes
}

/// Runs `f` when dropped (also when the task is cancelled).
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}
