//! loadtest: measures how fast frames reach hundreds or thousands of clients of a server that
//! speaks the Aerofly bridge protocol (aerobridge, or upstream's DLL across a LAN).
//!
//! Layout: `client` (compio client tasks, per-thread figures), `measure` (one run: ramp, warm-up,
//! window, merge), `report` (JSON, table, baseline), `plot` (SVG), `spawn` (child processes),
//! `floor` (the minimal reference broadcaster), `scenario` (presets), `model` (what they share);
//! `/proc` figures come from `aerobridge_harness::procfs`, which the tests use too.

mod capacity;
mod client;
mod conn;
mod floor;
mod measure;
mod model;
mod plot;
mod report;
mod scenario;
mod spawn;
mod tls;
mod v2;

use clap::{Parser, Subcommand};
use model::Targets;
use report::Report;
use scenario::{Plan, Scenario};
use std::io::IsTerminal;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Fan-out latency load generator for Aerofly-bridge-protocol servers.
/// Exit code of a gate run on a busy host: neither pass nor fail.
const INCONCLUSIVE: u8 = 3;

const EXAMPLES: &str = "Examples:
  loadtest --spawn-server --scenario smoke --strict
  loadtest --spawn-server --scenario ci --json report.json --baseline loadtest/baseline/ci.json
  loadtest --spawn-server --scenario flood
  loadtest capacity --target aerobridge --deflate
  loadtest --host 192.168.1.20 --tcp 200 --ws 200 --duration 30s

Exit codes: 0 passed, 1 failed (a regression, --strict), 2 bad usage or nothing to measure,
3 inconclusive (--baseline on a busy host: other processes' CPU or steal during the run).

To run it by name, as these do: cargo install --path loadtest (or ./target/release/loadtest
after cargo build --release --workspace; --spawn-server needs aerobridge beside it).";

#[derive(Parser, Debug)]
#[command(
    name = "loadtest",
    version,
    about,
    long_about,
    max_term_width = 100,
    after_help = EXAMPLES,
    after_long_help = EXAMPLES
)]
struct Args {
    #[command(subcommand)]
    command: Option<Sub>,

    /// A preset (every one is listed below with what it runs). Explicit flags override its values.
    #[arg(long, value_enum)]
    scenario: Option<Scenario>,

    /// Server host (ignored with --spawn-server).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Telemetry TCP port.
    #[arg(long, default_value_t = 12345)]
    tcp_port: u16,
    /// WebSocket port.
    #[arg(long, default_value_t = 8765)]
    ws_port: u16,
    /// Command port (for --command-rate).
    #[arg(long, default_value_t = 12346)]
    command_port: u16,

    /// Healthy TCP clients.
    #[arg(long)]
    tcp: Option<usize>,
    /// Healthy WebSocket clients.
    #[arg(long)]
    ws: Option<usize>,
    /// Clients that read at --slow-rate bytes/s (WebSocket if any WS clients, else TCP).
    #[arg(long)]
    slow: Option<usize>,
    /// Clients that connect and never read.
    #[arg(long)]
    stalled: Option<usize>,
    /// Transport of slow and stalled clients (auto: WebSocket if any healthy WS clients).
    #[arg(long, value_enum)]
    laggards: Option<scenario::Laggards>,
    /// Receive buffer (SO_RCVBUF) of slow and stalled clients, bytes.
    #[arg(long)]
    laggard_rcvbuf: Option<usize>,
    /// Read rate of slow clients, bytes/s.
    #[arg(long)]
    slow_rate: Option<u64>,
    /// New connections per second.
    #[arg(long)]
    connect_rate: Option<u64>,
    /// Measurement window (e.g. 10s).
    #[arg(long, value_parser = aerobridge::config::parse_duration)]
    duration: Option<Duration>,
    /// Time between the last connection and the window.
    #[arg(long, value_parser = aerobridge::config::parse_duration)]
    warmup: Option<Duration>,
    /// Fraction of frames fully validated as JSON with simd-json (default 1 = every frame).
    #[arg(long)]
    validate_rate: Option<f64>,
    /// Commands per second, timed until the reply and until telemetry shows the value.
    #[arg(long)]
    command_rate: Option<f64>,
    /// Client threads (default: available cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Broadcast period for --spawn-server and the floor.
    #[arg(long)]
    broadcast_ms: Option<u64>,

