//! TCP command port (12346), and command execution shared with WebSocket text messages.
//!
//! Upstream clients connect, send one command and close, often without a final newline; others
//! keep a connection open and send many. Both work: lines are split with a bounded
//! [`LineSplitter`], the last unterminated line counts at EOF, and every command gets one reply
//! line, in order.

use crate::command::{
    parse_line, write_error, write_ok, Command, CommandError, Line, LineSplitter, ParseLimits,
    Rejection,
};
use crate::fanout::hub::CommandBatch;
use crate::fanout::stats::Disconnect;
use crate::fanout::worker::Worker;
use bytes::Bytes;
use compio::io::AsyncWrite;
use compio::net::TcpStream;
use std::net::SocketAddr;

/// A command's fate: applied (with the first frame that shows it) or refused.
pub type Outcome = Result<(Command, u64), Rejection>;

/// Serves one command connection until EOF.
pub async fn serve(worker: &Worker, stream: &TcpStream, peer: SocketAddr) -> Disconnect {
    let cfg = &worker.shared.config;
    worker.stats.command_clients.add(1);
    let _gauge = scopeguard(|| worker.stats.command_clients.sub(1));
    let limits = ParseLimits {
        max_batch: cfg.command_max_batch,
    };
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
            let outcomes = execute(worker, std::mem::take(&mut parsed)).await;
            let mut out = Vec::with_capacity(outcomes.len() * 96);
            for o in &outcomes {
                match o {
                    Ok((cmd, frame)) => write_ok(&mut out, cmd, *frame),
                    Err(r) => {
                        tracing::debug!(%peer, error = %r.error, "command rejected");
                        write_error(&mut out, r);
                    }
                }
            }
            if super::write_bytes(stream, Bytes::from(out)).await.is_err() {
                return Disconnect::IoError;
            }
        }
        if eof {
            let mut s = stream;
            let _ = s.shutdown().await;
            return Disconnect::PeerClosed;
        }
    }
}

/// Parses one split line into `out`.
pub fn parse_into(line: Line<'_>, limits: ParseLimits, out: &mut Vec<Result<Command, Rejection>>) {
    match line {
        Line::Text(text) => parse_line(text, limits, out),
        Line::TooLong => out.push(Err(Rejection::bare(CommandError::LineTooLong { limit: 0 }))),
    }
}

/// Sends the valid commands to the source as one batch (applied at the start of the next tick)
/// and returns every command's outcome in the original order.
pub async fn execute(worker: &Worker, parsed: Vec<Result<Command, Rejection>>) -> Vec<Outcome> {
    let valid: Vec<Command> = parsed
        .iter()
        .filter_map(|p| p.as_ref().ok().cloned())
        .collect();
    let mut results: Vec<Result<(), CommandError>> = Vec::new();
    let mut frame = 0;
    if !valid.is_empty() {
        let (tx, rx) = flume::bounded(1);
        match worker.shared.commands.try_send(CommandBatch {
            commands: valid,
            reply: tx,
        }) {
            Ok(()) => match rx.recv_async().await {
                Ok(r) => {
                    frame = r.frame;
                    results = r.results;
                }
                Err(_) => results.clear(),
            },
            Err(flume::TrySendError::Full(_)) => results.clear(),
            Err(flume::TrySendError::Disconnected(_)) => results.clear(),
        }
    }
    let mut applied = results.into_iter();
    let max_line = worker.shared.config.command_max_line;
    let outcomes: Vec<Outcome> = parsed
        .into_iter()
        .map(|p| match p {
            Ok(cmd) => match applied.next() {
                Some(Ok(())) => Ok((cmd, frame)),
                Some(Err(error)) => Err(Rejection {
                    error,
                    variable: Some(cmd.name.name.into()),
                    id: cmd.id,
                }),
                None => Err(Rejection {
                    error: if worker.is_shutting_down() {
                        CommandError::Unavailable("server shutting down")
                    } else {
                        CommandError::Busy
                    },
                    variable: Some(cmd.name.name.into()),
                    id: cmd.id,
                }),
            },
            Err(Rejection {
                error: CommandError::LineTooLong { .. },
                variable,
                id,
            }) => Err(Rejection {
                error: CommandError::LineTooLong { limit: max_line },
                variable,
                id,
            }),
            Err(r) => Err(r),
        })
        .collect();
    let ok = outcomes.iter().filter(|o| o.is_ok()).count() as u64;
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
