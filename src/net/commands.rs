//! The TCP command port's shell: moves bytes between the socket and a
//! [`crate::session::command_port::CommandPortSession`], and hands batches to
//! the tick. Every rule (parsing, gate, replies, floods, EOF) is the session's.

use crate::app::Worker;
use crate::command::CommandError;
use crate::fanout::hub::CommandBatch;
use crate::fanout::stats::Disconnect;
use crate::session::command_port::CommandPortSession;
use crate::session::Applied;
use crate::session::Settings;
use crate::source::Applying;
use std::net::SocketAddr;
use std::sync::Arc;

/// Serves one command connection until EOF. Replies are written straight to the socket: the
/// command port has no telemetry queue.
pub async fn serve(
    worker: &Worker,
    link: &super::Link,
    peer: SocketAddr,
    settings: Arc<Settings>,
) -> Disconnect {
    worker.stats.command_clients.add(1);
    let _gauge = scopeguard(|| worker.stats.command_clients.sub(1));
    let mut session = CommandPortSession::new(settings, peer);
    super::drive_to_close(worker, link, super::Outlet::Socket, &mut session).await
}

/// Hands a batch to the tick (applied at the start of the next tick) and waits for the result;
/// `None` when the queue to the tick is full or the tick is gone.
pub async fn submit(worker: &Worker, commands: Vec<crate::command::Command>) -> Option<Applied> {
    submit_to(&worker.app, commands, |answer| async move {
        compio::time::timeout(
            worker.app.sessions.relay_answer_timeout,
            answer.recv_async(),
        )
        .await
        .ok()?
        .ok()
    })
    .await
}

/// [`submit`] on any runtime: `within` waits for a relay's answer (compio on the workers, tokio on
/// the NATS thread) for the settings' `relay_answer_timeout`, and answers `None` when it passes.
pub async fn submit_to<F>(
    app: &crate::app::App,
    commands: Vec<crate::command::Command>,
    within: impl Fn(flume::Receiver<Result<(), CommandError>>) -> F,
) -> Option<Applied>
where
    F: std::future::Future<Output = Option<Result<(), CommandError>>>,
{
    let (tx, rx) = flume::bounded(1);
    app.commands
        .try_send(CommandBatch {
            commands,
            reply: tx,
        })
        .ok()?;
    let r = rx.recv_async().await.ok()?;
    let mut results = Vec::with_capacity(r.results.len());
    let mut relayed = false;
    for applying in r.results {
        results.push(match applying {
            Applying::Done(result) => result,
            Applying::Relayed(answer) => {
                // The relay's forwarder gives up after its own timeouts (connect, write, read:
                // 2 s each); this bound only guards against a forwarder that died.
                relayed = true;
                within(answer).await.unwrap_or_else(|| {
                    Err(CommandError::UpstreamUnavailable(
                        "upstream did not answer in time".into(),
                    ))
                })
            }
        });
    }
    Some(Applied {
        frame: r.frame,
        results,
        relayed,
    })
}

/// Counts command outcomes (an [`Action::Tally`]).
pub fn count(worker: &Worker, accepted: u64, rejected: &[crate::command::Reason]) {
    worker.stats.commands_ok.add(accepted);
    worker.stats.commands_rejected.add(rejected.len() as u64);
    for r in rejected {
        worker.stats.rejected_by_reason[*r as usize].add(1);
    }
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
