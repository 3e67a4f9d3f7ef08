//! A flood of clients that never read must not cost a kernel thread each, nor delay anyone else.
//!
//! 10 000 connections opened in under 3 s that never read (to the data, WebSocket or command
//! port; 4 KiB receive buffers), beside healthy
//! TCP and WebSocket clients that read everything. Before the fix, every stuck send was punted to
//! an io_uring io-wq worker that blocked in the kernel: against the previous code the first test
//! saw 4 063 server threads (4 054 io-wq workers) and healthy clients losing frames. The floods
//! share the host's TCP memory, so they never run at the same time (and this binary holds no
//! other tests).

mod common;

use common::*;
use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const STALLED: usize = 10_000;
/// The fewest stalled clients of the TCP-memory-pressure flood.
const PRESSURE_MIN: usize = 5_000;
/// New connections per second: 10 000 in under 3 s.
const FLOOD_RATE: f64 = 3_500.0;
/// The longest a healthy client may wait for a frame, the ramp included (5 periods).
const LONGEST_WAIT: Duration = Duration::from_millis(100);
const BROADCAST_MS: u64 = 20;
const WORKERS: usize = 2;
/// Threads a server may have beyond its workers and three acceptors: main, tick, stats logger,
/// the signal handler, and room for a few short-lived helpers.
const OTHER_THREADS: usize = 8;
const THREAD_LIMIT: usize = WORKERS + 3 + OTHER_THREADS;

static FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Where a flood goes.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Port {
    Data,
    WebSocket,
    Command,
}

/// A server under a flood of stalled clients, with its thread peaks sampled all along.
struct Flood {
    /// Stalled clients to open.
    size: usize,
    server: Server,
    fds_before: usize,
    stalled: Vec<TcpStream>,
    max_threads: usize,
    max_io_wq: usize,
}

impl Flood {
    fn start(size: usize, extra: &[&str]) -> Flood {
        let (workers, broadcast, max_clients) = (
            WORKERS.to_string(),
            BROADCAST_MS.to_string(),
            (size + 100).to_string(),
        );
        let mut args = vec![
            "--workers",
            &workers,
            "--broadcast-ms",
            &broadcast,
            "--max-lag",
            "2s",
            "--max-clients",
            &max_clients,
        ];
        args.extend_from_slice(extra);
        let server = Server::start(&args);
        let threads = server.thread_count();
        assert!(threads <= THREAD_LIMIT, "{threads} threads at start");
        Flood {
            size,
            fds_before: server.fd_count(),
            server,
            stalled: Vec::with_capacity(size),
            max_threads: threads,
            max_io_wq: 0,
        }
    }

    fn sample(&mut self) {
        self.max_threads = self.max_threads.max(self.server.thread_count());
        self.max_io_wq = self.max_io_wq.max(self.server.io_wq_threads());
    }