    /// Session protocol v2 clients. Each rebuilds the state from keyframes and deltas and checks
    /// it against the v1 frame of the same update_counter (a v1 reference client per thread).
    #[arg(long)]
    v2: Option<usize>,
    /// v2 variable sets, separated by ';' (names or Prefix.* separated by ','; `all`: every
    /// variable; `-Name` leaves one out). Example: "all;Aircraft.*;Controls.Throttle1,Aircraft.Altitude".
    #[arg(long)]
    v2_vars: Option<String>,
    /// v2 rates in Hz, separated by ',' (default: the broadcast rate). Example: 10,25.
    #[arg(long)]
    v2_hz: Option<String>,
    /// v2 modes, separated by ',': full, delta (default delta).
    #[arg(long)]
    v2_mode: Option<String>,
    /// Transport of v2 clients.
    #[arg(long, value_enum)]
    v2_transport: Option<scenario::V2Transport>,

    /// WebSocket clients offer permessage-deflate (as Chromium does), fail if it is declined,
    /// inflate every message with their own context-takeover window and check it as usual.
    /// Bytes figures are then wire bytes.
    #[arg(long)]
    deflate: bool,

    /// New WebSocket connections per second during the window, each closed once upgraded: the
    /// cost of accepting clients (with --tls, their handshakes) while the others stream.
    #[arg(long)]
    churn: Option<f64>,
    /// Connections to the data port opened during the window (4 KiB receive buffers, never
    /// read) and held to its end: what a connection flood costs the streaming clients.
    #[arg(long)]
    flood: Option<usize>,
    /// Pace of --flood, connections per second.
    #[arg(long)]
    flood_rate: Option<f64>,
    /// The target's name in the report, plot and page (default: "aerobridge" when spawned,
    /// else HOST:PORT of the WebSocket or TCP port measured).
    #[arg(long)]
    label: Option<String>,
    /// Every client speaks TLS: wss:// and TLS on the data and command ports. With
    /// --spawn-server the server gets a fresh certificate; against another server, trust it
    /// with --tls-ca or skip verification with --insecure.
    #[arg(long)]
    tls: bool,
    /// PEM CA certificate(s) that signed the server's certificate (--tls).
    #[arg(long, requires = "tls")]
    tls_ca: Option<PathBuf>,
    /// Accept any server certificate (--tls against a server whose CA you do not have).
    #[arg(long, requires = "tls")]
    insecure: bool,
    /// What --calibrate compares with: the plaintext floor or a TLS floor (a rustls stream per
    /// client). Default: the TLS floor when --tls.
    #[arg(long, value_enum)]
    floor: Option<FloorKind>,

    /// Start a release aerobridge on free ports, run, stop it (fails if it does not exit 0).
    #[arg(long)]
    spawn_server: bool,
    /// The aerobridge binary for --spawn-server (default: beside this executable).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Extra arguments for the spawned server (repeat for each).
    #[arg(long, allow_hyphen_values = true)]
    server_arg: Vec<String>,
    /// Sample this server process's CPU and RSS (Linux /proc). Implied by --spawn-server.
    #[arg(long)]
    server_pid: Option<u32>,
    /// First run the same healthy clients against the built-in floor broadcaster and report
    /// every figure also as a ratio to it.
    #[arg(long)]
    calibrate: bool,

