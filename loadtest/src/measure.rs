//! One measurement run: start the client threads, ramp connections, warm up, measure a window,
//! stop, merge the threads' figures into a [`RunReport`].

use crate::client::{self, ThreadStats};
use crate::model::{ClientSpec, Role, Shared, Targets, Transport};
use crate::model::{Commands, Group, Percentiles};
use crate::report::{ProcessCpu, RunReport};
use crate::scenario::{Laggards, Plan, V2Transport};
use aerobridge_harness::procfs::{CpuWindow, Peaks};
use indicatif::{ProgressBar, ProgressStyle};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Runs `plan` against `targets`; `pid` is the server process whose CPU to sample.
pub fn run(
    name: &str,
    plan: &Plan,
    targets: Targets,
    pid: Option<u32>,
    show_progress: bool,
    healthy_only: bool,
) -> anyhow::Result<RunReport> {
    let mut specs = Vec::new();
    let mut push = |transport, role| {
        let index = specs.len();
        let connect_at = Duration::from_secs_f64(index as f64 / plan.connect_rate.max(1) as f64);
        specs.push(ClientSpec {
            index,
            transport,
            role,
            connect_at,
        });
    };
    // Interleave TCP and WebSocket so both ramp together.
    let (mut t, mut w) = (plan.tcp, plan.ws);
    while t + w > 0 {
        if t > 0 {
            push(Transport::Tcp, Role::Healthy);
            t -= 1;
        }
        if w > 0 {
            push(Transport::Ws, Role::Healthy);
            w -= 1;
        }
    }
    if !healthy_only {
        let laggard = match plan.laggards {
            Laggards::Tcp => Transport::Tcp,
            Laggards::Ws => Transport::Ws,
            Laggards::Auto if plan.ws > 0 => Transport::Ws,
            Laggards::Auto => Transport::Tcp,
        };
        for _ in 0..plan.slow {
            push(laggard, Role::Slow);
        }
        for _ in 0..plan.stalled {
            push(laggard, Role::Stalled);
        }
    }
    let total = specs.len() + plan.v2;
    let shared = Arc::new(Shared {
        t0: Instant::now(),
        tls: targets.tls.clone(),
        targets,
        measuring: AtomicBool::new(false),
        done: AtomicBool::new(false),
        connected: AtomicUsize::new(0),
        attempted: AtomicUsize::new(0),
        validate_every: if plan.validate_rate <= 0.0 {
            0
        } else {
            (1.0 / plan.validate_rate.min(1.0)).round() as u64
        },
        slow_rate: plan.slow_rate,
        laggard_rcvbuf: plan.laggard_rcvbuf,
        deflate: plan.deflate,
        inflate_errors: AtomicU64::new(0),
        command_rate: plan.command_rate,
        churn_rate: plan.churn,
        bytes: AtomicU64::new(0),
    });
    let threads = plan.threads.max(1);
    let mut per_thread: Vec<Vec<ClientSpec>> = vec![Vec::new(); threads];
    for s in specs {
        per_thread[s.index % threads].push(s);
    }
    // v2 clients: (connect_at, transport, profile), spread over the threads after the others.
    let first_v2 = per_thread.iter().map(Vec::len).sum::<usize>();
    let mut v2_per_thread: Vec<Vec<(Duration, Transport, crate::model::Profile)>> =
        vec![Vec::new(); threads];
    for i in 0..plan.v2 {
        let transport = match plan.v2_transport {
            V2Transport::Ws => Transport::Ws,
            V2Transport::Tcp => Transport::Tcp,
            V2Transport::Mix if i % 2 == 0 => Transport::Ws,
            V2Transport::Mix => Transport::Tcp,
        };
        let at = Duration::from_secs_f64((first_v2 + i) as f64 / plan.connect_rate.max(1) as f64);
        v2_per_thread[i % threads].push((at, transport, plan.v2_profile(i)));
    }
    let mut v2_per_thread = v2_per_thread.into_iter();
    let mut handles = Vec::new();
    for (i, specs) in per_thread.into_iter().enumerate() {
        let shared = Arc::clone(&shared);
        let v2_clients = v2_per_thread.next().unwrap_or_default();
        let commands = i == 0 && plan.command_rate > 0.0 && shared.targets.command.is_some();
        handles.push(
            std::thread::Builder::new()
                .name(format!("loadtest-{i}"))
                .spawn(move || -> anyhow::Result<ThreadStats> {
                    let rt = compio::runtime::Runtime::new()?;
                    Ok(rt.block_on(async move {
                        let stats = Rc::new(std::cell::RefCell::new(ThreadStats::new()));
                        let v2 = Rc::new(std::cell::RefCell::new(crate::model::V2Stats::default()));
                        let latency = Rc::new(std::cell::RefCell::new(client::histogram()));
                        for spec in specs {
                            compio::runtime::spawn(client::run_client(
                                spec,
                                Arc::clone(&shared),
                                Rc::clone(&stats),
                            ))
                            .detach();
                        }
                        if !v2_clients.is_empty() {
                            let reference =
                                Rc::new(std::cell::RefCell::new(crate::v2::Reference::default()));
                            compio::runtime::spawn(crate::v2::run_reference(
                                Arc::clone(&shared),
                                Rc::clone(&reference),
                            ))
                            .detach();

                            for (at, transport, profile) in v2_clients {
                                let (shared, reference, v2, latency) = (
                                    Arc::clone(&shared),
                                    Rc::clone(&reference),
                                    Rc::clone(&v2),
                                    Rc::clone(&latency),
                                );
                                compio::runtime::spawn(async move {
                                    let start = shared.t0 + at;
                                    compio::time::sleep(
                                        start.saturating_duration_since(Instant::now()),
                                    )
                                    .await;
                                    crate::v2::run_client(
                                        transport, profile, shared, v2, latency, reference,
                                    )
                                    .await
                                })
                                .detach();
                            }
                        }
                        if shared.churn_rate > 0.0 {
                            // Every thread opens its share.
                            compio::runtime::spawn(client::run_churn(
                                Arc::clone(&shared),
                                Rc::clone(&stats),
                                threads,
                            ))
                            .detach();
                        }
                        if commands {
                            compio::runtime::spawn(client::run_commands(
                                Arc::clone(&shared),
                                Rc::clone(&stats),
                            ))
                            .detach();
                        }
                        while !shared.done.load(Ordering::Relaxed) {
                            compio::time::sleep(Duration::from_millis(20)).await;
                        }
                        // Stalled clients drain for up to 1.5 s to learn how they were treated.
                        compio::time::sleep(Duration::from_millis(1700)).await;
                        let mut out = stats.borrow().clone();
                        out.v2 = v2.borrow().clone();
                        out.latency_v2 = latency.borrow().clone();
                        out
                    }))
                })?,
        );
    }

    // Ramp.
    let bar = |len: u64, msg: &str| {
        let pb = if show_progress {
            ProgressBar::new(len)
        } else {
            ProgressBar::hidden()
        };
        pb.set_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} {elapsed}")
                .unwrap()
                .progress_chars("=> "),
        );
        pb.set_message(msg.to_string());
        pb
    };
    let pb = bar(total as u64, &format!("{name}: connect"));
    // Peaks (threads, memory) count from the first connection: a flood does its damage early.
    let mut ramp = pid.and_then(|p| CpuWindow::start(Some(p)));
    let ramp_deadline = Instant::now()
        + Duration::from_secs_f64(total as f64 / plan.connect_rate.max(1) as f64)
        + Duration::from_secs(15);
    while shared.attempted.load(Ordering::Relaxed) < total
        || (shared.connected.load(Ordering::Relaxed) < total
            && Instant::now() < ramp_deadline
            && !handles.iter().any(|h| h.is_finished()))
    {
        pb.set_position(shared.connected.load(Ordering::Relaxed) as u64);
        if let Some(r) = ramp.as_mut() {
            r.sample();
        }
        if Instant::now() > ramp_deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    pb.set_position(shared.connected.load(Ordering::Relaxed) as u64);
    pb.finish();
    std::thread::sleep(plan.warmup);

    // Measure.
    let mut own = CpuWindow::start(None);
    let mut server = pid.and_then(|p| CpuWindow::start(Some(p)));
    if let (Some(s), Some(r)) = (server.as_mut(), ramp.as_mut()) {
        r.sample();
        s.peaks = r.peaks;
    }
    let builds_before = (!healthy_only)
        .then(|| tick_build_buckets(&shared.targets))
        .flatten();
    let flood = (plan.flood > 0).then(|| {
        let (shared, plan) = (Arc::clone(&shared), plan.clone());
        std::thread::Builder::new()
            .name("loadtest-flood".into())
            .spawn(move || run_flood(&shared, &plan))
            .expect("a thread for the flood")
    });
    let window_start = Instant::now();
    shared.measuring.store(true, Ordering::Release);
    let pb = bar(
        plan.duration.as_millis() as u64,
        &format!("{name}: measure"),
    );
    while window_start.elapsed() < plan.duration {
        std::thread::sleep(
            Duration::from_millis(100).min(plan.duration.saturating_sub(window_start.elapsed())),
        );
        pb.set_position(window_start.elapsed().as_millis() as u64);
        if let Some(s) = server.as_mut() {
            s.sample();
        }
    }
    shared.measuring.store(false, Ordering::Release);
    let window = window_start.elapsed().as_secs_f64();
    pb.finish();
    let own_cpu = own.as_mut().map(|w| w.finish()).unwrap_or((0.0, window));
    let server_cpu = server.as_mut().map(|w| (w.finish(), w.peaks));
    let tick_build = builds_before
        .zip(tick_build_buckets(&shared.targets))
        .and_then(|(before, after)| tick_build_over(&before, &after));
    shared.done.store(true, Ordering::Release);

    let mut parts = Vec::new();
    for h in handles {
        parts.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("client thread panicked"))??,
        );
    }
    let flood = flood.and_then(|h| h.join().ok()).map(|mut f| {
        let mut at: Vec<u64> = parts
            .iter()
            .flat_map(|p| p.healthy_gaps_at.iter().copied())
            .collect();
        at.sort_unstable();
        f.healthy_gaps_at_s = at
            .iter()
            .take(client::GAP_TIMES)
            .map(|&ns| (ns as f64 - f.started_ns as f64) / 1e9)
            .collect();
        f
    });
    Ok(merge(
        name,
        parts,
        window,
        shared.bytes.load(Ordering::Relaxed),
        own_cpu,
        server_cpu,
        pid,
        plan.command_rate > 0.0,
    )
    .with_v2(plan.v2_profiles())
    .with_tick_build(tick_build)
    .with_inflate_errors(shared.inflate_errors.load(Ordering::Relaxed))
    .with_flood(flood))
}

