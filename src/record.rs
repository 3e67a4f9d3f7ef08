//! `aerobridge record --from tcp://HOST:12345 --out FILE`: writes a bridge's stream to a file, one
//! frame per line exactly as received (NDJSON; zstd-compressed when FILE ends in `.zst`), with a
//! progress line. Lines that are not JSON are counted and left out.

use crate::config::RecordArgs;
use std::io::{BufRead, BufReader, IsTerminal, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Records until `--duration` passes, Ctrl-C, or the stream ends.
pub fn run(args: &RecordArgs) -> anyhow::Result<()> {
    let addr = crate::source::relay::parse_tcp_url(&args.from)?;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {addr}"))?;
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", args.from))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let file = std::fs::File::create(&args.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", args.out.display()))?;
    let mut out: Box<dyn Write> = if args.out.extension().is_some_and(|e| e == "zst") {
        Box::new(zstd::stream::write::Encoder::new(file, 9)?.auto_finish())
    } else {
        Box::new(std::io::BufWriter::new(file))
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let (mut frames, mut bytes, mut bad) = (0u64, 0u64, 0u64);
    let mut last_progress = Instant::now();
    let mut reader = BufReader::with_capacity(256 * 1024, stream);
    let mut line = Vec::with_capacity(32 * 1024);
    let mut check = Vec::new();
    let end_reason = loop {
        if stop.load(Ordering::Relaxed) {
            break "interrupted";
        }
        if args.duration.is_some_and(|d| start.elapsed() >= d) {
            break "duration reached";
        }
        line.clear();
        match (&mut reader).take(4 << 20).read_until(b'\n', &mut line) {
            Ok(0) => break "stream ended",
            Ok(_) => {
                crate::telemetry::decode::sanitize_into(&line, &mut check);
                if !line.ends_with(b"\n") || simd_json::to_tape(&mut check).is_err() {
                    bad += 1;
                    continue;
                }
                out.write_all(&line)?;
                frames += 1;
                bytes += line.len() as u64;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break "no data for 5 s";
            }
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", args.from)),
        }
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = Instant::now();
            let msg = format!(
                "recorded {frames} frames, {:.1} MB, {:.0} s",
                bytes as f64 / 1e6,
                start.elapsed().as_secs_f64()
            );
            if tty {
                eprint!("\r{msg}   ");
            } else {
                eprintln!("{msg}");
            }
        }
    };
    out.flush()?;
    drop(out);
    if tty {
        eprintln!();
    }
    eprintln!(
        "recorded {frames} frames, {:.1} MB, {:.1} s to {} ({end_reason}; {bad} bad lines left out)",
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64(),
        args.out.display()
    );
    anyhow::ensure!(frames > 0, "nothing recorded from {}", args.from);
    Ok(())
}
