//! TLS as a layer between the socket and a session, with no I/O: ciphertext in, plaintext out,
//! and the shared plaintext packets encrypted straight into the connection's own output buffer.
//!
//! Built on rustls' unbuffered API, which encrypts into a buffer the caller owns: a tick's
//! shared `Bytes` is read in place and its records land in [`TlsLayer`]'s output buffer, the one
//! per-client copy there has to be (the ciphertext). No plaintext is copied per client, nothing
//! is re-framed, and because the send queue picks which frame goes next *before* this layer
//! sees it, latest-wins skipping never drops or cuts a TLS record.
//!
//! Everything this layer writes — handshake flights, application records, alerts, a KeyUpdate
//! answer — goes into that one output buffer in the order rustls sealed it, so records always
//! leave in sequence. The shell [lends](TlsLayer::lend) the buffer to a send and
//! [gives it back](TlsLayer::give_back); whatever was written meanwhile (an alert while a frame
//! was in flight) follows what the send had not finished.
//!
//! The crypto provider (and with it, randomness) comes in with the `ServerConfig` the shell
//! builds: this crate names no provider.

use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use rustls::{AlertDescription, ServerConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most ciphertext a peer may have buffered with us before a record completes: one maximal TLS
/// record (16 KiB + 2 KiB expansion allowed by RFC 8446 for 1.2-era peers + header).
pub const MAX_INCOMING: usize = 16_384 + 2_048 + 5;

/// Why a TLS connection failed, as counted on `/metrics` (`reason` label).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, strum::IntoStaticStr, strum::EnumIter, strum::EnumCount,
)]
#[strum(serialize_all = "snake_case")]
pub enum TlsFailure {
    /// The first bytes were not a TLS record: plaintext (HTTP, JSON) sent to a TLS port.
    Plaintext,
    /// Bytes that do not parse as TLS (or a record larger than allowed).
    Malformed,
    /// No protocol version, cipher suite or group in common.
    NoCommonParameters,
    /// Mutual TLS: the client sent no certificate.
    NoClientCertificate,
    /// Mutual TLS: the client's certificate is not trusted (unknown CA, expired, wrong use).
    BadClientCertificate,
    /// The peer sent a fatal alert (e.g. it does not trust our certificate).
    PeerAlert,
    /// The handshake did not finish before the deadline.
    Timeout,
    /// The peer closed the connection during the handshake.
    Abandoned,
    /// Renegotiation or another message not allowed at this point.
    UnexpectedMessage,
    /// Anything else rustls refused.
    Other,
}

impl TlsFailure {
    /// The stable snake_case name (metrics, logs).
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Classifies a rustls error; `first_byte` is the first byte the peer ever sent (a TLS
    /// handshake starts with 0x16), to tell plaintext from garbage.
    pub fn classify(error: &rustls::Error, first_byte: Option<u8>) -> Self {
        use rustls::Error as E;
        match error {
            E::InvalidMessage(_) | E::InappropriateMessage { .. } | E::PeerMisbehaved(_)
                if first_byte.is_some_and(|b| b != 0x16 && b != 0x15) =>
            {
                if first_byte.is_some_and(|b| b.is_ascii_graphic() || b.is_ascii_whitespace()) {
                    TlsFailure::Plaintext
                } else {
                    TlsFailure::Malformed
                }
            }
            E::InvalidMessage(_) | E::DecryptError => TlsFailure::Malformed,
            E::InappropriateMessage { .. } | E::InappropriateHandshakeMessage { .. } => {
                TlsFailure::UnexpectedMessage
            }
            E::NoCertificatesPresented => TlsFailure::NoClientCertificate,
            E::InvalidCertificate(_) => TlsFailure::BadClientCertificate,
            E::AlertReceived(_) => TlsFailure::PeerAlert,
            E::PeerIncompatible(_) => TlsFailure::NoCommonParameters,
            E::PeerMisbehaved(rustls::PeerMisbehaved::TooManyRenegotiationRequests) => {
                TlsFailure::UnexpectedMessage
            }
            _ => TlsFailure::Other,
        }
    }
}

/// What a finished handshake agreed, for `/metrics` and `/connections`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    /// "TLSv1.3" or "TLSv1.2".
    pub version: &'static str,
    /// The IANA name of the cipher suite.
    pub cipher: &'static str,
    /// Mutual TLS: the verified client certificate (DER), whose subject the shell reads.
    pub client_certificate: Option<Vec<u8>>,
}

