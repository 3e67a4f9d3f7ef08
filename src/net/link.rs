//! A connection's transport: the socket, and on a TLS port the connection's
//! [`TlsLayer`](aerobridge_proto::tls::TlsLayer). Everything above it (the read loop, the action
//! interpreter, the writer) speaks plaintext through a `Link`; only here do bytes get sealed or
//! opened. Sends keep [`io`]'s rules: never blocking, a record never cut by a cancelled send.

use super::io::{self, SendWait, Sent};
use aerobridge_proto::tls::{Outgoing, TlsFailure, TlsLayer};
use bytes::Bytes;
use compio::net::TcpStream;
use std::cell::RefCell;
use std::io as stdio;
use std::rc::Rc;

/// The socket and, on a TLS port, its TLS state (shared by the reader and the writer task).
#[derive(Clone)]
pub struct Link {
    /// The socket.
    pub stream: TcpStream,
    tls: Option<Rc<RefCell<TlsLayer>>>,
    /// TLS: what `/connections` shows (version, cipher, client certificate subject).
    pub summary: Option<Rc<str>>,
}

/// What a read brought.
pub enum Read {
    /// Plaintext from the peer: the bytes are in the buffer handed back.
    InBuffer,
    /// Decrypted plaintext (empty while a record is incomplete).
    Decrypted(Vec<u8>),
    /// The peer ended its stream (EOF, or TLS close_notify).
    Eof,
    /// TLS failed (the alert for the peer, if any, waits to be flushed).
    TlsFailed(TlsFailure),
    /// The socket failed.
    Failed,
}

impl Link {
    /// A plaintext connection.
    pub fn plain(stream: TcpStream) -> Self {
        Self {
            stream,
            tls: None,
            summary: None,
        }
    }

    /// A TLS connection; its handshake runs first ([`super::handshake`]).
    pub fn tls(stream: TcpStream, layer: TlsLayer) -> Self {
        Self {
            stream,
            tls: Some(Rc::new(RefCell::new(layer))),
            summary: None,
        }
    }

