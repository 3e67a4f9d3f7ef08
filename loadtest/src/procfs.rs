//! CPU time and RSS of a process from Linux `/proc` (loadtest's own, the server's, the floor's).

use std::time::Instant;

/// USER_HZ: the unit of utime/stime in `/proc/PID/stat`, 100 on every mainstream Linux.
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU seconds (user + system) used so far by `pid` (`None`: this process).
pub fn cpu_seconds(pid: Option<u32>) -> Option<f64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_string(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / TICKS_PER_SECOND)
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// CPU use of one process over a window.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    pid: Option<u32>,
    start_cpu: f64,
    start: Instant,
    pub max_rss: u64,
}

impl CpuWindow {
    /// Starts measuring `pid` (`None`: this process). `None` if `/proc` has no such process.
    pub fn start(pid: Option<u32>) -> Option<Self> {
        Some(Self {
            pid,
            start_cpu: cpu_seconds(pid)?,
            start: Instant::now(),
            max_rss: rss_bytes(pid).unwrap_or(0),
        })
    }

    /// Samples RSS (call periodically).
    pub fn sample(&mut self) {
        if let Some(rss) = rss_bytes(self.pid) {
            self.max_rss = self.max_rss.max(rss);
        }
    }

    /// (CPU seconds used, wall seconds elapsed) since the start.
    pub fn finish(&mut self) -> (f64, f64) {
        self.sample();
        let cpu = cpu_seconds(self.pid)
            .map(|c| c - self.start_cpu)
            .unwrap_or(0.0);
        (cpu, self.start.elapsed().as_secs_f64())
    }
}
