//! TCP data port (12345): telemetry frames out. What a client sends is its
//! [`DataPort`](crate::session::data_port::DataPort) session's business (v1 ignores it, but for
//! a `hello`); this shell only registers the client and drives the session.

use crate::app::Worker;
use crate::fanout::stats::Disconnect;
use crate::packet::Transport;
use crate::session::data_port::DataPort;
use compio::net::TcpStream;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// Serves one telemetry client until it leaves or is closed.
pub async fn serve(worker: &Rc<Worker>, stream: &TcpStream, peer: SocketAddr) -> Disconnect {
    let client = worker.register(Transport::Tcp, peer);
    let mut session = DataPort::new(Arc::clone(&worker.app.sessions), peer);
    super::serve_client(worker, stream, &client, &mut session).await
}
