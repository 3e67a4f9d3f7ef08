//! A TCP proxy for tests: its connections can be cut mid-stream, and while paused it refuses new
//! ones — a server "going away" and "coming back" without restarting it.
#![allow(dead_code)]

use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

/// A TCP proxy whose connections can be cut and whose new connections can be refused.
#[derive(Clone)]
pub struct Proxy {
    pub addr: SocketAddr,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    paused: Arc<AtomicBool>,
    /// Connections closed at once because the proxy was paused.
    pub refused: Arc<AtomicUsize>,
}

impl Proxy {
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let proxy = Proxy {
            addr: listener.local_addr().unwrap(),
            connections: Arc::default(),
            paused: Arc::default(),
            refused: Arc::default(),
        };
        let p = proxy.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if p.paused.load(Ordering::SeqCst) {
                    p.refused.fetch_add(1, Ordering::SeqCst);
                    continue; // dropped: closed at once
                }
                let Ok(server) = TcpStream::connect(target) else {
                    continue;
                };
                for s in [&client, &server] {
                    s.set_nodelay(true).unwrap();
                }
                {
                    let mut all = p.connections.lock().unwrap();
                    all.push(client.try_clone().unwrap());
                    all.push(server.try_clone().unwrap());
                }
                for (mut from, mut to) in [
                    (client.try_clone().unwrap(), server.try_clone().unwrap()),
                    (server, client),
                ] {
                    thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Both);
                        let _ = from.shutdown(Shutdown::Both);
                    });
                }
            }
        });
        proxy
    }

    /// Severs every connection through the proxy; returns how many client connections there were.
    pub fn cut(&self) -> usize {
        let all: Vec<TcpStream> = self.connections.lock().unwrap().drain(..).collect();
        for s in &all {
            let _ = s.shutdown(Shutdown::Both);
        }
        all.len() / 2
    }

    /// Refuses new connections and severs the current ones (the target "goes away").
    pub fn pause(&self) -> usize {
        self.paused.store(true, Ordering::SeqCst);
        self.cut()
    }

    /// Forwards new connections again.
    pub fn resume(&self) {
        self.paused.store(false, Ordering::SeqCst);
    }
}