/// What [`TlsLayer::receive`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Received {
    /// The handshake finished during this call.
    pub handshake_done: bool,
    /// The peer sent close_notify: no more application data will come.
    pub peer_closed: bool,
}

/// The connection's output buffer, lent to a send: `buf[start..end]` is still to go out.
#[derive(Debug, Default)]
pub struct Outgoing {
    /// Initialised bytes; only `start..end` is meaningful.
    pub buf: Vec<u8>,
    /// First byte not yet sent.
    pub start: usize,
    /// One past the last byte written.
    pub end: usize,
}

impl Outgoing {
    /// Bytes waiting to go out.
    pub fn pending(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Nothing waits.
    pub fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Marks `n` bytes as sent.
    pub fn advance(&mut self, n: usize) {
        self.start = (self.start + n).min(self.end);
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
    }

    /// Room for at least `need` more bytes after `end`, without zeroing what is reused.
    fn room(&mut self, need: usize) -> &mut [u8] {
        if self.start > 0 && self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.buf.len() < self.end + need {
            // Move what is unsent to the front before growing.
            if self.start > 0 {
                self.buf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            }
            if self.buf.len() < self.end + need {
                self.buf.resize(self.end + need, 0);
            }
        }
        &mut self.buf[self.end..]
    }

    /// Appends `other`'s pending bytes after ours.
    fn append(&mut self, other: &[u8]) {
        if other.is_empty() {
            return;
        }
        let room = self.room(other.len());
        room[..other.len()].copy_from_slice(other);
        self.end += other.len();
    }

    /// Releases the memory of an empty buffer larger than `keep` (an idle client).
    pub fn shrink_if_idle(&mut self, keep: usize) {
        if self.is_empty() && self.buf.len() > keep {
            self.buf = Vec::new();
            self.start = 0;
            self.end = 0;
        }
    }
}

/// One connection's TLS state.
pub struct TlsLayer {
    conn: UnbufferedServerConnection,
    /// Ciphertext received and not yet consumed by rustls (a record still arriving).
    incoming: Vec<u8>,
    out: Outgoing,
    /// The output buffer is with a send; `out` meanwhile collects what follows it.
    lent: bool,
    /// Application data that arrived in a call that could not hand it over (see `encrypt`).
    early_plain: Vec<u8>,
    first_byte: Option<u8>,
    /// Our first flight has been written (records after it are encrypted in TLS 1.3).
    answered: bool,
    handshaking: bool,
    peer_closed: bool,
    sent_close: bool,
    failed: Option<TlsFailure>,
}

impl std::fmt::Debug for TlsLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsLayer")
            .field("handshaking", &self.handshaking)
            .field("pending_out", &(self.out.end - self.out.start))
            .field("failed", &self.failed)
            .finish_non_exhaustive()
    }
}

impl TlsLayer {
    /// A new server-side connection under `config` (which carries the crypto provider).
    pub fn new(config: Arc<ServerConfig>) -> Result<Self, rustls::Error> {
        Ok(Self {
            conn: UnbufferedServerConnection::new(config)?,
            incoming: Vec::new(),
            out: Outgoing::default(),
            lent: false,
            early_plain: Vec::new(),
            first_byte: None,
            answered: false,
            handshaking: true,
            peer_closed: false,
            sent_close: false,
            failed: None,
        })
    }

    /// The handshake has not finished yet.
    pub fn is_handshaking(&self) -> bool {
        self.handshaking
    }

    /// Why the connection failed, once it has.
    pub fn failure(&self) -> Option<TlsFailure> {
        self.failed
    }

