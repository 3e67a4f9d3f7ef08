//! What a run measured, as JSON (`--json`), as a table, and compared with a baseline.

use crate::model::{Commands, Group, Percentiles};
use crate::scenario::Plan;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// CPU and memory of a process over the window.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ProcessCpu {
    pub pid: u32,
    /// Percent of one core.
    pub cpu_pct: f64,
    /// CPU time per frame delivered to any client, µs.
    pub cpu_per_frame_us: f64,
    pub rss_max_mb: f64,
    /// Most threads the process had at once (io_uring's kernel io-wq workers included).
    #[serde(default)]
    pub threads_max: u64,
    /// Most kernel memory held by TCP on the host (`/proc/net/sockstat` `mem`), MB.
    #[serde(default)]
    pub tcp_mem_max_mb: f64,
}

/// One measurement run against one target.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RunReport {
    /// What was measured: `aerobridge` (spawned), `floor`, or `--label` (default HOST:PORT).
    pub target: String,
    /// Receive time − frame `timestamp` (needs a shared clock), by transport and over all.
    pub latency_us: BTreeMap<String, Percentiles>,
    /// Receive time − earliest receive of the same frame by any client (no shared clock needed).
    pub spread_us: Percentiles,
    pub window_s: f64,
    pub frames: u64,
    pub frames_per_s: f64,
    pub mb_per_s: f64,
    pub healthy: Group,
    pub slow: Group,
    pub stalled: Group,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commands: Option<Commands>,
    /// `--churn`: connections opened and closed during the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub churn: Option<crate::model::Churn>,
    /// `--flood`: never-reading connections opened during the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub flood: Option<crate::model::Flood>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ProcessCpu>,
    /// loadtest's own CPU, percent of all its cores.
    pub loadtest_cpu_pct: f64,
    /// False when a spawned server exited badly.
    #[serde(default = "yes")]
    pub server_ok: bool,
    /// Bytes received per healthy or slow client per second (wire bytes: compressed with
    /// --deflate).
    #[serde(default)]
    pub bytes_per_client_s: f64,
    /// Compressed messages that failed to inflate (--deflate).
    #[serde(default)]
    pub inflate_errors: u64,
    /// Session protocol v2 clients, when there were any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub v2: Option<V2Report>,
    /// The server's tick build time over the window (from its /metrics), when scraped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick_build: Option<TickBuild>,
}

impl RunReport {
    /// Attaches the count of messages that failed to inflate.
    pub fn with_inflate_errors(mut self, n: u64) -> Self {
        self.inflate_errors = n;
        self
    }

    /// Attaches what `--flood` did.
    pub fn with_flood(mut self, flood: Option<crate::model::Flood>) -> Self {
        self.flood = flood;
        self
    }

    /// Attaches the server's tick build time over the window.
    pub fn with_tick_build(mut self, t: Option<TickBuild>) -> Self {
        self.tick_build = t;
        self
    }

    /// Notes how many distinct profiles the v2 clients asked for.
    pub fn with_v2(mut self, profiles: usize) -> Self {
        if let Some(v2) = &mut self.v2 {
            v2.profiles_asked = profiles;
        }
        self
    }
}

/// What the v2 clients received and verified.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct V2Report {
    #[serde(flatten)]
    pub stats: crate::model::V2Stats,
    /// Distinct profiles the plan asked for.
    pub profiles_asked: usize,
    /// Bytes each v2 client received per second.
    pub bytes_per_client_s: f64,
    /// Bytes each v1 client (healthy and slow) received per second, for comparison.
    pub v1_bytes_per_client_s: f64,
    /// Receive time − message `t`.
    pub latency_us: Percentiles,
}

/// `aerobridge_tick_build_seconds` over the window: builds, and the bucket holding the 99th
/// percentile (its upper bound).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TickBuild {
    pub builds: u64,
    /// Upper bound of the bucket holding p99, seconds.
    pub p99_le_s: f64,
    /// Share of builds that took at most 1 ms.
    pub share_le_1ms: f64,
}

