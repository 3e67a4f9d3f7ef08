//! Crash-safe recordings: `aerobridge record` killed with SIGKILL at random points leaves a file
//! that replays, missing at most a second; a full disk stops it with a clear error and a valid
//! file; a source that goes away and comes back is reconnected into the same file.

mod common;

use aerobridge::source::recording;
use aerobridge::source::replay::Replay;
use common::proxy::Proxy;
use common::{counter_of, Server, TcpLines};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Every frame the source sent, by update_counter, as a plain client received it.
fn reference(addr: SocketAddr) -> Arc<Mutex<BTreeMap<u64, Vec<u8>>>> {
    let frames = Arc::new(Mutex::new(BTreeMap::new()));
    let f = frames.clone();
    let mut lines = TcpLines::connect(addr);
    // Its first frame before anything records: a recorder the server admits before this client
    // would get a frame the reference never saw (seen in CI: "frame 1 differs", None).
    let first = lines.frame();
    frames.lock().unwrap().insert(counter_of(&first), first);
    thread::spawn(move || loop {
        let line = lines.frame();
        f.lock().unwrap().insert(counter_of(&line), line);
    });
    frames
}

fn record(from: SocketAddr, out: &Path, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_aerobridge"))
        .args(["record", "--from", &format!("tcp://{from}"), "--out"])
        .arg(out)
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done() {
        assert!(Instant::now() < deadline, "not within 20 s: {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("aerobridge-recordings-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// Checks a recording against what the source sent: every line byte-equal to the frame of its
/// update_counter, consecutive; it replays. Returns its last update_counter.
fn check_against(path: &Path, sent: &BTreeMap<u64, Vec<u8>>) -> (u64, usize) {
    let r = recording::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let lines: Vec<&[u8]> = r.text.split_inclusive(|&b| b == b'\n').collect();
    assert!(!lines.is_empty(), "{}: no frames", path.display());
    let counters: Vec<u64> = lines.iter().map(|l| counter_of(l)).collect();
    // A recorder's first frame may come from a worker still a tick behind the reference's:
    // frames older than the reference's first cannot be compared.
    let first_known = sent.keys().next().copied().unwrap_or(0);
    for (line, c) in lines.iter().zip(&counters) {
        if *c < first_known {
            continue;
        }
        assert_eq!(
            Some(&line.to_vec()),
            sent.get(c),
            "{}: frame {c} differs from what was sent",
            path.display()
        );
    }
    let replay =
        Replay::open(path, 1.0, false).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(replay.len(), lines.len());
    (*counters.last().unwrap(), lines.len())
}

#[test]
fn a_recording_killed_at_any_moment_replays_missing_at_most_a_second() {
    let server = Server::start(&[]);
    let sent = reference(server.data);
    // A seed per run, printed so a failure can be replayed.
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64
        | 1;
    println!("seed {seed}");
    let mut random = move |below: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % below
    };
    let runs: Vec<(PathBuf, u64)> = (0..20)
        .map(|i| {
            let name = if i % 2 == 0 {
                format!("kill-{i}.ndjson.zst")
            } else {
                format!("kill-{i}.ndjson")
            };
            (temp(&name), random(1500))
        })
        .collect();
    let handles: Vec<_> = runs
        .into_iter()
        .map(|(path, kill_after_ms)| {
            let sent = sent.clone();
            let data = server.data;
            thread::spawn(move || {
                let mut child = record(data, &path, &[]);
                // The first flush, then a random moment within the next 1.5 s.
                wait_until("the recording's first flush", || {
                    std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
                });
                thread::sleep(Duration::from_millis(kill_after_ms));
                let latest_sent = *sent.lock().unwrap().keys().last().unwrap();
                child.kill().unwrap(); // SIGKILL
                child.wait().unwrap();
                // The reference may trail the recorder by a frame or two: let it catch up.
                let kept = recording::read(&path).unwrap();
                let last_kept = kept
                    .text
                    .split_inclusive(|&b| b == b'\n')
                    .next_back()
                    .map(counter_of)
                    .unwrap();
                wait_until("the reference to catch up", || {
                    sent.lock()
                        .unwrap()
                        .keys()
                        .last()
                        .is_some_and(|&c| c >= last_kept)
                });
                let (last, lines) = check_against(&path, &sent.lock().unwrap());
                let lost = latest_sent.saturating_sub(last);
                assert!(
                    lost <= 50,
                    "{}: {lost} frames lost (more than a second at 50 Hz)",
                    path.display()
                );
                let _ = std::fs::remove_file(&path);
                (path, kill_after_ms, lines, lost)
            })
        })
        .collect();
    for h in handles {
        let (path, at, lines, lost) = h.join().unwrap();
        println!(
            "{}: killed {at} ms after the first flush: {lines} frames whole, {lost} lost",
            path.display()
        );
    }
}

#[test]
fn a_full_disk_stops_the_recording_with_a_clear_error_and_a_valid_file() {
    let server = Server::start(&[]);
    let sent = reference(server.data);
    let dir = temp("full-disk");
    std::fs::create_dir_all(&dir).unwrap();
    // A small tmpfs is a real full disk (ENOSPC); where mounting is not allowed, a file-size
    // limit on the process gives the write error the same way (EFBIG).
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    let path = dir.join("flight.ndjson");
    let mut command = Command::new(env!("CARGO_BIN_EXE_aerobridge"));
    command
        .args([
            "record",
            "--from",
            &format!("tcp://{}", server.data),
            "--out",
        ])
        .arg(&path)
        .args(["--duration", "20s"]);
    if !mounted {
        use std::os::unix::process::CommandExt;
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
                let limit = libc::rlimit {
                    rlim_cur: 1024 * 1024,
                    rlim_max: 1024 * 1024,
                };
                libc::setrlimit(libc::RLIMIT_FSIZE, &limit);
                Ok(())
            });
        }
    }
    let out = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unmounted however the test ends.
    struct Unmount<'a>(&'a Path, bool);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            if self.1 {
                let _ = Command::new("umount").arg(self.0).status();
            }
        }
    }
    let _unmount = Unmount(&dir, mounted);
    {
        assert!(!out.status.success(), "recording went on: {stderr}");
        let why = if mounted {
            "No space left on device (os error 28) (disk full)"
        } else {
            "File too large"
        };
        assert!(stderr.contains(why), "{stderr}");
        assert!(
            stderr.contains("the recording stops there, valid with"),
            "{stderr}"
        );
        let r = recording::read(&path).unwrap();
        assert_eq!(
            r.torn, None,
            "the file was cut back to its last whole flush"
        );
        wait_until("the reference to catch up", || {
            sent.lock().unwrap().len() > 10
        });
        let (_, lines) = check_against(&path, &sent.lock().unwrap());
        assert!(
            stderr.contains(&format!("valid with {lines} frames")),
            "{lines} lines: {stderr}"
        );
    }
}

