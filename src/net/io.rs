//! Socket reads and writes that never park a kernel thread.
//!
//! io_uring runs a socket send inline when there is room, and otherwise arms a poll and retries
//! when the socket becomes writable. If that retry gets EAGAIN again — which is what a socket
//! under TCP memory pressure does: poll says writable because *its* buffer has room, the send
//! fails because the *host's* `tcp_mem` is exhausted — the kernel punts the send to an io-wq
//! worker thread, where it blocks until the peer reads or dies. 10 000 stalled peers became
//! 10 000 kernel threads that way. The socket's O_NONBLOCK does not help (io_uring ignores it);
//! only `MSG_DONTWAIT` on the operation does. So:
//!
//! - every send carries `MSG_DONTWAIT`: it completes at once with what fitted, or EAGAIN;
//! - on EAGAIN (or a partial send) the writer waits for writability with a one-shot poll
//!   (`IORING_OP_POLL_ADD`, which sleeps in the ring, not in a thread), then sends again;
//! - EAGAIN right after poll said writable means memory pressure, which poll cannot see: the
//!   writer then backs off on a timer (1 ms doubling to 32 ms) instead of spinning;
//! - reads wait for readability first and only then `recv`, which therefore always finds data,
//!   EOF or an error at once — and no buffer is held while a client says nothing.
//!
//! Cancelling a wait (a close deadline, a timeout) is always safe: nothing is in flight but a
//! poll. Sends themselves are never cancelled, so the writer always knows how many bytes of a
//! frame went out, and a frame is either finished or the connection is dropped.

use bytes::{Buf, Bytes};
use compio::buf::BufResult;
use compio::io::AsyncReadExt;
use compio::net::TcpStream;
use std::io;
use std::time::Duration;

/// How a send went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Everything was sent.
    All,
    /// Part was sent (the rest is left in the buffer); the socket is full.
    Partial,
    /// Nothing could be sent now (EAGAIN).
    WouldBlock,
}

/// Sends what fits of `bytes` now and advances it past what was sent. Never blocks: on Unix the
/// send carries `MSG_DONTWAIT | MSG_NOSIGNAL`.
pub async fn send_some(stream: &TcpStream, bytes: &mut Bytes) -> io::Result<Sent> {
    let len = bytes.len();
    let (res, buf) = send_nowait(stream, std::mem::take(bytes)).await;
    *bytes = buf;
    match res {
        Ok(0) if len > 0 => Err(io::ErrorKind::WriteZero.into()),
        Ok(n) if n >= len => {
            bytes.clear();
            Ok(Sent::All)
        }
        Ok(n) => {
            bytes.advance(n);
            Ok(Sent::Partial)
        }
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(Sent::WouldBlock),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(Sent::WouldBlock),
        Err(e) => Err(e),
    }
}

#[cfg(unix)]
async fn send_nowait(stream: &TcpStream, bytes: Bytes) -> (io::Result<usize>, Bytes) {
    use compio::driver::op::{Send, SendFlags};
    use compio::driver::ToSharedFd;
    let op = Send::new(
        stream.to_shared_fd(),
        bytes,
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    );
    let BufResult(res, op) = compio::runtime::submit(op).await;
    (res, compio::buf::IntoInner::into_inner(op))
}

#[cfg(not(unix))]
async fn send_nowait(stream: &TcpStream, bytes: Bytes) -> (io::Result<usize>, Bytes) {
    // IOCP completes a send without a thread of ours or the kernel's waiting on it.
    use compio::io::AsyncWrite;
    let mut s = stream;
    let BufResult(res, bytes) = s.write(bytes).await;
    (res, bytes)
}

/// Sends what fits of `buf[range]` now (never blocks), handing the buffer back.
#[cfg(unix)]
pub async fn send_range(
    stream: &TcpStream,
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
) -> (io::Result<usize>, Vec<u8>) {
    use compio::buf::IoBuf;
    use compio::driver::op::{Send, SendFlags};
    use compio::driver::ToSharedFd;
    let op = Send::new(
        stream.to_shared_fd(),
        buf.slice(range),
        SendFlags::DONTWAIT | SendFlags::NOSIGNAL,
    );
    let BufResult(res, op) = compio::runtime::submit(op).await;
    let slice = compio::buf::IntoInner::into_inner(op);
    (res, compio::buf::IntoInner::into_inner(slice))
}

/// Sends `buf[range]` (IOCP holds no thread while a send waits).
#[cfg(not(unix))]
pub async fn send_range(
    stream: &TcpStream,
    buf: Vec<u8>,
    range: std::ops::Range<usize>,
) -> (io::Result<usize>, Vec<u8>) {
    use compio::buf::IoBuf;
    use compio::io::AsyncWrite;
    let mut s = stream;
    let BufResult(res, slice) = s.write(buf.slice(range)).await;
    (res, compio::buf::IntoInner::into_inner(slice))
}