    /// The TLS handshake is still running.
    pub fn is_handshaking(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.borrow().is_handshaking())
    }

    /// What the handshake agreed.
    pub fn negotiated(&self) -> Option<aerobridge_proto::tls::Negotiated> {
        self.tls.as_ref()?.borrow().negotiated()
    }

    /// Keeps plaintext that came with the handshake's end for the session.
    pub fn keep_early(&self, plain: Vec<u8>) {
        if let Some(tls) = &self.tls {
            tls.borrow_mut().keep_early(plain);
        }
    }

    /// Plaintext kept from the handshake's end (empty: none).
    pub fn take_early(&self) -> Vec<u8> {
        self.tls
            .as_ref()
            .map_or_else(Vec::new, |t| t.borrow_mut().take_early())
    }

    /// True on a TLS port.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Reads what is available (call once [`io::readable`] has completed) into `scratch`, and
    /// returns the plaintext (a plaintext link leaves it in the buffer it hands back).
    pub async fn read_ready(&self, scratch: Vec<u8>) -> (Read, Vec<u8>) {
        let (res, buf) = io::read_ready(&self.stream, scratch).await;
        let read = match res {
            Ok(0) => Read::Eof,
            Ok(_) => self.open(&buf),
            Err(_) => Read::Failed,
        };
        (read, buf)
    }

    /// What `bytes` from the socket carry: for TLS, their plaintext (decrypted here, at once:
    /// the handshake budget times this call).
    pub fn open(&self, bytes: &[u8]) -> Read {
        let Some(tls) = &self.tls else {
            return Read::InBuffer;
        };
        let mut plain = Vec::new();
        let got = tls.borrow_mut().receive(bytes, &mut plain);
        match got {
            Err(failure) => Read::TlsFailed(failure),
            Ok(r) if r.peer_closed && plain.is_empty() => Read::Eof,
            Ok(_) => Read::Decrypted(plain),
        }
    }

    /// TLS output waits (an alert, a KeyUpdate answer) that no frame will carry out.
    pub fn has_pending(&self) -> bool {
        self.tls
            .as_ref()
            .is_some_and(|t| t.borrow().pending_out() > 0)
    }

    /// Writes all of `bytes` now (replies, HTTP answers): sealed first on TLS.
    pub async fn write_all(&self, bytes: Bytes) -> stdio::Result<()> {
        match &self.tls {
            None => io::write_bytes(&self.stream, bytes).await,
            Some(tls) => {
                tls.borrow_mut().encrypt(&bytes).map_err(tls_error)?;
                self.flush().await
            }
        }
    }

    /// Sends whatever TLS output waits, waiting for room as needed (callers bound it in time).
    pub async fn flush(&self) -> stdio::Result<()> {
        let mut wait = SendWait::default();
        loop {
            let sent = self.send_pending().await?;
            if sent == Sent::All {
                return Ok(());
            }
            wait.after_send(sent);
            wait.wait(&self.stream).await?;
        }
    }

    /// Seals one queue item (a shared packet) into the TLS output; a plaintext link returns it
    /// to be sent as it is.
    pub fn seal(&self, bytes: Bytes) -> stdio::Result<Option<Bytes>> {
        match &self.tls {
            None => Ok(Some(bytes)),
            Some(tls) => {
                tls.borrow_mut().encrypt(&bytes).map_err(tls_error)?;
                Ok(None)
            }
        }
    }

    /// One non-blocking send of the TLS output; `All` when nothing waits any more.
    pub async fn send_pending(&self) -> stdio::Result<Sent> {
        let Some(tls) = &self.tls else {
            return Ok(Sent::All);
        };
        let Some(out) = tls.borrow_mut().lend() else {
            return Ok(Sent::All);
        };
        let (res, out) = send_outgoing(&self.stream, out).await;
        let done = out.is_empty();
        tls.borrow_mut().give_back(out);
        let sent = match res {
            Ok(_) if done => Sent::All,
            Ok(0) => return Err(stdio::ErrorKind::WriteZero.into()),
            Ok(_) => Sent::Partial,
            Err(e) if e.kind() == stdio::ErrorKind::WouldBlock => Sent::WouldBlock,
            Err(e) if e.kind() == stdio::ErrorKind::Interrupted => Sent::WouldBlock,
            Err(e) => return Err(e),
        };
        // Something sealed while the send was out (an alert) still waits.
        Ok(if sent == Sent::All && self.has_pending() {
            Sent::Partial
        } else {
            sent
        })
    }

    /// Seals close_notify into the TLS output (sent by the next flush).
    pub fn queue_close_notify(&self) {
        if let Some(tls) = &self.tls {
            tls.borrow_mut().close_notify();
        }
    }

    /// Ends our side: TLS close_notify (sent if it fits now), then FIN.
    pub async fn close_write(&self) {
        if self.is_tls() {
            self.queue_close_notify();
            let _ = self.flush().await;
        }
        io::shutdown_write(&self.stream);
    }

    /// Frees a TLS connection's output buffer when a one-off message (a large reply) grew it
    /// past what frames need. A frame-sized buffer stays: it is reused for every frame, so the
    /// steady state allocates nothing per client.
    pub fn shrink_if_idle(&self) {
        if let Some(tls) = &self.tls {
            tls.borrow_mut().shrink_if_idle(KEEP_OUTPUT);
        }
    }
}

/// Output buffer kept between frames: a built-in frame sealed (12 KiB) with room to spare.
const KEEP_OUTPUT: usize = 32 * 1024;

fn tls_error(failure: TlsFailure) -> stdio::Error {
    stdio::Error::other(format!("TLS: {}", failure.as_str()))
}

/// Sends what fits of `out`'s pending bytes (never blocks) and advances it.
async fn send_outgoing(stream: &TcpStream, mut out: Outgoing) -> (stdio::Result<usize>, Outgoing) {
    let (start, end) = (out.start, out.end);
    let (res, buf) = io::send_range(stream, std::mem::take(&mut out.buf), start..end).await;
    out.buf = buf;
    if let Ok(n) = res {
        out.advance(n);
    }
    (res, out)
}
