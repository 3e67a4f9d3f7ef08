//! The clients: compio tasks on a few runtime threads. On the hot path a frame costs a scan of its
//! first bytes for `timestamp` and `update_counter`, two clock reads, histogram records and — for
//! the sampled share — a simd-json parse that proves the frame is whole, valid JSON.

use crate::conn::Conn;
use crate::model::{ClientSpec, Commands, Group, Role, Shared, Transport};
use aerobridge_client::{FrameReader, Framing, Message};
use compio::net::TcpStream;
use hdrhistogram::Histogram;
use std::cell::{Cell, RefCell};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Histograms in µs: 1 µs .. 60 s, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid bounds")
}

/// Most gap times a thread keeps (enough to see when they happened, bounded under a storm).
pub const GAP_TIMES: usize = 64;

/// One thread's measurements.
#[derive(Clone)]
pub struct ThreadStats {
    pub latency_tcp: Histogram<u64>,
    pub latency_ws: Histogram<u64>,
    /// (update_counter, receive ns since t0) of healthy clients, for the fan-out spread.
    pub samples: Vec<(u64, u64)>,
    /// Receive ns since t0 of healthy clients' gaps (the first [`GAP_TIMES`] per thread): when
    /// in the window frames went missing.
    pub healthy_gaps_at: Vec<u64>,
    pub healthy: Group,
    pub slow: Group,
    pub stalled: Group,
    pub commands: Commands,
    pub reply_hist: Histogram<u64>,
    pub visible_hist: Histogram<u64>,
    /// `--churn` connections.
    pub churn: crate::model::Churn,
    pub churn_hist: Histogram<u64>,
    /// v2 clients' figures and latency.
    pub v2: crate::model::V2Stats,
    pub latency_v2: Histogram<u64>,
}

impl ThreadStats {
    pub fn new() -> Self {
        Self {
            latency_tcp: histogram(),
            latency_ws: histogram(),
            samples: Vec::with_capacity(1 << 16),
            healthy_gaps_at: Vec::new(),
            healthy: Group::default(),
            slow: Group::default(),
            stalled: Group::default(),
            commands: Commands::default(),
            reply_hist: histogram(),
            visible_hist: histogram(),
            v2: Default::default(),
            latency_v2: histogram(),
            churn: Default::default(),
            churn_hist: histogram(),
        }
    }

    fn group(&mut self, role: Role) -> &mut Group {
        match role {
            Role::Healthy => &mut self.healthy,
            Role::Slow => &mut self.slow,
            Role::Stalled => &mut self.stalled,
        }
    }
}

type Stats = Rc<RefCell<ThreadStats>>;

/// Per-connection frame accounting.
struct Tracker {
    spec: ClientSpec,
    last: Option<u64>,
    seen: u64,
}

impl Tracker {
    fn on_frame(&mut self, frame: &mut [u8], shared: &Shared, stats: &Stats) {
        let recv_ns = shared.t0.elapsed().as_nanos() as u64;
        let wall_us = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let measuring = shared.measuring.load(Ordering::Relaxed);
        self.seen += 1;
        let mut st = stats.borrow_mut();
        let (counter, timestamp) = match (
            field_u64(frame, b"\"update_counter\":"),
            field_u64(frame, b"\"timestamp\":"),
        ) {
            (Some(c), Some(t)) => (c, t),
            _ => {
                if measuring {
                    st.group(self.spec.role).torn += 1;
                }
                return;
            }
        };
        let validate = shared.validate_every > 0 && self.seen.is_multiple_of(shared.validate_every);
        let valid = !validate || simd_json::to_tape(frame).is_ok();
        let role = self.spec.role;
        let last = self.last.replace(counter);
        if !measuring {
            return;
        }
        let g = st.group(role);
        g.frames += 1;
        if !valid {
            g.torn += 1;
        }
        let mut gap = false;
        if let Some(l) = last {
            if counter > l + 1 {
                g.gaps += 1;
                g.missing_frames += counter - l - 1;
                gap = true;
            } else if counter <= l {
                g.duplicates += 1;
            }
        }
        if gap && role == Role::Healthy && st.healthy_gaps_at.len() < GAP_TIMES {
            st.healthy_gaps_at.push(recv_ns);
        }
        if role == Role::Healthy {
            let latency = wall_us.saturating_sub(timestamp).max(1);
            let h = if self.spec.transport == Transport::Tcp {
                &mut st.latency_tcp
            } else {
                &mut st.latency_ws
            };
            let _ = h.record(latency.min(60_000_000));
            st.samples.push((counter, recv_ns));
        }
    }
}

