//! The floor: the least a broadcaster can do. One thread writes one pre-framed frame to every
//! socket with blocking writes, every tick — no queues, no slow-consumer policy, no protocol
//! beyond the WebSocket upgrade. The frame is aerobridge's own (same keys, same size), so the
//! only difference measured is the serving machinery. Its TLS variant (`--tls CERT KEY`) gives
//! every client a rustls stream (the same provider as aerobridge's) and writes the frame
//! through it: encryption per client, nothing else.

use aerobridge::packet::Packet;
use aerobridge::source::sim::Sim;
use aerobridge::telemetry::{FrameEncoder, FrameHeader};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A client: where the frame goes (a socket, or a rustls stream over it), and whether it is a
/// WebSocket.
type Clients = Arc<Mutex<Vec<(Box<dyn Write + Send>, bool)>>>;

type TlsStream = rustls::StreamOwned<rustls::ServerConnection, TcpStream>;

/// Runs the server side of a handshake to the end (blocking).
fn accept_tls(config: &Arc<rustls::ServerConfig>, s: TcpStream) -> Option<TlsStream> {
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let conn = rustls::ServerConnection::new(Arc::clone(config)).ok()?;
    let mut stream = rustls::StreamOwned::new(conn, s);
    while stream.conn.is_handshaking() {
        stream.conn.complete_io(&mut stream.sock).ok()?;
    }
    Some(stream)
}

/// Serves until killed.
pub fn run(broadcast_ms: u64, tls: Option<&[std::path::PathBuf]>) -> anyhow::Result<()> {
    let tls = match tls {
        None => None,
        Some([cert, key]) => Some(Arc::new(
            aerobridge::tls::load(
                &aerobridge::tls::TlsSettings {
                    cert: cert.clone(),
                    key: key.clone(),
                    client_ca: None,
                    ports: Default::default(),
                    allow_commands: Vec::new(),
                    handshake_share: 1.0,
                    ktls: aerobridge::tls::KtlsMode::Off,
                },
                std::time::SystemTime::now(),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?,
        )),
        Some(_) => anyhow::bail!("--tls takes CERT and KEY"),
    };
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
        let (clients, tls) = (Arc::clone(&clients), tls.clone());
        std::thread::spawn(move || {
            for s in tcp.incoming().map_while(Result::ok) {
                let _ = s.set_nodelay(true);
                match &tls {
                    None => clients.lock().unwrap().push((Box::new(s), false)),
                    Some(config) => {
                        let (clients, config) = (Arc::clone(&clients), Arc::clone(config));
                        std::thread::spawn(move || {
                            if let Some(s) = accept_tls(&config, s) {
                                let _ = s.sock.set_read_timeout(None);
                                clients.lock().unwrap().push((Box::new(s), false));
                            }
                        });
                    }
                }
            }
        });
    }
    {
        let (clients, tls) = (Arc::clone(&clients), tls.clone());
        std::thread::spawn(move || {
            for s in ws.incoming().map_while(Result::ok) {
                let (clients, tls) = (Arc::clone(&clients), tls.clone());
                std::thread::spawn(move || {
                    let client: Option<Box<dyn Write + Send>> = match &tls {
                        None => upgrade(s).map(|s| Box::new(s) as _),
                        Some(config) => accept_tls(config, s)
                            .and_then(upgrade)
                            .map(|s| Box::new(s) as _),
                    };
                    if let Some(s) = client {
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

/// What the upgrade needs of a stream beyond reading and writing.
trait Socket: Read + Write {
    fn tcp(&self) -> &TcpStream;
}

impl Socket for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
}

impl Socket for TlsStream {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
}

fn upgrade<S: Socket>(mut s: S) -> Option<S> {
    s.tcp()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .ok()?;
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
            s.tcp().set_nodelay(true).ok()?;
            s.tcp().set_read_timeout(None).ok()?;
            return Some(s);
        }
        if buf.len() > 8192 {
            return None;
        }
    }
}
