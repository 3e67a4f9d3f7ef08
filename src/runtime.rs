//! How each worker's compio runtime is built: the io_uring setup flags and the cap on the
//! kernel's io-wq worker pool. Measured choices are recorded in [`crate::manual`].
//!
//! The io-wq cap is the second line of defence behind [`crate::net::io`]'s non-blocking sends:
//! should any operation still be punted to io-wq (a kernel or compio change, a new kind of op),
//! at most [`IO_WQ_MAX_WORKERS`] kernel threads per worker can block on it, instead of one per
//! stuck socket. compio does not expose `IORING_REGISTER_IOWQ_MAX_WORKERS`, but it does expose
//! the ring's file descriptor, so the register call is made here directly — the crate's only
//! `unsafe` block.

use compio::driver::{DriverType, ProactorBuilder};
use compio::runtime::Runtime;
use std::io;

/// Most io-wq kernel workers per worker thread, for each of the kernel's two classes (bounded:
/// regular files; unbounded: sockets and the like).
pub const IO_WQ_MAX_WORKERS: u32 = 2;

/// Threads compio may start for operations without an async form (none on the hot path).
const BLOCKING_POOL_LIMIT: usize = 4;

/// Builds a worker runtime: io_uring where the kernel has it (single issuer, deferred task
/// running: one thread owns the ring), else the platform's driver. Returns the runtime and, on
/// io_uring, whether the io-wq cap could be set.
pub fn build() -> io::Result<(Runtime, Option<io::Result<()>>)> {
    let mut proactor = ProactorBuilder::new();
    proactor
        .thread_pool_limit(BLOCKING_POOL_LIMIT)
        // Only this thread submits, and completions need not interrupt it: the kernel defers
        // completion work until the thread next waits on the ring, instead of interrupting it
        // for each one (measured: CPU per frame −5% at 1 000 WS clients, −3% at 5 000).
        .single_issuer(true)
        .coop_taskrun(true)
        .defer_taskrun(true);
    let runtime = compio::runtime::RuntimeBuilder::new()
        .with_proactor(proactor)
        .build()?;
    let capped = (runtime.driver_type() == DriverType::IoUring).then(|| cap_io_wq(&runtime));
    Ok((runtime, capped))
}

#[cfg(target_os = "linux")]
fn cap_io_wq(runtime: &Runtime) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    /// From `include/uapi/linux/io_uring.h` (Linux 5.15+).
    const IORING_REGISTER_IOWQ_MAX_WORKERS: libc::c_long = 19;
    let mut max = [IO_WQ_MAX_WORKERS, IO_WQ_MAX_WORKERS];
    // SAFETY: the syscall reads and writes exactly two u32 at `max`, a live array on this stack
    // frame, and touches nothing else; `runtime` owns the ring fd for the whole call. The limit
    // applies to the calling thread's io-wq, which is why each worker calls this on itself.
    #[allow(unsafe_code)]
    let ret = unsafe {
        libc::syscall(
            libc::SYS_io_uring_register,
            runtime.as_raw_fd() as libc::c_long,
            IORING_REGISTER_IOWQ_MAX_WORKERS,
            max.as_mut_ptr(),
            2 as libc::c_long,
        )
    };
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(not(target_os = "linux"))]
fn cap_io_wq(_runtime: &Runtime) -> io::Result<()> {
    Err(io::ErrorKind::Unsupported.into())
}