/// `--flood`: once the window opens, connects `plan.flood` sockets to the data port at
/// `plan.flood_rate` (4 KiB receive buffers; they never read), holds them until the run is
/// done, and asks the server (its /metrics) when it counted them all as clients.
fn run_flood(shared: &Shared, plan: &Plan) -> crate::model::Flood {
    use socket2::{Domain, Socket, Type};
    while !shared.measuring.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(1));
    }
    let target = shared.targets.tcp;
    // One scrape for both: the clients already there and the counters to difference.
    let before = scrape_metrics(&shared.targets);
    let clients_before = before
        .as_deref()
        .and_then(|m| crate::model::metric(m, TCP_CLIENTS))
        .unwrap_or(0.0);
    let counters_before = before.as_deref().map(crate::model::FloodServer::parse);
    let started_ns = shared.t0.elapsed().as_nanos() as u64;
    let start = Instant::now();
    let mut held = Vec::with_capacity(plan.flood);
    let mut failed = 0u64;
    for i in 0..plan.flood {
        if shared.done.load(Ordering::Relaxed) {
            break;
        }
        let socket = Socket::new(Domain::for_address(target), Type::STREAM, None).and_then(|s| {
            s.set_recv_buffer_size(4096)?;
            s.connect_timeout(&target.into(), Duration::from_secs(5))?;
            Ok(s)
        });
        match socket {
            Ok(s) => held.push(s),
            Err(_) => failed += 1,
        }
        if i % 50 == 49 {
            // The flood's pace: the load under test.
            let due = start + Duration::from_secs_f64((i + 1) as f64 / plan.flood_rate.max(1.0));
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
        }
    }
    let connect_s = start.elapsed().as_secs_f64();
    let opened = held.len() as u64;
    let mut admitted_s = None;
    while start.elapsed() < Duration::from_secs_f64(connect_s + 10.0)
        && !shared.done.load(Ordering::Relaxed)
    {
        match tcp_clients(&shared.targets) {
            Some(n) if n >= clients_before + opened as f64 => {
                admitted_s = Some(start.elapsed().as_secs_f64());
                break;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
            None => break,
        }
    }
    while shared.measuring.load(Ordering::Acquire) {
        std::thread::sleep(Duration::from_millis(20));
    }
    // The window has closed: what the server counted during it, with the flood still held.
    let server = counters_before
        .zip(scrape_metrics(&shared.targets))
        .map(|(before, after)| crate::model::FloodServer::parse(&after).since(&before));
    while !shared.done.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(held);
    crate::model::Flood {
        planned: plan.flood as u64,
        opened,
        failed,
        connect_s,
        connect_rate: opened as f64 / connect_s.max(1e-9),
        admitted_s,
        admitted_rate: admitted_s.map(|s| opened as f64 / s.max(1e-9)),
        healthy_gaps_at_s: Vec::new(),
        server,
        started_ns,
    }
}