fn yes() -> bool {
    true
}

/// Server figures as ratios to the floor measured in the same invocation.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Ratios {
    pub p50: f64,
    pub p99: f64,
    pub cpu_per_frame: f64,
    /// Mean frame size of the target and of the floor, bytes on the wire.
    #[serde(default)]
    pub frame_bytes: (f64, f64),
    /// CPU per byte delivered, target / floor: the fair ratio when frame sizes differ.
    #[serde(default)]
    pub cpu_per_byte: f64,
}

impl RunReport {
    /// Mean bytes per delivered frame (on the wire).
    pub fn frame_bytes(&self) -> f64 {
        if self.frames_per_s > 0.0 {
            self.mb_per_s * 1e6 / self.frames_per_s
        } else {
            0.0
        }
    }
}

/// Frame sizes that differ by more than this make the per-frame CPU ratio unfair: the per-byte
/// one is shown beside it.
const SIZE_DIFFERS: f64 = 0.05;

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub tool: String,
    pub scenario: Option<String>,
    pub plan: Plan,
    pub run: RunReport,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floor: Option<RunReport>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratios: Option<Ratios>,
    /// `--runs`: each pair's ratios (then `ratios` holds their medians).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<Ratios>,
    /// `--runs`: each figure's noise, as half the range of the runs relative to the median.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spread: Option<Ratios>,
    /// What else ran on the host meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostLoad>,
}

/// A baseline whose figures vary more than this between runs cannot tell a regression from noise.
pub const MAX_BASELINE_SPREAD: f64 = 0.25;

/// Other processes' CPU (share of all cores) beyond which a run is inconclusive.
const BUSY_OTHERS_PCT: f64 = 20.0;
/// Steal (a hypervisor taking the CPU) beyond which a run is inconclusive.
const BUSY_STEAL_PCT: f64 = 5.0;

/// How busy the host was during the run, beyond loadtest and what it started.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HostLoad {
    /// CPU used by other processes, percent of all cores.
    pub others_pct: f64,
    /// CPU stolen by the hypervisor, percent.
    pub steal_pct: f64,
    pub seconds: f64,
}

impl HostLoad {
    /// Why the host was too busy to judge a run on it, or `None`.
    pub fn busy(&self) -> Option<String> {
        if self.others_pct > BUSY_OTHERS_PCT {
            Some(format!(
                "other processes used {:.0}% of the CPU (more than {BUSY_OTHERS_PCT:.0}%)",
                self.others_pct
            ))
        } else if self.steal_pct > BUSY_STEAL_PCT {
            Some(format!(
                "{:.0}% of the CPU was stolen by the hypervisor (more than {BUSY_STEAL_PCT:.0}%)",
                self.steal_pct
            ))
        } else {
            None
        }
    }
}

/// `/proc/stat` and this process's own CPU (children it waited for included) at one moment.
pub struct HostSample {
    at: std::time::Instant,
    busy: u64,
    steal: u64,
    total: u64,
    own: u64,
}