    /// Opens the stalled clients (4 KiB receive buffers; they never read) at [`FLOOD_RATE`]
    /// connections per second, to `port`: the data port; the WebSocket port (each sends its
    /// upgrade request, then reads nothing); the command port (connects and says nothing).
    fn open_stalled(&mut self, port: Port) {
        let start = Instant::now();
        let upgrade = RawWs::request("");
        for i in 0..self.size {
            self.stalled.push(match port {
                Port::Data => small_buffer_stream(self.server.data, 4096),
                Port::WebSocket => {
                    let mut s = small_buffer_stream(self.server.ws(), 4096);
                    s.write_all(upgrade.as_bytes()).unwrap();
                    s
                }
                Port::Command => TcpStream::connect(self.server.command).unwrap(),
            });
            if i % 250 == 0 {
                self.sample();
            }
            if i % 50 == 49 {
                // The flood's pace (the load under test, not a wait for an event).
                let due = start + Duration::from_secs_f64((i + 1) as f64 / FLOOD_RATE);
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
        }
    }

    /// Samples for `hold`.
    fn hold(&mut self, hold: Duration) {
        let until = Instant::now() + hold;
        while Instant::now() < until {
            self.sample();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Samples for `hold`, then until every stalled client was cut off as a slow consumer.
    fn hold_until_all_cut_off(&mut self, hold: Duration) {
        let until = Instant::now() + hold;
        while Instant::now() < until {
            self.sample();
            std::thread::sleep(Duration::from_millis(50));
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self
            .server
            .metric("disconnects_total{reason=\"slow_consumer\"}")
            < self.size as f64
        {
            assert!(
                Instant::now() < deadline,
                "not every stalled client was disconnected as a slow consumer"
            );
            self.sample();
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Asserts the thread peaks, closes the stalled clients, checks that every fd was released
    /// and that the server exits cleanly.
    fn finish(mut self) {
        assert!(
            self.max_threads <= THREAD_LIMIT,
            "the server grew to {} threads ({} io-wq workers) under {} stalled clients; at most {THREAD_LIMIT} allowed",
            self.max_threads,
            self.size,
            self.max_io_wq
        );
        assert_eq!(
            self.max_io_wq, 0,
            "io_uring punted operations to kernel workers"
        );
        self.stalled.clear();
        let fds_before = self.fds_before;
        self.server.wait_until(
            "the server's file descriptors are back to their count before the flood",
            Duration::from_secs(30),
            |s| s.fd_count() <= fds_before,
        );
        let (status, _) = self.server.terminate(Duration::from_secs(5));
        assert!(status.success());
    }
}

/// A flood of [`STALLED`] connections at [`FLOOD_RATE`] to `port` beside 20 TCP + 20 WebSocket
/// healthy clients: no kernel threads, no healthy frame lost, no healthy wait over
/// [`LONGEST_WAIT`], the ramp included; every fd back afterwards.
fn flood_beside_healthy_clients(port: Port) {
    let _one_flood_at_a_time = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let mut flood = Flood::start(STALLED, &[]);
    let watchers = Watchers::start(&flood.server, 20, 20);
    flood.server.wait_for_clients(20, 20);
    let t0 = Instant::now();
    let steal_before = aerobridge_harness::procfs::host_steal_ms();
    flood.open_stalled(port);
    let ramp = t0.elapsed();
    let held = Instant::now() + Duration::from_secs(5);
    if port == Port::Command {
        // Command connections receive no telemetry: they stay until the test closes them.
        flood.hold(Duration::from_secs(5));
    } else {
        flood.hold_until_all_cut_off(Duration::from_secs(5));
    }
    let cut_off = Instant::now();
    let seen = watchers.finish();
    let server = &flood.server;
    // When a wait is too long, these say whether the whole server stopped (its tick thread
    // missed slots) and whether the host took the CPUs away (steal, on a virtual machine).
    let stalls = format!(
        "server tick slots missed {}, host CPU steal {} ms",
        server.metric("ticks_missed_total"),
        aerobridge_harness::procfs::host_steal_ms().saturating_sub(steal_before)
    );
    eprintln!(
        "{port:?} flood of {STALLED} in {ramp:.2?}: max {} threads, {} io-wq workers; skipped {} frames, {} send waits, {} admissions deferred; {stalls}; watchers (frames, gaps, longest wait ms): {:?}",
        flood.max_threads,
        flood.max_io_wq,
        server.metric("frames_skipped_total"),
        server.metric("send_waits_total"),
        server.try_metric("admissions_deferred_total").unwrap_or(f64::NAN),
        seen.iter()
            .map(|s| (s.frames, s.gaps, s.longest_wait.as_millis()))
            .collect::<Vec<_>>()
    );
    assert!(
        ramp <= Duration::from_secs(4),
        "the flood took {ramp:?} to open"
    );
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(
            s.gaps,
            0,
            "healthy client {i} missed frames: {:?} (flood ramp {ramp:?}, held until {:?}, all cut off by {:?})",
            s.gaps_seen.iter().map(|(a, b, at)| (a, b, at.saturating_duration_since(t0))).collect::<Vec<_>>(),
            held.saturating_duration_since(t0),
            cut_off.saturating_duration_since(t0),
        );
        assert!(
            s.longest_wait <= LONGEST_WAIT,
            "healthy client {i} waited {:?} for a frame (at {:?} after the flood began; more than {LONGEST_WAIT:?}; {stalls})",
            s.longest_wait,
            s.longest_wait_at.map(|at| at.saturating_duration_since(t0)),
        );
        assert!(
            s.frames > 300,
            "healthy client {i} saw only {} frames",
            s.frames
        );
    }
    assert_eq!(server.metric("disconnects_total{reason=\"io_error\"}"), 0.0);
    flood.finish();
}

#[test]
fn a_data_port_flood_costs_no_kernel_threads_and_no_healthy_frames() {
    flood_beside_healthy_clients(Port::Data);
}

#[test]
fn a_websocket_port_flood_costs_no_healthy_frames() {
    flood_beside_healthy_clients(Port::WebSocket);
}

#[test]
fn a_command_port_flood_costs_no_healthy_frames() {
    flood_beside_healthy_clients(Port::Command);
}

/// The same flood with 1 MiB send buffers (`--send-buffer 1048576`), sized to this host's
/// `tcp_mem` so that the stalled clients always push the whole host into TCP memory pressure
/// (at least 5 000 of them; on this machine they ask the kernel for ~10 GB): poll then
/// reports sockets writable while sends still fail. That is the state in which io_uring used to
/// punt each send to a blocking kernel worker. Sends must back off instead (counted), no kernel
/// thread may appear, and every stalled client is still cut off as a slow consumer. Healthy
/// clients share the host's exhausted TCP memory here, so only their survival is checked.
#[test]
fn under_host_tcp_memory_pressure_sends_back_off_instead_of_blocking_kernel_threads() {
    let _one_flood_at_a_time = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let size = pressure_flood_size();
    let mut flood = Flood::start(size, &["--send-buffer", "1048576"]);
    let watchers = Watchers::start(&flood.server, 2, 2);
    flood.open_stalled(Port::Data);
    flood.hold_until_all_cut_off(Duration::ZERO);
    let pressure = flood.server.metric("send_memory_pressure_total");
    let seen = watchers.finish();
    eprintln!(
        "pressure flood of {size}: max {} threads, {} io-wq workers, {pressure} sends under memory pressure; watchers (frames, gaps): {:?}",
        flood.max_threads,
        flood.max_io_wq,
        seen.iter().map(|s| (s.frames, s.gaps)).collect::<Vec<_>>()
    );
    assert!(
        pressure > 0.0,
        "{size} stalled clients did not reach TCP memory pressure: the back-off path was not exercised"
    );
    assert!(
        seen.iter().all(|s| s.frames > 10),
        "healthy clients stopped receiving"
    );
    flood.finish();
}

/// The host's `tcp_mem` hard limit in bytes (Linux; pages of 4 KiB).
fn tcp_mem_limit() -> u64 {
    aerobridge_harness::procfs::tcp_mem_limits()
        .expect("Linux tcp_mem")
        .1
}

/// Stalled clients enough to exceed `tcp_mem` by half again: each pins about 1 MB before it is
/// cut off (50 frames/s of 11 KB for the 2 s of `--max-lag`, within its 1 MiB send buffer).
/// At least [`PRESSURE_MIN`]; a host whose limit needs more than 15 000 (the fd budget) fails here
/// rather than passing without exercising anything.
fn pressure_flood_size() -> usize {
    const PINNED_PER_CLIENT: u64 = 1_000_000;
    let limit = tcp_mem_limit();
    let size = ((limit * 3 / 2).div_ceil(PINNED_PER_CLIENT) as usize).max(PRESSURE_MIN);
    assert!(
        size <= 15_000,
        "this host's tcp_mem limit ({limit} bytes) needs {size} stalled clients to reach; lower net.ipv4.tcp_mem to run this test"
    );
    size
}
