//! `loadtest capacity`: the largest number of clients a server holds at its rate with no gap and
//! p99 latency within a budget, found by a bounded search. It doubles from `--start` until a step
//! fails (or `--max`), then halves the interval between the last pass and the first failure until
//! it is within `--precision`. Each step is a short run of its own; the report lists every step.
//! Works against any server that sends JSON frames with `update_counter` and `timestamp` (TCP
//! lines or WebSocket text): a spawned aerobridge, the floor, or one at `--host`.

use crate::measure;
use crate::model::Targets;
use crate::report::RunReport;
use crate::scenario::{Plan, Scenario};
use crate::spawn;
use serde::Serialize;
use std::path::PathBuf;
use std::time::Duration;

/// What to search.
#[derive(clap::Args, Debug, Clone)]
pub struct CapacityArgs {
    /// What to measure: a spawned aerobridge, the floor (loadtest's own minimal broadcaster),
    /// or a running server at --host.
    #[arg(long, value_enum, default_value_t = Target::Aerobridge)]
    pub target: Target,
    /// Server host (--target external).
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Telemetry TCP port (--target external).
    #[arg(long, default_value_t = 12345)]
    pub tcp_port: u16,
    /// WebSocket port (--target external).
    #[arg(long, default_value_t = 8765)]
    pub ws_port: u16,
    /// Client transport: ws, tcp, or mix (half each).
    #[arg(long, value_enum, default_value_t = Transport::Mix)]
    pub transport: Transport,
    /// WebSocket clients negotiate permessage-deflate (aerobridge's shared compression).
    #[arg(long)]
    pub deflate: bool,
    /// Broadcast period of a spawned server or floor, ms (its rate: 20 = 50 Hz).
    #[arg(long, default_value_t = 20)]
    pub broadcast_ms: u64,
    /// A step passes when its p99 latency is within this many broadcast periods.
    #[arg(long, default_value_t = 2.0)]
    pub budget_periods: f64,
    /// First step, clients.
    #[arg(long, default_value_t = 250)]
    pub start: usize,
    /// Largest step, clients.
    #[arg(long, default_value_t = 16_000)]
    pub max: usize,
    /// Stop when the interval between pass and failure is within this fraction.
    #[arg(long, default_value_t = 0.1)]
    pub precision: f64,
    /// Measurement window of each step.
    #[arg(long, default_value = "5s", value_parser = aerobridge::config::parse_duration)]
    pub step: Duration,
    /// The target's name in the report (default: aerobridge, floor, or HOST:PORT).
    #[arg(long)]
    pub label: Option<String>,
    /// Write the report (every step) as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The aerobridge binary (default: the one beside loadtest).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
}

/// What `capacity` measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Aerobridge,
    Floor,
    External,
}

/// Client transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    Ws,
    Tcp,
    Mix,
}

/// One step of the search.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub clients: usize,
    pub connected: u64,
    pub gaps: u64,
    pub disconnects: u64,
    pub p99_ms: f64,
    pub frames_per_s: f64,
    pub passed: bool,
    /// Why it failed, in words.
    pub why: Vec<String>,
}

/// The search's report.
#[derive(Clone, Debug, Serialize)]
pub struct Capacity {
    pub target: String,
    pub transport: Transport,
    pub deflate: bool,
    pub hz: f64,
    pub budget_ms: f64,
    pub steps: Vec<Step>,
    /// The largest step that passed (0: none).
    pub capacity: usize,
    /// The smallest step that failed, when one did.
    pub first_failure: Option<usize>,
}

fn judge(clients: usize, run: &RunReport, budget_ms: f64) -> Step {
    let h = &run.healthy;
    let p99_ms = run
        .latency_us
        .get("all")
        .map_or(run.spread_us.p99, |p| p.p99)
        / 1000.0;
    let disconnects: u64 = h.disconnects.values().sum();
    let mut why = Vec::new();
    if h.connected < clients as u64 {
        why.push(format!("{} of {clients} connected", h.connected));
    }
    if h.gaps > 0 {
        why.push(format!("{} gaps ({} frames)", h.gaps, h.missing_frames));
    }
    if disconnects > 0 {
        why.push(format!("{disconnects} disconnected"));
    }
    if h.torn > 0 {
        why.push(format!("{} torn frames", h.torn));
    }
    if p99_ms > budget_ms {
        why.push(format!("p99 {p99_ms:.1} ms > {budget_ms:.0} ms"));
    }
    if h.frames == 0 {
        why.push("no frames".into());
    }
    Step {
        clients,
        connected: h.connected,
        gaps: h.gaps,
        disconnects,
        p99_ms,
        frames_per_s: run.frames_per_s,
        passed: why.is_empty(),
        why,
    }
}

