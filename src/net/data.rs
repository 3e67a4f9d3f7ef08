//! TCP data port (12345): telemetry frames out. What a client sends is its
//! [`DataPort`](crate::session::data_port::DataPort) session's business (v1 ignores it, but for
//! a `hello`); this shell only registers the client and drives the session.

use crate::app::Worker;
use crate::fanout::stats::Disconnect;
use crate::packet::Transport;
use crate::session::data_port::DataPort;
use crate::session::Settings;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

/// Serves one telemetry client until it leaves or is closed.
pub async fn serve(
    worker: &Rc<Worker>,
    link: &super::Link,
    peer: SocketAddr,
    settings: Arc<Settings>,
) -> Disconnect {
    let client = worker.register(Transport::Tcp, peer);
    client.info.set_tls(link.summary.as_deref());
    let mut session = DataPort::new(settings, peer);
    super::serve_client(worker, link, &client, &mut session).await
}
