//! TCP telemetry port: frames out; whatever the client sends is read and thrown away (a client
//! that sends nothing is fine, one that closes is gone).

use crate::app::Worker;
use crate::fanout::stats::Disconnect;
use crate::packet::Transport;
use compio::net::TcpStream;
use std::rc::Rc;

/// Serves one telemetry client until it leaves or is closed.
pub async fn serve(worker: &Rc<Worker>, stream: &TcpStream) -> Disconnect {
    let client = worker.register(Transport::Tcp);
    super::run_client(stream, worker, &client, discard(worker, stream)).await
}

/// Reads and drops what the client sends. While it sends nothing (the usual case) no buffer is
/// held: the reader waits for readability, and only then borrows the worker's scratch buffer.
async fn discard(worker: &Worker, stream: &TcpStream) -> Disconnect {
    loop {
        if super::io::readable(stream).await.is_err() {
            return Disconnect::IoError;
        }
        let (res, buf) = super::io::read_ready(stream, worker.take_scratch()).await;
        worker.return_scratch(buf);
        match res {
            Ok(0) => return Disconnect::PeerClosed,
            Ok(_) => {}
            Err(_) => return Disconnect::IoError,
        }
    }
}