    /// Write the JSON report here; an SVG latency plot goes beside it (same stem).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Compare with this report and fail when a figure regressed by more than --max-regression.
    #[arg(long)]
    baseline: Option<PathBuf>,
    /// Allowed regression against --baseline, percent. A figure fails only when it is worse by
    /// more than this *and* by more than twice the noise the runs measured.
    #[arg(long, default_value_t = 25.0)]
    max_regression: f64,
    /// Measure this many aerobridge/floor pairs, interleaved, and report each figure's median
    /// and spread (default: 5 for --scenario ci, else 1).
    #[arg(long)]
    runs: Option<usize>,
    /// Fail on any gap, duplicate, torn frame or disconnect among healthy clients, or a server
    /// that did not exit cleanly.
    #[arg(long)]
    strict: bool,
    /// No progress bars (also off when stdout is not a terminal).
    #[arg(long)]
    quiet: bool,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// The largest number of clients a server holds at its rate with 0 gaps and p99 within a
    /// budget: a bounded search, one short run per step (against aerobridge, the floor, or any
    /// server at --host).
    Capacity(capacity::CapacityArgs),
    /// The floor broadcaster used by --calibrate (blocking writes from one thread).
    #[command(hide = true)]
    Floor {
        #[arg(long, default_value_t = 20)]
        broadcast_ms: u64,
        /// Serve TLS with this certificate and key (PEM).
        #[arg(long, num_args = 2, value_names = ["CERT", "KEY"])]
        tls: Option<Vec<PathBuf>>,
    },
}

/// The floor --calibrate measures against.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum FloorKind {
    Plain,
    Tls,
}

fn plan_of(a: &Args) -> Plan {
    let mut p = a.scenario.map(Scenario::plan).unwrap_or_else(|| Plan {
        tcp: 100,
        ws: 100,
        ..Scenario::Smoke.plan()
    });
    if a.scenario.is_none() {
        p.command_rate = 0.0;
    }
    macro_rules! take {
        ($($f:ident),*) => { $( if let Some(v) = a.$f { p.$f = v; } )* };
    }
    take!(
        tcp,
        ws,
        slow,
        stalled,
        slow_rate,
        connect_rate,
        duration,
        warmup,
        validate_rate,
        command_rate,
        threads,
        broadcast_ms,
        laggards,
        laggard_rcvbuf
    );
    p.server_args.extend(a.server_arg.iter().cloned());
    if let Some(n) = a.v2 {
        p.v2 = n;
    }
    if let Some(sets) = &a.v2_vars {
        p.v2_vars = sets
            .split(';')
            .map(|set| {
                set.split(',')
                    .map(str::trim)
                    .filter(|n| !n.is_empty() && *n != "all")
                    .map(String::from)
                    .collect()
            })
            .collect();
    }
    if let Some(hz) = &a.v2_hz {
        p.v2_hz = hz
            .split(',')
            .filter_map(|h| h.trim().parse().ok())
            .collect();
    }
    if let Some(modes) = &a.v2_mode {
        p.v2_mode = modes.split(',').map(|m| m.trim().to_string()).collect();
    }
    if let Some(t) = a.v2_transport {
        p.v2_transport = t;
    }
    if a.deflate {
        p.deflate = true;
    }
    p.tls = a.tls;
    if let Some(rate) = a.churn {
        p.churn = rate;
    }
    if let Some(n) = a.flood {
        p.flood = n;
    }
    if let Some(rate) = a.flood_rate {
        p.flood_rate = rate;
    }
    p.floor_tls = a.floor.map_or(a.tls, |f| f == FloorKind::Tls);
    p
}

/// Now as `YYYY-MM-DD HH:MM` (UTC), for the plot.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Howard Hinnant's days-to-civil.
    let z = (secs / 86_400) as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let tod = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}",
        tod / 3600,
        tod / 60 % 60
    )
}

/// `connection refused`, not `Connection refused (os error 111)`.
fn plain_io_error(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = text.split(" (os error").next().unwrap_or(&text);
    text.to_lowercase()
}