    /// Application data that arrived with the end of the handshake, before the session was
    /// there to take it (a pipelined HTTP request).
    pub fn take_early(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.early_plain)
    }

    /// Keeps `plain` for [`take_early`](Self::take_early).
    pub fn keep_early(&mut self, plain: Vec<u8>) {
        self.early_plain.extend_from_slice(&plain);
    }

    /// Feeds `ciphertext` the peer sent; appends the application data it carried to `plain`.
    /// On failure the alert for the peer (when there is one) is already in the output buffer.
    pub fn receive(
        &mut self,
        ciphertext: &[u8],
        plain: &mut Vec<u8>,
    ) -> Result<Received, TlsFailure> {
        if let Some(failure) = self.failed {
            return Err(failure);
        }
        if self.first_byte.is_none() {
            self.first_byte = ciphertext.first().copied();
        }
        if self.incoming.len() + ciphertext.len() > MAX_INCOMING + ciphertext.len().min(64 * 1024) {
            // rustls refuses oversized records itself; this bounds what a peer can make us hold.
            return Err(self.fail(
                TlsFailure::Malformed,
                Some(AlertDescription::RecordOverflow),
            ));
        }
        self.incoming.extend_from_slice(ciphertext);
        let was_handshaking = self.handshaking;
        self.pump(plain)?;
        if self.incoming.is_empty() && self.incoming.capacity() > 4096 {
            self.incoming = Vec::new();
        }
        Ok(Received {
            handshake_done: was_handshaking && !self.handshaking,
            peer_closed: self.peer_closed,
        })
    }

    /// Encrypts `plaintext` (a shared packet, a reply) into the output buffer, as one or more
    /// records. Nothing is copied but the ciphertext rustls writes. After our close_notify
    /// nothing more may be sent: what comes then is dropped (the connection is closing).
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<(), TlsFailure> {
        if let Some(failure) = self.failed {
            return Err(failure);
        }
        if plaintext.is_empty() || self.sent_close {
            return Ok(());
        }
        // Records carry at most 16 KiB; each costs a header, a tag and (1.3) a content type.
        let mut need = plaintext.len() + (plaintext.len() / 16_384 + 1) * 40;
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let step = match state {
                Ok(ConnectionState::WriteTraffic(mut w)) => {
                    match w.encrypt(plaintext, self.out.room(need)) {
                        Ok(n) => {
                            self.out.end += n;
                            Ok(true)
                        }
                        Err(EncryptError::InsufficientSize(s)) => {
                            need = s.required_size;
                            Ok(false)
                        }
                        Err(_) => Err(TlsFailure::Other),
                    }
                }
                // A handshake message of ours is due first (a KeyUpdate answer).
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    encode_into(&mut e, &mut self.out).map(|()| false)
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    t.done();
                    Ok(false)
                }
                // Only a partial record is ever left in `incoming`; should a whole one be
                // there, its data waits for the next `receive`.
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    while let Some(Ok(record)) = r.next_record() {
                        self.early_plain.extend_from_slice(record.payload);
                    }
                    Ok(false)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(false)
                }
                Ok(_) => Err(TlsFailure::Other),
                Err(e) => Err(TlsFailure::classify(&e, self.first_byte)),
            };
            self.incoming.drain(..discard);
            match step {
                Ok(true) => return Ok(()),
                Ok(false) => continue,
                Err(f) => return Err(self.fail(f, None)),
            }
        }
    }

    /// Writes close_notify (once) into the output buffer: the clean end of a TLS stream.
    pub fn close_notify(&mut self) {
        if self.sent_close || self.failed.is_some() || self.handshaking {
            return;
        }
        self.sent_close = true;
        let UnbufferedStatus { discard, state } = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::WriteTraffic(mut w)) = state {
            if let Ok(n) = w.queue_close_notify(self.out.room(64)) {
                self.out.end += n;
            }
        }
        self.incoming.drain(..discard);
    }

    /// Takes the output buffer for a send (`None` when nothing waits or it is already lent).
    pub fn lend(&mut self) -> Option<Outgoing> {
        if self.lent || self.out.is_empty() {
            return None;
        }
        self.lent = true;
        Some(std::mem::take(&mut self.out))
    }

    /// Returns the buffer after a send; what was written while it was away follows what the
    /// send left unsent.
    pub fn give_back(&mut self, mut lent: Outgoing) {
        let meanwhile = std::mem::take(&mut self.out);
        lent.append(meanwhile.pending());
        self.out = lent;
        self.lent = false;
    }

    /// Bytes waiting in the output buffer (not counting a lent one).
    pub fn pending_out(&self) -> usize {
        self.out.end - self.out.start
    }

    /// Frees an idle connection's buffers (keeps `keep` bytes of output buffer).
    pub fn shrink_if_idle(&mut self, keep: usize) {
        if !self.lent {
            self.out.shrink_if_idle(keep);
        }
    }

    /// What the handshake agreed (`None` while handshaking).
    pub fn negotiated(&self) -> Option<Negotiated> {
        if self.handshaking {
            return None;
        }
        let version = match self.conn.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
            rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
            _ => "other",
        };
        let cipher = self
            .conn
            .negotiated_cipher_suite()?
            .suite()
            .as_str()
            .unwrap_or("unknown");
        Some(Negotiated {
            version,
            cipher,
            client_certificate: self
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| c.as_ref().to_vec()),
        })
    }

    fn fail(&mut self, failure: TlsFailure, alert: Option<AlertDescription>) -> TlsFailure {
        if self.failed.is_none() {
            self.failed = Some(failure);
            if let Some(alert) = alert {
                // A plaintext alert record: we cannot trust the state enough to seal one.
                self.out
                    .append(&[0x15, 0x03, 0x03, 0x00, 0x02, 2, u8::from(alert)]);
            }
        }
        failure
    }

    /// Runs rustls over the buffered ciphertext until it needs more input.
    fn pump(&mut self, plain: &mut Vec<u8>) -> Result<(), TlsFailure> {
        plain.append(&mut self.early_plain);
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut self.incoming);
            let step = match state {
                Err(e) => Err(e),
                Ok(ConnectionState::ReadTraffic(mut r)) => {
                    let mut res = Ok(Step::Again);
                    while let Some(record) = r.next_record() {
                        match record {
                            Ok(record) => plain.extend_from_slice(record.payload),
                            Err(e) => {
                                res = Err(e);
                                break;
                            }
                        }
                    }
                    res
                }
                Ok(ConnectionState::ReadEarlyData(mut r)) => {
                    // Early data is not enabled; should a peer send some, it is just data.
                    while let Some(Ok(record)) = r.next_record() {
                        plain.extend_from_slice(record.payload);
                    }
                    Ok(Step::Again)
                }
                Ok(ConnectionState::EncodeTlsData(mut e)) => {
                    self.answered = true;
                    match encode_into(&mut e, &mut self.out) {
                        Ok(()) => Ok(Step::Again),
                        Err(f) => {
                            self.incoming.drain(..discard);
                            return Err(self.fail(f, None));
                        }
                    }
                }
                Ok(ConnectionState::TransmitTlsData(t)) => {
                    // Everything encoded is in the output buffer, in order; the shell sends it.
                    t.done();
                    Ok(Step::Again)
                }
                Ok(ConnectionState::BlockedHandshake) => Ok(Step::NeedInput),
                Ok(ConnectionState::WriteTraffic(_)) => {
                    self.handshaking = false;
                    Ok(Step::NeedInput)
                }
                Ok(ConnectionState::PeerClosed) => {
                    self.peer_closed = true;
                    Ok(Step::Again)
                }
                Ok(ConnectionState::Closed) => {
                    self.peer_closed = true;
                    Ok(Step::NeedInput)
                }
                Ok(_) => Ok(Step::NeedInput),
            };
            if step.is_err() {
                // The dead connection's bytes stay as rustls last saw them: its alert is popped
                // before any parsing, and nothing else is parsed again.
                let failure =
                    TlsFailure::classify(step.as_ref().err().expect("err"), self.first_byte);
                self.failed = Some(failure);
                self.flush_alert();
                return Err(failure);
            }
            self.incoming.drain(..discard);
            match step {
                Ok(Step::Again) => continue,
                Ok(Step::NeedInput) => return Ok(()),
                Err(_) => unreachable!("handled above"),
            }
        }
    }

    /// After an error rustls queues a fatal alert: encode it so the peer learns why. Queued
    /// records are popped before any input is looked at, so this never parses the bad bytes
    /// again (and never asks rustls for a second alert).
    fn flush_alert(&mut self) {
        let before = self.out.end;
        let status = self.conn.process_tls_records(&mut self.incoming);
        if let Ok(ConnectionState::EncodeTlsData(mut e)) = status.state {
            let _ = encode_into(&mut e, &mut self.out);
        }
        self.incoming = Vec::new();
        if self.out.end == before && self.handshaking && self.first_flight_pending() {
            // Some malformed handshake messages fail without an alert queued; before our first
            // flight a plaintext alert is what the peer expects.
            self.out.append(&[
                0x15,
                0x03,
                0x03,
                0x00,
                0x02,
                2,
                u8::from(AlertDescription::DecodeError),
            ]);
        }
    }

    /// Nothing has been sent yet (the ClientHello has not been answered).
    fn first_flight_pending(&self) -> bool {
        self.out.end == 0 && !self.answered
    }
}

