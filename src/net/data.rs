//! TCP telemetry port: frames out; whatever the client sends is read and thrown away (a client
//! that sends nothing is fine, one that closes is gone).

use crate::fanout::stats::Disconnect;
use crate::fanout::worker::Worker;
use crate::packet::Transport;
use compio::net::TcpStream;
use std::rc::Rc;

/// Serves one telemetry client until it leaves or is closed.
pub async fn serve(worker: &Rc<Worker>, stream: &TcpStream) -> Disconnect {
    let client = worker.register(Transport::Tcp);
    super::run_client(stream, worker, &client, discard(stream)).await
}

async fn discard(stream: &TcpStream) -> Disconnect {
    let mut buf = Vec::with_capacity(1024);
    loop {
        buf.clear();
        let (res, b) = super::read_some(stream, buf).await;
        buf = b;
        match res {
            Ok(0) => return Disconnect::PeerClosed,
            Ok(_) => {}
            Err(_) => return Disconnect::IoError,
        }
    }
}
