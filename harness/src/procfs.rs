//! What Linux `/proc` says of a process and of the host: CPU time, memory, threads, file
//! descriptors, TCP memory. The one reader loadtest (its own figures, the server's, the
//! floor's) and the tests (leak, thread and memory checks) share.

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

/// The first number of a `/proc/PID/status` line such as `VmRSS:` or `Threads:`.
fn status_number(pid: Option<u32>, key: &str) -> Option<u64> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_string(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Resident set size in bytes.
pub fn rss_bytes(pid: Option<u32>) -> Option<u64> {
    status_number(pid, "VmRSS:").map(|kb| kb * 1024)
}

/// Threads of a process (io_uring's io-wq kernel workers count: they are its tasks).
pub fn threads(pid: Option<u32>) -> Option<u64> {
    status_number(pid, "Threads:")
}

/// Open file descriptors of `pid`.
pub fn fd_count(pid: u32) -> Option<usize> {
    Some(std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count())
}

/// The names of `pid`'s threads (`/proc/PID/task/*/comm`), io_uring's io-wq kernel workers
/// (`iou-wrk-*`) among them.
pub fn thread_names(pid: u32) -> Option<Vec<String>> {
    Some(
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .ok()?
            .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
            .map(|name| name.trim_end().to_string())
            .collect(),
    )
}

/// The host's `tcp_mem` (pressure threshold, hard limit), bytes: the server's own reading.
pub fn tcp_mem_limits() -> Option<(u64, u64)> {
    aerobridge::server::read_tcp_mem()
}

/// Kernel memory held by TCP sockets on the whole host, bytes (`/proc/net/sockstat`, `TCP: …
/// mem N`, in pages).
pub fn tcp_mem_bytes() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    let line = sockstat.lines().find(|l| l.starts_with("TCP:"))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == "mem")?;
    let pages: u64 = words.next()?.parse().ok()?;
    Some(pages * 4096)
}

/// CPU time the hypervisor has taken from this virtual machine's CPUs since boot, all CPUs, in
/// ms (`/proc/stat`, `steal`, in USER_HZ ticks of 10 ms); 0 where not reported.
pub fn host_steal_ms() -> u64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    stat.lines()
        .find(|l| l.starts_with("cpu "))
        .and_then(|l| l.split_whitespace().nth(8)?.parse::<u64>().ok())
        .map_or(0, |ticks| ticks * 10)
}

/// Peaks seen while sampling.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peaks {
    pub rss: u64,
    pub threads: u64,
    pub tcp_mem: u64,
}

/// CPU use of one process over a window.
#[derive(Debug, Clone, Copy)]
pub struct CpuWindow {
    pid: Option<u32>,
    start_cpu: f64,
    start: Instant,
    pub peaks: Peaks,
}

impl CpuWindow {
    /// Starts measuring `pid` (`None`: this process). `None` if `/proc` has no such process.
    pub fn start(pid: Option<u32>) -> Option<Self> {
        Some(Self {
            pid,
            start_cpu: cpu_seconds(pid)?,
            start: Instant::now(),
            peaks: Peaks::default(),
        })
    }

    /// Samples RSS, threads and host TCP memory (call periodically).
    pub fn sample(&mut self) {
        let p = &mut self.peaks;
        p.rss = p.rss.max(rss_bytes(self.pid).unwrap_or(0));
        p.threads = p.threads.max(threads(self.pid).unwrap_or(0));
        p.tcp_mem = p.tcp_mem.max(tcp_mem_bytes().unwrap_or(0));
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
