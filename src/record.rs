//! `aerobridge record --from tcp://HOST:12345 --out FILE`: writes a bridge's stream to a file, one
//! frame per line exactly as received (NDJSON; zstd-compressed when FILE ends in `.zst`), with a
//! progress line. Lines that are not JSON are counted and left out.
//!
//! The file is made durable every half second ([`recording::Writer`]), so a crash loses at most
//! that; a write error (disk full) stops the recording with the file valid up to there. A source
//! that goes away (restarting, the network) is reconnected with backoff into the same file, and
//! the gap is said: in the log and in the closing line. `--repair IN OUT` rescues a torn file.

use crate::config::RecordArgs;
use crate::source::recording;
use std::io::{BufRead, BufReader, IsTerminal, Read};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Reconnect backoff: the first wait and the cap.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(5));
/// No data for this long: the source is presumed gone (and reconnected).
const SILENCE: Duration = Duration::from_secs(5);

/// Records until `--duration` passes or Ctrl-C; or repairs a torn recording (`--repair`).
pub fn run(args: &RecordArgs) -> anyhow::Result<()> {
    if let Some(files) = &args.repair {
        let (input, output) = (&files[0], &files[1]);
        let (lines, torn) = recording::repair(input, output)?;
        match torn {
            Some(t) => eprintln!(
                "{}: torn at byte {} after {} frames; wrote the {lines} whole frames to {}",
                input.display(),
                t.at_byte,
                t.lines_before,
                output.display()
            ),
            None => eprintln!(
                "{}: whole ({lines} frames); copied to {}",
                input.display(),
                output.display()
            ),
        }
        return Ok(());
    }
    let (Some(from), Some(out_path)) = (&args.from, &args.out) else {
        anyhow::bail!("record needs --from and --out (or --repair IN OUT)");
    };
    let addr = crate::source::relay::parse_tcp_url(from)?;
    let target = addr
        .to_socket_addrs()
        .map_err(|e| anyhow::anyhow!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| anyhow::anyhow!("cannot resolve {addr}"))?;
    // The first connection must work: a typo in --from is an error, not a wait.
    let mut stream =
        connect(target).map_err(|e| anyhow::anyhow!("cannot connect to {from}: {e}"))?;
    let mut out = recording::Writer::create(out_path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out_path.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        let _ = ctrlc::set_handler(move || stop.store(true, Ordering::Relaxed));
    }
    let tty = std::io::stderr().is_terminal();
    let start = Instant::now();
    let (mut frames, mut bytes, mut bad) = (0u64, 0u64, 0u64);
    let (mut reconnects, mut outage) = (0u64, Duration::ZERO);
    let mut last_progress = Instant::now();
    let mut line = Vec::with_capacity(32 * 1024);
    let mut check = Vec::new();
    let done = |stop: &AtomicBool| -> Option<&'static str> {
        if stop.load(Ordering::Relaxed) {
            Some("interrupted")
        } else if args.duration.is_some_and(|d| start.elapsed() >= d) {
            Some("duration reached")
        } else {
            None
        }
    };
    // Set while the source is away: when it went, for the outage total once frames flow again.
    let mut away: Option<Instant> = None;
    let mut wait = BACKOFF.0;
    let end_reason = 'recording: loop {
        let mut reader = BufReader::with_capacity(256 * 1024, stream);
        let lost = loop {
            if let Some(reason) = done(&stop) {
                break 'recording reason;
            }
            line.clear();
            match (&mut reader).take(4 << 20).read_until(b'\n', &mut line) {
                Ok(0) => break "the stream ended".to_string(),
                Ok(_) => {
                    crate::telemetry::decode::sanitize_into(&line, &mut check);
                    if !line.ends_with(b"\n") || simd_json::to_tape(&mut check).is_err() {
                        bad += 1;
                        continue;
                    }
                    if let Err(e) = out.line(&line) {
                        anyhow::bail!("writing {}: {e}", out_path.display());
                    }
                    frames += 1;
                    bytes += line.len() as u64;
                    if let Some(since) = away.take() {
                        reconnects += 1;
                        outage += since.elapsed();
                        wait = BACKOFF.0;
                        tracing::info!(source = %from, "source back after {:.1} s; recording continues", since.elapsed().as_secs_f64());
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break format!("no data for {} s", SILENCE.as_secs());
                }
                Err(e) => break e.to_string(),
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
        // What came so far is made durable before waiting for the source to come back.
        if let Err(e) = out.flush() {
            anyhow::bail!("writing {}: {e}", out_path.display());
        }
        if away.is_none() {
            away = Some(Instant::now());
            tracing::warn!(source = %from, "source lost ({lost}) after {frames} frames; reconnecting into the same file");
        } else {
            // Connected, but no frame came (a server that accepts and closes): back off too.
            pause(wait, &stop, &done);
            wait = (wait * 2).min(BACKOFF.1);
        }
        stream = loop {
            if let Some(reason) = done(&stop) {
                break 'recording reason;
            }
            match connect(target) {
                Ok(s) => break s,
                Err(_) => {
                    pause(wait, &stop, &done);
                    wait = (wait * 2).min(BACKOFF.1);
                }
            }
        };
    };
    if let Some(since) = away {
        outage += since.elapsed();
        reconnects += 1;
    }
    if let Err(e) = out.flush() {
        anyhow::bail!("writing {}: {e}", out_path.display());
    }
    drop(out);
    if tty {
        eprintln!();
    }
    let gaps = if reconnects > 0 {
        format!(
            "; the source was away {reconnects} time(s), {:.1} s in all",
            outage.as_secs_f64()
        )
    } else {
        String::new()
    };
    eprintln!(
        "recorded {frames} frames, {:.1} MB, {:.1} s to {} ({end_reason}; {bad} bad lines left out{gaps})",
        bytes as f64 / 1e6,
        start.elapsed().as_secs_f64(),
        out_path.display()
    );
    anyhow::ensure!(frames > 0, "nothing recorded from {from}");
    Ok(())
}

/// Sleeps `wait` in small steps, so Ctrl-C and `--duration` are noticed.
fn pause(wait: Duration, stop: &AtomicBool, done: &impl Fn(&AtomicBool) -> Option<&'static str>) {
    let until = Instant::now() + wait;
    while Instant::now() < until && done(stop).is_none() {
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn connect(target: SocketAddr) -> std::io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&target, Duration::from_secs(5))?;
    stream.set_read_timeout(Some(SILENCE))?;
    Ok(stream)
}
