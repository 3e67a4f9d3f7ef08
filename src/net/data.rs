//! TCP telemetry port: frames out; what the client sends goes to its [`DataSession`] (ignored in
//! v1 but for a `hello`, v2 ops after it). A client that sends nothing is fine, one that closes
//! is gone.

use super::Answered;
use crate::app::Worker;
use crate::fanout::stats::Disconnect;
use crate::fanout::worker::Client;
use crate::packet::Transport;
use crate::session::data_port::DataSession;
use crate::session::{Action, Applied};
use compio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

impl Answered for DataSession {
    fn applied(
        &mut self,
        result: Option<Applied>,
        stopping: bool,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        DataSession::applied(self, result, stopping, now, out);
    }

    fn finish(&mut self, now: Instant, out: &mut Vec<Action>) {
        DataSession::finish(self, now, out);
    }
}

/// Serves one telemetry client until it leaves or is closed.
pub async fn serve(worker: &Rc<Worker>, stream: &TcpStream, peer: SocketAddr) -> Disconnect {
    let client = worker.register(Transport::Tcp, peer);
    let mut session = None;
    let reason = super::run_client(
        stream,
        worker,
        &client,
        read(worker, stream, &client, &mut session),
    )
    .await;
    if let Some(session) = session.as_deref_mut() {
        super::finish(worker, session);
    }
    reason
}

/// Reads what the client sends. While it sends nothing (the usual case) no buffer is held: the
/// reader waits for readability, and only then borrows the worker's scratch buffer. Its session
/// exists only once it has sent something: most upstream clients never do.
async fn read(
    worker: &Worker,
    stream: &TcpStream,
    client: &Client,
    session: &mut Option<Box<DataSession>>,
) -> Disconnect {
    let mut actions = Vec::new();
    loop {
        if let Some(s) = session.as_deref_mut().filter(|_| !actions.is_empty()) {
            // Boxed, like the timed wait below: an idle client's task stays small.
            if let Some(reason) = Box::pin(super::act(worker, client, s, &mut actions)).await {
                return reason;
            }
        }
        let readable = super::io::readable(stream);
        let ready = match session.as_ref().and_then(|s| s.deadline()) {
            // v1: no timer at all.
            None => Some(readable.await),
            Some(deadline) => {
                let wait = deadline.saturating_duration_since(Instant::now());
                Box::pin(compio::time::timeout(
                    wait.max(Duration::from_millis(1)),
                    readable,
                ))
                .await
                .ok()
            }
        };
        match ready {
            None => {
                if let Some(s) = session.as_deref_mut() {
                    s.set_clock(super::clock(worker, client));
                    s.on_timeout(Instant::now(), &mut actions);
                }
            }
            Some(Err(_)) => return Disconnect::IoError,
            Some(Ok(())) => {
                let (res, buf) = super::io::read_ready(stream, worker.take_scratch()).await;
                let result = match res {
                    Ok(0) => Some(Disconnect::PeerClosed),
                    Ok(_) => {
                        let now = Instant::now();
                        client.info.touch(now);
                        let s = session.get_or_insert_with(|| {
                            Box::new(DataSession::new(
                                Arc::clone(&worker.app.sessions),
                                client.info.peer,
                                now,
                            ))
                        });
                        s.set_clock(super::clock(worker, client));
                        s.on_bytes(&buf, now, &mut actions);
                        None
                    }
                    Err(_) => Some(Disconnect::IoError),
                };
                worker.return_scratch(buf);
                if let Some(reason) = result {
                    return reason;
                }
            }
        }
    }
}