impl HostSample {
    /// Now (`None` where /proc is not Linux's).
    pub fn now() -> Option<HostSample> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        // user nice system idle iowait irq softirq steal
        let total: u64 = cpu.iter().take(8).sum();
        let idle = cpu.get(3)? + cpu.get(4).copied().unwrap_or(0);
        let steal = cpu.get(7).copied().unwrap_or(0);
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let fields: Vec<&str> = own_stat.rsplit_once(") ")?.1.split_whitespace().collect();
        // utime stime cutime cstime: fields 14-17 of the line, 12-15 after the command
        let own: u64 = fields
            .get(11..15)?
            .iter()
            .filter_map(|v| v.parse::<u64>().ok())
            .sum();
        Some(HostSample {
            at: std::time::Instant::now(),
            busy: total - idle - steal,
            steal,
            total,
            own,
        })
    }

    /// The load since this sample: everything busy that was not loadtest or its children.
    pub fn load_since(&self) -> HostLoad {
        let Some(now) = HostSample::now() else {
            return HostLoad::default();
        };
        let total = (now.total - self.total).max(1) as f64;
        let others = (now.busy - self.busy).saturating_sub(now.own - self.own) as f64;
        HostLoad {
            others_pct: 100.0 * others / total,
            steal_pct: 100.0 * (now.steal - self.steal) as f64 / total,
            seconds: self.at.elapsed().as_secs_f64(),
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Half the range relative to the median: how far one run may stray.
fn spread(v: &[f64]) -> f64 {
    let m = median(v.to_vec());
    let (lo, hi) = v
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    if m > 0.0 && v.len() > 1 {
        (hi - lo) / 2.0 / m
    } else {
        0.0
    }
}

/// One report from `--runs` pairs: the last pair's details, each figure's median over the
/// pairs, and their spread.
pub fn aggregate(mut pairs: Vec<Report>) -> Report {
    let ratios: Vec<Ratios> = pairs.iter().filter_map(|p| p.ratios.clone()).collect();
    let mut report = pairs.pop().expect("at least one run");
    if ratios.len() > 1 {
        let figure = |f: fn(&Ratios) -> f64| ratios.iter().map(f).collect::<Vec<f64>>();
        let last = report.ratios.clone().unwrap_or_default();
        report.ratios = Some(Ratios {
            p50: median(figure(|r| r.p50)),
            p99: median(figure(|r| r.p99)),
            cpu_per_frame: median(figure(|r| r.cpu_per_frame)),
            cpu_per_byte: median(figure(|r| r.cpu_per_byte)),
            ..last
        });
        report.spread = Some(Ratios {
            p50: spread(&figure(|r| r.p50)),
            p99: spread(&figure(|r| r.p99)),
            cpu_per_frame: spread(&figure(|r| r.cpu_per_frame)),
            cpu_per_byte: spread(&figure(|r| r.cpu_per_byte)),
            frame_bytes: (0.0, 0.0),
        });
        report.runs = ratios;
    }
    report
}

/// Why a report cannot serve as a baseline (its runs vary too much), or `None`.
pub fn too_noisy(report: &Report) -> Option<String> {
    let s = report.spread.as_ref()?;
    [
        ("p50 / floor", s.p50),
        ("p99 / floor", s.p99),
        ("CPU per frame / floor", s.cpu_per_frame),
    ]
    .into_iter()
    .filter(|(_, v)| *v > MAX_BASELINE_SPREAD)
    .map(|(name, v)| {
        format!(
            "{name} varied ±{:.0}% between its runs (at most ±{:.0}%)",
            v * 100.0,
            MAX_BASELINE_SPREAD * 100.0
        )
    })
    .reduce(|a, b| format!("{a}; {b}"))
}

impl Report {
    /// Fills `ratios` when a floor run exists.
    pub fn compute_ratios(&mut self) {
        let Some(floor) = &self.floor else { return };
        let (s, f) = (self.run.latency_us.get("all"), floor.latency_us.get("all"));
        let (Some(s), Some(f)) = (s, f) else { return };
        let cpu = match (&self.run.server, &floor.server) {
            (Some(a), Some(b)) if b.cpu_per_frame_us > 0.0 => {
                a.cpu_per_frame_us / b.cpu_per_frame_us
            }
            _ => 0.0,
        };
        let div = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
        let sizes = (self.run.frame_bytes(), floor.frame_bytes());
        self.ratios = Some(Ratios {
            p50: div(s.p50, f.p50),
            p99: div(s.p99, f.p99),
            cpu_per_frame: cpu,
            frame_bytes: sizes,
            cpu_per_byte: div(cpu, div(sizes.0, sizes.1)),
        });
    }
}

/// Prints the human summary.
pub fn print_summary(report: &Report) {
    let mut runs = vec![(report.run.target.as_str(), &report.run)];
    if let Some(f) = &report.floor {
        runs.push(("floor", f));
    }
    println!();
    println!(
        "{:<8} {:<10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8}",
        "run", "latency", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms", "frames", "samples"
    );
    for (name, run) in &runs {
        for (key, p) in run
            .latency_us
            .iter()
            .chain(std::iter::once((&"spread".to_string(), &run.spread_us)))
        {
            println!(
                "{:<8} {:<10} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>10} {:>8}",
                name,
                key,
                p.p50 / 1000.0,
                p.p90 / 1000.0,
                p.p99 / 1000.0,
                p.p999 / 1000.0,
                p.max / 1000.0,
                "",
                p.count
            );
        }
    }
    println!();
    for (name, run) in &runs {
        println!(
            "{name}: {:.0} frames/s, {:.1} MB/s over {:.1} s; healthy {}/{} connected, gaps {} ({} frames), duplicates {}, torn {}, disconnects {:?}",
            run.frames_per_s,
            run.mb_per_s,
            run.window_s,
            run.healthy.connected,
            run.healthy.clients,
            run.healthy.gaps,
            run.healthy.missing_frames,
            run.healthy.duplicates,
            run.healthy.torn,
            run.healthy.disconnects
        );
        for (label, g) in [("slow", &run.slow), ("stalled", &run.stalled)] {
            if g.clients > 0 {
                println!(
                    "  {label}: {} clients ({} connected), {} frames, {} gaps ({} frames skipped), torn {}, disconnects {:?}, still connected {}{}",
                    g.clients, g.connected, g.frames, g.gaps, g.missing_frames, g.torn, g.disconnects, g.still_connected,
                    match g.connected.saturating_sub(g.still_connected + g.disconnects.values().sum::<u64>()) {
                        0 => String::new(),
                        n => format!(", {n} still draining when the run ended"),
                    }
                );
            }
        }
        if let Some(c) = &run.churn {
            println!(
                "  churn: {} new connections ({:.0}/s), {} upgraded, {} failed; connect to upgraded p50 {:.2} ms p99 {:.2} ms",
                c.attempted,
                c.attempted as f64 / run.window_s.max(1e-9),
                c.ok,
                c.failed,
                c.connect_us.p50 / 1000.0,
                c.connect_us.p99 / 1000.0
            );
        }
        if let Some(f) = &run.flood {
            println!(
                "  flood: {} of {} never-reading connections opened in {:.2} s ({:.0}/s), {} failed; the server counted them all {}",
                f.opened,
                f.planned,
                f.connect_s,
                f.connect_rate,
                f.failed,
                match (f.admitted_s, f.admitted_rate) {
                    (Some(s), Some(r)) => format!("after {s:.2} s ({r:.0} admitted/s)"),
                    _ => "never (or has no /metrics)".to_string(),
                }
            );
            if let Some(s) = &f.server {
                println!(
                    "  flood, as the server counted it: {:.0} admissions deferred, {:.0} frames skipped (the flood's own included), {:.0} sends under memory pressure, {:.0} tick slots missed, {:.0} ticks reached a worker over 100 ms late",
                    s.admissions_deferred,
                    s.frames_skipped,
                    s.send_memory_pressure,
                    s.ticks_missed,
                    s.ticks_dispatched_late
                );
            }
            if !f.healthy_gaps_at_s.is_empty() {
                let at: Vec<String> = f
                    .healthy_gaps_at_s
                    .iter()
                    .map(|s| format!("{s:.2}"))
                    .collect();
                println!(
                    "  healthy gaps at (s after the flood's first connect): {}",
                    at.join(" ")
                );
            }
        }
        if let Some(c) = &run.commands {
            println!(
                "  commands: {} sent, {} replies, {} errors; reply p50 {:.2} ms p99 {:.2} ms; visible in telemetry p50 {:.2} ms p99 {:.2} ms",
                c.sent,
                c.replies,
                c.errors,
                c.reply_us.p50 / 1000.0,
                c.reply_us.p99 / 1000.0,
                c.visible_us.p50 / 1000.0,
                c.visible_us.p99 / 1000.0
            );
        }
        if run.bytes_per_client_s > 0.0 {
            println!(
                "  wire bytes per client-second: {:.0}{}",
                run.bytes_per_client_s,
                if run.inflate_errors > 0 {
                    format!("; {} messages failed to inflate", run.inflate_errors)
                } else {
                    String::new()
                }
            );
        }
        if let Some(v) = &run.v2 {
            let s = &v.stats;
            println!(
                "  v2: {} of {} clients, {} profiles; {} messages ({} keyframes, {} deltas); verified {} against v1 frames: {} mismatches, {} broken chains, {} gaps, {} off-grid, {} unverifiable",
                s.connected, s.clients, s.profiles.len(), s.messages, s.keyframes, s.deltas,
                s.verified, s.mismatches, s.broken_chain, s.gaps, s.off_grid, s.unverifiable
            );
            let ratio = if v.bytes_per_client_s > 0.0 {
                format!(
                    " (v1 / v2 = {:.1})",
                    v.v1_bytes_per_client_s / v.bytes_per_client_s
                )
            } else {
                String::new()
            };
            println!(
                "  v2: {:.0} bytes per client-second; v1 clients {:.0}{ratio}; latency p50 {:.2} ms p99 {:.2} ms",
                v.bytes_per_client_s,
                v.v1_bytes_per_client_s,
                v.latency_us.p50 / 1000.0,
                v.latency_us.p99 / 1000.0
            );
        }
        if let Some(t) = &run.tick_build {
            println!(
                "  tick build: {} builds, p99 ≤ {} ms, {:.2}% within 1 ms",
                t.builds,
                t.p99_le_s * 1000.0,
                t.share_le_1ms * 100.0
            );
        }
        if let Some(s) = &run.server {
            println!(
                "  {name} process {}: CPU {:.1}% of a core, {:.2} µs CPU per delivered frame, RSS max {:.1} MB, threads max {}; host TCP memory max {:.1} MB",
                s.pid, s.cpu_pct, s.cpu_per_frame_us, s.rss_max_mb, s.threads_max, s.tcp_mem_max_mb
            );
        }
        println!("  loadtest CPU: {:.0}% of its cores", run.loadtest_cpu_pct);
    }
    if let Some(r) = &report.ratios {
        let (target, floor) = r.frame_bytes;
        println!(
            "\n{} / floor: p50 ×{:.2}, p99 ×{:.2}, CPU per frame ×{:.2}; frames {:.0} B vs the floor's {:.0} B",
            report.run.target, r.p50, r.p99, r.cpu_per_frame, target, floor
        );
        if floor > 0.0 && (target / floor - 1.0).abs() > SIZE_DIFFERS {
            println!(
                "  the frame sizes differ: per byte delivered, CPU ×{:.2} (the fair comparison)",
                r.cpu_per_byte
            );
        }
    }
}

/// The report as one self-contained HTML page: the summary table and the plot.
pub fn html(report: &Report, title: &str, subtitle: &str, svg: &str) -> String {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut rows = String::new();
    let mut runs = vec![("server", &report.run)];
    if let Some(f) = &report.floor {
        runs.push(("floor", f));
    }
    for (name, run) in &runs {
        for (key, p) in run
            .latency_us
            .iter()
            .chain(std::iter::once((&"spread".to_string(), &run.spread_us)))
        {
            rows.push_str(&format!(
                "<tr><td>{name}</td><td>{key}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{:.2}</td><td>{}</td></tr>",
                p.p50 / 1000.0,
                p.p90 / 1000.0,
                p.p99 / 1000.0,
                p.p999 / 1000.0,
                p.max / 1000.0,
                p.count
            ));
        }
    }
    let mut facts = String::new();
    for (name, run) in &runs {
        let h = &run.healthy;
        facts.push_str(&format!(
            "<li><b>{name}</b>: {:.0} frames/s, {:.1} MB/s over {:.1} s; healthy {}/{} connected, {} gaps, {} duplicates, {} torn",
            run.frames_per_s, run.mb_per_s, run.window_s, h.connected, h.clients, h.gaps, h.duplicates, h.torn
        ));
        if let Some(s) = &run.server {
            facts.push_str(&format!(
                "; CPU {:.1}% of a core, {:.2} µs per delivered frame, RSS max {:.1} MB, {} threads max",
                s.cpu_pct, s.cpu_per_frame_us, s.rss_max_mb, s.threads_max
            ));
        }
        facts.push_str("</li>");
    }
    if let Some(r) = &report.ratios {
        facts.push_str(&format!(
            "<li><b>server / floor</b>: p50 ×{:.2}, p99 ×{:.2}, CPU per frame ×{:.2}</li>",
            r.p50, r.p99, r.cpu_per_frame
        ));
    }
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{t}</title><style>body{{font-family:sans-serif;margin:24px;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 10px;text-align:right}}td:nth-child(-n+2),th:nth-child(-n+2){{text-align:left}}.sub{{color:#666}}</style></head><body><h1>{t}</h1><p class=\"sub\">{st}</p><table><tr><th>run</th><th>latency</th><th>p50 ms</th><th>p90 ms</th><th>p99 ms</th><th>p99.9 ms</th><th>max ms</th><th>samples</th></tr>{rows}</table><ul>{facts}</ul>{svg}</body></html>\n",
        t = esc(title),
        st = esc(subtitle),
    )
}

/// Compares with a baseline report; returns the figures that regressed by more than `max_pct`.
/// Ratios to the floor are compared when both reports have them (stable across machines);
/// otherwise absolute p50/p99 and CPU per frame.
pub fn regressions(current: &Report, baseline: &Report, max_pct: f64) -> Vec<String> {
    let mut figures: Vec<(&str, f64, f64)> = Vec::new();
    // The noise of each figure: the larger spread of the two reports (0 without --runs).
    let noise = |f: fn(&Ratios) -> f64| {
        current
            .spread
            .as_ref()
            .map_or(0.0, f)
            .max(baseline.spread.as_ref().map_or(0.0, f))
    };
    let mut noises: Vec<f64> = Vec::new();
    match (&current.ratios, &baseline.ratios) {
        (Some(c), Some(b)) => {
            figures.push(("p50 / floor", c.p50, b.p50));
            noises.push(noise(|r| r.p50));
            figures.push(("p99 / floor", c.p99, b.p99));
            noises.push(noise(|r| r.p99));
            if c.cpu_per_frame > 0.0 && b.cpu_per_frame > 0.0 {
                figures.push(("CPU per frame / floor", c.cpu_per_frame, b.cpu_per_frame));
                noises.push(noise(|r| r.cpu_per_frame));
            }
        }
        _ => {
            if let (Some(c), Some(b)) = (
                current.run.latency_us.get("all"),
                baseline.run.latency_us.get("all"),
            ) {
                figures.push(("p50 latency µs", c.p50, b.p50));
                figures.push(("p99 latency µs", c.p99, b.p99));
            }
            if let (Some(c), Some(b)) = (&current.run.server, &baseline.run.server) {
                figures.push(("CPU per frame µs", c.cpu_per_frame_us, b.cpu_per_frame_us));
            }
        }
    }
    let mut out = Vec::new();
    for (i, (name, now, before)) in figures.into_iter().enumerate() {
        // Worse by more than --max-regression and by more than twice the measured noise.
        let noise = noises.get(i).copied().unwrap_or(0.0);
        let limit = before * (1.0 + (max_pct / 100.0).max(2.0 * noise));
        let verdict = if before > 0.0 && now > limit {
            "REGRESSED"
        } else {
            "ok"
        };
        println!("baseline: {name}: {now:.3} vs {before:.3} (limit {limit:.3}) {verdict}");
        if verdict != "ok" {
            out.push(format!(
                "{name} {now:.3} > {before:.3} +{:.0}%",
                (limit / before - 1.0) * 100.0
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(p50: f64, p99: f64, cpu: f64, ratios: Option<Ratios>) -> Report {
        let mut run = RunReport::default();
        run.latency_us.insert(
            "all".into(),
            Percentiles {
                p50,
                p99,
                ..Default::default()
            },
        );
        run.server = Some(ProcessCpu {
            cpu_per_frame_us: cpu,
            ..Default::default()
        });
        Report {
            tool: "t".into(),
            scenario: None,
            plan: crate::scenario::Scenario::Smoke.plan(),
            run,
            floor: None,
            ratios,
            runs: Vec::new(),
            spread: None,
            host: None,
        }
    }

    #[test]
    fn regressions_name_each_figure() {
        let base = report(1000.0, 2000.0, 5.0, None);
        assert!(regressions(&report(1100.0, 2100.0, 5.5, None), &base, 20.0).is_empty());
        let bad = regressions(&report(1300.0, 2100.0, 7.0, None), &base, 20.0);
        assert_eq!(bad.len(), 2);
        assert!(bad[0].starts_with("p50 latency"));
        assert!(bad[1].starts_with("CPU per frame"));
        // Ratios win when both have them.
        let r = |p50| {
            Some(Ratios {
                p50,
                p99: 1.0,
                cpu_per_frame: 1.0,
                ..Ratios::default()
            })
        };
        let bad = regressions(
            &report(9e9, 9e9, 9e9, r(1.5)),
            &report(1.0, 1.0, 1.0, r(1.0)),
            20.0,
        );
        assert_eq!(bad.len(), 1);
        assert!(bad[0].starts_with("p50 / floor"));
    }

    #[test]
    fn a_change_within_the_measured_noise_is_not_a_regression_and_noisy_baselines_are_refused() {
        let pair = |p99: f64| {
            let mut r = report(1.0, 1.0, 1.0, None);
            r.ratios = Some(Ratios {
                p50: 1.0,
                p99,
                cpu_per_frame: 1.0,
                ..Ratios::default()
            });
            r
        };
        // Five runs whose p99 ratio wanders ±20%: median 1.0.
        let baseline = aggregate([0.8, 1.2, 1.0, 0.9, 1.1].map(pair).to_vec());
        assert_eq!(baseline.ratios.as_ref().unwrap().p99, 1.0);
        assert!((baseline.spread.as_ref().unwrap().p99 - 0.2).abs() < 1e-9);
        assert_eq!(too_noisy(&baseline), None);
        // +30% is beyond --max-regression 25 but within twice the noise (±40%): not judged bad.
        assert!(regressions(&pair(1.3), &baseline, 25.0).is_empty());
        // +50% is beyond both.
        assert_eq!(regressions(&pair(1.5), &baseline, 25.0).len(), 1);
        // A baseline whose runs vary ±45% cannot judge anything.
        let noisy = aggregate([0.55, 1.45, 1.0].map(pair).to_vec());
        assert!(too_noisy(&noisy)
            .unwrap()
            .contains("p99 / floor varied ±45%"));
        // A busy host is said, in words.
        let busy = HostLoad {
            others_pct: 35.0,
            ..HostLoad::default()
        };
        assert!(busy.busy().unwrap().contains("other processes used 35%"));
        assert_eq!(HostLoad::default().busy(), None);
    }

    #[test]
    fn percentiles_and_curve() {
        let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).unwrap();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h, true);
        assert_eq!(p.count, 1000);
        assert!((p.p50 - 500.0).abs() <= 1.0);
        assert!((p.p99 - 990.0).abs() <= 1.0);
        assert!(p
            .curve
            .windows(2)
            .all(|w| w[1].0 > w[0].0 && w[1].1 >= w[0].1));
    }
}