fn resolve(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {host}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    if let Some(Sub::Floor { broadcast_ms, tls }) = &args.command {
        return match floor::run(*broadcast_ms, tls.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("floor: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(Sub::Capacity(c)) = &args.command {
        return match capacity::run(c) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("loadtest capacity: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let plan = plan_of(args);
    let calibrate = args.calibrate || args.scenario == Some(Scenario::Ci);
    let progress = !args.quiet && std::io::stdout().is_terminal();
    let total = plan.tcp + plan.ws + plan.slow + plan.stalled + plan.v2;
    println!(
        "loadtest: {} TCP + {} WS healthy, {} slow, {} stalled, {} v2 ({} profiles); {} s window; {} threads{}",
        plan.tcp,
        plan.ws,
        plan.slow,
        plan.stalled,
        plan.v2,
        plan.v2_profiles(),
        plan.duration.as_secs_f64(),
        plan.threads,
        args.scenario
            .map(|s| format!("; scenario {s:?}").to_lowercase())
            .unwrap_or_default()
    );

    // --tls: one certificate for whatever is spawned here (server and floor), trusted by the
    // clients; or the CA the user gave; or none (--insecure).
    let pki = (plan.tls || plan.floor_tls)
        .then(tls::TestPki::new)
        .transpose()?;
    let client_tls = if !plan.tls {
        None
    } else if let Some(ca) = &args.tls_ca {
        Some(tls::client_config_from_ca(ca)?)
    } else if args.insecure {
        Some(tls::insecure_client_config())
    } else if args.spawn_server {
        Some(pki.as_ref().expect("made above").client_config())
    } else {
        anyhow::bail!("--tls against a running server needs --tls-ca PEM (or --insecure)");
    };
    // --runs: aerobridge/floor pairs, interleaved so that a drift of the host hits both.
    let runs = args
        .runs
        .unwrap_or(if args.scenario == Some(Scenario::Ci) {
            5
        } else {
            1
        })
        .max(1);
    let host_before = report::HostSample::now();
    let mut pairs: Vec<Report> = Vec::new();
    for i in 0..runs {
        if runs > 1 {
            println!("\nrun {} of {runs}", i + 1);
        }
        let floor = if calibrate {
            let f = spawn::spawn_floor(plan.broadcast_ms, pki.as_ref().filter(|_| plan.floor_tls))?;
            let targets = Targets {
                tcp: f.tcp,
                ws: f.ws,
                command: None,
                tls: plan
                    .floor_tls
                    .then(|| pki.as_ref().expect("made above").client_config()),
            };
            let floor_plan = Plan {
                command_rate: 0.0,
                // The floor is the uncompressed reference.
                deflate: false,
                ..plan.clone()
            };
            let r = measure::run("floor", &floor_plan, targets, Some(f.pid()), progress, true)?;
            let _ = f.stop();
            Some(r)
        } else {
            None
        };

        let (mut run, server_status) = if args.spawn_server {
            let bin = spawn::server_binary(args.server_bin.as_deref())?;
            let mut server_args = plan.server_args.clone();
            if let Some(pki) = pki.as_ref().filter(|_| plan.tls) {
                server_args.extend(pki.server_args());
            }
            // Churned connections count too while they are open (a few seconds of them at most).
            let max_clients = total + 100 + (plan.churn * 5.0) as usize + plan.flood;
            let s = spawn::spawn_server(&bin, plan.broadcast_ms, max_clients, &server_args)?;
            let targets = Targets {
                tcp: s.tcp,
                ws: s.ws,
                command: s.command,
                tls: client_tls.clone(),
            };
            let label = args.label.as_deref().unwrap_or("aerobridge");
            let r = measure::run(label, &plan, targets, Some(s.pid()), progress, false)?;
            (r, s.stop())
        } else {
            let targets = Targets {
                tcp: resolve(&args.host, args.tcp_port)?,
                ws: resolve(&args.host, args.ws_port)?,
                command: Some(resolve(&args.host, args.command_port)?),
                tls: client_tls.clone(),
            };
            // Say at once when there is nothing to measure, rather than reporting a run of zeros.
            let used = [
                (plan.tcp > 0 || plan.v2 > 0, targets.tcp),
                (
                    plan.ws > 0 || plan.slow + plan.stalled + plan.v2 > 0,
                    targets.ws,
                ),
            ];
            for (needed, addr) in used {
                if needed {
                    if let Err(e) =
                        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    {
                        anyhow::bail!("cannot connect to {addr}: {}", plain_io_error(&e));
                    }
                }
            }
            let label = args.label.clone().unwrap_or_else(|| {
                if plan.ws > 0 || plan.tcp == 0 {
                    format!("{}:{}", args.host, args.ws_port)
                } else {
                    format!("{}:{}", args.host, args.tcp_port)
                }
            });
            (
                measure::run(&label, &plan, targets, args.server_pid, progress, false)?,
                Ok(()),
            )
        };
        if let Err(e) = &server_status {
            eprintln!("loadtest: the server {e}");
            run.server_ok = false;
        }

        let mut pair = Report {
            tool: format!("aerobridge loadtest {}", env!("CARGO_PKG_VERSION")),
            scenario: args.scenario.map(|s| format!("{s:?}").to_lowercase()),
            plan: plan.clone(),
            run,
            floor,
            ratios: None,
            runs: Vec::new(),
            spread: None,
            host: None,
        };
        pair.compute_ratios();
        pairs.push(pair);
    }
    let mut report = report::aggregate(pairs);
    report.host = host_before.map(|h| h.load_since());
    report::print_summary(&report);
    for r in std::iter::once(&report.run).chain(report.floor.iter()) {
        if r.loadtest_cpu_pct > 80.0 {
            eprintln!(
                "\nWARNING: loadtest itself used {:.0}% of its cores during the {} run: it may be the bottleneck, not the server.",
                r.loadtest_cpu_pct, r.target
            );
        }
    }

    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report)? + "\n")?;
        let svg = path.with_extension("svg");
        let title = format!(
            "{}: {} clients ({} TCP, {} WS) at {} Hz",
            report.run.target,
            report.plan.tcp + report.plan.ws,
            report.plan.tcp,
            report.plan.ws,
            1000 / report.plan.broadcast_ms.max(1)
        );
        let p = &report.plan;
        let subtitle = format!(
            "{}{}{} s window · {} UTC · {} CPUs · {}",
            if p.slow + p.stalled > 0 {
                format!("+ {} slow, {} stalled · ", p.slow, p.stalled)
            } else {
                String::new()
            },
            report
                .scenario
                .as_ref()
                .map(|s| format!("scenario {s} · "))
                .unwrap_or_default(),
            p.duration.as_secs_f64(),
            utc_now(),
            std::thread::available_parallelism().map_or(1, |n| n.get()),
            report.tool,
        );
        let plot = plot::svg(&report, &title, &subtitle);
        std::fs::write(&svg, &plot)?;
        let html = path.with_extension("html");
        std::fs::write(&html, report::html(&report, &title, &subtitle, &plot))?;
        println!(
            "\nreport: {}  plot: {}  page: {}",
            path.display(),
            svg.display(),
            html.display()
        );
    }

    let mut failed = false;
    if let Some(v2) = &report.run.v2 {
        let s = &v2.stats;
        let problems: Vec<String> = [
            (
                s.connected < s.clients,
                format!("{} of {} v2 clients connected", s.connected, s.clients),
            ),
            (s.messages == 0, "no v2 messages received".to_string()),
            (
                s.mismatches > 0,
                format!("{} rebuilt states differ from the v1 frame", s.mismatches),
            ),
            (
                s.broken_chain > 0,
                format!("{} deltas whose base keyframe never came", s.broken_chain),
            ),
            (s.verified == 0, "no v2 state could be verified".to_string()),
            (
                s.gaps > 0,
                format!("{} gaps beyond a subscription's every", s.gaps),
            ),
            (
                s.off_grid > 0,
                format!("{} messages off the every-grid", s.off_grid),
            ),
            (
                !s.disconnects.is_empty(),
                format!("v2 clients disconnected: {:?}", s.disconnects),
            ),
        ]
        .into_iter()
        .filter_map(|(bad, msg)| bad.then_some(msg))
        .collect();
        if !problems.is_empty() {
            eprintln!("\nFAILED (v2 verification): {}", problems.join("; "));
            failed = true;
        }
    }
    // A run where most clients never connected, or nothing was delivered, measured nothing.
    let h = &report.run.healthy;
    if h.clients > 0 && (h.connected * 100 < h.clients * 99 || h.frames == 0) {
        let why: Vec<&str> = h
            .disconnects
            .keys()
            .filter(|k| k.starts_with("connect_failed"))
            .map(String::as_str)
            .collect();
        eprintln!(
            "\nFAILED: {} of {} healthy clients connected and {} frames were delivered{}",
            h.connected,
            h.clients,
            h.frames,
            if why.is_empty() {
                String::new()
            } else {
                format!(" ({})", why.join(", "))
            }
        );
        failed = true;
    }
    if let Some(c) = report
        .run
        .commands
        .as_ref()
        .filter(|c| c.sent == 0 || c.replies == 0)
    {
        // Commands were asked for and none went through: that is a failed run, said in words.
        eprintln!(
            "\nFAILED: --command-rate {} but {} commands sent, {} replies: {}",
            report.plan.command_rate,
            c.sent,
            c.replies,
            c.first_error
                .as_deref()
                .unwrap_or("no command port to send them to (--command-port)")
        );
        failed = true;
    }
    if let Some(path) = &args.baseline {
        let baseline: Report = serde_json::from_str(&std::fs::read_to_string(path)?)?;
        if let Some(why) = report::too_noisy(&baseline) {
            eprintln!(
                "\nthe baseline {} is too noisy to judge against: {why}. Record it again on a quiet host: loadtest --spawn-server --scenario ci --json {}",
                path.display(),
                path.display()
            );
            return Ok(ExitCode::FAILURE);
        }
        if let Some(busy) = report.host.as_ref().and_then(report::HostLoad::busy) {
            eprintln!(
                "\nINCONCLUSIVE: the host was busy during the run ({busy}); not judged against {} (exit code {INCONCLUSIVE})",
                path.display()
            );
            return Ok(ExitCode::from(INCONCLUSIVE));
        }
        let regressed = report::regressions(&report, &baseline, args.max_regression);
        if !regressed.is_empty() {
            eprintln!(
                "\nREGRESSION against {}: {}",
                path.display(),
                regressed.join("; ")
            );
            failed = true;
        }
    } else if let (Some(why), Some(_)) = (report::too_noisy(&report), &args.json) {
        eprintln!("\nnote: this report is too noisy to serve as a baseline ({why})");
    }
    if args.strict {
        let h = &report.run.healthy;
        let problems: Vec<String> = [
            (
                h.connected < h.clients,
                format!("{} of {} healthy clients connected", h.connected, h.clients),
            ),
            (
                h.gaps > 0,
                format!(
                    "{} gaps ({} frames) among healthy clients",
                    h.gaps, h.missing_frames
                ),
            ),
            (
                h.duplicates > 0,
                format!("{} duplicate frames", h.duplicates),
            ),
            (
                h.torn + report.run.slow.torn + report.run.stalled.torn > 0,
                "torn or invalid frames".to_string(),
            ),
            (
                !h.disconnects.is_empty(),
                format!("healthy clients disconnected: {:?}", h.disconnects),
            ),
            (
                !report.run.server_ok,
                "the server did not exit cleanly".to_string(),
            ),
            (h.frames == 0, "no frames received".to_string()),
        ]
        .into_iter()
        .filter_map(|(bad, msg)| bad.then_some(msg))
        .collect();
        if !problems.is_empty() {
            eprintln!("\nFAILED (--strict): {}", problems.join("; "));
            failed = true;
        } else {
            println!("\nstrict checks passed: no gaps, no duplicates, no torn frames, no disconnects, clean server exit");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
