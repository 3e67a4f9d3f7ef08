//! A flood of clients that never read must not cost a kernel thread each, nor delay anyone else.
//!
//! 5 000 TCP telemetry clients with a 4 KiB receive buffer connect and never read, beside 20 TCP
//! and 20 WebSocket clients that read everything, for 10 s. Before the fix, every stuck send was
//! punted to an io_uring io-wq worker that blocked in the kernel: the server grew one thread per
//! stalled client and the healthy clients lost thousands of frames. This is the only test in its
//! binary, so nothing else shares the host's TCP memory while it runs.

mod common;

use common::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};

const STALLED: usize = 5_000;
const BROADCAST_MS: u64 = 20;
const WORKERS: usize = 2;
/// Threads a server may have beyond its workers and three acceptors: main, tick, stats logger,
/// the signal handler, and room for a few short-lived helpers.
const OTHER_THREADS: usize = 8;

/// The floods share the host's TCP memory: never run two at once.
static FLOOD: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn five_thousand_stalled_clients_cost_no_kernel_threads_and_no_healthy_frames() {
    let _one_flood_at_a_time = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let mut server = Server::start(&[
        "--workers",
        &WORKERS.to_string(),
        "--broadcast-ms",
        &BROADCAST_MS.to_string(),
        "--max-lag",
        "2s",
        "--max-clients",
        &(STALLED + 100).to_string(),
    ]);
    let fds_before = server.fd_count();
    let limit = WORKERS + 3 + OTHER_THREADS;
    assert!(
        server.thread_count() <= limit,
        "{} threads at start",
        server.thread_count()
    );

    let t0 = Instant::now();
    let watchers = Watchers::start(&server, 20, 20);
    server.wait_until("the watchers are connected", Duration::from_secs(20), |s| {
        s.metric("clients{transport=\"tcp\"}") >= 20.0
            && s.metric("clients{transport=\"ws\"}") >= 20.0
    });

    let mut max_threads = 0;
    let mut max_io_wq = 0;
    let mut sample = |server: &Server| {
        max_threads = max_threads.max(server.thread_count());
        max_io_wq = max_io_wq.max(server.io_wq_threads());
    };
    let mut stalled: Vec<TcpStream> = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        stalled.push(small_buffer_stream(server.data, 4096));
        if i % 250 == 0 {
            sample(&server);
        }
    }
    // Hold the flood for 10 s, watching the server's threads all along.
    let hold_until = Instant::now() + Duration::from_secs(10);
    while Instant::now() < hold_until {
        sample(&server);
        std::thread::sleep(Duration::from_millis(50));
    }
    // Every stalled client is cut off as a slow consumer (counted), none by anything else.
    server.wait_until(
        "every stalled client is disconnected as a slow consumer",
        Duration::from_secs(60),
        |s| {
            sample(s);
            s.metric("disconnects_total{reason=\"slow_consumer\"}") >= STALLED as f64
        },
    );
    let seen = watchers.finish();
    eprintln!(
        "stall flood: max {max_threads} threads, {max_io_wq} io-wq workers; skipped {} frames, {} send waits, {} under memory pressure; watchers: {:?}",
        server.metric("frames_skipped_total"),
        server.metric("send_waits_total"),
        server.metric("send_memory_pressure_total"),
        seen.iter().map(|s| (s.frames, s.gaps, s.longest_wait.as_millis(), s.longest_wait_at.map(|a| (a - t0).as_millis()))).collect::<Vec<_>>()
    );

    assert!(
        max_threads <= limit,
        "the server grew to {max_threads} threads ({max_io_wq} io-wq workers) under {STALLED} stalled clients; at most {limit} allowed"
    );
    assert_eq!(max_io_wq, 0, "io_uring punted operations to kernel workers");
    for (i, s) in seen.iter().enumerate() {
        assert_eq!(s.gaps, 0, "healthy client {i} missed frames: {s:?}");
        assert!(
            s.longest_wait <= Duration::from_millis(10 * BROADCAST_MS),
            "healthy client {i} waited {:?} for a frame (more than 10 periods)",
            s.longest_wait
        );
        assert!(
            s.frames > 500,
            "healthy client {i} saw only {} frames",
            s.frames
        );
    }
    assert_eq!(server.metric("disconnects_total{reason=\"io_error\"}"), 0.0);

    drop(stalled);
    server.wait_until(
        "the server's file descriptors are back to their count before the flood",
        Duration::from_secs(30),
        |s| s.fd_count() <= fds_before,
    );
    let (status, _) = server.terminate(Duration::from_secs(5));
    assert!(status.success());
}

/// The same flood with 1 MiB send buffers (`--send-buffer 1048576`), so that 5 000 stalled
/// clients ask the kernel for ~10 GB and push the whole host into TCP memory pressure: poll then
/// reports sockets writable while sends still fail. That is the state in which io_uring used to
/// punt each send to a blocking kernel worker. Sends must back off instead (counted), no kernel
/// thread may appear, and every stalled client is still cut off as a slow consumer.
#[test]
fn under_host_tcp_memory_pressure_sends_back_off_instead_of_blocking_kernel_threads() {
    let _one_flood_at_a_time = FLOOD.lock().unwrap_or_else(|e| e.into_inner());
    let mut server = Server::start(&[
        "--workers",
        &WORKERS.to_string(),
        "--broadcast-ms",
        &BROADCAST_MS.to_string(),
        "--max-lag",
        "2s",
        "--send-buffer",
        "1048576",
        "--max-clients",
        &(STALLED + 100).to_string(),
    ]);
    let fds_before = server.fd_count();
    let limit = WORKERS + 3 + OTHER_THREADS;
    let mut max_threads = 0;
    let mut max_io_wq = 0;
    let mut sample = |server: &Server| {
        max_threads = max_threads.max(server.thread_count());
        max_io_wq = max_io_wq.max(server.io_wq_threads());
    };
    let watcher = Watchers::start(&server, 2, 2);
    let mut stalled: Vec<TcpStream> = Vec::with_capacity(STALLED);
    for i in 0..STALLED {
        stalled.push(small_buffer_stream(server.data, 4096));
        if i % 250 == 0 {
            sample(&server);
        }
    }
    server.wait_until(
        "every stalled client is disconnected as a slow consumer",
        Duration::from_secs(60),
        |s| {
            sample(s);
            s.metric("disconnects_total{reason=\"slow_consumer\"}") >= STALLED as f64
        },
    );
    let pressure = server.metric("send_memory_pressure_total");
    let seen = watcher.finish();
    eprintln!(
        "pressure flood: max {max_threads} threads, {max_io_wq} io-wq workers, {pressure} sends under memory pressure; watchers {:?}",
        seen.iter().map(|s| (s.frames, s.gaps, s.longest_wait.as_millis())).collect::<Vec<_>>()
    );
    assert!(
        max_threads <= limit,
        "{max_threads} threads ({max_io_wq} io-wq workers)"
    );
    assert_eq!(max_io_wq, 0, "io_uring punted operations to kernel workers");
    drop(stalled);
    server.wait_until(
        "fds back to their count before the flood",
        Duration::from_secs(30),
        |s| s.fd_count() <= fds_before,
    );
    let (status, _) = server.terminate(Duration::from_secs(5));
    assert!(status.success());
}