/// The server's count of telemetry clients over TCP.
const TCP_CLIENTS: &str = "aerobridge_clients{transport=\"tcp\"}";

/// The server's `aerobridge_clients{transport="tcp"}`, or `None` (no /metrics: the floor,
/// another server).
fn tcp_clients(targets: &Targets) -> Option<f64> {
    crate::model::metric(&scrape_metrics(targets)?, TCP_CLIENTS)
}

/// The server's /metrics text (on its WebSocket port, over TLS with --tls); `None` when it has
/// none or cannot be reached.
fn scrape_metrics(targets: &Targets) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&targets.ws, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    let mut text = String::new();
    match &targets.tls {
        None => {
            s.write_all(request).ok()?;
            s.read_to_string(&mut text).ok()?;
        }
        Some(config) => {
            let name = rustls::pki_types::ServerName::try_from("localhost").ok()?;
            let conn = rustls::ClientConnection::new(std::sync::Arc::clone(config), name).ok()?;
            let mut tls = rustls::StreamOwned::new(conn, s);
            tls.write_all(request).ok()?;
            let mut bytes = Vec::new();
            let _ = tls.read_to_end(&mut bytes);
            text = String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    Some(text)
}

/// `aerobridge_tick_build_seconds` buckets (upper bound, cumulative count) from the server's
/// /metrics on the WebSocket port; `None` when the server has none (the floor, upstream).
fn tick_build_buckets(targets: &Targets) -> Option<Vec<(f64, u64)>> {
    let text = scrape_metrics(targets)?;
    let prefix = "aerobridge_tick_build_seconds_bucket{le=\"";
    let buckets: Vec<(f64, u64)> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .filter_map(|rest| {
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect();
    (!buckets.is_empty()).then_some(buckets)
}

/// The window's builds, from two scrapes.
fn tick_build_over(
    before: &[(f64, u64)],
    after: &[(f64, u64)],
) -> Option<crate::report::TickBuild> {
    let diff: Vec<(f64, u64)> = after
        .iter()
        .zip(before)
        .map(|(&(le, a), &(_, b))| (le, a.saturating_sub(b)))
        .collect();
    let builds = diff.last()?.1;
    if builds == 0 {
        return None;
    }
    let p99 = diff
        .iter()
        .find(|(_, c)| *c as f64 >= builds as f64 * 0.99)
        .map_or(f64::INFINITY, |(le, _)| *le);
    let within_1ms = diff
        .iter()
        .find(|(le, _)| (*le - 0.001).abs() < 1e-12)
        .map_or(0, |(_, c)| *c);
    Some(crate::report::TickBuild {
        builds,
        p99_le_s: p99,
        share_le_1ms: within_1ms as f64 / builds as f64,
    })
}

#[allow(clippy::too_many_arguments)]
fn merge(
    name: &str,
    parts: Vec<ThreadStats>,
    window: f64,
    bytes: u64,
    own_cpu: (f64, f64),
    server_cpu: Option<((f64, f64), Peaks)>,
    pid: Option<u32>,
    commands: bool,
) -> RunReport {
    let mut tcp = client::histogram();
    let mut ws = client::histogram();
    let mut reply = client::histogram();
    let mut visible = client::histogram();
    let (mut healthy, mut slow, mut stalled) =
        (Group::default(), Group::default(), Group::default());
    let mut cmds = Commands::default();
    let mut churn = crate::model::Churn::default();
    let mut churn_hist = client::histogram();
    let mut earliest: HashMap<u64, u64> = HashMap::new();
    let mut v2 = crate::model::V2Stats::default();
    let mut v2_latency = client::histogram();
    for p in &parts {
        v2.add(&p.v2);
        v2_latency.add(&p.latency_v2).unwrap();
        tcp.add(&p.latency_tcp).unwrap();
        ws.add(&p.latency_ws).unwrap();
        reply.add(&p.reply_hist).unwrap();
        visible.add(&p.visible_hist).unwrap();
        for (g, from) in [
            (&mut healthy, &p.healthy),
            (&mut slow, &p.slow),
            (&mut stalled, &p.stalled),
        ] {
            add_group(g, from);
        }
        churn.attempted += p.churn.attempted;
        churn.ok += p.churn.ok;
        churn.failed += p.churn.failed;
        churn_hist.add(&p.churn_hist).unwrap();
        cmds.sent += p.commands.sent;
        cmds.replies += p.commands.replies;
        cmds.errors += p.commands.errors;
        if cmds.first_error.is_none() {
            cmds.first_error = p.commands.first_error.clone();
        }
        for &(counter, at) in &p.samples {
            let e = earliest.entry(counter).or_insert(at);
            *e = (*e).min(at);
        }
    }
    let mut spread = client::histogram();
    for p in &parts {
        for &(counter, at) in &p.samples {
            let _ = spread.record(((at - earliest[&counter]) / 1000).clamp(1, 60_000_000));
        }
    }
    let mut all = tcp.clone();
    all.add(&ws).unwrap();
    let mut latency = std::collections::BTreeMap::new();
    latency.insert("all".to_string(), Percentiles::of(&all, false));
    if !tcp.is_empty() {
        latency.insert("tcp".to_string(), Percentiles::of(&tcp, true));
    }
    if !ws.is_empty() {
        latency.insert("ws".to_string(), Percentiles::of(&ws, true));
    }
    let frames = healthy.frames + slow.frames + v2.messages;
    let v1_clients = healthy.clients + slow.clients;
    let v2_report = (v2.clients > 0).then(|| crate::report::V2Report {
        bytes_per_client_s: v2.bytes as f64 / v2.clients as f64 / window,
        v1_bytes_per_client_s: if v1_clients > 0 {
            bytes as f64 / v1_clients as f64 / window
        } else {
            0.0
        },
        latency_us: Percentiles::of(&v2_latency, false),
        profiles_asked: 0,
        stats: v2.clone(),
    });
    let server = server_cpu
        .zip(pid)
        .map(|(((cpu, wall), peaks), pid)| ProcessCpu {
            pid,
            cpu_pct: 100.0 * cpu / wall.max(1e-9),
            cpu_per_frame_us: if frames > 0 {
                cpu * 1e6 / frames as f64
            } else {
                0.0
            },
            rss_max_mb: peaks.rss as f64 / 1e6,
            threads_max: peaks.threads,
            tcp_mem_max_mb: peaks.tcp_mem as f64 / 1e6,
        });
    let all_cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1) as f64;
    if commands {
        cmds.reply_us = Percentiles::of(&reply, false);
        cmds.visible_us = Percentiles::of(&visible, false);
    }
    RunReport {
        target: name.to_string(),
        latency_us: latency,
        spread_us: Percentiles::of(&spread, false),
        window_s: window,
        frames,
        frames_per_s: frames as f64 / window,
        mb_per_s: bytes as f64 / window / 1e6,
        healthy,
        slow,
        stalled,
        commands: commands.then_some(cmds),
        server,
        loadtest_cpu_pct: 100.0 * own_cpu.0 / own_cpu.1.max(1e-9) / all_cores,
        server_ok: true,
        bytes_per_client_s: if v1_clients > 0 {
            bytes as f64 / v1_clients as f64 / window
        } else {
            0.0
        },
        inflate_errors: 0,
        v2: v2_report,
        tick_build: None,
        flood: None,
        churn: (churn.attempted > 0).then(|| crate::model::Churn {
            connect_us: Percentiles::of(&churn_hist, false),
            ..churn
        }),
    }
}

fn add_group(g: &mut Group, from: &Group) {
    g.clients += from.clients;
    g.connected += from.connected;
    g.frames += from.frames;
    g.gaps += from.gaps;
    g.missing_frames += from.missing_frames;
    g.duplicates += from.duplicates;
    g.torn += from.torn;
    g.still_connected += from.still_connected;
    for (k, v) in &from.disconnects {
        *g.disconnects.entry(k.clone()).or_default() += v;
    }
}