/// The number after `key` within the first bytes of a frame.
pub fn field_u64(frame: &[u8], key: &[u8]) -> Option<u64> {
    let head = &frame[..frame.len().min(256)];
    let at = memchr::memmem::find(head, key)? + key.len();
    let digits = head[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    std::str::from_utf8(&head[at..at + digits])
        .ok()?
        .parse()
        .ok()
}

/// Runs one client until the run is done.
pub async fn run_client(spec: ClientSpec, shared: Arc<Shared>, stats: Stats) {
    let at = shared.t0 + spec.connect_at;
    compio::time::sleep(at.saturating_duration_since(Instant::now())).await;
    shared.attempted.fetch_add(1, Ordering::Relaxed);
    stats.borrow_mut().group(spec.role).clients += 1;
    let outcome = match spec.transport {
        Transport::Tcp => {
            match connect_tcp(shared.targets.tcp, spec.role, shared.laggard_rcvbuf).await {
                Ok(s) => Conn::wrap(s, shared.tls.as_ref())
                    .await
                    .map(|c| (c, Vec::new())),
                Err(e) => Err(e),
            }
        }
        Transport::Ws => {
            connect_ws(
                shared.targets.ws,
                spec.role,
                spec.index,
                shared.laggard_rcvbuf,
                shared.deflate,
                shared.tls.as_ref(),
            )
            .await
        }
    };
    let (stream, leftover) = match outcome {
        Ok(x) => x,
        Err(e) => {
            *stats
                .borrow_mut()
                .group(spec.role)
                .disconnects
                .entry(format!("connect_failed: {}", short(&e)))
                .or_default() += 1;
            return;
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    stats.borrow_mut().group(spec.role).connected += 1;
    let end = match spec.role {
        Role::Stalled => stalled(&stream, spec, &shared).await,
        _ => read_frames(&stream, leftover, spec, &shared, &stats).await,
    };
    let mut st = stats.borrow_mut();
    let g = st.group(spec.role);
    match end {
        Some(reason) => *g.disconnects.entry(reason).or_default() += 1,
        None => g.still_connected += 1,
    }
}

fn short(e: &io::Error) -> String {
    format!("{:?}", e.kind()).to_lowercase()
}

async fn connect_tcp(addr: SocketAddr, role: Role, rcvbuf: usize) -> io::Result<TcpStream> {
    if role == Role::Healthy {
        let s = TcpStream::connect(addr).await?;
        s.set_nodelay(true)?;
        return Ok(s);
    }
    // Slow and stalled clients keep a small receive window so they fall behind quickly.
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_recv_buffer_size(rcvbuf)?;
    socket.connect(&addr.into())?;
    TcpStream::from_std(socket.into())
}

async fn connect_ws(
    addr: SocketAddr,
    role: Role,
    index: usize,
    rcvbuf: usize,
    deflate: bool,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> io::Result<(Conn, Vec<u8>)> {
    let stream = Conn::wrap(connect_tcp(addr, role, rcvbuf).await?, tls).await?;
    let offer = if deflate {
        // Chromium's offer.
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    } else {
        ""
    };
    upgrade(stream, addr, index, offer).await
}

/// A healthy WebSocket connection whose upgrade request carries `extra_headers` (each ending in
/// CRLF); returns it and what followed the 101 response.
pub async fn connect_ws_with(
    addr: SocketAddr,
    extra_headers: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
) -> io::Result<(Conn, Vec<u8>)> {
    let stream = Conn::wrap(connect_tcp(addr, Role::Healthy, 0).await?, tls).await?;
    upgrade(stream, addr, 7, extra_headers).await
}

async fn upgrade(
    stream: Conn,
    addr: SocketAddr,
    index: usize,
    extra_headers: &str,
) -> io::Result<(Conn, Vec<u8>)> {
    use aerobridge_client::handshake;
    let key = handshake::key(std::array::from_fn(|i| {
        (index as u8).wrapping_mul(31).wrapping_add(i as u8)
    }));
    let request = handshake::request(&addr.to_string(), "/", &key, extra_headers);
    stream.write_all(request.into_bytes()).await?;
    let require_deflate = extra_headers.contains("permessage-deflate");
    let mut buf = Vec::with_capacity(4096);
    loop {
        match handshake::check_response(&buf, &key, require_deflate) {
            Ok(Some(up)) => return Ok((stream, buf[up.consumed..].to_vec())),
            Ok(None) => {}
            Err(handshake::UpgradeError::Refused(status)) => {
                let code = status.split_whitespace().nth(1).unwrap_or("?").to_string();
                return Err(io::Error::other(format!("http {code}")));
            }
            Err(e) => return Err(io::Error::other(e.to_string())),
        }
        buf.reserve(4096);
        let (res, b) = stream.append(buf, 16 * 1024).await;
        buf = b;
        if res? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
}

/// Reads and accounts frames until the run ends (`None`) or the connection does (its reason).
async fn read_frames(
    stream: &Conn,
    leftover: Vec<u8>,
    spec: ClientSpec,
    shared: &Shared,
    stats: &Stats,
) -> Option<String> {
    let mut tracker = Tracker {
        spec,
        last: None,
        seen: 0,
    };
    let slow = spec.role == Role::Slow;
    // Slow clients read `chunk` bytes 20 times a second.
    let chunk = (shared.slow_rate / 20).max(256) as usize;
    let mut scratch = Vec::with_capacity(chunk);
    let framing = match spec.transport {
        Transport::Tcp => Framing::Lines,
        Transport::Ws => Framing::WebSocket,
    };
    let mut reader = FrameReader::new(framing, leftover);
    if shared.deflate && spec.transport == Transport::Ws {
        // permessage-deflate: the server may take context over, so each client keeps its
        // inflater.
        reader = reader.with_deflate();
    }
    loop {
        // Handle everything complete in the buffer.
        while let Some(next) = reader.next_message() {
            match next {
                Ok(Message::Text(frame)) => tracker.on_frame(frame, shared, stats),
                Ok(Message::Close(code, _)) => return finished(shared, format!("close_{code}")),
                Ok(Message::Ping(payload)) => {
                    let pong = aerobridge_client::client_frame(0xA, payload);
                    let _ = stream.write_all(pong).await;
                }
                Ok(Message::Pong) => {}
                Ok(Message::Torn) | Err(_) => {
                    if shared.deflate && spec.transport == Transport::Ws {
                        shared.inflate_errors.fetch_add(1, Ordering::Relaxed);
                    }
                    if shared.measuring.load(Ordering::Relaxed) {
                        stats.borrow_mut().group(spec.role).torn += 1;
                    }
                }
            }
        }
        if shared.done.load(Ordering::Relaxed) {
            return None;
        }
        let read = if slow {
            scratch.clear();
            let (res, b) = stream.append(scratch, chunk).await;
            scratch = b;
            if let Ok(n) = res {
                reader.push(&scratch[..n]);
            }
            compio::time::sleep(Duration::from_millis(50)).await;
            res
        } else {
            read_more(stream, &mut reader).await
        };
        match read {
            Ok(0) => {
                return finished(
                    shared,
                    if reader.buffered() == 0 {
                        "eof".into()
                    } else {
                        "eof_mid_frame".into()
                    },
                )
            }
            Ok(n) => {
                if shared.measuring.load(Ordering::Relaxed) {
                    shared.bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
            }
            Err(e) => return finished(shared, short(&e)),
        }
    }
}

/// Reads what is there into `reader`'s buffer (an owned-buffer read: the buffer goes to the
/// kernel and comes back).
pub async fn read_more(stream: &Conn, reader: &mut FrameReader) -> io::Result<usize> {
    let mut buf = reader.take_buffer();
    if buf.capacity() - buf.len() < 64 * 1024 {
        buf.reserve(128 * 1024);
    }
    let (res, b) = stream.append(buf, 64 * 1024).await;
    reader.put_buffer(b);
    res
}

/// A connection that ended once the run was over is not a disconnect.
fn finished(shared: &Shared, reason: String) -> Option<String> {
    if shared.done.load(Ordering::Relaxed) {
        None
    } else {
        Some(reason)
    }
}

/// A stalled client: never reads until the run is over, then drains to see how the server
/// treated it (Close code, EOF, or still connected).
async fn stalled(stream: &Conn, spec: ClientSpec, shared: &Shared) -> Option<String> {
    while !shared.done.load(Ordering::Relaxed) {
        compio::time::sleep(Duration::from_millis(100)).await;
    }
    let deadline = Instant::now() + Duration::from_millis(1500);
    let mut reader = FrameReader::new(Framing::WebSocket, Vec::with_capacity(256 * 1024));
    loop {
        if spec.transport == Transport::Ws {
            while let Some(next) = reader.next_message() {
                if let Ok(Message::Close(code, _)) = next {
                    return Some(format!("close_{code}"));
                }
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = reader.take_buffer();
        if spec.transport == Transport::Tcp {
            buf.clear(); // only the end of the stream matters
        }
        if buf.capacity() - buf.len() < 64 * 1024 {
            buf.reserve(256 * 1024);
        }
        match compio::time::timeout(left, stream.append(buf, 256 * 1024)).await {
            Err(_) => return None, // still connected: never cut off
            Ok((Ok(0), _)) => return Some("eof".into()),
            Ok((Ok(_), b)) => reader.put_buffer(b),
            Ok((Err(e), _)) => return Some(short(&e)),
        }
    }
}

/// `--churn`: this thread's share of new connections per second during the window, each
/// upgraded (TLS handshake first, with --tls) and closed at once.
pub async fn run_churn(shared: Arc<Shared>, stats: Stats, threads: usize) {
    let period = Duration::from_secs_f64(threads as f64 / shared.churn_rate.max(0.001));
    while !shared.measuring.load(Ordering::Relaxed) {
        if shared.done.load(Ordering::Relaxed) {
            return;
        }
        compio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut next = Instant::now();
    let mut index = 1_000_000usize;
    while shared.measuring.load(Ordering::Relaxed) && !shared.done.load(Ordering::Relaxed) {
        compio::time::sleep(next.saturating_duration_since(Instant::now())).await;
        next += period;
        index += 1;
        stats.borrow_mut().churn.attempted += 1;
        let (shared, stats) = (Arc::clone(&shared), Rc::clone(&stats));
        compio::runtime::spawn(async move {
            let started = Instant::now();
            let outcome = compio::time::timeout(
                Duration::from_secs(10),
                connect_ws(
                    shared.targets.ws,
                    Role::Healthy,
                    index,
                    0,
                    false,
                    shared.tls.as_ref(),
                ),
            )
            .await;
            let mut st = stats.borrow_mut();
            match outcome {
                Ok(Ok(_)) => {
                    st.churn.ok += 1;
                    let _ = st
                        .churn_hist
                        .record(started.elapsed().as_micros().max(1) as u64);
                }
                _ => st.churn.failed += 1,
            }
        })
        .detach();
    }
}

/// A command connection that cannot go on: counted, and the first reason kept in words.
fn command_failed(stats: &Stats, why: String) {
    let mut st = stats.borrow_mut();
    st.commands.errors += 1;
    st.commands.first_error.get_or_insert(why);
}

/// Commands at `command_rate`, each measured until its reply and until a frame shows it.
pub async fn run_commands(shared: Arc<Shared>, stats: Stats) {
    let Some(addr) = shared.targets.command else {
        return;
    };
    let pending: Rc<Cell<Option<(f64, Instant)>>> = Rc::new(Cell::new(None));
    // A dedicated telemetry client watches for the value (not counted in the fan-out figures).
    {
        let (shared, stats, pending) =
            (Arc::clone(&shared), Rc::clone(&stats), Rc::clone(&pending));
        compio::runtime::spawn(async move { watch_values(shared, stats, pending).await }).detach();
    }
    let stream = match TcpStream::connect(addr).await {
        Ok(s) => Conn::wrap(s, shared.tls.as_ref()).await,
        Err(e) => Err(e),
    };
    let stream = match stream {
        Ok(s) => s,
        Err(e) => {
            command_failed(
                &stats,
                format!("cannot connect to the command port {addr}: {e}"),
            );
            return;
        }
    };
    let period = Duration::from_secs_f64(1.0 / shared.command_rate.max(0.01));
    let mut next = Instant::now() + period;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut k: u64 = 0;
    while !shared.done.load(Ordering::Relaxed) {
        compio::time::sleep(next.saturating_duration_since(Instant::now())).await;
        next += period;
        k += 1;
        let value = ((k % 6000) as f64) * 0.001;
        let line = format!(
            "{{\"variable\":\"Navigation.SelectedCourse2\",\"value\":{value},\"id\":{k}}}\n"
        );
        let sent = Instant::now();
        let measuring = shared.measuring.load(Ordering::Relaxed);
        pending.set(Some((value, sent)));
        if let Err(e) = stream.write_all(line.into_bytes()).await {
            command_failed(&stats, format!("sending a command to {addr}: {e}"));
            return;
        }
        if measuring {
            stats.borrow_mut().commands.sent += 1;
        }
        // Wait for the reply line.
        loop {
            if let Some(nl) = memchr::memchr(b'\n', &buf) {
                let ok = memchr::memmem::find(&buf[..nl], b"\"ok\":true").is_some();
                buf.drain(..=nl);
                let mut st = stats.borrow_mut();
                if measuring {
                    st.commands.replies += 1;
                    if !ok {
                        st.commands.errors += 1;
                    }
                    let _ = st
                        .reply_hist
                        .record(sent.elapsed().as_micros().max(1) as u64);
                }
                break;
            }
            buf.reserve(4096);
            let res =
                compio::time::timeout(Duration::from_secs(2), stream.append(buf, 16 * 1024)).await;
            match res {
                Ok((Ok(n), b)) if n > 0 => buf = b,
                other => {
                    let why = match other {
                        Err(_) => "no reply within 2 s".to_string(),
                        Ok((Err(e), _)) => e.to_string(),
                        Ok(_) => "the server closed the command connection".to_string(),
                    };
                    command_failed(&stats, format!("command port {addr}: {why}"));
                    return;
                }
            }
        }
    }
}

async fn watch_values(
    shared: Arc<Shared>,
    stats: Stats,
    pending: Rc<Cell<Option<(f64, Instant)>>>,
) {
    let stream = match TcpStream::connect(shared.targets.tcp).await {
        Ok(s) => Conn::wrap(s, shared.tls.as_ref()).await,
        Err(e) => Err(e),
    };
    let Ok(stream) = stream else {
        return;
    };
    let key = b"\"Navigation.SelectedCourse2\":";
    let mut buf: Vec<u8> = Vec::with_capacity(256 * 1024);
    while !shared.done.load(Ordering::Relaxed) {
        let mut pos = 0;
        while let Some(nl) = memchr::memchr(b'\n', &buf[pos..]) {
            let line = &buf[pos..pos + nl];
            pos += nl + 1;
            let Some((value, sent)) = pending.get() else {
                continue;
            };
            let Some(at) = memchr::memmem::find(line, key) else {
                continue;
            };
            let rest = &line[at + key.len()..];
            let end = rest
                .iter()
                .position(|b| *b == b',' || *b == b'}')
                .unwrap_or(rest.len());
            let shown: Option<f64> = std::str::from_utf8(&rest[..end])
                .ok()
                .and_then(|s| s.parse().ok());
            if shown == Some(value) {
                pending.set(None);
                if shared.measuring.load(Ordering::Relaxed) {
                    let _ = stats
                        .borrow_mut()
                        .visible_hist
                        .record(sent.elapsed().as_micros().max(1) as u64);
                }
            }
        }
        buf.drain(..pos);
        buf.reserve(128 * 1024);
        let (res, b) = stream.append(buf, 64 * 1024).await;
        buf = b;
        if !matches!(res, Ok(n) if n > 0) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_in_the_head() {
        let f = br#"{"schema":"aerofly-bridge-telemetry","schema_version":1,"timestamp":1763712000123456,"timestamp_unit":"microseconds","data_valid":1,"update_counter":4242,"broadcast_rate_hz":50.0,"variables":{}}"#;
        assert_eq!(field_u64(f, b"\"timestamp\":"), Some(1763712000123456));
        assert_eq!(field_u64(f, b"\"update_counter\":"), Some(4242));
        assert_eq!(field_u64(b"{}", b"\"timestamp\":"), None);
    }
}