#[test]
fn a_source_that_goes_away_is_recorded_again_into_the_same_file() {
    let server = Server::start(&[]);
    let sent = reference(server.data);
    let proxy = Proxy::start(server.data);
    let path = temp("bounce.ndjson.zst");
    let child = record(proxy.addr, &path, &["--duration", "5s"]);
    wait_until("the recording's first flush", || {
        std::fs::metadata(&path).is_ok_and(|m| m.len() > 0)
    });
    assert_eq!(proxy.pause(), 1, "the recorder's connection");
    wait_until("the recorder trying to reconnect", || {
        proxy.refused.load(std::sync::atomic::Ordering::SeqCst) >= 1
    });
    proxy.resume();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("source lost"), "{stderr}");
    assert!(stderr.contains("the source was away 1 time(s)"), "{stderr}");
    assert_eq!(
        stderr.matches("source lost").count(),
        1,
        "one outage, logged once: {stderr}"
    );
    let text = recording::read(&path).unwrap().text;
    let counters: Vec<u64> = text
        .split_inclusive(|&b| b == b'\n')
        .map(counter_of)
        .collect();
    let gaps = counters.windows(2).filter(|w| w[1] != w[0] + 1).count();
    assert_eq!(gaps, 1, "one gap, where the source was away");
    check_against(&path, &sent.lock().unwrap());
    let _ = std::fs::remove_file(&path);
}

#[test]
fn repair_writes_the_whole_part_of_a_torn_recording_to_a_clean_file() {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("test-data/sim-5s.ndjson.zst");
    let whole = recording::read(&shipped).unwrap();
    assert_eq!(whole.torn, None);
    let raw = std::fs::read(&shipped).unwrap();
    let torn = temp("torn.ndjson.zst");
    std::fs::write(&torn, &raw[..raw.len() * 2 / 3]).unwrap();
    let clean = temp("repaired.ndjson");
    let out = Command::new(env!("CARGO_BIN_EXE_aerobridge"))
        .args(["record", "--repair"])
        .args([&torn, &clean])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("torn at byte"), "{stderr}");
    let repaired = recording::read(&clean).unwrap();
    assert_eq!(repaired.torn, None);
    assert!(!repaired.text.is_empty() && whole.text.starts_with(&repaired.text));
    let frames = repaired.text.iter().filter(|&&b| b == b'\n').count();
    assert!(
        stderr.contains(&format!("wrote the {frames} whole frames")),
        "{frames}: {stderr}"
    );
    for p in [torn, clean] {
        let _ = std::fs::remove_file(p);
    }
}