/// Runs the search and prints each step; returns the report.
pub fn run(a: &CapacityArgs) -> anyhow::Result<Capacity> {
    let period_ms = a.broadcast_ms.max(1) as f64;
    let budget_ms = a.budget_periods * period_ms;
    // Telemetry only: no commands, no TLS.
    let targets_of = |tcp, ws| Targets {
        tcp,
        ws,
        command: None,
        tls: None,
    };
    let (targets, server, label) = match a.target {
        Target::Aerobridge => {
            let bin = spawn::server_binary(a.server_bin.as_deref())?;
            let s = spawn::spawn_server(&bin, a.broadcast_ms, a.max + 100, &[])?;
            (targets_of(s.tcp, s.ws), Some(s), "aerobridge".to_string())
        }
        Target::Floor => {
            let f = spawn::spawn_floor(a.broadcast_ms, None)?;
            (targets_of(f.tcp, f.ws), Some(f), "floor".to_string())
        }
        Target::External => {
            let resolve = |port: u16| -> anyhow::Result<std::net::SocketAddr> {
                use std::net::ToSocketAddrs;
                (a.host.as_str(), port)
                    .to_socket_addrs()?
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("cannot resolve {}", a.host))
            };
            let t = targets_of(resolve(a.tcp_port)?, resolve(a.ws_port)?);
            let port = if a.transport == Transport::Tcp {
                a.tcp_port
            } else {
                a.ws_port
            };
            (t, None, format!("{}:{port}", a.host))
        }
    };
    let label = a.label.clone().unwrap_or(label);
    let pid = server.as_ref().map(|s| s.pid());
    println!(
        "capacity of {label}: {} clients{}, {:.0} Hz, p99 budget {budget_ms:.0} ms ({} periods), {} s steps",
        match a.transport {
            Transport::Ws => "WebSocket",
            Transport::Tcp => "TCP",
            Transport::Mix => "TCP + WebSocket",
        },
        if a.deflate { " with permessage-deflate" } else { "" },
        1000.0 / period_ms,
        a.budget_periods,
        a.step.as_secs_f64()
    );
    println!(
        "{:>8} {:>10} {:>7} {:>9} {:>12}  verdict",
        "clients", "connected", "gaps", "p99 ms", "frames/s"
    );
    let mut steps: Vec<Step> = Vec::new();
    let mut step = |n: usize| -> anyhow::Result<bool> {
        let (tcp, ws) = match a.transport {
            Transport::Ws => (0, n),
            Transport::Tcp => (n, 0),
            Transport::Mix => (n / 2, n - n / 2),
        };
        let plan = Plan {
            tcp,
            ws,
            duration: a.step,
            warmup: Duration::from_secs(1),
            broadcast_ms: a.broadcast_ms,
            connect_rate: 2_000,
            validate_rate: 0.02,
            deflate: a.deflate,
            command_rate: 0.0,
            ..Scenario::Smoke.plan()
        };
        let run = measure::run(&label, &plan, targets.clone(), pid, false, true)?;
        let s = judge(n, &run, budget_ms);
        println!(
            "{:>8} {:>10} {:>7} {:>9.1} {:>12.0}  {}",
            s.clients,
            s.connected,
            s.gaps,
            s.p99_ms,
            s.frames_per_s,
            if s.passed {
                "pass".to_string()
            } else {
                format!("FAIL: {}", s.why.join(", "))
            }
        );
        let passed = s.passed;
        steps.push(s);
        Ok(passed)
    };
    // Up by doubling, then bisect between the last pass and the first failure.
    let (mut good, mut bad) = (0usize, None::<usize>);
    let mut n = a.start.max(1).min(a.max);
    loop {
        if step(n)? {
            good = n;
            if n >= a.max {
                break;
            }
            n = (n * 2).min(a.max);
        } else {
            bad = Some(n);
            break;
        }
    }
    if let Some(mut high) = bad {
        let mut low = good;
        while low > 0 && (high - low) as f64 > a.precision * low as f64 && high - low > 1 {
            let mid = (low + high) / 2;
            if step(mid)? {
                low = mid;
            } else {
                high = mid;
            }
        }
        good = low;
        bad = Some(high);
    }
    if let Some(s) = server {
        // The floor ends on the signal that stops it; a spawned aerobridge must exit cleanly.
        let stopped = s.stop();
        if a.target == Target::Aerobridge {
            stopped.map_err(|e| anyhow::anyhow!("the server {e}"))?;
        }
    }
    let report = Capacity {
        target: label,
        transport: a.transport,
        deflate: a.deflate,
        hz: 1000.0 / period_ms,
        budget_ms,
        steps,
        capacity: good,
        first_failure: bad,
    };
    println!(
        "\ncapacity of {}: {} clients at {:.0} Hz with 0 gaps and p99 ≤ {:.0} ms{}",
        report.target,
        report.capacity,
        report.hz,
        budget_ms,
        match report.first_failure {
            Some(f) => format!(" ({f} failed)"),
            None => format!(" (the most tried: --max {})", a.max),
        }
    );
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
    }
    Ok(report)
}