/// Waits until `stream` is readable (data, EOF or an error are all "readable").
#[cfg(unix)]
pub async fn readable(stream: &TcpStream) -> io::Result<()> {
    poll(stream, compio::driver::op::Interest::Readable).await
}

/// Waits until `stream` is readable (on IOCP a read does not hold a thread: nothing to do).
#[cfg(not(unix))]
pub async fn readable(_stream: &TcpStream) -> io::Result<()> {
    Ok(())
}

#[cfg(unix)]
async fn poll(stream: &TcpStream, interest: compio::driver::op::Interest) -> io::Result<()> {
    use compio::driver::op::PollOnce;
    use compio::driver::ToSharedFd;
    let BufResult(res, _) =
        compio::runtime::submit(PollOnce::new(stream.to_shared_fd(), interest)).await;
    res.map(drop)
}

/// Reads what is available into `buf`'s spare capacity, waiting for readability first so the
/// read itself completes at once. `Ok(0)` is end of stream.
pub async fn read_some(stream: &TcpStream, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    if let Err(e) = readable(stream).await {
        return (Err(e), buf);
    }
    read_ready(stream, buf).await
}

/// Reads what is available into `buf`'s spare capacity; call it once [`readable`] has completed
/// (then it finds data, EOF or an error at once). `Ok(0)` is end of stream.
pub async fn read_ready(stream: &TcpStream, buf: Vec<u8>) -> (io::Result<usize>, Vec<u8>) {
    let mut s = stream;
    let BufResult(res, buf) = s.append(buf).await;
    (res, buf)
}

/// Sends FIN (after whatever is queued in the kernel). A plain `shutdown(2)`, not io_uring's
/// `IORING_OP_SHUTDOWN`, which the kernel always runs in an io-wq worker thread; for TCP the
/// syscall never blocks.
pub fn shutdown_write(stream: &TcpStream) {
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

/// What a writer waits for when a send could not finish.
#[derive(Debug, Default)]
pub struct SendWait {
    polled: bool,
    backoff: Duration,
}

impl SendWait {
    /// First back-off under memory pressure.
    pub const MIN_BACKOFF: Duration = Duration::from_millis(1);
    /// Longest back-off under memory pressure.
    pub const MAX_BACKOFF: Duration = Duration::from_millis(32);

    /// Notes how the last send went; returns true when it means kernel memory pressure (EAGAIN
    /// although poll had just said writable).
    pub fn after_send(&mut self, sent: Sent) -> bool {
        let pressure = sent == Sent::WouldBlock && self.polled;
        if sent != Sent::WouldBlock {
            self.backoff = Duration::ZERO;
        } else if pressure {
            self.backoff = (self.backoff * 2).clamp(Self::MIN_BACKOFF, Self::MAX_BACKOFF);
        }
        self.polled = false;
        pressure
    }

    /// Waits until sending again makes sense: a writability poll, preceded under memory pressure
    /// by a back-off timer (poll cannot see pressure and would report writable at once).
    pub async fn wait(&mut self, stream: &TcpStream) -> io::Result<()> {
        if !self.backoff.is_zero() {
            compio::time::sleep(self.backoff).await;
        }
        // Poll even after a back-off: a socket whose own buffer is full then sleeps in the ring
        // until its peer reads, instead of being retried on every timer tick.
        #[cfg(unix)]
        poll(stream, compio::driver::op::Interest::Writable).await?;
        #[cfg(not(unix))]
        let _ = stream;
        self.polled = true;
        Ok(())
    }
}

/// Writes all of `bytes` (replies, handshakes, HTTP answers): never blocks a kernel thread.
/// Callers bound it with a timeout where the peer may not read.
pub async fn write_bytes(stream: &TcpStream, mut bytes: Bytes) -> io::Result<()> {
    let mut wait = SendWait::default();
    loop {
        let sent = send_some(stream, &mut bytes).await?;
        if sent == Sent::All {
            return Ok(());
        }
        wait.after_send(sent);
        wait.wait(stream).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eagain_after_a_poll_is_pressure_and_backs_off_exponentially() {
        let mut w = SendWait::default();
        assert!(!w.after_send(Sent::WouldBlock), "first EAGAIN: just full");
        assert!(w.backoff.is_zero(), "a full socket is polled, not timed");
        w.polled = true; // poll said writable
        assert!(w.after_send(Sent::WouldBlock));
        assert_eq!(w.backoff, SendWait::MIN_BACKOFF);
        for _ in 0..10 {
            w.polled = true;
            assert!(w.after_send(Sent::WouldBlock));
        }
        assert_eq!(w.backoff, SendWait::MAX_BACKOFF);
        w.polled = true;
        assert!(!w.after_send(Sent::Partial), "progress ends the pressure");
        assert!(w.backoff.is_zero());
    }
}