enum Step {
    Again,
    NeedInput,
}

/// Writes a handshake record rustls prepared into `out` (lent or not: while the buffer is with a
/// send, `out` is the one that follows it).
fn encode_into(
    e: &mut rustls::unbuffered::EncodeTlsData<'_, ServerConnectionData>,
    out: &mut Outgoing,
) -> Result<(), TlsFailure> {
    let mut need = 4096;
    loop {
        match e.encode(out.room(need)) {
            Ok(n) => {
                out.end += n;
                return Ok(());
            }
            Err(EncodeError::InsufficientSize(s)) => need = s.required_size,
            Err(_) => return Err(TlsFailure::Other),
        }
    }
}

/// How much handshake work a worker does, so a ClientHello flood cannot starve the clients it
/// is streaming to: a handshake's first flight (key exchange and signature) costs CPU — a
/// millisecond with an RSA key, more in a debug build — and runs on the same thread as the
/// tick's dispatch. The worker may spend `allowed` of every `window` (a tick period) on
/// handshakes, as a leaky bucket: each step's measured cost is debt that drains at that rate, and
/// while the debt exceeds one window's allowance new steps wait. A step dearer than the
/// allowance is paid for by the windows after it, so the share holds whatever a step costs and
/// an RSA key and an ECDSA key get the same share of time, not the same count.
#[derive(Debug, Clone)]
pub struct HandshakeBudget {
    allowed: Duration,
    /// `allowed / window`.
    share: f64,
    debt: Duration,
    last: Option<Instant>,
}

impl HandshakeBudget {
    /// A budget of `allowed` handshake time per `window`.
    pub fn new(window: Duration, allowed: Duration) -> Self {
        let allowed = allowed.min(window).max(Duration::from_micros(1));
        Self {
            allowed,
            share: allowed.as_secs_f64() / window.as_secs_f64().max(1e-9),
            debt: Duration::ZERO,
            last: None,
        }
    }

    /// `Ok` when a handshake step may run now; otherwise when to ask again.
    pub fn may_run(&mut self, now: Instant) -> Result<(), Instant> {
        if let Some(last) = self.last {
            let paid = now.saturating_duration_since(last).mul_f64(self.share);
            self.debt = self.debt.saturating_sub(paid);
        }
        self.last = Some(now);
        if self.debt < self.allowed {
            Ok(())
        } else {
            Err(now + (self.debt - self.allowed).div_f64(self.share) + Duration::from_micros(1))
        }
    }

    /// A handshake step took `took`.
    pub fn spent(&mut self, took: Duration) {
        self.debt += took;
    }
}

#[cfg(test)]
mod tests;
