//! The floor: the least a broadcaster can do. One thread writes one pre-framed frame to every
//! socket with blocking writes, every tick — no queues, no slow-consumer policy, no protocol
//! beyond the WebSocket upgrade. The frame is aerobridge's own (same keys, same size), so the
//! only difference measured is the serving machinery.

use aerobridge::packet::Packet;
use aerobridge::source::sim::Sim;
use aerobridge::telemetry::{FrameEncoder, FrameHeader};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

type Clients = Arc<Mutex<Vec<(TcpStream, bool)>>>;

/// Serves until killed.
pub fn run(broadcast_ms: u64) -> anyhow::Result<()> {
    let tcp = TcpListener::bind("127.0.0.1:0")?;
    let ws = TcpListener::bind("127.0.0.1:0")?;
    println!(
        "floor listening tcp={} ws={}",
        tcp.local_addr()?,
        ws.local_addr()?
    );
    std::io::stdout().flush()?;
    let clients: Clients = Arc::new(Mutex::new(Vec::new()));
    {
        let clients = Arc::clone(&clients);
        std::thread::spawn(move || {
            for s in tcp.incoming().map_while(Result::ok) {
                let _ = s.set_nodelay(true);
                clients.lock().unwrap().push((s, false));
            }
        });
    }
    {
        let clients = Arc::clone(&clients);
        std::thread::spawn(move || {
            for s in ws.incoming().map_while(Result::ok) {
                let clients = Arc::clone(&clients);
                std::thread::spawn(move || {
                    if let Some(s) = upgrade(s) {
                        clients.lock().unwrap().push((s, true));
                    }
                });
            }
        });
    }
    let period = Duration::from_millis(broadcast_ms);
    let mut sim = Sim::new(std::time::SystemTime::now());
    let mut encoder = FrameEncoder::new();
    let start = Instant::now();
    let mut counter = 0u64;
    let mut last = start;
    loop {
        counter += 1;
        let due = start + period * counter as u32;
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        let wall = SystemTime::now();
        sim.advance(wall, now - last);
        last = now;
        let header = FrameHeader {
            timestamp_us: wall.duration_since(UNIX_EPOCH)?.as_micros() as u64,
            data_valid: true,
            update_counter: counter,
            broadcast_rate_hz: 1000.0 / broadcast_ms as f64,
        };
        let packet = Packet::build(
            counter,
            header.timestamp_us,
            now,
            encoder.encode(&header, sim.variables()),
        );
        let mut list = clients.lock().unwrap();
        list.retain_mut(|(s, is_ws)| {
            s.write_all(if *is_ws { &packet.ws } else { &packet.tcp })
                .is_ok()
        });
    }
}

fn upgrade(mut s: TcpStream) -> Option<TcpStream> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    loop {
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Ok(Some((req, _))) = aerobridge::ws::handshake::parse_upgrade(&buf, 8192) {
            s.write_all(&aerobridge::ws::handshake::switching_protocols(
                &req.accept,
                None,
                None,
            ))
            .ok()?;
            s.set_nodelay(true).ok()?;
            return Some(s);
        }
        if buf.len() > 8192 {
            return None;
        }
    }
}
