//! Test harness: runs the real `aerobridge` binary on free ports and speaks to it over loopback
//! with plain sockets, a raw WebSocket client (for protocol violations), and tungstenite.
#![allow(dead_code)]

pub mod proxy;

use aerobridge_harness::procfs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running server process (the shared harness, `aerobridge-harness`); killed on drop.
pub struct Server {
    process: aerobridge_harness::Process,
    pub data: SocketAddr,
    pub command: SocketAddr,
    pub ws: Option<SocketAddr>,
}

impl Server {
    /// Starts the server with `args` on free ports and waits until it listens.
    pub fn start(args: &[&str]) -> Server {
        Self::start_with_env(args, &[])
    }

    /// Like [`start`], with extra environment variables.
    pub fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Server {
        use aerobridge::net::ListenerKind;
        let all = aerobridge_harness::aerobridge_args(args);
        let want_ws =
            !args.contains(&"--no-ws") && !env.contains(&("AEROFLY_BRIDGE_WS_ENABLE", "0"));
        let mut expect = vec![ListenerKind::Data, ListenerKind::Command];
        if want_ws {
            expect.push(ListenerKind::WebSocket);
        }
        let (process, ports) = aerobridge_harness::spawn_aerobridge(
            Path::new(env!("CARGO_BIN_EXE_aerobridge")),
            &all,
            env,
            &expect,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Server {
            process,
            data: ports.data.unwrap(),
            command: ports.command.unwrap(),
            ws: ports.ws,
        }
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// Open file descriptors of the server process (Linux `/proc`; a missing `/proc` fails the
    /// test rather than making every leak check vacuous).
    pub fn fd_count(&self) -> usize {
        procfs::fd_count(self.pid()).expect("/proc/PID/fd (the leak checks need Linux /proc)")
    }

    /// Waits until `tcp` TCP and `ws` WebSocket telemetry clients are registered.
    pub fn wait_for_clients(&self, tcp: usize, ws: usize) {
        self.wait_until(
            &format!("{tcp} TCP and {ws} WebSocket clients are connected"),
            Duration::from_secs(20),
            |s| {
                s.metric("clients{transport=\"tcp\"}") >= tcp as f64
                    && s.metric("clients{transport=\"ws\"}") >= ws as f64
            },
        );
    }

    /// Threads of the server process (kernel io-wq workers included: they are its tasks too).
    pub fn thread_count(&self) -> usize {
        procfs::thread_names(self.pid())
            .expect("/proc/PID/task (Linux)")
            .len()
    }

    /// Names of the server's threads that are io_uring kernel workers (`iou-wrk-*`).
    pub fn io_wq_threads(&self) -> usize {
        procfs::thread_names(self.pid())
            .expect("/proc/PID/task (Linux)")
            .iter()
            .filter(|name| name.starts_with("iou-wrk"))
            .count()
    }

    /// One sample from `GET /metrics`, e.g. `disconnects_total{reason="slow_consumer"}` (the
    /// `aerobridge_` prefix is added).
    pub fn metric(&self, sample: &str) -> f64 {
        self.try_metric(sample)
            .unwrap_or_else(|page| panic!("no sample aerobridge_{sample} in /metrics: {page}"))
    }

    /// Like [`metric`], or the page that came back instead (e.g. 503 while the server is full).
    pub fn try_metric(&self, sample: &str) -> Result<f64, String> {
        let mut s = TcpStream::connect(self.ws()).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).map_err(|e| e.to_string())?;
        let want = format!("aerobridge_{sample} ");
        page.lines()
            .find_map(|l| l.strip_prefix(&want))
            .and_then(|v| v.trim().parse().ok())
            .ok_or(page)
    }

    /// Waits until `cond` holds, polling every 50 ms; panics with `what` after `timeout`.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut cond: impl FnMut(&Self) -> bool) {
        let deadline = Instant::now() + timeout;
        while !cond(self) {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resident memory of the server process, bytes.
    pub fn rss(&self) -> u64 {
        procfs::rss_bytes(Some(self.pid()))
            .expect("VmRSS in /proc/PID/status (the memory checks need Linux /proc)")
    }

    pub fn ws(&self) -> SocketAddr {
        self.ws.expect("WebSocket enabled")
    }

    /// Everything the server logged so far.
    pub fn log(&self) -> Vec<String> {
        self.process.log()
    }

    /// Waits until a log line contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> String {
        self.process
            .wait_for_log(needle, timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends SIGTERM and waits (bounded) for the exit.
    pub fn terminate(&mut self, timeout: Duration) -> (ExitStatus, Duration) {
        self.process
            .terminate(timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// The shutdown totals line (after [`terminate`]).
    pub fn totals_field(&self, field: &str) -> u64 {
        let line = self.wait_for_log("totals at shutdown", Duration::from_secs(5));
        let start = line
            .find(&format!("{field}="))
            .unwrap_or_else(|| panic!("{field} not in {line}"))
            + field.len()
            + 1;
        line[start..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// The `variables` keys in wire order, from the reference TSV (duplicates once, first position).
pub fn reference_keys() -> Vec<String> {
    let tsv = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/proto/data/aerofly-variables.tsv"
    ))
    .unwrap();
    let mut keys: Vec<String> = Vec::new();
    for line in tsv.lines().skip(1) {
        let name = line.split('\t').nth(1).unwrap().to_string();
        if !keys.contains(&name) {
            keys.push(name);
        }
    }
    keys
}

/// Parses a frame with simd-json and returns (top-level keys, variables keys), both in order.
pub fn frame_keys(frame: &[u8]) -> (Vec<String>, Vec<String>) {
    use simd_json::Node;
    let mut bytes = frame.to_vec();
    let tape = simd_json::to_tape(&mut bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(frame)));
    let nodes = &tape.0;
    let skip = |i: usize| match nodes[i] {
        Node::Object { count, .. } | Node::Array { count, .. } => i + 1 + count,
        _ => i + 1,
    };
    let Node::Object { len, .. } = nodes[0] else {
        panic!("frame is not an object")
    };
    let (mut top, mut vars) = (Vec::new(), Vec::new());
    let mut i = 1;
    for _ in 0..len {
        let Node::String(key) = nodes[i] else {
            panic!("key expected")
        };
        top.push(key.to_string());
        if key == "variables" {
            let Node::Object { len: n, .. } = nodes[i + 1] else {
                panic!("variables is not an object")
            };
            let mut j = i + 2;
            for _ in 0..n {
                let Node::String(k) = nodes[j] else {
                    panic!("key expected")
                };
                vars.push(k.to_string());
                j = skip(j + 1);
            }
        }
        i = skip(i + 1);
    }
    (top, vars)
}

/// The `update_counter` of a frame, found without a full parse.
pub fn counter_of(frame: &[u8]) -> u64 {
    let s = std::str::from_utf8(frame).expect("utf-8");
    let at = s.find("\"update_counter\":").expect("update_counter") + "\"update_counter\":".len();
    s[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

/// A parsed frame (serde_json) for value checks.
pub fn parse(frame: &[u8]) -> serde_json::Value {
    serde_json::from_slice(frame)
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", String::from_utf8_lossy(frame)))
}

/// A TCP telemetry client reading lines.
pub struct TcpLines {
    reader: BufReader<TcpStream>,
}

impl TcpLines {
    pub fn connect(addr: SocketAddr) -> Self {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        TcpLines {
            reader: BufReader::new(s),
        }
    }

    /// A handle for writing to the same socket.
    pub fn writer(&self) -> TcpStream {
        self.reader.get_ref().try_clone().unwrap()
    }

    /// The next frame, `\n` included.
    pub fn frame(&mut self) -> Vec<u8> {
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).unwrap();
        assert!(
            line.ends_with(b"\n"),
            "frame without newline: {}",
            String::from_utf8_lossy(&line)
        );
        line
    }
}

/// Sends `text` on a fresh command connection, half-closes, and returns the reply lines.
pub fn command_oneshot(addr: SocketAddr, text: &str) -> Vec<serde_json::Value> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(text.as_bytes()).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A minimal WebSocket client that can also break the rules.
pub struct RawWs {
    pub stream: TcpStream,
    /// The HTTP response head to the upgrade request.
    pub head: String,
    buf: Vec<u8>,
}

/// A server frame.
#[derive(Debug)]
pub struct WsFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl RawWs {
    /// Opens a connection and completes the upgrade.
    pub fn connect(addr: SocketAddr) -> Self {
        let (ws, status) = Self::upgrade(addr, &Self::request(""));
        assert_eq!(status, 101);
        ws
    }

    pub fn request(extra_headers: &str) -> String {
        format!(
            "GET / HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{extra_headers}\r\n"
        )
    }

    /// Opens a connection with a small receive buffer (to stall it quickly) and upgrades.
    pub fn connect_small_buffer(addr: SocketAddr, rcvbuf: usize) -> Self {
        let (ws, status) = Self::upgrade_on(small_buffer_stream(addr, rcvbuf), &Self::request(""));
        assert_eq!(status, 101);
        ws
    }

    /// Sends `request` and returns the connection and the response status.
    pub fn upgrade(addr: SocketAddr, request: &str) -> (Self, u16) {
        Self::upgrade_on(TcpStream::connect(addr).unwrap(), request)
    }

    pub fn upgrade_on(mut stream: TcpStream, request: &str) -> (Self, u16) {
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.write_all(request.as_bytes()).unwrap();
        let mut ws = RawWs {
            stream,
            head: String::new(),
            buf: Vec::new(),
        };
        ws.head = ws.read_http_head();
        let status = ws.head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (ws, status)
    }

    /// Reads the response head (and leaves the rest buffered).
    pub fn read_http_head(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(self.buf[..end + 4].to_vec()).unwrap();
                self.buf.drain(..end + 4);
                return head;
            }
            self.fill();
        }
    }

    /// Reads the rest of an HTTP error response body until EOF.
    pub fn read_to_end(&mut self) -> String {
        let mut rest = Vec::new();
        let _ = self.stream.read_to_end(&mut rest);
        self.buf.extend(rest);
        String::from_utf8_lossy(&std::mem::take(&mut self.buf)).into_owned()
    }

    fn fill(&mut self) -> usize {
        let mut chunk = [0u8; 65536];
        let n = self.stream.read(&mut chunk).expect("read");
        assert!(n > 0, "connection closed");
        self.buf.extend_from_slice(&chunk[..n]);
        n
    }

    /// Sends a frame; `mask` false sends it unmasked (a protocol violation).
    pub fn send(&mut self, fin: bool, opcode: u8, payload: &[u8], mask: bool) {
        let frame = if mask {
            aerobridge::ws::reader::client_frame(fin, opcode, payload, [0x12, 0x34, 0x56, 0x78])
        } else {
            let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
            assert!(payload.len() < 126);
            f.push(payload.len() as u8);
            f.extend_from_slice(payload);
            f
        };
        self.stream.write_all(&frame).unwrap();
    }

    pub fn send_text(&mut self, text: &str) {
        self.send(true, 1, text.as_bytes(), true);
    }

    /// Reads the next server frame.
    pub fn frame(&mut self) -> WsFrame {
        loop {
            if let Some(h) = aerobridge::ws::frame::decode_header(&self.buf) {
                assert!(h.mask.is_none(), "server frames are unmasked");
                let end = h.header_len + h.payload_len as usize;
                if self.buf.len() >= end {
                    let payload = self.buf[h.header_len..end].to_vec();
                    self.buf.drain(..end);
                    return WsFrame {
                        fin: h.fin,
                        opcode: h.opcode,
                        payload,
                    };
                }
            }
            self.fill();
        }
    }

    /// Reads frames until a Close; returns (code, reason, text frames seen before it). Every text
    /// frame must be a whole JSON document.
    pub fn until_close(&mut self) -> (u16, String, usize) {
        let mut texts = 0;
        loop {
            let f = self.frame();
            match f.opcode {
                1 => {
                    parse(&f.payload);
                    texts += 1;
                }
                8 => {
                    let code = u16::from_be_bytes([f.payload[0], f.payload[1]]);
                    return (
                        code,
                        String::from_utf8(f.payload[2..].to_vec()).unwrap(),
                        texts,
                    );
                }
                _ => {}
            }
        }
    }

    /// Reads frames until a text message that is not telemetry (a command reply).
    pub fn reply(&mut self) -> serde_json::Value {
        loop {
            let f = self.frame();
            if f.opcode == 1 {
                let v = parse(&f.payload);
                if v.get("schema").is_none() {
                    return v;
                }
            }
        }
    }
}

/// A TCP connection whose receive buffer is set before connecting (so the window stays small).
pub fn small_buffer_stream(addr: SocketAddr, rcvbuf: usize) -> TcpStream {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )
    .unwrap();
    socket.set_recv_buffer_size(rcvbuf).unwrap();
    socket.connect(&addr.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Counts frames and gaps in a stream of `update_counter`s.
#[derive(Default, Debug)]
pub struct GapCounter {
    pub frames: u64,
    pub gaps: u64,
    last: Option<u64>,
    last_at: Option<Instant>,
    /// Longest time between two consecutive frames.
    pub longest_wait: Duration,
    /// When that wait ended.
    pub longest_wait_at: Option<Instant>,
    /// Each gap: (the counter before it, the counter after it, when).
    pub gaps_seen: Vec<(u64, u64, Instant)>,
}

impl GapCounter {
    pub fn see(&mut self, counter: u64) {
        let now = Instant::now();
        if let Some(l) = self.last.filter(|l| counter != l + 1) {
            self.gaps += 1;
            self.gaps_seen.push((l, counter, now));
        }
        if let Some(at) = self.last_at {
            if now - at > self.longest_wait {
                self.longest_wait = now - at;
                self.longest_wait_at = Some(now);
            }
        }
        self.last = Some(counter);
        self.last_at = Some(now);
        self.frames += 1;
    }
}

/// Healthy clients (TCP and WebSocket) that count gaps in the background until stopped.
pub struct Watchers {
    stop: Arc<std::sync::atomic::AtomicBool>,
    /// Frames each has seen so far.
    seen: Vec<Arc<std::sync::atomic::AtomicU64>>,
    threads: Vec<std::thread::JoinHandle<GapCounter>>,
}

/// Frames every watcher must have seen before it is stopped (1.5 s at 50 Hz).
const WATCH_AT_LEAST: u64 = 75;

impl Watchers {
    pub fn start(server: &Server, tcp: usize, ws: usize) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut counts = Vec::new();
        for i in 0..tcp + ws {
            let stop = Arc::clone(&stop);
            let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
            counts.push(Arc::clone(&count));
            let (data, wsaddr) = (server.data, server.ws());
            threads.push(std::thread::spawn(move || {
                let mut seen = GapCounter::default();
                if i < tcp {
                    let mut c = TcpLines::connect(data);
                    while !stop.load(Relaxed) {
                        seen.see(counter_of(&c.frame()));
                        count.store(seen.frames, Relaxed);
                    }
                } else {
                    let mut c = RawWs::connect(wsaddr);
                    while !stop.load(Relaxed) {
                        let f = c.frame();
                        if f.opcode == 1 {
                            seen.see(counter_of(&f.payload));
                            count.store(seen.frames, Relaxed);
                        }
                    }
                }
                seen
            }));
        }
        Watchers {
            stop,
            seen: counts,
            threads,
        }
    }

    /// Waits until every watcher has seen [`WATCH_AT_LEAST`] frames (a busy machine only makes
    /// this take longer), then stops them.
    fn stop_after_enough(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Some(short) = self.seen.iter().map(|c| c.load(Relaxed)).min() {
            if short >= WATCH_AT_LEAST {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "a healthy client saw only {short} frames in 30 s"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.stop.store(true, Relaxed);
    }

    /// Stops them (once each has seen enough frames) and returns what each saw.
    pub fn finish(self) -> Vec<GapCounter> {
        self.stop_after_enough();
        self.threads
            .into_iter()
            .map(|t| t.join().expect("watcher panicked"))
            .collect()
    }

    /// Stops them (once each has seen enough frames); asserts none missed a frame.
    pub fn finish_without_gaps(self) {
        self.stop_after_enough();
        for t in self.threads {
            let seen = t.join().expect("watcher panicked");
            assert_eq!(seen.gaps, 0, "a healthy client missed frames");
            assert!(
                seen.frames > 10,
                "a healthy client saw only {} frames",
                seen.frames
            );
        }
    }
}

/// Runs `tests/python/SCRIPT` with `args`; asserts it succeeded (showing its output if not) and
/// returns its standard output.
pub fn python(script: &str, args: &[&str]) -> String {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new("python3")
        .arg(&path)
        .args(args)
        .output()
        .expect("python3 (with websockets and prometheus_client: see README's test command)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
